#!/usr/bin/env bash
# Faults injected under traffic (issue 12, part 3): a 6-node wiremesh mesh in network namespaces
# (wireguard-go: the host kernel has no WireGuard), one pod per node, and pod-to-pod ping streams
# running while each fault is made. Loss and partitions are nftables rules on the underlay bridge
# (netem is not available); every rule, socket, mount and process belongs to this run.
#
#   partition  nodes 1-3 and 4-6 cut apart (bridge drop rules, both ways) for PARTITION_S, so each half
#              declares the other dead; then healed: every node must see every other alive within 5 s
#              and pings must flow across the former split again (the time to the first reply).
#   loss       10 % of the underlay's IP packets dropped at random on the bridge (`numgen random mod 10
#              0 drop`: a ping round trip loses ~19 %) for LOSS_S, a 10/s ping stream from each pod to the
#              next: no node may be declared dead (agent logs and `peers --json`, polled), and no stream may
#              go longer than 2 s without a reply (the longest gap is reported).
#   kill9      KILL_ROUNDS rounds: a random node's agent gets kill -9 at a random moment (sometimes while it
#              is still starting) and is started again at once, under 100/s ping floods from every pod to
#              the next: its state directory loads again with the same identity, WireGuard key, keyring and
#              pod block, `status` answers, every node ends alive, and no flood goes 2 s without a reply
#              (wireguard-go keeps the tunnels while the agent is down). A last round kills an agent during
#              its `rotate-key`: it comes back with the old or the new key, every node programs that one,
#              and the next rotation completes.
#   hung-uapi  node 3's UAPI socket replaced (the real one moved aside) by a listener that accepts and never
#              answers: `status` keeps answering (within 5 s) and names the device and the 3 s timeout
#              (healthy false), so do `doctor` and the agent log; pings through node 3 keep flowing; the
#              real socket put back, the agent is healthy again. Then the agent is started against the
#              hung socket: it exits with that error instead of hanging or starting a second wireguard-go.
#   wg-killed  node 2's wireguard-go killed (-9) under traffic: the agent starts and programs a new one
#              (traffic back, the outage reported); that one holds none of the agent's sockets, so once
#              the agent stops its ports are free and it starts again.
#   fdlimit    node 4's agent restarted under `prlimit --nofile=64`: it runs; 128 TCP connections from 16
#              source addresses held (and reopened as fast as the agent closes them) on its line port:
#              `status` answers within 5 s, healthy or naming the descriptor limit, and once they go away
#              the line port answers and `status` is healthy again.
#   clock      node 1 (the authority) restarted under libfaketime reading its offset from a file, then
#              the wall clock jumped +1 h and -1 h under the running agent (the monotonic clock stays
#              real, as with a real step): no node may be declared dead and no WireGuard peer removed;
#              a 2 h token made before the jump keeps its expiry and admits a new node (7) after +1 h,
#              a 30 min one is expired by then; after -1 h both are valid again. Then node 1's agent is
#              restarted while its clock is 1 h behind: its updates must still reach the others. At +1 h
#              node 2's agent is stopped for 14 s while pod 1 pings pod 2: node 1 must keep node 2's peer
#              (dead in gossip, its data plane alive), as on the real clock.
#   disk       node 1's state directory is a 4 MiB tmpfs: filled up, then made read-only (a read-only bind
#              mount: wireguard-go's log there keeps the tmpfs itself from a read-only remount). Each time
#              `token create` and `rotate-key` fail with one clear error naming the problem, the state files
#              stay byte for byte what they were (no temporary file left), a restart loads them (full) or
#              refuses with a clear error (read-only), and once space / rw returns every operation works.
#
#   scripts/e2e/faults.sh [--keep] [--cases "partition loss ..."]
#
# Durations: CI-sized by default (partition 35 s: beyond the 30 s the members keep gossiping to the dead,
# so the heal rests on the anti-entropy's reconnect, as in a long split; loss 30 s; 4 kill rounds);
# FAULTS_FULL=1 runs the issue's lengths (partition 60 s, loss 2 min, 10 kill rounds).
# One RESULT line per case on stdout; progress on stderr. Exit 0 when every case passed.
# Root. Everything it creates carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -euo pipefail
KEEP=0
CASES="partition loss kill9 hung-uapi wg-killed fdlimit clock disk"
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --cases) CASES="$2"; shift 2 ;;
    *) echo "usage: $0 [--keep] [--cases \"partition loss kill9 hung-uapi wg-killed fdlimit clock disk\"]" >&2; exit 2 ;;
  esac
done
if [ "${FAULTS_FULL:-0}" = 1 ]; then PARTITION_S=60; LOSS_S=120; KILL_ROUNDS=10; MODE=full
else PARTITION_S=35; LOSS_S=30; KILL_ROUNDS=4; MODE=ci; fi
NODES=6
SPARE=7          # joins during the clock case
GOSSIP=7946
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
HELPER="$ROOT/scripts/lib/fault-helpers.py"
FAKETIME_LIB="$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1 || true)"
harness_check ip wg wireguard-go ping jq nft python3 prlimit faketime nsenter || exit 1
[ -n "$FAKETIME_LIB" ] || { log "libfaketime.so.1 not found: run scripts/setup (package faketime)"; exit 1; }
harness_start wmf
# A step that fails under errexit names itself (its RESULT line is then missing).
set -E
trap 'log "stopped by a failing step at line $LINENO: $BASH_COMMAND"' ERR
declare -A HELD=()   # helper processes by name
TMPFS=""
before_cleanup() {
  local n
  trap - ERR
  for n in "${!HELD[@]}"; do stop_proc "${HELD[$n]}"; done
  # hung-uapi moves node 3's real socket aside; netns_cleanup removes only IFACE.sock.
  rm -f "/var/run/wireguard/${P}w3.sock.real"
  # The tmpfs, and a read-only bind mount over it if a failure left one.
  if [ -n "$TMPFS" ]; then for n in 1 2 3; do ! mountpoint -q "$TMPFS" || umount -l "$TMPFS" 2>/dev/null || true; done; fi
}
log "mode $MODE: partition ${PARTITION_S} s, loss ${LOSS_S} s, $KILL_ROUNDS kill rounds; cases: $CASES"
want() { [[ " $CASES " == *" $1 "* ]]; }
T_START="$(now)"
timed_case() { local t; t="$(now)"; "$2"; log "$1: $(since "$t") s (run so far $(since "$T_START") s)"; }

# ---------------------------------------------------------------------------------------------
# Helpers
nft_ul() { ip netns exec "$P-ul" nft "$@"; }
faults_clear() { nft_ul flush chain bridge wmfault faults; }
counter() { nft_ul -j list counter bridge wmfault "$1" | jq '.nftables[] | select(.counter) | .counter.packets'; }
counters_reset() { nft_ul reset counters table bridge wmfault >/dev/null; }
# name=state of every member node I lists, one per line ("" when it does not answer)
states() { wm "$1" peers --json 2>/dev/null | jq -r '.[] | "\(.name)=\(.state)"' 2>/dev/null || true; }
# members among NAMES... that node I lists in STATE
count_in_state() { local i=$1 st=$2; shift 2; local s; s="$(states "$i")"; local n=0 m; for m in "$@"; do grep -qx "$m=$st" <<<"$s" && n=$((n + 1)); done; echo "$n"; }
dead_lines() { cat "$WORK"/agent*.log 2>/dev/null | grep -c "member declared dead" || true; }
# the same, leaving out lines about member NAME (one the case stopped on purpose)
dead_lines_except() { cat "$WORK"/agent*.log 2>/dev/null | grep "member declared dead" | grep -cvE "$1([^0-9]|\$)" || true; }
# "node I's log since byte OFFSET"
log_size() { stat -c %s "$WORK/agent$1.log" 2>/dev/null || echo 0; }
log_since() { tail -c +"$(( $2 + 1 ))" "$WORK/agent$1.log" 2>/dev/null || true; }

