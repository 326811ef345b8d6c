#!/usr/bin/env bash
# Metrics e2e (issue 11): three nodes (network namespaces, wireguard-go), each agent serving
# --metrics-address, scraped every second by a real Prometheus server (Debian's `prometheus`) running
# in a namespace of its own on the underlay. Cases (one RESULT line each):
#   names      Prometheus' HTTP API returns every metric the issue names, for every node
#   parse      node 1's exposition parses with prometheus_client's text parser (PyPI)
#   bytes      per-peer byte counters rise while a ping flood runs
#   health     /healthz and /readyz answer 200
#   drift      a peer removed behind the agent's back comes back and wiremesh_drift_repaired_total rises
#   dead       node 3 killed (agent and wireguard-go): its handshake age grows on nodes 1 and 2 and
#              wiremesh_peers{state="dead"} turns 1 there
#   secrets    no WireGuard public key appears in any exposition
#   json-logs  the agents log with --log-format json: every line an agent wrote is one JSON object (the
#              CLI's own output of init/join aside), membership changes name the member
#   no-secret  no private key, identity or authority seed, cluster key or token, in base64 or hex,
#              appears in any agent log, any command output, any exposition, Prometheus' storage, or
#              the argv or environment of any long-running wiremesh process of the run (every process
#              in its namespaces running the binary: node 1 runs `init` itself, node 2 joined with
#              init's first token from a file, `join --token-file`, node 3 with a token on stdin, `join -`)
set -euo pipefail
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done
NODES=3
PORT=9586
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg wireguard-go ping jq python3 prometheus || exit 1
python3 -c 'import prometheus_client' 2>/dev/null || { log "python3 module prometheus_client is missing: run scripts/setup"; exit 1; }
harness_start wmp
AGENT_ARGS=(--metrics-address "0.0.0.0:$PORT" --log-format json)
PROM=""
PING3=""
before_cleanup() {
  [ -z "$PROM" ] || stop_proc "$PROM"
  [ -z "$PING3" ] || stop_proc "$PING3"
}

netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done
# Three ways an agent starts, each checked for secrets in its argv and environment below: node 1 is
# `init` itself (its first token on stdout, into a file only root reads), node 2 joins with that token
# from the file (`join --token-file`), node 3 with a token created on node 1 read from stdin (`join -`).
install -m 600 /dev/null "$WORK/init-token"
ip netns exec "$P-n1" "$WM" init --name node1 "${AGENT_ARGS[@]}" --state-dir "$WORK/n1" --control-socket "$WORK/n1.sock" \
  --interface "${P}w1" --advertise-address 10.99.0.1 </dev/null >"$WORK/init-token" 2>>"$WORK/agent1.log" &
AGENT[1]=$!
wait_ready 1 || exit 1
wait_until 5 test -s "$WORK/init-token" || { log "init printed no token"; exit 1; }
start_agent 2 join --token-file "$WORK/init-token" --name node2
wait_ready 2 || exit 1
( umask 077; wm 1 token create --ttl 10m >"$WORK/token3" )
AGENT_STDIN="$WORK/token3" start_agent 3 join - --name node3
wait_ready 3 || exit 1
TOKENS=("$(cat "$WORK/init-token")" "$(cat "$WORK/token3")")
add_pods
wait_until 40 all_alive || { log "the mesh did not converge"; exit 1; }
for j in 2 3; do wait_until 10 ping_ok 1 "$(pod "$j")" || { log "pod 1 cannot reach pod $j"; exit 1; }; done

# Prometheus in its own namespace on the underlay, scraping every node every second.
netns_attach "$P" "$P-pm" "${P}um" 10.99.0.250
cat >"$WORK/prometheus.yml" <<EOF
global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: wiremesh
    static_configs:
      - targets: [ "10.99.0.1:$PORT", "10.99.0.2:$PORT", "10.99.0.3:$PORT" ]
EOF
ip netns exec "$P-pm" prometheus --config.file "$WORK/prometheus.yml" --storage.tsdb.path "$WORK/tsdb" \
  --web.listen-address 127.0.0.1:9090 >"$WORK/prometheus.log" 2>&1 &
