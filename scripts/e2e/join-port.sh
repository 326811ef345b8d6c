#!/usr/bin/env bash
# The join port under attack (issue 10): node 1's line port (TCP 7946) held by 2000 idle connections
# from 20 addresses of an attacker namespace (reopened as the agent closes them) and flooded with join
# lines whose MAC is wrong, from another address. Nodes are network namespaces with wireguard-go.
# One RESULT line per case on stdout:
#   stranger   before the flood: keyring and rotation requests signed by no member get one refusal
#              whether they name a member or nobody, naming neither the cluster id nor any node; a
#              request line over 64 KiB is closed without an answer
#   caps       one address alone keeps 8 of 50 idle connections; during the flood the agent holds at
#              most 128 line-port connections, 8 from one address (its sockets on port 7946, sampled),
#              its descriptors stay bounded and drop back once the flood stops
#   status     `wiremesh status` on node 1 answers every time during the flood
#   join       a legitimate node joins through node 1 during the flood (a newcomer takes the slot of
#              the biggest source's oldest idle connection)
#   reconcile  a peer removed from node 1's device with `wg` comes back during the flood, and
#              wiremesh_drift_repaired_total rises
#   bad-mac    every flood line is refused for its MAC ("authentication"), the refusal names neither
#              the cluster id nor a node; wiremesh_joins_total{result="refused"} counts them, and the
#              agent's log gets a line per kind of refusal every 10 s, not one per line
#
#   scripts/e2e/join-port.sh [--keep]       (root; WIREMESH_BIN=path, default .build/debug/wiremesh)
#
# Traffic goes only to the run's namespaces; everything carries a per-run prefix and is removed on
# exit (also on failure), unless --keep.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN
harness_check ip wg wireguard-go jq python3 ss || exit 1
harness_start wmj
NODES=2
IDLE=2000        # idle connections the attacker keeps open
SOURCES=20       # from this many addresses (10.99.0.100..): 100 each, 8 allowed per address, 128 in all
FLOOD_S=40       # how long the attacker and the bad-MAC flood run (the checks fit inside: the peer is
                 # removed ~10 s in, the resync every 10 s repairs it; 30 s left too little under CI load)
METRICS=9586
IDLER=""; FLOODER=""; SAMPLER=""
before_cleanup() { local p; for p in $IDLER $FLOODER $SAMPLER; do stop_proc "$p"; done; }

netns_underlay "$P" || exit 1
for i in 1 2 3 9; do netns_node "$P" "$i" || exit 1; done
# The attacker (namespace of node 9): 20 addresses for idle connections, .120 for the bad-MAC flood,
# .121 for the stranger's requests.
for a in $(seq 100 121); do ip -n "$P-n9" addr add "10.99.0.$a/24" dev eth0 || exit 1; done

mesh_up --metrics-address "10.99.0.1:$METRICS" || exit 1
wait_until 30 all_alive || { log "nodes 1 and 2 do not see each other alive"; exit 1; }
KEY2="$(status_field 2 public_key)"
wait_until 20 has_peer 1 "$KEY2" || { log "node 1 has no peer for node 2"; exit 1; }
CLUSTER="$(status_field 1 cluster_id)"
# The legitimate joiner's token, in a file only root reads.
( umask 077; wm 1 token create --ttl 10m >"$WORK/token3" )

# node 1's metrics (from its namespace): metric NAME [LABEL-FILTER] -> the sum of its samples
metric() {
  ip netns exec "$P-n1" python3 -c 'import sys, urllib.request
body = urllib.request.urlopen("http://10.99.0.1:'"$METRICS"'/metrics", timeout=5).read().decode()
total = 0.0
for line in body.splitlines():
    if line.startswith(sys.argv[1]) and (len(sys.argv) < 3 or sys.argv[2] in line) and not line.startswith("#"):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))' "$@" 2>/dev/null || echo -1
}
fds() { ls "/proc/${AGENT[1]}/fd" 2>/dev/null | wc -l; }
# What node 1's agent holds, every 0.2 s: its descriptors, and its line-port connections per source
# (established sockets on port 7946 that are among its descriptors: not those waiting in the listen
# queue). Neither listing is atomic: a socket counts when it is among the descriptors both before and
# after the socket dump, so every counted one was held at the same time. One JSON line of maxima per sample.
cat >"$WORK/sampler.py" <<'EOF'
import json, os, re, subprocess, sys, time
pid, ns = sys.argv[1], sys.argv[2]
stats = {"samples": 0, "max_fds": 0, "max_held": 0, "max_held_per_source": 0}
def sockets():
    fds, inodes = os.listdir(f"/proc/{pid}/fd"), set()
    for fd in fds:
        try: link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError: continue
        if link.startswith("socket:["): inodes.add(link[8:-1])
    return fds, inodes
