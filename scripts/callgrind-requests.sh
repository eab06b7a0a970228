#!/bin/bash
# Instructions per keep-alive request of one relay process, counted by callgrind
# (stable on a loaded machine, unlike CPU time): docs/benchmarks.md, finding 30.
#
#   scripts/callgrind-requests.sh BIN http|tcp server|agent [REQUESTS]
#
# Starts the harness's origin (target/release/e2e --origin-only), `BIN server` and an
# agent (`BIN http` or `BIN tcp`, --transport tcp), one of them under
# `valgrind --tool=callgrind`; sends 200 warm-up requests, zeroes the counters, sends
# REQUESTS (3,000) keep-alive GETs of 1 KiB on one connection, dumps the counters and
# prints the instructions per request. Needs valgrind and python3. AGENT_FLAGS adds
# flags to the agent (e.g. AGENT_FLAGS="--inspect off"); CG_KEEP=FILE keeps the counters
# for callgrind_annotate.
set -euo pipefail
BIN=$(realpath "$1"); MODE=$2; WHO=$3; N=${4:-3000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"' EXIT
"$HERE/target/release/e2e" --origin-only > "$D/origin.txt" 2>&1 &
for _ in $(seq 50); do grep -q http:// "$D/origin.txt" && break; sleep 0.1; done
ORIGIN=$(grep -o 'http://[0-9.:]*' "$D/origin.txt" | head -1 | sed 's|http://||')
VG=(valgrind --tool=callgrind "--callgrind-out-file=$D/cg.out")
S=(); A=()
if [ "$WHO" = server ]; then S=("${VG[@]}"); else A=("${VG[@]}"); fi
"${S[@]}" "$BIN" server --control-addr 127.0.0.1:0 --agent-addr 127.0.0.1:0 \
  --http-addr 127.0.0.1:0 --tcp-ports 0 --tcp-bind-ip 127.0.0.1 --domain localhost \
  --allow-anonymous --data-dir "$D/data" --json --threads 1 > "$D/server.json" 2>/dev/null &
SPID=$!
for _ in $(seq 100); do grep -q listening "$D/server.json" 2>/dev/null && break; sleep 0.3; done
field() { python3 -c "import json,sys; [print(json.loads(l)['$2']) for l in open('$1') if '\"$3\"' in l]" | head -1; }
CONTROL=$(field "$D/server.json" control listening)
HTTP=$(field "$D/server.json" http listening)
"${A[@]}" "$BIN" "$MODE" "$ORIGIN" --server "http://$CONTROL" --state-dir "$D/agent" \
  --json --transport tcp ${AGENT_FLAGS:-} > "$D/agent.json" 2>/dev/null &
APID=$!
for _ in $(seq 100); do grep -q '"online"' "$D/agent.json" 2>/dev/null && break; sleep 0.3; done
URL=$(field "$D/agent.json" public_url online)
if [ "$MODE" = http ]; then
  NAME=${URL#http://}; HOST=${HTTP%:*}; PORT=${HTTP##*:}
else
  NAME=x; HOST=127.0.0.1; PORT=${URL##*:}
fi
send() {
  python3 - "$HOST" "$PORT" "$NAME" "$1" <<'PY'
import http.client, sys
host, port, name, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection(host, port, timeout=120)
for _ in range(n):
    c.request("GET", "/1k", headers={"Host": name})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"answer {r.status}")
PY
}
if [ "$WHO" = server ]; then TARGET=$SPID; else TARGET=$APID; fi
send 200
callgrind_control -z "$TARGET" > /dev/null
send "$N"
callgrind_control -d "$TARGET" > /dev/null
sleep 1
F=$(grep -l "Trigger: dump" "$D"/cg.out* | head -1)
if [ -n "${CG_KEEP:-}" ]; then cp "$F" "$CG_KEEP"; fi
TOTAL=$(awk '/^summary:/ {print $2; exit}' "$F")
echo "$MODE $WHO: $((TOTAL / N)) instructions per request ($N requests)"
