#!/usr/bin/env bash
# Screenshot a genbench HTML report in headless Chromium, to check that tables and embedded
# images render offline (the report references no external URL).
#
#   scripts/screenshot_report.sh reports/digits/smoke/report.html [out.png] [WIDTHxHEIGHT]
#
# Needs Debian's `chromium` package (`apt-get install -y chromium`). Writes out.png (default:
# next to the report, report.png) and prints its path. Network features are switched off so the
# screenshot proves the file is self-contained.
set -euo pipefail

html=${1:?usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${html%.html}.png}
size=${3:-1300x3000}

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
    echo "error: chromium not found; install it with 'apt-get install -y chromium'" >&2
    exit 2
fi
[[ -f "$html" ]] || { echo "error: $html not found; render it with 'bench report'" >&2; exit 2; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --window-size="${size/x/,}" --screenshot="$out_abs" "$url" >/dev/null 2>&1 || true

if [[ ! -s "$out_abs" ]]; then
    echo "error: chromium wrote no screenshot to $out_abs" >&2
    exit 1
fi
echo "$out_abs"
