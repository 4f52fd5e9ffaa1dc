"""The warm worker's side of `cnnlab.pipeline.warm`: a process, started by a stage's own process, that imports
the third-party modules the stages use once, listens on a Unix socket, and forks a ready copy of itself for
each stage request, which becomes the stage's process (its streams, directory, environment, arguments) and
runs the script as a fresh interpreter would.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import random
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from cnnlab.pipeline.warm import CLIENT_ENV

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