# Ping streams: ping -D (a timestamp per reply) from pod FROM to pod TO every INTERVAL for SECONDS.
declare -A STREAM=() STREAM_T0=()
stream_start() { # NAME FROM TO INTERVAL SECONDS
  local count
  count="$(awk -v s="$5" -v i="$4" 'BEGIN { printf "%d", s / i }')"
  STREAM_T0[$1]="$(now)"
  ip netns exec "$P-p$2" ping -D -n -i "$4" -W 1 -c "$count" "$(pod "$3")" >"$WORK/stream.$1" 2>&1 &
  STREAM[$1]=$!
}
stream_wait() { wait "${STREAM[$1]}" 2>/dev/null || true; }
# Ends a stream early: SIGINT makes ping print its summary (it sets its own handler, so this works
# although bash starts background jobs with SIGINT ignored).
stream_stop() { kill -INT "${STREAM[$1]}" 2>/dev/null || true; stream_wait "$1"; }
# "SENT LOST LONGEST-GAP FIRST-REPLY-AFTER" for stream NAME (FIRST-REPLY-AFTER: seconds from time T
# to the first reply after it, -1 if none; T optional). The gap counts from the stream's start.
stream_stats() {
  local sl
  sl="$(ping_sent_lost "$WORK/stream.$1")"
  awk -v t0="${STREAM_T0[$1]}" -v t="${2:-0}" -v sl="$sl" '
    /^\[[0-9.]+\] [0-9]+ bytes from/ { ts = substr($1, 2, length($1) - 2) + 0
      if (ts - last > gap) gap = ts - last
      last = ts
      if (t > 0 && first < 0 && ts >= t) first = ts - t }
    BEGIN { last = t0; gap = 0; first = -1 }
    END { printf "%s %.2f %.2f\n", sl, gap, first }' "$WORK/stream.$1"
}

# ---------------------------------------------------------------------------------------------
# The mesh: 6 nodes (+ a spare namespace for a later join), one pod each, node 1's state on a tmpfs
# (the disk case), a bridge table for the faults.
netns_underlay "$P"
for i in $(seq 1 "$SPARE"); do netns_node "$P" "$i"; done
nft_ul -f - <<'EOF'
table bridge wmfault {
  counter seen {}
  counter dropped {}
  chain faults { type filter hook forward priority 0; policy accept; }
}
EOF
mkdir -p "$WORK/n1"
mount -t tmpfs -o size=4m,mode=0700 "wmf-state-$P" "$WORK/n1"
TMPFS="$WORK/n1"
wm_node 1 init --name node1 --prepare-only >/dev/null || { log "init on node 1 failed"; exit 1; }
start_agent 1 agent
wait_ready 1 || exit 1
TOKEN="$(wm 1 token create --ttl 10m --uses $((NODES - 1)))"
for i in $(seq 2 "$NODES"); do
  start_agent "$i" join "$TOKEN" --name "node$i"
  wait_ready "$i" || { log "node $i did not come up"; exit 1; }
done
add_pods
wait_until 40 all_alive || { log "the mesh did not converge"; exit 1; }
for i in $(seq 1 "$NODES"); do
  j=$(( i % NODES + 1 ))
  wait_until 10 ping_ok "$i" "$(pod "$j")" || { log "pod $i cannot reach pod $j"; exit 1; }
done
log "mesh up: $NODES nodes, backend $(status_field 1 backend), after $(since "$T_START") s"

