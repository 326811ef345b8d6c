#!/usr/bin/env bash
# Host end-to-end test of the wiremesh agent (issue 4, "Done means"): 4 nodes and one pod per node,
# each a network namespace, the nodes on a bridge (the "underlay"), WireGuard from wireguard-go.
#
#   Tests/AgentE2ETests/agent-e2e.sh [--keep]        (root; WIREMESH=path/to/wiremesh, default .build/debug)
#
# Prints one line per case on stdout, RESULT {"case": NAME, "pass": BOOL, "detail": TEXT} (exit 0 when
# every case passed), and writes each case's transcript to $E2E_LOGDIR/<case>.log, agent logs to
# $E2E_LOGDIR/agentN.log (default: /tmp/<prefix>-logs, named on stderr at the end).
# Everything it creates carries a per-run prefix and is removed on exit, also on failure: every agent
# it started and every wireguard-go running for one of its interfaces (by pid), its namespaces, its files.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH:-$ROOT/.build/debug/wiremesh}"
NODES=4
LATE=5                      # a node that joins later, through a member other than the token's issuer
SPARE=6                     # a namespace on the underlay for the bad-input cases
CASELOG=/dev/null
harness_check ip wg wireguard-go tcpdump jq ping python3 || { result setup false "preconditions not met (see stderr)"; exit 1; }
harness_start wma 2
AGENT_LOGS="${E2E_LOGDIR:-/tmp/$P-logs}"      # case transcripts and agent logs; kept
mkdir -p "$AGENT_LOGS"
before_cleanup() { log "case transcripts and agent logs in $AGENT_LOGS"; }

# ---------------------------------------------------------------------------------------------
# Bookkeeping

begin() { CASELOG="$AGENT_LOGS/$1.log"; : >"$CASELOG"; CASE="$1"; }
note() { echo "$*" >>"$CASELOG"; }
pass() { note "PASS $*"; result "$CASE" true "${*:-ok}"; }
fail() { note "FAIL $*"; result "$CASE" false "$*"; }
agent_logs() { local i; for i in "$@"; do note "--- agent $i log (tail)"; tail -n 25 "$AGENT_LOGS/agent$i.log" >>"$CASELOG" 2>/dev/null; done; }
# Pods on node $1 to and from the pods on the other given nodes, all at once (a node whose agent
# is down must be checked well within the failure timeout, also on a loaded machine).
# Prints the failed pairs.
ping_both_ways() {
  local n=$1 j pids=() names=() k; shift
  for j in "$@"; do
    ping_ok "$n" "$(pod "$j")" & pids+=($!); names+=("$n->$j")
    ping_ok "$j" "$(pod "$n")" & pids+=($!); names+=("$j->$n")
  done
  for k in "${!pids[@]}"; do wait "${pids[$k]}" || printf ' %s' "${names[$k]}"; done
}

# ---------------------------------------------------------------------------------------------
# Case "mesh": 4 nodes, init + token + 3 joins, every pod pings every other pod (under a capture)

begin mesh
netns_underlay "$P"
for i in $(seq 1 $SPARE); do netns_node "$P" "$i"; done

setup_ok=1
if ! mesh_up; then
  fail "$MESH_ERROR"; agent_logs 1 2 3 4; setup_ok=0
elif ! add_pods; then
  fail "pods could not be set up"; setup_ok=0
else
  for i in $(seq 1 $NODES); do note "node$i pod CIDR $(cat "$WORK/cidr$i"), pod $(pod "$i"), key $(cat "$WORK/key$i")"; done
  wait_until 30 all_alive || { fail "not every node saw $((NODES - 1)) alive peers within 30 s"; setup_ok=0; }
fi
if [ "$setup_ok" = 1 ]; then
  capture_start "$WORK/mesh.cap"
  failed=""
  for i in $(seq 1 $NODES); do
    for j in $(seq 1 $NODES); do
      [ "$i" = "$j" ] && continue
      if ping_ok "$i" "$(pod "$j")"; then note "pod$i -> pod$j ok"; else failed+=" $i->$j"; note "pod$i -> pod$j FAILED"; fi
    done
  done
  capture_stop
  if [ -z "$failed" ]; then pass "all $((NODES * (NODES - 1))) pod pairs ping"
  else fail "pod pings failed:$failed"; agent_logs 1 2 3 4; for i in 1 2 3 4; do note "--- wg dump node $i"; wg_dump "$i" >>"$CASELOG"; done; fi
