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
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from trainlab.errors import Stop
from trainlab.interrupts import Interrupted


def run_then_exit(main: Callable[[], object]) -> NoReturn:
    """Run `main`; exit with its status (`exit_status`) as `sys.exit` would report it."""
    code = exit_status(main)
    threading._shutdown()  # what Py_Finalize runs first: joins threads, runs threading's exit hooks
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe: nothing to save
            stream.flush()
    os._exit(code)


def exit_status(main: Callable[[], object]) -> int:
    """Run `main`; the status it exits with (its `SystemExit` code; 0 when it returns). A command stopped
    on purpose (`Stop`: a mistake) or by Ctrl-C/SIGTERM (`Interrupted`, or a KeyboardInterrupt before
    trainlab took the signals over) prints its one line on stderr, not a traceback."""
    try:
        main()
        code: object = 0
    except Stop as stop:
        print(f"error: {stop.error}", file=sys.stderr)
        code = stop.code
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        code = stop.exit_status
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        code = 128 + signal.SIGINT
    except SystemExit as stop:
        code = stop.code
        if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's way out of one: sys.exit(1)
            print("interrupted by SIGINT", file=sys.stderr)
            code = 128 + signal.SIGINT
    if code is None:
        return 0
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        return 1
    return code
