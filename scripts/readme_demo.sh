#!/usr/bin/env bash
# Runs the README's first command exactly as written, as a newcomer would: the first
# line of the README's first code block, its trailing comment dropped. Waits for the
# demo's self-check, fetches the URL it printed with curl, then stops it with Ctrl-C
# (SIGINT), which must end it with exit status 0 within 5 s.
#
#   bash scripts/readme_demo.sh [SECONDS]    # time allowed to build and start, default 900
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT="${1:-900}"
command="$(awk '/^```/ { if (inside) exit; inside = 1; next } inside && NF { print; exit }' README.md)"
command="${command%%#*}"
command="$(echo "$command" | sed 's/[[:space:]]*$//')"
if [[ -z "$command" ]]; then
    echo "readme_demo: found no command in the README's first code block" >&2
    exit 1
fi
echo "readme_demo: running the README's first command: $command"

log="$(mktemp)"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# `exec` in a subshell makes $pid the command itself (cargo run in turn replaces
# itself with the program on Unix), so SIGINT goes where Ctrl-C would send it.
# Job control puts it in a process group of its own, where SIGINT is not ignored.
set -m
( exec bash -c "exec $command" ) >"$log" 2>&1 &
pid=$!
set +m

deadline=$((SECONDS + LIMIT))
until grep -q '^Self-check:' "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        cat "$log" >&2
        echo "readme_demo: '$command' ended before its self-check" >&2
        exit 1
    fi
    if grep -q 'self_check_failed\|could not fetch through its own tunnel' "$log"; then
        cat "$log" >&2
        echo "readme_demo: the demo's self-check failed" >&2
        exit 1
    fi
    if (( SECONDS >= deadline )); then
        cat "$log" >&2
        echo "readme_demo: no self-check line within ${LIMIT}s" >&2
        exit 1
    fi
    sleep 1
done

url="$(sed -n 's/^Tunnel online: \(http[^ ]*\).*/\1/p' "$log" | head -n 1)"
if [[ -z "$url" ]]; then
    cat "$log" >&2
    echo "readme_demo: the demo printed no 'Tunnel online: URL' line" >&2
    exit 1
fi
body="$(curl --silent --show-error --fail --max-time 10 "$url/")" || {
    cat "$log" >&2
    echo "readme_demo: curl could not fetch $url/" >&2
    exit 1
}
if [[ "$body" != *"Hello from Netbore"* ]]; then
    echo "readme_demo: $url/ answered '$body' instead of the hello page" >&2
    exit 1
fi
echo "readme_demo: curl $url/ answered: $body"

kill -INT "$pid"
status=""
for _ in $(seq 50); do
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    cat "$log" >&2
    echo "readme_demo: the demo was still running 5 s after Ctrl-C" >&2
    exit 1
fi
wait "$pid" && status=0 || status=$?
pid=""
if [[ "$status" -ne 0 ]]; then
    cat "$log" >&2
    echo "readme_demo: the demo exited with status $status after Ctrl-C (expected 0)" >&2
    exit 1
fi
echo "readme_demo: Ctrl-C stopped the demo with status 0"
