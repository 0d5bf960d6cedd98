"""Python imports this at start when tests/fault_hook/ is on PYTHONPATH: it installs the fault that
$TRAINLAB_TEST_FAULT names (tests/faults.py) in a CLI process a test starts. Every process counts its
own writes: run the command with one process (a sweep's trials in it: n_jobs=1). With
$TRAINLAB_TEST_FAULT_ARGV, only the process whose last argument it is (a sweep's worker: its index)."""

import os
import sys

only = os.environ.get("TRAINLAB_TEST_FAULT_ARGV")
if os.environ.get("TRAINLAB_TEST_FAULT") and (only is None or sys.argv[-1:] == [only]):
    from faults import Fault, Injector  # tests/ is on PYTHONPATH too (faults.subprocess_env)

    Injector(Fault.parse(os.environ["TRAINLAB_TEST_FAULT"])).install()
