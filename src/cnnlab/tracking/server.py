"""A team tracking server: `mlflow server` over a PostgreSQL backend store and an artifact root, which every
machine that runs the pipeline logs to over HTTP (MLFLOW_TRACKING_URI=http://host:port).

`cnnlab server` starts both: a PostgreSQL cluster of its own in a folder (Debian's `postgresql` binaries; run
as the `postgres` user when started by root, since PostgreSQL refuses root) or an existing database named by
its URI, then MLflow's server, which proxies artifacts so clients need no access to the artifact root.

No password ever reaches a command line, where `ps` shows it to every local user: the cluster's superuser
password is made at initdb and kept in a libpq passfile (mode 600) that the backend-store URI names; the
admin's password reaches `mlflow server --app-name basic-auth` through its environment (see tracking/auth)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cnnlab.tracking.auth import PASSWORD_ENV, Logins, check_logins, server_env, write_private
from cnnlab.tracking.uris import has_password, redact
from cnnlab.util.errors import UserError

DATABASE = "mlflow"
SUPERUSER = "postgres"
# MLflow's job runner (seven Huey processes, about 16 s of CPU at each start) serves GenAI scorers and prompt
# optimisation, which image classifiers never ask for; a user who wants it sets the variable to true.
JOBS_OFF = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


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


def password_file(data_dir: Path) -> Path:
    """The cluster superuser's password as a libpq passfile, beside the cluster (mode 600)."""
    return data_dir.parent / f"{data_dir.name}.pgpass"


def _save_password(data_dir: Path, password: str) -> None:
    # Any host, port and database: only this cluster's URI names the file (token_urlsafe needs no escaping).
    write_private(password_file(data_dir), f"*:*:*:{SUPERUSER}:{password}\n")


