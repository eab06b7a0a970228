#!/usr/bin/env python3
"""Writes the committed seed inputs of every fuzz target into fuzz/seeds/<target>/.

Run from anywhere: `python3 fuzz/seeds/generate.py`. It rewrites every seed file it
knows (deterministically) and leaves other files alone. The input layouts are
documented at the top of each fuzz_targets/<target>.rs.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ----- mux frames (docs/protocols/mux.md) -----

DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 0x1, 0x2, 0x4, 0x8
HEADER = struct.Struct(">BBHII")  # version, type, flags, stream, length


def header(ty, flags, stream, length, version=0):
    return HEADER.pack(version, ty, flags, stream, length)


def data(stream, payload, flags=0):
    return header(DATA, flags, stream, len(payload)) + payload


def window(stream, increment, flags=0):
    return header(WINDOW_UPDATE, flags, stream, increment)


def ping(opaque, flags=0):
    return header(PING, flags, 0, opaque)


def go_away(code):
    return header(GO_AWAY, 0, 0, code)


def write(target, name, blob):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(blob)


# ----- frame_decoder: [limit selector, pattern len, pattern..., wire...] -----

LIMIT_128K = 2  # selector & 3 == 2: MAX_SEND_FRAME
LIMIT_UNBOUNDED = 3


def tiny_limit(n):  # selector & 3 == 0: limit = selector >> 2 (0..=63)
    return n << 2


def frame_decoder():
    frames = {
        "data_syn": data(1, b"hello, netbore", SYN),
        "data_empty_fin": data(3, b"", FIN),
        "data_rst": data(5, b"", RST),
        "window_syn": window(1, 64 * 1024, SYN),
        "window_ack": window(2, 0, ACK),
        "window_rst": window(7, 0, RST),
        "window_fin": window(9, 12345, FIN),
        "ping": ping(1),
        "ping_ack": ping(0xDEADBEEF, ACK),
        "go_away_normal": go_away(0),
        "go_away_protocol_error": go_away(1),
        "go_away_unknown": go_away(77),
    }
    for name, wire in frames.items():
        write("frame_decoder", name, bytes([LIMIT_128K, 0]) + wire)
    stream = b"".join(frames.values())
    write("frame_decoder", "all_types_whole", bytes([LIMIT_128K, 0]) + stream)
    write("frame_decoder", "all_types_split", bytes([LIMIT_128K, 3, 3, 5, 7]) + stream)
    write("frame_decoder", "truncated_data",
          bytes([LIMIT_128K, 1, 4]) + data(1, b"x" * 100)[:60])
    write("frame_decoder", "partial_header", bytes([LIMIT_128K, 0]) + ping(5)[:7])
    write("frame_decoder", "bad_version", bytes([LIMIT_128K, 0]) + header(PING, 0, 0, 1, version=1))
    write("frame_decoder", "unknown_type", bytes([LIMIT_128K, 0]) + header(9, 0, 0, 1))
    write("frame_decoder", "reserved_flags", bytes([LIMIT_128K, 0]) + header(DATA, 0x40, 1, 0))
    write("frame_decoder", "data_on_stream_0", bytes([LIMIT_128K, 0]) + header(DATA, 0, 0, 0))
    write("frame_decoder", "ping_on_stream_1", bytes([LIMIT_128K, 0]) + header(PING, 0, 1, 0))
    write("frame_decoder", "too_large",
          bytes([tiny_limit(10), 0]) + data(1, b"y" * 11))
    write("frame_decoder", "at_limit_then_bad",
          bytes([tiny_limit(10), 2, 1, 12]) + data(1, b"z" * 10) + header(7, 0, 1, 0))
    write("frame_decoder", "huge_length_unbounded",
          bytes([LIMIT_UNBOUNDED, 0]) + header(DATA, 0, 1, 0xFFFFFFFF) + b"abc")


# ----- session_frames: [role, (opcode, args...)*] -----

CLIENT, SERVER = 0, 1
(OP_FEED, OP_OPEN, OP_ACCEPT, OP_WRITE, OP_READ, OP_FINISH, OP_RESET, OP_RELEASE,
 OP_POLL, OP_TIMEOUT, OP_CLOSE, OP_LOST, OP_PEER_SYN, OP_PEER_DATA, OP_PEER_WINDOW,
 OP_READ_ALL) = range(16)


def feed(wire):
    return bytes([OP_FEED]) + struct.pack(">H", len(wire)) + wire


def op(code, *args):
    return bytes([code, *args])


def op_write(idx, n):
    return bytes([OP_WRITE, idx]) + struct.pack(">H", n)


def op_peer_data(idx, flags, n):
    return bytes([OP_PEER_DATA, idx, flags]) + struct.pack(">H", n)


def op_peer_syn(flags, inc):
    return bytes([OP_PEER_SYN, flags]) + struct.pack(">H", inc)


def op_peer_window(idx, flags, inc):
    return bytes([OP_PEER_WINDOW, idx, flags]) + struct.pack(">I", inc)


def session_frames():
    # Client opens stream 1, sends, the server acks, answers, both half-close.
    write("session_frames", "client_round_trip", bytes([CLIENT]) + b"".join([
        op(OP_OPEN), op_write(0, 100), op(OP_POLL),
        feed(window(1, 0, ACK)),
        feed(data(1, b"response bytes")),
        op(OP_READ, 0), op(OP_FINISH, 0),
        feed(data(1, b"", FIN)),
        op(OP_READ, 0), op(OP_RELEASE, 0), op(OP_POLL),
    ]))
    # Server accepts a peer stream, reads its data, answers and closes.
    write("session_frames", "server_accept", bytes([SERVER]) + b"".join([
        feed(window(1, 0, SYN)), op(OP_ACCEPT),
        feed(data(1, b"GET / HTTP/1.1\r\n\r\n")),
        op(OP_READ_ALL), op_write(0, 2000), op(OP_FINISH, 0), op(OP_POLL),
        feed(data(1, b"", FIN)), op(OP_RELEASE, 0), op(OP_POLL),
    ]))
    # Synthesized peer streams up to and past the stream and backlog limits.
    write("session_frames", "server_many_streams", bytes([SERVER]) + b"".join([
        op_peer_syn(0, 0), op_peer_syn(0, 100), op_peer_syn(0, 0),
        op(OP_ACCEPT), op_peer_syn(4, 0), op_peer_syn(0, 0), op_peer_syn(0, 0),
        op(OP_POLL), op(OP_OPEN), op_write(1, 500), op(OP_POLL),
    ]))
    # Flow control: the peer overruns a stream's 256 KiB window.
    write("session_frames", "flow_control_violation", bytes([SERVER]) + b"".join([
        op_peer_syn(0, 0), op(OP_ACCEPT),
        op_peer_data(0, 0, 0xFFFF), op_peer_data(0, 0, 0xFFFF), op(OP_READ, 0),
        op_peer_data(0, 0, 0xFFFF), op_peer_data(0, 0, 0xFFFF),
        op_peer_data(0, 0, 0xFFFF), op_peer_data(0, 0, 0xFFFF),
        op(OP_POLL), op(OP_OPEN), op(OP_POLL),
    ]))
    # Window credit, writes blocked on credit and on the send buffer.
    write("session_frames", "client_credit", bytes([CLIENT]) + b"".join([
        op(OP_OPEN), feed(window(1, 1 << 20, ACK)),
        op_write(0, 0xFFFF), op_write(0, 0xFFFF), op_write(0, 0xFFFF),
        op(OP_POLL), op_peer_window(0, 0, 0xFFFFFFFF), op_write(0, 0xFFFF),
        op(OP_RESET, 0), op(OP_POLL),
    ]))
    # Pings, go-away, timers.
    write("session_frames", "ping_go_away", bytes([CLIENT]) + b"".join([
        feed(ping(7)), op(OP_POLL), feed(ping(7, ACK)), op(OP_TIMEOUT, 200),
        feed(go_away(0)), op(OP_OPEN), op(OP_POLL),
    ]))
    # Protocol errors: a SYN of the wrong parity, a malformed header.
    write("session_frames", "bad_syn_parity", bytes([CLIENT]) + b"".join([
        feed(window(1, 0, SYN)), op(OP_POLL), op(OP_OPEN),
    ]))
    write("session_frames", "bad_header", bytes([SERVER]) + b"".join([
        op(OP_OPEN), feed(header(9, 0, 1, 0)), op(OP_POLL), op(OP_OPEN),
    ]))
    # Local close and connection loss with streams open.
    write("session_frames", "close_and_lose", bytes([CLIENT]) + b"".join([
        op(OP_OPEN), op_write(0, 10), feed(window(1, 0, ACK)), op(OP_CLOSE, 5),
        op(OP_FINISH, 0), op(OP_POLL), op(OP_LOST), op(OP_READ, 0), op(OP_POLL),
    ]))
    # Release with unread data (resets), data after release, RST from the peer.
    write("session_frames", "release_and_reset", bytes([SERVER]) + b"".join([
        op_peer_syn(0, 0), op(OP_ACCEPT), op_peer_data(0, 0, 300), op(OP_RELEASE, 0),
        op_peer_syn(0, 0), op(OP_ACCEPT), op_peer_data(1, FIN, 10), op(OP_RELEASE, 1),
        op_peer_data(1, 0, 10), op_peer_window(1, RST, 0), op(OP_POLL),
    ]))


# ----- handshake: 4-byte BE length + JSON -----

def message(obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body


def handshake():
    write("handshake", "hello", message(
        {"version": 1, "tokens": ["eyJhbGciOiJFZERTQSJ9.e30.sig"], "agent": "netbore/0.1.0"}))
    write("handshake", "hello_many_tokens", message(
        {"version": 1, "tokens": ["a", "b\u00e9", "c\\n"], "agent": "x", "extra": [1, 2]}))
    write("handshake", "reply_ok", message(
        {"ok": {"tunnels": [{"tunnel_id": "tun_3f1c", "public_url": "tcp://example.com:25432",
                             "slot": 0}]}}))
    write("handshake", "reply_error", message(
        {"error": {"code": "token_expired", "message": "the tunnel token has expired"}}))
    write("handshake", "oversized_length", struct.pack(">I", 64 * 1024 + 1) + b"{}")
    write("handshake", "truncated", message({"version": 1, "tokens": [], "agent": ""})[:-3])
    body = b'{ "version" : 1 , "tokens" : [ "\\u00e9\\n" ], "agent":"\\ud83d\\ude00" }'
    write("handshake", "escaped", struct.pack(">I", len(body)) + body)


# ----- stream_header: version 1, slot u32, family, address, port -----

def stream_header():
    v4 = bytes([1]) + struct.pack(">I", 7) + bytes([4, 203, 0, 113, 9]) + struct.pack(">H", 54321)
    v6 = (bytes([1]) + struct.pack(">I", 0xFFFFFFFF) + bytes([6]) +
          bytes.fromhex("20010db8000000000000000000000001") + struct.pack(">H", 443))
    write("stream_header", "v4", v4)
    write("stream_header", "v6", v6)
    write("stream_header", "v4_with_payload", v4 + b"viewer bytes")
    write("stream_header", "v6_truncated", v6[:17])
    write("stream_header", "bad_version", bytes([2]) + v4[1:])
    write("stream_header", "bad_family", v4[:5] + bytes([5]) + v4[6:])


# ----- session_pair: Vec<Op> in the `arbitrary` 1.x format -----
# Each element: a continuation byte (odd = another op follows), the variant as a
# little-endian u32 scaled into the variant count, then the fields in order
# (bool = one byte, u8 = one byte, u16 = two bytes little-endian).

PAIR_VARIANTS = ["Open", "Write", "WriteBig", "Read", "Finish", "Reset", "Release",
                 "Deliver", "DeliverAll", "Tick"]


def pair_op(name, *fields):
    k = PAIR_VARIANTS.index(name)
    n = len(PAIR_VARIANTS)
    disc = -(-k * (1 << 32) // n)  # smallest u32 with (disc * n) >> 32 == k
    out = bytes([1]) + struct.pack("<I", disc)
    for size, value in fields:
        out += value.to_bytes(size, "little")
    return out


def b(v):
    return (1, int(v))


def u8(v):
    return (1, v)


def u16(v):
    return (2, v)


A, B = False, True


def session_pair():
    write("session_pair", "echo", b"".join([
        pair_op("Open", b(A)), pair_op("Write", b(A), u8(0), u16(1000)),
        pair_op("DeliverAll", b(A)), pair_op("Read", b(B), u8(0)),
        pair_op("Write", b(B), u8(0), u16(500)), pair_op("DeliverAll", b(B)),
        pair_op("Read", b(A), u8(0)), pair_op("Finish", b(A), u8(0)),
        pair_op("Finish", b(B), u8(0)),
    ]))
    write("session_pair", "bulk_partial_delivery", b"".join([
        pair_op("Open", b(A)), pair_op("Open", b(B)),
        pair_op("WriteBig", b(A), u8(0), u8(255)), pair_op("WriteBig", b(A), u8(0), u8(200)),
        pair_op("Deliver", b(A), u16(3000)), pair_op("Tick", u8(5)),
        pair_op("Deliver", b(A), u16(60000)), pair_op("Read", b(B), u8(0)),
        pair_op("Read", b(B), u8(0)), pair_op("DeliverAll", b(B)),
        pair_op("WriteBig", b(A), u8(0), u8(128)), pair_op("Write", b(B), u8(1), u16(65535)),
        pair_op("DeliverAll", b(A)), pair_op("DeliverAll", b(B)),
        pair_op("Read", b(A), u8(1)), pair_op("Read", b(B), u8(1)),
    ]))
    write("session_pair", "reset_and_release", b"".join([
        pair_op("Open", b(A)), pair_op("Open", b(A)), pair_op("Open", b(B)),
        pair_op("Write", b(A), u8(0), u16(700)), pair_op("Write", b(A), u8(1), u16(800)),
        pair_op("DeliverAll", b(A)), pair_op("Reset", b(B), u8(0)),
        pair_op("Release", b(B), u8(1)), pair_op("Write", b(B), u8(2), u16(90)),
        pair_op("DeliverAll", b(B)), pair_op("Release", b(A), u8(2)),
        pair_op("DeliverAll", b(A)), pair_op("DeliverAll", b(B)),
    ]))
    write("session_pair", "many_streams_ticks", b"".join(
        [pair_op("Open", b(i % 2)) for i in range(8)] +
        [pair_op("Write", b(i % 2), u8(i), u16(3000 + i)) for i in range(8)] +
        [pair_op("Tick", u8(1)), pair_op("Deliver", b(A), u16(10000)),
         pair_op("Deliver", b(B), u16(10000)), pair_op("Tick", u8(200))] +
        [pair_op("Finish", b(i % 2), u8(i)) for i in range(4)]
    ))


# ----- proxy_answer: [read size - 1, flags, answer...] (bit 0 of flags: pad to the limit) -----

def proxy_answer():
    def seed(name, answer, chunk=255, flags=0):
        write("proxy_answer", name, bytes([chunk, flags]) + answer)

    seed("established", b"HTTP/1.1 200 Connection established\r\n\r\n")
    seed("established_in_small_reads",
         b"HTTP/1.0 200 OK\r\nVia: 1.1 squid\r\nProxy-Agent: test\r\n\r\n", chunk=2)
    seed("auth_required",
         b"HTTP/1.1 407 Proxy Authentication Required\r\n"
         b"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 13\r\n\r\n"
         b"access denied")
    seed("forbidden_odd_reason", b"HTTP/1.1 403 Verboten \x1b[31m\xc3\xa4\xff\r\n\r\n")
    seed("not_http", b"SSH-2.0-OpenSSH_9.6\r\n")
    seed("truncated", b"HTTP/1.1 200 Connection estab", chunk=7)
    seed("at_the_limit", b"HTTP/1.1 200 OK\r\n\r\n", flags=(60 << 1) | 1)
    seed("past_the_limit", b"HTTP/1.1 200 OK\r\n\r\n", flags=(70 << 1) | 1)


# ----- h1_response: [piece size - 1, flags, response...] (bit 0 of flags: HEAD request) -----

def h1_response():
    def seed(name, response, piece=255, flags=0):
        write("h1_response", name, bytes([piece, flags]) + response)

    seed("length", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    seed("chunked_in_small_pieces",
         b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
         b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\nNEXT", piece=2)
    seed("length_beside_chunked",
         b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n"
         b"3\r\nabc\r\n0\r\n\r\n", piece=4)
    seed("interim_then_final",
         b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
         b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    seed("head", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", flags=1)
    seed("listed_lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\nabcd")
    seed("until_close", b"HTTP/1.0 200 OK\r\nserver: x\r\n\r\nall of it")
    seed("not_http", b"SSH-2.0-OpenSSH_9.6\r\n")


# ----- http_authority: lines; the first is the target's authority (empty: none), the
# ----- rest are Host header values -----

def http_authority():
    def seed(name, target, *hosts):
        write("http_authority", name, "\n".join([target, *hosts]).encode())

    seed("host_only", "", "app.tunnel.example.com")
    seed("spellings", "", "Blog.Tunnel.Example.COM.:08080")
    seed("target_only", "app.tunnel.example.com:8080")
    seed("same_in_both", "app.tunnel.example.com:80", "APP.tunnel.example.com.:80")
    seed("mismatch", "app.tunnel.example.com", "evil.tunnel.example.com")
    seed("port_mismatch", "app.tunnel.example.com:1", "app.tunnel.example.com:2")
    seed("duplicate", "", "app.tunnel.example.com", "app.tunnel.example.com")
    seed("user_info", "user@app.tunnel.example.com", "app.tunnel.example.com")
    seed("ipv6", "[::1]:80")
    seed("empty_labels", "", "app..tunnel.example.com.")
    seed("port_overflow", "", "app.tunnel.example.com:65536")
    seed("no_host", "")


# ----- first_bytes: [flags, write size - 1, address (16 bytes), first bytes...] -----
# flags: bit 0 the control API has a certificate, bit 1 insecure_http, bit 2 the
# address is IPv4 (its first 4 bytes).

FB_TLS, FB_INSECURE, FB_V4 = 1, 2, 4


def first_bytes():
    import ipaddress

    def seed(name, first, flags=FB_TLS, addr="127.0.0.1", chunk=255):
        ip = ipaddress.ip_address(addr)
        if ip.version == 4:
            flags |= FB_V4
            packed = ip.packed + bytes(12)
        else:
            flags &= ~FB_V4
            packed = ip.packed
        write("first_bytes", name, bytes([flags, chunk]) + packed + first)

    def upgrade(path="/_netbore/agent", key="dGhlIHNhbXBsZSBub25jZQ==", extra=""):
        return (f"GET {path} HTTP/1.1\r\nHost: edge.example.com\r\nConnection: Upgrade\r\n"
                f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{extra}\r\n").encode()

    seed("ws_upgrade", upgrade())
    seed("ws_upgrade_in_small_writes", upgrade(), chunk=2)
    seed("ws_other_path", upgrade(path="/admin"), addr="203.0.113.5")
    seed("ws_bytes_after_head", upgrade() + window(1, 0, SYN))
    seed("ws_bad_key", upgrade(key="short"))
    seed("ws_no_version", upgrade().replace(b"Sec-WebSocket-Version: 13\r\n", b""))
    seed("ws_leading_empty_lines", b"\r\n\r\n" + upgrade())
    seed("ws_http10", upgrade().replace(b"HTTP/1.1", b"HTTP/1.0"))
    seed("ws_truncated", upgrade()[:40], chunk=6)
    # A TLS 1.2 record header and the start of a ClientHello.
    hello = bytes.fromhex("160301003a0100003603035f") + bytes(28)
    seed("tls_client_hello", hello, addr="2001:db8::1")
    seed("tls_without_certificate", hello, flags=0, addr="2001:db8::1")
    seed("mux_first_frame", window(1, 256 * 1024, SYN) + data(1, b"hello", 0))
    api = b"POST /v1/tunnels HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer nb_key\r\n\r\n"
    seed("control_http_remote", api, addr="203.0.113.5")
    seed("control_http_remote_insecure", api, flags=FB_INSECURE, addr="198.51.100.7")
    seed("control_http_mapped_loopback", api, addr="::ffff:127.0.0.1")
    seed("control_http_ipv6_loopback", api, addr="::1")
    seed("not_netbore", b"SSH-2.0-OpenSSH_9.6\r\n", addr="192.0.2.1")


# ----- proxy_v2: the bytes a connection starts with; an odd first byte puts the
# ----- rest after the 12-byte signature -----

PP2_SIGNATURE = b"\r\n\r\n\0\r\nQUIT\n"


def pp2(command, family, payload):
    return PP2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(payload)) + payload


def proxy_v2():
    import ipaddress

    def tcp(src, dst, sport, dport, tlvs=b""):
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        family = 0x11 if s.version == 4 else 0x21
        return pp2(1, family, s.packed + d.packed + struct.pack(">HH", sport, dport) + tlvs)

    def seed(name, blob):
        write("proxy_v2", name, bytes([0]) + blob)

    request = b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
    seed("ipv4_then_request", tcp("203.0.113.7", "192.0.2.1", 51000, 80) + request)
    seed("ipv6", tcp("2001:db8::7", "2001:db8::1", 443, 8443))
    authority = b"\x02\x00\x0fapp.example.com"
    seed("tlvs", tcp("198.51.100.4", "192.0.2.1", 1, 443, authority + b"\xea\x00\x05\x01vpce"))
    seed("local", pp2(0, 0x00, b""))
    seed("unspec", pp2(1, 0x00, b""))
    seed("unix", pp2(1, 0x31, bytes(216)))
    seed("udp", pp2(1, 0x12, bytes(12)))
    seed("truncated", tcp("203.0.113.7", "192.0.2.1", 1, 2)[:20])
    seed("bad_version", tcp("203.0.113.7", "192.0.2.1", 1, 2).replace(b"QUIT\n\x21", b"QUIT\n\x11"))
    seed("short_addresses", pp2(1, 0x21, bytes(20)))
    seed("oversize", PP2_SIGNATURE + b"\x21\x11\xff\xff")
    seed("version_1", b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n")
    # After the signature (odd first byte): version, family and length at once.
    write("proxy_v2", "after_signature", bytes([1, 0x21, 0x11, 0x00, 0x0c]) + bytes(12))


if __name__ == "__main__":
    frame_decoder()
    session_frames()
    handshake()
    stream_header()
    session_pair()
    proxy_answer()
    h1_response()
    http_authority()
    first_bytes()
    proxy_v2()
