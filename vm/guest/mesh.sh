# A wiremesh cluster inside the test VM (busybox sh), for the e2e cases and the rotation benchmark.
# Sourced after lib.sh as /wmtest/mesh.sh.
# Node i: netns wmn$i, underlay 10.99.0.$i/24 on a bridge (netns wmul), WireGuard interface wmk$i,
# state /tmp/k$i, control socket /tmp/k$i.sock, agent log /tmp/k$i.log.
# Pod of node i: netns wmp$i, address = its pod CIDR's base + 10, default route via the node (proxy ARP).

# iputils ping by full path: busybox prefers its own applets (also when nsenter runs a command), and
# busybox ping cannot send faster than its replies come back under TCG.
PING=/usr/bin/ping

# wm N ARGS...: runs `wiremesh ARGS` for node N (its state dir and control socket appended).
wm() { _n=$1; shift; $IP netns exec wmn$_n wiremesh "$@" --state-dir /tmp/k$_n --control-socket /tmp/k$_n.sock; }
# in_ns NETNS CMD...: runs CMD in a network namespace without `ip netns exec`'s remount of /sys
# (cheaper: the rotation observer polls with it).
in_ns() { _ns=$1; shift; nsenter --net=/run/netns/$_ns "$@"; }
# json_str KEY: the first string value after "KEY" in pretty-printed JSON on stdin (arrays too), with
# JSONEncoder's "\/" unescaped.
json_str() {
  awk -v k="\"$1\"" '!f { i = index($0, k); if (!i) next; f = 1; $0 = substr($0, i + length(k)) }
    f && match($0, /"[^"]*"/) { v = substr($0, RSTART + 1, RLENGTH - 2); gsub(/\\\//, "/", v); print v; exit }'
}
node_pub() { wm "$1" status --json | json_str public_key; }
# owner_on J CIDR: the public key node J's device routes CIDR to (empty when none).
owner_on() {
  in_ns wmn$1 wg show wmk$1 dump | awk -v c="$2" 'NR > 1 { n = split($4, a, ","); for (k = 1; k <= n; k++) if (a[k] == c) print $1 }'
}

# mesh_up N: N agents on kernel WireGuard, node 1 by `init` (plus $MESH_INIT_FLAGS, e.g. an IPv6 range),
# the others by `join TOKEN`; returns once every node sees N-1 live peers and each device holds N-1 peers.
mesh_up() {
  _N=$1
  modprobe bridge || fail "modprobe bridge"
  $IP netns add wmul && $IP -n wmul link add br0 type bridge && $IP -n wmul link set br0 up || fail "bridge"
  for i in $(seq 1 "$_N"); do
    $IP netns add wmn$i && $IP -n wmn$i link set lo up || fail "netns wmn$i"
    $IP link add u$i netns wmul type veth peer name eth0 netns wmn$i || fail "veth $i"
    $IP -n wmul link set u$i master br0 up
    $IP -n wmn$i addr add 10.99.0.$i/24 dev eth0 && $IP -n wmn$i link set eth0 up
  done
  node_flags() { echo "--interface wmk$1 --advertise-address 10.99.0.$1 --cni-config-dir /tmp/cni$1"; }
  # shellcheck disable=SC2086  # flags, split on purpose
  wm 1 init --name k1 $(node_flags 1) ${MESH_INIT_FLAGS:-} --prepare-only > /tmp/k1.token 2>/tmp/k1.init || fail "init: $(cat /tmp/k1.init)"
  $IP netns exec wmn1 wiremesh agent --state-dir /tmp/k1 --control-socket /tmp/k1.sock $(node_flags 1) > /tmp/k1.log 2>&1 &
  # ready N PID: node N answers `status`; gives up at once when its agent (PID) has exited.
  ready() { for _ in $(seq 1 300); do wm "$1" status >/dev/null 2>&1 && return 0; kill -0 "$2" 2>/dev/null || return 1; sleep 0.1; done; return 1; }
  ready 1 $! || { cat /tmp/k1.log; fail "agent 1 did not come up"; }
  # Tokens join one node unless told otherwise: one token for the N-1 joining nodes.
  token=$(wm 1 token create --ttl 10m --uses $((_N - 1))) || fail "token create"
  for i in $(seq 2 "$_N"); do
    $IP netns exec wmn$i wiremesh join "$token" --name k$i --state-dir /tmp/k$i --control-socket /tmp/k$i.sock \
      $(node_flags $i) > /tmp/k$i.log 2>&1 &
    ready $i $! || { cat /tmp/k$i.log; fail "agent $i did not come up"; }
  done
  for i in $(seq 1 "$_N"); do
    wm $i status --json > /tmp/k$i.status
    grep -q '"backend" : "kernel"' /tmp/k$i.status || { cat /tmp/k$i.status; fail "node $i is not on kernel WireGuard"; }
  done
  alive_ok=0
  for _ in $(seq 1 300); do
    n=0
    for i in $(seq 1 "$_N"); do
      c=$(wm $i peers --json | grep -c '"state" : "alive"')
      [ "$c" -eq $((_N - 1)) ] && n=$((n + 1))
    done
    [ "$n" -eq "$_N" ] && { alive_ok=1; break; }
    sleep 0.1
  done
  [ "$alive_ok" = 1 ] || { for i in $(seq 1 "$_N"); do wm $i peers; done; fail "not every node sees $((_N - 1)) live peers"; }
  for i in $(seq 1 "$_N"); do
    peers=$(in_ns wmn$i wg show wmk$i dump | tail -n +2 | wc -l)
    [ "$peers" -eq $((_N - 1)) ] || { in_ns wmn$i wg show wmk$i dump; fail "node $i device has $peers peers, want $((_N - 1))"; }
  done
}

