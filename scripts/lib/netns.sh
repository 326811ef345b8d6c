# shellcheck shell=bash
# Network-namespace test harness helpers (bash). Source it; sourcing only defines functions.
# Safe under `set -euo pipefail` and without it: each setup function stops at the first failing step
# and returns its status (steps chained with &&, which holds also where errexit is off).
# Every name derives from a per-run PREFIX (letters and digits, at most 10):
#   PREFIX-ul        underlay namespace holding bridge br0
#   PREFIX-nI        node I: eth0 = 10.99.0.I/24 on the bridge (host side PREFIXuI), lo up, IPv4 forwarding
#   PREFIX-pI        pod of node I: eth0 = POD/32, default via 169.254.1.1 (node side PREFIXvI, proxy ARP)
#   PREFIXwI         node I's WireGuard interface (wireguard-go -f PREFIXwI, /var/run/wireguard/PREFIXwI.sock)
# netns_cleanup PREFIX removes all of them, whatever indexes a run used.

# netns_check_prefix PREFIX: fails with a message unless PREFIX is usable in names (IFNAMSIZ is 16).
netns_check_prefix() {
  [[ "${1:-}" =~ ^[A-Za-z0-9]{1,10}$ ]] && return 0
  echo "netns.sh: bad prefix '${1:-}': use 1-10 letters or digits (it starts every namespace and interface name)" >&2
  return 2
}

# netns_check_index INDEX: a node index (the last byte of 10.99.0.INDEX).
netns_check_index() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 254 ] && return 0
  echo "netns.sh: bad node index '${1:-}': use 1-254 (the node's address is 10.99.0.INDEX)" >&2
  return 2
}

# netns_underlay PREFIX: namespace PREFIX-ul with bridge br0 up.
netns_underlay() {
  netns_check_prefix "$1" || return
  ip netns add "$1-ul" &&
    ip -n "$1-ul" link add br0 type bridge &&
    ip -n "$1-ul" link set br0 up
}

# netns_attach PREFIX NAMESPACE HOST-VETH ADDRESS: a new namespace whose eth0 (ADDRESS/24, up, lo up)
# is a veth to the underlay bridge; the bridge side is HOST-VETH.
netns_attach() {
  netns_check_prefix "$1" || return
  local ul="$1-ul" ns=$2 veth=$3 addr=$4
  ip netns add "$ns" &&
    ip link add "$veth" type veth peer name eth0 netns "$ns" &&
    ip link set "$veth" netns "$ul" &&
    ip -n "$ul" link set "$veth" master br0 up &&
    ip -n "$ns" addr add "$addr/24" dev eth0 &&
    ip -n "$ns" link set eth0 up &&
    ip -n "$ns" link set lo up
}

# netns_node PREFIX INDEX: node namespace PREFIX-nINDEX at 10.99.0.INDEX on the underlay, forwarding on.
netns_node() {
  netns_check_index "${2:-}" || return
  netns_attach "$1" "$1-n$2" "${1}u$2" "10.99.0.$2" &&
    ip netns exec "$1-n$2" sysctl -qw net.ipv4.ip_forward=1
}

# netns_pod PREFIX INDEX POD-ADDRESS: pod namespace PREFIX-pINDEX behind node INDEX. The node answers
# ARP for the gateway 169.254.1.1 (proxy ARP) and routes POD-ADDRESS/32 to the pod.
netns_pod() {
  netns_check_prefix "$1" || return
  netns_check_index "${2:-}" || return
  [ -n "${3:-}" ] || { echo "netns.sh: netns_pod $1 $2: missing the pod address (an IPv4 address)" >&2; return 2; }
  local n="$1-n$2" p="$1-p$2" v="${1}v$2" pod=$3
  ip netns add "$p" &&
    ip link add "$v" type veth peer name eth0 netns "$p" &&
    ip link set "$v" netns "$n" &&
    ip -n "$n" link set "$v" up &&
    ip -n "$n" addr add 169.254.1.1/32 dev "$v" &&
    ip -n "$n" route add "$pod/32" dev "$v" &&
    ip netns exec "$n" sysctl -qw "net.ipv4.conf.$v.proxy_arp=1" &&
    ip -n "$p" link set lo up &&
    ip -n "$p" link set eth0 up &&
    ip -n "$p" addr add "$pod/32" dev eth0 &&
    ip -n "$p" route add 169.254.1.1 dev eth0 &&
    ip -n "$p" route add default via 169.254.1.1 dev eth0
}

