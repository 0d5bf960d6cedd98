"""What the services of docker/compose.yaml run: each waits for the service it needs, turns that
service's refusal into one line, then becomes its own program.

    python -m trainlab.cluster.stack mlflow-server [mlflow server options]   # the `mlflow` service
    python -m trainlab.cluster.stack train [train.py arguments]              # the `trainer` services
    python -m trainlab.cluster.stack optuna-dashboard [--host H] [--port P]  # the `optuna-dashboard` service

Compose's `depends_on: condition: service_healthy` orders the start only where health checks run
(Docker); podman runs none without systemd, and podman-compose ignores the condition before podman 4.6.
Waiting here keeps the order under any of them. The database's address comes from the same
POSTGRES_* variables as the postgres service's (docker/.env), so the password is in no command line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

WAIT_S = float(os.environ.get("TRAINLAB_STACK_WAIT_S", "300"))
# The Optuna studies' database, beside MLflow's on the same server.
OPTUNA_DB = os.environ.get("OPTUNA_DB", "optuna")


class StackError(Exception):
    """A service that refuses (not one still starting): waiting longer cannot help."""


def database_url(database: str | None = None) -> str:
    """SQLAlchemy's URL of a database on the stack's PostgreSQL, from the POSTGRES_* variables."""
    env = os.environ
    user = env.get("POSTGRES_USER", "postgres")
    password = env.get("POSTGRES_PASSWORD", "")
    host = env.get("POSTGRES_HOST", "postgres")
    port = env.get("POSTGRES_PORT", "5432")
    name = database or env.get("POSTGRES_DB") or user
    return f"postgresql+psycopg://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{name}"


def wait_for(what: str, attempt: Callable[[], None], seconds: float = WAIT_S) -> None:
    """Call `attempt` until it returns; a StackError ends the wait at once, anything else is retried."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except StackError:
            raise
        except Exception as err:  # any failure to connect means "not up yet"
            if time.monotonic() > deadline:
                reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                raise StackError(f"{what} did not answer in {seconds:.0f} s ({reason})") from None
            time.sleep(1)


def connect(url: str, **options: object):  # -> psycopg.Connection (imported only when needed)
    import psycopg
    from sqlalchemy.engine import make_url

    address = make_url(url)
    return psycopg.connect(
        host=address.host,
        port=address.port,
        user=address.username,
        password=address.password,
        dbname=address.database,
        **options,
    )


def check_database(url: str) -> None:
    """Open and close one connection, telling a refused login from a server still starting."""
    import psycopg
    from sqlalchemy.engine import make_url

    try:
        connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        address = make_url(url)
        message = str(err)
        where = f"PostgreSQL at {address.host}:{address.port}"
        if "password authentication failed" in message:
            raise StackError(
                f"{where} refused user {address.username!r}: wrong password. POSTGRES_PASSWORD in "
                "docker/.env must be the one the database was created with (its volume keeps it; "
                "`docker compose down -v` starts over and deletes every run in it)"
            ) from None
        if "does not exist" in message and "starting up" not in message:
            reason = message.strip().splitlines()[-1].removeprefix("FATAL:  ")
            raise StackError(f"{where}: {reason}") from None
        raise


def create_database(url: str, name: str) -> None:
    """Create database `name` on the server of `url` unless it exists (a volume made before it was used)."""
    with connect(url, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def answer_health(uri: str) -> None:
    import requests

    requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()


def mlflow_server(options: Sequence[str]) -> None:
    """The MLflow server on the stack's database, once that answers; also creates the Optuna database."""
    url = database_url()
    wait_for(f"PostgreSQL at {os.environ.get('POSTGRES_HOST', 'postgres')}", lambda: check_database(url))
    create_database(url, OPTUNA_DB)
    os.environ["MLFLOW_BACKEND_STORE_URI"] = url
    os.execvp("mlflow", ["mlflow", "server", *options])


def train(arguments: Sequence[str]) -> None:
    """`python src/train.py arguments` once the MLflow server answers; sweeps keep their Optuna study in
    the stack's database (OPTUNA_STORAGE, unless set)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        wait_for(f"The MLflow server at {uri}", lambda: answer_health(uri))
    if "POSTGRES_PASSWORD" in os.environ:
        os.environ.setdefault("OPTUNA_STORAGE", database_url(OPTUNA_DB))
    os.execv(sys.executable, [sys.executable, "src/train.py", *arguments])


def optuna_dashboard(options: Sequence[str]) -> None:
    """optuna-dashboard on the stack's Optuna studies once PostgreSQL answers; started in this process
    (`run_server`), so the database's password is in no command line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trainlab.cluster.stack optuna-dashboard")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(options)
    url = database_url()
    wait_for(f"PostgreSQL at {os.environ.get('POSTGRES_HOST', 'postgres')}", lambda: check_database(url))
    create_database(url, OPTUNA_DB)  # before the first sweep, the dashboard shows no study yet
    from optuna_dashboard import run_server

    # Now the program itself, as `exec` would make it: SIGTERM's default action ends it at once (the
    # wait's handler raises SystemExit, which a server's request threads outlive).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run_server(database_url(OPTUNA_DB), host=args.host, port=args.port)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "mlflow-server": mlflow_server,
    "train": train,
    "optuna-dashboard": optuna_dashboard,
}


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m trainlab.cluster.stack {{{','.join(COMMANDS)}}} [arguments]", file=sys.stderr
        )
        return 2
    # A container's first process has no default action on SIGTERM: `docker compose down` would wait
    # 10 s for a wait here, then kill it. (exec restores the default for the program that follows.)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        COMMANDS[argv[0]](argv[1:])
    except StackError as err:
        print(f"trainlab.cluster.stack: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
