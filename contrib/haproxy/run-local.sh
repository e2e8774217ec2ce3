#!/usr/bin/env bash
# Try-out: N augmentos-edge processes, one PostgreSQL and HAProxy on this machine, loopback only.
#
#   contrib/haproxy/run-local.sh 4        # then connect glasses to ws://127.0.0.1:8100/glasses-ws
#
# Glasses go through HAProxy on 127.0.0.1:8100 (affinity by the token's user); process i listens
# on 127.0.0.1:810i and hands its apps ws://127.0.0.1:810i/app-ws. Every process uses the public
# development secret (make tokens with `augmentos-edge token --user you@example.com`) and apps
# from $EDGE_APPS (a JSON array, default none). PostgreSQL and HAProxy come from the
# distribution (installed with apt-get when missing and run as root). Ctrl-C stops everything
# and removes the temporary directory. EDGE_BIN picks the binary (default: target/release,
# built with cargo if not given).
#
# A venue feed goes to every process, not through HAProxy: give the transcriber each one,
#   contrib/transcriber/transcriber.py … --venue-audio - --box 127.0.0.1:8101,127.0.0.1:8102
# (each box with its own reconnect; one process down holds no other).
set -euo pipefail
n=${1:-2}
[[ $n =~ ^[1-9]$ ]] || { echo "usage: $0 N   (1-9 processes)" >&2; exit 2; }
cd "$(dirname "$0")/../.."
base=${EDGE_BASE_PORT:-8100}
pgport=${EDGE_PG_PORT:-55432}

pgbin=$(command -v initdb >/dev/null && dirname "$(command -v initdb)" || ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
need=()
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || need+=(postgresql)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    else
        echo "missing: ${need[*]} (install them from your distribution)" >&2; exit 1
    fi
fi

bin=${EDGE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --bin augmentos-edge
    bin=target/release/augmentos-edge
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/augmentos-edge-local.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    $as "$pgbin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# PostgreSQL refuses to run as root: as root it runs as nobody.
as=""
if [ "$(id -u)" = 0 ]; then as="runuser -u nobody --"; chown nobody "$dir"; fi
password=edge-local
echo "$password" > "$dir/pw"
$as "$pgbin/initdb" -D "$dir/pg" -U edge --auth=scram-sha-256 --pwfile="$dir/pw" --no-sync >/dev/null
$as "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
    -o "-p $pgport -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
url="postgres://edge:$password@127.0.0.1:$pgport/postgres"
echo "PostgreSQL on 127.0.0.1:$pgport (log $dir/pg.log)"

servers=""
for i in $(seq 1 "$n"); do
    port=$((base + i))
    cat > "$dir/edge$i.json" <<JSON
{"listen": ["127.0.0.1:$port"], "publicWsUrl": "ws://127.0.0.1:$port",
 "postgres": {"url": "$url"}, "ui": {"enabled": true}, "apps": ${EDGE_APPS:-[]}}
JSON
    "$bin" serve --config "$dir/edge$i.json" 2> "$dir/edge$i.log" &
    pids+=($!)
    servers+="    server edge$i 127.0.0.1:$port"$'\n'
    echo "process $i: 127.0.0.1:$port (pid $!, log $dir/edge$i.log)"
done

# The shipped configuration with this run's ports and processes.
sed -e "s/bind 127.0.0.1:8100/bind 127.0.0.1:$base/" -e '/^    server edge/d' \
    contrib/haproxy/haproxy.cfg > "$dir/haproxy.cfg"
printf '%s' "$servers" >> "$dir/haproxy.cfg"
haproxy -f "$dir/haproxy.cfg" -db 2> "$dir/haproxy.log" &
pids+=($!)
echo "HAProxy on 127.0.0.1:$base (config $dir/haproxy.cfg); Ctrl-C stops everything"
alive() { for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done; }
while alive; do sleep 1; done
echo "a process exited; stopping (logs in $dir are removed)" >&2
