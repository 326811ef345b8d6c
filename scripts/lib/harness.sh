# shellcheck shell=bash disable=SC2034  # sets P, WORK, TOKEN, CAPTURE, HARNESS_FAILED, MESH_ERROR for its callers
# Harness of the e2e and bench scripts that drive `wiremesh` nodes in network namespaces (bash).
# Source it; sourcing defines functions only (and sources netns.sh, whose topology it uses).
#
# Variables the caller sets:
#   WM          the wiremesh binary                 NODES        how many nodes the mesh has
#   KEEP        1: harness_cleanup keeps $WORK      LOG_NAME     log prefix (default: the script's name)
#   AGENT_LOGS  directory of agentI.log ($WORK)     AGENT_ARGS   array: flags added to every start_agent
#   AGENT_STDIN the agents' stdin (/dev/null)       POLL         wait_until's interval (0.2 s)
# and harness_start sets: P (per-run prefix), WORK (the run's directory), AGENT (node -> agent pid),
# TOKEN (mesh_up), HARNESS_FAILED (1 once a case failed: `exit "$HARNESS_FAILED"`).
# Node I is namespace $P-nI at 10.99.0.I, interface ${P}wI, state $WORK/nI, socket $WORK/nI.sock.
#
# harness_check TOOL...          root, $WM executable (when set), each TOOL installed; else logs, returns 1
# harness_start TAG [BYTES]      P = TAG + BYTES (3) random bytes in hex, WORK, AGENT; trap harness_cleanup
# harness_cleanup                before_cleanup (if defined), kill -9 the agents, netns_cleanup, rm $WORK
# log TEXT...                    "NAME: TEXT" on stderr
# now                            the wall clock in seconds, with nanoseconds
# elapsed FROM TO [DECIMALS]     TO - FROM in seconds, DECIMALS (1) places
# since T0 [DECIMALS]            seconds from T0 to now, DECIMALS (1) places
# within T0 SECONDS              true while less than SECONDS have passed since T0
# wait_until SECONDS CMD...      runs CMD every $POLL s until it succeeds (0) or SECONDS pass (1)
# wm I ARGS...                   wiremesh ARGS in node I's namespace, on its state dir and control socket
# wm_node I ARGS...              wm plus node I's interface and advertise address (init, join)
# start_agent I ARGS...          wm_node I ARGS AGENT_ARGS in the background, log appended; AGENT[I]=pid
# stop_agent I [SIGNAL]          sends SIGNAL (TERM) to node I's agent, reaps it, forgets it
# ready I                        node I's agent answers `status`
# wait_ready I [SECONDS]         waits (15 s) until ready I; else logs its log's tail, returns 1
# mesh_up [ARGS...]              node 1 inits and runs (agent ARGS), TOKEN (NODES-1 uses, also in the 0600 file
#                                $WORK/token), nodes 2..NODES join --token-file $WORK/token; else MESH_ERROR, 1
# add_pod I / add_pods [I...]    node I's cidrI, keyI, podI files in $WORK (from status) and its pod namespace
# pod I                          node I's pod address
# status_field I FILTER          `jq -r .FILTER` of node I's `status --json`
# alive_count I                  peers node I lists alive (-1 when it does not answer)
# all_alive [I...]               each listed node (default 1..NODES) sees all other listed ones alive
# peer_state I NAME              member NAME's state on node I (alive, suspect, dead, left; empty: unknown)
# wg_dump I                      `wg show dump` of node I's interface
# has_peer I KEY                 node I's device holds peer KEY
# ping_ok I ADDR                 pod I pings ADDR (one try, then two more)
# ping_sent_lost FILE            "SENT LOST" from a ping summary in FILE ("1 1" when it has none)
# capture_start FILE [FILTER]    tcpdump on the underlay bridge (FILTER: ip) into FILE; CAPTURE=pid
# capture_stop                   ends the capture (nothing lost: tcpdump -l writes each line)
# stop_proc PID                  TERM, KILL after 2 s, reaped (KILL: a caller may block TERM for children)
# kill_wg_go IFACE [SIGNAL]      signals (KILL) every `wireguard-go -f IFACE`
# snapshot DIR                   DIR's names, modes, sizes and content hashes, or "absent"
# json_bool V                    true for 1 or true, else false
# result CASE PASS DETAIL [JSON] prints RESULT {"case","pass","detail"} + the JSON object; a failure sets HARNESS_FAILED
# result_problems CASE PROBLEMS DETAIL [JSON]   result, passed when PROBLEMS is empty (then the detail)
. "${BASH_SOURCE[0]%/*}/netns.sh"