# pods_up N: one pod per node (netns wmp$i with a veth to its node); writes /tmp/k$i.cidr and /tmp/k$i.pod.
pods_up() {
  for i in $(seq 1 "$1"); do
    cidr=$(wm $i status --json | json_str pod_cidrs)
    [ -n "$cidr" ] || fail "node $i reports no pod CIDR"
    base=${cidr%/*}; pod="${base%.*}.$(( ${base##*.} + 10 ))"
    echo "$cidr" > /tmp/k$i.cidr; echo "$pod" > /tmp/k$i.pod
    $IP netns add wmp$i || fail "netns wmp$i"
    $IP link add v$i netns wmn$i type veth peer name eth0 netns wmp$i || fail "pod veth $i"
    $IP -n wmn$i link set v$i up
    $IP -n wmn$i route add "$pod/32" dev v$i
    $IP -n wmn$i addr add 169.254.1.1/32 dev v$i
    $IP netns exec wmn$i sh -c "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv4/conf/v$i/proxy_arp"
    $IP -n wmp$i link set lo up && $IP -n wmp$i link set eth0 up
    $IP -n wmp$i addr add "$pod/32" dev eth0
    $IP -n wmp$i route add 169.254.1.1 dev eth0 && $IP -n wmp$i route add default via 169.254.1.1 dev eth0 || fail "pod $i routes"
  done
  for j in $(seq 2 "$1"); do
    ok=0
    for _ in 1 2 3 4 5; do in_ns wmp1 $PING -c 1 -W 2 "$(cat /tmp/k$j.pod)" >/dev/null 2>&1 && { ok=1; break; }; done
    [ "$ok" = 1 ] || fail "pod 1 cannot reach pod $j ($(cat /tmp/k$j.pod))"
  done
}

# dev_counters N: per node "I rx_errors rx_dropped tx_errors tx_dropped" of its WireGuard device. The kernel
# counts a packet dropped from a peer's staged queue (over 128 waiting for a handshake) in tx_dropped, a
# packet with no peer for its destination in tx_errors, one failing decryption or the source check in rx_*.
dev_counters() {
  for _i in $(seq 1 "$1"); do
    $IP -n wmn$_i -s link show wmk$_i | awk -v i="$_i" '/RX:/ { getline; re = $3; rd = $4 } /TX:/ { getline; te = $3; td = $4 }
      END { print i, re, rd, te, td }'
  done
}

# rotate_under_load R N PPS STREAM_S TAG [POLL_S]: `wiremesh rotate-key` on node R while pings flow at
# PPS per direction between pod R and every other pod and, when STREAM_S > 0, an iperf3 TCP stream
# (STREAM_S s, 10 Mbit/s, from when the agent begins) runs from pod R to the pod of the next node. The floods start 1 s before
# the command and stop 1 s after it returned, so they cover it however long the VM takes (a debug
# binary starts in seconds under TCG); the command runs at a higher priority than the floods.
# Prints one line
#   ROTATION TAG lost=L sent=S pps_min=P switched_s=T rotate_s=W stream=ok|failed|short|none keys=ok|bad phases=... dev=RE/RD/TE/TD
# lost/sent: over all flows, pings up to the last one answered in each flow (pings still in flight
# when the flood is stopped are not counted); pps_min: the slowest flow's achieved rate (a busy VM
# sends slower than asked); switched_s: from launching rotate-key until the last peer routed R's pod
# CIDR to another key (one poller per peer, polling every POLL_S, default 0.01); rotate_s: how long
# the command took; stream=short: the stream ended before the command returned (raise STREAM_S);
# phases: the agent's own timings (its log line); dev: the WireGuard devices' rx_errors/rx_dropped/
# tx_errors/tx_dropped over the rotation, summed over the nodes (per node on a "device counters" line).
# Returns non-zero when the stream did not complete or cover the rotation, or the keys are wrong
# (loss is reported, not judged).
rotate_under_load() {
  R=$1; N=$2; PPS=$3; STREAM=$4; TAG=$5; POLL=${6:-0.01}
  interval=$(awk -v p="$PPS" 'BEGIN { printf "%.4f", 1 / p }')
  podR=$(cat /tmp/k$R.pod); cidrR=$(cat /tmp/k$R.cidr)
  old=$(node_pub "$R"); [ -n "$old" ] || fail "no public key for node $R"
  rm -f /tmp/rot.ping.* /tmp/rot.sw.* /tmp/rot.iperf*
  dev_counters "$N" > /tmp/rot.dev0
  pids=""
  for j in $(seq 1 "$N"); do
    [ "$j" = "$R" ] && continue
    # nsenter directly, not through in_ns: a backgrounded function is a subshell, so $! would not be
    # the ping (and stopping it left the flood running into the next rotation).
    nsenter --net=/run/netns/wmp$R $PING -n -i "$interval" -W 2 "$(cat /tmp/k$j.pod)" > /tmp/rot.ping.${R}to$j 2>&1 &
    pids="$pids $!"
    nsenter --net=/run/netns/wmp$j $PING -n -i "$interval" -W 2 "$podR" > /tmp/rot.ping.${j}to$R 2>&1 &
    pids="$pids $!"
  done
  tf=$(now)
  iperf=""
  s=$(( R % N + 1 ))
  [ "$STREAM" -gt 0 ] && { in_ns wmp$s iperf3 -s -1 -p 5201 > /tmp/rot.iperf-server 2>&1 & }
  sleep 1
  t0=$(now)
  # nice -10 (busybox has renice only: the subshell renices itself, the command inherits it).
  ( read -r me _ < /proc/self/stat; renice -n -10 -p "$me" >/dev/null 2>&1; wm "$R" rotate-key ) > /tmp/rot.out 2>&1 &
  rot=$!
  if [ "$STREAM" -gt 0 ]; then
    # The stream starts when the agent begins (its pending key file appears), not with the command:
    # the CLI's start under TCG takes from 0.2 s (static release) to 20 s (debug, loaded), and the
    # key switch follows the prepare round (about 1 s here).
    while [ ! -e /tmp/k$R/wireguard-next.key ] && kill -0 "$rot" 2>/dev/null; do sleep 0.05; done
    in_ns wmp$R iperf3 -c "$(cat /tmp/k$s.pod)" -p 5201 -t "$STREAM" -b 10M --connect-timeout 5000 > /tmp/rot.iperf 2>&1 &
    iperf=$!
  fi
  # One poller per peer (not one pass over all peers in turn, which adds a pass per peer): the time
  # a poll that first saw R's CIDR on a key other than the old one ended.
  pollers=""
  for j in $(seq 1 "$N"); do
    [ "$j" = "$R" ] && continue
    ( k=0; kmax=$(awk -v p="$POLL" 'BEGIN { printf "%d", 60 / p }')
      while [ "$k" -lt "$kmax" ]; do
        o=$(owner_on "$j" "$cidrR")
        if [ -n "$o" ] && [ "$o" != "$old" ]; then now > /tmp/rot.sw.$j; exit 0; fi
        k=$((k + 1)); sleep "$POLL"
      done; exit 1 ) &
    pollers="$pollers $!"
  done
  rc=0; wait "$rot" || rc=$?
  t1=$(now)
  stream=none
  if [ -n "$iperf" ]; then kill -0 "$iperf" 2>/dev/null || stream=short; fi
  for p in $pollers; do wait "$p"; done
  sleep 1
  # SIGINT makes ping print its summary; a ping that ignores it (background jobs of a script may
  # start with SIGINT ignored) is killed after 2 s: the loss is counted from the replies anyway.
  for p in $pids; do kill -INT "$p" 2>/dev/null; done
  tstop=$(now)
  for _ in $(seq 1 20); do
    alive=0; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  for p in $pids; do wait "$p"; done
  dev_counters "$N" > /tmp/rot.dev1
  awk 'NR == FNR { a[$1] = $0; next } { split(a[$1], b, " "); print "node", $1 ":" ($2 - b[2]) "/" ($3 - b[3]) "/" ($4 - b[4]) "/" ($5 - b[5])
      for (k = 2; k <= 5; k++) s[k] += $k - b[k] }
    END { print "sum", s[2] + 0 "/" s[3] + 0 "/" s[4] + 0 "/" s[5] + 0 }' /tmp/rot.dev0 /tmp/rot.dev1 > /tmp/rot.dev
  echo "device counters (rx_errors/rx_dropped/tx_errors/tx_dropped): $(awk '$1 == "node" { printf "%s ", $2 }' /tmp/rot.dev)"
  dev=$(awk '$1 == "sum" { print $2 }' /tmp/rot.dev)
  [ "$rc" -eq 0 ] || { cat /tmp/rot.out; fail "rotate-key failed (exit $rc)"; }
  if [ -n "$iperf" ]; then
    irc=0; wait "$iperf" || irc=$?
    if [ "$irc" -ne 0 ] || ! grep -q 'receiver' /tmp/rot.iperf; then stream=failed; elif [ "$stream" = none ]; then stream=ok; fi
    echo "iperf3 (exit $irc):"; grep -E 'sender|receiver' /tmp/rot.iperf || { cat /tmp/rot.iperf; echo "server:"; cat /tmp/rot.iperf-server; }
  fi
  lost=0; sent=0; detail=""; rate=""
  for f in /tmp/rot.ping.*; do
    # Sequence numbers answered (duplicates once): lost = highest answered - answered.
    grep -o 'icmp_seq=[0-9]*' "$f" | cut -d= -f2 | sort -un > /tmp/rot.seqs
    rx=$(wc -l < /tmp/rot.seqs); tx=$(tail -n 1 /tmp/rot.seqs); tx=${tx:-0}
    [ "$rx" -gt 0 ] || { echo "no ping answered in $f:"; tail -n 5 "$f"; tx=$(grep -o '[0-9]* packets transmitted' "$f" | awk '{print $1}'); tx=${tx:-1}; }
    lost=$((lost + tx - rx)); sent=$((sent + tx)); detail="$detail ${f##*.}=$((tx - rx))"
    r=$(awk -v n="$tx" -v a="$tstop" -v b="$tf" 'BEGIN { printf "%d", n / (a - b) }')
    [ -z "$rate" ] || [ "$r" -lt "$rate" ] && rate=$r
  done
  last=""
  for j in $(seq 1 "$N"); do
    [ "$j" = "$R" ] && continue
    [ -e /tmp/rot.sw.$j ] || { last=never; break; }
    t=$(cat /tmp/rot.sw.$j); [ -z "$last" ] || [ "$(awk -v a="$t" -v b="$last" 'BEGIN { print (a > b) }')" = 1 ] && last=$t
  done
  if [ "$last" = never ]; then switched=null; else switched=$(awk -v a="$last" -v b="$t0" 'BEGIN { printf "%.3f", a - b }'); fi
  wall=$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
  phases=$(grep 'rotated WireGuard key' /tmp/k$R.log | tail -n 1 | grep -o '[a-z_]*_ms=[0-9]*' | tr '\n' ',' | sed 's/,$//')
  echo "rotate-key: $(cat /tmp/rot.out)"
  echo "lost per flow:$detail"
  # Keys: R's device uses the new key; every peer ends with exactly one entry for R, the new key
  # (the old entry goes a grace after R's record arrives).
  new=$(node_pub "$R")
  keys=ok
  [ -n "$new" ] && [ "$new" != "$old" ] || { echo "node $R's public key did not change"; keys=bad; }
  [ "$(in_ns wmn$R wg show wmk$R public-key)" = "$new" ] || { echo "node $R's device does not use the new key"; keys=bad; }
  for j in $(seq 1 "$N"); do
    [ "$j" = "$R" ] && continue
    ok=0
    for _ in $(seq 1 100); do
      in_ns wmn$j wg show wmk$j dump | tail -n +2 | cut -f1 > /tmp/rot.keys
      if ! grep -qxF -- "$old" /tmp/rot.keys && grep -qxF -- "$new" /tmp/rot.keys \
         && [ "$(wc -l < /tmp/rot.keys)" -eq $((N - 1)) ] && [ "$(owner_on "$j" "$cidrR")" = "$new" ]; then ok=1; break; fi
      sleep 0.2
    done
    [ "$ok" = 1 ] || { echo "node $j's device does not hold exactly the new key for node $R:"; in_ns wmn$j wg show wmk$j dump; keys=bad; }
  done
  echo "ROTATION $TAG lost=$lost sent=$sent pps_min=$rate switched_s=$switched rotate_s=$wall stream=$stream keys=$keys phases=${phases:-none} dev=$dev"
  [ "$stream" = short ] && echo "FAIL: the TCP stream ended before rotate-key returned (raise STREAM_S)"
  [ "$keys" = ok ] && [ "$stream" != failed ] && [ "$stream" != short ]
}