@contextlib.contextmanager
def _owner_readable(text: str) -> Iterator[Path]:
    """A temporary file holding `text` that the cluster's owner can read (initdb --pwfile), removed after."""
    fd, name = tempfile.mkstemp(prefix="cnnlab-initdb-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text + "\n")
        if os.geteuid() == 0:
            os.chown(name, *_postgres_ids())
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def init_cluster(data_dir: Path) -> None:
    """A new cluster in `data_dir` (kept if one is there): TCP connections need the superuser's password
    (scram-sha-256), socket ones the same OS user (peer); the password goes to password_file(data_dir)."""
    if (data_dir / "PG_VERSION").is_file():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(data_dir, *_postgres_ids())
    password = secrets.token_urlsafe(32)
    with _owner_readable(password) as pwfile:
        _run([str(postgres_bin() / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
              "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8"])  # fmt: skip
    _save_password(data_dir, password)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("no `postgres` user to run PostgreSQL as root: `apt-get install postgresql`") from None
    return entry.pw_uid, entry.pw_gid


_TRUST = re.compile(r"(?m)^(?P<kind>local|host)(?P<rest>\S*\s.*?)\btrust[ \t]*$")


def trusts(data_dir: Path) -> bool:
    """Whether some connection gets in without a password (initdb --auth=trust, as earlier `cnnlab server`s did)."""
    return _TRUST.search((data_dir / "pg_hba.conf").read_text()) is not None


def _set_password(host: str, port: int, password: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=host, port=port, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(password)))


def require_passwords(data_dir: Path, host: str, port: int) -> None:
    """Secure a cluster that trusts connections: give the superuser a password while trust still lets us in,
    then make TCP ask for it and the socket for the same OS user (from the next start on). Safe to repeat."""
    passfile = password_file(data_dir)
    password = read_password(passfile) if passfile.is_file() else secrets.token_urlsafe(32)
    with running(data_dir, port, host):
        _set_password(host, port, password)
    _save_password(data_dir, password)
    hba = data_dir / "pg_hba.conf"
    methods = {"local": "peer", "host": "scram-sha-256"}
    text = _TRUST.sub(lambda m: f"{m['kind']}{m['rest']}{methods[m['kind']]}", hba.read_text())
    with open(hba, "w") as out:  # rewritten in place, so it stays the cluster owner's file
        out.write(text)


def read_password(passfile: Path) -> str:
    return passfile.read_text().strip().rsplit(":", 1)[-1]


def backend_uri(host: str, port: int, passfile: Path) -> str:
    """The SQLAlchemy URI of the cluster's `mlflow` database: it names the passfile, not the password."""
    return f"postgresql+psycopg://{SUPERUSER}@{host}:{port}/{DATABASE}?passfile={urllib.parse.quote(str(passfile))}"


@contextlib.contextmanager
def running(data_dir: Path, port: int, host: str) -> Iterator[None]:
    """The cluster in `data_dir` started on host:port until the block ends."""
    pg_ctl = str(postgres_bin() / "pg_ctl")
    options = f"-p {port} -h {host} -k {data_dir}"  # its socket in its own folder: no /var/run/postgresql needed
    _run([pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(data_dir / "server.log"), "-w", "start"])
    try:
        yield
    finally:
        _run([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"])


@contextlib.contextmanager
def cluster(data_dir: Path, port: int, host: str = "127.0.0.1") -> Iterator[str]:
    """Start the cluster in `data_dir` on host:port, create the `mlflow` database, yield its SQLAlchemy URI; stop."""
    init_cluster(data_dir)
    if trusts(data_dir):
        require_passwords(data_dir, host, port)
    passfile = password_file(data_dir).resolve()
    if not passfile.is_file():
        raise ServerError(f"{passfile}, the password of the cluster in {data_dir}, is missing: restore it "
                          f"(one line, *:*:*:{SUPERUSER}:PASSWORD, mode 600)")  # fmt: skip
    with running(data_dir, port, host):
        create_database(host, port, passfile)
        yield backend_uri(host, port, passfile)


def create_database(host: str, port: int, passfile: Path) -> None:
    import psycopg

    with psycopg.connect(host=host, port=port, user=SUPERUSER, dbname="postgres", passfile=str(passfile),
                         autocommit=True) as conn:  # fmt: skip
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DATABASE}")


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only; a host name other than localhost may be anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, logins: Logins | None) -> None:
    """Refuse to serve beyond this machine without logins: anyone who reaches it could log runs and move
    the `champion` alias."""
    if logins is None and not is_loopback(host):
        raise ServerError(
            f"--host {host} without logins lets anyone who reaches it write runs and move `champion`: add --auth "
            f"(the admin password in --admin-password-file PATH or ${PASSWORD_ENV}), or serve on 127.0.0.1"
        )


def check_backend_uri(uri: str) -> None:
    if has_password(uri):
        raise ServerError(
            "the backend-store URI holds the database password, which `ps` would show: leave it out and put it "
            "in a libpq passfile (?passfile=PATH in the URI, or $PGPASSFILE) or in $PGPASSWORD"
        )


def server_command(backend_uri: str, artifacts: Path, host: str, port: int, *, auth: bool = False,
                   allowed_hosts: str | None = None, workers: int | None = None) -> list[str]:  # fmt: skip
    """`mlflow server` storing runs in `backend_uri` and proxying artifacts to and from `artifacts`; with logins
    (MLflow's basic-auth app) when `auth`, accepting the Host headers in `allowed_hosts` when given."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts.resolve()), "--host", host, "--port", str(port)]  # fmt: skip
    if auth:
        command += ["--app-name", "basic-auth"]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if workers:
        command += ["--workers", str(workers)]
    return command


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0, log: Path | None = None) -> None:
    """Poll the server's /health until it answers; fail early if the process died."""
    see = f" (its log: {log})" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"mlflow server exited with code {process.returncode} before answering at {url}{see}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.5)
    raise ServerError(f"mlflow server did not answer at {url}/health within {timeout:.0f} s{see}")


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, host: str, port: int, log: Path, *, logins: Logins | None = None,
                  allowed_hosts: str | None = None, workers: int | None = None) -> Iterator[str]:  # fmt: skip
    """Run the server until the block ends; yield its URL (the clients' MLFLOW_TRACKING_URI)."""
    check_backend_uri(backend_uri)
    url = f"http://{host}:{port}"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = JOBS_OFF | os.environ | (server_env(logins) if logins else {})
    command = server_command(backend_uri, artifacts, host, port, auth=logins is not None,
                             allowed_hosts=allowed_hosts, workers=workers)  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_up(url, process, log=log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # the server's workers too
        process.wait(timeout=30)


def announce(url: str, uri: str, artifacts: Path, logins: Logins | None) -> None:
    """Where the server is and how to log to it; the backend URI without password or options."""
    print(f"MLflow tracking server at {url} (runs in {redact(uri.split('?')[0])}, artifacts in {artifacts})")
    print(f"log to it from any machine: export MLFLOW_TRACKING_URI={url}")
    if logins:
        print(
            f"logins required: admin user {logins.admin!r}; other users can read everything until an admin grants "
            "more; clients set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    sys.stdout.flush()


def serve(folder: Path, host: str, port: int, pg_port: int, backend_uri: str | None, *, logins: Logins | None = None,
          allowed_hosts: str | None = None, workers: int | None = None) -> None:  # fmt: skip
    """Everything under `folder` (postgres/, artifacts/, the logs, the logins' files): run until interrupted."""
    check_exposure(host, logins)  # every refusal comes before anything starts
    if backend_uri:
        check_backend_uri(backend_uri)
    if logins:
        check_logins(logins)
    folder = folder.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a service manager's stop also stops PostgreSQL
    with contextlib.ExitStack() as stack:
        uri = backend_uri or stack.enter_context(cluster(folder / "postgres", pg_port))
        log = folder / "mlflow-server.log"
        running_server = mlflow_server(uri, folder / "artifacts", host, port, log, logins=logins,
                                       allowed_hosts=allowed_hosts, workers=workers)  # fmt: skip
        url = stack.enter_context(running_server)
        announce(url, uri, folder / "artifacts", logins)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
