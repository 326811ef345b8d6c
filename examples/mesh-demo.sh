#!/usr/bin/env bash
# A live wiremesh cluster on one machine: N nodes, each a network namespace, on a shared bridge (the
# "underlay"). Runs init, token create, join; each agent writes its node's CNI config (network
# `wiremesh`), and podman runs a real container on every node with it; every container pings every
# other one and fetches a page from it (the server sees the client container's own address); shows
# `wiremesh status`/`peers` and a capture of the underlay: only WireGuard and gossip UDP on it.
#
#   examples/mesh-demo.sh [--nodes N] [--keep]      (root; uses kernel WireGuard if present, else wireguard-go)
#
# Everything it creates carries a per-run prefix and is removed on exit (also on failure), unless --keep.
# podman's storage, containers.conf and the CNI directories are in the run's temp dir: the machine's own
# podman configuration is not touched.
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

# podman with all its state in the run's directory; CNI backend, runc (crun fails on these cgroups).
mkdir -p "$WORK/podman/storage" "$WORK/podman/run" "$WORK/podman/tmp"
printf '[network]\nnetwork_backend = "cni"\n[engine]\nruntime = "runc"\ntmp_dir = "%s"\nevents_logger = "none"\n' \
  "$WORK/podman/tmp" >"$WORK/podman/containers.conf"
printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' "$WORK/podman/run" "$WORK/podman/storage" >"$WORK/podman/storage.conf"
export CONTAINERS_CONF="$WORK/podman/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/podman/storage.conf"
# podman in node i's namespace, reading the CNI config its agent wrote.
pm() { local i=$1; shift; nsenter --net="/run/netns/$P-n$i" podman --network-config-dir "$WORK/n$i/cni" "$@"; }

cleanup() {
  for i in $(seq 1 "$NODES"); do [ -e "/run/netns/$P-n$i" ] && pm "$i" rm -af -t 0 >/dev/null 2>&1; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  netns_cleanup "$P"
  rm -rf "$WORK"
}
if [ "$KEEP" = 0 ]; then netns_trap cleanup; else
  echo "demo: --keep: remove with: CONTAINERS_CONF=$WORK/podman/containers.conf CONTAINERS_STORAGE_CONF=$WORK/podman/storage.conf podman rm -af -t 0 (in each node's namespace), then the namespaces 'ip netns | grep $P'"
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
node() { local i=$1; shift; ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock"; }

say "underlay: bridge in $UL, $NODES nodes on 10.99.0.0/24"
netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done

start_agent() { # i, then the rest of the command
  local i=$1; shift
  ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock" \
    --interface "${P}w$i" --advertise-address "10.99.0.$i" --cni-config-dir "$WORK/n$i/cni" >"$WORK/agent$i.log" 2>&1 &
  PIDS+=($!)
}
wait_ready() { # i
  for _ in $(seq 1 100); do node "$1" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: agent $1 did not come up; its log:" >&2; cat "$WORK/agent$1.log" >&2; return 1
}

say "node 1: wiremesh init"
ip netns exec "$P-n1" "$WM" init --name node1 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
  --interface "${P}w1" --advertise-address 10.99.0.1 --cni-config-dir "$WORK/n1/cni" --prepare-only >"$WORK/token0"
start_agent 1 agent
wait_ready 1
# One token for every other node (tokens admit one node unless given --uses), kept in a file only
# root reads: join reads it with --token-file, so it is in no command line.
( umask 077; node 1 token create --ttl 10m --uses $((NODES - 1)) >"$WORK/join-token" )

for i in $(seq 2 "$NODES"); do
  say "node $i: wiremesh join --token-file FILE"
  start_agent "$i" join --token-file "$WORK/join-token" --name "node$i"
  wait_ready "$i"
done

say "containers: the agent wrote each node's CNI config; podman runs one container per node on it"
echo "node1's $WORK/n1/cni/10-wiremesh.conflist: $(jq -c '.plugins[0] | {type, bridge, mtu, subnet: .ipam.ranges[0][0].subnet, gateway: .ipam.ranges[0][0].gateway}' "$WORK/n1/cni/10-wiremesh.conflist")"
# The image: busybox-static and a CGI answering with the client's address (no registry needed).
mkdir -p "$WORK/img/bin" "$WORK/img/www/cgi-bin"
cp "$(command -v busybox)" "$WORK/img/bin/busybox"
for a in sh ping wget httpd; do ln -s busybox "$WORK/img/bin/$a"; done
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n' >"$WORK/img/www/cgi-bin/ip"
chmod 0755 "$WORK/img/www/cgi-bin/ip"
tar -C "$WORK/img" -cf "$WORK/img.tar" .
podman import -q "$WORK/img.tar" "localhost/${P}img:1" >/dev/null
for i in $(seq 1 "$NODES"); do
  pm "$i" run -d --name "$P-c$i" --network wiremesh --cap-add NET_RAW --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    "localhost/${P}img:1" httpd -f -p 8080 -h /www >/dev/null
  ip="$(pm "$i" inspect -f '{{.NetworkSettings.Networks.wiremesh.IPAddress}}' "$P-c$i")"
  echo "node$i pod CIDR $(node "$i" status --json | jq -r '.pod_cidrs[0]') -> podman container $P-c$i at $ip"
  echo "$ip" >"$WORK/pod$i"
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

say "container to container across nodes: ping, and HTTP (the server answers with the address it sees)"
fail=0
for i in $(seq 1 "$NODES"); do
  for j in $(seq 1 "$NODES"); do
    [ "$i" = "$j" ] && continue
    dst="$(cat "$WORK/pod$j")"
    if pm "$i" exec "$P-c$i" ping -c 2 -i 0.2 -W 2 "$dst" >/dev/null; then
      seen="$(timeout 10 nsenter --net="/run/netns/$P-n$i" podman --network-config-dir "$WORK/n$i/cni" exec "$P-c$i" \
        wget -q -O - "http://$dst:8080/cgi-bin/ip" 2>/dev/null | tr -d '[]' | sed 's/^::ffff://' || true)"
      echo "container on node$i ($(cat "$WORK/pod$i")) -> container on node$j ($dst): ping ok; HTTP server saw ${seen:-nothing}"
      [ "$seen" = "$(cat "$WORK/pod$i")" ] || fail=1
    else
      echo "container on node$i -> container on node$j ($dst): ping FAILED"; fail=1
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
clear="$(grep -c '10\.244\.' "$CAP" || true)"
wgpk="$(grep -c '\.51820[ :]' "$CAP" || true)"
gossip="$(grep -c '\.7946[ :]' "$CAP" || true)"
echo "WireGuard packets (UDP 51820) — the containers' pings and HTTP, encrypted:"
awk '/\.51820[ :]/ && n++ < 6' "$CAP"   # not grep | head: pipefail and SIGPIPE
echo "…"
echo "packets on the underlay: $(wc -l <"$CAP"); WireGuard: $wgpk; gossip (UDP 7946, sealed): $gossip; container packets in clear: $clear"
if [ "$clear" != 0 ]; then echo "demo: clear-text container packets seen on the underlay!" >&2; fail=1; fi
[ "$fail" = 0 ] && say "demo passed: every container reached every other one by its own address, only encrypted UDP on the underlay"
exit "$fail"