PROM=$!
# GET on Prometheus' API (in its namespace); prints the JSON.
api() { ip netns exec "$P-pm" python3 -c 'import sys, urllib.parse, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/" + sys.argv[1] + "?" + urllib.parse.urlencode({"query": sys.argv[2]} if len(sys.argv) > 2 else {}), timeout=5).read().decode())' "$@" 2>/dev/null; }
# The value of a PromQL query per instance ("instance value" lines, sorted).
query() { api query "$1" | jq -r '.data.result[] | "\(.metric.instance // "-") \(.value[1])"' | sort; }
# GET on a node's metrics address, from the Prometheus namespace.
fetch() { ip netns exec "$P-pm" python3 -c 'import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())' "$1" 2>/dev/null; }
targets_up() { [ "$(api targets | jq '[.data.activeTargets[] | select(.health == "up")] | length')" = 3 ]; }
wait_until 60 targets_up || { log "Prometheus does not see 3 targets up:"; api targets | jq -c '.data.activeTargets[] | {scrapeUrl, health, lastError}' >&2; tail -5 "$WORK/prometheus.log" >&2; exit 1; }
log "Prometheus scrapes 3 agents"

# --- names: every metric of the issue, from every node (counters that never moved are 0, not absent)
NAMES=(wiremesh_peers wiremesh_peer_last_handshake_seconds wiremesh_peer_receive_bytes_total wiremesh_peer_transmit_bytes_total
  wiremesh_gossip_datagrams_total wiremesh_gossip_bytes_total wiremesh_gossip_datagrams_dropped_total wiremesh_suspicions_total
  wiremesh_reconcile_duration_seconds_bucket wiremesh_reconcile_operations_total wiremesh_drift_repaired_total
  wiremesh_key_age_seconds wiremesh_key_rotations_total wiremesh_cluster_key_generation wiremesh_joins_total
  wiremesh_probes_total wiremesh_push_pulls_total wiremesh_push_pull_bytes_total)
all_names() {
  local n
  MISSING=""
  for n in "${NAMES[@]}"; do
    [ "$(api query "count by (instance) ($n)" | jq '.data.result | length')" = 3 ] || MISSING+=" $n"
  done
  [ -z "$MISSING" ]
}
if wait_until 20 all_names; then result names true "${#NAMES[@]} metrics, each from 3 nodes"
else result names false "missing from some node:$MISSING"; fi

# --- parse: the exposition through prometheus_client's parser
exposition="$(fetch "http://10.99.0.1:$PORT/metrics" | tail -n +2)"
parsed="$(python3 -c 'import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: len(f.samples) for f in text_string_to_metric_families(sys.stdin.read())}
print(" ".join(sorted(n for n in families if n.startswith("wiremesh_"))))' <<<"$exposition" 2>&1)" && parse_ok=1 || parse_ok=0
if [ "$parse_ok" = 1 ] && grep -qw wiremesh_peers <<<"$parsed"; then result parse true "families: $parsed"
else result parse false "prometheus_client: $(tail -1 <<<"$parsed")"; fi

# --- secrets: no public key in any exposition
leaks=""
for i in 1 2 3; do
  body="$(fetch "http://10.99.0.$i:$PORT/metrics")"
  for j in 1 2 3; do grep -qF "$(cat "$WORK/key$j")" <<<"$body" && leaks+=" node $i shows node $j's key"; done
done
if [ -z "$leaks" ]; then result secrets true "no key in 3 expositions"; else result secrets false "$leaks"; fi

# --- health
h="$(fetch "http://10.99.0.2:$PORT/healthz" | sed -n 1p)"; r="$(fetch "http://10.99.0.2:$PORT/readyz" | sed -n 1p)"
if [ "$h" = 200 ] && [ "$r" = 200 ]; then result health true "healthz 200, readyz 200"; else result health false "healthz $h, readyz $r"; fi

