# Kernel WireGuard end-to-end cases, run inside the test VM (busybox sh) by vm/kernel-e2e.
# MODE (file /wmtest/mode): "wiremesh" drives links, devices and routes with the project binary and
# checks them with the reference tools; "reference" does the same steps with `ip`/`wg` only, which
# proves the harness itself (used while the project commands were being written).
. /wmtest/lib.sh
. /wmtest/mesh.sh
. /wmtest/cni.sh
MODE=$(cat /wmtest/mode 2>/dev/null || echo wiremesh)
echo "mode=$MODE"
# The kernel would try /sbin/modprobe on its own when a wireguard link or genl family is requested;
# point it at nothing so "before modprobe" really means "no WireGuard in this kernel".
echo /nonexistent > /proc/sys/kernel/modprobe

# link_add NETNS IFACE CIDR: a WireGuard link with MTU 1420, the address, up.
link_add() {
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec "$1" wiremesh link add "$2" --mtu 1420 --address "$3" --up
  else
    $IP -n "$1" link add "$2" mtu 1420 type wireguard && $IP -n "$1" addr add "$3" dev "$2" && $IP -n "$1" link set "$2" up
  fi
}
# dev_set NETNS IFACE FILE: apply a wg-format config.
dev_set() {
  if [ "$MODE" = wiremesh ]; then $IP netns exec "$1" wiremesh device set "$2" "$3"
  else $IP netns exec "$1" wg syncconf "$2" "$3"; fi
}
# route_add NETNS PREFIX IFACE
route_add() {
  if [ "$MODE" = wiremesh ]; then $IP netns exec "$1" wiremesh route add "$2" --dev "$3"
  else $IP -n "$1" route add "$2" dev "$3" proto 0x77; fi
}

case_no_module() {
  $IP netns add wmnomod || fail "ip netns add"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmnomod wiremesh link add wgnomod --mtu 1420 >/tmp/nomod.out 2>/tmp/nomod.err
  else
    $IP -n wmnomod link add wgnomod type wireguard >/tmp/nomod.out 2>/tmp/nomod.err
  fi
  rc=$?
  echo "exit status: $rc"; echo "stderr: $(cat /tmp/nomod.err)"
  [ "$rc" -ne 0 ] || fail "creating a WireGuard link succeeded before the module was loaded"
  # The project must name WireGuard; iproute2 (reference mode) only knows "Unknown device type".
  if [ "$MODE" = wiremesh ]; then want=wireguard; else want='unknown device type'; fi
  grep -qi "$want" /tmp/nomod.err || fail "the error does not say that WireGuard is missing: $(cat /tmp/nomod.err)"
  [ "$(wc -l < /tmp/nomod.err)" -le 2 ] || fail "the error is not a short message"
  if $IP -n wmnomod link show wgnomod >/dev/null 2>&1; then fail "a link wgnomod was left behind"; fi
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmnomod wiremesh device show wgnomod >/tmp/nomod2.out 2>/tmp/nomod2.err && fail "device show succeeded without WireGuard"
    echo "device show stderr: $(cat /tmp/nomod2.err)"
  fi
  $IP netns del wmnomod
  echo "OK: exit $rc: $(head -n 1 /tmp/nomod.err)"
}