while os.path.exists(f"/proc/{pid}"):
    try: fds, before = sockets()
    except OSError: break
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnHe", "state", "established", "( sport = :7946 )"],
                         capture_output=True, text=True).stdout
    try: inodes = before & sockets()[1]
    except OSError: break
    held = {}
    for line in out.splitlines():
        # With a state filter ss prints: Recv-Q Send-Q Local:Port Peer:Port, then ino:N among the extras.
        ino = re.search(r"ino:(\d+)", line)
        if ino and ino.group(1) in inodes:
            src = line.split()[3].rsplit(":", 1)[0]
            held[src] = held.get(src, 0) + 1
    stats["samples"] += 1
    stats["max_fds"] = max(stats["max_fds"], len(fds))
    stats["max_held"] = max(stats["max_held"], sum(held.values()))
    stats["max_held_per_source"] = max([stats["max_held_per_source"]] + list(held.values()))
    print(json.dumps(stats), flush=True)
    time.sleep(0.2)
EOF

# ---------------------------------------------------------------------------------------------
# stranger: requests of someone without the cluster key or any member's identity.
cat >"$WORK/stranger.py" <<'EOF'
import base64, json, os, socket, sys, time
target, cluster = ("10.99.0.1", 7946), sys.argv[1]
def b64(n): return base64.b64encode(os.urandom(n)).decode()
def ask(line, source="10.99.0.121"):
    s = socket.socket(); s.settimeout(10); s.bind((source, 0)); s.connect(target)
    s.sendall(line)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            out += chunk
    except (ConnectionResetError, socket.timeout): pass
    s.close()
    return out.decode(errors="replace").strip()
now = int(time.time() * 1000)
def keyring(node): return {"kind": "keyring", "body": {"keyring_request": 1, "node": node, "ephemeral_key": b64(32), "issued_at": now, "signature": b64(64)}}
def rotation(node): return {"kind": "rotation", "body": {"rotation": "prepare", "node": node, "old_key": b64(32), "new_key": b64(32), "issued_at": now, "signature": b64(64)}}
r = {}
for kind, make in (("keyring", keyring), ("rotation", rotation)):
    known, unknown = ask((json.dumps(make("node2")) + "\n").encode()), ask((json.dumps(make("nosuchnode")) + "\n").encode())
    # The name asked for could come back (it is the stranger's own); anything else must not differ.
    same = json.loads(known.replace("node2", "X")) == json.loads(unknown.replace("nosuchnode", "X"))
    r[kind] = {"same": same, "reply": known, "other": unknown}
t0 = time.time()
r["long"] = {"reply": ask(b"{" * (64 * 1024 + 4096)), "seconds": round(time.time() - t0, 2)}
leaks = [w for w in (cluster, "node1", "node2") for k in ("keyring", "rotation") if w in r[k]["reply"]]
r["leaks"] = sorted(set(leaks))
print(json.dumps(r))
EOF
stranger="$(ip netns exec "$P-n9" python3 "$WORK/stranger.py" "$CLUSTER" 2>&1)"
problems=""
jq -e . <<<"$stranger" >/dev/null 2>&1 || problems+=" the stranger's script failed: $stranger;"
if [ -z "$problems" ]; then
  for k in keyring rotation; do
    [ "$(jq -r ".$k.same" <<<"$stranger")" = true ] || problems+=" $k: a member's name and an unknown one get different refusals: $(jq -r ".$k.reply" <<<"$stranger") vs $(jq -r ".$k.other" <<<"$stranger");"
    jq -e ".$k.reply | fromjson | .kind == \"refused\"" <<<"$stranger" >/dev/null 2>&1 || problems+=" $k: not refused: $(jq -r ".$k.reply" <<<"$stranger");"
  done
  [ "$(jq -r '.leaks | length' <<<"$stranger")" = 0 ] || problems+=" refusals name: $(jq -r '.leaks | join(", ")' <<<"$stranger");"
  [ -z "$(jq -r .long.reply <<<"$stranger")" ] || problems+=" a 68 KiB line was answered: $(jq -r .long.reply <<<"$stranger" | head -c 200);"
  awk -v s="$(jq -r .long.seconds <<<"$stranger")" 'BEGIN { exit !(s < 10) }' || problems+=" a 68 KiB line held the connection $(jq -r .long.seconds <<<"$stranger") s;"
