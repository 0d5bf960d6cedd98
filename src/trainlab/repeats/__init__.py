"""Every result with its error bar: N repeats over seeds and K-fold cross-validation as one group."""
