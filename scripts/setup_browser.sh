#!/usr/bin/env bash
# Install what the real-browser test (tests/test_browser.py) drives: Debian's Chromium and
# ChromeDriver. Idempotent: nothing happens when both are already installed. Selenium itself is
# a pinned [dev] dependency (scripts/setup.sh). A failed install is reported, not fatal: the
# browser test then skips and says why: the reason goes to /tmp/sunfish-browser-setup.txt
# (the apt output to /tmp/sunfish-apt.log).
set -uo pipefail
REASON=/tmp/sunfish-browser-setup.txt
fail() { echo "setup_browser: $1" >&2; echo "$1" > "$REASON"; exit 0; }
rm -f "$REASON"

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "setup_browser: chromium and chromedriver are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  fail "no apt-get here; install chromium and chromedriver by hand for the browser test"
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    fail "not root and no passwordless sudo to apt-get install chromium chromium-driver"
  fi
fi
echo "setup_browser: installing chromium and chromium-driver (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq >/tmp/sunfish-apt.log 2>&1 \
   || ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >>/tmp/sunfish-apt.log 2>&1; then
  tail -n 5 /tmp/sunfish-apt.log >&2
  fail "apt-get install chromium chromium-driver failed: $(grep -E '^(E|Err):' /tmp/sunfish-apt.log | tail -n 1)"
fi
echo "setup_browser: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
