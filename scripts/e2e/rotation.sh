#!/usr/bin/env bash
# Hitless key rotation, measured: an N-node wiremesh cluster in network namespaces (one pod per node,
# nodes on a bridge), then `wiremesh rotate-key` on node 1 while ping floods run in both directions
# between node 1's pod and the pod of every other node, plus (first rotation) an iperf3 TCP stream
# from node 1's pod to node 2's pod. Afterwards every peer's device must hold only the new key
# (`wg show` is the reference).
#
#   scripts/e2e/rotation.sh [--nodes N] [--rotations R] [--pps P] [--stream-seconds S] [--flood-seconds S] [--keep]
#
# Pings run max(S, --flood-seconds (4)) seconds per flow; the rotation starts 1.5 s in.
# Prints one "rotation i: ..." line per rotation and a final "RESULT {json}" line with
# backend, nodes, rotations, pps, lost (per rotation), lost_packets_median, lost_packets_max,
# all_peers_switched_s (per rotation), all_peers_switched_s_max, stream_ok, keys_ok, rotate_s (how long
# each rotate-key command took), agent_ms (the agent's phase timings per rotation, from its log).
# Exit status: 0 when the stream completed and the keys are right (loss is reported, not judged).
# Root; uses kernel WireGuard if present, else wireguard-go. Everything it creates carries a per-run
# prefix and is removed on exit (also on failure), unless --keep.
set -euo pipefail
NODES=4
ROTATIONS=1
PPS=200
STREAM=6
FLOOD=4
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --rotations) ROTATIONS="$2"; shift 2 ;;
    --pps) PPS="$2"; shift 2 ;;
    --stream-seconds) STREAM="$2"; shift 2 ;;
    --flood-seconds) FLOOD="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--nodes N] [--rotations R] [--pps P] [--stream-seconds S] [--flood-seconds S] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$NODES" -ge 2 ] || { echo "rotation: --nodes must be at least 2" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
[ -x "$WM" ] || { echo "rotation: $WM not found; run 'swift build' first" >&2; exit 1; }
for tool in ip wg ping iperf3 jq; do
  command -v "$tool" >/dev/null || { echo "rotation: '$tool' is missing: run scripts/setup" >&2; exit 1; }
done
P="wmr$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"   # per-run prefix
WORK="$(mktemp -d /tmp/$P.XXXX)"
UL="$P-ul"
PIDS=()
INTERVAL="$(awk -v p="$PPS" 'BEGIN { printf "%.4f", 1 / p }')"

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.3
  for i in $(seq 1 "$NODES"); do
    ip netns pids "$P-p$i" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns pids "$P-n$i" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  sleep 0.2
  for i in $(seq 1 "$NODES"); do
    ip netns del "$P-n$i" 2>/dev/null; ip netns del "$P-p$i" 2>/dev/null
    rm -f "/var/run/wireguard/${P}w$i.sock"
  done
  ip netns del "$UL" 2>/dev/null
  rm -rf "$WORK"
}
if [ "$KEEP" = 0 ]; then trap cleanup EXIT; else echo "rotation: --keep: remove with 'ip netns | grep $P'"; fi

