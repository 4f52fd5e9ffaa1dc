"""Logins on the team server: `cnnlab server --auth` (MLflow's basic-auth app) over a PostgreSQL cluster that asks
for a password on TCP. No password reaches a command line or the output of `cnnlab server`, `ui` or `retrain`,
and no host beyond loopback is served without logins."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import psutil
import psycopg
import pytest
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from cnnlab.cli import commands
from cnnlab.cli import main as cli
from cnnlab.tracking import server
from cnnlab.tracking.auth import PASSWORD_ENV, Logins, read_admin_password
from cnnlab.tracking.registry import CHAMPION
from cnnlab.tracking.server import ServerError, check_exposure, cluster, mlflow_server, password_file, wait_until_up
from cnnlab.tracking.uris import has_password, redact
from helpers.project import GIT, ROOT, free_port

ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"  # a fresh one each run: any copy of it found is a leak
USERINFO = re.compile(r"://[^\s/@]*:[^\s/@*]+@")  # user:password@ with anything but *** as the password


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the fast part: refusals, redaction, what is printed and what a command line holds ------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "team-server.example.org"])
def test_a_host_beyond_loopback_without_auth_exits_2_with_the_fix(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["server", "--folder", str(tmp_path / "srv"), "--host", host]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--auth" in err and "--admin-password-file" in err and "127.0.0.1" in err
    assert not (tmp_path / "srv").exists()  # refused before anything started


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_no_logins(host: str) -> None:
    check_exposure(host, None)


def test_auth_without_an_admin_password_exits_2_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert cli(["server", "--folder", str(tmp_path / "srv"), "--host", "0.0.0.0", "--auth"]) == 2
    err = capsys.readouterr().err
    assert "--admin-password-file" in err and PASSWORD_ENV in err and "never on the command line" in err
    monkeypatch.setenv(PASSWORD_ENV, "short")
    assert cli(["server", "--folder", str(tmp_path / "srv"), "--auth"]) == 2
    assert "shorter than 12 characters" in capsys.readouterr().err
    assert not (tmp_path / "srv").exists()


def test_the_admin_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert read_admin_password(None) is None
    monkeypatch.setenv(PASSWORD_ENV, "from-the-environment")
    assert read_admin_password(None) == "from-the-environment"
    (tmp_path / "pw").write_text("from the file\n")
    assert read_admin_password(tmp_path / "pw") == "from the file"  # the file wins; its newline is not part of it
    (tmp_path / "empty").write_text("")
    for path, message in [(tmp_path / "empty", "is empty"), (tmp_path / "nope", "cannot read")]:
        with pytest.raises(ValueError, match=message):
            read_admin_password(path)


@pytest.mark.parametrize(
    "uri",
    ["postgresql+psycopg://mlflow:s3cr3t-db@db.example.org/mlflow", "postgresql://u@db/mlflow?password=s3cr3t-db"],
)
def test_a_backend_uri_with_a_password_is_refused_without_printing_it(
    uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["server", "--folder", str(tmp_path), "--backend-store-uri", uri]) == 2
    out, err = capsys.readouterr()
    assert "PGPASSFILE" in err and "passfile=" in err and "s3cr3t-db" not in out + err


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg://mlflow:pw@db:5432/mlflow", "postgresql+psycopg://mlflow:***@db:5432/mlflow"),
        ("$ dvc remote add x https://ci:tok%40en@host/p --force", "$ dvc remote add x https://ci:***@host/p --force"),
        ("s3://key:sec@ret@bucket/x and http://host:5000/a", "s3://key:***@bucket/x and http://host:5000/a"),
        ("postgresql://u@db/m?sslmode=require&password=pw", "postgresql://u@db/m?sslmode=require&password=***"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("http://user@host:5000/path", "http://user@host:5000/path"),
    ],
)
def test_redact_hides_passwords_only(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_password_in_the_user_part_or_the_query_is_found() -> None:
    assert has_password("postgresql://u:pw@db/m") and has_password("postgresql://u@db/m?Password=pw")
    assert not has_password("postgresql+psycopg://postgres@127.0.0.1:5433/mlflow?passfile=/srv/postgres.pgpass")


def test_the_spawned_mlflow_server_gets_its_passwords_in_its_environment_not_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def record(command: list[str], **kwargs) -> subprocess.Popen:
        spawned.append((command, kwargs["env"]))
        return real_popen(["sleep", "30"], **kwargs)  # stands in for the server, stopped like it

    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(server, "wait_until_up", lambda *args, **kwargs: None)
    db_password = "the-db-password-123"
    server._save_password(tmp_path / "postgres", db_password)
    uri = server.backend_uri("127.0.0.1", 5433, password_file(tmp_path / "postgres"))
    logins = Logins(tmp_path, "boss", ADMIN_PASSWORD)
    with mlflow_server(uri, tmp_path / "artifacts", "0.0.0.0", 5000, tmp_path / "log", logins=logins,
                       allowed_hosts="mlflow.example.org:5000"):  # fmt: skip
        pass
    [(command, env)] = spawned
    shown = " ".join(command)
    assert db_password not in shown and ADMIN_PASSWORD not in shown and not USERINFO.search(shown)
    assert "--app-name basic-auth" in shown and "--allowed-hosts mlflow.example.org:5000" in shown
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == ADMIN_PASSWORD and env["MLFLOW_AUTH_ADMIN_USERNAME"] == "boss"
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(logins.config) and len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # MLflow's GenAI job runner is not started
    config = logins.config.read_text()
    assert "default_permission = READ" in config and ADMIN_PASSWORD not in config
    assert all(
        private(p) for p in [logins.config, logins.database, logins.secret_key, password_file(tmp_path / "postgres")]
    )


def test_cnnlab_ui_keeps_the_store_s_password_off_its_command_line_and_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = "postgresql+psycopg://mlflow:s3cr3t-db@db.example.org/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setattr(commands, "use_experiment", lambda name, root: "1")
    started: list[tuple[list[str], dict[str, str]]] = []

    def record(command: list[str], env: dict[str, str]) -> int:
        started.append((command, env))
        return 0

    monkeypatch.setattr(subprocess, "call", record)
    assert cli(["--params", str(ROOT / "params.yaml"), "ui"]) == 0
    [(command, env)] = started
    out = capsys.readouterr().out
    assert "s3cr3t-db" not in " ".join(command) + out and not USERINFO.search(out)
    assert "mlflow:***@db.example.org" in out and env["MLFLOW_BACKEND_STORE_URI"] == store
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"  # as on the team server


def test_cnnlab_retrain_prints_the_remote_url_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-qm", "dvc"], cwd=tmp_path, check=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:s3cr3t-db@db.example.org/mlflow")
    remote = "https://ci:s3cr3t-token@dvc.example.org/cnnlab"
    # No params.yaml: it stops (exit 2) after setting the remote up, before any stage.
    assert cli(["--params", str(tmp_path / "params.yaml"), "retrain", "--base", "HEAD", "--remote-url", remote]) == 2
    out, err = capfd.readouterr()
    assert "https://ci:***@dvc.example.org/cnnlab" in out and "params.yaml not found" in err, (out, err)
    assert "s3cr3t" not in out + err and not USERINFO.search(out + err)


def test_a_cluster_made_with_trust_gets_passwords(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Clusters of earlier versions (initdb --auth=trust) ask for the password from their next start on."""
    folder = postgres_folder()
    try:
        data = folder / "postgres"
        data.mkdir()
        if os.geteuid() == 0:
            os.chown(data, *server._postgres_ids())
        server._run([str(server.postgres_bin() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"])
        port = free_port()
        with cluster(data, port) as uri:
            assert_password_needed(port, tmp_path_factory.mktemp("nopass"))
            with psycopg.connect(uri.replace("postgresql+psycopg", "postgresql")) as conn:
                assert host_methods(conn) == {"scram-sha-256"}
        assert private(password_file(data))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the slow part: one `cnnlab server --auth` on 127.0.0.1 for the tests below --------------------------------


def postgres_folder() -> Path:
    """A folder PostgreSQL's `postgres` user can reach (it runs as that user under root)."""
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-auth-"))
    folder.chmod(0o755)
    return folder


def assert_password_needed(port: int, empty: Path) -> None:
    """A TCP connection to the cluster without its password (no passfile, no $PGPASSWORD) is refused."""
    bare: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": "postgres",
        "dbname": "postgres",
        "connect_timeout": 10,
    }
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(**bare, passfile=str(empty / "none"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**bare, password="guessed")


def host_methods(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type <> 'local'").fetchall()
    return {row[0] for row in rows}


@pytest.fixture(scope="module")
def team() -> Iterator[dict]:
    """`cnnlab server --auth` as a team would start it, its admin password in a file; stopped with SIGTERM."""
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("Flask-WTF is missing (MLflow's basic-auth app needs it): pip install -r requirements.lock")
    folder = postgres_folder()
    (folder / "admin-password").write_text(ADMIN_PASSWORD + "\n")
    port, pg_port = free_port(), free_port()
    command = [sys.executable, "-m", "cnnlab.cli", "server", "--folder", str(folder / "srv"), "--port", str(port),
               "--pg-port", str(pg_port), "--auth", "--admin-password-file", str(folder / "admin-password"),
               "--allowed-hosts", f"127.0.0.1:{port}", "--workers", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_", "PG"))}
    output = folder / "output.txt"
    with open(output, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(url, process)
        except ServerError as exc:
            log = folder / "srv" / "mlflow-server.log"
            pytest.fail(f"{exc}\n{output.read_text()}\n{log.read_text()[-3000:] if log.is_file() else ''}")
        yield {"url": url, "folder": folder / "srv", "pg_port": pg_port, "output": output, "process": process}
    finally:
        process.send_signal(signal.SIGTERM)  # stops mlflow server and PostgreSQL too
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def client_as(monkeypatch: pytest.MonkeyPatch, url: str, user: str, password: str) -> mlflow.MlflowClient:
    """A client whose requests carry `user`'s login (MLflow reads it from the environment on each request)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return mlflow.MlflowClient(tracking_uri=url)


def status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_a_rest_call_without_a_login_gets_401(team: dict) -> None:
    search = f"{team['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(urllib.request.Request(search)) == 401
    wrong = {"Authorization": "Basic YWRtaW46bm90LWl0"}  # admin:not-it
    assert status_of(urllib.request.Request(search, headers=wrong)) == 401
    # --allowed-hosts: a name the server was not told about is refused (DNS rebinding)
    assert status_of(urllib.request.Request(search, headers={"Host": "attacker.example.org"})) == 403


@pytest.mark.slow
def test_the_team_server_starts_no_job_runner(team: dict) -> None:
    """MLflow's job runner (GenAI scorers, prompt optimisation) would add seven Huey processes to every start."""
    started = psutil.Process(team["process"].pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in started]
    assert any("mlflow" in command and "server" in command for command in commands), commands
    assert not [command for command in commands if "huey" in command]


def test_a_user_who_asks_for_mlflow_jobs_gets_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def record(command: list[str], **kwargs) -> subprocess.Popen:
        spawned.append(kwargs["env"])
        return real_popen(["sleep", "30"], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(server, "wait_until_up", lambda *args, **kwargs: None)
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    with mlflow_server("sqlite:////tmp/unused.db", tmp_path / "artifacts", "127.0.0.1", 5000, tmp_path / "log"):
        pass
    assert [env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] for env in spawned] == ["true"]


@pytest.mark.slow
def test_a_logged_in_client_logs_a_run(team: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = client_as(monkeypatch, team["url"], "admin", ADMIN_PASSWORD)
    experiment = client.create_experiment("auth-logging")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test_accuracy", 0.9)
    (tmp_path / "note.txt").write_text("through the proxy")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics == {"test_accuracy": 0.9} and logged.info.status == "FINISHED"
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]


@pytest.mark.slow
def test_a_read_only_user_cannot_move_champion(team: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = team["url"]
    admin = client_as(monkeypatch, url, "admin", ADMIN_PASSWORD)
    run = admin.create_run(admin.create_experiment("auth-registry"))
    (tmp_path / "weights.txt").write_text("a model")
    admin.log_artifact(run.info.run_id, str(tmp_path / "weights.txt"), "model")
    admin.create_registered_model("cnnlab-auth")
    for _ in range(2):
        admin.create_model_version("cnnlab-auth", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    admin.set_registered_model_alias("cnnlab-auth", CHAMPION, "1")
    get_app_client("basic-auth", tracking_uri=url).create_user("reader", "reader-password-1")

    reader = client_as(monkeypatch, url, "reader", "reader-password-1")
    assert reader.get_model_version_by_alias("cnnlab-auth", CHAMPION).version == "1"  # READ by default
    for move in [lambda: reader.set_registered_model_alias("cnnlab-auth", CHAMPION, "2"),
                 lambda: reader.delete_registered_model_alias("cnnlab-auth", CHAMPION)]:  # fmt: skip
        with pytest.raises(MlflowException) as refused:
            move()
        assert refused.value.error_code == "PERMISSION_DENIED"
    admin = client_as(monkeypatch, url, "admin", ADMIN_PASSWORD)
    assert admin.get_model_version_by_alias("cnnlab-auth", CHAMPION).version == "1"


@pytest.mark.slow
def test_postgresql_refuses_a_connection_without_the_password(team: dict, tmp_path: Path) -> None:
    assert_password_needed(team["pg_port"], tmp_path)
    passfile = password_file(team["folder"] / "postgres")
    assert private(passfile)
    with psycopg.connect(host="127.0.0.1", port=team["pg_port"], user="postgres", dbname="mlflow",
                         passfile=str(passfile)) as conn:  # fmt: skip
        assert host_methods(conn) == {"scram-sha-256"}
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()
        assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")


def command_lines() -> list[str]:
    """Every process's command line, as `ps` shows it to any local user."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.slow
def test_no_command_line_output_or_settings_file_holds_a_password(team: dict) -> None:
    db_password = server.read_password(password_file(team["folder"] / "postgres"))
    lines = command_lines()
    assert any("--app-name basic-auth" in line for line in lines)  # the live server's processes were looked at
    assert not [line for line in lines if ADMIN_PASSWORD in line or db_password in line]
    output = team["output"].read_text()
    assert "logins required" in output and "MLFLOW_TRACKING_USERNAME" in output
    assert ADMIN_PASSWORD not in output and db_password not in output and not USERINFO.search(output)
    logins = Logins(team["folder"])
    assert all(private(path) for path in [logins.config, logins.database, logins.secret_key])
    assert ADMIN_PASSWORD not in logins.config.read_text()
