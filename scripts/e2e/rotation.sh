#!/usr/bin/env bash
# Key rotation end to end: an N-node wiremesh cluster in network namespaces (one pod per node, nodes
# on a bridge, wireguard-go unless the kernel has WireGuard), then one scenario (--case):
#
#   load        `rotate-key` on wm 1 under ping floods both ways between its pod and every other pod,
#               plus an iperf3 TCP stream; every peer must end with only the new key (default case).
#   crash       node 1's agent is killed (kill -9) at each phase of `rotate-key` (WM_FAULT_PAUSE_AT
#               stops it there) and restarted; each time the mesh must converge: every device holds
#               exactly the key each node's state names, pods ping both ways, the state lost no key
#               and holds no half-written file. A last `rotate-key` after the restarts must complete.
#   concurrent  nodes 1 and 2 run `rotate-key` at the same moment, under ping floods.
#   partition   node N's underlay is cut (nftables inside its namespace), wm 1 rotates, the cut
#               heals: node N must catch up (new key on its device, pods ping both ways).
#   scheduled   wm 1 runs with --key-rotation-interval 20s: it must rotate by itself, under ping
#               floods; `status` shows key age and next rotation, and a restart keeps the schedule.
#
#   scripts/e2e/rotation.sh [--case C] [--nodes N] [--rotations R] [--pps P] [--stream-seconds S] [--flood-seconds S] [--keep]
#
# Case load: pings run max(S, --flood-seconds (4)) seconds per flow; the rotation starts 1.5 s in. Its
# RESULT also holds rotate_s (how long each rotate-key command took) and agent_ms (the agent's phase
# timings per rotation, from its log).
#
# Prints progress on stderr and a final RESULT line on stdout: {"case": C, "pass", "detail"} and the
# case's keys (below).
# Exit status: 0 when the case's checks passed (loss is reported; the caller judges it).
# Root. Everything it creates carries a per-run prefix and is removed on exit (also on failure),
# unless --keep.
set -euo pipefail
CASE=load
NODES=""
ROTATIONS=1
PPS=200
STREAM=6
FLOOD=4
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --case) CASE="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    --rotations) ROTATIONS="$2"; shift 2 ;;
    --pps) PPS="$2"; shift 2 ;;
    --stream-seconds) STREAM="$2"; shift 2 ;;
    --flood-seconds) FLOOD="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--case load|crash|concurrent|partition|scheduled] [--nodes N] [--rotations R] [--pps P] [--stream-seconds S] [--flood-seconds S] [--keep]" >&2; exit 2 ;;
  esac
done
case "$CASE" in
  load) NODES="${NODES:-4}" ;;
  crash|concurrent|partition|scheduled) NODES="${NODES:-3}" ;;
  *) echo "rotation: unknown --case '$CASE': use load, crash, concurrent, partition or scheduled" >&2; exit 2 ;;
