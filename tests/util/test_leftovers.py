"""What a stage killed outright (`kill -9`) leaves behind: its temporary files are removed by the next stage, and
a staging folder it was committing is finished, so no output is left half replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cnnlab.pipeline.stage import Paths
from cnnlab.util.files import STAGING, atomic_path, process_gone, remove_stale_temporaries, staged_outputs
from helpers.project import ROOT

WRITE_AND_HANG = """
import sys, time
from pathlib import Path
from cnnlab.util.files import atomic_path
with atomic_path(Path(sys.argv[1]) / "cifar-10-python.tar.gz") as tmp:
    tmp.write_bytes(b"half a download")
    print("writing", flush=True)
    time.sleep(120)
"""

COMMIT_AND_HANG = """
import sys, time
from pathlib import Path
from cnnlab.util import files
def hang(fresh, target):
    print("committing", flush=True)
    time.sleep(120)
files.replace_dir = hang  # the folder's move never happens: the file's did, just before
root = Path(sys.argv[1])
with files.staged_outputs(root) as out:
    out.path(root / "metrics" / "train.json").write_text("new")
    folder = out.path(root / "explain")
    folder.mkdir()
    (folder / "grad_cam.png").write_text("new")
"""


def killed_in(script: str, folder: Path) -> int:
    """Run `script` on `folder` until it prints its first line, then kill -9 it; its pid."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-c", script, str(folder)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.pid


def test_a_killed_writer_s_temporary_file_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw" / "cifar10"
    raw.mkdir(parents=True)
    pid = killed_in(WRITE_AND_HANG, raw)
    (left,) = raw.iterdir()
    assert left.name.startswith(f".cifar-10-python.tar.gz.tmp-{pid}-")
    with atomic_path(raw / "other.bin") as mine:  # this process's own, still being written
        mine.write_bytes(b"x")
        assert remove_stale_temporaries([tmp_path / "data"]) == [left]
        assert mine.exists() and not left.exists()
    assert [p.name for p in raw.iterdir()] == ["other.bin"]


def test_a_commit_killed_half_way_is_finished_by_the_next_stage(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text("old")
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "grad_cam.png").write_text("old")
    pid = killed_in(COMMIT_AND_HANG, tmp_path)
    (staging,) = tmp_path.glob(f"{STAGING}{pid}-*")
    assert (tmp_path / "metrics" / "train.json").read_text() == "new"  # half done: the file moved,
    assert (tmp_path / "explain" / "grad_cam.png").read_text() == "old"  # the folder not
    with staged_outputs(tmp_path):
        pass
    assert (tmp_path / "explain" / "grad_cam.png").read_text() == "new"
    assert not staging.exists() and not list(tmp_path.glob(f"{STAGING}*"))


def test_a_staging_folder_killed_before_its_commit_is_dropped(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    staging = tmp_path / f"{STAGING}{gone.stdout.strip()}-abc"
    (staging / "0").mkdir(parents=True)
    (staging / "0" / "model.keras").write_text("half written")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "F1.keras").write_text("old")
    with staged_outputs(tmp_path):
        pass
    assert not staging.exists() and (tmp_path / "models" / "F1.keras").read_text() == "old"


def test_every_stage_output_lies_in_a_folder_cleaned_before_each_stage() -> None:
    folders = Paths(ROOT).output_folders
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for out in [*stage.get("do", stage).get("outs", []), *stage.get("do", stage).get("metrics", [])]:
            path = ROOT / (next(iter(out)) if isinstance(out, dict) else out).replace("${item}", "x").replace(
                "${key}", "x"
            )
            assert any(path.is_relative_to(folder) for folder in folders), f"{name}: {path}"


def test_a_killed_process_not_yet_reaped_by_its_parent_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not process_gone(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not process_gone(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_gone(child.pid)  # a zombie: nothing has waited for it, so os.kill(pid, 0) still succeeds
    finally:
        child.kill()
        child.wait()