# netns_pod_address CIDR: the pod address the harnesses use in a node's pod CIDR (network + 10).
netns_pod_address() {
  local base="${1%/*}"
  echo "${base%.*}.$(( ${base##*.} + 10 ))"
}

# _netns_wg_go_matching REGEX: pids of wireguard-go processes whose command line (NULs as spaces)
# matches REGEX. Builtins only (no fork per process): cleanup polls this.
_netns_wg_go_matching() {
  local d comm args
  for d in /proc/[0-9]*; do
    { read -r comm <"$d/comm"; } 2>/dev/null || continue
    [ "$comm" = wireguard-go ] || continue
    { mapfile -d '' -t args <"$d/cmdline"; } 2>/dev/null || continue
    [ "${#args[@]}" -gt 0 ] || continue
    if [[ "${args[*]} " =~ $1 ]]; then echo "${d#/proc/}"; fi
  done
  return 0
}

# netns_wg_go_pids IFACE: pids of `wireguard-go -f IFACE` (exact command line; it may run in any namespace).
netns_wg_go_pids() {
  [[ "${1:-}" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "netns.sh: bad interface name '${1:-}'" >&2; return 2; }
  _netns_wg_go_matching "^wireguard-go -f $1 \$"
}

# netns_namespaces PREFIX: the namespaces named PREFIX-*.
netns_namespaces() {
  ip netns list 2>/dev/null | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'
}

# netns_pids PREFIX: every process of the run: those inside its namespaces and every
# `wireguard-go -f PREFIXwN` (which keeps running after its agent is killed).
netns_pids() {
  local ns
  for ns in $(netns_namespaces "$1"); do ip netns pids "$ns" 2>/dev/null || true; done
  _netns_wg_go_matching "^wireguard-go -f ${1}w[0-9]+ \$"
}

_netns_running() { # PID: exists and is not a zombie (an unreaped child still answers kill -0)
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s="${s##*) }"
  [ "${s%% *}" != Z ]
}

# netns_cleanup PREFIX: ends every process of the run (TERM, KILL after 2 s), removes its UAPI sockets
# and deletes its namespaces (with their links, routes and nft tables). Never fails; for EXIT traps.
# INT and TERM are ignored meanwhile: a second signal must not leave half a run behind.
netns_cleanup() {
  local - p="$1" pid ns left _ traps
  set +e
  netns_check_prefix "$p" || return 0
  traps="$(trap -p INT TERM)"
  trap '' INT TERM
  for pid in $(netns_pids "$p" | sort -un); do kill "$pid" 2>/dev/null; done
  for _ in $(seq 1 20); do
    left=""
    for pid in $(netns_pids "$p" | sort -un); do _netns_running "$pid" && left+=" $pid"; done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for pid in $left; do kill -9 "$pid" 2>/dev/null; done
  rm -f /var/run/wireguard/"${p}"w[0-9]*.sock
  for ns in $(netns_namespaces "$p"); do [ "$ns" = "$p-ul" ] || ip netns del "$ns" 2>/dev/null; done
  ip netns del "$p-ul" 2>/dev/null
  trap - INT TERM
  eval "$traps"
  return 0
}

# netns_remove_node PREFIX INDEX: node INDEX and its pod gone (its processes, wireguard-go, socket,
# namespaces); the rest of the run stays.
netns_remove_node() {
  local - p="$1" i="$2" pid ns
  set +e
  for pid in $(netns_wg_go_pids "${p}w$i"); do kill "$pid" 2>/dev/null; done
  for ns in "$p-p$i" "$p-n$i"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -f "/var/run/wireguard/${p}w$i.sock"
  return 0
}

# netns_trap CLEANUP-COMMAND: runs it on exit, also after a failure or INT/TERM (which exit 130).
netns_trap() {
  # shellcheck disable=SC2064  # the command is given now, on purpose
  trap "$1" EXIT
  trap 'exit 130' INT TERM
}
