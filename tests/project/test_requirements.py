"""The Python packages setup.sh installs: every one pinned to a version and its sha256 hashes, pip itself included;
what cnnlab needs to run (requirements.lock) apart from the development tools (requirements-dev.lock), each lock
complete on its own, and in step with pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.project import ROOT

RUNTIME, DEV, PIP = ROOT / "requirements.lock", ROOT / "requirements-dev.lock", ROOT / "requirements-pip.lock"
LOCKS = [RUNTIME, DEV, PIP]
SETUP = ROOT / "scripts" / "setup.sh"
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)((?:\s+--hash=sha256:[0-9a-f]{64})+)")
# Imported by src/cnnlab under KERAS_BACKEND=torch only; no lock installs it (docs/gpu.md).
OPTIONAL_BACKENDS = {"torch"}
# Imported by src/cnnlab for a study's `executor: ray` only: the extra cnnlab[ray], which requirements-dev.lock
# installs for the tests and CI.
OPTIONAL_EXTRAS = {"ray"}


def requirement_lines(path: Path) -> list[str]:
    """A requirements file's requirements, one a line: continued lines joined, comments and blank lines left out."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def pins(path: Path) -> dict[str, str]:
    """Canonical package name -> pinned version, from a lock or a .in file (`-c`/`-r` lines left out)."""
    found = {}
    for line in requirement_lines(path):
        if not line.startswith("-"):
            requirement = Requirement(line.split(" --hash")[0])
            (specifier,) = requirement.specifier
            found[canonicalize_name(requirement.name)] = specifier.version
    return found


def pyproject_pins(lines: list[str]) -> dict[str, str]:
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in map(Requirement, lines)}


def test_every_lock_pins_each_package_to_one_version_with_its_hashes() -> None:
    for lock in LOCKS:
        lines = requirement_lines(lock)
        assert lines, f"{lock.name} pins nothing"
        for line in lines:
            assert PIN.fullmatch(line), f"{lock.name}: not `name==version --hash=sha256:...`: {line[:120]}"
        assert len(pins(lock)) == len(lines), f"{lock.name} pins a package twice"


def test_each_lock_says_how_to_regenerate_it() -> None:
    for lock in LOCKS:
        header = lock.read_text().split("\n\n")[0]
        assert "uv pip compile" in header and f"-o {lock.name}" in header and "--generate-hashes" in header, lock.name


def test_runtime_and_development_packages_are_apart_and_cover_pyproject() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    assert not runtime.keys() & dev.keys(), "requirements-dev.lock repeats packages of requirements.lock"
    assert set(pins(PIP)) == {"pip"} and "pip" not in runtime | dev
    # pyproject.toml's versions, the .in files' and the locks' agree.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert pins(ROOT / "requirements.in").items() >= pyproject_pins(project["dependencies"] + extras["jax"]).items()
    assert pins(ROOT / "requirements-dev.in") == pyproject_pins(extras["dev"])
    assert runtime.items() >= pins(ROOT / "requirements.in").items()
    assert dev.items() >= pins(ROOT / "requirements-dev.in").items()


def test_mlflow_s_login_app_is_a_runtime_package() -> None:
    runtime = pins(RUNTIME)
    assert runtime["flask-wtf"] == "1.3.0" and "wtforms" in runtime  # mlflow[auth], for `cnnlab server`


def test_each_lock_installs_on_its_own() -> None:
    """What a locked package requires (markers as on this Python, extras not taken) is in the same lock, or for the
    development tools in the runtime lock too: a runtime-only install needs nothing from requirements-dev.lock."""
    runtime, dev = pins(RUNTIME), pins(DEV)
    for lock, available in [(runtime, runtime), (dev, runtime | dev)]:
        for name in lock:
            for line in importlib.metadata.requires(name) or []:
                requirement = Requirement(line)
                if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                    assert canonicalize_name(requirement.name) in available, f"{name} requires {line}"


def third_party_imports() -> set[str]:
    """The top-level modules that src/cnnlab and the stages import, anywhere in a module, from outside the project."""
    found = set()
    for path in [*(ROOT / "src" / "cnnlab").rglob("*.py"), *(ROOT / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "cnnlab"}


def test_cnnlab_imports_only_runtime_packages() -> None:
    runtime, dev = pins(RUNTIME), pins(DEV)
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports()
    assert {"keras", "mlflow", "jax"} <= imports  # the scan sees conditional imports too
    assert imports >= OPTIONAL_EXTRAS
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert pyproject_pins(extras["ray"]).items() <= dev.items()  # the extra is what the dev lock installs
    for module in sorted(imports - OPTIONAL_BACKENDS - OPTIONAL_EXTRAS):
        packages = {canonicalize_name(name) for name in providers.get(module, [])}
        assert packages, f"src/cnnlab imports {module}, which no installed package provides"
        assert not packages & dev.keys(), f"src/cnnlab imports {module} from a development package"
        assert packages & runtime.keys(), f"src/cnnlab imports {module}, which requirements.lock does not pin"


def setup_pip_commands(tmp_path: Path, **env: str) -> list[str]:
    """What setup.sh asks pip to do, run in a copy where .venv/bin/python only logs its arguments (and where
    apt-get is not on PATH)."""
    project, tools, log = tmp_path / "project", tmp_path / "bin", tmp_path / "log"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, project / "scripts")
    tools.mkdir()
    (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    python = project / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n')
    python.chmod(0o755)
    env = {"PATH": str(tools), "PYTHON": str(python), **env}
    done = subprocess.run(["/bin/bash", "scripts/setup.sh"], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in log.read_text().splitlines() if line.startswith("-m pip ")]


def test_setup_installs_a_pinned_pip_then_the_locks_with_hashes(tmp_path: Path) -> None:
    (pip,) = requirement_lines(PIP)
    assert pip.startswith("pip==") and "--hash=sha256:" in pip
    first, editable = "-m pip install -q --require-hashes -r requirements-pip.lock", "-m pip install -q --no-deps -e ."
    assert setup_pip_commands(tmp_path / "default") == [
        first,
        "-m pip install -q --require-hashes -r requirements.lock -r requirements-dev.lock",
        editable,
    ]
    assert setup_pip_commands(tmp_path / "runtime", CNNLAB_DEV="0") == [
        first,
        "-m pip install -q --require-hashes -r requirements.lock",
        editable,
    ]


def test_the_retrain_workflow_installs_no_development_tools() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "retrain.yml").read_text())
    installs = [step for job in workflow["jobs"].values() for step in job["steps"]
                if "scripts/setup.sh" in step.get("run", "")]  # fmt: skip
    assert len(installs) == 2 and all(step["env"]["CNNLAB_DEV"] == "0" for step in installs)
