"""A team tracking server: `mlflow server` over a PostgreSQL backend store and an artifact root, which every
machine that runs the pipeline logs to over HTTP (MLFLOW_TRACKING_URI=http://host:port).

`cnnlab server` starts both: a PostgreSQL cluster of its own in a folder (Debian's `postgresql` binaries; run
as the `postgres` user when started by root, since PostgreSQL refuses root) or an existing database named by
its URI, then MLflow's server, which proxies artifacts so clients need no access to the artifact root."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cnnlab.util.errors import UserError

DATABASE = "mlflow"


class ServerError(UserError):
    """The server or its database could not start; the message says why and what to do."""


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise ServerError("PostgreSQL is not installed: `apt-get install postgresql` (Debian's package)")
    return found[-1].parent


def _as_cluster_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    done = subprocess.run(_as_cluster_owner(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerError(f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()}")


def init_cluster(data_dir: Path) -> None:
    """A new cluster in `data_dir` (kept if one is there), trusting local connections only."""
    if (data_dir / "PG_VERSION").is_file():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(data_dir, *_postgres_ids())
    _run([str(postgres_bin() / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])


def _postgres_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("no `postgres` user to run PostgreSQL as root: `apt-get install postgresql`") from None
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def cluster(data_dir: Path, port: int, host: str = "127.0.0.1") -> Iterator[str]:
    """Start the cluster in `data_dir` on host:port, create the `mlflow` database, yield its SQLAlchemy URI; stop."""
    init_cluster(data_dir)
    pg_ctl = str(postgres_bin() / "pg_ctl")
    options = f"-p {port} -h {host} -k {data_dir}"  # its socket in its own folder: no /var/run/postgresql needed
    _run([pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(data_dir / "server.log"), "-w", "start"])
    try:
        create_database(host, port)
        yield f"postgresql+psycopg://postgres@{host}:{port}/{DATABASE}"
    finally:
        _run([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"])


def create_database(host: str, port: int) -> None:
    import psycopg

    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DATABASE}")


def server_command(backend_uri: str, artifacts: Path, host: str, port: int) -> list[str]:
    """`mlflow server` storing runs in `backend_uri` and proxying artifacts to and from `artifacts`."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(artifacts.resolve()), "--host", host, "--port", str(port)]  # fmt: skip


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll the server's /health until it answers; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"mlflow server exited with code {process.returncode} before answering at {url}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise ServerError(f"mlflow server did not answer at {url}/health within {timeout:.0f} s")


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, host: str, port: int, log: Path) -> Iterator[str]:
    """Run the server until the block ends; yield its URL (the clients' MLFLOW_TRACKING_URI)."""
    url = f"http://{host}:{port}"
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(server_command(backend_uri, artifacts, host, port), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_until_up(url, process)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # the server's workers too
        process.wait(timeout=30)


def serve(folder: Path, host: str, port: int, pg_port: int, backend_uri: str | None) -> None:
    """Everything under `folder` (postgres/, artifacts/, the logs): run until interrupted."""
    folder = folder.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a service manager's stop also stops PostgreSQL
    with contextlib.ExitStack() as stack:
        uri = backend_uri or stack.enter_context(cluster(folder / "postgres", pg_port))
        url = stack.enter_context(mlflow_server(uri, folder / "artifacts", host, port, folder / "mlflow-server.log"))
        print(f"MLflow tracking server at {url} (runs in {uri.split('@')[-1]}, artifacts in {folder / 'artifacts'})")
        print(f"log to it from any machine: export MLFLOW_TRACKING_URI={url}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