harness_check() {
  local t
  [ "$(id -u)" = 0 ] || { log "needs root (network namespaces, TUN)"; return 1; }
  [ -z "${WM:-}" ] || [ -x "$WM" ] || { log "$WM not found: run 'swift build' first"; return 1; }
  for t in "$@"; do command -v "$t" >/dev/null || { log "'$t' is missing: run scripts/setup"; return 1; }; done
}

harness_start() {
  P="$1$(od -An -N"${2:-3}" -tx1 /dev/urandom | tr -d ' \n')"
  WORK="$(mktemp -d "/tmp/$P.XXXX")"
  # The agents' CNI conflists stay in the run's directory, not /etc/cni/net.d.
  export WIREMESH_CNI_CONFIG_DIR="$WORK/cni"
  declare -gA AGENT=()
  HARNESS_FAILED=0
  netns_trap harness_cleanup
}

# Errexit off: a trap under `set -e` must not stop at an agent that is already gone.
harness_cleanup() {
  local - i
  set +e
  ! declare -F before_cleanup >/dev/null || before_cleanup
  for i in "${!AGENT[@]}"; do kill -9 "${AGENT[$i]}" 2>/dev/null; done
  # wireguard-go, pings, captures: everything else of the run
  netns_cleanup "$P"
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  return 0
}

log() { local n="${LOG_NAME:-${0##*/}}"; echo "${n%.sh}: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$2" -v b="$1" "BEGIN { printf \"%.${3:-1}f\", a - b }"; }
since() { elapsed "$1" "$(now)" "${2:-1}"; }
within() { awk -v a="$(now)" -v b="$1" -v s="$2" 'BEGIN { exit !(a - b < s) }'; }
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  while :; do "$@" && return 0; [ "$(date +%s)" -ge "$deadline" ] && return 1; sleep "${POLL:-0.2}"; done
}