fi
MESH_OK=$setup_ok

# ---------------------------------------------------------------------------------------------
# Case "capture": the underlay saw no ICMP between pod addresses, only UDP to WireGuard/gossip ports

begin capture
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  total="$(wc -l <"$WORK/mesh.cap")"
  clear_icmp="$(grep -c 'ICMP' "$WORK/mesh.cap")"
  # Allowed: UDP from and to the WireGuard (51820) or gossip (7946) port of a node address.
  other="$(grep -vE '^[0-9:.]+ IP 10\.99\.0\.[0-9]+\.(51820|7946) > 10\.99\.0\.[0-9]+\.(51820|7946): UDP' "$WORK/mesh.cap" | grep -c .)"
  wgpk="$(grep -cE '\.51820 > .*\.51820: UDP' "$WORK/mesh.cap")"
  note "packets $total, WireGuard UDP $wgpk, ICMP $clear_icmp, other $other"; head -n 20 "$WORK/mesh.cap" >>"$CASELOG"
  if [ "$clear_icmp" = 0 ] && [ "$other" = 0 ] && [ "$wgpk" -ge $((NODES * (NODES - 1) * 2)) ]; then
    pass "$total packets on the underlay, $wgpk WireGuard UDP, 0 ICMP, 0 other"
  else
    grep -vE '\.(51820|7946): UDP' "$WORK/mesh.cap" | head -n 20 >>"$CASELOG"
    fail "underlay: $total packets, $wgpk WireGuard UDP (expected >= $((NODES * (NODES - 1) * 2))), $clear_icmp ICMP, $other not WireGuard/gossip UDP"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Case "kill9": kill -9 of agent 2 leaves traffic flowing while it is down

begin kill9
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  stop_agent 2 KILL
  note "agent 2 killed; wireguard-go for ${P}w2: $(netns_wg_go_pids "${P}w2" | tr '\n' ' ')"
  failed="$(ping_both_ways 2 1 3 4)"
  if [ -z "$failed" ]; then pass "pods to and from node 2 ping while its agent is down"
  else fail "pings failed while agent 2 was down:$failed"; agent_logs 1 2; fi
fi

# ---------------------------------------------------------------------------------------------
# Case "restart": `wiremesh agent` on node 2 with the same state dir and no token rejoins

begin restart
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  start_agent 2 agent
  seen_alive() { local j; for j in 1 3 4; do [ "$(peer_state "$j" node2)" = alive ] || return 1; done; [ "$(alive_count 2)" = 3 ]; }
  if ! wait_ready 2; then fail "restarted agent 2 did not answer status"; agent_logs 2
  elif ! wait_until 30 seen_alive; then
    fail "after the restart, nodes 1,3,4 see node2 as: $(for j in 1 3 4; do printf '%s ' "$(peer_state "$j" node2)"; done)and node2 sees $(alive_count 2) alive"
    agent_logs 1 2
  else
    failed="$(ping_both_ways 2 1 3 4)"
    if [ -z "$failed" ]; then pass "node2 alive again on every peer, pings work"; else fail "rejoined but pings failed:$failed"; agent_logs 2; fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# Case "stop": stopping agent 2 (SIGTERM, as systemd does) is not a leave: the other nodes keep its
# peer, pods keep pinging, and a restart picks up where it was

begin stop
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  key2="$(cat "$WORK/key2")"
  kill -TERM "${AGENT[2]}"
  t0=$(date +%s)
  stopped() { ! kill -0 "${AGENT[2]}" 2>/dev/null; }
  problems=""
  if wait_until 15 stopped; then wait "${AGENT[2]}" 2>/dev/null; unset 'AGENT[2]'; note "agent 2 stopped $(( $(date +%s) - t0 )) s after SIGTERM"
  else problems+=" agent 2 still running 15 s after SIGTERM;"; fi
  # Checked at once, while the pings run: a leave would have reached the peers before the agent
  # exited, while the failure detector may declare the stopped node dead a few seconds later (on a
  # loaded machine even before sequential checks end), which is not a leave.
  ping_both_ways 2 1 3 4 >"$WORK/stop-pings" & pinger=$!
  for j in 1 3 4; do
    st="$(peer_state "$j" node2)"; note "node$j sees node2 as $st"
    [ "$st" = left ] && problems+=" node$j sees node2 as left;"
    has_peer "$j" "$key2" || problems+=" node2 missing from node$j's device ($st);"
  done
  wait "$pinger"; failed="$(cat "$WORK/stop-pings")"
  [ -z "$failed" ] || problems+=" pings failed while agent 2 was stopped:$failed;"
  start_agent 2 agent
  wait_ready 2 && wait_until 30 seen_alive || problems+=" node2 not alive everywhere after the restart;"
  if [ -z "$problems" ]; then pass "after SIGTERM node2 stays on every device (not left), pings work, restart rejoins"
  else fail "$problems"; agent_logs 1 2; fi
