#!/usr/bin/env bash
# Fetch the web UI's vendored xterm.js from the npm registry (`make vendor`) into static/vendor/xterm/,
# byte for byte as published, and check each file against the SHA-256 recorded in static/vendor/README.md.
# Nothing is fetched at run time: the copies are committed; this script reproduces and checks them.
set -euo pipefail
XTERM=6.0.0
FIT=0.11.0
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/static/vendor/xterm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@xterm/xterm@$XTERM" "@xterm/addon-fit@$FIT" >/dev/null)
tar xzf "$work/xterm-xterm-$XTERM.tgz" -C "$work" && mv "$work/package" "$work/xterm"
tar xzf "$work/xterm-addon-fit-$FIT.tgz" -C "$work" && mv "$work/package" "$work/fit"
mkdir -p "$dest"
cp "$work/xterm/lib/xterm.mjs" "$work/xterm/css/xterm.css" "$dest/"
cp "$work/xterm/LICENSE" "$dest/LICENSE"
cp "$work/fit/lib/addon-fit.mjs" "$dest/"
cp "$work/fit/LICENSE" "$dest/LICENSE.addon-fit"
cd "$dest"
# The README's table holds `sha256  file` lines between its ```sha256 fences.
sed -n '/^```sha256$/,/^```$/p' "$here/static/vendor/README.md" | grep -v '^```' | sha256sum --check --quiet
echo "vendored @xterm/xterm $XTERM and @xterm/addon-fit $FIT into $dest (checksums match)"
