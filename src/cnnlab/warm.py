"""Stage processes that start warm: a worker that has imported Keras, TensorFlow and MLflow once forks a
ready copy of itself for each stage, so a stage skips the 3-5 s those imports take, and the 2 s a process
that has them spends tearing them down at exit.

A stage script calls `run_in_warm_worker(__file__)` before its heavy imports. In the script's own process
(the one DVC or a user starts) that connects to the worker for this Python and environment, starting one
if none runs, passes it the command line, working directory, environment and terminal (stdin, stdout,
stderr), forwards Ctrl-C and termination signals, and exits with the stage's exit status. A stage that
finds no worker ready runs in its own process (and starts one, if none is starting, for the stages after
it). In the worker's fork the call returns and the script runs as it would in a fresh process: the
project's own modules are imported afresh (edits take effect), the random generators are reseeded, and
threads are joined and exit handlers run at the end.

Only third-party modules are preloaded, and a worker serves only processes whose interpreter, import path
(outside the project) and import-time environment (`KERAS_BACKEND`, `TF_*`, ...) are the ones it started
with. It exits after `CNNLAB_WARM_IDLE` seconds without a stage (default 60). `CNNLAB_WARM=0` runs every
stage in its own process; so does any failure to reach a worker. Linux only (fork, Unix sockets,
file-descriptor passing).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import hashlib
import importlib
import json
import os
import random
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

# Set in a stage run by a worker, to the pid of the process it stands in for.
CLIENT_ENV = "CNNLAB_WARM_CLIENT"
# Third-party modules the stages import; each costs its import time once per worker instead of once per stage.
PRELOAD = (
    "numpy",
    "keras",
    "mlflow",
    "mlflow.keras",
    "mlflow.models",
    "matplotlib.pyplot",
    "pandas",
    "sklearn.metrics",
    "PIL.Image",
    "sklearn.model_selection",
    "mlflow.store.tracking.sqlalchemy_store",  # the local tracking store, imported on the first MLflow call
    "keras_tuner",
    # Imported by every stage's first MLflow calls (run tags, the store, logging a model): 80 ms a stage
    "git",
    "mlflow.pyfunc.loaders",
    "mlflow.tracing.processor.base_mlflow",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "sqlalchemy.dialects.sqlite",
    "alembic.config",
    "netrc",
)
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
    path outside the project: a project's own sources are imported afresh in each stage anyway), this
    module's code, and the environment read at import time."""
    env = {k: v for k, v in os.environ.items() if k.startswith(IMPORT_ENV) or k in IMPORT_ENV_NAMES}
    keras_json = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    facts = {
        "python": [sys.executable, sys.version],
        "path": [entry for entry in sys.path[1:] if not _inside(entry, Path.cwd())],
        "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "env": sorted(env.items()),
        "keras.json": keras_json.read_text() if keras_json.is_file() else "",
    }
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:24]


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
    conn = _connect(folder / f"{key}.sock") or _start_worker(folder, key)
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


