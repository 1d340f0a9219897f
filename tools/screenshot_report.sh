#!/usr/bin/env bash
# Take a headless-Chromium screenshot of a report.html (for the README, or to look at the figures).
#
#   tools/screenshot_report.sh RUN_DIR/report.html [OUT.png] [WIDTHxHEIGHT]
#
# Defaults: OUT.png beside the report (report.png), window 1200x2400. Needs chromium (Debian:
# `apt-get install chromium`) or google-chrome on PATH; it is not a project dependency. All
# networking is switched off: a self-contained report renders completely without it.
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]" >&2
  exit 2
fi
report="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out="${2:-${report%.html}.png}"
size="${3:-1200x2400}"
size="${size/x/,}"

browser=""
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
if [[ -z "$browser" ]]; then
  echo "error: no chromium/google-chrome on PATH (Debian: apt-get install -y chromium)" >&2
  exit 2
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --force-device-scale-factor=1 \
  --user-data-dir="$profile" --window-size="$size" \
  --screenshot="$out_abs" "file://$report" >/dev/null 2>&1

if [[ ! -s "$out_abs" ]]; then
  echo "error: $browser wrote no screenshot to $out_abs" >&2
  exit 1
fi
echo "$out_abs"
