#!/usr/bin/env bash
# Install what the tests need and run them: system packages for a headless Qt/OpenGL
# display (only those missing), a virtual environment in .venv (reused if present),
# torch pinned and installed first, this package with its `testing` extra; then ruff,
# the import-layer contracts (lint-imports) and pytest (pytest-xvfb starts a virtual X server itself). Extra arguments go to
# pytest. Set TORCH_INDEX_URL to take torch from another index, e.g.
# https://download.pytorch.org/whl/cpu for the CPU-only build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*"; }

step "system packages"
bash scripts/install_system_deps.sh

if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $(command -v python3)"
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

step "python packages"
# torch first and pinned: a bare `torch` requirement would pull whatever build the
# index offers (on Linux from PyPI, the multi-GB CUDA one).
python -m pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
python -m pip install -e ".[testing]"

step "ruff"
ruff check .
ruff format --check .

step "import layers (import-linter, contracts in pyproject.toml)"
lint-imports

step "pytest"
python -m pytest "$@"
