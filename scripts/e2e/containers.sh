#!/usr/bin/env bash
# Containers on the mesh, end to end (issue 13): 3 wiremesh nodes (network namespaces on a bridge,
# wireguard-go), each running a real podman container on the `wiremesh` CNI network its agent wrote,
# plus an "internet" namespace on the underlay (10.99.0.200 and fd99::200, the nodes' default gateway).
# The cluster is dual-stack (an IPv6 pod range beside the IPv4 one): every container has an address of
# each family.
#
#   scripts/e2e/containers.sh [--keep]        (root; WIREMESH_BIN=path/to/wiremesh, default .build/debug)
#
# Cases: conflist, ping, tcp (the server sees the client container's own address), ping6, tcp6 (the
# same over IPv6), capture (no clear-text cluster packet of either family on the underlay), egress and
# egress6 (masqueraded to the node's address of that family), egress-table
# (nft as the reference; a restart does not replace it; flushed, it comes back), release (podman rm
# frees the address), node-to-pod, service (a kube-proxy-style DNAT to a container on another node,
# from the node and from a container), portmap (a published port reached from outside), bad-dir (join
# with an unwritable CNI directory), leave, cleanup.
# Prints progress on stderr and one RESULT {"case", "pass", "detail"} line per case on stdout (a case
# that did not get to run: "not run"); exit 0 when every case passed.
# Everything carries a per-run prefix and is removed on exit, also on failure: containers (podman rm in
# each node, before its namespace goes), namespaces, processes. podman's storage, containers.conf and
# the CNI directories live in the run's temp dir: the machine's own podman config is not touched.
set -uo pipefail
# The Swift test runner starts this script with most signals blocked (SIGCHLD, SIGTERM, SIGURG, ...), and
# children inherit the mask: podman (Go) then hangs in `exec`, and neither TERM nor `timeout` works.
# Start again with an empty mask.
if [ -z "${CONTAINERS_E2E_UNMASKED:-}" ] && ! grep -qE '^SigBlk:[[:space:]]*0+$' /proc/$$/status; then
  export CONTAINERS_E2E_UNMASKED=1
  exec python3 -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])' "$0" "$@"
fi
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent warns about WIREMESH_* variables it does not know
harness_check ip wg wireguard-go podman runc nft tcpdump jq busybox nsenter unshare || exit 1
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] \
  || { log "the CNI plugins are missing from /usr/lib/cni: run scripts/setup (containernetworking-plugins)"; exit 1; }
harness_start wmc
# Each node has its own CNI directory (--cni-config-dir, saved by join); the variable would win over it.
unset WIREMESH_CNI_CONFIG_DIR
NODES=3
VIP=10.96.0.10
CLUSTER=10.244.0.0/16
CLUSTER6=fd42:244::/48
T0=$(date +%s)
declare -A CIP=() CIP6=()    # node -> its container's IPv4 / IPv6 address

