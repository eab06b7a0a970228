#!/usr/bin/env bash
# Checks the control API against docs/openapi.yaml with schemathesis: a real
# `netbore server` on loopback, a real API key, every check, a bounded number of
# examples and a time bound. Fails on any failure.
#
# Environment:
#   NETBORE_BIN     binary to test (default: $CARGO_TARGET_DIR/release/netbore, built if missing)
#   MAX_EXAMPLES    test cases per operation and phase (default 40)
#   MAX_SECONDS     wall-clock bound for the schemathesis run (default 600)
#   SEED            fixed seed to reproduce a run
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${NETBORE_BIN:-$TARGET/release/netbore}
VENV=$TARGET/schemathesis-venv
MAX_EXAMPLES=${MAX_EXAMPLES:-40}
MAX_SECONDS=${MAX_SECONDS:-600}

# (a) schemathesis in a venv under target/ (Debian's Python refuses system-wide pip).
if [ ! -x "$VENV/bin/schemathesis" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null || [ ! -x "$VENV/bin/pip" ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq python3-venv
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            echo "error: python3 -m venv failed; install python3-venv (apt-get install python3-venv) and rerun" >&2
            exit 1
        fi
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"
fi

if [ ! -x "$BIN" ]; then
    cargo build --release --locked -p netbore
fi

# (b) a server on loopback ports, with a throwaway data directory and an API key.
TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN" server \
    --control-addr 127.0.0.1:0 --agent-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --https-addr 127.0.0.1:0 \
    --tcp-ports 0 --tcp-bind-ip 127.0.0.1 --domain localhost --allow-anonymous \
    --data-dir "$TMP/data" --token-ttl 5 \
    --api-rate 100000 --api-burst 100000 \
    --max-tunnels-per-key 100000 --max-tunnels-per-anonymous-ip 100000 \
    --max-names-per-key 100000 \
    --json >"$TMP/server.out" 2>"$TMP/server.err" &
SERVER_PID=$!

ADDR=
for _ in $(seq 1 300); do
    ADDR=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    ev = json.loads(line)
    if ev.get("event") == "listening":
        print(ev["control"]); break' "$TMP/server.out" 2>/dev/null || true)
    [ -n "$ADDR" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "error: the server exited before listening:" >&2
        cat "$TMP/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    echo "error: the server did not report its address within 30 s" >&2
    cat "$TMP/server.err" >&2
    exit 1
fi

KEY=$("$BIN" key create --data-dir "$TMP/data" --label schemathesis --json |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["key"])')

# (c) every check, bounded examples, bounded time.
SEED_ARGS=()
if [ -n "${SEED:-}" ]; then
    SEED_ARGS=(--seed "$SEED")
fi
echo "schemathesis against http://$ADDR (max $MAX_EXAMPLES examples per operation, ${MAX_SECONDS}s)"
status=0
# schemathesis keeps a cache in its working directory: keep it in the throwaway one.
cd "$TMP"
timeout --signal=INT "$MAX_SECONDS" "$VENV/bin/schemathesis" run "http://$ADDR/openapi.json" \
    --header "Authorization: Bearer $KEY" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 10 \
    --workers 2 \
    --generation-database none \
    --no-color \
    "${SEED_ARGS[@]}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "schemathesis failed (exit $status); server log:" >&2
    tail -n 50 "$TMP/server.err" >&2
    exit "$status"
fi
echo "schemathesis passed"
