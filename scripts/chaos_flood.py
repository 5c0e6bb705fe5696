#!/usr/bin/env python3
"""Packet tools for scripts/chaos (run as root, inside or beside the chaos namespaces).

  capture IFACE DST_IP PORT SECONDS OUT   record UDP frames and the first TCP payloads sent to
                                          DST_IP:PORT, seen on IFACE (the root-side end of the
                                          victim's veth, which carries all of its traffic)
  replay IFACE CAPTURE                    send the recorded UDP frames again, byte for byte, into
                                          IFACE: they reach the victim from their real sender
  flood DST_IP PORT CAPTURE N             from this namespace: N garbage, N truncated, N oversized
                                          UDP datagrams; TCP connections with garbage, a truncated
                                          frame, an oversized length, and a recorded handshake
                                          played back. Prints a JSON summary of what was sent.

Packets are paced (a short sleep every 50) so the kernel's socket buffer does not overflow:
the chaos script also reads the kernel's own drop counter (`RcvbufErrors`), but a drop the
agent never sees tells nothing about the agent's accounting.
"""
import json
import os
import random
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def parse_ipv4(frame):
    """(proto, src, dst, sport, dport, payload) of an Ethernet/IPv4 UDP or TCP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    total = struct.unpack("!H", ip[2:4])[0]
    l4 = ip[ihl:total]
    if proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        return proto, src, dst, sport, dport, l4[8:]
    if proto == 6 and len(l4) >= 20:
        sport, dport = struct.unpack("!HH", l4[:4])
        off = (l4[12] >> 4) * 4
        return proto, src, dst, sport, dport, l4[off:]
    return None


def capture(iface, dst, port, seconds, out):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.2)
    udp, tcp = [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(udp) < 200:
        try:
            frame, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        # pkttype 4 = PACKET_OUTGOING from this end, i.e. frames going into the victim's namespace.
        p = parse_ipv4(frame)
        if not p or p[2] != dst or p[4] != port:
            continue
        if p[0] == 17:
            udp.append(frame.hex())
        elif p[0] == 6 and p[5]:
            # The first data segments of each inbound connection: the dialer's Hello, then Confirm.
            conn = tcp.setdefault("%s:%d" % (p[1], p[3]), [])
            if len(conn) < 4:
                conn.append(p[5].hex())
    with open(out, "w") as f:
        json.dump({"udp": udp, "tcp": list(tcp.values())}, f)
    print(json.dumps({"udp": len(udp), "tcp_connections": len(tcp)}))


def replay(iface, cap):
    with open(cap) as f:
        recorded = json.load(f)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    n = 0
    for i, h in enumerate(recorded["udp"]):
        f = bytearray(bytes.fromhex(h))
        # Frames recorded on a veth carry a checksum the kernel left to "offload" (never filled
        # in); played back as they are, the receiving kernel drops them before the agent sees
        # them. A zero UDP checksum over IPv4 means "none".
        ihl = (f[14] & 0x0F) * 4
        f[14 + ihl + 6 : 14 + ihl + 8] = b"\x00\x00"
        s.send(bytes(f))
        n += 1
        if i % 50 == 49:
            time.sleep(0.02)
    print(json.dumps({"replayed_udp": n}))


def tcp_send(dst, port, chunks, linger=0.3):
    """One connection: write each chunk, wait a little for the agent to answer, close."""
    try:
        c = socket.create_connection((dst, port), timeout=2)
    except OSError:
        return False
    try:
        for ch in chunks:
            c.sendall(ch)
            time.sleep(0.05)
        c.settimeout(linger)
        try:
            c.recv(4096)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        c.close()
    return True


def flood(dst, port, cap, n):
    rnd = random.Random(int.from_bytes(os.urandom(8), "big"))
    recorded = {"udp": [], "tcp": []}
    if cap and os.path.exists(cap):
        with open(cap) as f:
            recorded = json.load(f)
    real = [parse_ipv4(bytes.fromhex(h))[5] for h in recorded["udp"]] or [os.urandom(200)]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sent = {"udp_garbage": 0, "udp_truncated": 0, "udp_oversized": 0}

    def pace(i):
        if i % 50 == 49:
            time.sleep(0.02)

    for i in range(n):
        u.sendto(os.urandom(rnd.randint(1, 1400)), (dst, port))
        sent["udp_garbage"] += 1
        pace(i)
    for i in range(n):
        p = rnd.choice(real)
        u.sendto(p[: rnd.randint(0, max(0, len(p) - 1))], (dst, port))
        sent["udp_truncated"] += 1
        pace(i)
    for i in range(n):
        # Larger than any packet budget (1,400 B) and than a 2 KiB or 8 KiB receive buffer.
        u.sendto(os.urandom(rnd.choice([1500, 9000, 30000, 65000])), (dst, port))
        sent["udp_oversized"] += 1
        pace(i)

    conns = {"tcp_garbage": 0, "tcp_truncated": 0, "tcp_oversized": 0, "tcp_replayed": 0}
    m = max(5, n // 50)
    for _ in range(m):
        if tcp_send(dst, port, [os.urandom(rnd.randint(64, 1024))]):
            conns["tcp_garbage"] += 1
        # A length of 200 and 30 bytes, then the connection closes.
        if tcp_send(dst, port, [struct.pack("!I", 200) + os.urandom(30)]):
            conns["tcp_truncated"] += 1
        if tcp_send(dst, port, [struct.pack("!I", 0xFFFFFFF0) + os.urandom(64)]):
            conns["tcp_oversized"] += 1
    for conn in recorded["tcp"][:m]:
        if tcp_send(dst, port, [bytes.fromhex(h) for h in conn], linger=0.5):
            conns["tcp_replayed"] += 1
    sent.update(conns)
    print(json.dumps(sent))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    a = sys.argv[2:]
    if cmd == "capture" and len(a) == 5:
        capture(a[0], a[1], int(a[2]), float(a[3]), a[4])
    elif cmd == "replay" and len(a) == 2:
        replay(a[0], a[1])
    elif cmd == "flood" and len(a) == 4:
        flood(a[0], int(a[1]), a[2], int(a[3]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