esac
[ "$NODES" -ge 2 ] || { echo "rotation: --nodes must be at least 2" >&2; exit 2; }
[ "$CASE" != concurrent ] && [ "$CASE" != partition ] || [ "$NODES" -ge 3 ] \
  || { echo "rotation: --case $CASE needs --nodes 3 or more" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg ping iperf3 jq nft || exit 1
harness_start wmr
# --keep leaves the whole run (namespaces, agents) for a look.
if [ "$KEEP" = 1 ]; then trap - EXIT INT TERM; log "--keep: remove with 'ip netns | grep $P'"; fi
INTERVAL="$(awk -v p="$PPS" 'BEGIN { printf "%.4f", 1 / p }')"

netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done

# WM_FAULT_PAUSE_AT=phase start_agent ...: the crash hook, armed for that start.
NODE1_ARGS=()
[ "$CASE" = scheduled ] && NODE1_ARGS=(--key-rotation-interval 20s)
mesh_up "${NODE1_ARGS[@]}" || exit 1
add_pods
BACKEND="$(status_field 1 backend)"

# Converged: every node sees every other alive, and node 1's pod reaches every pod and back.
wait_until 30 all_alive || { log "the mesh did not converge"; exit 1; }
POD1="$(pod 1)"; CIDR1="$(cat "$WORK/cidr1")"
for j in $(seq 2 "$NODES"); do
  ip netns exec "$P-p1" ping -c 3 -i 0.2 -W 2 -q "$(pod "$j")" >/dev/null \
    || { log "pod 1 cannot reach pod $j before the rotation"; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# Checks shared by the cases

# The key that currently owns node 1's pod CIDR on peer j.
owner_on() { wg_dump "$1" | awk -v c="$CIDR1" 'NR > 1 { n = split($4, a, ","); for (k = 1; k <= n; k++) if (a[k] == c) print $1 }'; }
# The public key node i's state names (the truth a restart starts from; readable with the agent down).
state_key() { "$WM" pubkey <"$WORK/n$1/wireguard.key"; }
# Exactly the other nodes' state keys on node i's device, each once, and its own key the state's.
keys_exact() { # i
  local i=$1 j want have
  want="$(for j in $(seq 1 "$NODES"); do [ "$j" = "$i" ] || state_key "$j"; done | sort)"
  have="$(wg_dump "$i" | awk 'NR > 1 { print $1 }' | sort)"
  [ "$want" = "$have" ] && [ "$(ip netns exec "$P-n$i" wg show "${P}w$i" public-key)" = "$(state_key "$i")" ]
}
mesh_keys_exact() { local i; for i in $(seq 1 "$NODES"); do keys_exact "$i" || return 1; done; }
# Waits up to $1 s for every device to hold exactly the state keys; prints the seconds it took.
wait_keys_exact() { # timeout
  local t0; t0="$(now)"
  while ! mesh_keys_exact; do
    within "$t0" "$1" || return 1
    sleep 0.1
  done
  since "$t0" 3
}
show_keys() { local i; for i in $(seq 1 "$NODES"); do log "node $i: state key $(state_key "$i"); device:"; wg_dump "$i" | awk 'NR > 1 { print "    " $1, $4 }' >&2; done; }
# Pods i and j ping each other (a few tries: a fresh handshake may be under way).
pods_ping() { # i j
  local a ok
  for a in "$1 $2" "$2 $1"; do
    set -- $a; ok=0
    for _ in 1 2 3; do
      ip netns exec "$P-p$1" ping -c 3 -i 0.2 -W 2 -q "$(pod "$2")" >/dev/null 2>&1 && { ok=1; break; }
    done
    [ "$ok" = 1 ] || { log "pod $1 cannot reach pod $2"; return 1; }
  done
}
all_pods_ping() { local i j; for i in $(seq 1 "$NODES"); do for j in $(seq $((i + 1)) "$NODES"); do pods_ping "$i" "$j" || return 1; done; done; }
# A state directory with no temporary file left and a parsable key in every key file.
state_clean() { # i
  local d="$WORK/n$1" f
  if [ -n "$(find "$d" -mindepth 1 -maxdepth 1 -name '*.tmp-*')" ]; then log "node $1's state holds a temporary file: $(ls -A "$d" | tr '\n' ' ')"; return 1; fi
  for f in "$d"/*.key; do "$WM" pubkey <"$f" >/dev/null 2>&1 || { log "state file $f is not a key"; return 1; }; done
}
# Ping floods between pod a and pod b both ways, $2 seconds at $PPS; results in $WORK/ping.TAG.*.
FLOODS=()
flood() { # tag seconds a b
  local count; count=$(awk -v p="$PPS" -v s="$2" 'BEGIN { printf "%d", p * s }')
  ip netns exec "$P-p$3" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$(pod "$4")" >"$WORK/ping.$1.${3}to$4" 2>&1 &
  FLOODS+=($!)
  ip netns exec "$P-p$4" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$(pod "$3")" >"$WORK/ping.$1.${4}to$3" 2>&1 &
  FLOODS+=($!)
}
# Waits for the floods and sets LOST (packets) and LOST_DETAIL (per flow) for tag.
flood_result() { # tag
  local f tx lost
  for pid in "${FLOODS[@]}"; do wait "$pid" || true; done
  FLOODS=()
  LOST=0; LOST_DETAIL=""; SENT=0
  for f in "$WORK"/ping.$1.*; do
    read -r tx lost < <(ping_sent_lost "$f")
    LOST=$((LOST + lost)); SENT=$((SENT + tx))
    LOST_DETAIL="$LOST_DETAIL ${f##*.}=$lost"
  done
}

# ---------------------------------------------------------------------------------------------
# Case "load"
case_load() {
  LOSSES=()
  SWITCHED=()
  ROTATE_S=()
  AGENT_MS=()
  STREAM_OK=1
  KEYS_OK=1
  for r in $(seq 1 "$ROTATIONS"); do
    OLD="$(wm 1 status --json | jq -r .public_key)"
    flood_s=$(awk -v s="$STREAM" -v f="$FLOOD" 'BEGIN { print (s > f ? s : f) }')
    count=$(awk -v p="$PPS" -v s="$flood_s" 'BEGIN { printf "%d", p * s }')
    PINGS=()
    for j in $(seq 2 "$NODES"); do
      podj="$(pod "$j")"
      ip netns exec "$P-p1" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$podj" >"$WORK/ping.$r.1to$j" 2>&1 &
      PINGS+=($!)
      ip netns exec "$P-p$j" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$POD1" >"$WORK/ping.$r.${j}to1" 2>&1 &
      PINGS+=($!)
    done
    IPERF=""
    if [ "$r" = 1 ] && [ "$STREAM" -gt 0 ]; then
      ip netns exec "$P-p2" iperf3 -s -1 -p 5201 >"$WORK/iperf-server.log" 2>&1 &
      sleep 0.3
      ip netns exec "$P-p1" iperf3 -c "$(pod 2)" -p 5201 -t "$STREAM" -b 50M --connect-timeout 3000 -J \
        >"$WORK/iperf.json" 2>"$WORK/iperf.err" &
      IPERF=$!
    fi
    sleep 1.5
    t0="$(now)"
    wm 1 rotate-key >"$WORK/rotate.$r.out" 2>&1 &
    ROT=$!
    # Time until every peer routes node 1's pod CIDR to a key other than the old one: one poller per
    # peer, each polling only its own peer's device (one pass over all peers in turn takes ~100 ms with
    # 10 peers on a loaded machine, which made the last peer look late by up to a pass). A poller
    # records the end of the first poll that saw the switch (an upper bound).
    POLLERS=()
    for j in $(seq 2 "$NODES"); do
      ( for _ in $(seq 1 3000); do
          o="$(nsenter --net="/run/netns/$P-n$j" wg show "${P}w$j" dump \
               | awk -v c="$CIDR1" 'NR > 1 { n = split($4, a, ","); for (k = 1; k <= n; k++) if (a[k] == c) print $1 }')"
          if [ -n "$o" ] && [ "$o" != "$OLD" ]; then now >"$WORK/switched.$r.$j"; exit 0; fi
          sleep 0.005
        done; exit 1 ) &
      POLLERS+=($!)
    done
    if ! wait "$ROT"; then log "rotation $r: rotate-key failed:"; cat "$WORK/rotate.$r.out" >&2; exit 1; fi
    t_cmd="$(now)"
    t_all=""
    for pid in "${POLLERS[@]}"; do wait "$pid" || true; done
    for j in $(seq 2 "$NODES"); do
      if [ ! -e "$WORK/switched.$r.$j" ]; then
        log "rotation $r: peer $j still routes pod 1 to the old key after 30 s"; KEYS_OK=0; t_all=""; break
      fi
      t="$(cat "$WORK/switched.$r.$j")"
      if [ -z "$t_all" ] || [ "$(awk -v a="$t" -v b="$t_all" 'BEGIN { print (a > b) }')" = 1 ]; then t_all="$t"; fi
    done
    for pid in "${PINGS[@]}"; do wait "$pid" || true; done
    if [ -n "$IPERF" ]; then
      if wait "$IPERF" && jq -e '.end.sum_received.bytes > 0' "$WORK/iperf.json" >/dev/null; then
        log "TCP stream: $(jq -r '"\(.end.sum_received.bytes) bytes received, \(.end.sum_sent.retransmits) retransmits"' "$WORK/iperf.json")"
      else
        STREAM_OK=0; log "TCP stream did not complete:"; cat "$WORK/iperf.err" "$WORK/iperf.json" >&2 || true
      fi
    fi
    lost=0
    detail=""
    for f in "$WORK"/ping.$r.*; do
      read -r _ flow_lost < <(ping_sent_lost "$f")
      lost=$((lost + flow_lost))
      detail="$detail ${f##*.}=$flow_lost"
    done
    NEW="$(wm 1 status --json | jq -r .public_key)"
    sw="null"
    [ -n "$t_all" ] && sw="$(elapsed "$t0" "$t_all" 3)"
    LOSSES+=("$lost")
    SWITCHED+=("$sw")
    ROTATE_S+=("$(elapsed "$t0" "$t_cmd" 3)")
    # The agent's own phase timings: "rotated WireGuard key" log line, metadata name_ms=N.
    AGENT_MS+=("$(grep 'rotated WireGuard key' "$WORK/agent1.log" | tail -n 1 | grep -o '[a-z_]*_ms=[0-9]*' \
      | jq -R 'split("=") | {(.[0]): (.[1] | tonumber)}' | jq -cs 'add')")
    echo "rotation $r: $(cat "$WORK/rotate.$r.out")"
    echo "rotation $r: agent phases ${AGENT_MS[-1]}; rotate-key took ${ROTATE_S[-1]} s"
    echo "rotation $r: lost $lost of $((count * 2 * (NODES - 1))) pings at $PPS pps per direction (lost per flow:$detail); all peers switched after ${sw} s"

    # Keys: node 1's device has the new key; every peer ends with exactly one entry for node 1, the new key.
    [ "$NEW" != "$OLD" ] || { log "rotation $r: the public key did not change"; KEYS_OK=0; }
    [ "$(ip netns exec "$P-n1" wg show "${P}w1" public-key)" = "$NEW" ] || { log "node 1's device does not use the new key"; KEYS_OK=0; }
    for j in $(seq 2 "$NODES"); do
      done_j=0
      for _ in $(seq 1 100); do
        keys="$(wg_dump "$j" | awk 'NR > 1 { print $1 }')"
        if ! grep -qx -- "$OLD" <<<"$keys" && grep -qx -- "$NEW" <<<"$keys" \
           && [ "$(wc -l <<<"$keys")" -eq $((NODES - 1)) ] && [ "$(owner_on "$j")" = "$NEW" ]; then
          done_j=1; break
        fi
        sleep 0.2
      done
      if [ "$done_j" = 0 ]; then
        log "rotation $r: node $j's device does not hold exactly the new key for node 1:"; wg_dump "$j" >&2; KEYS_OK=0
      fi
    done
  done

  median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
  max() { printf '%s\n' "$@" | sort -n | tail -1; }
  sw_max="$(printf '%s\n' "${SWITCHED[@]}" | grep -v null | sort -n | tail -1)"
  local pass=false
  [ "$STREAM_OK" = 1 ] && [ "$KEYS_OK" = 1 ] && pass=true
  result load "$pass" "lost ${LOSSES[*]} packets; all peers switched after ${SWITCHED[*]} s; stream ok $(json_bool "$STREAM_OK"), keys ok $(json_bool "$KEYS_OK")" \
   "$(jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson rotations "$ROTATIONS" --argjson pps "$PPS" \
    --argjson lost "[$(IFS=,; echo "${LOSSES[*]}")]" --argjson switched "[$(IFS=,; echo "${SWITCHED[*]}")]" \
    --argjson median "$(median "${LOSSES[@]}")" --argjson lmax "$(max "${LOSSES[@]}")" \
    --argjson swmax "${sw_max:-null}" --argjson stream "$([ "$STREAM_OK" = 1 ] && echo true || echo false)" \
    --argjson keys "$([ "$KEYS_OK" = 1 ] && echo true || echo false)" \
    --argjson rotate_s "[$(IFS=,; echo "${ROTATE_S[*]}")]" --argjson agent_ms "[$(IFS=,; echo "${AGENT_MS[*]}")]" \
    '{case: "load", backend: $backend, nodes: $nodes, rotations: $rotations, pps: $pps, lost: $lost, lost_packets_median: $median,
      lost_packets_max: $lmax, all_peers_switched_s: $switched, all_peers_switched_s_max: $swmax,
      stream_ok: $stream, keys_ok: $keys, rotate_s: $rotate_s, agent_ms: $agent_ms}')"
  [ "$pass" = true ]
}

# ---------------------------------------------------------------------------------------------
# Case "crash": kill -9 of node 1's agent at each phase of rotate-key, restart, converge.
case_crash() {
  local phases=(pending-saved prepared promoted switched published)
  local k phase old cur pending prev_pending="" ok all_ok=1 conv reason results=() rot
  # Restart wm 1 armed at the first phase (SIGTERM is not a leave: peers keep it).
  stop_agent 1
  WM_FAULT_PAUSE_AT="${phases[0]}" start_agent 1 agent
  wait_ready 1
  for k in "${!phases[@]}"; do
    phase="${phases[$k]}"; ok=1; reason=""; conv=null
    old="$(state_key 1)"
    wm 1 rotate-key >"$WORK/crash.$phase.out" 2>&1 &
    rot=$!
    local paused=0
    for _ in $(seq 1 300); do
      grep -q "rotation paused at $phase" "$WORK/agent1.log" && { paused=1; break; }
      sleep 0.1
    done
    [ "$paused" = 1 ] || { ok=0; reason="the agent never paused at $phase"; }
    stop_agent 1 KILL
    wait "$rot" 2>/dev/null || true   # the CLI loses its agent and fails
    # Right after the crash: the state names one whole key, and the pending key if the switch had not begun.
    cur="$(state_key 1)"
    pending=""
    [ -f "$WORK/n1/wireguard-next.key" ] && pending="$("$WM" pubkey <"$WORK/n1/wireguard-next.key")"
    case "$phase" in
      pending-saved|prepared)
        [ "$cur" = "$old" ] && [ -n "$pending" ] && [ "$pending" != "$old" ] \
          || { ok=0; reason="${reason:+$reason; }after a crash before the switch the state must keep the old key and the pending one (key changed: $([ "$cur" != "$old" ] && echo yes || echo no), pending: ${pending:-none})"; }
        # A pending key left by an earlier crash is reused, never replaced: a peer may know it.
        [ -z "$prev_pending" ] || [ "$pending" = "$prev_pending" ] \
          || { ok=0; reason="${reason:+$reason; }the pending key left by the previous crash was replaced"; }
        prev_pending="$pending" ;;
      *)
        [ "$cur" != "$old" ] && [ -z "$pending" ] \
          || { ok=0; reason="${reason:+$reason; }after a crash past the promotion the state must name the new key alone (key changed: $([ "$cur" != "$old" ] && echo yes || echo no), pending: ${pending:-none})"; }
        [ -z "$prev_pending" ] || [ "$cur" = "$prev_pending" ] \
          || { ok=0; reason="${reason:+$reason; }the new key is not the pending key the crashed rotation had announced"; }
        prev_pending="" ;;
    esac
    state_clean 1 || { ok=0; reason="${reason:+$reason; }state directory not clean"; }
    # Restart, armed at the next phase (none after the last).
    WM_FAULT_PAUSE_AT="${phases[$((k + 1))]:-}" start_agent 1 agent
    wait_ready 1
    if conv="$(wait_keys_exact 30)"; then :; else
      conv=null; ok=0; reason="${reason:+$reason; }devices do not hold exactly the state keys 30 s after the restart"; show_keys
    fi
    all_pods_ping || { ok=0; reason="${reason:+$reason; }pods do not ping both ways after the restart"; }
    log "crash at $phase: $([ "$ok" = 1 ] && echo ok || echo "FAILED: $reason"); converged after ${conv} s"
    [ "$ok" = 1 ] || all_ok=0
    results+=("$(jq -cn --arg phase "$phase" --argjson ok "$(json_bool "$ok")" --argjson conv "$conv" --arg reason "$reason" \
      '{phase: $phase, ok: $ok, converged_s: $conv, reason: $reason}')")
  done
  # After all the crashes a plain rotation still completes and converges.
  local final_ok=1 final_reason=""
  old="$(state_key 1)"
  wm 1 rotate-key >"$WORK/crash.final.out" 2>&1 || { final_ok=0; final_reason="rotate-key failed: $(cat "$WORK/crash.final.out")"; }
  [ "$(state_key 1)" != "$old" ] || { final_ok=0; final_reason="${final_reason:+$final_reason; }the key did not change"; }
  wait_keys_exact 30 >/dev/null || { final_ok=0; final_reason="${final_reason:+$final_reason; }devices do not converge"; show_keys; }
  all_pods_ping || { final_ok=0; final_reason="${final_reason:+$final_reason; }pods do not ping both ways"; }
  log "rotation after the crashes: $([ "$final_ok" = 1 ] && echo ok || echo "FAILED: $final_reason")"
  local pass=false
  [ "$all_ok" = 1 ] && [ "$final_ok" = 1 ] && pass=true
  result crash "$pass" "phases: $(jq -r 'map("\(.phase) \(if .ok then "ok" else .reason end)") | join(", ")' <<<"[$(IFS=,; echo "${results[*]}")]"); rotation after the crashes: $([ "$final_ok" = 1 ] && echo ok || echo "$final_reason")" \
   "$(jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson phases "[$(IFS=,; echo "${results[*]}")]" \
    --argjson final "$(json_bool "$final_ok")" --arg final_reason "$final_reason" \
    '{case: "crash", backend: $backend, nodes: $nodes, phases: $phases, final_rotation_ok: $final,
      final_reason: $final_reason}')"
  [ "$pass" = true ]
}

# ---------------------------------------------------------------------------------------------
# Case "concurrent": nodes 1 and 2 rotate at the same moment, under ping floods between all pods.
case_concurrent() {
  local old1 old2 i j r1=0 r2=0 rotate_ok=1 changed=1 conv pings=1
  old1="$(state_key 1)"; old2="$(state_key 2)"
  for i in $(seq 1 "$NODES"); do for j in $(seq $((i + 1)) "$NODES"); do flood c 6 "$i" "$j"; done; done
  sleep 1.5
  wm 1 rotate-key >"$WORK/rotate.c1.out" 2>&1 & r1=$!
  wm 2 rotate-key >"$WORK/rotate.c2.out" 2>&1 & r2=$!
  wait "$r1" || { rotate_ok=0; log "rotate-key on wm 1 failed: $(cat "$WORK/rotate.c1.out")"; }
  wait "$r2" || { rotate_ok=0; log "rotate-key on wm 2 failed: $(cat "$WORK/rotate.c2.out")"; }
  log "node 1: $(cat "$WORK/rotate.c1.out")"; log "node 2: $(cat "$WORK/rotate.c2.out")"
  flood_result c
  [ "$(state_key 1)" != "$old1" ] && [ "$(state_key 2)" != "$old2" ] || { changed=0; log "a key did not change"; }
  conv="$(wait_keys_exact 30)" || { conv=null; show_keys; }
  all_pods_ping || pings=0
  log "concurrent: lost $LOST of $SENT pings at $PPS pps per direction (per flow:$LOST_DETAIL); converged after $conv s"
  local pass=false
  [ "$rotate_ok" = 1 ] && [ "$changed" = 1 ] && [ "$conv" != null ] && [ "$pings" = 1 ] && pass=true
  result concurrent "$pass" "lost $LOST of $SENT; rotate ok $(json_bool "$rotate_ok"), keys changed $(json_bool "$changed"), converged after $conv s, pings ok $(json_bool "$pings")" \
   "$(jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson pps "$PPS" --argjson lost "$LOST" --argjson sent "$SENT" \
    --argjson rotate "$(json_bool "$rotate_ok")" --argjson changed "$(json_bool "$changed")" --argjson conv "$conv" \
    --argjson pings "$(json_bool "$pings")" \
    '{case: "concurrent", backend: $backend, nodes: $nodes, pps: $pps, lost: $lost, sent: $sent, rotate_ok: $rotate,
      keys_changed: $changed, converged_s: $conv, pings_ok: $pings}')"
  [ "$pass" = true ]
}

# ---------------------------------------------------------------------------------------------
# Case "partition": node N is cut off (its underlay dropped inside its namespace), wm 1 rotates,
# the cut heals after CUT seconds (longer than the failure detection, so N is declared dead on both
# sides); node N must catch up with node 1's new key.
case_partition() {
  local n="$NODES" cut_s=12 old new t_cut t_heal j others=1 rotate_ok=1 caught=null stale=0 pings=1 conv
  old="$(state_key 1)"
  ip netns exec "$P-n$n" nft -f - <<'NFT'
table inet wmcut {
  chain in { type filter hook input priority 0; policy accept; iifname "eth0" drop; }
  chain out { type filter hook output priority 0; policy accept; oifname "eth0" drop; }
}
NFT
  t_cut="$(now)"
  sleep 1
  wm 1 rotate-key >"$WORK/rotate.p.out" 2>&1 || { rotate_ok=0; log "rotate-key failed: $(cat "$WORK/rotate.p.out")"; }
  log "node 1: $(cat "$WORK/rotate.p.out")"
  new="$(state_key 1)"
  [ "$new" != "$old" ] || { rotate_ok=0; log "the key did not change"; }
  # The connected peers move at once.
  for j in $(seq 2 $((n - 1))); do
    for _ in $(seq 1 50); do [ "$(owner_on "$j")" = "$new" ] && break; sleep 0.1; done
    [ "$(owner_on "$j")" = "$new" ] || { others=0; log "node $j did not move to node 1's new key"; }
  done
  # The cut-off node cannot know yet.
  [ "$(owner_on "$n")" = "$new" ] && stale=0 || stale=1
  while within "$t_cut" "$cut_s"; do sleep 0.2; done
  ip netns exec "$P-n$n" nft delete table inet wmcut
  t_heal="$(now)"
  for _ in $(seq 1 600); do
    [ "$(owner_on "$n")" = "$new" ] && { caught="$(since "$t_heal" 3)"; break; }
    sleep 0.1
  done
  [ "$caught" != null ] || { log "node $n still does not route node 1's pod CIDR to the new key 60 s after the heal"; wg_dump "$n" >&2; }
  conv="$(wait_keys_exact 30)" || { conv=null; show_keys; }
  all_pods_ping || pings=0
  log "partition: node $n caught up ${caught} s after the heal; all devices exact after another ${conv} s"
  local pass=false
  [ "$rotate_ok" = 1 ] && [ "$others" = 1 ] && [ "$caught" != null ] && [ "$conv" != null ] && [ "$pings" = 1 ] && pass=true
  result partition "$pass" "rotate ok $(json_bool "$rotate_ok"), connected peers switched $(json_bool "$others"), cut peer caught up after $caught s, converged after $conv s, pings ok $(json_bool "$pings")" \
   "$(jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson cut "$cut_s" --argjson rotate "$(json_bool "$rotate_ok")" \
    --argjson others "$(json_bool "$others")" --argjson stale "$(json_bool "$stale")" --argjson caught "$caught" \
    --argjson conv "$conv" --argjson pings "$(json_bool "$pings")" \
    '{case: "partition", backend: $backend, nodes: $nodes, cut_s: $cut, rotate_ok: $rotate, connected_peers_switched: $others,
      cut_peer_stale_during_cut: $stale, caught_up_s: $caught, converged_s: $conv, pings_ok: $pings}')"
  [ "$pass" = true ]
}

# ---------------------------------------------------------------------------------------------
# Case "scheduled": wm 1 runs with --key-rotation-interval 20s and must rotate by itself.
iso_s() { date -d "$1" +%s; }
case_scheduled() {
  local s old created next dur j rotated=0 t0 by_itself=0 interval_ok=1 human kept=1 conv pings=1 s2 s3
  s="$(wm 1 status --json)"; old="$(state_key 1)"
  created="$(iso_s "$(jq -r .key_created_at <<<"$s")")"
  next="$(jq -r '.next_key_rotation // empty' <<<"$s")"
  [ -n "$next" ] || { log "status shows no next key rotation: $s"; exit 1; }
  next="$(iso_s "$next")"
  # 20 s ± 10 %, counted from the key's creation (ISO times are whole seconds: ±1).
  [ $((next - created)) -ge 17 ] && [ $((next - created)) -le 23 ] \
    || { interval_ok=0; log "next rotation $((next - created)) s after the key's creation, expected 18-22"; }
  human="$(wm 1 status)"
  grep -q '^key age:' <<<"$human" && grep -q '^next key rotation: ' <<<"$human" \
    || { interval_ok=0; log "status does not show the key age and the next rotation:"; echo "$human" >&2; }
  log "key created $(( $(date +%s) - created )) s ago, next rotation in $(( next - $(date +%s) )) s"
  dur=$(( next - $(date +%s) + 5 )); [ "$dur" -ge 5 ] || dur=5; [ "$dur" -le 40 ] || dur=40
  for j in $(seq 2 "$NODES"); do flood s "$dur" 1 "$j"; done
  t0="$(now)"
  for _ in $(seq 1 $(( (dur + 15) * 10 ))); do
    [ "$(state_key 1)" != "$old" ] && { rotated=1; break; }
    sleep 0.1
  done
  flood_result s
  grep -q "scheduled key rotation" "$WORK/agent1.log" && by_itself=1
  conv="$(wait_keys_exact 30)" || { conv=null; show_keys; }
  # The new key's schedule counts from its creation, and a restart keeps it.
  s2="$(wm 1 status --json)"
  local c2 n2
  c2="$(iso_s "$(jq -r .key_created_at <<<"$s2")")"; n2="$(iso_s "$(jq -r .next_key_rotation <<<"$s2")")"
  [ $((n2 - c2)) -ge 17 ] && [ $((n2 - c2)) -le 23 ] || { interval_ok=0; log "after the rotation: next $((n2 - c2)) s after creation"; }
  stop_agent 1
  local started; started="$(date +%s)"
  start_agent 1 agent "${NODE1_ARGS[@]}"
  wait_ready 1
  s3="$(wm 1 status --json)"
  # Kept: the same creation time and deadline, except that an agent never rotates within its first 5 s
  # (settle), so a restart close to the deadline (a slow start on a loaded machine) moves it to start + 5.
  local n3; n3="$(iso_s "$(jq -r .next_key_rotation <<<"$s3")")"
  [ "$(jq -r .key_created_at <<<"$s3")" = "$(jq -r .key_created_at <<<"$s2")" ] \
    && { [ "$n3" = "$n2" ] || { [ "$n3" -gt "$n2" ] && [ "$n3" -le $((started + 5 + 3)) ]; }; } \
    || { kept=0; log "the restart changed the schedule: before $(jq -c '{key_created_at, next_key_rotation}' <<<"$s2"), after $(jq -c '{key_created_at, next_key_rotation}' <<<"$s3") (agent started at $started)"; }
  all_pods_ping || pings=0
  log "scheduled: rotated=$rotated by_itself=$by_itself; lost $LOST of $SENT pings at $PPS pps per direction (per flow:$LOST_DETAIL)"
  local pass=false
  [ "$rotated" = 1 ] && [ "$by_itself" = 1 ] && [ "$interval_ok" = 1 ] && [ "$kept" = 1 ] && [ "$conv" != null ] && [ "$pings" = 1 ] && pass=true
  result scheduled "$pass" "lost $LOST of $SENT; rotated by itself $(json_bool "$by_itself"), schedule ok $(json_bool "$interval_ok"), kept across a restart $(json_bool "$kept"), converged after $conv s, pings ok $(json_bool "$pings")" \
   "$(jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson pps "$PPS" --argjson lost "$LOST" --argjson sent "$SENT" \
    --argjson rotated "$(json_bool "$rotated")" --argjson by_itself "$(json_bool "$by_itself")" \
    --argjson interval "$(json_bool "$interval_ok")" --argjson kept "$(json_bool "$kept")" --argjson conv "$conv" \
    --argjson pings "$(json_bool "$pings")" \
    '{case: "scheduled", backend: $backend, nodes: $nodes, pps: $pps, lost: $lost, sent: $sent, rotated: $rotated,
      by_itself: $by_itself, schedule_ok: $interval, schedule_kept_across_restart: $kept, converged_s: $conv,
      pings_ok: $pings}')"
  [ "$pass" = true ]
}

"case_$CASE"
