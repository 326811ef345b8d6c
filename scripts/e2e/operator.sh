#!/usr/bin/env bash
# An operator's day, end to end (issue 14): restarts, rejoins and mistakes on a small wiremesh
# cluster in network namespaces (nodes on a bridge, wireguard-go). One line per case on stdout:
#   RESULT {"case": NAME, "pass": BOOL, "detail": TEXT}
#
#   scripts/e2e/operator.sh [--keep]       (root; WIREMESH_BIN=path, default .build/debug/wiremesh)
#
# Cases:
#   settings-kept      join --interface/--gossip-port/--wireguard-port --prepare-only, then a plain
#                      `wiremesh agent` comes up with them; a later --interface moves the node (the old
#                      interface and its wireguard-go removed) and sticks across a kill -9 + plain restart
#   status-dir         `status --state-dir X` finds X's control socket (saved with the settings)
#   lock               a second agent on a running node's state directory exits at once, naming the pid
#   unhealthy          the node's wireguard-go killed under its agent: started again, traffic flows; its
#                      WireGuard port taken meanwhile: `status` exits 1 naming it, and the node heals once
#                      the port is free; an agent started with the port taken exits, naming the port
#   foreign-interface  join/agent refuse a WireGuard interface someone else set up (it stays untouched);
#                      --adopt-interface takes it over
#   rejoin             leave, then `join TOKEN` without --name: same name, same pod CIDR, alive everywhere;
#                      status after the leave says to join, not to start the agent
#   late-checks        non-root init, --interface of a veth, the gossip port taken, an advertise address
#                      not on this host: refused before any state is written or a token is spent
#   join-port-flood    300 idle TCP connections from one host: the agent holds at most 8 (its descriptors),
#                      closes them by the deadline; status and a join still work
#   concurrent-joins   joins admitted by one member at the same moment get different pod blocks (token on stdin)
# Everything carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN
harness_check ip wg wireguard-go jq ping python3 setpriv || exit 1
harness_start wmo 2
chmod 755 "$WORK"

CASE=""; PROBLEMS=""
begin() { CASE=$1; PROBLEMS=""; log "--- $1"; }
problem() { PROBLEMS+=" $*;"; log "$CASE: $*"; }
finish() { result_problems "$CASE" "$PROBLEMS" "$*"; }
log_tail() { log "--- agent $1 log"; tail -n 15 "$WORK/agent$1.log" >&2 2>/dev/null; }