fi

# ---------------------------------------------------------------------------------------------
# Case "return": agent 2 is killed (its wireguard-go keeps running with its old sessions) long enough
# to be declared dead and removed from the other devices (a dead member keeps its peer while packets
# from it arrive: with none, it goes 30-40 s after the last one); after its restart its own pod's
# packets flow at once (peers that re-add it start a handshake), not after WireGuard's ~15 s rekey timeout

begin return
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  key2="$(cat "$WORK/key2")"
  stop_agent 2 KILL
  removed2() { ! has_peer 1 "$key2"; }
  problems=""
  wait_until 60 removed2 || problems+=" node1 never removed node2 within 60 s after its agent died;"
  start_agent 2 agent
  back2() { has_peer 1 "$key2" && [ "$(peer_state 1 node2)" = alive ]; }
  wait_ready 2 && wait_until 30 back2 || problems+=" node1 did not re-add node2;"
  # Two one-second tries: far below the 15 s a stale session would need.
  first_ok=0
  for _ in 1 2; do ip netns exec "$P-p2" ping -c 1 -W 1 "$(pod 1)" >/dev/null 2>&1 && { first_ok=1; break; }; done
  [ "$first_ok" = 1 ] || problems+=" the returning node's pod could not reach pod 1 within 2 one-second pings;"
  if [ -z "$problems" ]; then pass "node2 declared dead, restarted, re-added; its pod's first pings go through"
  else fail "$problems"; agent_logs 1 2; fi
fi

# ---------------------------------------------------------------------------------------------
# Case "token-any-member": a second authority (node 2, given a copy of node 1's authority.key as
# SECURITY.md says) issues a token that admits a node while node 1 is stopped; a token of node 1
# names node 1 alone, and a member that is not an authority mints nothing

begin token-any-member
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  problems=""
  out3="$(wm 3 token create --ttl 10m 2>&1)" && problems+=" node3 (not an authority) created a token;"
  grep -q "not an authority" <<<"$out3" || problems+=" node3's refusal does not say it is not an authority: $out3;"
  # Node 2 becomes an authority: the seed copied with its mode, the agent restarted.
  install -m 0600 "$WORK/n1/authority.key" "$WORK/n2/authority.key"
  stop_agent 2
  start_agent 2 agent
  wait_ready 2 || problems+=" agent 2 did not come back as an authority;"
  created="$(wm 2 token create --ttl 10m --uses 1 --json 2>>"$CASELOG")"
  TOKEN_ANY="$(jq -r .token <<<"$created")"; id_any="$(jq -r .id <<<"$created")"
  [ -n "$TOKEN_ANY" ] && [ "$TOKEN_ANY" != null ] || problems+=" node2 with a copy of authority.key could not create a token;"
  kill -TERM "${AGENT[1]}"
  stopped1() { ! kill -0 "${AGENT[1]}" 2>/dev/null; }
  if wait_until 15 stopped1; then wait "${AGENT[1]}" 2>/dev/null; unset 'AGENT[1]'; else problems+=" agent 1 did not stop;"; fi
  t0="$(now)"
  start_agent $LATE join "$TOKEN_ANY" --name node$LATE
  late_alive() { [ "$(peer_state 2 node$LATE)" = alive ] && [ "$(peer_state 3 node$LATE)" = alive ]; }
  if ! wait_ready $LATE; then problems+=" node$LATE: join did not bring up an agent while node 1 was down;"; agent_logs $LATE
  elif ! wait_until 30 late_alive; then problems+=" node$LATE not alive on nodes 2 and 3;"
  else note "join with node 1 down: node$LATE alive on nodes 2 and 3 $(since "$t0" 2) s after 'wiremesh join'"; fi
  grep "admitted node" "$AGENT_LOGS/agent2.log" 2>/dev/null | grep -q "node=node$LATE" || problems+=" agent 2 did not log admitting node$LATE;"
  # The token had one use: every member lists it exhausted.
  used_up() { wm 3 token list --json 2>/dev/null | jq -e --arg id "$id_any" '.[] | select(.id == $id and .state == "exhausted" and .uses_consumed == 1)' >/dev/null; }
  wait_until 10 used_up || problems+=" node3 does not list $id_any as exhausted with 1 use: $(wm 3 token list --json | jq -c --arg id "$id_any" '.[] | select(.id == $id)');"
  start_agent 1 agent
  wait_ready 1 || problems+=" agent 1 did not come back;"
  all_alive1() { [ "$(alive_count 1)" = $NODES ]; }
  wait_until 30 all_alive1 || problems+=" node1 sees $(alive_count 1) alive after its restart (want $NODES);"
  if [ -z "$problems" ]; then pass "node3 (a member) mints no token; node2 with a copy of authority.key admitted node$LATE while node1 was down; the use is counted cluster-wide"
  else fail "$problems"; agent_logs 1 2 $LATE; fi
