#!/usr/bin/env bash
# Eviction end to end (issue 10): a 4-node wiremesh cluster in network namespaces (one pod per node,
# wireguard-go unless the kernel has WireGuard), node 1 the authority (it ran `init`), agents with
# --cluster-key-grace 3s and a metrics endpoint. `wiremesh evict node4` runs on node 1. One line per case:
#   RESULT {"case": NAME, "pass": BOOL, "detail": TEXT, ...}
#
#   scripts/e2e/evict.sh [--keep]          (root; WIREMESH_BIN=path, default .build/debug/wiremesh)
#
# Cases:
#   peer-removed          node 4's WireGuard peer is gone from nodes 1-3 (`wg show`, the reference tool) within 10 s
#   listed-evicted        `wiremesh peers --json` on nodes 1-3 lists node4 with state "evicted"
#   honest-traffic        pods and overlay addresses of nodes 1-3 still reach each other
#   old-key-retired       nodes 1-3 end in phase steady holding only the new cluster key, which node 4 does not hold
#   restart-no-peer       node 4's agent restarted with its full state: no member has its key as a peer, no
#                         handshake with it completes, its pod reaches nobody
#   old-key-closed        while it runs, node 4's gossip (sealed with the retired key) is dropped by the members as
#                         bad_key (wiremesh_gossip_datagrams_dropped_total) and it sees no live member
#   old-token-refused     a token created on node 1 before the eviction admits nobody afterwards
#   member-token-refused  `wiremesh token create` on node 2 (not an authority) fails, saying so
#   rejoin-refused        node 4 leaves and joins again with a new token and its old identity (any name): refused
#   second-authority      node 1's authority.key copied (0600) into node 2's state directory, node 2's agent
#                         restarted: a token node 2 creates admits node 5, alive everywhere, its pod reaches pod 1
# Everything carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
NODES=4
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg wireguard-go ping jq python3 || exit 1
harness_start wme
GRACE=3
METRICS_PORT=9586
AGENT_ARGS=(--cluster-key-grace "${GRACE}s" --metrics-address "127.0.0.1:$METRICS_PORT" --log-format json)

