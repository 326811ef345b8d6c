#!/usr/bin/env python3
"""Floods for `./scripts/bench floods`: hostile traffic at an agent, as a stranger would send it.

  flood.py udp HOST PORT SECONDS           datagrams of random bytes (1200 B, version byte 1) as fast as possible
  flood.py tcp-idle HOST PORT COUNT SECONDS COUNT connections held open without a byte, from any source
  flood.py tcp-lines HOST PORT SECONDS     connections sending join lines with a bad MAC, one after another
  flood.py unix-idle PATH COUNT SECONDS    COUNT connections to a Unix socket, held open without a byte
Prints one JSON object: what was sent (and how many connections were ever open at once).
"""
import json
import os
import socket
import sys
import time


def udp(host, port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = time.time() + seconds
    sent = 0
    payloads = [bytes([1]) + os.urandom(1199) for _ in range(256)]
    while time.time() < end:
        for p in payloads:
            try:
                s.sendto(p, (host, port))
                sent += 1
            except OSError:
                pass
    return {"datagrams": sent, "bytes": sent * 1200}


def hold(make, count, seconds):
    conns, failed, peak = [], 0, 0
    for _ in range(count):
        try:
            conns.append(make())
        except OSError:
            failed += 1
        peak = max(peak, len(conns))
    time.sleep(seconds)
    # How many the agent still holds open (a closed one reads EOF or an error).
    open_after = 0
    for c in conns:
        c.setblocking(False)
        try:
            open_after += 0 if c.recv(1) == b"" else 1
        except BlockingIOError:
            open_after += 1
        except OSError:
            pass
        c.close()
    return {"opened": peak, "failed": failed, "still_open_after": open_after}


def tcp_idle(host, port, count, seconds):
    def make():
        return socket.create_connection((host, port), timeout=2)
    return hold(make, count, seconds)


def unix_idle(path, count, seconds):
    def make():
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(2)
        c.connect(path)
        return c
    return hold(make, count, seconds)


def tcp_lines(host, port, seconds):
    body = {"version": 2, "token_id": "0011223344556677", "expires_at": 4102444800, "uses_limit": 1,
            "cluster_id": "c", "node_name": "x", "identity_public_key": "A" * 43 + "=",
            "wireguard_public_key": "A" * 43 + "=", "nonce": "A" * 32, "mac": "A" * 43 + "="}
    line = (json.dumps({"kind": "join", "body": body}) + "\n").encode()
    end = time.time() + seconds
    lines, conns = 0, 0
    while time.time() < end:
        try:
            c = socket.create_connection((host, port), timeout=2)
            conns += 1
            for _ in range(16):
                c.sendall(line)
                lines += 1
                c.recv(4096)
            c.close()
        except OSError:
            time.sleep(0.01)
    return {"connections": conns, "lines": lines}


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "udp":
        out = udp(args[0], int(args[1]), float(args[2]))
    elif mode == "tcp-idle":
        out = tcp_idle(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "tcp-lines":
        out = tcp_lines(args[0], int(args[1]), float(args[2]))
    elif mode == "unix-idle":
        out = unix_idle(args[0], int(args[1]), float(args[2]))
    else:
        sys.exit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