fi

# ---------------------------------------------------------------------------------------------
# Case "leave": `wiremesh leave` on node 4 removes it from every other WireGuard device, tears the
# node down (interface, wireguard-go, our routes) and the agent refuses to start until a new join

begin leave
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  key4="$(cat "$WORK/key4")"
  out="$(wm 4 leave 2>&1)"; rc=$?
  note "leave: rc $rc: $out"
  agent_gone() { ! kill -0 "${AGENT[4]}" 2>/dev/null; }
  t0=$(date +%s)
  wait_until 15 agent_gone && { wait "${AGENT[4]}" 2>/dev/null; unset 'AGENT[4]'; note "agent 4 exited $(( $(date +%s) - t0 )) s after leave"; }
  removed() { local j; for j in 1 2 3; do has_peer "$j" "$key4" && return 1; done; return 0; }
  shown_left() { local j; for j in 1 2 3; do [ "$(peer_state "$j" node4)" = left ] || return 1; done; }
  problems=""
  [ "$rc" = 0 ] || problems+=" leave exited $rc;"
  [ -z "${AGENT[4]:-}" ] || problems+=" agent 4 still running 15 s after leave;"
  wait_until 20 removed || problems+=" node4's key still on:$(for j in 1 2 3; do has_peer "$j" "$key4" && printf ' node%s' "$j"; done);"
  wait_until 10 shown_left || problems+=" peers --json shows node4 as:$(for j in 1 2 3; do printf ' %s' "$(peer_state "$j" node4)"; done);"
  ip -n "$P-n4" link show "${P}w4" >/dev/null 2>&1 && problems+=" interface ${P}w4 still exists in node 4's namespace;"
  [ -z "$(netns_wg_go_pids "${P}w4")" ] || problems+=" wireguard-go for ${P}w4 still running (pid $(netns_wg_go_pids "${P}w4" | tr '\n' ' '));"
  [ -e "/var/run/wireguard/${P}w4.sock" ] && problems+=" UAPI socket of ${P}w4 still there;"
  ours="$(ip -n "$P-n4" route show table all proto 87 2>/dev/null)"
  [ -z "$ours" ] || { problems+=" routes with protocol 87 left in node 4's namespace;"; note "routes left: $ours"; }
  rc=0; timeout 20 ip netns exec "$P-n4" "$WM" agent --state-dir "$WORK/n4" --control-socket "$WORK/n4.sock" \
    --interface "${P}w4" --advertise-address 10.99.0.4 >"$WORK/out" 2>"$WORK/err" || rc=$?
  note "agent start after leave: rc $rc: $(cat "$WORK/err")"
  if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then problems+=" agent start after leave exited $rc;"
  elif ! grep -q "left cluster .* run 'wiremesh join TOKEN' to rejoin" "$WORK/err"; then problems+=" agent start after leave said: $(head -n 1 "$WORK/err");"; fi
  ip -n "$P-n4" link show "${P}w4" >/dev/null 2>&1 && problems+=" the refused start created ${P}w4;"
  # What the message says works: a new token joins the node again (same name, kept identity).
  if [ -z "$problems" ]; then
    tok="$(wm 1 token create --ttl 10m)"
    start_agent 4 join "$tok" --name node4
    back4() { [ "$(peer_state 1 node4)" = alive ] && [ "$(peer_state 3 node4)" = alive ]; }
    wait_ready 4 && wait_until 30 back4 || problems+=" node4 did not come back alive after 'wiremesh join TOKEN':$(for j in 1 3; do printf ' %s' "$(peer_state "$j" node4)"; done);"
  fi
  if [ -z "$problems" ]; then pass "node4 gone from the devices of nodes 1-3, peers say left; its interface, wireguard-go, socket and protocol-87 routes removed; agent start refused ($(head -n 1 "$WORK/err" | sed 's/^agent: //')); join with a new token brings it back"
  else fail "$problems"; agent_logs 1 4; fi
