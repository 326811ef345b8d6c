#!/usr/bin/env bash
# Tests of scripts/lib/netns.sh (root): sourcing it (and harness.sh) has no side effects; the topology
# it builds carries pod traffic between nodes; bad input is refused before anything is created;
# wireguard-go pids are found by exact command line; cleanup (on failure, on TERM) leaves nothing of its
# run and nothing of another run is touched.
#
#   scripts/e2e/netns-lib.sh        prints one "RESULT {"case", "pass", "detail"}" line per case
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
LIB="$ROOT/scripts/lib/netns.sh"
HARNESS="$ROOT/scripts/lib/harness.sh"
P="wml$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"   # per-run prefix; the runs below add a letter
WORK="$(mktemp -d "/tmp/$P.XXXX")"
# shellcheck source=scripts/lib/harness.sh
. "$HARNESS"
cleanup() {
  local q
  for q in "$P" "${P}a" "${P}a1" "${P}b" "${P}c" "${P}d"; do netns_cleanup "$q"; done
  rm -rf "$WORK"
}
netns_trap cleanup

# leftovers PREFIX: what of a run still exists (namespaces, UAPI sockets, wireguard-go processes).
leftovers() {
  local out=""
  out+="$(netns_namespaces "$1" | tr '\n' ' ')"
  out+="$(cd /var/run/wireguard 2>/dev/null && ls -d "${1}"w* 2>/dev/null | tr '\n' ' ')"
  out+="$(_netns_wg_go_matching "^wireguard-go -f ${1}w[0-9]+ \$" | sed 's/^/wireguard-go pid /' | tr '\n' ' ')"
  echo "$out"
}
harness_check ip wireguard-go ping jq || { result setup false "preconditions (see stderr)"; exit 1; }

# --- source: under set -euo pipefail, sourcing either library defines functions only (and runs no
# command: PATH is empty while it is sourced; other suites may create namespaces meanwhile, so none
# are compared)
problems=""
for lib in "$LIB" "$HARNESS"; do
out="$(bash -c '
  set -euo pipefail
  before_opts="$- $(set +o)"; before_traps="$(trap -p)"
  before_vars="$(compgen -v | grep -vxE "BASH_.*|FUNCNAME|_|PIPESTATUS|LINENO|RANDOM|SECONDS|SRANDOM|EPOCH.*|BASHPID|before_.*|saved_path" | sort)"
  saved_path=$PATH; PATH=/nonexistent
  . "$1"
  PATH=$saved_path
  after_vars="$(compgen -v | grep -vxE "BASH_.*|FUNCNAME|_|PIPESTATUS|LINENO|RANDOM|SECONDS|SRANDOM|EPOCH.*|BASHPID|before_.*|saved_path" | sort)"
  [ "$before_opts" = "$- $(set +o)" ] || echo " shell options changed;"
  [ "$before_traps" = "$(trap -p)" ] || echo " traps changed;"
  [ "$before_vars" = "$after_vars" ] || echo " variables added: $(comm -13 <(echo "$before_vars") <(echo "$after_vars") | tr "\n" " ");"
  declare -F netns_cleanup >/dev/null || echo " netns_cleanup not defined;"
  echo sourced' _ "$lib" 2>&1)"