# Two namespaces joined by a veth underlay (IPv4 192.168.77.0/24 and IPv6 fd77::/64), one WireGuard
# link each: A = 10.77.0.1/24 with "pod range" 10.78.1.0/24, B = 10.77.0.2/24 with 10.78.2.0/24.
case_two_netns() {
  for n in wmA wmB; do $IP netns add $n || fail "ip netns add $n"; $IP -n $n link set lo up; done
  $IP link add vA netns wmA type veth peer name vB netns wmB || fail "veth"
  $IP -n wmA addr add 192.168.77.1/24 dev vA && $IP -n wmB addr add 192.168.77.2/24 dev vB
  $IP -n wmA addr add fd77::1/64 dev vA nodad && $IP -n wmB addr add fd77::2/64 dev vB nodad
  $IP -n wmA link set vA up && $IP -n wmB link set vB up
  $IP -n wmB addr add 10.78.2.1/32 dev lo && $IP -n wmB addr add fd78:2::1/128 dev lo nodad
  $IP -n wmA addr add 10.78.1.1/32 dev lo && $IP -n wmA addr add fd78:1::1/128 dev lo nodad
  privA=$(wg genkey); privB=$(wg genkey); psk=$(wg genpsk)
  pubA=$(echo "$privA" | wg pubkey); pubB=$(echo "$privB" | wg pubkey)
  # A reaches B over IPv6, B reaches A over IPv4; both carry IPv4 and IPv6 allowed IPs. No keepalive,
  # so nothing is sent before the dumps are compared and A's ping makes the first handshake (over IPv6).
  cat > /tmp/A.conf <<EOC
[Interface]
PrivateKey = $privA
ListenPort = 51820

[Peer]
PublicKey = $pubB
PresharedKey = $psk
Endpoint = [fd77::2]:51821
AllowedIPs = 10.77.0.2/32, 10.78.2.0/24, fd78:2::/64
EOC
  cat > /tmp/B.conf <<EOC
[Interface]
PrivateKey = $privB
ListenPort = 51821

[Peer]
PublicKey = $pubA
PresharedKey = $psk
Endpoint = 192.168.77.1:51820
AllowedIPs = 10.77.0.1/32, 10.78.1.0/24, fd78:1::/64
EOC
  link_add wmA wgA 10.77.0.1/24 || fail "link add wgA"
  link_add wmB wgB 10.77.0.2/24 || fail "link add wgB"
  $IP -n wmA -d link show wgA | grep -q 'mtu 1420' || fail "wgA has not MTU 1420: $($IP -n wmA link show wgA)"
  $IP -n wmA -d link show wgA | grep -q 'wireguard' || fail "wgA is not a wireguard link"
  $IP -n wmA addr show wgA | grep -q 'inet 10.77.0.1/24' || fail "wgA lacks 10.77.0.1/24"
  $IP -n wmA link show wgA | grep -q 'UP' || fail "wgA is not up"
  dev_set wmA wgA /tmp/A.conf || fail "device set wgA"
  dev_set wmB wgB /tmp/B.conf || fail "device set wgB"
  route_add wmA 10.78.2.0/24 wgA || fail "route add 10.78.2.0/24 in wmA"
  route_add wmB 10.78.1.0/24 wgB || fail "route add 10.78.1.0/24 in wmB"
  route_add wmA fd78:2::/64 wgA || fail "route add fd78:2::/64 in wmA"
  route_add wmB fd78:1::/64 wgB || fail "route add fd78:1::/64 in wmB"
  # Exactly what was asked, byte for byte, before any traffic.
  for n in A B; do
    conf2dump /tmp/$n.conf > /tmp/$n.want; $IP netns exec wm$n wg show wg$n dump > /tmp/$n.got
    echo "wg show wg$n dump:"; cat /tmp/$n.got
    cmp -s /tmp/$n.want /tmp/$n.got || { diff /tmp/$n.want /tmp/$n.got; fail "wg show wg$n dump differs from the config"; }
  done
  $IP -n wmA route show 10.78.2.0/24 | grep -q 'dev wgA' || fail "no route 10.78.2.0/24 dev wgA: $($IP -n wmA route)"
  $IP netns exec wmA ping -c 3 -i 0.3 -W 3 10.77.0.2 || fail "A cannot ping B's tunnel address 10.77.0.2"
  $IP netns exec wmB ping -c 2 -i 0.3 -W 3 10.77.0.1 || fail "B cannot ping A's tunnel address 10.77.0.1"
  $IP netns exec wmA ping -c 2 -i 0.3 -W 3 10.78.2.1 || fail "A cannot ping 10.78.2.1 in B's routed range"
  $IP netns exec wmB ping -c 2 -i 0.3 -W 3 10.78.1.1 || fail "B cannot ping 10.78.1.1 in A's routed range"
  $IP netns exec wmA ping -6 -c 2 -i 0.3 -W 3 fd78:2::1 || fail "A cannot ping fd78:2::1 in B's routed IPv6 range"
  $IP netns exec wmA wg show wgA dump
  hs=$($IP netns exec wmA wg show wgA latest-handshakes | awk '{print $2}')
  [ "${hs:-0}" -gt 0 ] || fail "no handshake recorded on wgA"
  echo "OK: dumps match the configs exactly; IPv4 and IPv6 pings pass both ways (IPv6 and IPv4 underlay)"
}

