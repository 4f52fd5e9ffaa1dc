"""Atomic file output and content hashing.

Every output is written beside its target and renamed into place, so a stage
that fails or is interrupted leaves the previous result untouched. A stage with
several outputs stages them all first and moves them into place only once
everything (MLflow logging included) has succeeded.

Temporary files and staging folders carry the id of the process that made them.
A process killed outright (`kill -9`) cannot remove its own; the next stage
removes those of processes that are gone, and finishes a staging folder's moves
if its process was killed while making them (its journal lists them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}{TMP_MARK}{os.getpid()}-", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)  # mkstemp makes 0600; outputs are ordinary readable files
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


TMP_MARK = ".tmp-"  # .<name>.tmp-<pid>-<random><suffix>: a temporary file of process <pid>
STAGING = ".staging-"  # .staging-<pid>-<random>: a stage's outputs before they are moved into place
JOURNAL = "moves.json"  # in a staging folder: the moves of a commit, written before the first one


def process_gone(pid: int) -> bool:
    """Whether no process has id `pid` (another user's process counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether `pid` has exited and waits only to be reaped by its parent (Linux; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"  # the state follows the command name, which may hold spaces


def _owner(name: str, mark: str) -> int | None:
    """The process id in a temporary or staging name after `mark`, or None if it holds none."""
    digits = name.partition(mark)[2].partition("-")[0]
    return int(digits) if mark in name and digits.isdigit() else None


def remove_stale_temporaries(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporary files (atomic_path's) below `folders` whose process is gone; the ones removed."""
    removed = []
    for folder in (f for f in folders if f.is_dir()):
        for here, _, files in os.walk(folder):
            for name in files:
                pid = _owner(name, TMP_MARK) if name.startswith(".") else None
                if pid is not None and process_gone(pid):
                    (Path(here) / name).unlink(missing_ok=True)
                    removed.append(Path(here) / name)
    return removed


class Staging:
    """Outputs written under a staging folder with their final names, moved onto their targets by `commit`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.moves: list[tuple[Path, Path]] = []

    def path(self, target: Path | str) -> Path:
        """Where to write the output meant for `target` (same file name, so logged artifacts keep it)."""
        staged = self.folder / str(len(self.moves)) / Path(target).name
        staged.parent.mkdir(parents=True)
        self.moves.append((staged, Path(target)))
        return staged

    def commit(self) -> None:
        """Move every output into place. The moves are journalled first: if this process is killed half way,
        the next `staged_outputs` in the same root makes the rest (`recover_staging`)."""
        journal = [[str(staged), str(target.resolve())] for staged, target in self.moves]
        write_json(self.folder / JOURNAL, journal)
        self.replay(journal)

    @staticmethod
    def replay(journal: list[list[str]]) -> None:
        """Make the moves of `journal` whose staged output is still there (the others are done)."""
        for staged, target in ((Path(a), Path(b)) for a, b in journal):
            if not staged.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if staged.is_dir():  # a folder output: the new one replaces the old whole (no stale files left)
                replace_dir(staged, target)
            else:
                os.replace(staged, target)


def recover_staging(root: Path) -> list[Path]:
    """The staging folders in `root` of processes that are gone: a committing one's moves are finished, then every
    such folder is removed. The folders recovered."""
    found = []
    for folder in sorted(root.glob(f"{STAGING}*")):
        pid = _owner(folder.name, STAGING)
        if pid is None or not process_gone(pid):
            continue
        journal = folder / JOURNAL
        if journal.is_file():
            Staging.replay(json.loads(journal.read_text()))
        shutil.rmtree(folder, ignore_errors=True)
        found.append(folder)
    return found


@contextlib.contextmanager
def staged_outputs(root: Path) -> Iterator[Staging]:
    """Stage outputs under `root` (same file system, so the final moves are renames); commit them only on success."""
    root.mkdir(parents=True, exist_ok=True)
    recover_staging(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{STAGING}{os.getpid()}-", dir=root))
    try:
        staging = Staging(folder)
        yield staging
        staging.commit()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_with(target: Path | str, writer: Callable[[Path], Any]) -> Path:
    """Run `writer(tmp_path)` and move the result onto `target` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_text(target: Path | str, text: str) -> Path:
    return write_with(target, lambda p: p.write_text(text))


def write_json(target: Path | str, data: Any) -> Path:
    return write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def copy_file(source: Path, target: Path) -> Path:
    return write_with(target, lambda p: shutil.copyfile(source, p))


def replace_dir(fresh: Path, target: Path) -> None:
    """Put the folder `fresh` where `target` is, removing the old one only once the new one is in place."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def combined_hash(parts: Iterable[str]) -> str:
    """One short digest for several digests (order-independent)."""
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def env_path(variable: str, configured: Path | None) -> Path | None:
    """A folder from params, unless the environment variable `variable` names another one."""
    return Path(os.environ[variable]) if os.environ.get(variable) else configured