# --- bytes: the per-peer transmit counters rise under traffic
tx() { query "sum by (instance) (wiremesh_peer_transmit_bytes_total)"; }
before="$(tx)"
ip netns exec "$P-p1" ping -q -f -c 3000 -s 500 "$(pod 2)" >/dev/null 2>&1 || true
sleep 3
after="$(tx)"
rose="$(join <(echo "$before") <(echo "$after") | awk '$3 > $2 { n++ } END { print n + 0 }')"
if [ "$rose" -ge 2 ]; then result bytes true "transmit bytes rose on $rose nodes: before [$(echo $before)] after [$(echo $after)]"
else result bytes false "before [$(echo $before)] after [$(echo $after)]"; fi

# --- drift: a peer removed by hand comes back, counted
drift() { query "wiremesh_drift_repaired_total{instance=\"10.99.0.1:$PORT\"}" | awk '{ print $2 + 0 }'; }
d0="$(drift)"
ip netns exec "$P-n1" wg set "${P}w1" peer "$(cat "$WORK/key2")" remove
repaired() { has_peer 1 "$(cat "$WORK/key2")" && [ "$(drift)" -gt "${d0:-0}" ]; }
if wait_until 25 repaired; then result drift true "peer back and wiremesh_drift_repaired_total $d0 -> $(drift)"
else result drift false "peer back: $(has_peer 1 "$(cat "$WORK/key2")" && echo yes || echo no), drift $d0 -> $(drift)"; fi

# --- no-secret: every secret of every node, base64 and hex, nowhere it could leak
secrets=("${TOKENS[@]}")
for i in 1 2 3; do
  for f in identity.key authority.key wireguard.key; do if [ -f "$WORK/n$i/$f" ]; then secrets+=("$(cat "$WORK/n$i/$f")"); fi; done
  mapfile -t -O "${#secrets[@]}" secrets < <(jq -r '.keys[]' "$WORK/n$i/keyring.json")
done
hexes=()
for s in "${secrets[@]:${#TOKENS[@]}}"; do hexes+=("$(base64 -d <<<"$s" | od -An -v -tx1 | tr -d ' \n')"); done
for i in 1 2 3; do
  fetch "http://10.99.0.$i:$PORT/metrics" >"$WORK/exposition$i.out"
  wm "$i" status --json >"$WORK/status$i.out" 2>&1 || true
  wm "$i" peers --json >"$WORK/peers$i.out" 2>&1 || true
done
# Every wiremesh process of the run (in its namespaces, running this binary), not only the agents this
# script started: argv and environment, one file each.
binary="$(readlink -f "$WM")"
procs=()
for pid in $(for ns in $(netns_namespaces "$P"); do ip netns pids "$ns"; done | sort -un); do
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
  [ "${exe% (deleted)}" = "$binary" ] || continue
  procs+=("$pid")
  tr '\0' '\n' <"/proc/$pid/cmdline" >"$WORK/argv-$pid.out"
  tr '\0' '\n' <"/proc/$pid/environ" >"$WORK/environ-$pid.out"
done
proc_problems=""
for i in 1 2 3; do [[ " ${procs[*]} " == *" ${AGENT[$i]} "* ]] || proc_problems+=" node $i's agent (pid ${AGENT[$i]}) is not among them;"; done
[ "${#procs[@]}" = 3 ] || proc_problems+=" ${#procs[@]} wiremesh processes, want 3 (one agent per node);"
# Whatever the secret: no token-shaped word anywhere in them.
grep -lE 'wmj[0-9]+\.' "$WORK"/argv-*.out "$WORK"/environ-*.out >/dev/null 2>&1 && proc_problems+=" a token-shaped argument or variable;"
grep -qx 'init' "$WORK/argv-${AGENT[1]}.out" 2>/dev/null || proc_problems+=" node 1 does not run as 'wiremesh init';"
for i in 2 3; do grep -qx 'agent' "$WORK/argv-${AGENT[$i]}.out" 2>/dev/null || proc_problems+=" node $i's join did not become 'wiremesh agent';"; done
ip netns exec "$P-pm" python3 -c 'import urllib.parse, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/series?" + urllib.parse.urlencode({"match[]": "{__name__=~\"wiremesh_.*\"}"}), timeout=5).read().decode())' >"$WORK/series.out" 2>&1 || true
leaked=""
for s in "${secrets[@]}" "${hexes[@]}"; do
  [ -n "$s" ] || continue
  hit="$(grep -rlF -- "$s" "$WORK"/agent*.log "$WORK"/*.out "$WORK"/n*/wireguard-go.log "$WORK/tsdb" 2>/dev/null | head -3 | tr '\n' ' ' || true)"
  [ -z "$hit" ] || leaked+=" ${s:0:4}… in $hit;"