fi
result_problems stranger "$problems" "keyring: $(jq -r '.keyring.reply | fromjson | .body.message' <<<"$stranger" 2>/dev/null); rotation: $(jq -r '.rotation.reply | fromjson | .body.message' <<<"$stranger" 2>/dev/null); the same for a member's name and an unknown one; a line over 64 KiB closed in $(jq -r .long.seconds <<<"$stranger" 2>/dev/null) s without an answer"

# ---------------------------------------------------------------------------------------------
# The flood. The idler opens IDLE connections round-robin from the SOURCES addresses and never sends a
# byte; each second it counts the ones the agent holds (connected, and not closed since the last round:
# not merely waiting in the listen queue), then reopens those the agent closed.
cat >"$WORK/idler.py" <<'EOF'
import json, resource, select, socket, sys, time
n, sources, seconds = int(sys.argv[1]), [f"10.99.0.{100 + i}" for i in range(int(sys.argv[2]))], float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
target = ("10.99.0.1", 7946)
def connect(i):
    s = socket.socket(); s.setblocking(False); s.bind((sources[i % len(sources)], 0))
    try: s.connect(target)
    except BlockingIOError: pass
    return s
def connected(s):
    try: s.getpeername(); return True
    except OSError: return False
# First one address alone, far over its share: the agent keeps 8 of its 50 connections.
alone = [socket.create_connection(target, timeout=5, source_address=(sources[0], 0)) for _ in range(50)]
time.sleep(1.5)
poller = select.poll()
for s in alone: poller.register(s, select.POLLIN)
closed = {fd for fd, ev in poller.poll(0)}
print(json.dumps({"single_source_held": sum(1 for s in alone if s.fileno() not in closed)}), flush=True)
for s in alone: s.close()
socks = [connect(i) for i in range(n)]
open_before = [False] * n  # connected and open at the last round
print("connected", flush=True)
stats = {"opened": n, "reopened": 0, "rounds": 0, "max_held": 0, "max_held_per_source": 0}
end = time.time() + seconds
while time.time() < end:
    time.sleep(1)
    poller = select.poll()
    for s in socks: poller.register(s, select.POLLIN)
    closed = {fd for fd, ev in poller.poll(0)}
    held = {}
    for i, s in enumerate(socks):
        is_open = s.fileno() not in closed and connected(s)
        if is_open and open_before[i]:
            src = sources[i % len(sources)]
            held[src] = held.get(src, 0) + 1
        open_before[i] = is_open
    stats["rounds"] += 1
    stats["max_held"] = max(stats["max_held"], sum(held.values()))
    stats["max_held_per_source"] = max([stats["max_held_per_source"]] + list(held.values()))
    for i, s in enumerate(socks):
        if s.fileno() in closed:
            s.close(); socks[i] = connect(i); open_before[i] = False; stats["reopened"] += 1
    print(json.dumps(stats), flush=True)
EOF
# The bad-MAC flood: well-formed join requests (current version) under a made-up token, 4 at a time.
cat >"$WORK/flooder.py" <<'EOF'
import base64, json, os, socket, sys, threading, time
seconds = float(sys.argv[1])
def b64(n): return base64.b64encode(os.urandom(n)).decode()
def line():
    body = {"version": 2, "token_id": os.urandom(8).hex(), "expires_at": int(time.time()) + 3600, "uses_limit": 1,
            "cluster_id": os.urandom(8).hex(), "node_name": "intruder", "identity_public_key": b64(32),
            "wireguard_public_key": b64(32), "nonce": b64(24), "mac": b64(32)}
    return (json.dumps({"kind": "join", "body": body}) + "\n").encode()
codes, sample, lock = {}, [], threading.Lock()
def run():
    end = time.time() + seconds
    while time.time() < end:
        code = "no-answer"
        try:
            s = socket.socket(); s.settimeout(5); s.bind(("10.99.0.120", 0)); s.connect(("10.99.0.1", 7946))
            s.sendall(line())
            out = b""
            while not out.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk: break
                out += chunk
            s.close()
            if out:
                reply = json.loads(out)
                code = reply["body"].get("code", reply["body"].get("kind", "?")) if reply["kind"] == "refused" else reply["kind"]
                with lock:
                    if not sample: sample.append(out.decode().strip())
        except Exception:
            time.sleep(0.05)
        with lock: codes[code] = codes.get(code, 0) + 1
threads = [threading.Thread(target=run) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"codes": codes, "sample": sample[0] if sample else ""}))
EOF