# Only the routes wiremesh tagged: one foreign route into the same link must not be listed.
case_route_list() {
  $IP -n wmA link show wgA >/dev/null 2>&1 || fail "wgA from two_netns is missing"
  $IP -n wmA route add 10.79.0.0/24 dev wgA || fail "ip route add (foreign route)"
  route_add wmA 10.78.3.0/24 wgA || fail "route add 10.78.3.0/24"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmA wiremesh route list > /tmp/rl.out || fail "wiremesh route list failed"
  else
    { $IP -n wmA route show proto 0x77; $IP -n wmA -6 route show proto 0x77; } > /tmp/rl.out
  fi
  echo "route list:"; cat /tmp/rl.out
  echo "all routes:"; $IP -n wmA route show; $IP -n wmA -6 route show
  grep -q '^10.78.2.0/24 dev wgA' /tmp/rl.out || fail "10.78.2.0/24 dev wgA missing from route list"
  grep -q '^10.78.3.0/24 dev wgA' /tmp/rl.out || fail "10.78.3.0/24 dev wgA missing from route list"
  grep -q '^fd78:2::/64 dev wgA' /tmp/rl.out || fail "fd78:2::/64 dev wgA missing from route list"
  [ "$(grep -c . /tmp/rl.out)" -eq 3 ] || fail "route list shows $(grep -c . /tmp/rl.out) routes, expected exactly 3"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmA wiremesh route del 10.78.3.0/24 --dev wgA || fail "route del 10.78.3.0/24"
    $IP -n wmA route show 10.78.3.0/24 | grep -q . && fail "10.78.3.0/24 still present after route del"
    $IP -n wmA route show 10.79.0.0/24 | grep -q . || fail "the foreign route 10.79.0.0/24 vanished"
  fi
  echo "OK: route list shows exactly the 3 tagged routes, not the foreign or connected ones"
}

# A device with 1000 peers x 3 allowed IPs, IPv4 and IPv6 endpoints: messages are chunked both ways.
case_big_device() {
  $IP netns add wmbig || fail "ip netns add"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmbig wiremesh link add wgbig --mtu 1420 || fail "link add wgbig"
  else
    $IP -n wmbig link add wgbig mtu 1420 type wireguard || fail "ip link add"
  fi
  t0=$(now)
  dev_set wmbig wgbig /wmtest/big1000.conf || fail "device set of 1000 peers"
  t1=$(now)
  echo "applied 1000 peers in $(echo "$t1 $t0" | awk '{printf "%.3f", $1 - $2}') s"
  $IP netns exec wmbig wg show wgbig dump > /tmp/big.got
  conf2dump /wmtest/big1000.conf > /tmp/big.want
  echo "wg show dump: $(wc -l < /tmp/big.got) lines; expected $(wc -l < /tmp/big.want)"
  same_dump "wg show dump vs config" /tmp/big.want /tmp/big.got || fail "wg show wgbig dump differs from big1000.conf"
  cmp -s /tmp/big.want /tmp/big.got && echo "wg show dump is also in config order, byte for byte"
  grep -q '\[2001:db8::' /tmp/big.got || fail "no IPv6 endpoint in the dump"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmbig wiremesh device show wgbig --dump > /tmp/big.show || fail "wiremesh device show --dump failed"
    same_dump "wiremesh device show --dump vs wg show dump" /tmp/big.got /tmp/big.show || fail "wiremesh device show --dump differs from wg show dump"
    cmp -s /tmp/big.got /tmp/big.show && echo "wiremesh device show --dump equals wg show dump byte for byte"
  fi
  echo "OK: 1000 peers x 3 allowed IPs read back exactly"
}

