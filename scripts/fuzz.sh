#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target for a fixed time, as CI does.
#
#   bash scripts/fuzz.sh [SECONDS]     # SECONDS per target, default 30
#
# Needs a stable Rust toolchain: cargo-fuzz's nightly-only flags (-Zsanitizer=address)
# are allowed through RUSTC_BOOTSTRAP=1. Installs cargo-fuzz when it is missing.
# Each target starts from its committed seeds (fuzz/seeds/<target>/) plus any
# reproducers of past crashes (fuzz/regressions/<target>/); new inputs go to the
# git-ignored fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/.
# Exits non-zero when any target finds a crash (or fails to run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

SECONDS_PER_TARGET="${1:-30}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS]   (a positive whole number, default 30)" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

TARGETS=(frame_decoder session_frames session_pair handshake stream_header http_routing http_authority proxy_answer h1_response first_bytes proxy_v2)

echo "== cargo fuzz build (all targets, once)"
cargo fuzz build

LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT
failed=()
summary=()

for t in "${TARGETS[@]}"; do
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s"
    corpus="$ROOT/fuzz/corpus/$t"
    mkdir -p "$corpus"
    inputs=("$corpus" "$ROOT/fuzz/seeds/$t")
    if [[ -d "$ROOT/fuzz/regressions/$t" ]]; then
        inputs+=("$ROOT/fuzz/regressions/$t")
    fi
    log="$LOG_DIR/$t.log"
    status=0
    # The first corpus directory receives new inputs; the others are only read.
    cargo fuzz run "$t" "${inputs[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 \
        -timeout=60 \
        -print_final_stats=1 \
        2>&1 | tee "$log" || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    if [[ "$status" -ne 0 ]]; then
        failed+=("$t")
        summary+=("$(printf '%-16s FAILED (exit %s)' "$t" "$status")")
    else
        summary+=("$(printf '%-16s ok  %10s runs  %8s exec/s' "$t" "${runs:-?}" "${rate:-?}")")
    fi
done

echo
echo "== summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo
    echo "crashes or failures in: ${failed[*]}" >&2
    for t in "${failed[@]}"; do
        if [[ -d "$ROOT/fuzz/artifacts/$t" ]]; then
            echo "artifacts of $t:" >&2
            ls -1 "$ROOT/fuzz/artifacts/$t" >&2 || true
        fi
    done
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
