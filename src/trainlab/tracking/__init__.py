"""Where a run's record goes: MLflow (or CSV) runs, the spool that outlasts a vanished server, the
lock that creates a new store's tables once, and step-level learning curves."""
