#!/usr/bin/env bash
# Cluster (gossip) key rotation with one node down: a 4-node wiremesh cluster in network namespaces
# (one pod per node, nodes on a bridge, wireguard-go unless the kernel has WireGuard). Node 4's agent
# is killed (kill -9), `wiremesh cluster-key rotate` runs on node 2 while pods 1<->2 and 1<->3 ping
# each other, and the script waits until nodes 1-3 hold only the new key (`status --json`). Then
# node 4's agent starts again with its old keyring only: it must get the new key from a member (join
# history), be seen alive by every node, and its pod must ping every other pod.
#
#   scripts/e2e/cluster-key.sh [--grace S] [--pps P] [--keep]
#
# Prints "step: ..." lines to stderr and a final RESULT line, {"case": "cluster-key", "pass", "detail"} and: backend, old_key, new_key,
# rotated (nodes 1-3 hold only the new key), down_node_kept_old_keyring, pings_sent, pings_lost,
# rejoined (node 4 holds the new key, sees 3 live peers and is alive everywhere), rejoin_pings_ok,
# promoted_s, old_removed_s, rejoin_s; then node 3 rotates again and is killed (kill -9) right after,
# restarted, and all four must end with only that key: crash_converged, crash_converged_s. Before
# that, node 4 is partitioned away (underlay link down) while node 1 rotates and nodes 1-3 drop the
# old key; after the heal it must catch up: partition_caught_up, partition_caught_up_s. Exit status 0 when every check passed.
# Root. Everything it creates has a per-run prefix and is removed on exit (also on failure) unless --keep.
set -euo pipefail
GRACE=5
PPS=50
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --grace) GRACE="$2"; shift 2 ;;
    --pps) PPS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--grace S] [--pps P] [--keep]" >&2; exit 2 ;;
  esac
done
NODES=4
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg ping jq nft || exit 1
harness_start wmk
AGENT_ARGS=(--cluster-key-grace "${GRACE}s")
PINGS=()
INTERVAL="$(awk -v p="$PPS" 'BEGIN { printf "%.4f", 1 / p }')"

keys_of() { status_field "$1" 'cluster_keys | map(.id) | join(",")' 2>/dev/null; }
primary_of() { status_field "$1" 'cluster_keys[0].id' 2>/dev/null; }
# Partition node $1 from the others: every node drops what arrives from the other side (input only,
# so no sender sees a send error). `heal` removes the rules.
partition() {
  local i
  for i in $(seq 1 "$NODES"); do
    if [ "$i" = "$1" ]; then match="iifname eth0"; else match="ip saddr 10.99.0.$1"; fi
    ip netns exec "$P-n$i" nft -f - <<EOF2
table inet ${P}part {
  chain input { type filter hook input priority -10; policy accept; $match drop; }
}
EOF2
  done
}
heal() { local i; for i in $(seq 1 "$NODES"); do ip netns exec "$P-n$i" nft delete table inet "${P}part" 2>/dev/null || true; done; }

# ---------------------------------------------------------------------------------------------
# A 4-node cluster with one pod per node

netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done
mesh_up || exit 1
add_pods
BACKEND="$(status_field 1 backend)"
wait_until 40 all_alive || { log "the mesh did not converge"; exit 1; }
for j in 2 3 4; do wait_until 5 ping_ok 1 "$(pod "$j")" || { log "pod 1 cannot reach pod $j before the rotation"; exit 1; }; done
OLD="$(primary_of 1)"
log "4 nodes up on $BACKEND, cluster key $OLD"

# ---------------------------------------------------------------------------------------------
# Node 4 down, rotation on node 2 under pings, until nodes 1-3 hold only the new key

stop_agent 4 KILL
KEYRING4_BEFORE="$(sha256sum "$WORK/n4/keyring.json")"
log "agent 4 killed"
for j in 2 3; do
  ip netns exec "$P-p1" ping -n -q -i "$INTERVAL" -w 600 -W 2 "$(pod "$j")" >"$WORK/ping.1to$j" 2>&1 & PINGS+=($!)
  ip netns exec "$P-p$j" ping -n -q -i "$INTERVAL" -w 600 -W 2 "$(pod 1)" >"$WORK/ping.${j}to1" 2>&1 & PINGS+=($!)
