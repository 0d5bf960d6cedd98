"""Where Optuna sweeps stand: trials finished, running and retried, the best so far, the workers' jobs.

    python src/sweeps.py                                  # every study in multirun/, one line each
    python src/sweeps.py lr-1a2b3c4d                      # one study, with its workers
    python src/sweeps.py lr-1a2b3c4d --storage postgresql://user@host/db

Thin on purpose: Optuna is imported only once the arguments are read.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRAINLAB_ROOT", str(ROOT))

if __name__ == "__main__":
    from trainlab.sweeps import main

    sys.exit(main())
