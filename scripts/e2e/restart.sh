#!/usr/bin/env bash
# Restarts must not cost traffic: a 3-node wiremesh cluster in network namespaces (one pod per node,
# nodes on a bridge, wireguard-go unless the kernel has WireGuard). The pod on node 2 pings the pod on
# node 1 at --pps (default 1000) while node 2's agent is down for --gap seconds (default 30), then
# started again (`wiremesh agent`, same state dir, no token):
#
#   stop        the agent gets SIGTERM (systemctl stop, an upgrade);
#   kill9       the agent gets kill -9 (a crash).
#
# In both the failure detector declares node 2 dead on node 1 within seconds, yet node 1 must keep its
# WireGuard peer (its data plane is alive: handshakes and received bytes), so no ping may be lost.
# Then node 2's host dies for real (agent and wireguard-go, kill -9) while pod 1 keeps sending to pod 2:
# nodes 1 and 3 must remove node 2's peer (measured: seconds from the kill), and pod 1's packets to
# pod 2 must never appear in clear on the underlay (fail closed; tcpdump on the bridge).
#
#   scripts/e2e/restart.sh [--gap S] [--pps P] [--keep]
#
# Prints progress on stderr and a final RESULT line on stdout: {"case": "restart", "pass", "detail"} and
# for "stop" and "kill9" each: sent, lost, dead_seen (node 1's gossip declared node 2 dead during the
# gap: the scenario happened), flood_s (how long ping took; flood_min_s at full rate: ping counts a
# send the kernel refused as neither sent nor lost, so an outage also stretches the flood), kept (node 2's key on node 1's device at every check during the gap),
# back_s (restart to node 2 alive on nodes 1 and 3), covered (the flood lasted past that),
# idle_removed_on_3 (node 3, which had no traffic with node 2, removed its peer during the gap; not
# judged: it depends on when node 3 last heard from node 2); then host_died_removed_s (max over nodes
# 1 and 3, null if not removed within 120 s), host_died_removed_s_by_node, clear_icmp (pod ICMP seen
# in clear on the underlay during that phase).
# Exit status 0 when every check passed (loss is reported; the caller judges it).
# Root. Everything it creates carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -euo pipefail
GAP=30
PPS=1000
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gap) GAP="$2"; shift 2 ;;
    --pps) PPS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--gap S] [--pps P] [--keep]" >&2; exit 2 ;;
  esac
done
[[ "$GAP" =~ ^[0-9]+$ ]] && [[ "$PPS" =~ ^[0-9]+$ ]] && [ "$PPS" -ge 1 ] \
  || { echo "restart: --gap and --pps take whole numbers (pps at least 1)" >&2; exit 2; }
NODES=3
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg ping jq tcpdump || exit 1
harness_start wmx
INTERVAL="$(awk -v p="$PPS" 'BEGIN { printf "%.6f", 1 / p }')"

# ---------------------------------------------------------------------------------------------
# The cluster: node 1 (init), nodes 2 and 3 (join), one pod each, everyone alive.
netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done
mesh_up || exit 1
add_pods
BACKEND="$(status_field 1 backend)"
KEY2="$(cat "$WORK/key2")"
wait_until 30 all_alive || { log "the mesh did not converge"; exit 1; }
for j in 2 3; do
  ip netns exec "$P-p1" ping -c 3 -i 0.2 -W 2 -q "$(pod "$j")" >/dev/null || { log "pod 1 cannot reach pod $j"; exit 1; }
done
log "mesh up ($BACKEND): 3 nodes, pods $(pod 1) $(pod 2) $(pod 3)"

