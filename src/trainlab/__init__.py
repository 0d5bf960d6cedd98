"""trainlab: compose model, init, optimizer, regularizer and norm with Hydra; train with Lightning;
log to MLflow. From Python (a notebook): `trainlab.train`, `sweep`, `results`, `curves`, `report`,
`study`, `sweep_status` (trainlab/api.py; each imports what it needs when called)."""

from trainlab.api import Run, curves, report, results, study, sweep, sweep_status, train

__all__ = ["Run", "curves", "report", "results", "study", "sweep", "sweep_status", "train"]
