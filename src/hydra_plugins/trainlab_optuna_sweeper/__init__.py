"""trainlab's Optuna sweeper: `hydra/sweeper=optuna` on current Optuna, with resume, failures and pruning."""
