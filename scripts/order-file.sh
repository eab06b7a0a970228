#!/usr/bin/env bash
# Regenerates cli/netbore.order: the functions a Netbore server and its agents run,
# found by running them under valgrind's callgrind with a short workload (every
# transport, TCP and HTTP tunnels, bulk and many small requests, keep-alive pings).
# cli/build.rs links the binary with that order so the code in use sits together and
# idle processes keep less of the binary resident (docs/benchmarks.md, "Memory").
#
# The file lists first what idle processes run (start-up, a TCP and an HTTP tunnel
# online, keep-alive pings), then what only load runs (the other transports, traffic).
#
# Usage: bash scripts/order-file.sh   (needs valgrind and python3; takes ~4 minutes)
# Run it after changes that add or rename much code; a stale file only costs memory.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || apt-get install -y valgrind
OUT=$(mktemp -d)
echo "work files: $OUT" >&2
# A build in the compiler's own layout: the order keeps its neighbours together.
NETBORE_NO_ORDER_FILE=1 cargo build --release -p netbore
BIN=$OUT/netbore
cp target/release/netbore "$BIN"
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
VG=(valgrind --tool=callgrind --demangle=no --dump-instr=no "--callgrind-out-file=$OUT/cg.%p")
PORT_BASE=$((20000 + RANDOM % 20000))
ORIGIN=$PORT_BASE CONTROL=$((PORT_BASE + 1)) AGENTS=$((PORT_BASE + 2)) HTTP=$((PORT_BASE + 3))

python3 scripts/order_file_workload.py origin "$ORIGIN" &
"${VG[@]}" "$BIN" server --control-addr "127.0.0.1:$CONTROL" --agent-addr "127.0.0.1:$AGENTS" \
    --http-addr "127.0.0.1:$HTTP" --tcp-ports 0 --tcp-bind-ip 127.0.0.1 --data-dir "$OUT/data" \
    --domain localhost --allow-anonymous --max-tunnels-per-anonymous-ip 100 --json >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER=$!
for _ in $(seq 1 120); do grep -q listening "$OUT/server.out" 2>/dev/null && break; sleep 1; done
AGENT_PIDS=()
start_agent() { # KIND NAME ARGS...
    local name=$1; shift
    NETBORE_STATE_DIR="$OUT/state.$name" "${VG[@]}" "$BIN" "$@" --server "http://127.0.0.1:$CONTROL" \
        --ca "$OUT/data/ca.pem" --json >"$OUT/agent.$name.out" 2>"$OUT/agent.$name.err" &
    AGENT_PIDS+=($!)
}
# Idle: a TCP and an HTTP tunnel over the default transport, online and pinging.
start_agent tcp tcp "127.0.0.1:$ORIGIN" --transport tcp
start_agent http http "127.0.0.1:$ORIGIN" --transport tcp --name web
python3 scripts/order_file_workload.py idle "$OUT" 2
# Load: every other transport too.
for t in tls ws wss quic; do start_agent "$t" tcp "127.0.0.1:$ORIGIN" --transport "$t"; done
python3 scripts/order_file_workload.py load "$OUT" "$HTTP"
# Keep-alive pings and timers of idle sessions.
sleep 25
kill -TERM "${AGENT_PIDS[@]}"
wait "${AGENT_PIDS[@]}" || true
kill -INT "$SERVER"
wait "$SERVER" || true
python3 scripts/order_file_workload.py order "$BIN" "$OUT"/cg.* >cli/netbore.order
# Link again, now with the new order.
cargo build --release -p netbore
