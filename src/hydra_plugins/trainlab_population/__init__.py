"""trainlab's grid sweeper: Hydra's basic sweeper, with `hydra.sweeper.population=K` (trainlab.population)."""