# The harness's wm and start_agent name the control socket, interface and address; these name only the
# state directory: what a node runs with comes from its saved settings, as under systemd.
wm() { local i=$1; shift; ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i"; }
start() { # I ARGS: runs `wiremesh ARGS` in node I's namespace in the background as its agent
  local i=$1; shift
  ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" >>"$WORK/agent$i.log" 2>&1 &
  AGENT[$i]=$!
}
alive_on() { [ "$(peer_state "$1" "$2")" = alive ]; }
has_link() { ip -n "$P-n$1" link show "$2" >/dev/null 2>&1; }
uses_of() { wm 1 token list --json 2>/dev/null | jq -r --arg id "$1" '.[] | select(.id == $id) | .uses_consumed'; }

netns_underlay "$P" || exit 1
for i in 1 2 3 4 5 6 7; do netns_node "$P" "$i" || exit 1; done

# Node 1: the cluster, with a pod.
# Blocks of /19: 8 in the cluster, so joins racing for the free ones often start at the same block.
if ! ip netns exec "$P-n1" "$WM" init --name node1 --node-prefix 19 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
    --interface "${P}w1" --advertise-address 10.99.0.1 --prepare-only >"$WORK/token0" 2>"$WORK/init1.err"; then
  log "init failed: $(cat "$WORK/init1.err")"; exit 1
fi
start 1 agent
wait_until 20 ready 1 || { log_tail 1; log "agent 1 did not come up"; exit 1; }
created="$(wm 1 token create --ttl 30m --uses 3 --json)"  # nodes 2, 3 and 4
TOKEN="$(jq -r .token <<<"$created")"; TOKEN_ID="$(jq -r .id <<<"$created")"
[ -n "$TOKEN" ] || { log "token create printed nothing"; exit 1; }
add_pod 1 || exit 1
POD1="$(pod 1)"

# ---------------------------------------------------------------------------------------------
begin settings-kept
if ! ip netns exec "$P-n2" "$WM" join "$TOKEN" --name node2 --state-dir "$WORK/n2" --control-socket "$WORK/n2.sock" \
    --interface "${P}x2" --advertise-address 10.99.0.2 --gossip-port 7950 --wireguard-port 51830 --prepare-only \
    >"$WORK/join2.out" 2>"$WORK/join2.err"; then
  problem "join --prepare-only failed: $(cat "$WORK/join2.err")"
else
  grep -q "joined cluster .* as node2" "$WORK/join2.out" || problem "join printed no confirmation: $(cat "$WORK/join2.out")"
  # What the systemd unit runs: no flags but the state directory.
  start 2 agent
  if ! wait_until 20 ready 2; then problem "plain 'wiremesh agent' did not answer status (no saved control socket?)"; log_tail 2
  else
    [ "$(status_field 2 interface)" = "${P}x2" ] || problem "agent came up on $(status_field 2 interface), not ${P}x2"
    [ "$(status_field 2 gossip_port)" = 7950 ] || problem "gossip port $(status_field 2 gossip_port), not 7950"
    [ "$(status_field 2 wireguard_port)" = 51830 ] || problem "WireGuard port $(status_field 2 wireguard_port), not 51830"
    [ "$(status_field 2 advertise_address)" = 10.99.0.2 ] || problem "advertise address $(status_field 2 advertise_address)"
    has_link 2 wm0 && problem "a wm0 interface was created"
    add_pod 2; POD2="$(pod 2)"
    wait_until 20 alive_on 1 node2 || problem "node1 does not see node2 alive"
    wait_until 10 ping_ok 2 "$POD1" || problem "pod2 cannot ping pod1"
    # A new --interface: the node moves, its old interface (and the wireguard-go serving it) goes.
    stop_agent 2
    start 2 agent --interface "${P}y2"
    if ! wait_until 20 ready 2; then problem "agent --interface ${P}y2 did not come up"; log_tail 2
    else
      [ "$(status_field 2 interface)" = "${P}y2" ] || problem "after --interface ${P}y2 status says $(status_field 2 interface)"
      has_link 2 "${P}x2" && problem "the old interface ${P}x2 is still there"
      [ -z "$(netns_wg_go_pids "${P}x2")" ] || problem "wireguard-go for the old ${P}x2 still runs"
      [ "$(status_field 2 healthy)" = true ] || problem "not healthy after the move: $(status_field 2 problems)"
      wait_until 20 ping_ok 2 "$POD1" || problem "pod2 cannot ping pod1 after the move"
    fi
    # kill -9, then the plain command again: the last explicit interface stuck.
    stop_agent 2 KILL
    start 2 agent
    if ! wait_until 20 ready 2; then problem "plain agent after kill -9 did not come up"; log_tail 2
    else
      [ "$(status_field 2 interface)" = "${P}y2" ] || problem "after kill -9 and a plain restart: interface $(status_field 2 interface), not ${P}y2"
      has_link 2 wm0 && problem "a wm0 interface was created after the restart"
      wait_until 20 ping_ok 1 "$POD2" || problem "pod1 cannot ping pod2 after the restart"
    fi
  fi
fi
finish "join's --interface/--gossip-port/--wireguard-port/--advertise-address kept by a plain 'wiremesh agent'; --interface moves the node and sticks"

# ---------------------------------------------------------------------------------------------
begin status-dir
out="$(ip netns exec "$P-n2" "$WM" status --state-dir "$WORK/n2" 2>&1)"; rc=$?
[ "$rc" = 0 ] || problem "status --state-dir (no --control-socket) exited $rc: $out"
grep -q "node2" <<<"$out" || problem "status --state-dir did not show node2: $out"
grep -q "advertise:   10.99.0.2" <<<"$out" || problem "status shows no advertise address"
grep -q "MTU" <<<"$out" || problem "status shows no MTU"
finish "status --state-dir finds the node's own control socket; shows advertise address and MTU"

# ---------------------------------------------------------------------------------------------
begin lock
routes_before="$(ip -n "$P-n2" route show table all proto 87 | sort)"
t0=$(date +%s)
out="$(timeout 20 ip netns exec "$P-n2" "$WM" agent --state-dir "$WORK/n2" --control-socket "$WORK/n2b.sock" \
  --gossip-port 7960 --wireguard-port 51860 2>&1)"; rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "a second agent on the same state directory exited $rc"
grep -q "in use by another wiremesh agent (pid ${AGENT[2]:-?})" <<<"$out" || problem "the second agent said: $out"
[ "$(ip -n "$P-n2" route show table all proto 87 | sort)" = "$routes_before" ] || problem "node 2's routes changed"
ready 2 || problem "the first agent stopped answering"
finish "second agent refused in $(( $(date +%s) - t0 )) s: $(head -n 1 <<<"$out" | cut -c1-160)"

# ---------------------------------------------------------------------------------------------
begin unhealthy
if ! ip netns exec "$P-n3" "$WM" join "$TOKEN" --name node3 --state-dir "$WORK/n3" --control-socket "$WORK/n3.sock" \
    --interface "${P}w3" --advertise-address 10.99.0.3 --wireguard-port 51840 --prepare-only >/dev/null 2>"$WORK/join3.err"; then
  problem "join node3 failed: $(cat "$WORK/join3.err")"
else
  start 3 agent
  wait_until 20 ready 3 || { problem "agent 3 did not come up"; log_tail 3; }
  [ "$(status_field 3 healthy)" = true ] || problem "a fresh node is not healthy: $(status_field 3 problems)"
  add_pod 3
  wait_until 20 ping_ok 3 "$POD1" || problem "pod3 cannot ping pod1"
  # The data plane dies under the agent: it is brought back (within a resync), traffic flows again.
  kill_wg_go "${P}w3"
  back3() { [ -n "$(netns_wg_go_pids "${P}w3")" ] && wm 3 status >/dev/null 2>&1 && ping_ok 3 "$POD1"; }
  t0=$(date +%s)
  if wait_until 30 back3; then recovered="$(( $(date +%s) - t0 ))"; else problem "the killed wireguard-go was not replaced within 30 s (pods: $(ping_ok 3 "$POD1" && echo ok || echo down))"; fi
  grep -q "userspace WireGuard for ${P}w3 is gone" "$WORK/agent3.log" || problem "the agent did not log the restart of wireguard-go"
  # Now another process takes the WireGuard port while it is down: the node is black-holed and
  # status must say so (exit 1, the port named), not "all is well".
  kill_wg_go "${P}w3"
  ip netns exec "$P-n3" python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 51840)); print("bound", flush=True); time.sleep(120)' >"$WORK/blocker3" 2>&1 &
  blocker=$!
  wait_until 10 grep -q bound "$WORK/blocker3" || problem "could not bind the blocker"
  unhealthy3() { ! wm 3 status >/dev/null 2>&1; }
  if wait_until 30 unhealthy3; then
    out="$(wm 3 status 2>&1)"; rc=$?
    [ "$rc" = 1 ] || problem "status of the black-holed node exited $rc (want 1)"
    grep -q "health:      NOT OK: WireGuard port 51840 is in use" <<<"$out" || problem "status does not say why: $out"
    wm 3 status --json >"$WORK/status3.json" 2>/dev/null; rc=$?
    [ "$rc" = 1 ] && [ "$(jq -r .healthy "$WORK/status3.json")" = false ] || problem "status --json exited $rc with healthy=$(jq -r .healthy "$WORK/status3.json")"
    grep -q "cannot program interface ${P}w3: WireGuard port 51840" "$WORK/agent3.log" || problem "the agent log does not say why"
  else
    problem "status still exits 0 30 s after the node's WireGuard port was taken"
  fi
  # The port is free again: the node heals by itself.
  kill "$blocker" 2>/dev/null; wait "$blocker" 2>/dev/null
  healthy3() { wm 3 status >/dev/null 2>&1 && ping_ok 3 "$POD1"; }
  wait_until 30 healthy3 || problem "the node did not recover after the port was freed"
  # At start, the same conflict stops the agent at once, naming the port.
  stop_agent 3 KILL
  kill_wg_go "${P}w3"
  ip netns exec "$P-n3" python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 51840)); print("bound", flush=True); time.sleep(60)' >"$WORK/blocker3b" 2>&1 &
  blocker=$!
  wait_until 10 grep -q bound "$WORK/blocker3b" || problem "could not bind the blocker"
  out="$(timeout 30 ip netns exec "$P-n3" "$WM" agent --state-dir "$WORK/n3" 2>&1)"; rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "the agent with its WireGuard port taken exited $rc"
  grep -q "WireGuard port 51840 is in use" <<<"$out" || problem "the agent with its port taken said: $(tail -n 2 <<<"$out")"
  kill "$blocker" 2>/dev/null; wait "$blocker" 2>/dev/null
  kill_wg_go "${P}w3" TERM
