"""Helpers of scripts/order-file.sh.

origin PORT       serves an echo origin that answers `GET` with a small HTTP response
idle OUT COUNT    waits for COUNT tunnels of the agents in OUT, idles, then marks the idle set
load OUT HTTP     drives traffic through every tunnel the agents in OUT brought online
order BIN FILES   prints the binary's functions the callgrind FILES saw run, in link order
check BIN ORDER   fails unless the functions ORDER lists sit together in BIN; warns when names are gone
"""

import glob
import json
import re
import socket
import subprocess
import sys
import threading
import time

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n" + b"x" * 1024


def origin(port):
    def serve(conn):
        try:
            data = conn.recv(1 << 16)
            while data:
                if data.startswith(b"GET "):
                    conn.sendall(RESPONSE * data.count(b"GET "))
                else:
                    conn.sendall(data)
                data = conn.recv(1 << 16)
        except OSError:
            pass
        conn.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(512)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def echo_bulk(host, port, size):
    s = socket.create_connection((host, port), timeout=60)
    sent = bytearray(b"n" * size)
    threading.Thread(target=s.sendall, args=(sent,), daemon=True).start()
    got = 0
    while got < size:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += len(chunk)
    s.close()
    return got


def http_requests(port, host, count, keep_alive):
    done = 0
    s = None
    for _ in range(count):
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(f"GET /1k HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got or len(got) < len(RESPONSE):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        done += got.startswith(b"HTTP/1.1 200")
        if not keep_alive:
            s.close()
            s = None
    if s is not None:
        s.close()
    return done


def online(out, count):
    """The public URLs of the agents in `out`, once `count` of them are online."""
    urls = {}
    deadline = time.time() + 180
    while time.time() < deadline and len(urls) < count:
        for path in glob.glob(f"{out}/agent.*.out"):
            for line in open(path):
                event = json.loads(line)
                if "public_url" in event:
                    urls[path] = event["public_url"]
        time.sleep(1)
    return urls


def idle(out, count):
    """Once `count` tunnels are online and have been idle for a while (keep-alive
    pings, timers), has callgrind write what each process ran so far to a file of its
    own (`.1`, its idle set) and count afresh."""
    print(f"{len(online(out, int(count)))} tunnels online", file=sys.stderr)
    time.sleep(25)
    subprocess.run(["callgrind_control", "--dump=idle"], check=True, capture_output=True)


def load(out, http_port):
    http_port = int(http_port)
    urls = online(out, 6)
    print(f"{len(urls)} tunnels online", file=sys.stderr)
    threads = []
    for url in urls.values():
        if url.startswith("tcp://"):
            host, port = url[len("tcp://"):].rsplit(":", 1)
            for _ in range(4):
                t = threading.Thread(target=echo_bulk, args=(host, int(port), 4 << 20))
                threads.append(t)
                t.start()
            t = threading.Thread(target=http_requests, args=(int(port), "x", 50, True))
            threads.append(t)
            t.start()
        else:
            host = url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
            for keep_alive in (True, False):
                t = threading.Thread(target=http_requests, args=(http_port, host, 100, keep_alive))
                threads.append(t)
                t.start()
            # An unknown host: the Edge's own error page.
            http_requests(http_port, "nobody.localhost", 2, False)
    for t in threads:
        t.join()


def functions(path, binary_name):
    """Functions of `binary_name` that ran, by one callgrind file."""
    objects, names, ran = {}, {}, set()
    current_object = ""
    pattern = re.compile(r"(c?ob|c?fn)=\((\d+)\)(?: (.*))?")
    for line in open(path, errors="replace"):
        m = pattern.match(line.rstrip("\n"))
        if not m:
            continue
        kind, ident, name = m.groups()
        table = objects if kind.endswith("ob") else names
        if name:
            table[ident] = name
        if kind == "ob":
            current_object = objects.get(ident, "")
        elif kind == "fn" and current_object.endswith(binary_name) and names.get(ident):
            ran.add(names[ident])
    return ran


def is_server(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cmd:"):
                return " server " in line
    return False


def order(binary, files):
    """`binary` must be linked without an order file: its layout is the compiler's.
    Files ending in `.1` hold what a process ran until it was idle, the others what it
    ran under load."""
    address = {}
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            address[parts[2]] = int(parts[0], 16)
    name = binary.rsplit("/", 1)[-1]
    idle = {"server": set(), "agent": set()}
    busy = {"server": set(), "agent": set()}
    for path in files:
        phase = idle if path.endswith(".1") else busy
        phase["server" if is_server(path) else "agent"].update(functions(path, name))
    server, agent = idle["server"], idle["agent"]
    at_idle = server | agent
    busy_server, busy_agent = busy["server"] - at_idle, busy["agent"] - at_idle
    # First what an idle process runs, then what only load runs: an idle process keeps
    # only the first part resident. Each part has what both roles run, then each role's
    # own: an agent keeps none of the server's code resident, and a server none of the
    # agent's. Within each group the compiler's own order is kept (functions of one
    # module stay neighbours); only the code that never ran is taken out from between.
    groups = [
        server & agent,
        server - agent,
        agent - server,
        busy_server & busy_agent,
        busy_server - busy_agent,
        busy_agent - busy_server,
    ]
    for group in groups:
        for f in sorted((f for f in group if f in address), key=address.get):
            print(f)
    sizes = ", ".join(str(len(g)) for g in groups)
    print(f"functions at idle (shared, server, agent) and under load (same): {sizes}",
          file=sys.stderr)


def check(binary, order_file):
    """The release binary is linked with the order (cli/build.rs): the functions it
    lists sit together, so an idle process keeps little code resident. A stale list
    (names the code no longer has) only warns: it costs an idle process memory, which
    the benchmark harness's idle-RSS ceiling guards, never correctness. A list that was
    not applied at all fails."""
    listed = set(open(order_file).read().split())
    nm = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True)
    lowest, highest, size, found = None, 0, 0, set()
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[3] not in listed:
            continue
        address, length = int(parts[0], 16), int(parts[1], 16)
        lowest = address if lowest is None else min(lowest, address)
        highest = max(highest, address + length)
        size += length
        found.add(parts[3])
    found = len(found)
    if found == 0:
        sys.exit(f"none of the {len(listed)} functions in {order_file} exist in {binary}: "
                 "the binary was built with other features, or the file is not an order file")
    # Every missing name is a function of the idle set that lands among the cold code
    # and drags up to 64 KiB of it into an idle process (benchmarks.md, finding 23).
    if found * 50 < len(listed) * 49:
        print(f"warning: only {found} of the {len(listed)} functions in {order_file} exist in "
              f"{binary}; an idle process may keep more code resident until the list is made "
              "again (bash scripts/order-file.sh, about 5 minutes under valgrind)")
    span = highest - lowest
    # In the compiler's own layout the same functions spread over twice their size or more.
    if span > size + size // 4:
        sys.exit(f"the {found} listed functions ({size} bytes) are spread over {span} bytes: "
                 "the order file was not applied (cli/build.rs)")
    print(f"{found} of {len(listed)} listed functions, {size} bytes within {span}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "origin":
        origin(*args)
    elif command == "idle":
        idle(*args)
    elif command == "load":
        load(*args)
    elif command == "order":
        order(args[0], args[1:])
    elif command == "check":
        check(*args)
    else:
        sys.exit(__doc__)
