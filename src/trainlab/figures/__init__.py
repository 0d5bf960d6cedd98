"""Figures and tables redrawn from MLflow: an exercise's report and the per-layer diagnostics."""