fi
finish "wireguard-go killed: replaced, pods ping again after ${recovered:-?} s; its port taken: status exits 1 naming it, heals when freed; at start: the agent exits naming the port"

# ---------------------------------------------------------------------------------------------
begin foreign-interface
ip netns exec "$P-n4" wireguard-go -f "${P}f4" >/dev/null 2>&1 &
for _ in $(seq 1 50); do [ -S "/var/run/wireguard/${P}f4.sock" ] && break; sleep 0.1; done
wg genkey >"$WORK/f4.key"; chmod 600 "$WORK/f4.key"
ip netns exec "$P-n4" wg set "${P}f4" private-key "$WORK/f4.key" listen-port 51899 \
  peer "$(wg genkey | wg pubkey)" allowed-ips 10.1.0.0/24
f4_before="$(ip netns exec "$P-n4" wg show "${P}f4" dump)"
uses_before="$(uses_of "$TOKEN_ID")"
out="$(timeout 30 ip netns exec "$P-n4" "$WM" join "$TOKEN" --name node4 --state-dir "$WORK/n4" --control-socket "$WORK/n4.sock" \
  --interface "${P}f4" --advertise-address 10.99.0.4 2>&1)"; rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "join onto a foreign interface exited $rc"
grep -q "did not set up" <<<"$out" && grep -q -- "--adopt-interface" <<<"$out" || problem "join said: $out"
[ -e "$WORK/n4" ] && problem "the refused join wrote $WORK/n4"
[ "$(uses_of "$TOKEN_ID")" = "$uses_before" ] || problem "the refused join spent a token use"
[ "$(ip netns exec "$P-n4" wg show "${P}f4" dump)" = "$f4_before" ] || problem "the foreign interface was changed by join"
# A node of ours started on that name: refused too, and nothing of either interface changes.
if ip netns exec "$P-n4" "$WM" join "$TOKEN" --name node4 --state-dir "$WORK/n4" --control-socket "$WORK/n4.sock" \
    --interface "${P}g4" --advertise-address 10.99.0.4 --prepare-only >/dev/null 2>"$WORK/join4.err"; then
  out="$(timeout 30 ip netns exec "$P-n4" "$WM" agent --state-dir "$WORK/n4" --interface "${P}f4" 2>&1)"; rc=$?
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "agent --interface onto a foreign interface exited $rc"
  grep -q "did not set up" <<<"$out" || problem "agent said: $out"
  [ "$(ip netns exec "$P-n4" wg show "${P}f4" dump)" = "$f4_before" ] || problem "the foreign interface was changed by agent"
  # --adopt-interface takes it over: this node's key on it.
  start 4 agent --interface "${P}f4" --adopt-interface
  if wait_until 20 ready 4; then
    [ "$(ip netns exec "$P-n4" wg show "${P}f4" public-key)" = "$(status_field 4 public_key)" ] || problem "--adopt-interface did not put the node's key on ${P}f4"
    ip netns exec "$P-n4" wg show "${P}f4" allowed-ips | grep -q '10.1.0.0/24' && problem "the foreign peer survived the adoption"
    wait_until 20 alive_on 1 node4 || problem "node4 not alive on node1 after adopting"
  else problem "agent --adopt-interface did not come up"; log_tail 4; fi
