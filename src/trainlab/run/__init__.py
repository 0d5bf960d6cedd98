"""The run layer: one training run from a composed config (validate, data, fit, test, record), its
callbacks, resume and interrupts, and its link to a sweep's Optuna trial."""
