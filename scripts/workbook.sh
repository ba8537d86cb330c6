#!/usr/bin/env bash
# The README's main command: set up the environment, check the installation, then run
# the workbook end to end on the embedded default corpus (every numbered notebook,
# executed headlessly into one run folder under runs/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/sunfish check
.venv/bin/sunfish workbook "$@"
