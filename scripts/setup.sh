#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install Sunfish
# with the pinned versions of constraints.txt (pyproject.toml states only ranges). Idempotent: a second run with unchanged pins is instant.
#   SUNFISH_PYTHON=python3.11  the interpreter to build the venv from
#   SUNFISH_VENV=.venv         where the venv lives
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SUNFISH_VENV:-.venv}"
PY="${SUNFISH_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 not found; install it or set SUNFISH_PYTHON=/path/to/python3.11" >&2
  exit 2
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi

# Reinstall only when the ranges or the pins changed (hash of pyproject.toml + constraints.txt).
stamp="$VENV/.sunfish-install-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c 'import sunfish_lib' 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

echo "setup: installing Sunfish and its pinned dependencies into $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first and alone: its pin (constraints.txt) selects the CPU build where one is provided
# locally; GPU users install the CUDA build of that version beforehand (README) and pip keeps it.
"$VENV/bin/python" -m pip install --quiet "$(grep -E '^torch==' constraints.txt)"
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
