#!/usr/bin/env bash
# Install Debian's chromium for tests/test_report.py's headless render of an HTML report
# (scripts/screenshot_report.sh). Idempotent; never fails the caller: where it cannot be installed
# the test skips, and .ci/run's skip check (tests/expected_skips.txt) names it.
set -u
. "$(dirname "$0")/apt_lib.sh"
SKIP="the headless report test will be skipped"
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "install_chromium: chromium already installed"
  exit 0
fi
apt_ready install_chromium "$SKIP" || exit 0
if apt_install install_chromium "$SKIP" chromium; then
  echo "install_chromium: installed $(chromium --version 2>/dev/null)"
fi
exit 0
