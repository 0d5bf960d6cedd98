"""After training: a finished run's best network evaluated on test data (`src/eval.py`) or run on new
images (`src/predict.py`), found by its checkpoint or its MLflow run id."""
