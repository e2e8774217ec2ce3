#!/usr/bin/env bash
# Routing throughput through HAProxy and N processes on this machine (loopback only):
#
#   cargo build --release --bins && contrib/haproxy/throughput.sh N [edge-load route options]
#
# Writes an edge-load scratch config (its apps' webhooks go to edge-load), starts N processes
# on it (each its own port and publicWsUrl, durable state in memory: the store is not on the
# routing path), HAProxy with contrib/haproxy/haproxy.cfg in front, then runs `edge-load route`
# with its glasses connecting through HAProxy (the apps connect straight to their process).
# Delivered msgs/s is for all processes; the server CPU and RSS edge-load prints are those of
# process 1 only. Default load: 16 glasses x 4 apps, 10 s, flat out.
set -euo pipefail
n=${1:?usage: $0 N [edge-load route options]}
shift
cd "$(dirname "$0")/../.."
command -v haproxy >/dev/null || { echo "haproxy is not installed" >&2; exit 1; }
load=target/release/edge-load
bin=target/release/augmentos-edge
base=${EDGE_BASE_PORT:-18200}
dir=$(mktemp -d "${TMPDIR:-/tmp}/augmentos-edge-throughput.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

"$load" route --apps 4 --write-config "$dir/base.json" >/dev/null
servers=""
for i in $(seq 1 "$n"); do
    port=$((base + i))
    python3 - "$dir/base.json" "$dir/edge$i.json" "$port" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
port = sys.argv[3]
c["listen"] = ["127.0.0.1:" + port]
c["publicWsUrl"] = "ws://127.0.0.1:" + port
c.pop("internalWsUrl", None)
json.dump(c, open(sys.argv[2], "w"))
PY
    "$bin" serve --config "$dir/edge$i.json" 2> "$dir/edge$i.log" &
    pids+=($!)
    servers+="    server edge$i 127.0.0.1:$port"$'\n'
done
sed -e "s/bind 127.0.0.1:8100/bind 127.0.0.1:$base/" -e '/^    server edge/d' \
    contrib/haproxy/haproxy.cfg > "$dir/haproxy.cfg"
printf '%s' "$servers" >> "$dir/haproxy.cfg"
haproxy -f "$dir/haproxy.cfg" -db 2> "$dir/haproxy.log" &
pids+=($!)
for i in $(seq 1 "$n"); do
    until curl -sf "http://127.0.0.1:$((base + i))/health" >/dev/null; do sleep 0.1; done
done
sleep 1.5 # HAProxy's health checks see every process up
"$load" route --sessions 16 --apps 4 "$@" --port "$base" --server-pid "${pids[0]}" --config "$dir/edge1.json"
