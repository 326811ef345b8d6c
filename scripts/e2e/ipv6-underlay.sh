#!/usr/bin/env bash
# IPv6 underlay, end to end (issue 13, dual-stack): 3 wiremesh nodes (network namespaces on a bridge,
# wireguard-go) that advertise IPv6 addresses only (fd99::N): the join token, gossip and WireGuard all
# run over IPv6, for a dual-stack cluster.
#
#   scripts/e2e/ipv6-underlay.sh [--keep]        (root; WIREMESH_BIN=path/to/wiremesh, default .build/debug)
#
# Node 3 is IPv6-only and joins without --advertise-address (the agent picks its IPv6 address).
# Cases: mesh (init, token, joins and gossip over IPv6: every node sees the others alive), endpoints (each
# WireGuard peer's endpoint is the other node's IPv6 address), overlay (node to node over the mesh, IPv4
# and IPv6 overlay addresses), capture (the underlay carries WireGuard and gossip over IPv6 only, and no
# cluster address in clear), steady (past a resync, each agent programmed its IPv4 and IPv6 routes once:
# the IPv6 routes the kernel lists are the planned ones, not drift).
# Prints progress on stderr and one RESULT {"case", "pass", "detail"} line per case on stdout; exit 0 when
# every case passed. Everything carries a per-run prefix and is removed on exit, also on failure.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN
harness_check ip wg wireguard-go tcpdump jq || exit 1
harness_start wm6u
NODES=3
T0=$(date +%s)
declare -A REPORTED=()
check() { # case ok detail
  REPORTED[$1]=1
  if [ "$2" = 1 ]; then log "PASS $1${3:+: $3}"; else log "FAIL $1: $3"; fi
  result "$1" "$2" "$3"
}
finish() {
  local k
  for k in mesh endpoints overlay capture steady; do [ -n "${REPORTED[$k]:-}" ] || check "$k" 0 "not run"; done
  log "$(( $(date +%s) - T0 )) s (prefix $P)"
  exit "$HARNESS_FAILED"
}
# Like start_agent, advertising node I's IPv6 address; node 3 has no IPv4 address and is given none
# (the agent finds its IPv6 one).
start6() {
  local i=$1; shift
  local advertise=(--advertise-address "fd99::$i")
  [ "$i" = 3 ] && advertise=()
  ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock" \
    --interface "${P}w$i" "${advertise[@]}" <"${AGENT_STDIN:-/dev/null}" >>"$WORK/agent$i.log" 2>&1 &
  AGENT[$i]=$!
}

netns_underlay "$P"
for i in $(seq 1 $NODES); do
  netns_node "$P" "$i"
  ip -n "$P-n$i" addr add "fd99::$i/64" dev eth0 nodad
  [ "$i" = 3 ] && ip -n "$P-n$i" addr del "10.99.0.$i/24" dev eth0
  ip netns exec "$P-n$i" sysctl -qw net.ipv6.conf.all.forwarding=1
done

ip netns exec "$P-n1" "$WM" init --name node1 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" --interface "${P}w1" \
  --advertise-address fd99::1 --cluster-cidr-v6 fd42:244::/48 --prepare-only >"$WORK/token0" 2>"$WORK/init.err" \
  || { log "init failed: $(cat "$WORK/init.err")"; finish; }
start6 1 agent
wait_ready 1 20 || finish
( umask 077; wm 1 token create --ttl 10m --uses $((NODES - 1)) >"$WORK/token" )
for i in $(seq 2 $NODES); do
  start6 "$i" join --token-file "$WORK/token" --name "node$i"
  wait_ready "$i" 20 || finish
done
T_LAST=$(date +%s)   # the last agent's start
capture_start "$WORK/cap.txt" ip or ip6
if wait_until 30 all_alive; then check mesh 1 "3 nodes joined and gossip over IPv6 (token endpoint [fd99::1]:7946)"
else check mesh 0 "not every node sees the others alive: $(for i in 1 2 3; do echo "node$i: $(alive_count "$i")"; done | tr '\n' ' ')"; finish; fi

declare -A KEY=() OV=() OV6=()
for i in $(seq 1 $NODES); do
  s="$(wm "$i" status --json)"
  KEY[$i]="$(jq -r .public_key <<<"$s")"; OV[$i]="$(jq -r .overlay_address <<<"$s")"
  b6="$(jq -r '.pod_cidrs[1]' <<<"$s")"; OV6[$i]="${b6%/*}"
done
problems=""
for i in $(seq 1 $NODES); do for j in $(seq 1 $NODES); do
  [ "$i" = "$j" ] && continue
  ep="$(wg_dump "$i" | awk -v k="${KEY[$j]}" 'NR > 1 && $1 == k { print $3 }')"
  [ "$ep" = "[fd99::$j]:51820" ] || problems+=" node$i's peer node$j: endpoint '$ep';"
done; done
[ -z "$problems" ] && check endpoints 1 "6 peer entries, each at [fd99::N]:51820" || check endpoints 0 "$problems"

problems=""
for i in $(seq 1 $NODES); do for j in $(seq 1 $NODES); do
  [ "$i" = "$j" ] && continue
  ip netns exec "$P-n$i" ping -c 2 -i 0.2 -W 2 "${OV[$j]}" >/dev/null 2>&1 || problems+=" node$i -> ${OV[$j]};"
  ip netns exec "$P-n$i" ping -c 2 -i 0.2 -W 2 "${OV6[$j]}" >/dev/null 2>&1 || problems+=" node$i -> ${OV6[$j]};"
done; done
[ -z "$problems" ] && check overlay 1 "12 pings between the nodes' IPv4 and IPv6 overlay addresses" || check overlay 0 "failed:$problems"

capture_stop
total="$(wc -l <"$WORK/cap.txt")"
wg6="$(grep -cE 'IP6 fd99::[0-9]+\.51820 > fd99::[0-9]+\.51820: UDP' "$WORK/cap.txt")"
v4mesh="$(grep -cE 'IP 10\.99\.0\.[0-9]+\.(51820|7946) ' "$WORK/cap.txt")"
clear="$(grep -cE '10\.244\.[0-9]+\.[0-9]+|fd42:244:' "$WORK/cap.txt")"
if [ "$wg6" -ge 24 ] && [ "$v4mesh" = 0 ] && [ "$clear" = 0 ]; then
  check capture 1 "$total packets, $wg6 WireGuard over IPv6, none over IPv4, 0 with a cluster address in clear"
else
  check capture 0 "$total packets: $wg6 WireGuard over IPv6 (expected >= 24), $v4mesh WireGuard/gossip over IPv4 (expected 0), $clear with a cluster address: $(grep -m3 -E '10\.244\.|fd42:244:' "$WORK/cap.txt" | tr '\n' ' ')"
fi

# The agents resync every 10 s: by then a route the plan and the kernel disagree on would be written again.
wait_for=$(( T_LAST + 12 - $(date +%s) ))
[ "$wait_for" -le 0 ] || sleep "$wait_for"
problems=""
for i in $(seq 1 $NODES); do
  n="$(grep -c "reconciled routes" "$WORK/agent$i.log")"
  [ "$n" = 1 ] && grep -q "added=4 " "$WORK/agent$i.log" || problems+=" node$i: $n route passes: $(grep "reconciled routes" "$WORK/agent$i.log" | tr '\n' ' ');"
  ! grep -q "repaired drift" "$WORK/agent$i.log" || problems+=" node$i repaired drift;"
done
[ -z "$problems" ] && check steady 1 "each agent added its 4 routes (2 per family) once, and nothing after a resync" || check steady 0 "$problems"
finish