# Removing one peer by delta leaves the other 999 untouched, and sends only a few bytes.
case_delta_remove() {
  $IP -n wmbig link show wgbig >/dev/null 2>&1 || fail "wgbig from big_device is missing"
  # Drop peer 500 (its [Peer] section) from the file.
  awk '/^\[Peer\]/ { n++ } n != 500' /wmtest/big1000.conf > /tmp/big999.conf
  gone=$(awk '/^\[Peer\]/ { n++ } n == 500 && /^PublicKey/ { print $3 }' /wmtest/big1000.conf)
  echo "removing peer $gone"
  if [ "$MODE" = wiremesh ]; then
    $IP netns exec wmbig wiremesh device set wgbig /tmp/big999.conf --report 2>/tmp/delta.err || { cat /tmp/delta.err; fail "device set (delta) failed"; }
    cat /tmp/delta.err
    bytes=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' /tmp/delta.err | tail -n 1)
    msgs=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' /tmp/delta.err | tail -n 1)
    [ -n "$bytes" ] || fail "--report printed no bytes=N: $(cat /tmp/delta.err)"
    [ "$bytes" -le 512 ] || fail "removing one peer sent $bytes bytes to the kernel (expected a few hundred at most)"
  else
    $IP netns exec wmbig wg syncconf wgbig /tmp/big999.conf || fail "wg syncconf"
    bytes=n/a; msgs=n/a
  fi
  $IP netns exec wmbig wg show wgbig dump > /tmp/big999.got
  conf2dump /tmp/big999.conf > /tmp/big999.want
  grep -q "$gone" /tmp/big999.got && fail "peer $gone is still on the device"
  same_dump "after delta" /tmp/big999.want /tmp/big999.got || fail "the other 999 peers changed"
  cmp -s /tmp/big999.want /tmp/big999.got && echo "the remaining 999 peers kept their order (not re-added)"
  echo "OK: 999 peers intact; messages=$msgs bytes=$bytes"
}

# Three agents with kernel WireGuard: nodes are netns on a bridge (10.99.0.0/24); node 1 runs
# `wiremesh init` + `agent`, nodes 2 and 3 `wiremesh join TOKEN` (mesh_up, guest/mesh.sh); each node
# pings the others' overlay addresses through the mesh, and each device holds the other two nodes as
# peers (`wg show` reference). The cluster is dual-stack (an IPv6 range beside the IPv4 one, for the cni
# case). The agents keep running for the rotation case.
case_agent_mesh() {
  [ "$MODE" = wiremesh ] || { echo "OK: the agent has no reference-tool equivalent"; return 0; }
  MESH_INIT_FLAGS="--cluster-cidr-v6 fd42:244::/48" mesh_up 3
  overlay() { json_str overlay_address < /tmp/k$1.status; }
  for i in 1 2 3; do
    for j in 1 2 3; do
      [ "$i" = "$j" ] && continue
      dst=$(overlay $j)
      ok=0
      for _ in 1 2 3 4 5; do $IP netns exec wmn$i ping -c 1 -W 2 "$dst" >/dev/null 2>&1 && { ok=1; break; }; done
      [ "$ok" = 1 ] || { $IP netns exec wmn$i wg show; $IP -n wmn$i route; fail "node $i cannot ping node $j's overlay $dst"; }
      echo "k$i -> k$j ($dst): ok"
    done
  done
  $IP netns exec wmn1 wg show wmk1
  echo "OK: 3 agents joined by token on kernel WireGuard; all 6 overlay pings pass"
}