else
  problem "join node4 failed: $(cat "$WORK/join4.err")"
fi
finish "join and agent refuse a WireGuard interface they did not set up (left untouched, no token spent); --adopt-interface takes it over"

# ---------------------------------------------------------------------------------------------
begin rejoin
if [ -z "${AGENT[4]:-}" ]; then problem "needs node 4 running"; else
  cidr4="$(status_field 4 'pod_cidrs[0]')"; key4="$(status_field 4 public_key)"
  wm 4 leave >/dev/null 2>&1 || problem "leave failed"
  wait_until 15 eval '! kill -0 "${AGENT[4]}" 2>/dev/null'; stop_agent 4
  out="$(wm 4 status 2>&1)"
  grep -q "left cluster .*wiremesh join TOKEN" <<<"$out" || problem "status after leave said: $out"
  grep -q "systemctl start" <<<"$out" && problem "status after leave still advises systemctl start"
  tok="$(wm 1 token create --ttl 10m)"
  start 4 join "$tok"
  if wait_until 20 ready 4; then
    [ "$(status_field 4 name)" = node4 ] || problem "rejoined as $(status_field 4 name), not node4"
    [ "$(status_field 4 'pod_cidrs[0]')" = "$cidr4" ] || problem "rejoined with $(status_field 4 'pod_cidrs[0]'), not its old $cidr4"
    [ "$(status_field 4 public_key)" = "$key4" ] || problem "the WireGuard key changed across the rejoin"
    [ "$(status_field 4 interface)" = "${P}f4" ] || problem "the rejoin did not keep the saved interface"
    # The agent that `join TOKEN` became no longer carries the token in its command line.
    cmdline="$(tr '\0' ' ' </proc/"${AGENT[4]}"/cmdline 2>/dev/null)"
    grep -qF "${tok:0:20}" <<<"$cmdline" && problem "the agent's command line still holds the token: $cmdline"
    grep -q " agent --state-dir " <<<"$cmdline" || problem "the joined node does not run as 'wiremesh agent': $cmdline"
    wait_until 20 alive_on 1 node4 || problem "node1 sees node4 as $(peer_state 1 node4)"
    names="$(wm 1 peers --json | jq -r '.[].name' | sort | tr '\n' ' ')"
    grep -q "$(hostname)" <<<"$names" && problem "node1 lists a node named after the host: $names"
  else problem "join after leave did not come up"; log_tail 4; fi
