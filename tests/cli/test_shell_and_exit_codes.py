"""The `cnnlab` command as a shell sees it: --version, completion scripts that complete, and exit codes that tell a
usage error (2) from a crash (1), `cnnlab retrain` included."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.project import GIT, ROOT

CNNLAB = [sys.executable, "-m", "cnnlab.cli"]


def cnnlab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*CNNLAB, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_version_is_the_installed_distributions() -> None:
    done = cnnlab("--version")
    assert (done.returncode, done.stdout) == (0, f"cnnlab {importlib.metadata.version('cnnlab')}\n")


def completions(script: Path, words: list[str], cwd: Path) -> list[str]:
    """What bash offers for the last of `words` with the completion `script` loaded."""
    array = " ".join(f"'{w}'" for w in ["cnnlab", *words])
    done = subprocess.run(
        ["bash", "-c", f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; _shtab_cnnlab; "
         'printf "%s\\n" "${COMPREPLY[@]}"'],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_bash_completion_completes_commands_choices_and_paths(tmp_path: Path) -> None:
    script = tmp_path / "cnnlab.bash"
    done = cnnlab("completion", "bash")
    assert done.returncode == 0, done.stderr
    script.write_text(done.stdout)
    (tmp_path / "params.yaml").write_text("")
    (tmp_path / "images").mkdir()
    assert completions(script, ["pre"], tmp_path) == ["predict"]
    assert completions(script, ["ret"], tmp_path) == ["retrain"]
    assert completions(script, ["completion", ""], tmp_path) == ["bash", "zsh", "tcsh"]
    assert completions(script, ["--params", "par"], tmp_path) == ["params.yaml"]
    assert completions(script, ["retrain", "--budget", "q"], tmp_path) == ["quick"]


def test_zsh_completion_is_a_compdef_script() -> None:
    done = cnnlab("completion", "zsh")
    assert done.returncode == 0 and done.stdout.startswith("#compdef cnnlab")
    assert "predict:" in done.stdout and "--params" in done.stdout


@pytest.mark.slow  # subprocesses that import the stack: the full suite, not the inner loop
def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    unknown = cnnlab("nosuchcommand")
    assert unknown.returncode == 2 and "invalid choice: 'nosuchcommand'" in unknown.stderr
    wrong_shell = cnnlab("completion", "cmd.exe")
    assert wrong_shell.returncode == 2
    missing = cnnlab("--params", str(tmp_path / "nope.yaml"), "check")  # bad input: a UserError
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def test_a_crash_exits_1_with_its_traceback() -> None:
    crash = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom cnnlab.cli import commands\ncommands.show = lambda args: 1 / 0\n"
         "sys.exit(commands.main(['list']))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert crash.returncode == 1 and "ZeroDivisionError" in crash.stderr and "Traceback" in crash.stderr


@pytest.fixture
def failing_project(tmp_path: Path) -> Path:
    """A git + DVC project whose one stage fails, with the repository's params (read before anything runs)."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages:\n  broken:\n    cmd: exit 3\n")
    subprocess.run([*GIT, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "a failing stage"], cwd=tmp_path, check=True)
    return tmp_path


@pytest.mark.slow  # subprocesses that import the stack: the full suite, not the inner loop
def test_retrain_tells_bad_input_from_a_failed_step(failing_project: Path) -> None:
    params = str(failing_project / "params.yaml")
    unknown_base = cnnlab("--params", params, "retrain", "--no-pull", "--no-push", "--base", "nope")
    assert unknown_base.returncode == 2 and "base revision 'nope' not found" in unknown_base.stderr
    failed = cnnlab("--params", params, "retrain", "--no-pull", "--no-push", "--base", "HEAD")
    assert failed.returncode == 1, failed.stderr
    assert "error: `dvc repro` failed with exit code" in failed.stderr and "Traceback" not in failed.stderr