# podman, all state in the run's directory (CNI results cache aside: libcni keeps it in /var/lib/cni,
# one file per container, removed with the container).
mkdir -p "$WORK/podman/storage" "$WORK/podman/run" "$WORK/podman/tmp"
cat >"$WORK/podman/containers.conf" <<EOF
[network]
network_backend = "cni"
[engine]
runtime = "runc"
tmp_dir = "$WORK/podman/tmp"
events_logger = "none"
EOF
cat >"$WORK/podman/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$WORK/podman/run"
graphroot = "$WORK/podman/storage"
EOF
export CONTAINERS_CONF="$WORK/podman/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/podman/storage.conf"
# podman in node i's network namespace (nsenter: `ip netns exec` remounts /sys and runc then finds no cgroups).
pm() { local i=$1; shift; nsenter --net="/run/netns/$P-n$i" podman --network-config-dir "$WORK/n$i/cni" "$@"; }
IMAGE="localhost/${P}img:1"
RUNOPTS=(--network wiremesh --cap-add NET_RAW --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# Containers go before their namespaces (podman keeps state outside them).
before_cleanup() {
  local i
  for i in $(seq 1 $NODES); do
    [ -e "/run/netns/$P-n$i" ] && pm "$i" rm -af -t 0 >/dev/null 2>&1
  done
}

# start_agent with node I's own CNI directory (conflist and host-local store in its state).
start_node() { start_agent "$1" "${@:2}" --cni-config-dir "$WORK/n$1/cni"; }
fetch() { timeout 10 "$@" 2>/dev/null; }   # busybox wget has no working timeout of its own here
# wget in node i's container, bounded from outside.
cfetch() { local i=$1; shift; timeout 10 nsenter --net="/run/netns/$P-n$i" podman --network-config-dir "$WORK/n$i/cni" exec "$P-c$i" wget -q -O - "$1" 2>/dev/null; }
declare -A REPORTED=()
check() { # case ok detail
  REPORTED[$1]=1
  if [ "$2" = 1 ]; then log "PASS $1${3:+: $3}"; else log "FAIL $1: $3"; fi
  result "$1" "$2" "$3"
}
finish() { # reports the cases that did not get to run
  local k
  for k in bad-dir conflist ping tcp ping6 tcp6 node-to-pod service egress egress6 portmap capture egress-table release leave cleanup; do
    [ -n "${REPORTED[$k]:-}" ] || check "$k" 0 "not run"
  done
  log "$(( $(date +%s) - T0 )) s (prefix $P)"
  exit "$HARNESS_FAILED"
}

# ---------------------------------------------------------------------------------------------
# The image: busybox-static, and a CGI that answers with the client's address.
mkdir -p "$WORK/img/bin" "$WORK/img/www/cgi-bin"
cp "$(command -v busybox)" "$WORK/img/bin/busybox"
for a in sh ping wget httpd ip sleep cat echo; do ln -s busybox "$WORK/img/bin/$a"; done
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n' >"$WORK/img/www/cgi-bin/ip"
chmod 0755 "$WORK/img/www/cgi-bin/ip"
tar -C "$WORK/img" -cf "$WORK/img.tar" .
podman import "$WORK/img.tar" "$IMAGE" >/dev/null || { log "podman import failed"; finish; }

# Underlay, nodes, "internet" (10.99.0.200, fd99::200: answers HTTP with the client's address, no
# route to pods). The underlay has IPv6 too (fd99::N, no DAD wait) for the containers' IPv6 egress.
netns_underlay "$P"
for i in $(seq 1 $((NODES + 1))); do
  netns_node "$P" "$i"; ip -n "$P-n$i" route add default via 10.99.0.200
  ip -n "$P-n$i" addr add "fd99::$i/64" dev eth0 nodad; ip -n "$P-n$i" -6 route add default via fd99::200
done
netns_attach "$P" "$P-inet" "${P}ui" 10.99.0.200
ip -n "$P-inet" addr add fd99::200/64 dev eth0 nodad
ip netns exec "$P-inet" busybox httpd -p 80 -h "$WORK/img/www"

# ---------------------------------------------------------------------------------------------
log "bad input: join with an unwritable (read-only) CNI directory"
mkdir -p "$WORK/ro"
ip netns exec "$P-n1" "$WM" init --name node1 --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
  --interface "${P}w1" --advertise-address 10.99.0.1 --cni-config-dir "$WORK/n1/cni" --cluster-cidr "$CLUSTER" --cluster-cidr-v6 "$CLUSTER6" --prepare-only >"$WORK/token0" 2>"$WORK/init.err" \
  || { log "init failed: $(cat "$WORK/init.err")"; finish; }
start_node 1 agent
wait_ready 1 20 || finish
# One token for nodes 2..NODES (a token admits one node unless given --uses); the refused join below
# spends no use.
( umask 077; wm 1 token create --ttl 10m --uses $((NODES - 1)) >"$WORK/token" )
TOKEN="$(cat "$WORK/token")"
bad=4
ip netns exec "$P-n$bad" unshare -m sh -c 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"' sh "$WORK/ro" \
  "$WM" join "$TOKEN" --name "node$bad" --state-dir "$WORK/n$bad" --control-socket "$WORK/n$bad.sock" \
  --interface "${P}w$bad" --advertise-address "10.99.0.$bad" --cni-config-dir "$WORK/ro/cni" >"$WORK/bad.out" 2>"$WORK/bad.err"
rc=$?
err="$(tr '\n' ' ' <"$WORK/bad.err")"
if [ "$rc" != 0 ] && grep -q "CNI config" "$WORK/bad.err" && grep -qF "$WORK/ro/cni" "$WORK/bad.err" \
   && [ ! -e "$WORK/n$bad" ] && [ -z "$(ls -A "$WORK/ro")" ] && ! ip -n "$P-n$bad" link show "${P}w$bad" >/dev/null 2>&1; then
  check bad-dir 1 "exit $rc: $err"
else
  check bad-dir 0 "exit $rc, stderr: $err; state dir: $(ls -A "$WORK/n$bad" 2>&1 | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------------------------
log "mesh: node 1 created the cluster; nodes 2..$NODES join"
for i in $(seq 2 $NODES); do
  # The token from its file (--token-file, as the Kubernetes example does), the last node's from stdin
  # (`join -`): in no command line.
  if [ "$i" = "$NODES" ]; then AGENT_STDIN="$WORK/token" start_node "$i" join - --name "node$i"; else start_node "$i" join --token-file "$WORK/token" --name "node$i"; fi
  wait_ready "$i" 20 || finish
done
wait_until 30 all_alive || { log "not every node sees $((NODES - 1)) alive peers"; finish; }
declare -A BLOCK=() BLOCK6=() OVERLAY=() OVERLAY6=() MTU=()
for i in $(seq 1 $NODES); do
  s="$(wm "$i" status --json)"
  BLOCK[$i]="$(jq -r '.pod_cidrs[0]' <<<"$s")"; BLOCK6[$i]="$(jq -r '.pod_cidrs[1]' <<<"$s")"
  OVERLAY[$i]="$(jq -r '.overlay_address' <<<"$s")"; OVERLAY6[$i]="$(jq -r '.overlay_address_v6' <<<"$s")"; MTU[$i]="$(jq -r '.mtu' <<<"$s")"
  log "node$i blocks ${BLOCK[$i]} ${BLOCK6[$i]}, overlay ${OVERLAY[$i]} ${OVERLAY6[$i]}, mtu ${MTU[$i]}"
done

problems=""
for i in $(seq 1 $NODES); do
  f="$WORK/n$i/cni/10-wiremesh.conflist"
  [ -f "$f" ] || { problems+=" node$i: no $f;"; continue; }
  got="$(jq -c '[.name, .plugins[0].type, .plugins[0].ipam.ranges[0][0].subnet, .plugins[0].ipam.ranges[1][0].subnet, .plugins[0].mtu, .plugins[0].ipMasq, .plugins[0].ipam.dataDir, .plugins[1].type]' "$f")"
  want="$(jq -nc --arg b "${BLOCK[$i]}" --arg b6 "${BLOCK6[$i]}" --argjson m "${MTU[$i]}" --arg d "$WORK/n$i/cni-ipam" '["wiremesh", "bridge", $b, $b6, $m, false, $d, "portmap"]')"
  [ "$got" = "$want" ] || problems+=" node$i: $got, expected $want;"
  # `status` names the IPv6 overlay address too: the first of the node's IPv6 block.
  first6="$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_network(sys.argv[1]).network_address)' "${BLOCK6[$i]}")"
  [ "${OVERLAY6[$i]}" = "$first6" ] || problems+=" node$i: status overlay_address_v6 ${OVERLAY6[$i]}, expected $first6;"
done
[ -z "$problems" ] && check conflist 1 "3 conflists as planned (an IPv4 and an IPv6 range each)" || check conflist 0 "$problems"

# ---------------------------------------------------------------------------------------------
log "containers: one per node (busybox httpd on :8080)"
for i in $(seq 1 $NODES); do
  publish=(); [ "$i" = 2 ] && publish=(--publish 8081:8080)   # node 2 publishes its container's port (portmap)
  pm "$i" run -d --name "$P-c$i" "${RUNOPTS[@]}" "${publish[@]}" "$IMAGE" httpd -f -p 8080 -h /www >/dev/null 2>"$WORK/run$i.err" \
    || { log "podman run on node $i failed: $(cat "$WORK/run$i.err")"; finish; }
  CIP[$i]="$(pm "$i" inspect -f '{{.NetworkSettings.Networks.wiremesh.IPAddress}}' "$P-c$i")"
  CIP6[$i]="$(pm "$i" inspect -f '{{.NetworkSettings.Networks.wiremesh.GlobalIPv6Address}}' "$P-c$i")"
  log "node$i container ${CIP[$i]} ${CIP6[$i]}"
done

capture_start "$WORK/cap.txt" ip or ip6

# Every container pings every other one at its address in the array named $1 (CIP, CIP6); prints the
# pairs that failed.
ping_pairs() {
  local -n to=$1
  local i j failed=""
  for i in $(seq 1 $NODES); do for j in $(seq 1 $NODES); do
    if [ "$i" != "$j" ]; then
      pm "$i" exec "$P-c$i" ping -c 2 -i 0.2 -W 2 "${to[$j]}" >/dev/null 2>&1 || failed+=" $i->$j"
    fi
  done; done
  echo "$failed"
}
# Every container fetches the address page of every other one at its address in the array named $1,
# written into URLs by the printf format $2 (an IPv6 address goes in brackets); prints the pairs whose
# server did not see the client container's own address.
fetch_pairs() {
  local -n at=$1
  local i j seen host failed=""
  for i in $(seq 1 $NODES); do for j in $(seq 1 $NODES); do
    if [ "$i" != "$j" ]; then
      # shellcheck disable=SC2059  # the format is the caller's
      host="$(printf "$2" "${at[$j]}")"
      seen="$(cfetch "$i" "http://$host:8080/cgi-bin/ip")"
      [[ "$seen" == *"${at[$i]}]"* ]] || failed+=" $i->$j saw '${seen}' (client ${at[$i]});"
    fi
  done; done
  echo "$failed"
}

failed="$(ping_pairs CIP)"
[ -z "$failed" ] && check ping 1 "6 container pairs" || check ping 0 "failed:$failed"
failed="$(fetch_pairs CIP %s)"
[ -z "$failed" ] && check tcp 1 "6 pairs, each server saw the client container's address" || check tcp 0 "$failed"

log "IPv6: the same between the containers' own IPv6 addresses"
failed="$(ping_pairs CIP6)"
[ -z "$failed" ] && check ping6 1 "6 container pairs over IPv6" || check ping6 0 "failed:$failed (addresses: ${CIP6[*]})"
failed="$(fetch_pairs CIP6 '[%s]')"
[ -z "$failed" ] && check tcp6 1 "6 pairs over IPv6, each server saw the client container's own IPv6 address" || check tcp6 0 "$failed"

log "node to pod: node 1's own processes to the container on node 2"
problems=""
ip netns exec "$P-n1" ping -c 2 -i 0.2 -W 2 "${CIP[2]}" >/dev/null 2>&1 || problems+=" ping node1 -> ${CIP[2]} failed;"
seen="$(fetch ip netns exec "$P-n1" busybox wget -q -O - "http://${CIP[2]}:8080/cgi-bin/ip")"
[[ "$seen" == *"${OVERLAY[1]}]"* ]] || problems+=" HTTP node1 -> ${CIP[2]}: server saw '$seen', expected node1's overlay ${OVERLAY[1]};"
pm 2 exec "$P-c2" ping -c 2 -i 0.2 -W 2 "${OVERLAY[1]}" >/dev/null 2>&1 || problems+=" ping container on node2 -> node1 overlay failed;"
[ -z "$problems" ] && check node-to-pod 1 "ping and HTTP both ways; the server saw ${OVERLAY[1]}" || check node-to-pod 0 "$problems"

log "service address: $VIP:80 DNATed on node 1 (as kube-proxy does) to the container on node 2"
ip netns exec "$P-n1" nft -f - <<EOF
table ip ${P}kp {
  chain out { type nat hook output priority -100; ip daddr $VIP tcp dport 80 dnat to ${CIP[2]}:8080; }
  chain pre { type nat hook prerouting priority -100; ip daddr $VIP tcp dport 80 dnat to ${CIP[2]}:8080; }
}
EOF
problems=""
seen="$(fetch ip netns exec "$P-n1" busybox wget -q -O - "http://$VIP/cgi-bin/ip")"
[[ "$seen" == *"${OVERLAY[1]}]"* ]] || problems+=" from node1: server saw '$seen', expected ${OVERLAY[1]};"
seen="$(cfetch 1 "http://$VIP/cgi-bin/ip")"
[[ "$seen" == *"${CIP[1]}]"* ]] || problems+=" from the container on node1: server saw '$seen', expected ${CIP[1]};"
# Control: without the agent's snat rule the node's own request to the service gets no answer (its
# source is the underlay address, which node 2's WireGuard drops). The agent puts the rule back.
handle="$(ip netns exec "$P-n1" nft -a list chain ip wiremesh postrouting | awk '/snat to/ { print $NF }')"
ip netns exec "$P-n1" nft delete rule ip wiremesh postrouting handle "$handle"
seen="$(timeout 3 ip netns exec "$P-n1" busybox wget -q -O - "http://$VIP/cgi-bin/ip" 2>/dev/null)"
[ -z "$seen" ] || problems+=" without the snat rule node1 still reached the service (server saw '$seen'): the check proves nothing;"
snat_back() { ip netns exec "$P-n1" nft list chain ip wiremesh postrouting | grep -q "snat to ${OVERLAY[1]}"; }
wait_until 30 snat_back || problems+=" the agent did not put its snat rule back within 30 s;"
[ -z "$problems" ] && check service 1 "from the node (seen as its overlay; no answer without the agent's snat rule, which the agent put back) and from a container (seen as itself)" || check service 0 "$problems"

log "egress: containers to the internet namespace"
failed=""
for i in $(seq 1 $NODES); do
  seen="$(cfetch "$i" "http://10.99.0.200/cgi-bin/ip")"
  [[ "$seen" == *"10.99.0.$i]"* ]] || failed+=" node$i: internet saw '$seen', expected 10.99.0.$i;"
done
[ -z "$failed" ] && check egress 1 "each container seen as its node's underlay address" || check egress 0 "$failed"
failed=""
for i in $(seq 1 $NODES); do
  seen="$(cfetch "$i" "http://[fd99::200]/cgi-bin/ip")"
  [[ "$seen" == *"fd99::$i]"* ]] || failed+=" node$i: internet saw '$seen', expected fd99::$i;"
done
[ -z "$failed" ] && check egress6 1 "each container seen as its node's IPv6 underlay address" || check egress6 0 "$failed"

log "published port: the internet namespace to node 2's address, port 8081 (portmap) -> its container"
seen="$(fetch ip netns exec "$P-inet" busybox wget -q -O - "http://10.99.0.2:8081/cgi-bin/ip")"
[[ "$seen" == *"10.99.0.200]"* ]] && check portmap 1 "the container answered, seeing the client's own address" \
  || check portmap 0 "got '$seen', expected the client's address 10.99.0.200"

capture_stop
total="$(wc -l <"$WORK/cap.txt")"
clear="$(grep -cE '10\.244\.[0-9]+\.[0-9]+|fd42:244:' "$WORK/cap.txt")"
wgpk="$(grep -cE '\.51820 > .*\.51820: UDP' "$WORK/cap.txt")"
if [ "$clear" = 0 ] && [ "$wgpk" -ge 48 ]; then check capture 1 "$total packets (IPv4 and IPv6), $wgpk WireGuard, 0 with a cluster address of either family in clear"
else check capture 0 "$total packets, $wgpk WireGuard (expected >= 48), $clear with a cluster address: $(grep -m3 -E '10\.244\.|fd42:244:' "$WORK/cap.txt" | tr '\n' ' ')"; fi

# ---------------------------------------------------------------------------------------------
log "egress table: nft as the reference, kept across a restart, restored after a flush"
# nft's listing of the agent's egress table of FAMILY (ip, ip6; also its address keyword) as planned for
# RANGE, BLOCK and OVERLAY.
egress_table() {
  printf 'table %s wiremesh {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n' "$1"
  printf '\t\t%s saddr %s %s daddr %s return\n\t\t%s saddr %s masquerade\n' "$1" "$2" "$1" "$2" "$1" "$3"
  printf '\t\toifname "%s" snat to %s\n\t}\n}\n' "${P}w1" "$4"
}
want="$(egress_table ip "$CLUSTER" "${BLOCK[1]}" "${OVERLAY[1]}")"
want6="$(egress_table ip6 "$CLUSTER6" "${BLOCK6[1]}" "${BLOCK6[1]%/*}")"
problems=""
got="$(ip netns exec "$P-n1" nft list table ip wiremesh 2>&1)"
[ "$got" = "$want" ] || problems+=" table differs: got [$got] expected [$want];"
got="$(ip netns exec "$P-n1" nft list table ip6 wiremesh 2>&1)"
[ "$got" = "$want6" ] || problems+=" IPv6 table differs: got [$got] expected [$want6];"
tables_with_handles() { ip netns exec "$P-n1" nft -a list table ip wiremesh 2>&1; ip netns exec "$P-n1" nft -a list table ip6 wiremesh 2>&1; }
before="$(tables_with_handles)"
stop_agent 1
start_node 1 agent
wait_until 20 ready 1 || problems+=" agent 1 did not come back;"
after="$(tables_with_handles)"
[ "$before" = "$after" ] || problems+=" the restart replaced the table (handles changed);"
ip netns exec "$P-n1" nft flush table ip wiremesh
restored() { [ "$(ip netns exec "$P-n1" nft list table ip wiremesh 2>&1)" = "$want" ]; }
wait_until 30 restored || problems+=" a flushed table was not restored within 30 s;"
[ -z "$problems" ] && check egress-table 1 "both families as planned; same handles after a restart; restored after a flush" || check egress-table 0 "$problems"

# ---------------------------------------------------------------------------------------------
log "podman rm frees the container's address"
store="$WORK/n3/cni-ipam/wiremesh"
had=0; [ -f "$store/${CIP[3]}" ] && had=1
pm 3 rm -f -t 0 "$P-c3" >/dev/null 2>&1
if [ "$had" = 1 ] && [ ! -e "$store/${CIP[3]}" ]; then check release 1 "${CIP[3]} reserved in $store while it ran, free after rm"
else check release 0 "reserved while running: $had; after rm: $(ls "$store" 2>&1 | tr '\n' ' ')"; fi

log "leave: node 3"
problems=""
wm 3 leave >/dev/null 2>&1 || problems+=" leave failed;"
gone() { ! kill -0 "${AGENT[3]}" 2>/dev/null; }
wait_until 20 gone || problems+=" agent 3 still running;"
stop_agent 3
[ -e "$WORK/n3/cni/10-wiremesh.conflist" ] && problems+=" conflist still there;"
ip netns exec "$P-n3" nft list table ip wiremesh >/dev/null 2>&1 && problems+=" egress table still there;"
ip netns exec "$P-n3" nft list table ip6 wiremesh >/dev/null 2>&1 && problems+=" IPv6 egress table still there;"
[ -z "$problems" ] && check leave 1 "conflist and both tables removed" || check leave 0 "$problems"

for i in 1 2; do pm "$i" rm -f -t 0 "$P-c$i" >/dev/null 2>&1; done
left="$(podman ps -a -q | wc -l)"
[ "$left" = 0 ] && check cleanup 1 "no container left" || check cleanup 0 "$left containers left: $(podman ps -a --format '{{.Names}}' | tr '\n' ' ')"
finish
