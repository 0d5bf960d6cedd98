"""Where workers (`hydra.sweeper.workers=N`, `_impl.Worker`) start: SLURM jobs (one array) under
hydra/launcher=slurm, else processes of this machine in sessions of their own, so that the sweep outlives
the shell that started it. Either way the worker is pickled (as submitit pickles a launcher's jobs) and
called with its index where it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainlab.sweeps import Submitted


def start(worker: Callable[[int], None], count: int, launcher: Any, sweep_dir: Path) -> Submitted:
    """Submit `count` workers through `launcher` where it is trainlab's SLURM launcher, else start them
    here; return at once."""
    if hasattr(launcher, "submit_workers"):
        job = launcher.submit_workers(worker, count)
        return Submitted("slurm", [job], str(sweep_dir / ".submitit" / f"{job}_*"))
    return _start_here(worker, count, sweep_dir / ".workers")


def _start_here(worker: Any, count: int, folder: Path) -> Submitted:
    """`count` processes of this machine, each in a session of its own (a closed terminal's SIGHUP does
    not reach it), logging to `folder`."""
    import cloudpickle

    from trainlab.atomic import write_atomically

    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    pickled = folder / "worker.pkl"  # read once, as each worker starts
    write_atomically(pickled, cloudpickle.dumps(worker))
    # The app's own modules import in the worker as they did here (a script's folder is on sys.path).
    paths = [str(Path(sys.argv[0]).resolve().parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    ids = []
    for index in range(count):
        with open(folder / f"worker_{stamp}_{index}.log", "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(pickled), str(index)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=worker.config.hydra.runtime.cwd,
                env=env,
                start_new_session=True,
            )
        # Waited for when it ends, should this process live on (a notebook's kernel): no zombie is left.
        threading.Thread(target=process.wait, daemon=True).start()
        ids.append(str(process.pid))
    return Submitted("local", ids, str(folder))


def _main(pickled: str, index: str) -> int:
    """A worker process of this machine; its log ends with its one line where it stops on purpose."""
    import cloudpickle

    from trainlab import interrupts
    from trainlab.errors import Stop

    worker = cloudpickle.loads(Path(pickled).read_bytes())
    try:
        worker(int(index))
    except Stop as stop:
        print(f"error: {stop.error}", file=sys.stderr)
        return int(stop.code or 1)
    except interrupts.Interrupted as stopped:
        print(stopped, file=sys.stderr)
        return stopped.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
