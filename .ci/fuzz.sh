#!/usr/bin/env bash
# Bounded fuzzing: build every cargo-fuzz target in fuzz/ and run each for FUZZ_SECONDS
# (default 60) on a scratch copy of its committed seed corpus (fuzz/corpus/<target>/), so the
# repository stays clean. Exits non-zero if any target crashes, fails an invariant, leaks,
# times out or fails to build; prints one summary line per target.
#
# Runs on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address and
# friends), which stable rustc accepts with RUSTC_BOOTSTRAP=1, set here for these builds only.
# The AddressSanitizer runtime ships with stable's std for x86_64 Linux; where it does not, the
# script falls back to no sanitizer (FUZZ_SANITIZER=none forces that).
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_SANITIZER (address | none; default:
# address if it builds), FUZZ_TARGETS (space-separated subset; default: all targets).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
    && ! command -v clang++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz: no C++ compiler; installing g++"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
        echo "fuzz: a C++ compiler (g++ or clang++) is needed to build libFuzzer" >&2
        exit 1
    fi
fi

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    start=$(date +%s)
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
    echo "fuzz: cargo-fuzz installed in $(( $(date +%s) - start )) s"
fi

# -a: debug assertions (and with them overflow checks) on, as in the tests.
sanitizer=${FUZZ_SANITIZER:-}
if [ -z "$sanitizer" ]; then
    if cargo fuzz build -a -s address; then
        sanitizer=address
    else
        echo "fuzz: build with AddressSanitizer failed; falling back to no sanitizer" >&2
        sanitizer=none
    fi
fi
cargo fuzz build -a -s "$sanitizer"

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/augmentos-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in $targets; do
    corpus="$scratch/$t/corpus"
    artifacts="$PWD/fuzz/artifacts/$t"
    log="$scratch/$t/log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    status=0
    cargo fuzz run -a -s "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=30 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?

    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n1 || true)
    if [ "$status" = 0 ] && [ -n "$runs" ]; then
        rate=$(( runs / (secs > 0 ? secs : 1) ))
        echo "fuzz $t: ok, $runs executions in ${secs} s ($rate exec/s), $seeds seeds, $cov, sanitizer $sanitizer"
    else
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        echo "fuzz $t: FAILED (exit $status) after ${execs:-?} executions, sanitizer $sanitizer"
        # The panic or sanitizer report first, then the end of the log.
        grep -E -A4 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|^SUMMARY' "$log" \
            | head -n 40 | sed "s/^/  $t | /" || true
        echo "  $t | ..."
        tail -n 30 "$log" | sed "s/^/  $t | /"
        for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "  $t | reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s $sanitizer $t $a"
            echo "  $t | input (base64): $(base64 -w0 "$a")"
        done
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all targets ran ${FUZZ_SECONDS} s with no crash"