fi

# ---------------------------------------------------------------------------------------------
# Case "crash": node 3 dies (agent and wireguard-go, kill -9); the others remove it once it is dead
# and nothing arrived from it for 30 s (its data plane is silent), and pod traffic to its pod range
# is dropped, never sent in clear

begin crash
if [ "$MESH_OK" != 1 ]; then fail "needs the mesh case"; else
  key3="$(cat "$WORK/key3")"
  stop_agent 3 KILL
  kill_wg_go "${P}w3"
  t0=$(date +%s)
  removed3() { local j; for j in 1 2; do has_peer "$j" "$key3" && return 1; done; return 0; }
  problems=""
  if wait_until 60 removed3; then note "node3 removed from nodes 1,2 after $(( $(date +%s) - t0 )) s"
  else problems+=" node3's key still on:$(for j in 1 2; do has_peer "$j" "$key3" && printf ' node%s' "$j"; done) after 60 s;"; fi
  for j in 1 2; do note "node$j sees node3 as $(peer_state "$j" node3)"; done
  capture_start "$WORK/crash.cap"
  pod3="$(pod 3)"; net3="$(cut -d/ -f1 "$WORK/cidr3")"; net3="${net3%.*}."
  for j in 1 2; do
    if ip netns exec "$P-p$j" ping -c 3 -i 0.2 -W 1 "$pod3" >/dev/null 2>&1; then problems+=" pod$j reached pod3 at $pod3;"; fi
    ip netns exec "$P-p$j" ping -c 2 -i 0.2 -W 1 "${net3}99" >/dev/null 2>&1
  done
  capture_stop
  leaked="$(grep -F "$net3" "$WORK/crash.cap" | grep -c ICMP)"
  [ "$leaked" = 0 ] || { problems+=" $leaked clear ICMP packets to ${net3}0/24 on the underlay;"; grep -F "$net3" "$WORK/crash.cap" | head >>"$CASELOG"; }
  if [ -z "$problems" ]; then pass "node3 removed from every device; pings to its pod range fail with 0 clear packets on the underlay"
  else fail "$problems"; agent_logs 1 2; fi
fi

# ---------------------------------------------------------------------------------------------
# Bad input: one clear line on stderr, non-zero exit, the state directory unchanged.

# expect_refusal CASE-DETAIL STATE-DIR command...: runs the command in the spare namespace.
BAD_PROBLEMS=""
expect_refusal() { # what, state dir, wanted exit status ("2" for bad input, "nonzero" otherwise), command...
  local what=$1 dir=$2 want=$3; shift 3
  local before after rc lines
  before="$(snapshot "$dir")"
  timeout 30 ip netns exec "$P-n$SPARE" "$WM" "$@" >"$WORK/out" 2>"$WORK/err"; rc=$?
  after="$(snapshot "$dir")"
  lines="$(grep -c . "$WORK/err")"
  note "[$what] rc=$rc stderr: $(cat "$WORK/err")"
  BAD_MSGS+="[$what: exit $rc] $(head -n 1 "$WORK/err" | sed 's/^wiremesh: //') "
  [ -s "$WORK/out" ] && note "[$what] stdout: $(head -c 300 "$WORK/out")"
  if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then BAD_PROBLEMS+=" $what: exit $rc;"
  elif [ "$want" != nonzero ] && [ "$rc" != "$want" ]; then BAD_PROBLEMS+=" $what: exit $rc (want $want, bad input);"; fi
  [ "$lines" = 1 ] || BAD_PROBLEMS+=" $what: $lines stderr lines (want 1);"
  [ "$before" = "$after" ] || { BAD_PROBLEMS+=" $what: state dir changed;"; diff <(echo "$before") <(echo "$after") >>"$CASELOG"; }
}
bad_case() { # name, then the checks as a function
  begin "$1"; BAD_PROBLEMS=""; BAD_MSGS=""
  if [ "${NEED_AGENT1:-1}" = 1 ] && [ -z "${AGENT[1]:-}" ]; then fail "needs node 1's agent"; return; fi
  "$2"
  if [ -z "$BAD_PROBLEMS" ]; then pass "$BAD_MSGS"; else fail "$BAD_PROBLEMS"; fi
}
J=(--interface "${P}w$SPARE" --advertise-address "10.99.0.$SPARE" --control-socket "$WORK/x.sock")

