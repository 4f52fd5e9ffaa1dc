"""Empty MLflow stores for tests: a new SQLite store spends about a second on its schema migrations, a copy of
one already migrated a few milliseconds."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path


@cache
def empty_store() -> Path:
    """A migrated MLflow SQLite store holding nothing but MLflow's Default experiment, made once per process."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="cnnlab-empty-mlflow-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(folder / "artifacts")).engine.dispose()
    return path


def new_store(path: Path) -> str:
    """An empty MLflow store at `path` (an SQLite file); its tracking URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store(), path)
    return f"sqlite:///{path}"