base="$(fds)"
refused0="$(metric wiremesh_joins_total 'result="refused"')"
log_lines0="$(wc -l <"$WORK/agent1.log")"
python3 "$WORK/sampler.py" "${AGENT[1]}" "$P-n1" >"$WORK/sampler.out" 2>"$WORK/sampler.err" & SAMPLER=$!
ip netns exec "$P-n9" python3 "$WORK/idler.py" "$IDLE" "$SOURCES" "$FLOOD_S" >"$WORK/idler.out" 2>"$WORK/idler.err" & IDLER=$!
wait_until 25 grep -q connected "$WORK/idler.out" || { log "the idler did not start: $(cat "$WORK/idler.err")"; exit 1; }
ip netns exec "$P-n9" python3 "$WORK/flooder.py" "$((FLOOD_S - 4))" >"$WORK/flooder.out" 2>"$WORK/flooder.err" & FLOODER=$!
t_flood="$(now)"
sleep 3  # the flood at full strength: the agent has seen all 2000 connections once

# status, timed, throughout
status_max=0; status_failed=0; status_n=0
status_once() {
  local t0 s; t0="$(now)"
  if timeout 10 ip netns exec "$P-n1" "$WM" status --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" >/dev/null 2>&1; then
    s="$(since "$t0" 2)"; status_max="$(awk -v a="$status_max" -v b="$s" 'BEGIN { print (b > a) ? b : a }')"
  else status_failed=$((status_failed + 1)); fi
  status_n=$((status_n + 1))
}
status_once

# join: node 3 joins through node 1 while the flood runs.
t0="$(now)"
timeout 40 ip netns exec "$P-n3" "$WM" join --token-file "$WORK/token3" --name node3 --state-dir "$WORK/n3" \
  --control-socket "$WORK/n3.sock" --interface "${P}w3" --advertise-address 10.99.0.3 --prepare-only >"$WORK/join3.out" 2>&1
join_rc=$?; join_s="$(since "$t0")"
status_once

# reconcile: node 2's peer removed behind the agent's back comes back (the resync runs every 10 s).
# After the join: the pass the admission itself runs would repair it too, without counting it as drift.
sleep 1
drift0="$(metric wiremesh_drift_repaired_total)"
ip netns exec "$P-n1" wg set "${P}w1" peer "$KEY2" remove
t_removed="$(now)"
status_once

repaired() { status_once; has_peer 1 "$KEY2" && [ "$(metric wiremesh_drift_repaired_total)" -gt "$drift0" ]; }
POLL=1 wait_until 25 repaired; repair_rc=$?; repair_s="$(since "$t_removed")"
still_flooding="$(within "$t_flood" "$((FLOOD_S - 4))" && echo 1 || echo 0)"
removed_at="$(elapsed "$t_flood" "$t_removed" 1)"
status_once

# The flood ends: collect what each side saw.
wait "$FLOODER" 2>/dev/null; FLOODER=""
stop_proc "$IDLER"; IDLER=""
back() { [ "$(fds)" -le $((base + 4)) ]; }
wait_until 20 back; back_rc=$?
stop_proc "$SAMPLER"; SAMPLER=""
sampled="$(tail -1 "$WORK/sampler.out")"
most="$(jq -r .max_fds <<<"$sampled" 2>/dev/null)"
idler="$(tail -1 "$WORK/idler.out")"
flood="$(tail -1 "$WORK/flooder.out")"
refused1="$(metric wiremesh_joins_total 'result="refused"')"
log_lines=$(( $(wc -l <"$WORK/agent1.log") - log_lines0 ))
status_once

# --- caps
problems=""
alone="$(grep -o '"single_source_held": [0-9]*' "$WORK/idler.out" | grep -o '[0-9]*$')"
[ "${alone:-0}" = 8 ] || problems+=" one address alone with 50 connections kept ${alone:-none} (want 8, the per-source cap);"
jq -e . <<<"$idler" >/dev/null 2>&1 || problems+=" the idler reported nothing: $(tail -3 "$WORK/idler.err");"
jq -e . <<<"$sampled" >/dev/null 2>&1 || problems+=" the sampler reported nothing: $(tail -3 "$WORK/sampler.err");"
held="$(jq -r .max_held <<<"$sampled" 2>/dev/null)"; per="$(jq -r .max_held_per_source <<<"$sampled" 2>/dev/null)"
[ "${held:-999}" -le 128 ] || problems+=" the agent held $held of the idler's connections at once (cap 128);"
[ "${per:-999}" -le 8 ] || problems+=" the agent held $per connections from one address (cap 8);"
[ "${held:-0}" -ge 120 ] || problems+=" at most $held connections held: the flood did not reach the total cap;"
[ "${most:-9999}" -le $((base + 128 + 16)) ] || problems+=" the agent's descriptors rose from $base to $most (128 connections + a few allowed);"
[ "$back_rc" = 0 ] || problems+=" 20 s after the flood the agent still has $(fds) descriptors (base $base);"
result_problems caps "$problems" "one address with 50 idle connections kept $alone; then $IDLE idle connections from $SOURCES addresses, $(jq -r .reopened <<<"$idler" 2>/dev/null) reopened after the agent closed them: the agent held at most $held at once, $per from one address ($(jq -r .samples <<<"$sampled" 2>/dev/null) samples); its descriptors $base -> at most $most -> $(fds) after" \
  "$(jq -cn --argjson alone "${alone:-null}" --argjson base "$base" --argjson most "${most:-null}" --argjson held "${held:-null}" --argjson per "${per:-null}" \
    '{single_source_held: $alone, fds_base: $base, fds_max: $most, held_max: $held, held_per_source_max: $per}')"

