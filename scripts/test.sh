#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test (release build,
# the same one the benchmarks use), the README's first command run as written, the
# Windows build of the binary, a short end-to-end throughput and memory run, the
# control API against its OpenAPI document (schemathesis), and every fuzz target for
# 30 s. Needs a Rust toolchain (rustup) and python3; installs what the tests use when
# it is missing (curl, pebble and the MinGW-w64 linker from apt, the Windows target
# with rustup, cargo-fuzz with cargo, schemathesis in a venv under target/).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: curl (HTTP tunnel tests), pebble with
# pebble-challtestsrv (the ACME directory of cli/tests/acme.rs), MinGW-w64 (the C parts
# of ring and SQLite in the Windows build), prometheus for promtool (cli/tests/metrics.rs
# checks the exposition with it), redis-server (the Redis store of control/tests/store.rs
# and the two-node fleet of cli/tests/fleet_store.rs), chromium with chromium-driver
# (cli/tests/inspector_browser.rs drives the inspector's page in headless Chromium
# through chromedriver), nftables (cli/tests/silent_link.rs drops a fleet node's
# packets to silence an agent's link without a FIN or RST).
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
command -v nft >/dev/null 2>&1 || [[ -x /usr/sbin/nft ]] || missing+=(nftables)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "== apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "the tests need: ${missing[*]}; install them (as root: apt-get install ${missing[*]}) and run again" >&2
        exit 1
    fi
fi

# 500-viewer tests hold ~2,000 sockets across processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== rust-version: no locked dependency needs a newer Rust than Cargo.toml declares"
cargo metadata --locked --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
version = lambda v: tuple(int(x) for x in (v + ".0.0").split(".")[:3])
declared = {p["rust_version"] for p in meta["packages"] if p["source"] is None}
if len(declared) != 1:
    sys.exit(f"the workspace crates declare different rust-versions: {sorted(map(str, declared))}")
floor = declared.pop()
newer = ["%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
         for p in meta["packages"] if p["rust_version"] and version(p["rust_version"]) > version(floor)]
if newer:
    sys.exit(f"Cargo.toml declares rust-version {floor}, but: " + "; ".join(newer))
print(f"rust-version {floor} holds for every locked dependency")
'

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --release --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --locked --release --workspace

echo "== end-to-end throughput (short run; full figures: docs/benchmarks.md)"
# Two builds: together, the benches' tokio features would change the netbore binary,
# and it would no longer be the one users build (nor match cli/netbore.order).
cargo build --locked --release -p netbore
cargo build --locked --release -p netbore-benches
echo "== code layout of the release binary (cli/netbore.order; a stale list only warns)"
python3 scripts/order_file_workload.py check target/release/netbore cli/netbore.order
# A list with half its names gone from the code (as after a large change) warns and
# does not fail: the second half of the list is renamed to names no function has.
half="$(mktemp)"
listed="$(wc -l <cli/netbore.order)"
awk -v n="$listed" 'NR <= n / 2 { print; next } { print "gone_" NR }' cli/netbore.order >"$half"
out="$(python3 scripts/order_file_workload.py check target/release/netbore "$half")"
rm -f "$half"
echo "$out"
[[ "$out" == *warning:* ]] || { echo "a half-stale code layout did not warn" >&2; exit 1; }
# Fails only on a gross regression: netbore below 3 % of direct in the median of three
# rounds (it runs near 30 %; single noisy rounds have dipped to 8 %), an idle
# server or agent above 11 MiB resident (servers 6.8-8.9 MiB and agents 5.1-7.9 with the
# code layout, servers 11.4-12.8 with a stale one: regenerate cli/netbore.order with
# scripts/order-file.sh),
# or one that holds more than twice its idle RSS 10 s after the load (1.2-1.6x with
# the allocator trimmed, 2.3x without).
target/release/e2e --seconds 1 --rounds 3 --quick --floor 0.03 --max-idle-rss 11 --max-after-load 2

echo "== the README's first command, as written"
bash scripts/readme_demo.sh 900

echo "== Windows build of the binary (x86_64-pc-windows-gnu)"
rustup target list --installed | grep -qx x86_64-pc-windows-gnu \
    || rustup target add x86_64-pc-windows-gnu
# Warnings are errors here too: code behind cfg(unix) leaves nothing unused on Windows.
RUSTFLAGS="-D warnings" cargo build --locked --target x86_64-pc-windows-gnu -p netbore
test -f target/x86_64-pc-windows-gnu/debug/netbore.exe

echo "== control API against docs/openapi.yaml (schemathesis)"
bash scripts/schemathesis.sh

echo "== fuzzing (30 s per target; crashes fail the run)"
bash scripts/fuzz.sh 30