# `wiremesh rotate-key` on node 1 of agent_mesh's cluster while pings flow at 200 pps in each direction
# between node 1's pod and the pods of nodes 2 and 3, and an iperf3 TCP stream (10 Mbit/s, 16 s from when the agent begins) from
# pod 1 to pod 2 run across the rotation (rotate_under_load, guest/mesh.sh). Passes when the stream completes and
# every peer's device (`wg show`) holds exactly the new key for node 1; the lost pings are reported.
case_rotation() {
  [ "$MODE" = wiremesh ] || { echo "OK: the agent has no reference-tool equivalent"; return 0; }
  [ -S /tmp/k1.sock ] || fail "the agents of agent_mesh are not running"
  pods_up 3
  ( rotate_under_load 1 3 200 16 e2e 0.1 ) > /tmp/rot.case 2>&1; rc=$?
  cat /tmp/rot.case
  line=$(grep '^ROTATION ' /tmp/rot.case | tail -n 1)
  [ -n "$line" ] || fail "$(grep '^FAIL:' /tmp/rot.case | tail -n 1 | cut -c7-)"
  [ "$rc" -eq 0 ] || fail "${line#ROTATION e2e }"
  echo "OK: ${line#ROTATION e2e }"
}

# in_block IP CIDR: succeeds when the IPv4 address IP lies in CIDR.
in_block() {
  awk -v a="$1" -v c="$2" 'function n(s, p) { split(s, p, "."); return ((p[1] * 256 + p[2]) * 256 + p[3]) * 256 + p[4] }
    BEGIN { split(c, q, "/"); m = 1; for (k = q[2]; k < 32; k++) m *= 2   # busybox awk has no ^
      exit !(int(n(a) / m) == int(n(q[1]) / m)) }'
}
# xfer NODE: node NODE's device counters, one line per peer: KEY RX TX (`wg show transfer`).
xfer() { in_ns wmn$1 wg show wmk$1 transfer; }