log() { echo "rotation: $*" >&2; }
now() { date +%s.%N; }
node() { local i=$1; shift; ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock"; }
dump() { ip netns exec "$P-n$1" wg show "${P}w$1" dump; }

ip netns add "$UL"
ip -n "$UL" link add br0 type bridge
ip -n "$UL" link set br0 up
for i in $(seq 1 "$NODES"); do
  ip netns add "$P-n$i"
  ip link add "${P}u$i" type veth peer name eth0 netns "$P-n$i"
  ip link set "${P}u$i" netns "$UL"
  ip -n "$UL" link set "${P}u$i" master br0 up
  ip -n "$P-n$i" addr add "10.99.0.$i/24" dev eth0
  ip -n "$P-n$i" link set eth0 up
  ip -n "$P-n$i" link set lo up
  ip netns exec "$P-n$i" sysctl -qw net.ipv4.ip_forward=1
done

start_agent() { # i, then the rest of the command
  local i=$1; shift
  ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock" \
    --interface "${P}w$i" --advertise-address "10.99.0.$i" >"$WORK/agent$i.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() { # i
  for _ in $(seq 1 150); do node "$1" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "agent $1 did not come up; its log:"; cat "$WORK/agent$1.log" >&2; return 1
}

ip netns exec "$P-n1" "$WM" init --name node1 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
  --interface "${P}w1" --advertise-address 10.99.0.1 --prepare-only >/dev/null
start_agent 1 agent
wait_ready 1
TOKEN="$(node 1 token create --ttl 10m)"
for i in $(seq 2 "$NODES"); do
  start_agent "$i" join "$TOKEN" --name "node$i"
  wait_ready "$i"
done

for i in $(seq 1 "$NODES"); do
  cidr="$(node "$i" status --json | jq -r '.pod_cidrs[0]')"
  echo "$cidr" >"$WORK/cidr$i"
  base="${cidr%/*}"; pod="${base%.*}.$(( ${base##*.} + 10 ))"
  echo "$pod" >"$WORK/pod$i"
  ip netns add "$P-p$i"
  ip link add "${P}v$i" type veth peer name eth0 netns "$P-p$i"
  ip link set "${P}v$i" netns "$P-n$i"
  ip -n "$P-n$i" link set "${P}v$i" up
  ip -n "$P-n$i" route add "$pod/32" dev "${P}v$i"
  ip -n "$P-p$i" link set eth0 up
  ip -n "$P-p$i" link set lo up
  ip -n "$P-p$i" addr add "$pod/32" dev eth0
  ip -n "$P-p$i" route add 169.254.1.1 dev eth0
  ip -n "$P-p$i" route add default via 169.254.1.1 dev eth0
  ip -n "$P-n$i" addr add 169.254.1.1/32 dev "${P}v$i"
  ip netns exec "$P-n$i" sysctl -qw "net.ipv4.conf.${P}v$i.proxy_arp=1"
done
BACKEND="$(node 1 status --json | jq -r .backend)"

# Converged: every node sees every other alive, and node 1's pod reaches every pod and back.
converged=0
for _ in $(seq 1 150); do
  ok=1
  for i in $(seq 1 "$NODES"); do
    n="$(node "$i" peers --json | jq '[.[] | select(.state == "alive")] | length')"
    [ "$n" -eq $((NODES - 1)) ] || { ok=0; break; }
  done
  [ "$ok" = 1 ] && { converged=1; break; }
  sleep 0.2
done
[ "$converged" = 1 ] || { log "the mesh did not converge"; exit 1; }
POD1="$(cat "$WORK/pod1")"; CIDR1="$(cat "$WORK/cidr1")"
for j in $(seq 2 "$NODES"); do
  ip netns exec "$P-p1" ping -c 3 -i 0.2 -W 2 -q "$(cat "$WORK/pod$j")" >/dev/null \
    || { log "pod 1 cannot reach pod $j before the rotation"; exit 1; }
done

# The key that currently owns node 1's pod CIDR on peer j.
owner_on() { dump "$1" | awk -v c="$CIDR1" 'NR > 1 { n = split($4, a, ","); for (k = 1; k <= n; k++) if (a[k] == c) print $1 }'; }

LOSSES=()
SWITCHED=()
ROTATE_S=()
AGENT_MS=()
STREAM_OK=1
KEYS_OK=1
for r in $(seq 1 "$ROTATIONS"); do
  OLD="$(node 1 status --json | jq -r .public_key)"
  flood_s=$(awk -v s="$STREAM" -v f="$FLOOD" 'BEGIN { print (s > f ? s : f) }')
  count=$(awk -v p="$PPS" -v s="$flood_s" 'BEGIN { printf "%d", p * s }')
  PINGS=()
  for j in $(seq 2 "$NODES"); do
    podj="$(cat "$WORK/pod$j")"
    ip netns exec "$P-p1" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$podj" >"$WORK/ping.$r.1to$j" 2>&1 &
    PINGS+=($!)
    ip netns exec "$P-p$j" ping -n -q -i "$INTERVAL" -c "$count" -W 2 "$POD1" >"$WORK/ping.$r.${j}to1" 2>&1 &
    PINGS+=($!)
  done
  IPERF=""
  if [ "$r" = 1 ] && [ "$STREAM" -gt 0 ]; then
    ip netns exec "$P-p2" iperf3 -s -1 -p 5201 >"$WORK/iperf-server.log" 2>&1 &
    PIDS+=($!)
    sleep 0.3
    ip netns exec "$P-p1" iperf3 -c "$(cat "$WORK/pod2")" -p 5201 -t "$STREAM" -b 50M --connect-timeout 3000 -J \
      >"$WORK/iperf.json" 2>"$WORK/iperf.err" &
    IPERF=$!
  fi
  sleep 1.5
  t0="$(now)"
  node 1 rotate-key >"$WORK/rotate.$r.out" 2>&1 &
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
    tx=$(grep -o '[0-9]* packets transmitted' "$f" | awk '{print $1}')
    rx=$(grep -o '[0-9]* received' "$f" | awk '{print $1}')
    [ -n "$tx" ] && [ -n "$rx" ] || { log "no ping summary in $f"; cat "$f" >&2; tx=1; rx=0; }
    lost=$((lost + tx - rx))
    detail="$detail ${f##*.}=$((tx - rx))"
  done
  NEW="$(node 1 status --json | jq -r .public_key)"
  sw="null"
  [ -n "$t_all" ] && sw="$(awk -v a="$t_all" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')"
  LOSSES+=("$lost")
  SWITCHED+=("$sw")
  ROTATE_S+=("$(awk -v a="$t_cmd" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')")
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
      keys="$(dump "$j" | awk 'NR > 1 { print $1 }')"
      if ! grep -qx -- "$OLD" <<<"$keys" && grep -qx -- "$NEW" <<<"$keys" \
         && [ "$(wc -l <<<"$keys")" -eq $((NODES - 1)) ] && [ "$(owner_on "$j")" = "$NEW" ]; then
        done_j=1; break
      fi
      sleep 0.2
    done
    if [ "$done_j" = 0 ]; then
      log "rotation $r: node $j's device does not hold exactly the new key for node 1:"; dump "$j" >&2; KEYS_OK=0
    fi
  done
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
max() { printf '%s\n' "$@" | sort -n | tail -1; }
sw_max="$(printf '%s\n' "${SWITCHED[@]}" | grep -v null | sort -n | tail -1)"
jq -cn --arg backend "$BACKEND" --argjson nodes "$NODES" --argjson rotations "$ROTATIONS" --argjson pps "$PPS" \
  --argjson lost "[$(IFS=,; echo "${LOSSES[*]}")]" --argjson switched "[$(IFS=,; echo "${SWITCHED[*]}")]" \
  --argjson median "$(median "${LOSSES[@]}")" --argjson lmax "$(max "${LOSSES[@]}")" \
  --argjson swmax "${sw_max:-null}" --argjson stream "$([ "$STREAM_OK" = 1 ] && echo true || echo false)" \
  --argjson keys "$([ "$KEYS_OK" = 1 ] && echo true || echo false)" \
  --argjson rotate_s "[$(IFS=,; echo "${ROTATE_S[*]}")]" --argjson agent_ms "[$(IFS=,; echo "${AGENT_MS[*]}")]" \
  '{backend: $backend, nodes: $nodes, rotations: $rotations, pps: $pps, lost: $lost, lost_packets_median: $median,
    lost_packets_max: $lmax, all_peers_switched_s: $switched, all_peers_switched_s_max: $swmax,
    stream_ok: $stream, keys_ok: $keys, rotate_s: $rotate_s, agent_ms: $agent_ms}' | sed 's/^/RESULT /'
[ "$STREAM_OK" = 1 ] && [ "$KEYS_OK" = 1 ]