[ "$(tail -n 1 <<<"$out")" = sourced ] || problems+=" sourcing ${lib##*/} under set -euo pipefail stopped the shell: $out;"
problems+="$(grep -v '^sourced$' <<<"$out" | sed "s|^| ${lib##*/}:|" | tr -d '\n')"
done
result_problems source "$problems" "sourcing under set -euo pipefail defines functions only"

# --- topology: two nodes and their pods; with a route per node the pods reach each other
problems=""
if netns_underlay "$P" && netns_node "$P" 1 && netns_node "$P" 2 &&
   netns_pod "$P" 1 10.244.1.10 && netns_pod "$P" 2 10.244.2.10; then
  ip -n "$P-n1" route add 10.244.2.0/24 via 10.99.0.2
  ip -n "$P-n2" route add 10.244.1.0/24 via 10.99.0.1
  ip -n "$P-n2" -4 -o addr show dev eth0 | grep -q ' 10\.99\.0\.2/24 ' || problems+=" node 2's eth0 is not 10.99.0.2/24;"
  [ "$(ip netns exec "$P-n1" sysctl -n net.ipv4.ip_forward)" = 1 ] || problems+=" node 1 does not forward;"
  [ "$(ip netns exec "$P-n1" sysctl -n "net.ipv4.conf.${P}v1.proxy_arp")" = 1 ] || problems+=" ${P}v1 has no proxy ARP;"
  ip -n "$P-ul" link show "${P}u1" | grep -q 'master br0' || problems+=" ${P}u1 is not on br0;"
  ip -n "$P-p1" route show default | grep -q 'via 169.254.1.1 dev eth0' || problems+=" pod 1 has no default via 169.254.1.1;"
  ip netns exec "$P-p1" ping -c 1 -W 2 10.244.2.10 >/dev/null || problems+=" pod 1 cannot ping pod 2;"
  ip netns exec "$P-p2" ping -c 1 -W 2 10.244.1.10 >/dev/null || problems+=" pod 2 cannot ping pod 1;"
  [ "$(netns_namespaces "$P" | sort | tr '\n' ' ')" = "$P-n1 $P-n2 $P-p1 $P-p2 $P-ul " ] \
    || problems+=" namespaces: $(netns_namespaces "$P" | tr '\n' ' ');"
else
  problems+=" setup failed;"
fi
result_problems topology "$problems" "underlay, nodes 10.99.0.1-2, pods behind proxy ARP: pods ping across nodes"

# --- bad input: a clear message naming the bad value, non-zero, nothing created
problems=""
before="$(netns_namespaces "$P" | sort)"
for call in "netns_node $P 0|node index '0'" "netns_node $P 255|node index '255'" "netns_node $P x|node index 'x'" \
            "netns_underlay bad-prefix|prefix 'bad-prefix'" "netns_underlay waytoolongprefix|prefix 'waytoolongprefix'" \
            "netns_pod $P 1|missing the pod address"; do
  cmd="${call%%|*}"; want="${call#*|}"
  err="$(bash -c 'set -euo pipefail; . "$1"; shift; "$@"' _ "$LIB" $cmd 2>&1)"; rc=$?
  [ "$rc" != 0 ] || problems+=" '$cmd' exited 0;"
  grep -qF "$want" <<<"$err" || problems+=" '$cmd' said: $err;"
done
[ "$before" = "$(netns_namespaces "$P" | sort)" ] || problems+=" namespaces of $P changed by refused calls;"
ip netns list | grep -qE '^(bad-prefix|waytoolongprefix)-' && problems+=" a namespace of a refused prefix was created;"
result_problems bad-input "$problems" "bad prefixes, indexes, a missing pod address: refused with the value named, nothing created"

# --- wg-go-pids: exact command line (w1 is not w11), in any namespace
problems=""
ip netns exec "$P-n1" wireguard-go -f "${P}w1" >"$WORK/wg1.log" 2>&1 & wg1=$!
ip netns exec "$P-n2" wireguard-go -f "${P}w11" >"$WORK/wg11.log" 2>&1 & wg11=$!
for _ in $(seq 1 50); do [ -S "/var/run/wireguard/${P}w1.sock" ] && [ -S "/var/run/wireguard/${P}w11.sock" ] && break; sleep 0.1; done
[ "$(netns_wg_go_pids "${P}w1")" = "$wg1" ] || problems+=" ${P}w1: got '$(netns_wg_go_pids "${P}w1" | tr '\n' ' ')', want $wg1;"
[ "$(netns_wg_go_pids "${P}w11")" = "$wg11" ] || problems+=" ${P}w11: got '$(netns_wg_go_pids "${P}w11" | tr '\n' ' ')', want $wg11;"
[ -z "$(netns_wg_go_pids "${P}w2")" ] || problems+=" ${P}w2 has pids;"
result_problems wg-go-pids "$problems" "wireguard-go -f ${P}w1 and ${P}w11 told apart"

# --- cleanup: the run above removed (namespaces, wireguard-go, sockets), another run's kept
problems=""
netns_underlay "${P}a1" && netns_node "${P}a1" 1 || problems+=" setup of the other run failed;"
ip netns exec "${P}a1-n1" wireguard-go -f "${P}a1w1" >/dev/null 2>&1 & other=$!
for _ in $(seq 1 50); do [ -S "/var/run/wireguard/${P}a1w1.sock" ] && break; sleep 0.1; done
netns_underlay "${P}a" && netns_node "${P}a" 1 || problems+=" setup failed;"
ip netns exec "${P}a-n1" wireguard-go -f "${P}aw1" >/dev/null 2>&1 & mine=$!
ip netns exec "${P}a-n1" sleep 300 & sleeper=$!
for _ in $(seq 1 50); do [ -S "/var/run/wireguard/${P}aw1.sock" ] && break; sleep 0.1; done
netns_cleanup "${P}a"
left="$(leftovers "${P}a")"
[ -z "$left" ] || problems+=" left of the run: $left;"
_netns_running "$sleeper" && problems+=" a process in its namespace still runs;"
_netns_running "$mine" && problems+=" its wireguard-go still runs;"
[ "$(netns_namespaces "${P}a1" | sort | tr '\n' ' ')" = "${P}a1-n1 ${P}a1-ul " ] || problems+=" the other run's namespaces: $(netns_namespaces "${P}a1" | tr '\n' ' ');"
[ -S "/var/run/wireguard/${P}a1w1.sock" ] || problems+=" the other run's UAPI socket is gone;"
_netns_running "$other" || problems+=" the other run's wireguard-go was ended;"
netns_cleanup "${P}a1"
[ -z "$(leftovers "${P}a1")" ] || problems+=" left of the other run: $(leftovers "${P}a1");"
result_problems cleanup "$problems" "one run's namespaces, processes, wireguard-go, sockets removed; a run whose prefix extends it untouched"

# --- cleanup after a failure and after TERM, from netns_trap in a script under set -euo pipefail
child() { # prefix, then what the script does after building a node and starting wireguard-go (a subshell: it execs)
  exec bash -c '
    set -euo pipefail
    . "$1"; P=$2
    netns_trap "netns_cleanup $P"
    netns_underlay "$P"; netns_node "$P" 1; netns_pod "$P" 1 10.244.1.10
    ip netns exec "$P-n1" wireguard-go -f "${P}w1" >/dev/null 2>&1 &
    for _ in $(seq 1 50); do [ -S "/var/run/wireguard/${P}w1.sock" ] && break; sleep 0.1; done
    echo ready
    eval "$3"' _ "$LIB" "$1" "$2"
}
problems=""
out="$(child "${P}b" 'false; echo not-reached')"; rc=$?
[ "$out" = ready ] || problems+=" the failing script printed: $out;"
[ "$rc" = 1 ] || problems+=" the failing script exited $rc (want 1);"
left="$(leftovers "${P}b")"; [ -z "$left" ] || problems+=" left after the failure: $left;"
child "${P}c" 'ip netns exec "$P-n1" sleep 300 & wait' >"$WORK/c.out" & c=$!
for _ in $(seq 1 100); do grep -q ready "$WORK/c.out" 2>/dev/null && break; sleep 0.1; done
[ -n "$(leftovers "${P}c")" ] || problems+=" the TERM case built nothing;"
kill -TERM "$c"
for _ in $(seq 1 100); do _netns_running "$c" || break; sleep 0.1; done
if _netns_running "$c"; then
  problems+=" TERM did not end the script within 10 s (blocked or ignored here? $(grep -E '^Sig(Blk|Ign)' /proc/$c/status | tr '\n\t' '  '));"
  kill -9 "$c"
fi
wait "$c"; rc=$?
[ "$rc" = 130 ] || problems+=" after TERM the script exited $rc (want 130);"
left="$(leftovers "${P}c")"; [ -z "$left" ] || problems+=" left after TERM: $left;"
# TERM while the cleanup waits for a process that ignores TERM: the cleanup still finishes.
child "${P}d" 'ip netns exec "$P-n1" bash -c "trap \"\" TERM; while :; do sleep 0.1; done" & false' >"$WORK/d.out" & d=$!
for _ in $(seq 1 100); do grep -q ready "$WORK/d.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
kill -TERM "$d" 2>/dev/null
wait "$d"
left="$(leftovers "${P}d")"; [ -z "$left" ] || problems+=" left after TERM during the cleanup: $left;"
result_problems trap "$problems" "after a failing command (exit 1), after TERM (exit 130), after TERM during the cleanup: nothing of the run is left"
exit "${HARNESS_FAILED:-0}"
