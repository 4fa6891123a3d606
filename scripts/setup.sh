#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install Corral with its test tools.
#
# torch goes in first and on its own: a plain `torch` requirement can pull a multi-GB CUDA
# build. We install $CORRAL_TORCH_SPEC (default torch==2.13.0, the CPU build on this kind of
# machine) unless the environment already has a torch, which we keep (a GPU user's CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${CORRAL_TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.corral-installed"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
if "$PY" -c "import torch" 2>/dev/null; then
  echo "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "installing $TORCH_SPEC"
  "$PY" -m pip install -q "$TORCH_SPEC" || {
    echo "$TORCH_SPEC is not available here; installing the newest torch instead" >&2
    "$PY" -m pip install -q torch
  }
fi
"$PY" -m pip install -q -e '.[dev]'
touch "$STAMP"