def _start_worker(folder: Path, key: str) -> NoReturn:
    """Start this key's worker in the background unless one is starting already; either way this stage runs
    in its own process (no slower than waiting), and the stages after it find the worker ready. The worker
    inherits the lock and holds it until it listens, so only one starts."""
    sock_path, log_path = folder / f"{key}.sock", folder / f"{key}.log"
    with open(folder / f"{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkerStarting("a worker is starting") from None
        sock_path.unlink(missing_ok=True)  # a worker that died without cleaning up
        env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_") and k != "CNNLAB_PROBED"}
        code = (
            f"import sys; sys.path[1:] = {sys.path[1:]!r}; from cnnlab.warm import serve; "
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
    raise WorkerStarting("started one for the next stages")


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


# ---- the worker --------------------------------------------------------------------------------------------


def fill_first_call_caches() -> None:
    """Fill, once per worker, the caches a process fills on its first MLflow calls (1 s a stage otherwise):
    which module belongs to which installed package (logging a model checks its requirements against them)
    and SQLAlchemy's table order for the tracking store's first write. Both are private to MLflow and
    SQLAlchemy: if they move, stages fill them themselves, as without a worker."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except (ImportError, AttributeError):
        pass
    try:
        import sqlalchemy.orm
        from mlflow.store.db.base_sql_model import Base
        from mlflow.store.model_registry.dbmodels import models as _registry_tables  # noqa: F401
        from mlflow.store.tracking.dbmodels import models as _tracking_tables  # noqa: F401

        sqlalchemy.orm.configure_mappers()
        for mapper in Base.registry.mappers:
            _ = mapper._sorted_tables  # memoized: the unit of work's table order, computed on the first flush
    except (ImportError, AttributeError):
        pass


def serve(sock_path: str, starting_lock: int) -> None:
    """Preload, listen (then let go of the lock that kept other stages from starting a worker too), and fork
    one waiter per stage request; a waiter forks the stage and reports its exit status (so a stage that
    crashes hard still gets one). Exits once no stage has run for CNNLAB_WARM_IDLE seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as `import cnnlab` does, before TensorFlow loads
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    fill_first_call_caches()
    # The preloaded modules' millions of objects are left out of every garbage collection in a stage: Keras
    # Tuner collects twice a trial, at 0.3 s each over them.
    gc.collect()
    gc.freeze()
    idle = float(os.environ.get("CNNLAB_WARM_IDLE", "60"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(16)
    os.close(starting_lock)
    listener.settimeout(1.0)
    worker, idle_since = os.getpid(), time.monotonic()
    waiters: set[int] = set()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                waiters = {pid for pid in waiters if os.waitpid(pid, os.WNOHANG)[0] == 0}
                if waiters:  # a long stage is not idleness
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle:
                    return
                continue
            conn.settimeout(None)
            pid = os.fork()
            if pid == 0:
                listener.close()
                _wait_on_stage(conn)
            waiters.add(pid)
            conn.close()
    finally:
        if os.getpid() == worker:
            Path(sock_path).unlink(missing_ok=True)


def _wait_on_stage(conn: socket.socket) -> NoReturn:
    try:
        request, fds = _read_request(conn)
    except (OSError, ValueError) as exc:
        _send(conn, {"error": f"bad request: {exc}"})
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_stage(request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    _send(conn, {"status": _wait(pid, conn)})
    os._exit(0)


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        raise ValueError(f"a process of user {uid} may not use this worker")
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(header) != 4 or len(fds) != 3:
        raise ValueError("expected a length and three file descriptors")
    (size,) = struct.unpack("!I", header)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("the request ended early")
        body += chunk
    return json.loads(body), fds


def _wait(pid: int, conn: socket.socket) -> int:
    """The stage's wait status; if the stage's own process goes away first, the stage is terminated."""
    pidfd = os.pidfd_open(pid)
    watched: list[Any] = [pidfd, conn]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if pidfd in ready:
            return os.waitpid(pid, 0)[1]
        if not conn.recv(1):
            watched.remove(conn)
            os.kill(pid, signal.SIGTERM)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the stage's own process is gone: nobody to tell
        conn.sendall(json.dumps(message).encode() + b"\n")


def _become_stage(request: dict[str, Any], fds: list[int]) -> NoReturn:
    """Turn this fork into the stage's process, run the script, and end as the interpreter would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CLIENT_ENV] = str(request["client"])
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    _reopen_stdio()
    _fresh_state()
    interrupted = False
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code, interrupted = 1, True
    except BaseException as exc:
        _print_from(script, exc)
        code = 1
    _end(code, interrupted)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def _end(code: int, interrupted: bool) -> NoReturn:
    """What the interpreter does at exit (join threads, run exit handlers, flush), without then tearing
    down every module: with TensorFlow loaded that alone takes about 2 s."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # killed by SIGINT, as an uncaught KeyboardInterrupt ends a fresh process
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _reopen_stdio() -> None:
    """Python's streams as a fresh process would open them on the stage's terminal or pipes (line-buffered
    on a terminal, so progress shows as it happens)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        old = getattr(sys, name)
        interactive = os.isatty(fd)
        stream = open(  # noqa: SIM115  (lives as long as the process)
            fd,
            mode,
            buffering=1 if interactive or fd == 2 else -1,
            encoding=getattr(old, "encoding", None),
            errors=getattr(old, "errors", None),
            closefd=False,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _fresh_state() -> None:
    """What a new process would not share with its siblings: the project's modules (imported afresh, so
    edits take effect), site customisation run for this stage's environment, and unseeded generators."""
    for name in [m for m in sys.modules if m == "cnnlab" or m.startswith("cnnlab.")]:
        del sys.modules[name]
    if "sitecustomize" in sys.modules:
        importlib.reload(sys.modules["sitecustomize"])
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _print_from(script: str, exc: BaseException) -> None:
    """The traceback as `python script` prints it: from the script's frames on, not the worker's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