fi
finish "after leave, 'join TOKEN' without --name keeps node4, its pod CIDR, its key and its settings; the agent it becomes has no token in its command line"

# ---------------------------------------------------------------------------------------------
begin late-checks
# Not root, in a directory it may write: refused before anything is written, naming the missing privilege.
install -d -o 65534 -g 65534 -m 0755 "$WORK/nobody"
out="$(timeout 30 ip netns exec "$P-n5" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
  "$WM" init --name nr --state-dir "$WORK/nobody/state" --control-socket "$WORK/nobody/n5.sock" --interface "${P}w5" 2>&1)"; rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "init as nobody exited $rc"
grep -q "CAP_NET_ADMIN" <<<"$out" || problem "init as nobody said: $out"
[ -e "$WORK/nobody/state" ] && problem "init as nobody wrote its state directory"
grep -q "^wmj" <<<"$out" && problem "init as nobody printed a token"
# Not a WireGuard interface.
out="$(timeout 30 ip netns exec "$P-n5" "$WM" init --name v --state-dir "$WORK/n5-eth" --control-socket "$WORK/n5.sock" --interface eth0 \
  --advertise-address 10.99.0.5 2>&1)"; rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "init --interface eth0 exited $rc"
grep -q "not a WireGuard interface (kind veth)" <<<"$out" || problem "init --interface eth0 said: $out"
[ -e "$WORK/n5-eth" ] && problem "init --interface eth0 wrote its state directory"
# The gossip port (UDP) taken on every address.
ip netns exec "$P-n5" python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7946)); print("bound", flush=True); time.sleep(60)' >"$WORK/blocker5" 2>&1 &
blocker=$!
wait_until 10 grep -q bound "$WORK/blocker5" || problem "could not bind the blocker"
out="$(timeout 30 ip netns exec "$P-n5" "$WM" init --name p --state-dir "$WORK/n5-port" --control-socket "$WORK/n5.sock" \
  --interface "${P}w5" --advertise-address 10.99.0.5 2>"$WORK/init5.err")"; rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] || problem "init with the gossip port taken exited $rc"