done
if [ -z "$leaked$proc_problems" ]; then
  result no-secret true "${#secrets[@]} secrets (and hex forms) in none of $(ls "$WORK"/agent*.log "$WORK"/*.out | wc -l) files nor Prometheus' storage, nor the argv or environment of the run's ${#procs[@]} wiremesh processes (init, join --token-file, join -)"
else result no-secret false "$leaked$proc_problems"; fi

# --- dead: node 3's host goes (agent and wireguard-go killed)
age() { query "wiremesh_peer_last_handshake_seconds{peer=\"node3\"}" | awk -v i="10.99.0.$1:$PORT" '$1 == i { print $2 }'; }
# Traffic to node 3 until it goes: its data plane was alive a moment ago, so nodes 1 and 2 keep its peer
# (and its series) for up to 30 s after its last packet while gossip declares it dead.
ip netns exec "$P-p1" ping -q -i 0.2 "$(pod 3)" >/dev/null 2>&1 & PING3=$!
sleep 3
a1="$(age 1)"
stop_agent 3 KILL
kill_wg_go "${P}w3"
dead_on() { [ "$(query "wiremesh_peers{state=\"dead\",instance=\"10.99.0.$1:$PORT\"}" | awk '{ print $2 }')" = 1 ]; }
t0="$(now)"
if wait_until 40 dead_on 1 && wait_until 10 dead_on 2; then
  dead_s="$(since "$t0")"; sleep 2; a2="$(age 1)"
  grew="$(awk -v a="${a1:-0}" -v b="${a2:-0}" 'BEGIN { print (b > a) ? 1 : 0 }')"
  if [ "$grew" = 1 ]; then result dead true "dead on nodes 1 and 2 after $dead_s s; node 1's handshake age of node3 ${a1:-?} -> ${a2:-?} s"
  else result dead false "dead after $dead_s s but the handshake age did not grow: ${a1:-?} -> ${a2:-none} (the peer may have been removed)"; fi
else
  result dead false "wiremesh_peers{state=dead}: $(query 'wiremesh_peers{state="dead"}' | tr '\n' ' ')"
fi
stop_proc "$PING3"; PING3=""

# --- json-logs: every line an agent wrote is a JSON object with time, level, node, event
bad=0; json=0; member=0
for f in "$WORK"/agent*.log; do
  while IFS= read -r line; do
    case "$line" in
      # The CLI's own output of init/join, before the agent's logger exists: "wiremesh: ..." on stderr
      # and join's "joined cluster ..." result on stdout (both land in the agent's log file here).
      wiremesh:*|"joined cluster "*) continue ;;
    esac
    if jq -e 'type == "object" and has("time") and has("level") and has("event") and has("fields")' <<<"$line" >/dev/null 2>&1; then
      json=$((json + 1))
      jq -e 'select(.event == "member joined" and .node != null and .fields.peer != null)' <<<"$line" >/dev/null 2>&1 && member=$((member + 1))
    else
      bad=$((bad + 1)); [ "$bad" -gt 3 ] || log "not a JSON log line in ${f##*/}: ${line:0:120}"
    fi
  done <"$f"
done
if [ "$bad" = 0 ] && [ "$json" -gt 0 ] && [ "$member" -gt 0 ]; then result json-logs true "$json JSON lines, $member 'member joined' lines naming node and peer"
else result json-logs false "$bad lines not JSON, $json JSON, $member member-joined lines"; fi

exit "$HARNESS_FAILED"
