#!/usr/bin/env python3
"""Processes the fault e2e (scripts/e2e/faults.sh) runs against an agent.

  hung-uapi PATH READY-FILE
      Listens on the unix socket PATH (a WireGuard UAPI socket's place), accepts every connection and
      never answers: a hung userspace WireGuard. Writes READY-FILE once listening; runs until killed.

  hold-tcp HOST PORT SOURCES PER-SOURCE SECONDS READY-FILE
      Opens PER-SOURCE TCP connections to HOST:PORT from each source address in SOURCES (comma
      separated) and holds them for SECONDS, opening again each one the server closes. Writes
      READY-FILE after the first round; at the end prints one JSON object: connects, refused (connect
      failed), closed_by_server, held_max (most connections open at once), held_end.

  line-probe HOST PORT
      Sends one line that is no request to the line port and prints what came back (the refusal
      line), or "no answer: ..." and exits 1.
"""
import json
import os
import select
import socket
import sys
import time


def hung_uapi(path, ready):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    open(ready, "w").write(str(os.getpid()))
    held = []
    while True:
        conn, _ = server.accept()
        held.append(conn)  # read nothing, answer nothing


def hold_tcp(host, port, sources, per_source, seconds, ready):
    port, per_source, seconds = int(port), int(per_source), float(seconds)
    sources = [s for s in sources.split(",") if s]
    stats = {"connects": 0, "refused": 0, "closed_by_server": 0, "held_max": 0, "held_end": 0}
    slots = {}  # (source, i) -> socket or None

    def connect(source):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(True)
        s.settimeout(2)
        try:
            s.bind((source, 0))
            s.connect((host, port))
            s.setblocking(False)
            stats["connects"] += 1
            return s
        except OSError:
            stats["refused"] += 1
            s.close()
            return None

    end = time.monotonic() + seconds
    first = True
    while time.monotonic() < end:
        for source in sources:
            for i in range(per_source):
                if slots.get((source, i)) is None:
                    slots[(source, i)] = connect(source)
        if first:
            open(ready, "w").write(str(os.getpid()))
            first = False
        live = [s for s in slots.values() if s is not None]
        stats["held_max"] = max(stats["held_max"], len(live))
        readable, _, _ = select.select(live, [], [], 0.2) if live else ([], [], time.sleep(0.2))
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the server (budget, deadline, or no descriptor to keep it)
                stats["closed_by_server"] += 1
                for k, v in slots.items():
                    if v is s:
                        slots[k] = None
                s.close()
    live = [s for s in slots.values() if s is not None]
    stats["held_end"] = len(live)
    for s in live:
        s.close()
    print(json.dumps(stats))


def line_probe(host, port):
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"not a request\n")
        data = b""
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        print(f"no answer: {e}")
        return 1
    if not data:
        print("no answer: closed without a reply")
        return 1
    print(data.decode(errors="replace").strip())
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "hung-uapi":
        hung_uapi(*args)
    elif cmd == "hold-tcp":
        hold_tcp(*args)
    elif cmd == "line-probe":
        sys.exit(line_probe(*args))
    else:
        sys.exit(f"unknown command {cmd}")