[ -z "$out" ] || problem "init with the gossip port taken printed a token"
grep -q "gossip port 7946" "$WORK/init5.err" || problem "init with the gossip port taken said: $(cat "$WORK/init5.err")"
[ -e "$WORK/n5-port" ] && problem "init with the gossip port taken wrote its state directory"
has_link 5 "${P}w5" && problem "init with the gossip port taken created ${P}w5"
kill "$blocker" 2>/dev/null; wait "$blocker" 2>/dev/null
# An advertise address that is not this host's: no token use spent.
created="$(wm 1 token create --ttl 10m --uses 1 --json)"
tok1="$(jq -r .token <<<"$created")"; id1="$(jq -r .id <<<"$created")"
out="$(ip netns exec "$P-n5" "$WM" join "$tok1" --name a --state-dir "$WORK/n5-addr" --control-socket "$WORK/n5.sock" \
  --interface "${P}w5" --advertise-address 10.99.0.200 --prepare-only 2>&1)"; rc=$?
[ "$rc" != 0 ] || problem "join --advertise-address 10.99.0.200 exited 0"
grep -q "10.99.0.200 is not an address of this host" <<<"$out" || problem "join with a foreign address said: $out"
[ -e "$WORK/n5-addr" ] && problem "join with a foreign address wrote its state directory"
[ "$(uses_of "$id1")" = 0 ] || problem "join with a foreign address spent the token's use ($(uses_of "$id1"))"
finish "non-root, a veth as --interface, the gossip port taken, a foreign advertise address: refused before state or token use"

# ---------------------------------------------------------------------------------------------
begin join-port-flood
# 300 idle connections from one host to node 1's join port: the agent holds at most 8 (its descriptors
# are what a flood exhausted), closes each by the deadline, and status and a real join still work.
fds() { ls "/proc/${AGENT[1]}/fd" 2>/dev/null | wc -l; }
base="$(fds)"
ip netns exec "$P-n6" python3 -c '
import socket, time
socks = []
for _ in range(300):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("10.99.0.1", 7946))
    except BlockingIOError: pass
    socks.append(s)
print("connected", flush=True); time.sleep(20)' >"$WORK/flood" 2>&1 &
flood=$!
wait_until 10 grep -q connected "$WORK/flood" || problem "the flood did not start"
most=0
for _ in $(seq 1 12); do n="$(fds)"; [ "$n" -gt "$most" ] && most=$n; sleep 0.5; done
[ "$most" -le $((base + 8 + 4)) ] || problem "the agent held $((most - base)) more descriptors during the flood (want <= 8 connections + a few)"
ready 1 || problem "status of node 1 did not answer during the flood"
tokf="$(wm 1 token create --ttl 10m 2>/dev/null)"
ip netns exec "$P-n7" "$WM" join "$tokf" --name f7 --state-dir "$WORK/f7" --control-socket "$WORK/f7.sock" \
  --interface "${P}f7" --advertise-address 10.99.0.7 --prepare-only >/dev/null 2>"$WORK/f7.err" || problem "a join during the flood failed: $(cat "$WORK/f7.err")"
kill "$flood" 2>/dev/null; wait "$flood" 2>/dev/null
# The flood is gone: whatever the agent held closes by the deadline (15 s).
back() { [ "$(fds)" -le $((base + 2)) ]; }
wait_until 20 back || problem "the agent still holds $(( $(fds) - base )) more descriptors 20 s after the flood"
finish "300 idle connections from one host: the agent's descriptors rose by at most $((most - base)) (8 connections allowed), back to normal after the deadline; status and a join meanwhile work"

# ---------------------------------------------------------------------------------------------
begin concurrent-joins
tokc="$(wm 1 token create --ttl 10m --uses 3)"; joins=()
for i in 5 6 7; do
  # The token on standard input (`join -`): it never appears in a command line.
  echo "$tokc" | ip netns exec "$P-n$i" "$WM" join - --name "c$i" --state-dir "$WORK/c$i" --control-socket "$WORK/c$i.sock" \
    --interface "${P}c$i" --advertise-address "10.99.0.$i" --prepare-only >"$WORK/c$i.out" 2>&1 & joins+=($!)
done
wait "${joins[@]}"
blocks=""
for i in 5 6 7; do
  b="$(jq -r .pod_cidr "$WORK/c$i/cluster.json" 2>/dev/null)"
  [ -n "$b" ] && [ "$b" != null ] || problem "join c$i failed: $(cat "$WORK/c$i.out")"
  blocks+="$b "
done
[ "$(tr ' ' '\n' <<<"$blocks" | grep . | sort | uniq -d)" = "" ] || problem "two joins got one block: $blocks"
finish "three joins at once through one member got $blocks"
exit "$HARNESS_FAILED"