# Pods made the way a container runtime makes them, on agent_mesh's 3 nodes (kernel WireGuard): for each
# node a pod network namespace, then the plugins of the agent's own conflist (/tmp/cniN/10-wiremesh.conflist:
# bridge with host-local, then portmap; Debian's containernetworking-plugins in /cni) called in order with
# CNI_COMMAND=ADD, each given its plugin object plus the list's cniVersion and name, the previous plugin's
# result, and the runtime's capability arguments it declares (guest/cni.sh). The pod on node 2 publishes its
# port 8080 as the node's 8081 (portMappings: portmap programs it with iptables-nft). Checks: each pod's
# address (from host-local's result) is in its node's block, on its eth0 and reserved in host-local's store
# under the node's state directory; with the agents' egress tables in place (the case loads nftables), the
# pods ping each other across nodes by their own addresses with 1000-byte pings and fetch over TCP from each
# other (busybox httpd: the server sees the client pod's own address), through the WireGuard device (`ip route
# get`; `wg show transfer` rose by more than the pings' payload each way on every peer); the published port
# answers from the underlay and through the mesh; CNI_COMMAND=DEL (reverse order, the cached result as
# prevResult) removes the pod's interface, frees its address and portmap's rules. The cluster is
# dual-stack: each pod also gets an IPv6 address from its node's IPv6 block, and the pods ping each other
# over IPv6 too.
case_cni() {
  [ "$MODE" = wiremesh ] || { echo "OK: the agent has no reference-tool equivalent"; return 0; }
  [ -S /tmp/k1.sock ] || fail "the agents of agent_mesh are not running"
  t0=$(now)
  # nftables for the agents' egress tables and iptables-nft for portmap (autoloading is off in this VM).
  for m in $(cat /etc/wmtest-netfilter-modules); do modprobe "$m" || fail "modprobe $m"; done
  for i in 1 2 3; do
    list=/tmp/cni$i/10-wiremesh.conflist
    [ -f "$list" ] || fail "node $i wrote no $list"
    block=$(json_str pod_cidrs < /tmp/k$i.status); echo "$block" > /tmp/cni.block$i
    got=$(jq -r '[.name, (.plugins | map(.type) | join(",")), .plugins[0].ipam.type, .plugins[0].ipam.ranges[0][0].subnet, .plugins[0].ipam.dataDir] | join(" ")' "$list")
    want="wiremesh bridge,portmap host-local $block /tmp/k$i/cni-ipam"
    [ "$got" = "$want" ] || { cat "$list"; fail "node $i's conflist: $got, expected $want"; }
  done
  echo "node 1's conflist:"; cat /tmp/cni1/10-wiremesh.conflist
  # The runtime's capability arguments: the pod on node 2 publishes its port 8080 as the node's port 8081.
  for i in 1 3; do echo "{}" > /tmp/cni.caps$i; done
  echo '{"portMappings": [{"hostPort": 8081, "containerPort": 8080, "protocol": "tcp"}]}' > /tmp/cni.caps2
  for i in 1 2 3; do
    id=$(printf 'wmcni%02d%057d' "$i" 0)
    echo "$id" > /tmp/cni.id$i
    $IP netns add wmcp$i || fail "netns wmcp$i"
    t=$(now)
    cni_add wmn$i /tmp/cni$i/10-wiremesh.conflist "$id" /var/run/netns/wmcp$i eth0 /tmp/cni.caps$i /tmp/cni.result$i \
      || fail "CNI ADD for the pod on node $i failed"
    echo "node $i ADD ($(awk -v a="$(now)" -v b="$t" 'BEGIN { printf "%.1f", a - b }') s): $(jq -c . /tmp/cni.result$i)"
    addr=$(jq -r '.ips[0].address' /tmp/cni.result$i); gw=$(jq -r '.ips[0].gateway' /tmp/cni.result$i)
    pod=${addr%/*}; block=$(cat /tmp/cni.block$i); echo "$pod" > /tmp/cni.pod$i
    in_block "$pod" "$block" || fail "pod $i got $addr, outside its node's block $block"
    base=${block%/*}
    [ "$pod" != "$base" ] && [ "$pod" != "$gw" ] || fail "pod $i got $pod: the overlay address or the gateway ($gw)"
    $IP -n wmcp$i -4 addr show dev eth0 | grep -q "inet $addr " || { $IP -n wmcp$i addr; fail "pod $i's eth0 lacks $addr"; }
    $IP -n wmcp$i route show default | grep -q "via $gw dev eth0" || { $IP -n wmcp$i route; fail "pod $i has no default route via $gw"; }
    addr6=$(jq -r '[.ips[] | select(.address | contains(":"))][0].address' /tmp/cni.result$i)
    [ -n "$addr6" ] && [ "$addr6" != null ] || fail "pod $i got no IPv6 address: $(jq -c .ips /tmp/cni.result$i)"
    echo "${addr6%/*}" > /tmp/cni.pod6$i
    store=/tmp/k$i/cni-ipam/wiremesh
    # host-local's reservation: a file named by the address holding "CONTAINERID\r\nIFNAME".
    [ "$(tr '\r\n' '  ' < "$store/$pod" 2>/dev/null)" = "$id  eth0" ] || { ls -l "$store"; fail "host-local's store $store does not hold $pod for the pod's eth0"; }
  done
  echo "pods: $(cat /tmp/cni.pod1) $(cat /tmp/cni.pod2) $(cat /tmp/cni.pod3)"
  pod2=$(cat /tmp/cni.pod2); id2=$(cat /tmp/cni.id2)
  in_ns wmn2 iptables -t nat -S > /tmp/cni.ipt
  grep -q -- "--to-destination $pod2:8080" /tmp/cni.ipt && grep -q "$id2" /tmp/cni.ipt \
    || { cat /tmp/cni.ipt; fail "portmap left no DNAT rule to $pod2:8080 for the pod on node 2"; }
  echo "portmap on node 2: $(grep -c . /tmp/cni.ipt) nat rules and chains, DNAT 8081 -> $pod2:8080"
  # The agents program their egress tables (masquerade to outside the cluster, never pod to pod) once
  # nftables is there: they retry every 10 s. With them in place, the servers below seeing the client
  # pod's own address means the tables really leave pod-to-pod traffic alone.
  for i in 1 2 3; do
    ok=0
    for _ in $(seq 1 50); do in_ns wmn$i nft list table ip wiremesh > /tmp/cni.nft$i 2>&1 && { ok=1; break; }; sleep 0.5; done
    [ "$ok" = 1 ] || { cat /tmp/cni.nft$i; tail -n 5 /tmp/k$i.log; fail "node $i's agent did not program its egress table"; }
  done
  echo "node 1's egress table:"; cat /tmp/cni.nft1
  for i in 1 2 3; do xfer $i > /tmp/cni.xfer0.$i; done
  mkdir -p /tmp/www/cgi-bin
  printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$REMOTE_ADDR"\n' > /tmp/www/cgi-bin/ip
  chmod 755 /tmp/www/cgi-bin/ip
  httpds=""
  for j in 1 2 3; do nsenter --net=/run/netns/wmcp$j httpd -f -p 8080 -h /tmp/www & httpds="$httpds $!"; done
  for i in 1 2 3; do
    for j in 1 2 3; do
      [ "$i" = "$j" ] && continue
      dst=$(cat /tmp/cni.pod$j)
      in_ns wmn$i $IP route get "$dst" | grep -q "dev wmk$i " || { in_ns wmn$i $IP route get "$dst"; fail "node $i does not route pod $j ($dst) into wmk$i"; }
      in_ns wmcp$i $PING -n -c 3 -i 0.2 -s 1000 -W 3 "$dst" > /tmp/cni.ping 2>&1 \
        || { cat /tmp/cni.ping; in_ns wmn$i wg show wmk$i; fail "pod $i cannot ping pod $j ($dst)"; }
      echo "pod $i -> pod $j ($dst): $(grep 'packets transmitted' /tmp/cni.ping)"
      dst6=$(cat /tmp/cni.pod6$j)
      in_ns wmcp$i $PING -n -c 3 -i 0.2 -s 1000 -W 3 "$dst6" > /tmp/cni.ping 2>&1 \
        || { cat /tmp/cni.ping; in_ns wmn$i $IP -6 route; fail "pod $i cannot ping pod $j over IPv6 ($dst6)"; }
      echo "pod $i -> pod $j ($dst6): $(grep 'packets transmitted' /tmp/cni.ping)"
      seen=$(timeout 10 nsenter --net=/run/netns/wmcp$i wget -q -O - "http://$dst:8080/cgi-bin/ip" 2>&1)
      case "$seen" in
        *":$(cat /tmp/cni.pod$i)]"*|"$(cat /tmp/cni.pod$i)") echo "pod $i -> pod $j: HTTP, the server saw $seen" ;;
        *) fail "pod $i -> pod $j over TCP: the server saw '$seen', not the client pod's address $(cat /tmp/cni.pod$i)" ;;
      esac
    done
  done
  # The published port (portmap): node 3 itself from the underlay, to node 2's address; pod 1 through the
  # mesh, to node 2's overlay address. The pod on node 2 answers, seeing each client's own address.
  seen=$(timeout 10 nsenter --net=/run/netns/wmn3 wget -q -O - "http://10.99.0.2:8081/cgi-bin/ip" 2>&1)
  case "$seen" in *":10.99.0.3]"*) echo "node 3 -> 10.99.0.2:8081 (published): the pod on node 2 saw $seen" ;;
    *) in_ns wmn2 iptables -t nat -S; fail "node 3 -> 10.99.0.2:8081 (published port): got '$seen', expected the pod on node 2 to see 10.99.0.3" ;; esac
  ov2=$(json_str overlay_address < /tmp/k2.status)
  seen=$(timeout 10 nsenter --net=/run/netns/wmcp1 wget -q -O - "http://$ov2:8081/cgi-bin/ip" 2>&1)
  case "$seen" in *":$(cat /tmp/cni.pod1)]"*) echo "pod 1 -> $ov2:8081 (published, through the mesh): the pod on node 2 saw $seen" ;;
    *) fail "pod 1 -> node 2's overlay $ov2:8081 (published port): got '$seen', expected the pod on node 2 to see $(cat /tmp/cni.pod1)" ;; esac
  for p in $httpds; do kill "$p" 2>/dev/null; done
  for p in $httpds; do wait "$p" 2>/dev/null; done
  # Per peer on every device: 2 x 3 pings of 1000 bytes each way, so more than 3000 bytes (keepalives and
  # handshakes are a few hundred bytes at most).
  for i in 1 2 3; do
    xfer $i > /tmp/cni.xfer1.$i
    awk 'NR == FNR { rx[$1] = $2; tx[$1] = $3; next } { print $1, $2 - rx[$1], $3 - tx[$1] }' \
      /tmp/cni.xfer0.$i /tmp/cni.xfer1.$i > /tmp/cni.delta
    while read -r key drx dtx; do
      echo "node $i, peer $(echo "$key" | cut -c1-8)…: rx +$drx tx +$dtx bytes"
      [ "$drx" -ge 3000 ] && [ "$dtx" -ge 3000 ] || fail "node $i's device counted rx +$drx tx +$dtx bytes for peer $key: the pod traffic did not go through kernel WireGuard"
    done < /tmp/cni.delta
    [ "$(wc -l < /tmp/cni.xfer1.$i)" -eq 2 ] || fail "node $i's device has $(wc -l < /tmp/cni.xfer1.$i) peers, want 2"
  done
  for i in 1 2 3; do
    id=$(cat /tmp/cni.id$i); pod=$(cat /tmp/cni.pod$i); store=/tmp/k$i/cni-ipam/wiremesh
    t=$(now)
    cni_del wmn$i /tmp/cni$i/10-wiremesh.conflist "$id" /var/run/netns/wmcp$i eth0 /tmp/cni.caps$i || fail "CNI DEL for the pod on node $i failed"
    echo "node $i DEL ($(awk -v a="$(now)" -v b="$t" 'BEGIN { printf "%.1f", a - b }') s)"
    [ -e "$store/$pod" ] && fail "after DEL host-local's store still holds $pod: $(cat "$store/$pod")"
    $IP -n wmcp$i link show eth0 >/dev/null 2>&1 && fail "after DEL pod $i still has eth0"
    ports=$($IP -n wmn$i link show master wmk$i-br 2>/dev/null | grep -c '^[0-9]')
    [ "$ports" -eq 0 ] || fail "after DEL node $i's bridge still has $ports ports"
    $IP netns del wmcp$i
  done
  in_ns wmn2 iptables -t nat -S > /tmp/cni.ipt
  grep -q -e "$pod2" -e "$id2" /tmp/cni.ipt && { cat /tmp/cni.ipt; fail "after DEL portmap's rules for the pod on node 2 remain"; }
  echo "OK: 3 pods by CNI ADD ($(cat /tmp/cni.pod1), $(cat /tmp/cni.pod2), $(cat /tmp/cni.pod3)), 6 IPv4 and 6 IPv6 pings and 6 HTTP fetches by own address over kernel WireGuard, a published port (portmap) from the underlay and through the mesh, DEL freed the 3 addresses and the port ($(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.0f", a - b }') s)"
}

wm_case no_module case_no_module
modprobe wireguard || echo "modprobe wireguard failed"
modprobe veth || echo "modprobe veth failed"
wm_case two_netns case_two_netns
wm_case route_list case_route_list
wm_case big_device case_big_device
wm_case delta_remove case_delta_remove
wm_case agent_mesh case_agent_mesh
wm_case rotation case_rotation
wm_case cni case_cni