# ---------------------------------------------------------------------------------------------
# stop / kill9: pod 2 -> pod 1 at $PPS while node 2's agent is down for $GAP s.
PRE=2    # flood seconds before the agent stops
POST=15  # flood seconds after it starts again: restart and rejoin fit well inside
CASES=()
ALL_OK=1
restart_case() { # name signal
  local name=$1 signal=$2 received flood_s count t_stop t_start t_back="" t_end flood dead_seen=0 kept=1 idle_removed=0 st back_s=null covered=0 out sent lost ok=1
  count=$((PPS * (PRE + GAP + POST)))
  # A count, not -w: with a deadline ping stops at the first ICMP error. It sends at most $PPS a
  # second, so the flood lasts at least PRE + GAP + POST seconds.
  ip netns exec "$P-p2" ping -n -q -i "$INTERVAL" -W 2 -c "$count" "$(pod 1)" >"$WORK/flood.$name" 2>&1 &
  flood=$!
  sleep "$PRE"
  t_stop="$(now)"
  stop_agent 2 "$signal"
  log "$name: node 2's agent stopped (SIG$signal) $(since "$t_stop") s after the signal; down for $GAP s"
  # During the gap: node 1's gossip says dead within seconds, its device keeps node 2's key.
  while within "$t_stop" "$GAP"; do
    st="$(peer_state 1 node2)"
    [ "$st" = dead ] && dead_seen=1
    has_peer 1 "$KEY2" || { [ "$kept" = 1 ] && log "$name: node 1 removed node 2's peer $(since "$t_stop") s into the gap (state $st)"; kept=0; }
    has_peer 3 "$KEY2" || idle_removed=1
    sleep 1
  done
  t_start="$(now)"
  start_agent 2 agent
  wait_ready 2 || true
  back() { [ "$(peer_state 1 node2)" = alive ] && [ "$(peer_state 3 node2)" = alive ] && [ "$(alive_count 2)" = 2 ]; }
  if wait_until 30 back; then t_back="$(now)"; back_s="$(since "$t_start")"; else log "$name: node 2 not alive everywhere 30 s after its restart"; ok=0; fi
  wait "$flood" || true
  t_end="$(now)"
  [ -n "$t_back" ] && [ "$(awk -v a="$t_end" -v b="$t_back" 'BEGIN { print (a > b) }')" = 1 ] && covered=1
  out="$(grep 'packets transmitted' "$WORK/flood.$name" || true)"
  sent="$(awk '{ print $1 }' <<<"$out")"; received="$(awk '{ print $4 }' <<<"$out")"
  # ping's own duration: a stretched one means sends were held back (an outage shows as few losses
  # and a long flood: the kernel refuses sends while the tunnel does not drain).
  flood_s="$(grep -o 'time [0-9]*ms' <<<"$out" | awk '{ printf "%.1f", $2 / 1000 }')"
  if [ -n "$sent" ] && [ -n "$received" ]; then lost=$((sent - received))
  else log "$name: no ping summary:"; cat "$WORK/flood.$name" >&2; sent=0; lost=0; ok=0; fi
  [ "$dead_seen" = 1 ] || log "$name: node 1 never listed node 2 as dead during the gap (the failure detector did not fire?)"
  [ "$covered" = 1 ] || { log "$name: the flood ended before node 2 was back: the measure does not cover the restart"; ok=0; }
  log "$name: lost $lost of $sent pings at $PPS pps in ${flood_s:-?} s (at least $((count / PPS)) s); node 2 dead on node 1: $(json_bool $dead_seen), kept on node 1's device: $(json_bool $kept), removed on node 3 (idle): $(json_bool $idle_removed); back after ${back_s} s"
  [ "$ok" = 1 ] || ALL_OK=0
  CASES+=("$(jq -cn --arg name "$name" --argjson sent "$sent" --argjson lost "$lost" --argjson dead "$(json_bool $dead_seen)" \
    --argjson kept "$(json_bool $kept)" --argjson back "$back_s" --argjson covered "$(json_bool $covered)" \
    --argjson idle "$(json_bool $idle_removed)" --argjson flood_s "${flood_s:-null}" --argjson min_s "$((count / PPS))" \
    '{($name): {sent: $sent, lost: $lost, flood_s: $flood_s, flood_min_s: $min_s, dead_seen: $dead, kept: $kept, back_s: $back, covered: $covered, idle_removed_on_3: $idle}}')")
}
restart_case stop TERM
sleep 2
restart_case kill9 KILL

# ---------------------------------------------------------------------------------------------
# host-died: node 2's agent and its wireguard-go die (kill -9) while pod 1 sends to pod 2.
ip netns exec "$P-p1" ping -n -q -i "$INTERVAL" -W 1 -c $((PPS * 200)) "$(pod 2)" >"$WORK/flood.died" 2>&1 &
FLOOD=$!
capture_start "$WORK/died.cap" "icmp and host $(pod 2)" || log "tcpdump did not start"
sleep 2
stop_agent 2 KILL
kill_wg_go "${P}w2"
t_died="$(now)"
declare -A REMOVED=()
deadline=120
while [ "${#REMOVED[@]}" -lt 2 ] && within "$t_died" "$deadline"; do
  for j in 1 3; do
    [ -z "${REMOVED[$j]:-}" ] && ! has_peer "$j" "$KEY2" && REMOVED[$j]="$(since "$t_died")"
  done
  sleep 0.5
done
# After the removal, pod 1's packets to pod 2 go into the interface and are dropped there.
sleep 2
# KILL where TERM does not do: the Swift runner starts this script with SIGTERM blocked, and children inherit it.
stop_proc "$FLOOD"
capture_stop
CLEAR="$(grep -c ICMP "$WORK/died.cap" || true)"
DIED_OK=1
for j in 1 3; do [ -n "${REMOVED[$j]:-}" ] || { log "host died: node $j still holds node 2's peer after $deadline s"; DIED_OK=0; }; done
[ "$CLEAR" = 0 ] || { log "host died: $CLEAR pod ICMP packets to $(pod 2) in clear on the underlay:"; head "$WORK/died.cap" >&2; DIED_OK=0; }
removed_max=null
[ "${#REMOVED[@]}" != 2 ] || removed_max="$(printf '%s\n' "${REMOVED[@]}" | sort -g | tail -1)"
log "host died: node 2's peer removed from node 1 after ${REMOVED[1]:-never} s, from node 3 after ${REMOVED[3]:-never} s; $CLEAR pod ICMP in clear"
[ "$DIED_OK" = 1 ] || ALL_OK=0

cases="$(printf '%s\n' "${CASES[@]}" | jq -cs add)"
result restart "$ALL_OK" "$(jq -r '[to_entries[] | "\(.key): lost \(.value.lost) of \(.value.sent), kept \(.value.kept), back after \(.value.back_s) s"] | join("; ")' <<<"$cases"); host died: removed after $removed_max s, $CLEAR pod ICMP in clear" \
  "$(jq -cn --arg backend "$BACKEND" --argjson pps "$PPS" --argjson gap "$GAP" --argjson removed "$removed_max" \
    --argjson r1 "${REMOVED[1]:-null}" --argjson r3 "${REMOVED[3]:-null}" --argjson clear "$CLEAR" --argjson cases "$cases" \
    '{backend: $backend, pps: $pps, gap_s: $gap} + $cases
     + {host_died_removed_s: $removed, host_died_removed_s_by_node: {node1: $r1, node3: $r3}, clear_icmp: $clear}')"
exit "$HARNESS_FAILED"
