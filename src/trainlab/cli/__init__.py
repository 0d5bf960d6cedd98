"""The command line's edge: `src/train.py`'s entry, `--help`, the output-folder check and the fast exit."""