done
sleep 1
t0="$(now)"
wm 2 cluster-key rotate >"$WORK/rotate.out" 2>&1 || { log "cluster-key rotate failed:"; cat "$WORK/rotate.out" >&2; exit 1; }
log "rotate: $(cat "$WORK/rotate.out")"
NEW="$(status_field 2 'cluster_keys | max_by(.generation) | .id')"
promoted() { local i; for i in 1 2 3; do [ "$(primary_of "$i")" = "$NEW" ] || return 1; done; }
only_new() { local i; for i in 1 2 3; do [ "$(keys_of "$i")" = "$NEW" ] || return 1; done; }
PROMOTED_S=null; REMOVED_S=null; ROTATED=false
if wait_until 90 promoted; then PROMOTED_S="$(since "$t0")"; log "new key $NEW primary on nodes 1-3 after $PROMOTED_S s"; fi
if wait_until $((GRACE + 60)) only_new; then
  REMOVED_S="$(since "$t0")"; ROTATED=true; log "old key $OLD removed on nodes 1-3 after $REMOVED_S s"
else
  log "nodes 1-3 hold: $(for i in 1 2 3; do printf '%s=[%s] ' "$i" "$(keys_of "$i")"; done)"
fi
for i in 1 2 3; do
  phase="$(status_field "$i" cluster_key_phase)"
  [ "$phase" = steady ] || { log "node $i is in phase $phase after the rotation"; ROTATED=false; }
  grep -q "$NEW" <<<"$(wm "$i" status)" || { log "node $i's status does not show the new key"; ROTATED=false; }
done
sleep 1
for pid in "${PINGS[@]}"; do kill -INT "$pid" 2>/dev/null; done
for pid in "${PINGS[@]}"; do wait "$pid" 2>/dev/null || true; done
PINGS=()
SENT=0; LOST=0
for f in "$WORK"/ping.*; do
  read -r tx lost < <(ping_sent_lost "$f")
  SENT=$((SENT + tx)); LOST=$((LOST + lost))
done
log "pings across the rotation: $LOST of $SENT lost"
KEPT_OLD=false
[ "$(sha256sum "$WORK/n4/keyring.json")" = "$KEYRING4_BEFORE" ] && KEPT_OLD=true

# ---------------------------------------------------------------------------------------------
# Node 4 comes back with the old key only: it must get back in

t1="$(now)"
start_agent 4 agent
wait_ready 4
rejoined() {
  [ "$(primary_of 4)" = "$NEW" ] && [ "$(alive_count 4)" -eq 3 ] || return 1
  local i; for i in 1 2 3; do [ "$(peer_state "$i" node4)" = alive ] || return 1; done
}
REJOINED=false; REJOIN_S=null
if wait_until $((GRACE + 60)) rejoined; then
  REJOINED=true; REJOIN_S="$(since "$t1")"; log "node 4 back in after $REJOIN_S s"
else
  log "node 4 not back: its keys [$(keys_of 4)], $(alive_count 4) live peers; others see it as $(for i in 1 2 3; do printf '%s ' "$(peer_state "$i" node4)"; done)"
  tail -n 30 "$WORK/agent4.log" >&2
fi
if [ "$REJOINED" = true ] && ! wait_until $((GRACE + 30)) eval '[ "$(keys_of 4)" = "$NEW" ]'; then
  log "node 4 still holds [$(keys_of 4)] after the grace period"; REJOINED=false
fi
[ -z "$(status_field 4 'cluster_key_problem // empty')" ] || { log "node 4 reports: $(status_field 4 cluster_key_problem)"; REJOINED=false; }
PINGS_OK=true
if [ "$REJOINED" = true ]; then
  for j in 1 2 3; do
    wait_until 20 ping_ok 4 "$(pod "$j")" || { log "pod 4 cannot reach pod $j"; PINGS_OK=false; }
    wait_until 20 ping_ok "$j" "$(pod 4)" || { log "pod $j cannot reach pod 4"; PINGS_OK=false; }
  done
else
  PINGS_OK=false
fi
grep -q "cluster keys fetched" "$WORK/agent4.log" || log "agent 4 did not log a keyring fetch"

# ---------------------------------------------------------------------------------------------
# Partition: node 4's underlay goes down, node 1 rotates, nodes 1-3 drop the old key; after the heal
# node 4 (old key only, agent running all along) catches up: gossip it cannot open makes it ask

