"""End the CLI's process without the interpreter's teardown, once everything that saves work has run.

Freeing the ~5,500 modules that torch, Lightning and MLflow import takes ~2 s at the end of every run
on 2 cores (docs/performance.md). Nothing of a user's is lost by skipping it: this does what the
interpreter's own shutdown does first (join the non-daemon threads, run the `threading` and `atexit` exit
handlers: logging flushes and closes its files, MLflow drains its queues, joblib stops its workers) and
flushes stdout and stderr, then leaves with `os._exit`. An exception other than `SystemExit` takes the
normal way out, with its traceback. A program that runs train.py inside its own process (runpy) puts
what it must do last in an `atexit` handler (benchmarks/), or, to go on afterwards, replaces
`run_then_exit` with a plain call of `main` (tests/test_cluster.py).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def run_then_exit(main: Callable[[], object]) -> NoReturn:
    """Run `main`; exit with its `SystemExit` code (0 when it returns) as `sys.exit` would report it."""
    try:
        main()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what Py_Finalize runs first: joins threads, runs threading's exit hooks
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe: nothing to save
            stream.flush()
    os._exit(code)