wm() { local i=$1; shift; ip netns exec "$P-n$i" "$WM" "$@" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock"; }
wm_node() { local i=$1; shift; wm "$i" "$@" --interface "${P}w$i" --advertise-address "10.99.0.$i"; }
# `ip netns exec` itself in the background, not a function: $! must be the agent (exec'd by ip), or
# a signal to AGENT[I] would reach only a subshell.
start_agent() {
  local i=$1; shift
  ip netns exec "$P-n$i" "$WM" "$@" "${AGENT_ARGS[@]}" --state-dir "$WORK/n$i" --control-socket "$WORK/n$i.sock" \
    --interface "${P}w$i" --advertise-address "10.99.0.$i" <"${AGENT_STDIN:-/dev/null}" >>"${AGENT_LOGS:-$WORK}/agent$i.log" 2>&1 &
  AGENT[$i]=$!
}
stop_agent() {
  local pid=${AGENT[$1]:-}
  [ -n "$pid" ] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "AGENT[$1]"
}
ready() { wm "$1" status >/dev/null 2>&1; }
wait_ready() {
  POLL=0.1 wait_until "${2:-15}" ready "$1" && return 0
  log "agent $1 did not answer status within ${2:-15} s; its log:"; tail -n 30 "${AGENT_LOGS:-$WORK}/agent$1.log" >&2
  return 1
}
mesh_up() {
  local i
  MESH_ERROR=""
  wm_node 1 init --name node1 --prepare-only >"$WORK/token0" || { MESH_ERROR="init on node 1 failed"; log "$MESH_ERROR"; return 1; }
  start_agent 1 agent "$@"
  wait_ready 1 || { MESH_ERROR="agent 1 did not answer status"; return 1; }
  # Tokens admit one node unless given --uses. The file only its owner reads keeps it out of argv.
  ( umask 077; wm 1 token create --ttl 10m --uses $((NODES > 1 ? NODES - 1 : 1)) >"$WORK/token" )
  TOKEN="$(cat "$WORK/token")"
  [ -n "$TOKEN" ] || { MESH_ERROR="token create printed nothing"; log "$MESH_ERROR"; return 1; }
  for i in $(seq 2 "$NODES"); do
    start_agent "$i" join --token-file "$WORK/token" --name "node$i"
    wait_ready "$i" || { MESH_ERROR="node $i: join did not bring up an agent"; return 1; }
  done
}
add_pod() {
  local i=$1 s
  s="$(wm "$i" status --json)" || return 1
  jq -r '.pod_cidrs[0]' <<<"$s" >"$WORK/cidr$i" && jq -r .public_key <<<"$s" >"$WORK/key$i" &&
    netns_pod_address "$(cat "$WORK/cidr$i")" >"$WORK/pod$i" && netns_pod "$P" "$i" "$(pod "$i")"
}
add_pods() {
  local i nodes=("$@")
  [ $# -gt 0 ] || mapfile -t nodes < <(seq 1 "$NODES")
  for i in "${nodes[@]}"; do add_pod "$i" || return 1; done
}
pod() { cat "$WORK/pod$1"; }

status_field() { wm "$1" status --json 2>/dev/null | jq -r ".$2"; }
alive_count() { wm "$1" peers --json 2>/dev/null | jq '[.[] | select(.state == "alive")] | length' 2>/dev/null || echo -1; }
# Every node asked at once: asked one after another, a "yes" came a whole round of CLI starts after
# the first node's answer (seconds on a loaded machine), and a heal timed with it looked that much slower.
all_alive() {
  local i nodes=("$@") pids=() dir ok=0
  [ $# -gt 0 ] || mapfile -t nodes < <(seq 1 "$NODES")
  dir="$(mktemp -d "${WORK:-/tmp}/alive.XXXXXX")"
  for i in "${nodes[@]}"; do alive_count "$i" >"$dir/$i" & pids+=($!); done
  wait "${pids[@]}"
  for i in "${nodes[@]}"; do [ "$(cat "$dir/$i")" = $((${#nodes[@]} - 1)) ] || { ok=1; break; }; done
  rm -rf "$dir"
  return "$ok"
}
peer_state() { wm "$1" peers --json 2>/dev/null | jq -r --arg n "$2" '.[] | select(.name == $n) | .state' 2>/dev/null; }
wg_dump() { ip netns exec "$P-n$1" wg show "${P}w$1" dump 2>/dev/null; }
# awk reads the whole dump: `grep -q` would end the pipe early and fail it under pipefail.
has_peer() { wg_dump "$1" | awk -v k="$2" 'NR > 1 && $1 == k { found = 1 } END { exit !found }'; }
ping_ok() {
  ip netns exec "$P-p$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 || ip netns exec "$P-p$1" ping -c 2 -i 0.2 -W 2 "$2" >/dev/null 2>&1
}
ping_sent_lost() {
  local tx rx
  tx="$(grep -o '[0-9]* packets transmitted' "$1" | awk '{ print $1 }')" || true
  rx="$(grep -o '[0-9]* received' "$1" | awk '{ print $1 }')" || true
  [ -n "$tx" ] && [ -n "$rx" ] || { log "no ping summary in $1"; cat "$1" >&2; tx=1; rx=0; }
  echo "$tx $((tx - rx))"
}

capture_start() {
  local filter=("${@:2}")
  [ ${#filter[@]} -gt 0 ] || filter=(ip)
  ip netns exec "$P-ul" tcpdump -l -n -i br0 -c 50000 "${filter[@]}" >"$1" 2>"$1.err" &
  CAPTURE=$!
  wait_until 5 grep -qs "listening on" "$1.err"
}
capture_stop() { sleep 0.3; stop_proc "$CAPTURE"; CAPTURE=""; }
stop_proc() {
  local _
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 20); do _netns_running "$1" || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
kill_wg_go() { local pid; for pid in $(netns_wg_go_pids "$1"); do kill "-${2:-KILL}" "$pid" 2>/dev/null || true; done; }
snapshot() {
  if [ -e "$1" ]; then (cd "$1" && find . -printf '%p %m %s\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort)
  else echo absent; fi
}

json_bool() { case "$1" in 1|true) echo true ;; *) echo false ;; esac; }
result() {
  local pass line
  pass="$(json_bool "$2")"
  [ "$pass" = true ] || HARNESS_FAILED=1
  line="$(jq -cn --arg case "$1" --argjson pass "$pass" --arg detail "$3" --argjson extra "${4:-"{}"}" \
    '{case: $case, pass: $pass, detail: $detail} + $extra')" ||
    { HARNESS_FAILED=1; line="$(jq -cn --arg case "$1" --arg detail "$3 (and bad result JSON: ${4:-})" '{case: $case, pass: false, detail: $detail}')"; }
  echo "RESULT $line"
}
result_problems() {
  if [ -z "$2" ]; then result "$1" true "$3" "${4:-"{}"}"; else result "$1" false "${2# }" "${4:-"{}"}"; fi
}