keys_of() { status_field "$1" 'cluster_keys | map(.id) | join(",")' 2>/dev/null; }
# metric I NAME LABELS: the value of NAME{LABELS} on node I's metrics endpoint (0 when absent).
metric() {
  ip netns exec "$P-n$1" python3 -c 'import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
want = sys.argv[2] + ("{" + sys.argv[3] + "}" if sys.argv[3] else "")
print(next((l.split()[-1] for l in body.splitlines() if l.split(" ")[0] == want), "0"))' "$METRICS_PORT" "$2" "${3:-}" 2>/dev/null || echo 0
}
bad_key() { metric "$1" wiremesh_gossip_datagrams_dropped_total 'reason="bad_key"'; }
overlay() { status_field "$1" overlay_address; }
ns_ping() { ip netns exec "$P-n$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 || ip netns exec "$P-n$1" ping -c 2 -i 0.2 -W 2 "$2" >/dev/null 2>&1; }

netns_underlay "$P" || exit 1
for i in 1 2 3 4 5; do netns_node "$P" "$i" || exit 1; done
mesh_up || { result setup false "$MESH_ERROR"; exit 1; }
add_pods || { result setup false "pods"; exit 1; }
wait_until 40 all_alive || { result setup false "the mesh did not converge"; exit 1; }
for j in 2 3 4; do wait_until 10 ping_ok 1 "$(pod "$j")" || { result setup false "pod 1 cannot reach pod $j"; exit 1; }; done
KEY4="$(cat "$WORK/key4")"
for i in 1 2 3; do has_peer "$i" "$KEY4" || { result setup false "node $i has no peer for node 4 before the eviction"; exit 1; }; done
declare -A OV
for i in 1 2 3 4; do OV[$i]="$(overlay "$i")"; done
OLD_KEYS="$(keys_of 4)"
# A token handed out before the eviction (say, to node 4's operator).
(umask 077; wm 1 token create --ttl 10m --uses 5 >"$WORK/pre.token" 2>/dev/null)
[ -s "$WORK/pre.token" ] || { result setup false "token create on node 1 printed nothing"; exit 1; }
log "4 nodes up on $(status_field 1 backend), cluster key $OLD_KEYS"

# ---------------------------------------------------------------------------------------------
# The eviction

t0="$(now)"
if ! wm 1 evict node4 >"$WORK/evict.out" 2>&1; then
  result peer-removed false "wiremesh evict node4 failed: $(cat "$WORK/evict.out")"; exit 1
fi
log "evict: $(cat "$WORK/evict.out")"
declare -A GONE_S
gone_everywhere() {
  local i
  for i in 1 2 3; do
    if [ -z "${GONE_S[$i]:-}" ] && ! has_peer "$i" "$KEY4"; then GONE_S[$i]="$(since "$t0")"; fi
    [ -n "${GONE_S[$i]:-}" ] || return 1
  done
}
POLL=0.1 wait_until 15 gone_everywhere
PROBLEMS=""
for i in 1 2 3; do
  s="${GONE_S[$i]:-}"
  if [ -z "$s" ]; then PROBLEMS+=" node $i still has node 4's peer after 15 s;"
  elif ! awk -v s="$s" 'BEGIN { exit !(s <= 10) }'; then PROBLEMS+=" node $i removed it after $s s (> 10 s);"; fi
done
result_problems peer-removed "$PROBLEMS" "node 4's peer gone from nodes 1-3 after ${GONE_S[1]:-?} / ${GONE_S[2]:-?} / ${GONE_S[3]:-?} s" \
  "$(jq -cn --arg a "${GONE_S[1]:-}" --arg b "${GONE_S[2]:-}" --arg c "${GONE_S[3]:-}" '{removed_s: [$a, $b, $c]}')"

evicted_everywhere() { local i; for i in 1 2 3; do [ "$(peer_state "$i" node4)" = evicted ] || return 1; done; }
if wait_until 10 evicted_everywhere; then result listed-evicted true "nodes 1-3 list node4 as evicted"
else result listed-evicted false "node4's state on nodes 1-3: $(for i in 1 2 3; do printf '%s ' "$(peer_state "$i" node4)"; done)"; fi

PROBLEMS=""
for a in 1 2 3; do for b in 1 2 3; do
  [ "$a" = "$b" ] && continue
  wait_until 10 ping_ok "$a" "$(pod "$b")" || PROBLEMS+=" pod $a -> pod $b;"
  ns_ping "$a" "${OV[$b]}" || PROBLEMS+=" node $a -> overlay ${OV[$b]};"
done; done
result_problems honest-traffic "$PROBLEMS" "pods and overlay addresses of nodes 1-3 reach each other after the eviction"

# The cluster key moved on (the eviction rotated it) and the old one is retired after the grace period.
NEW=""
retired() {
  local i k
  NEW="$(status_field 1 'cluster_keys[0].id')"
  for i in 1 2 3; do
    k="$(keys_of "$i")"
    [ "$k" = "$NEW" ] && [ "$(status_field "$i" cluster_key_phase)" = steady ] || return 1
  done
  [[ ",$OLD_KEYS," != *",$NEW,"* ]]
}
if wait_until $((GRACE + 30)) retired; then
  N4="$(keys_of 4)"
  if [[ ",$N4," == *",$NEW,"* ]]; then result old-key-retired false "node 4 holds the new key $NEW ($N4)"
  else result old-key-retired true "nodes 1-3 hold only $NEW (phase steady) after $(since "$t0") s; node 4 holds $N4"; fi
else
  result old-key-retired false "nodes 1-3 hold: $(for i in 1 2 3; do printf '%s=[%s] ' "$i" "$(keys_of "$i")"; done)"
fi

# ---------------------------------------------------------------------------------------------
# Node 4's agent restarted with its full state

stop_agent 4
for i in 1 2 3; do BK0[$i]="$(bad_key "$i")"; done
sleep 1
t_restart="$(date +%s)"
start_agent 4 agent
wait_ready 4 || true
PROBLEMS=""
end=$(( $(date +%s) + 8 ))
while [ "$(date +%s)" -lt "$end" ]; do
  for i in 1 2 3; do
    if has_peer "$i" "$KEY4"; then PROBLEMS+=" node $i has node 4's key as a peer;"; break 2; fi
    if wg_dump "$i" | awk 'NR > 1 && $3 ~ /^10\.99\.0\.4:/ { f = 1 } END { exit !f }'; then
      PROBLEMS+=" node $i has a peer at node 4's endpoint;"; break 2
    fi
  done
  sleep 0.5
done
# Handshakes on node 4's own device: none completed since its restart.
late="$(ip netns exec "$P-n4" wg show "${P}w4" latest-handshakes 2>/dev/null | awk -v t="$t_restart" '$2 >= t { n++ } END { print n + 0 }')"
[ "$late" = 0 ] || PROBLEMS+=" $late handshakes on node 4 since its restart;"
! ping_ok 4 "$(pod 1)" || PROBLEMS+=" pod 4 reaches pod 1;"
result_problems restart-no-peer "$PROBLEMS" "8 s after node 4's restart: no member has it as a peer, no handshake, its pod reaches nobody"

PROBLEMS=""
for i in 1 2 3; do BK1[$i]="$(bad_key "$i")"; done
rise=0; for i in 1 2 3; do rise=$((rise + ${BK1[$i]%.*} - ${BK0[$i]%.*})); done
[ "$rise" -gt 0 ] || PROBLEMS+=" the members dropped none of node 4's gossip as bad_key (before ${BK0[*]}, after ${BK1[*]});"
live4="$(status_field 4 live_peers)"
[ "$live4" = 0 ] || PROBLEMS+=" node 4 sees $live4 live members;"
result_problems old-key-closed "$PROBLEMS" "node 4's gossip dropped as bad_key $rise times by nodes 1-3 while it ran; it sees $live4 live members" \
  "$(jq -cn --argjson r "$rise" '{bad_key_drops: $r}')"

# ---------------------------------------------------------------------------------------------
# Tokens after the eviction

joined_state() { [ -e "$WORK/n5/cluster.json" ]; }
if wm_node 5 join --token-file "$WORK/pre.token" --name node5 --prepare-only >"$WORK/join5a.out" 2>&1; then
  result old-token-refused false "a token created before the eviction still admits: $(cat "$WORK/join5a.out")"
elif joined_state; then
  result old-token-refused false "join failed but node 5's state was written"
else
  result old-token-refused true "refused: $(tail -1 "$WORK/join5a.out")"
fi

if out="$(wm 2 token create --ttl 10m 2>&1)"; then
  result member-token-refused false "token create on node 2 (no authority key) succeeded"
elif grep -qi "authority" <<<"$out"; then
  result member-token-refused true "$(tail -1 <<<"$out")"
else
  result member-token-refused false "failed without saying why: $out"
fi

# Node 4 leaves (its agent still runs), then joins again keeping its identity (a join after leave does).
PROBLEMS=""
wm 4 leave >"$WORK/leave4.out" 2>&1 || PROBLEMS+=" leave failed: $(cat "$WORK/leave4.out");"
POLL=0.2 wait_until 15 eval '! kill -0 "${AGENT[4]}" 2>/dev/null' || PROBLEMS+=" node 4's agent did not stop after leave;"
stop_agent 4 KILL
(umask 077; wm 1 token create --ttl 10m --uses 5 >"$WORK/new.token" 2>/dev/null)
for name in "" node4b; do
  args=(); [ -z "$name" ] || args=(--name "$name")
  if wm_node 4 join --token-file "$WORK/new.token" "${args[@]}" --prepare-only >"$WORK/join4.out" 2>&1; then
    PROBLEMS+=" node 4 joined again${name:+ as $name} with its old identity;"
  elif ! grep -qi evicted "$WORK/join4.out"; then
    PROBLEMS+=" refused${name:+ as $name}, but not as evicted: $(tail -1 "$WORK/join4.out");"
  fi
done
result_problems rejoin-refused "$PROBLEMS" "node 4's old identity is refused (evicted) under its name and another: $(tail -1 "$WORK/join4.out")"

# ---------------------------------------------------------------------------------------------
# A second authority: node 1's seed copied to node 2

PROBLEMS=""
install -m 600 "$WORK/n1/authority.key" "$WORK/n2/authority.key"
stop_agent 2
start_agent 2 agent
if ! wait_ready 2; then
  PROBLEMS+=" node 2's agent did not come back with the authority key;"
else
  wait_until 20 all_alive 1 2 3 || PROBLEMS+=" nodes 1-3 not all alive after node 2's restart;"
  if ! (umask 077; wm 2 token create --ttl 10m >"$WORK/t2.token" 2>"$WORK/token2.err") || [ ! -s "$WORK/t2.token" ]; then
    PROBLEMS+=" token create on node 2 failed: $(cat "$WORK/token2.err");"
  else
    rm -rf "$WORK/n5"
    start_agent 5 join --token-file "$WORK/t2.token" --name node5
    if ! wait_ready 5 20; then
      PROBLEMS+=" node 5 did not join with node 2's token: $(grep -i 'join' "$WORK/agent5.log" | tail -1);"
    else
      add_pod 5 || PROBLEMS+=" no pod on node 5;"
      five_alive() { local i; for i in 1 2 3; do [ "$(peer_state "$i" node5)" = alive ] || return 1; done; }
      wait_until 20 five_alive || PROBLEMS+=" node5 is $(for i in 1 2 3; do printf '%s ' "$(peer_state "$i" node5)"; done)on nodes 1-3;"
      wait_until 15 ping_ok 5 "$(pod 1)" || PROBLEMS+=" pod 5 cannot reach pod 1;"
      wait_until 15 ping_ok 1 "$(pod 5)" || PROBLEMS+=" pod 1 cannot reach pod 5;"
    fi
  fi
fi
result_problems second-authority "$PROBLEMS" "node 2 holds a copy of authority.key: its token admitted node 5 ($(cat "$WORK/cidr5" 2>/dev/null)), alive on nodes 1-3, pods reach each other"

exit "$HARNESS_FAILED"