EXPIRED="$(wm 1 token create --ttl 1s 2>>"$AGENT_LOGS/bad-expired-token.log")"
EXPIRED_AT=$(date +%s)

bad_revoked() {
  local created tok id
  created="$(wm 1 token create --ttl 10m --json)"
  tok="$(jq -r .token <<<"$created")"; id="$(jq -r .id <<<"$created")"
  note "revoking $id: $(wm 1 token revoke "$id" 2>&1)"
  # A refusal is not final for the joiner (it asks the token's next member), and the revocation takes
  # a gossip round to reach them: the join is tried once every running member lists it.
  revoked_on() { wm "$1" token list --json 2>/dev/null | jq -e --arg id "$id" '.[] | select(.id == $id and .state == "revoked")' >/dev/null; }
  local i
  for i in "${!AGENT[@]}"; do
    wait_until 10 revoked_on "$i" || { BAD_PROBLEMS+=" node$i does not list $id as revoked;"; return; }
  done
  expect_refusal "revoked token" "$WORK/x-revoked" 2 join "$tok" --name bad1 --state-dir "$WORK/x-revoked" "${J[@]}"
}
bad_revoked_elsewhere() {
  local created tok id
  # Issued on node 1, revoked on node 2: node 1 (the token's first endpoint) refuses it.
  created="$(wm 1 token create --ttl 10m --json)"
  tok="$(jq -r .token <<<"$created")"; id="$(jq -r .id <<<"$created")"
  known_on_2() { wm 2 token list --json 2>/dev/null | jq -e --arg id "$id" '.[] | select(.id == $id)' >/dev/null; }
  wait_until 10 known_on_2 || { BAD_PROBLEMS+=" node2 never listed token $id;"; return; }
  note "revoking $id on node 2: $(wm 2 token revoke "$id" 2>&1)"
  local t0; t0="$(now)"
  revoked_on_1() { wm 1 token list --json 2>/dev/null | jq -e --arg id "$id" '.[] | select(.id == $id and .state == "revoked")' >/dev/null; }
  wait_until 10 revoked_on_1 || { BAD_PROBLEMS+=" node1 does not list $id as revoked;"; return; }
  note "node1 lists the revocation $(since "$t0" 2) s after 'token revoke' on node 2 (polled every 0.2 s)"
  note "node1 lists: $(wm 1 token list --json | jq -c --arg id "$id" '.[] | select(.id == $id)')"
  expect_refusal "token revoked on another member" "$WORK/x-revoked2" 2 join "$tok" --name bad7 --state-dir "$WORK/x-revoked2" "${J[@]}"
  grep -q "revoked" "$WORK/err" || BAD_PROBLEMS+=" the refusal does not say revoked;"
}
bad_other_cluster() {
  local tok
  # A second cluster whose token names node 1's address: node 1 gets a token it did not issue. Made in
  # node 1's namespace (init checks that the advertise address is the host's; --prepare-only skips the ports).
  tok="$(ip netns exec "$P-n1" "$WM" init --name other1 --state-dir "$WORK/x-other" --control-socket "$WORK/x.sock" \
    --interface "${P}w$SPARE" --advertise-address 10.99.0.1 --prepare-only 2>>"$CASELOG")"
  [ -n "$tok" ] || { BAD_PROBLEMS+=" second init printed no token;"; return; }
  expect_refusal "other cluster's token" "$WORK/x-other2" 2 join "$tok" --name bad2 --state-dir "$WORK/x-other2" "${J[@]}"
}
bad_garbled() {
  local flipped i c
  expect_refusal "garbage token" "$WORK/x-garbled" 2 join "not-a-wiremesh-token" --name bad3 --state-dir "$WORK/x-garbled" "${J[@]}"
  # One character of a valid token changed (in the middle, where the payload is).
  i=$(( ${#TOKEN} / 2 )); c=A; [ "${TOKEN:i:1}" != A ] || c=B
  flipped="${TOKEN:0:i}$c${TOKEN:i+1}"
  expect_refusal "token with one character changed" "$WORK/x-garbled" 2 join "$flipped" --name bad3 --state-dir "$WORK/x-garbled" "${J[@]}"
  # A token of format 1 (before any member could admit): refused with what to do.
  expect_refusal "token of format 1" "$WORK/x-garbled" 2 join "wmj1.AQEBAQEBAQEBAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAAAAAAAAEJA" --name bad3 --state-dir "$WORK/x-garbled" "${J[@]}"
  grep -q "re-create the token" "$WORK/err" || BAD_PROBLEMS+=" the format-1 refusal does not say to re-create the token;"
}
bad_reinit() {
  [ -e "$WORK/x-other/cluster.json" ] || ip netns exec "$P-n1" "$WM" init --name other1 --state-dir "$WORK/x-other" \
    --control-socket "$WORK/x.sock" --interface "${P}w$SPARE" --advertise-address 10.99.0.1 --prepare-only >/dev/null 2>>"$CASELOG"
  expect_refusal "second init" "$WORK/x-other" 2 init --name again --state-dir "$WORK/x-other" --prepare-only "${J[@]}"
}
bad_pod_cidr() {
  local tok
  tok="$(wm 1 token create --ttl 10m 2>>"$CASELOG")"  # mesh_up's TOKEN has no use left
  expect_refusal "join --pod-cidr outside the cluster range" "$WORK/x-pod" 2 \
    join "$tok" --name bad4 --pod-cidr 10.99.0.0/24 --state-dir "$WORK/x-pod" "${J[@]}"
  expect_refusal "init --pod-cidr outside the cluster range" "$WORK/x-pod" 2 \
    init --name bad4 --cluster-cidr 10.244.0.0/16 --pod-cidr 10.99.0.0/24 --state-dir "$WORK/x-pod" --prepare-only "${J[@]}"
}
bad_port() {
  # Another process holds the gossip port (UDP and TCP) on the address the new node advertises.
  ip netns exec "$P-n$SPARE" python3 -c '
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("10.99.0.'$SPARE'", 7946))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("10.99.0.'$SPARE'", 7946)); t.listen(1)
print("bound", flush=True); time.sleep(120)' >"$WORK/blocker.out" 2>&1 &
  BLOCKER=$!
  wait_until 10 grep -q bound "$WORK/blocker.out" || { BAD_PROBLEMS+=" could not bind the blocker;"; return; }
  expect_refusal "join with the gossip port in use" "$WORK/x-port" nonzero join "$TOKEN" --name bad5 --state-dir "$WORK/x-port" "${J[@]}"
  expect_refusal "init with the gossip port in use" "$WORK/x-port" nonzero init --name bad5 --state-dir "$WORK/x-port" "${J[@]}"
  kill -9 "$BLOCKER" 2>/dev/null; wait "$BLOCKER" 2>/dev/null; BLOCKER=""
  for pid in $(netns_wg_go_pids "${P}w$SPARE"); do note "wireguard-go left running for ${P}w$SPARE (pid $pid)"; BAD_PROBLEMS+=" a wireguard-go was left running;"; kill "$pid"; done
}
bad_expired() {
  [ -n "$EXPIRED" ] || { BAD_PROBLEMS+=" token create --ttl 1s printed nothing;"; return; }
  while [ "$(date +%s)" -le $((EXPIRED_AT + 2)) ]; do sleep 0.2; done
  expect_refusal "expired token" "$WORK/x-expired" 2 join "$EXPIRED" --name bad6 --state-dir "$WORK/x-expired" "${J[@]}"
}

bad_case bad-revoked-token bad_revoked
bad_case bad-token-revoked-elsewhere bad_revoked_elsewhere
bad_case bad-other-cluster-token bad_other_cluster
bad_case bad-garbled-token bad_garbled
NEED_AGENT1=0 bad_case bad-second-init bad_reinit
bad_case bad-pod-cidr bad_pod_cidr
bad_case bad-port-in-use bad_port
bad_case bad-expired-token bad_expired
exit "$HARNESS_FAILED"
