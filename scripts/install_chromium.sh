#!/usr/bin/env bash
# Install Debian's chromium for tests/test_report.py's headless render of an HTML report
# (scripts/screenshot_report.sh). Idempotent; never fails the caller: where it cannot be installed
# the test skips, and .ci/run's skip check (tests/expected_skips.txt) names it.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "install_chromium: chromium already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get on this machine; the headless report test will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_chromium: not root and no passwordless sudo; the headless report test will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
( $SUDO apt-get update -qq || true ) >/dev/null 2>&1
if $SUDO apt-get install -y -qq --no-install-recommends chromium >/tmp/install_chromium.log 2>&1; then
  echo "install_chromium: installed $(chromium --version 2>/dev/null)"
else
  echo "install_chromium: apt-get install failed (see /tmp/install_chromium.log); the headless report test will be skipped" >&2
fi
exit 0
