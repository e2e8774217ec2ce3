#!/usr/bin/env bash
# Check the units (the box's and the transcriber's) with `systemd-analyze verify`, pointing it at a built binary (verify insists
# the ExecStart= binary exists). Usage: contrib/systemd/verify.sh [BINARY]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(realpath "${1:-$here/../../target/debug/augmentos-edge}")"
[ -x "$bin" ] || { echo "verify.sh: no binary at $bin (cargo build first)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/augmentos-unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/augmentos-edge|$bin|g" "$here/augmentos-edge.service" >"$tmp/augmentos-edge.service"
cp "$here/augmentos-transcriber.service" "$tmp/"
for unit in augmentos-edge.service augmentos-transcriber.service; do
    out=$(cd "$tmp" && systemd-analyze verify "./$unit" 2>&1) || { echo "$out" >&2; exit 1; }
    # verify exits 0 on some warnings: treat any line about our units as a failure.
    if printf '%s\n' "$out" | grep -q 'augmentos-'; then
        echo "$out" >&2
        exit 1
    fi
done
echo "systemd units: verified"
