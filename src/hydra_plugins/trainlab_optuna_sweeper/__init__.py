"""trainlab's Optuna sweeper for any Hydra app: `hydra/sweeper=trainlab_optuna` (or `optuna`, config.py)."""