# ---------------------------------------------------------------------------------------------
# partition: 1-3 | 4-6 for PARTITION_S, then heal.
case_partition() {
  local A=(1 2 3) B=(4 5 6) i t_cut t_heal t_dead="" heal_s=null problems="" false_dead=0 st cross=() s rest
  local sideA="10.99.0.1, 10.99.0.2, 10.99.0.3" sideB="10.99.0.4, 10.99.0.5, 10.99.0.6"
  stream_start p14 1 4 0.1 $((PARTITION_S + 60))
  stream_start p52 5 2 0.1 $((PARTITION_S + 60))
  sleep 2
  nft_ul add rule bridge wmfault faults ip saddr "{ $sideA }" ip daddr "{ $sideB }" drop
  nft_ul add rule bridge wmfault faults ip saddr "{ $sideB }" ip daddr "{ $sideA }" drop
  t_cut="$(now)"
  log "partition: 1-3 | 4-6 cut for $PARTITION_S s"
  # Each half must declare the other dead (the scenario happened), and nobody its own half.
  while within "$t_cut" "$PARTITION_S"; do
    all=1
    for i in "${A[@]}"; do [ "$(count_in_state "$i" dead node4 node5 node6)" = 3 ] || all=0; done
    for i in "${B[@]}"; do [ "$(count_in_state "$i" dead node1 node2 node3)" = 3 ] || all=0; done
    [ "$all" = 1 ] && [ -z "$t_dead" ] && { t_dead="$(since "$t_cut")"; log "partition: each half sees the other dead after $t_dead s"; }
    for i in "${A[@]}"; do [ "$(count_in_state "$i" alive "${A[@]/#/node}")" = 2 ] || false_dead=1; done
    for i in "${B[@]}"; do [ "$(count_in_state "$i" alive "${B[@]/#/node}")" = 2 ] || false_dead=1; done
    sleep 1
  done
  faults_clear
  t_heal="$(now)"
  POLL=0.2 wait_until 30 all_alive && heal_s="$(since "$t_heal" 2)"
  log "partition healed: every node sees every other alive after ${heal_s} s"
  [ "$heal_s" != null ] || { for i in $(seq 1 "$NODES"); do log "node $i: $(states "$i" | tr '\n' ' ')"; done; }
  # Pings across the former split, both ways, between every pair of halves' pods (one pass each).
  for s in "1 4" "4 1" "2 6" "6 2" "3 5" "5 3"; do
    set -- $s
    if wait_until 15 ping_ok "$1" "$(pod "$2")"; then cross+=("$1->$2 ok"); else cross+=("$1->$2 FAILED"); problems+=" pod $1 cannot reach pod $2 after the heal;"; fi
  done
  stream_stop p14; stream_stop p52
  read -r s14 l14 g14 f14 <<<"$(stream_stats p14 "$t_heal")"
  read -r s52 l52 g52 f52 <<<"$(stream_stats p52 "$t_heal")"
  [ -n "$t_dead" ] || problems+=" the halves never all declared each other dead within $PARTITION_S s (the scenario did not happen);"
  [ "$false_dead" = 0 ] || problems+=" a node saw a member of its own half not alive during the partition;"
  [ "$heal_s" != null ] && awk -v h="$heal_s" 'BEGIN { exit !(h <= 5) }' || problems+=" not every node saw every other alive within 5 s of the heal (${heal_s} s);"
  for f in "$f14" "$f52"; do awk -v f="$f" 'BEGIN { exit !(f >= 0 && f <= 15) }' || problems+=" a stream across the split got no reply within 15 s of the heal ($f);"; done
  result_problems partition "$problems" \
    "$PARTITION_S s split ($MODE): halves declared each other dead after ${t_dead:-never} s; all alive ${heal_s} s after the heal; first reply across the split ${f14} s (pod1->pod4) and ${f52} s (pod5->pod2) after it; ${cross[*]}" \
    "$(jq -cn --argjson d "${t_dead:-null}" --argjson h "$heal_s" --argjson f14 "$f14" --argjson f52 "$f52" --argjson s "$PARTITION_S" \
        '{partition_s: $s, dead_after_s: $d, all_alive_after_heal_s: $h, first_reply_after_heal_s: {pod1_pod4: $f14, pod5_pod2: $f52}}')"
}
want partition && timed_case partition case_partition

# ---------------------------------------------------------------------------------------------
# loss: 10 % of the underlay's IP packets dropped for LOSS_S under ping streams.
case_loss() {
  local i j t0 problems="" dead_before dead_after polled_dead="" seen dropped gaps=() worst=0 lost_total=0 sent_total=0 sus=0 off=()
  for i in $(seq 1 "$NODES"); do off[i]="$(log_size "$i")"; done
  for i in $(seq 1 "$NODES"); do stream_start "l$i" "$i" $(( i % NODES + 1 )) 0.1 $((LOSS_S + 6)); done
  sleep 2
  dead_before="$(dead_lines)"
  counters_reset
  nft_ul add rule bridge wmfault faults ether type ip counter name seen
  nft_ul add rule bridge wmfault faults ether type ip numgen random mod 10 0 counter name dropped drop
  t0="$(now)"
  log "loss: 10 % of the underlay's IP packets dropped for $LOSS_S s"
  while within "$t0" "$LOSS_S"; do
    for i in $(seq 1 "$NODES"); do
      seen="$(states "$i" | grep '=dead$' | cut -d= -f1 | tr '\n' ' ' || true)"
      [ -z "$seen" ] || polled_dead+=" node$i saw dead: $seen;"
    done
    sleep 2
  done
  seen="$(counter seen)"; dropped="$(counter dropped)"
  faults_clear
  for i in $(seq 1 "$NODES"); do stream_wait "l$i"; done
  dead_after="$(dead_lines)"
  for i in $(seq 1 "$NODES"); do
    sus=$(( sus + $(log_since "$i" "${off[i]}" | grep -c "member suspected" || true) ))
    read -r s l g _ <<<"$(stream_stats "l$i")"
    sent_total=$((sent_total + s)); lost_total=$((lost_total + l))
    gaps+=("pod$i->pod$(( i % NODES + 1 )) ${g}s")
    worst="$(awk -v a="$worst" -v b="$g" 'BEGIN { print (b > a ? b : a) }')"
  done
  wait_until 20 all_alive || problems+=" not every node alive 20 s after the loss ended;"
  [ "$dead_after" = "$dead_before" ] || problems+=" $((dead_after - dead_before)) 'member declared dead' log lines during the loss;"
  [ -z "$polled_dead" ] || problems+="$polled_dead"
  awk -v w="$worst" 'BEGIN { exit !(w <= 2) }' || problems+=" a ping stream went ${worst} s without a reply;"
  local rate; rate="$(awk -v d="$dropped" -v s="$seen" 'BEGIN { printf "%.1f", s ? 100 * d / s : 0 }')"
  awk -v r="$rate" 'BEGIN { exit !(r >= 7 && r <= 13) }' || problems+=" the bridge dropped $rate % of IP packets, not ~10 %;"
  result_problems loss "$problems" \
    "$LOSS_S s at 10 % loss per underlay crossing ($MODE): the bridge dropped $dropped of $seen IP packets ($rate %); no node declared dead (logs and peers polled every 2 s; $sus suspicions, none confirmed); pings lost $lost_total of $sent_total; longest gap per stream: ${gaps[*]}" \
    "$(jq -cn --argjson s "$LOSS_S" --argjson seen "$seen" --argjson dropped "$dropped" --argjson sus "$sus" --argjson lost "$lost_total" --argjson sent "$sent_total" --argjson worst "$worst" \
        '{loss_s: $s, underlay_packets: $seen, dropped: $dropped, suspicions: $sus, pings_sent: $sent, pings_lost: $lost, longest_gap_s: $worst}')"
}
want loss && timed_case loss case_loss

# ---------------------------------------------------------------------------------------------
# kill9: kill -9 of agents in a loop under ping floods.
STATE_FILES="cluster.json identity.key wireguard.key keyring.json authority.key settings.json"
# What must survive: the node as `status` names it, and its key files byte for byte.
node_fingerprint() { # I
  local f
  wm "$1" status --json 2>/dev/null | jq -c '{node, cluster_id, pod_cidrs, overlay_address, public_key}' 2>/dev/null || echo "status failed"
  for f in $STATE_FILES; do [ -e "$WORK/n$1/$f" ] && echo "$f $(sha256sum <"$WORK/n$1/$f" | cut -c1-16)"; done
  return 0
}
case_kill9() {
  local i n prev=0 r delay problems="" killed=() during_start=0 worst=0 lost=0 sent=0 gaps=() secs t0 temps
  declare -A FP=()
  secs=$(( KILL_ROUNDS * 10 + 90 ))   # an upper bound: stopped once the checks are done
  for i in $(seq 1 "$NODES"); do FP[$i]="$(node_fingerprint "$i")"; done
  for i in $(seq 1 "$NODES"); do stream_start "k$i" "$i" $(( i % NODES + 1 )) 0.01 "$secs"; done
  t0="$(now)"
  sleep 2
  for r in $(seq 1 "$KILL_ROUNDS"); do
    if [ $((r % 2)) = 0 ]; then
      n=$prev; delay="0.$(( RANDOM % 6 + 1 ))"; during_start=$((during_start + 1))   # still starting
    else
      n=$(( RANDOM % NODES + 1 )); wait_ready "$n" 20 || true; delay="$(( RANDOM % 2 )).$(( RANDOM % 10 ))"
    fi
    sleep "$delay"
    stop_agent "$n" KILL
    start_agent "$n" agent
    killed+=("node$n@${delay}s")
    log "kill9: round $r: node $n's agent killed ${delay} s after $( [ $((r % 2)) = 0 ] && echo "its restart" || echo "being ready"), started again"
    prev=$n
  done
  for i in $(seq 1 "$NODES"); do wait_ready "$i" 20 || problems+=" node $i's agent did not answer status after the loop;"; done
  wait_until 30 all_alive || problems+=" not every node alive 30 s after the loop;"
  for i in $(seq 1 "$NODES"); do
    [ "$(node_fingerprint "$i")" = "${FP[$i]}" ] || { problems+=" node $i's identity, keys or block changed;"; log "node $i before: ${FP[$i]}"; log "node $i after: $(node_fingerprint "$i")"; }
    wm "$i" status >/dev/null 2>&1 || problems+=" node $i: status exits non-zero (unhealthy);"
  done
  # A last round in the middle of a key rotation (the state's most delicate write: the pending key, then
  # the promotion): the node comes back with its old key or the new one, everyone programs that one,
  # and the next rotation completes.
  local rn key_before key_after rot_delay rot="" k fp_rest
  rn=$(( RANDOM % (NODES - 1) + 2 ))
  key_before="$(status_field "$rn" public_key)"; fp_rest="$(node_fingerprint "$rn" | grep -v '^wireguard.key\|public_key')"
  wm "$rn" rotate-key >"$WORK/rot-killed.out" 2>&1 &
  local rotpid=$!
  rot_delay="$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", (r % 40) / 100 }')"; sleep "$rot_delay"
  stop_agent "$rn" KILL
  wait "$rotpid" 2>/dev/null || true
  start_agent "$rn" agent
  wait_ready "$rn" 20 || problems+=" node $rn did not restart after a kill during rotate-key: $(tail -1 "$WORK/agent$rn.log");"
  key_after="$(status_field "$rn" public_key)"
  [ "$key_after" = "$key_before" ] && rot="old key kept" || rot="new key"
  [ "$(node_fingerprint "$rn" | grep -v '^wireguard.key\|public_key')" = "$fp_rest" ] || problems+=" node $rn's identity, keyring or block changed after a kill during rotate-key;"
  for_all_keys() { local j; for j in $(seq 1 "$NODES"); do [ "$j" = "$1" ] || has_peer "$j" "$2" || return 1; done; }
  wait_until 20 for_all_keys "$rn" "$key_after" || problems+=" after a kill during rotate-key not every node holds node $rn's key ($rot);"
  if wm "$rn" rotate-key >"$WORK/rot-after.out" 2>&1; then
    k="$(status_field "$rn" public_key)"
    wait_until 20 for_all_keys "$rn" "$k" || problems+=" the rotation after the killed one did not reach every node;"
  else problems+=" rotate-key after the killed one failed: $(tail -1 "$WORK/rot-after.out");"; fi
  killed+=("node$rn@rotate-key+${rot_delay}s($rot)")
  temps="$(find "$WORK"/n[1-6] -maxdepth 1 -name '.*.tmp-*' 2>/dev/null | wc -l)"
  for i in $(seq 1 "$NODES"); do stream_stop "k$i"; done
  for i in $(seq 1 "$NODES"); do
    read -r s l g _ <<<"$(stream_stats "k$i")"
    sent=$((sent + s)); lost=$((lost + l)); gaps+=("pod$i->pod$(( i % NODES + 1 )) ${g}s")
    worst="$(awk -v a="$worst" -v b="$g" 'BEGIN { print (b > a ? b : a) }')"
  done
  awk -v w="$worst" 'BEGIN { exit !(w <= 2) }' || problems+=" a flood went ${worst} s without a reply;"
  result_problems kill9 "$problems" \
    "$KILL_ROUNDS rounds ($MODE; $during_start during a start-up): ${killed[*]}; every state loaded with the same identity, keys, keyring and block, status healthy, all alive; floods (6 x 100/s) lost $lost of $sent, longest gap per flood: ${gaps[*]}; temporary files left by a kill: $temps" \
    "$(jq -cn --argjson r "$KILL_ROUNDS" --argjson lost "$lost" --argjson sent "$sent" --argjson worst "$worst" --argjson temps "$temps" \
        '{rounds: $r, pings_sent: $sent, pings_lost: $lost, longest_gap_s: $worst, temp_files_left: $temps}')"
}
want kill9 && timed_case kill9 case_kill9

# ---------------------------------------------------------------------------------------------
# hung-uapi: node 3's UAPI socket answered by a listener that accepts and never answers.
timed() { local t; t="$(now)"; "$@" >/dev/null 2>&1 || true; since "$t" 2; }   # seconds CMD took
case_hung_uapi() {
  local n=3 sock="/var/run/wireguard/${P}w3.sock" t0 problems="" st slowest=0 d named="" peers_s doctor_s drc=0 detail logline
  local started_s arc=0 said healthy_s=null
  stream_start h1 3 5 0.1 120
  stream_start h2 5 3 0.1 120
  mv "$sock" "$sock.real"
  python3 "$HELPER" hung-uapi "$sock" "$WORK/hung.ready" &
  HELD[hung]=$!
  wait_until 5 test -s "$WORK/hung.ready" || problems+=" the hung listener did not start;"
  t0="$(now)"
  log "hung-uapi: ${sock} now accepts and never answers"
  # status must answer all along (each call timed) and soon name the device and the timeout.
  while within "$t0" 30; do
    d="$(timed wm "$n" status --json)"
    slowest="$(awk -v a="$slowest" -v b="$d" 'BEGIN { print (b > a ? b : a) }')"
    st="$(wm "$n" status --json 2>/dev/null | jq -r '(.healthy | tostring) + " " + ((.problems // []) | join("; "))' 2>/dev/null || true)"
    if [[ "$st" == false* && "$st" == *"${P}w3"* && "$st" == *"within 3 s"* ]]; then named="$(since "$t0")"; break; fi
    sleep 0.5
  done
  detail="${st#false }"
  [ -n "$named" ] || problems+=" status never named the hung device and the timeout within 30 s (last: $st);"
  peers_s="$(timed wm "$n" peers --json)"
  doctor_s="$(now)"; wm "$n" doctor --json >"$WORK/hung-doctor.json" 2>/dev/null || drc=$?; doctor_s="$(since "$doctor_s" 2)"
  jq -r '[.findings[] | select(.status == "fail") | .detail] | join("; ")' "$WORK/hung-doctor.json" 2>/dev/null | grep -q "within 3 s" ||
    problems+=" doctor (exit $drc) did not name the timeout: $(jq -c '[.findings[] | select(.status != "ok")]' "$WORK/hung-doctor.json" 2>/dev/null | head -c 400);"
  logline="$(grep -m1 "cannot program interface ${P}w3.*within 3 s" "$WORK/agent3.log" || true)"
  [ -n "$logline" ] || problems+=" the agent log does not name the device and the timeout;"
  # One device request at a time blocks for the 3 s timeout; the agent does not queue them.
  awk -v s="$slowest" -v p="$peers_s" 'BEGIN { exit !(s <= 5 && p <= 5) }' || problems+=" the control socket was slow: status took up to $slowest s, peers $peers_s s;"
  # The real socket back: healthy again at the next pass.
  stop_proc "${HELD[hung]}"; unset "HELD[hung]"
  mv "$sock.real" "$sock"
  t0="$(now)"
  wait_until 25 bash -c "[ \"\$(ip netns exec $P-n3 $WM status --json --state-dir $WORK/n3 --control-socket $WORK/n3.sock 2>/dev/null | jq -r .healthy)\" = true ]" &&
    healthy_s="$(since "$t0")" || problems+=" not healthy 25 s after the real socket came back;"
  grep -q "device and routes programmed again" "$WORK/agent3.log" || problems+=" no 'programmed again' log line;"
  stream_stop h1; stream_stop h2
  read -r _ l1 g1 _ <<<"$(stream_stats h1)"; read -r _ l2 g2 _ <<<"$(stream_stats h2)"
  awk -v a="$g1" -v b="$g2" 'BEGIN { exit !(a <= 2 && b <= 2) }' || problems+=" pings through node 3 stopped (longest gaps $g1 s, $g2 s);"
  # Start-up against a hung socket: a clear error, not a hang and not a second wireguard-go.
  stop_agent "$n"
  mv "$sock" "$sock.real"
  python3 "$HELPER" hung-uapi "$sock" "$WORK/hung2.ready" &
  HELD[hung]=$!
  wait_until 5 test -s "$WORK/hung2.ready" || true
  started_s="$(now)"
  timeout 30 ip netns exec "$P-n3" "$WM" agent --state-dir "$WORK/n3" --control-socket "$WORK/n3.sock" \
    --interface "${P}w3" --advertise-address 10.99.0.3 >"$WORK/agent3-hung.log" 2>&1 </dev/null || arc=$?
  started_s="$(since "$started_s")"
  said="$(grep -v '^\s*$' "$WORK/agent3-hung.log" | tail -1 | head -c 400)"
  [ "$arc" != 0 ] && [ "$arc" != 124 ] && [[ "$said" == *"${P}w3"*"within 3 s"* ]] || problems+=" starting against the hung socket: exit $arc after $started_s s: $said;"
  [ "$(netns_wg_go_pids "${P}w3" | wc -l)" = 1 ] || problems+=" $(netns_wg_go_pids "${P}w3" | wc -l) wireguard-go processes serve ${P}w3;"
  stop_proc "${HELD[hung]}"; unset "HELD[hung]"
  mv "$sock.real" "$sock"
  start_agent "$n" agent
  wait_ready "$n" || problems+=" node 3's agent did not come back;"
  result_problems hung-uapi "$problems" \
    "status named it after ${named:-never} s (slowest status ${slowest} s, peers ${peers_s} s, doctor ${doctor_s} s exit $drc): $detail; healthy ${healthy_s} s after the socket came back; pings through node 3 longest gaps ${g1} s / ${g2} s; a start against the hung socket exits $arc after ${started_s} s: $said" \
    "$(jq -cn --argjson named "${named:-null}" --argjson slowest "$slowest" --argjson peers "$peers_s" --argjson doctor "$doctor_s" --argjson healthy "$healthy_s" --argjson start "$started_s" \
        '{named_after_s: $named, slowest_status_s: $slowest, peers_s: $peers, doctor_s: $doctor, healthy_after_restore_s: $healthy, hung_start_exit_after_s: $start}')"
}
want hung-uapi && timed_case hung-uapi case_hung_uapi

# ---------------------------------------------------------------------------------------------
# wg-killed: node 2's wireguard-go killed (kill -9) under traffic: the agent starts and programs a new
# one; that one must hold none of the agent's sockets (it outlives the agent), so the agent restarts.
case_wg_killed() {
  local n=2 old new parent t0 back_s=null flow_s=null problems="" g1 g2 holders arc
  stream_start w1 2 6 0.1 120
  stream_start w2 6 2 0.1 120
  sleep 1
  old="$(netns_wg_go_pids "${P}w$n")"
  # Its parent, if that is an agent (one that started it): that agent must reap it.
  parent="$(awk '{print $4}' "/proc/$old/stat" 2>/dev/null || true)"
  [ -n "$parent" ] && [ "$(readlink "/proc/$parent/exe" 2>/dev/null)" = "$(readlink -f "$WM")" ] || parent=""
  kill_wg_go "${P}w$n"
  t0="$(now)"
  log "wg-killed: node 2's wireguard-go ($old, parent ${parent:-none}) killed"
  wg_new() { new="$(netns_wg_go_pids "${P}w$n")"; [ -n "$new" ] && [ "$new" != "$old" ]; }
  wait_until 25 wg_new && back_s="$(since "$t0")" || problems+=" no new wireguard-go within 25 s;"
  if [ -n "$parent" ] && [ "$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null)" = Z ]; then
    problems+=" the killed wireguard-go ($old) is left a zombie of its agent ($parent);"
  fi
  wait_until 25 ping_ok "$n" "$(pod 6)" && flow_s="$(since "$t0")" || problems+=" pod 2 cannot reach pod 6 25 s after the kill;"
  wait_until 15 bash -c "[ \"\$(ip netns exec $P-n$n $WM status --json --state-dir $WORK/n$n --control-socket $WORK/n$n.sock 2>/dev/null | jq -r .healthy)\" = true ]" ||
    problems+=" node 2 not healthy after the relaunch;"
  stream_stop w1; stream_stop w2
  read -r _ _ g1 _ <<<"$(stream_stats w1)"; read -r _ _ g2 _ <<<"$(stream_stats w2)"
  # The agent's restart: nothing of the old agent may still hold its ports.
  stop_agent "$n"
  holders="$(ip netns exec "$P-n$n" ss -Htlnup 2>/dev/null | grep -E ":$GOSSIP\b" | grep -o 'users:.*' | tr '\n' ' ' || true)"
  [ -z "$holders" ] || problems+=" with the agent stopped, its gossip port is still held: $holders;"
  start_agent "$n" agent
  wait_ready "$n" 15 || problems+=" node 2's agent did not restart after the relaunch: $(tail -1 "$WORK/agent$n.log");"
  wait_until 20 all_alive || problems+=" not every node alive after node 2's restart;"
  result_problems wg-killed "$problems" \
    "a new wireguard-go ${back_s} s after the kill, pod 2 reaches pod 6 again after ${flow_s} s (longest gaps $g1 s / $g2 s); with the agent stopped its ports are free, and it restarts" \
    "$(jq -cn --argjson b "$back_s" --argjson f "$flow_s" --argjson g1 "$g1" --argjson g2 "$g2" '{relaunched_after_s: $b, traffic_after_s: $f, longest_gap_s: [$g1, $g2]}')"
}
want wg-killed && timed_case wg-killed case_wg_killed

# ---------------------------------------------------------------------------------------------
# fdlimit: node 4's agent at 64 descriptors, its line port held by 128 connections from 16 sources.
case_fdlimit() {
  local n=4 pid fds problems="" off src="" a rc=0 st took t0 held errs back_s=null probe fds_flood ready=0
  stop_agent "$n"
  off="$(log_size "$n")"
  ip netns exec "$P-n$n" prlimit --nofile=64:64 "$WM" agent --state-dir "$WORK/n$n" --control-socket "$WORK/n$n.sock" \
    --interface "${P}w$n" --advertise-address "10.99.0.$n" </dev/null >>"$WORK/agent$n.log" 2>&1 &
  AGENT[$n]=$!
  if wait_ready "$n" 20; then ready=1; else problems+=" the agent at 64 descriptors did not start: $(log_since "$n" "$off" | tail -2 | tr '\n' ' ');"; fi
  pid="${AGENT[$n]}"
  fds="$(ls /proc/"$pid"/fd 2>/dev/null | wc -l)"
  log "fdlimit: node 4's agent runs at nofile $(awk '/Max open files/ { print $4 }' /proc/"$pid"/limits 2>/dev/null), $fds descriptors open"
  wait_until 20 all_alive || problems+=" the mesh did not converge with node 4 at 64 descriptors;"
  for a in $(seq 101 116); do ip -n "$P-n5" addr add "10.99.0.$a/24" dev eth0; src+="10.99.0.$a,"; done
  ip netns exec "$P-n5" python3 "$HELPER" hold-tcp 10.99.0.$n "$GOSSIP" "$src" 8 25 "$WORK/hold.ready" >"$WORK/hold.json" 2>"$WORK/hold.err" &
  HELD[hold]=$!
  wait_until 15 test -s "$WORK/hold.ready" || problems+=" the connection holder did not start;"
  sleep 3
  fds_flood="$(ls /proc/"$pid"/fd 2>/dev/null | wc -l)"
  t0="$(now)"
  st="$(timeout 30 ip netns exec "$P-n$n" "$WM" status --json --state-dir "$WORK/n$n" --control-socket "$WORK/n$n.sock" 2>"$WORK/fd-status.err")" || rc=$?
  took="$(since "$t0")"
  st="$(jq -c '{healthy, problems}' <<<"$st" 2>/dev/null || echo "exit $rc: $(head -c 300 "$WORK/fd-status.err")")"
  log "fdlimit: under the flood ($fds_flood descriptors open) status took $took s: $st"
  wait "${HELD[hold]}" 2>/dev/null || true; unset "HELD[hold]"
  held="$(cat "$WORK/hold.json" 2>/dev/null || echo '{}')"
  errs="$(log_since "$n" "$off" | { grep -iE "error|warning|too many|descriptor" || true; } | sed -E 's/^[^ ]+ //' | sort | uniq -c | sort -rn | head -5 | tr '\n' ';' | cut -c1-600)"
  t0="$(now)"
  wait_until 30 bash -c "[ \"\$(ip netns exec $P-n$n $WM status --json --state-dir $WORK/n$n --control-socket $WORK/n$n.sock 2>/dev/null | jq -r .healthy)\" = true ]" &&
    back_s="$(since "$t0")" || problems+=" status not healthy 30 s after the connections went away;"
  probe="$(ip netns exec "$P-n5" python3 "$HELPER" line-probe 10.99.0.$n "$GOSSIP" 2>&1 || true)"
  [[ "$probe" == *refused* || "$probe" == *"{"* ]] || problems+=" the line port does not answer after the flood: $probe;"
  wait_until 20 all_alive || problems+=" not every node alive after the flood;"
  # `status` exits 1 when unhealthy, with its JSON; anything else must say why on stderr.
  [[ "$st" == "{"* ]] || [ -s "$WORK/fd-status.err" ] || problems+=" status under the flood failed without a message;"
  [ "$rc" != 124 ] || problems+=" status hung under the flood (killed after 30 s);"
  awk -v t="$took" 'BEGIN { exit !(t <= 5) }' || problems+=" status took $took s under the flood;"
  [[ "$st" == *'"healthy":true'* || "$st" == *"Too many open files"* ]] || problems+=" status under the flood neither healthy nor naming the descriptor limit: $st;"
  for a in $(seq 101 116); do ip -n "$P-n5" addr del "10.99.0.$a/24" dev eth0 2>/dev/null || true; done
  stop_agent "$n"
  start_agent "$n" agent
  wait_ready "$n" || problems+=" node 4's agent did not come back without the limit;"
  result_problems fdlimit "$problems" \
    "agent at nofile 64 started ($(json_bool $ready)), $fds descriptors open idle, $fds_flood under 128 held line-port connections from 16 sources ($held); status under the flood took $took s: $st; agent log: $errs; healthy ${back_s} s after the connections went away; line port answers: ${probe:0:80}" \
    "$(jq -cn --argjson fds "${fds:-0}" --argjson flood "${fds_flood:-0}" --argjson took "$took" --argjson back "$back_s" --argjson held "$held" \
        '{fds_idle: $fds, fds_under_flood: $flood, status_under_flood_s: $took, healthy_after_s: $back, holder: $held}')"
}
want fdlimit && timed_case fdlimit case_fdlimit

# ---------------------------------------------------------------------------------------------
# clock: node 1's wall clock jumped +1 h and -1 h under its running agent (libfaketime, offset file).
# FAKETIME_SHARED is set (to names that do not exist: no shared counter) because otherwise libfaketime's
# constructor calls setenv(3), which moves `environ` to the heap before any other initialiser runs, and
# the Swift runtime finds argv on Linux by walking back from `environ` on the stack: the agent would
# start with no arguments at all (plain `faketime -f +1h wiremesh ...` prints the top-level help).
start_faked() { # I: the agent under libfaketime, its wall-clock offset read from $WORK/faketime (at most 1 s cached)
  ip netns exec "$P-n$1" env LD_PRELOAD="$FAKETIME_LIB" FAKETIME_TIMESTAMP_FILE="$WORK/faketime" FAKETIME_CACHE_DURATION=1 \
    FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_SHARED="/$P-nosem /$P-noshm" "$WM" agent --state-dir "$WORK/n$1" --control-socket "$WORK/n$1.sock" \
    --interface "${P}w$1" --advertise-address "10.99.0.$1" </dev/null >>"$WORK/agent$1.log" 2>&1 &
  AGENT[$1]=$!
}
epoch() { date -d "$1" +%s 2>/dev/null || echo 0; }
# The agent's clock offset in seconds, seen through a 1 h token's expiry (rounded to 10 minutes).
agent_offset() {
  local e; e="$(wm 1 token create --ttl 1h --json 2>/dev/null | jq -r .expires_at)"
  awk -v e="$(epoch "$e")" -v n="$(date +%s)" 'BEGIN { printf "%d", int((e - n - 3600 + 300 * (e - n - 3600 >= 0 ? 1 : -1)) / 600) * 600 }'
}
token_field() { wm "$1" token list --json 2>/dev/null | jq -r --arg id "$2" ".[] | select(.id == \$id) | .$3"; }
# Every node alive everywhere and every device holding every other node's current key.
all_peers_kept() {
  local i j
  for i in $(seq 1 "$NODES"); do for j in $(seq 1 "$NODES"); do
    [ "$i" = "$j" ] || has_peer "$i" "$(cat "$WORK/key$j")" || { echo "node $i lost node $j's peer"; return 1; }
  done; done
}
watch_jump() { # SECONDS LABEL: no death, no peer removed while the jump holds
  local t0 bad="" m
  t0="$(now)"
  while within "$t0" "$1"; do
    m="$(all_peers_kept)" || bad+=" $2: $m;"
    all_alive || bad+=" $2: not every node alive ($(for i in $(seq 1 "$NODES"); do echo -n "node$i sees $(alive_count "$i") "; done));"
    sleep 2
  done
  echo "$bad"
}
case_clock() {
  local problems="" long long_exp short_exp off_plus off_minus dead0 st7="" new seen2="" t0 back_s=null w
  for i in $(seq 1 "$NODES"); do wm "$i" status --json | jq -r .public_key >"$WORK/key$i"; done
  echo "+0" >"$WORK/faketime"
  stop_agent 1
  start_faked 1
  wait_ready 1 || { result clock false "node 1's agent did not start under libfaketime: $(tail -2 "$WORK/agent1.log" | tr '\n' ' ')"; return; }
  wait_until 20 all_alive || problems+=" the mesh did not converge after node 1's restart under libfaketime;"
  dead0="$(dead_lines_except node2)"
  local json long_id short_id new_id hs_plus
  json="$(wm 1 token create --ttl 2h --uses 2 --json)"; long="$(jq -r .token <<<"$json")"; long_id="$(jq -r .id <<<"$json")"
  json="$(wm 1 token create --ttl 30m --json)"; short_id="$(jq -r .id <<<"$json")"
  long_exp="$(token_field 1 "$long_id" expires_at)"; short_exp="$(token_field 1 "$short_id" expires_at)"
  # +1 h
  echo "+3600" >"$WORK/faketime"; sleep 2
  off_plus="$(agent_offset)"
  log "clock: node 1's wall clock +1 h (the agent's offset as its tokens show it: $off_plus s)"
  [ "$off_plus" = 3600 ] || problems+=" the +1 h jump did not reach the agent (offset $off_plus s): the case did not happen;"
  w="$(watch_jump 8 "+1h")"; problems+="$w"
  hs_plus="$(wm 1 peers --json | jq '[.[].seconds_since_handshake // empty] | max // null')"
  [ "$(token_field 1 "$long_id" expires_at)" = "$long_exp" ] || problems+=" +1h: the 2 h token's expiry moved;"
  [ "$(token_field 1 "$long_id" state)" = valid ] || problems+=" +1h: the 2 h token is $(token_field 1 "$long_id" state), not valid;"
  [ "$(token_field 1 "$short_id" state)" = expired ] || problems+=" +1h: the 30 min token is $(token_field 1 "$short_id" state), not expired;"
  # A member whose agent is down while node 1's clock is ahead: its data plane is alive (pod 1 keeps
  # sending to pod 2), so node 1 must keep its WireGuard peer although gossip says dead (restart.sh's
  # rule). The rule reads the handshake's age: WireGuard's time against the agent's clock.
  local kept=1 dead_seen=0 t_down g12
  stream_start c12 1 2 0.05 120
  sleep 1
  stop_agent 2
  t_down="$(now)"
  while within "$t_down" 14; do
    [ "$(peer_state 1 node2)" = dead ] && dead_seen=1
    has_peer 1 "$(cat "$WORK/key2")" || { [ "$kept" = 1 ] && log "clock: +1h: node 1 removed node 2's peer $(since "$t_down") s after its agent stopped"; kept=0; }
    sleep 1
  done
  start_agent 2 agent
  wait_ready 2 || problems+=" +1h: node 2's agent did not come back;"
  wait_until 20 all_alive || problems+=" +1h: not every node alive after node 2's restart;"
  stream_stop c12
  read -r _ _ g12 _ <<<"$(stream_stats c12)"
  [ "$dead_seen" = 1 ] || problems+=" +1h: node 1 never saw node 2 dead while its agent was down (the scenario did not happen);"
  [ "$kept" = 1 ] || problems+=" +1h: node 1 removed the peer of node 2, whose data plane was alive (its handshake looked an hour old);"
  awk -v g="$g12" 'BEGIN { exit !(g <= 2) }' || problems+=" +1h: pod 1's pings to pod 2 stopped for $g12 s while node 2's agent was down;"
  start_agent "$SPARE" join "$long" --name "node$SPARE"
  if wait_ready "$SPARE" 20 && wait_until 10 bash -c "[ \"\$(ip netns exec $P-n1 $WM peers --json --state-dir $WORK/n1 --control-socket $WORK/n1.sock | jq -r '.[] | select(.name == \"node$SPARE\") | .state')\" = alive ]"; then
    st7="joined"
  else
    st7="not admitted: $(grep -i "refused\|error" "$WORK/agent$SPARE.log" | tail -1 | head -c 200)"
    problems+=" +1h: node $SPARE could not join with the 2 h token ($st7);"
  fi
  wm "$SPARE" leave >/dev/null 2>&1 || true
  stop_agent "$SPARE"
  wait_until 15 all_alive || problems+=" +1h: node $SPARE's leave left the others unsettled;"
  # -1 h
  echo "-3600" >"$WORK/faketime"; sleep 2
  off_minus="$(agent_offset)"
  log "clock: node 1's wall clock -1 h (offset $off_minus s)"
  [ "$off_minus" = -3600 ] || problems+=" the -1 h jump did not reach the agent (offset $off_minus s): the case did not happen;"
  w="$(watch_jump 8 "-1h")"; problems+="$w"
  [ "$(token_field 1 "$long_id" expires_at)" = "$long_exp" ] || problems+=" -1h: the 2 h token's expiry moved;"
  [ "$(token_field 1 "$short_id" state)" = valid ] || problems+=" -1h: the 30 min token is $(token_field 1 "$short_id" state), not valid;"
  # A restart while the clock is an hour behind: its record versions (wall-clock milliseconds) are older
  # than those the others hold; its updates must still reach them.
  stop_agent 1
  start_faked 1
  wait_ready 1 || problems+=" node 1's agent did not restart at -1h;"
  t0="$(now)"
  wait_until 20 all_alive && back_s="$(since "$t0")" || problems+=" -1h restart: not every node alive after 20 s;"
  new_id="$(wm 1 token create --ttl 10m --json | jq -r .id)"
  wait_until 10 bash -c "ip netns exec $P-n2 $WM token list --json --state-dir $WORK/n2 --control-socket $WORK/n2.sock | jq -e --arg id $new_id '.[] | select(.id == \$id)' >/dev/null" &&
    seen2=yes || problems+=" -1h restart: node 2 never saw the token node 1 announced afterwards (its record update did not spread);"
  w="$(watch_jump 4 "-1h restarted")"; problems+="$w"
  [ "$(dead_lines_except node2)" = "$dead0" ] || problems+=" $(( $(dead_lines_except node2) - dead0 )) 'member declared dead' log lines during the jumps (node 2's stop aside);"
  # Back to the real clock, without libfaketime.
  stop_agent 1
  start_agent 1 agent
  wait_ready 1 || problems+=" node 1's agent did not restart on the real clock;"
  wait_until 20 all_alive || problems+=" not every node alive after node 1's return to the real clock;"
  result_problems clock "$problems" \
    "node 1's agent under libfaketime, its wall clock +1 h then -1 h while running (seen by the agent: $off_plus / $off_minus s): no node declared dead, no WireGuard peer removed on any node; 2 h token: expiry unchanged, valid at both, node $SPARE $st7 with it at +1 h; node 2's agent down 14 s at +1 h: dead in gossip $(json_bool $dead_seen), its peer kept on node 1 $(json_bool $kept), pod1->pod2 longest gap ${g12} s; 30 min token expired at +1 h, valid at -1 h; restarted at -1 h: all alive after ${back_s} s, its new token seen on node 2: ${seen2:-no}; not judged: at +1 h node 1's peers listed handshakes up to ${hs_plus} s old (WireGuard's times are real, its clock is not)" \
    "$(jq -cn --argjson p "${off_plus:-0}" --argjson m "${off_minus:-0}" --argjson b "$back_s" --argjson hs "${hs_plus:-null}" '{offset_plus_s: $p, offset_minus_s: $m, alive_after_restart_behind_s: $b, handshake_age_seen_at_plus_1h_s: $hs}')"
}
want clock && timed_case clock case_clock

# ---------------------------------------------------------------------------------------------
# disk: node 1's state directory (a 4 MiB tmpfs) full, then read-only.
state_snapshot() { # the state files' hashes (agent.lock and wireguard-go's log aside) and any temporary file left
  (cd "$WORK/n1" && for f in $(ls -A | grep -vx -e agent.lock -e wireguard-go.log -e fill | LC_ALL=C sort); do echo "$f $(sha256sum <"$f" | cut -c1-16)"; done)
}
# OP: run `wm 1 ARGS...`, record "rc|stderr" in OUT_RC / OUT_ERR
attempt() { OUT_RC=0; OUT_ERR=""; wm 1 "$@" >"$WORK/attempt.out" 2>"$WORK/attempt.err" || OUT_RC=$?; OUT_ERR="$(cat "$WORK/attempt.err")"; }
# An operation refused with one clear error: non-zero exit, one line, naming WHAT (strerror text) and the state directory.
clear_error() { # WHAT LABEL
  local lines; lines="$(grep -c . <<<"$OUT_ERR" || true)"
  if [ "$OUT_RC" = 0 ]; then echo " $2: succeeded on a $1 disk;"
  elif [ "$lines" != 1 ] || [[ "$OUT_ERR" != *"$1"* ]] || [[ "$OUT_ERR" != *"$WORK/n1"* ]]; then echo " $2: exit $OUT_RC, unclear error ($lines lines): ${OUT_ERR:0:300};"; fi
}
case_disk() {
  local problems="" before after fp key0 key1 full_tok full_rot ro_tok ro_rot restart_full="" restart_ro="" arc=0 said
  fp="$(node_fingerprint 1 | grep -v '^wireguard.key\|public_key')"
  # --- full
  dd if=/dev/zero of="$WORK/n1/fill" bs=4k 2>/dev/null || true
  log "disk: node 1's state directory full ($(df --output=avail -B1 "$WORK/n1" | tail -1 | tr -d ' ') bytes free)"
  before="$(state_snapshot)"
  attempt token create --ttl 10m; full_tok="$OUT_ERR"; problems+="$(clear_error "No space left on device" "full: token create")"
  attempt rotate-key; full_rot="$OUT_ERR"; problems+="$(clear_error "No space left on device" "full: rotate-key")"
  after="$(state_snapshot)"
  [ "$before" = "$after" ] || { problems+=" full: the state files changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ');"; }
  wm 1 status >/dev/null 2>&1 || problems+=" full: status exits non-zero: $(wm 1 status 2>&1 | tail -1);"
  # A restart on the full disk loads the state (it only reads it).
  stop_agent 1
  start_agent 1 agent
  if wait_ready 1 15; then restart_full="runs"; else restart_full="refused: $(tail -1 "$WORK/agent1.log")"; problems+=" full: the agent did not restart: $restart_full;"; fi
  [ "$(node_fingerprint 1 | grep -v '^wireguard.key\|public_key')" = "$fp" ] || problems+=" full: after the restart the node is not the same;"
  # Space back: everything works.
  rm -f "$WORK/n1/fill"
  key0="$(status_field 1 public_key)"
  attempt token create --ttl 10m; [ "$OUT_RC" = 0 ] || problems+=" space back: token create failed: $OUT_ERR;"
  attempt rotate-key; [ "$OUT_RC" = 0 ] || problems+=" space back: rotate-key failed: $OUT_ERR;"
  key1="$(status_field 1 public_key)"
  [ "$key1" != "$key0" ] || problems+=" space back: the key did not change after rotate-key;"
  wait_until 15 bash -c "for j in 2 3 4 5 6; do ip netns exec $P-n\$j wg show ${P}w\$j dump | awk -v k='$key1' 'NR > 1 && \$1 == k { f = 1 } END { exit !f }' || exit 1; done" ||
    problems+=" space back: not every node holds node 1's new key;"
  # --- read-only
  before="$(state_snapshot)"
  # Not `mount -o remount,ro` of the tmpfs: wireguard-go keeps its log in the state directory open for
  # writing, so the kernel refuses ("busy"). A read-only bind mount over the directory, in this
  # namespace (for restarts) and in the running agent's mount namespace (ip netns exec gave it a copy):
  # every new open, create and rename there fails with EROFS, as on a file system gone read-only.
  ro_bind() { mount --bind "$WORK/n1" "$WORK/n1" && mount -o remount,bind,ro "$WORK/n1"; }
  ro_bind
  nsenter -t "${AGENT[1]}" -m sh -c "mount --bind '$WORK/n1' '$WORK/n1' && mount -o remount,bind,ro '$WORK/n1'"
  log "disk: node 1's state directory read-only"
  attempt token create --ttl 10m; ro_tok="$OUT_ERR"; problems+="$(clear_error "Read-only file system" "read-only: token create")"
  attempt rotate-key; ro_rot="$OUT_ERR"; problems+="$(clear_error "Read-only file system" "read-only: rotate-key")"
  after="$(state_snapshot)"
  [ "$before" = "$after" ] || problems+=" read-only: the state files changed;"
  stop_agent 1
  timeout 20 ip netns exec "$P-n1" "$WM" agent --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
    --interface "${P}w1" --advertise-address 10.99.0.1 >"$WORK/agent1-ro.log" 2>&1 </dev/null || arc=$?
  said="$(grep -v '^\s*$' "$WORK/agent1-ro.log" | tail -1 | head -c 300)"
  if [ "$arc" = 124 ]; then restart_ro="runs (stopped after 20 s)"
  elif [[ "$said" == *"Read-only file system"* && "$said" == *"$WORK/n1"* ]]; then restart_ro="refused (exit $arc): $said"
  else restart_ro="exit $arc: $said"; problems+=" read-only: a restart neither ran nor refused clearly: $said;"; fi
  # rw back: the agent starts on the same state and writes again.
  umount "$WORK/n1"
  start_agent 1 agent
  wait_ready 1 || problems+=" rw back: the agent did not start;"
  [ "$(node_fingerprint 1 | grep -v '^wireguard.key\|public_key')" = "$fp" ] || problems+=" rw back: the node is not the same (identity, block, keyring);"
  [ "$(status_field 1 public_key)" = "$key1" ] || problems+=" rw back: the key is not the one rotated to;"
  attempt token create --ttl 10m; [ "$OUT_RC" = 0 ] || problems+=" rw back: token create failed: $OUT_ERR;"
  wait_until 20 all_alive || problems+=" rw back: not every node alive;"
  result_problems disk "$problems" \
    "full: token create: $full_tok | rotate-key: $full_rot | state unchanged, restart $restart_full, space back: both work (key rotated). read-only: token create: $ro_tok | rotate-key: $ro_rot | state unchanged, restart $restart_ro; rw back: same node, writes work" \
    "$(jq -cn --arg ft "$full_tok" --arg fr "$full_rot" --arg rt "$ro_tok" --arg rr "$ro_rot" --arg rf "$restart_full" --arg ro "$restart_ro" \
        '{full: {token_create: $ft, rotate_key: $fr, restart: $rf}, read_only: {token_create: $rt, rotate_key: $rr, restart: $ro}}')"
}
want disk && timed_case disk case_disk

log "done"
exit "$HARNESS_FAILED"
