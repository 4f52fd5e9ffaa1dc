"""Stage processes that start warm: a worker that has imported Keras, TensorFlow and MLflow once forks a
ready copy of itself for each stage, so a stage skips the 3-5 s those imports take, and the 2 s a process
that has them spends tearing them down at exit.

A stage script calls `run_in_warm_worker(__file__)` before its heavy imports. In the script's own process
(the one DVC or a user starts) that connects to the worker for this Python and environment, starting one
if none runs, passes it the command line, working directory, environment and terminal (stdin, stdout,
stderr), forwards Ctrl-C and termination signals, and exits with the stage's exit status. A stage that
finds no worker ready runs in its own process (and starts one, if none is starting, for the stages after
it); `cnnlab warm` starts one ahead of a `dvc repro`, so that its first stage starts warm too. In the
worker's fork the call returns and the script runs as it would in a fresh process: the project's own
modules are imported afresh (edits take effect), the random generators are reseeded, and threads are
joined and exit handlers run at the end.

Only third-party modules are preloaded, and a worker serves only processes whose interpreter, import path
(outside the project) and import-time environment (`KERAS_BACKEND`, `TF_*`, ...) are the ones it started
with. It exits after `CNNLAB_WARM_IDLE` seconds without a stage (default 60). `CNNLAB_WARM=0` runs every
stage in its own process; so does any failure to reach a worker. Linux only (fork, Unix sockets,
file-descriptor passing).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

# Set in a stage run by a worker, to the pid of the process it stands in for.
CLIENT_ENV = "CNNLAB_WARM_CLIENT"
# Environment read while those modules import (backend choice, TensorFlow and XLA options, thread counts):
# a worker serves only stages that agree with it on these.
IMPORT_ENV = ("KERAS_", "TF_", "JAX_", "XLA_", "CUDA_", "MPL", "PYTHON", "OMP_", "MKL_", "OPENBLAS_", "LD_")
IMPORT_ENV_NAMES = ("HOME", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
SOCKET_PATH_MAX, SOCKET_NAME_BYTES = 107, 30  # Linux's sun_path limit; "/<24 hex digits>.sock" and a margin
SIGNALS_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class WarmUnavailable(Exception):
    """No worker could be reached or started: the stage runs in its own process instead."""


def enabled() -> bool:
    supported = sys.platform == "linux" and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")
    return supported and os.environ.get("CNNLAB_WARM", "1") != "0" and not os.environ.get(CLIENT_ENV)


def run_in_warm_worker(script: str) -> None:
    """Run this stage script in a warm worker and exit with its status; return at once inside the worker's
    fork, when the script is imported rather than run (a test loading a stage), or when warm workers are off
    or unavailable (then the script goes on in this process)."""
    main = sys.modules.get("__main__")
    if not enabled() or os.path.abspath(getattr(main, "__file__", None) or "") != os.path.abspath(script):
        return
    try:
        status = _run_remote(os.path.abspath(script))
    except WorkerStarting:
        return
    except WarmUnavailable as exc:
        print(f"cnnlab: no warm worker ({exc}); running the stage in its own process", file=sys.stderr)
        return
    _exit_like(status)


# ---- the stage's own process -------------------------------------------------------------------------------


def worker_key() -> str:
    """What a worker must share with a stage: interpreter, where the preloaded modules come from (the import
    path outside the project: a project's own sources are imported afresh in each stage anyway), the code
    of both sides (this module and the worker's), and the environment read at import time. PYTHONPATH counts
    through the import path alone, so copies of a project in other folders share one worker."""
    env = {
        k: v for k, v in os.environ.items() if (k.startswith(IMPORT_ENV) or k in IMPORT_ENV_NAMES) and k != "PYTHONPATH"
    }
    keras_json = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    facts = {
        "python": [sys.executable, sys.version],
        "path": [entry for entry in sys.path[1:] if not _inside(entry, Path.cwd())],
        "code": hashlib.sha256(b"".join(path.read_bytes() for path in _code_files())).hexdigest(),
        "env": sorted(env.items()),
        "keras.json": keras_json.read_text() if keras_json.is_file() else "",
    }
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:24]


def _code_files() -> tuple[Path, Path]:
    """This module and the worker's: a worker started from older code of either is not reused."""
    # The worker's side (preloading, serving, becoming a stage) runs in a process of its own (`_start_worker`);
    # imported here for its file, which also makes it a code dependency of every stage, as it should be.
    from cnnlab.pipeline import warm_worker

    return Path(__file__), Path(warm_worker.__file__)


def _inside(entry: str, folder: Path) -> bool:
    return Path(entry or ".").resolve().is_relative_to(folder.resolve())


def runtime_dir() -> Path:
    """A folder only this user can enter: whoever can reach a worker's socket can run code as its owner."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = base / f"cnnlab-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WarmUnavailable(f"{folder} is not private to this user")
    if len(os.fsencode(folder)) + SOCKET_NAME_BYTES > SOCKET_PATH_MAX:
        raise WarmUnavailable(f"{folder} is too long a path for a Unix socket; set XDG_RUNTIME_DIR to a shorter one")
    return folder


def _run_remote(script: str) -> int:
    folder = runtime_dir()
    key = worker_key()
    conn = _connect(folder / f"{key}.sock")
    if conn is None:  # this stage runs in its own process (no slower than waiting); the stages after it find one
        raise WorkerStarting("started one for the next stages" if start_worker(folder, key) else "a worker is starting")
    with conn:
        request = {
            "argv": [script, *sys.argv[1:]],
            "cwd": os.getcwd(),
            "path": sys.path,
            "env": dict(os.environ),
            "umask": _umask(),
            "client": os.getpid(),
        }
        body = json.dumps(request).encode()
        replies = conn.makefile("rb")
        try:  # until the stage has started, a worker that went away (idle, at that moment) costs nothing
            socket.send_fds(conn, [struct.pack("!I", len(body))], [0, 1, 2])
            conn.sendall(body)
            started = json.loads(replies.readline() or b'{"error": "the worker closed the connection"}')
        except OSError as exc:
            raise WarmUnavailable(f"the worker went away: {exc}") from None
        if "error" in started:
            raise WarmUnavailable(started["error"])
        _forward_signals(started["pid"])
        ended = replies.readline()
        if not ended:
            raise SystemExit("cnnlab: the warm worker ended before the stage reported its exit status")
        return int(json.loads(ended)["status"])


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


class WorkerStarting(WarmUnavailable):
    """This key's worker is importing: the stage runs in its own process rather than wait for it."""


def start_worker(folder: Path, key: str) -> bool:
    """Start this key's worker in the background; False if one is starting already. The worker inherits the
    lock and holds it until it listens, so only one starts."""
    sock_path, log_path = folder / f"{key}.sock", folder / f"{key}.log"
    with open(folder / f"{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        sock_path.unlink(missing_ok=True)  # a worker that died without cleaning up
        env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_") and k != "CNNLAB_PROBED"}
        code = (
            f"import sys; sys.path[1:] = {sys.path[1:]!r}; from cnnlab.pipeline.warm_worker import serve; "
            f"serve({str(sock_path)!r}, {lock.fileno()})"
        )
        with open(log_path, "w") as log:
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(lock.fileno(),),
                start_new_session=True,  # Ctrl-C in the terminal stops the stage, not the worker
            )
    return True


# ---- `cnnlab warm`: a worker ready before the first stage --------------------------------------------------


def start_worker_here() -> bool:
    """Start this environment's worker in the background unless one runs or is starting; True if one runs."""
    folder, key = runtime_dir(), worker_key()
    if _answers(folder / f"{key}.sock"):
        return True
    start_worker(folder, key)
    return False


def wait_for_worker(timeout: float) -> None:
    """Wait until this environment's worker takes stages; WarmUnavailable, naming its log, if it does not."""
    folder, key = runtime_dir(), worker_key()
    log = folder / f"{key}.log"
    deadline = time.monotonic() + timeout
    for attempt in range(2):
        while _locked(folder / f"{key}.lock"):  # held from the worker's start until it listens
            if time.monotonic() > deadline:
                raise WarmUnavailable(f"the worker is not ready after {timeout:g} s (its log: {log})")
            time.sleep(0.05)
        if _answers(folder / f"{key}.sock"):
            return
        if attempt == 0:  # a worker found running may have reached its idle time since: start one
            start_worker(folder, key)
    raise WarmUnavailable(f"the worker stopped while starting; its log says why: {log}")


def _answers(sock_path: Path) -> bool:
    conn = _connect(sock_path)
    if conn is not None:
        conn.close()  # the worker drops a connection that sends no request
    return conn is not None


def _locked(lock_path: Path) -> bool:
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _forward_signals(pid: int) -> None:
    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in SIGNALS_FORWARDED:
        signal.signal(signum, forward)


def _exit_like(status: int) -> NoReturn:
    """Exit as the stage did: with its code, or killed by the same signal (so DVC reports what happened)."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
