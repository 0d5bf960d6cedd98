"""trainlab: compose model, init, optimizer, regularizer and norm with Hydra; train with Lightning;
log to MLflow."""