PART_OK=false; PART_S=null
if [ "$REJOINED" = true ]; then
  partition 4
  log "node 4 partitioned away"
  wm 1 cluster-key rotate >"$WORK/rotate3.out" 2>&1 || { log "cluster-key rotate on node 1 failed:"; cat "$WORK/rotate3.out" >&2; exit 1; }
  NEW3="$(grep -o 'installed cluster key [0-9a-f]*' "$WORK/rotate3.out" | awk '{print $4}')"
  only_new3() { local i; for i in 1 2 3; do [ "$(keys_of "$i")" = "$NEW3" ] || return 1; done; }
  if wait_until $((GRACE + 60)) only_new3; then
    [ "$(keys_of 4)" != "$NEW3" ] || log "node 4 got $NEW3 through the partition?"
    heal 4
    t3="$(now)"
    log "nodes 1-3 hold only $NEW3; partition healed"
    caught_up() {
      [ "$(primary_of 4)" = "$NEW3" ] && [ "$(alive_count 4)" -eq 3 ] || return 1
      local i; for i in 1 2 3; do [ "$(peer_state "$i" node4)" = alive ] || return 1; done
    }
    if wait_until 90 caught_up && wait_until 20 ping_ok 4 "$(pod 1)" && wait_until 20 ping_ok 1 "$(pod 4)"; then
      PART_OK=true; PART_S="$(since "$t3")"; log "node 4 caught up $PART_S s after the heal"
      grep -q "reason=no live member while gossip fails authentication" "$WORK/agent4.log" \
        || { log "node 4 caught up, but not by asking for the keyring (its log has no such fetch)"; PART_OK=false; }
    else
      log "node 4 did not catch up: keys [$(keys_of 4)], $(alive_count 4) live peers"; tail -n 20 "$WORK/agent4.log" >&2
    fi
  else
    log "nodes 1-3 did not drop the old key while node 4 was away"
    heal 4
  fi
fi

# ---------------------------------------------------------------------------------------------
# Crash: kill -9 of the rotating agent right after it installed a new key; after its restart the
# rotation completes on all four nodes

t2="$(now)"
wm 3 cluster-key rotate >"$WORK/rotate2.out" 2>&1 || { log "second cluster-key rotate failed:"; cat "$WORK/rotate2.out" >&2; exit 1; }
stop_agent 3 KILL
NEW2="$(grep -o 'installed cluster key [0-9a-f]*' "$WORK/rotate2.out" | awk '{print $4}')"
log "agent 3 killed right after installing $NEW2; restarting it"
start_agent 3 agent
wait_ready 3
only_new2() { local i; for i in 1 2 3 4; do [ "$(keys_of "$i")" = "$NEW2" ] || return 1; done; }
CRASH_OK=false; CRASH_S=null
if [ -n "$NEW2" ] && wait_until $((GRACE + 60)) only_new2; then
  CRASH_S="$(since "$t2")"; log "after the crash, all 4 nodes hold only $NEW2 after $CRASH_S s"
  wait_until 20 ping_ok 3 "$(pod 1)" && wait_until 20 ping_ok 1 "$(pod 3)" && CRASH_OK=true || log "pods 1 and 3 do not ping after the crash"
else
  log "after the crash: $(for i in 1 2 3 4; do printf '%s=[%s] ' "$i" "$(keys_of "$i")"; done)"
fi

PASS=false
[ "$ROTATED" = true ] && [ "$KEPT_OLD" = true ] && [ "$REJOINED" = true ] && [ "$PINGS_OK" = true ] && [ "$NEW" != "$OLD" ] \
  && [ "$CRASH_OK" = true ] && [ "$PART_OK" = true ] && PASS=true
result cluster-key "$PASS" "$OLD -> $NEW: rotated $ROTATED, $LOST of $SENT pings lost, down node back in $REJOINED (pings $PINGS_OK), partitioned node caught up $PART_OK, converged after a crash $CRASH_OK" \
  "$(jq -cn --arg backend "$BACKEND" --arg old "$OLD" --arg new "$NEW" --argjson rotated "$ROTATED" \
    --argjson kept "$KEPT_OLD" --argjson sent "$SENT" --argjson lost "$LOST" --argjson rejoined "$REJOINED" \
    --argjson pings "$PINGS_OK" --argjson promoted "$PROMOTED_S" --argjson removed "$REMOVED_S" --argjson rejoin "$REJOIN_S" \
    --argjson crash "$CRASH_OK" --argjson crash_s "$CRASH_S" --argjson part "$PART_OK" --argjson part_s "$PART_S" \
    '{backend: $backend, old_key: $old, new_key: $new, rotated: $rotated, down_node_kept_old_keyring: $kept,
      pings_sent: $sent, pings_lost: $lost, rejoined: $rejoined, rejoin_pings_ok: $pings,
      promoted_s: $promoted, old_removed_s: $removed, rejoin_s: $rejoin, crash_converged: $crash,
      crash_converged_s: $crash_s, partition_caught_up: $part, partition_caught_up_s: $part_s}')"
exit "$HARNESS_FAILED"