# --- status
problems=""
[ "$status_failed" = 0 ] || problems+=" $status_failed of $status_n status calls failed or took over 10 s;"
awk -v s="$status_max" 'BEGIN { exit !(s < 5) }' || problems+=" a status call took $status_max s;"
result_problems status "$problems" "$status_n status calls during and after the flood, all answered, the slowest in $status_max s" \
  "$(jq -cn --argjson n "$status_n" --argjson max "$status_max" '{calls: $n, slowest_s: $max}')"

# --- join
problems=""
[ "$join_rc" = 0 ] || problems+=" join exited $join_rc: $(tail -2 "$WORK/join3.out" | tr '\n' ' ');"
grep -q "joined cluster .* as node3" "$WORK/join3.out" || problems+=" join printed no confirmation;"
result_problems join "$problems" "node 3 joined through node 1 in $join_s s while $IDLE idle connections and the bad-MAC flood ran" \
  "$(jq -cn --argjson s "$join_s" '{join_s: $s}')"

# --- reconcile
problems=""
[ "$repair_rc" = 0 ] || problems+=" node 2's peer back on node 1: $(has_peer 1 "$KEY2" && echo yes || echo no), drift $drift0 -> $(metric wiremesh_drift_repaired_total);"
[ "$still_flooding" = 1 ] || problems+=" the repair came only after the flood ended (the peer removed $removed_at s into the $((FLOOD_S - 4)) s flood, back $repair_s s later);"
result_problems reconcile "$problems" "node 2's peer, removed with wg during the flood, back after $repair_s s; wiremesh_drift_repaired_total $drift0 -> $(metric wiremesh_drift_repaired_total)"

# --- bad-mac
problems=""
jq -e . <<<"$flood" >/dev/null 2>&1 || problems+=" the flooder reported nothing: $(tail -3 "$WORK/flooder.err");"
auth="$(jq -r '.codes.authentication // 0' <<<"$flood" 2>/dev/null)"
others="$(jq -c '.codes | del(.authentication)' <<<"$flood" 2>/dev/null)"
sample="$(jq -r .sample <<<"$flood" 2>/dev/null)"
[ "${auth:-0}" -ge 100 ] || problems+=" only ${auth:-0} lines refused for their MAC (want 100 or more);"
[ "$(jq -r '[.codes | to_entries[] | select(.key != "authentication" and .key != "no-answer") | .value] | add // 0' <<<"$flood" 2>/dev/null)" = 0 ] \
  || problems+=" other answers: $others (a 'malformed' means the flood's line is no longer a current join request: update flooder.py);"
for w in "$CLUSTER" node1 node2; do grep -qF -- "$w" <<<"$sample" && problems+=" the refusal names '$w': $sample;"; done
[ "$log_lines" -lt 100 ] || problems+=" node 1's log grew by $log_lines lines during the flood (refusals are logged once per kind every 10 s);"
[ $((refused1 - refused0)) -ge "${auth:-0}" ] || problems+=" wiremesh_joins_total{result=refused} rose by $((refused1 - refused0)), fewer than the $auth refusals;"
result_problems bad-mac "$problems" "$auth join lines with a bad MAC refused (other outcomes: $others), counted in wiremesh_joins_total{result=refused} ($refused0 -> $refused1); the refusal: $(jq -r '.body.message' <<<"$sample" 2>/dev/null); node 1's log grew by $log_lines lines" \
  "$(jq -cn --argjson auth "${auth:-0}" --argjson lines "$log_lines" '{refused_for_mac: $auth, log_lines: $lines}')"

exit "$HARNESS_FAILED"
