#!/usr/bin/env bash
# A live wiremesh cluster on one machine: N nodes and one pod per node, each a network namespace;
# the nodes share a bridge (the "underlay"). Runs init, token create, join; pings every pod from
# every pod; shows `wiremesh status`/`peers`; captures the underlay to show only WireGuard UDP on it.
#
#   examples/mesh-demo.sh [--nodes N] [--keep]      (root; uses kernel WireGuard if present, else wireguard-go)
#
# Everything it creates carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -euo pipefail
NODES=3
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--nodes N] [--keep]" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib/netns.sh"
WM="${WIREMESH:-$ROOT/.build/debug/wiremesh}"
[ -x "$WM" ] || { echo "demo: $WM not found; run 'swift build' first" >&2; exit 1; }
P="wmd$(printf '%04x' $((RANDOM % 65536)))"   # per-run prefix
WORK="$(mktemp -d /tmp/$P.XXXX)"
UL="$P-ul"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  netns_cleanup "$P"
  rm -rf "$WORK"
}
if [ "$KEEP" = 0 ]; then netns_trap cleanup; else echo "demo: --keep: remove with 'ip netns | grep $P'"; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
node() { local i=$1; shift; ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock"; }

say "underlay: bridge in $UL, $NODES nodes on 10.99.0.0/24"
netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done

start_agent() { # i, then the rest of the command
  local i=$1; shift
  ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock" \
    --interface "${P}w$i" --advertise-address "10.99.0.$i" >"$WORK/agent$i.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() { # i
  for _ in $(seq 1 100); do node "$1" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: agent $1 did not come up; its log:" >&2; cat "$WORK/agent$1.log" >&2; return 1
}

say "node 1: wiremesh init"
ip netns exec "$P-n1" "$WM" init --name node1 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
  --interface "${P}w1" --advertise-address 10.99.0.1 --prepare-only >"$WORK/token"
start_agent 1 agent
wait_ready 1
TOKEN="$(node 1 token create --ttl 10m)"
echo "token: ${TOKEN:0:40}…"

for i in $(seq 2 "$NODES"); do
  say "node $i: wiremesh join TOKEN"
  start_agent "$i" join "$TOKEN" --name "node$i"
  wait_ready "$i"
done

say "pods: one namespace per node, address from the node's pod CIDR"
for i in $(seq 1 "$NODES"); do
  cidr="$(node "$i" status --json | jq -r '.pod_cidrs[0]')"
  pod="$(netns_pod_address "$cidr")"
  echo "node$i pod CIDR $cidr -> pod $pod"
  echo "$pod" >"$WORK/pod$i"
  netns_pod "$P" "$i" "$pod"
done

say "waiting until every node has every peer"
for _ in $(seq 1 150); do
  ok=1
  for i in $(seq 1 "$NODES"); do
    n="$(node "$i" peers --json | jq '[.[] | select(.state == "alive")] | length')"
    [ "$n" -eq $((NODES - 1)) ] || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.2
done

CAP="$WORK/underlay.txt"
ip netns exec "$UL" tcpdump -l -n -i br0 -c 2000 'not arp' >"$CAP" 2>/dev/null &
TCPDUMP=$!
PIDS+=($TCPDUMP)
sleep 0.5

say "pod to pod pings across nodes"
fail=0
for i in $(seq 1 "$NODES"); do
  for j in $(seq 1 "$NODES"); do
    [ "$i" = "$j" ] && continue
    dst="$(cat "$WORK/pod$j")"
    if ip netns exec "$P-p$i" ping -c 2 -i 0.2 -W 2 "$dst" >/dev/null; then
      echo "pod on node$i -> pod on node$j ($dst): ok"
    else
      echo "pod on node$i -> pod on node$j ($dst): FAILED"; fail=1
    fi
  done
done
sleep 0.3
kill "$TCPDUMP" 2>/dev/null || true
wait "$TCPDUMP" 2>/dev/null || true

say "wiremesh status (node 1) and peers (node 1)"
node 1 status
node 1 peers

say "underlay capture: what crossed the bridge during the pings"
icmp="$(grep 'ICMP' "$CAP" | grep -c '10\.244\.' || true)"
wgpk="$(grep -c '\.51820[ :]' "$CAP" || true)"
gossip="$(grep -c '\.7946[ :]' "$CAP" || true)"
echo "WireGuard packets (UDP 51820) — the pods' pings, encrypted:"
grep '\.51820[ :]' "$CAP" | head -6
echo "…"
echo "packets on the underlay: $(wc -l <"$CAP"); WireGuard: $wgpk; gossip (UDP 7946, sealed): $gossip; pod ICMP in clear: $icmp"
if [ "$icmp" != 0 ]; then echo "demo: clear-text ICMP seen on the underlay!" >&2; fail=1; fi
[ "$fail" = 0 ] && say "demo passed: every pod reached every other pod, only encrypted UDP on the underlay"
exit "$fail"
