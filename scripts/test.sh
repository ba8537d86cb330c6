#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole test suite
# (unit tests, notebooks through papermill with smoke parameters, 2-process CPU runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_browser.sh  # Debian chromium + chromedriver for tests/test_browser.py
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
