#!/usr/bin/env bash
# A hostile member against real agents (issue 10). A 4-node wiremesh cluster in network namespaces
# (wireguard-go unless the kernel has WireGuard), agents with metrics and JSON logs. Node 4's agent is
# killed and `wiremesh-hostile`, holding node 4's state directory (its identity seed, the cluster key,
# its certificate), attacks nodes 1-3 from node 4's gossip address; later a stranger without the
# cluster key tries from node 5's address. Meanwhile pods 1 -> 2 and 3 -> 1 and overlay 2 -> 3 ping
# every 0.1 s and `wg show allowed-ips` of nodes 1-3 is sampled every 0.5 s. One line per case:
#   RESULT {"case": NAME, "pass": BOOL, "detail": TEXT, ...}
#
#   scripts/e2e/hostile.sh [--keep]    (root; WIREMESH_BIN, WIREMESH_HOSTILE_BIN: default .build/debug/…)
#
# Cases (each attack must fail, be counted on the honest nodes' metrics or logs, and leave them up):
#   claim-block          node 2's block claimed: new identities with version 1 (no certificate, node 2's
#                        certificate), node 2's name with a new identity, node 4's identity with node 2's
#                        block (its own certificate, one it edited): refused as untrusted / identity_conflict
#   outside-range        node 4 claims 10.244.0.0/17, the underlay 10.99.0.0/24, 0.0.0.0/0 and, in this
#                        IPv4-only cluster, the IPv6 blocks fd42:244:0:2::/64 and ::/0 (its certificate,
#                        self-signed ones, new identities): refused as untrusted
#   forged-certificate   certificates signed with node 4's key, with a key derived from the cluster key,
#                        node 2's certificate re-used, a new identity certifying itself: untrusted
#   max-numbers          status claims, leaves, digests at version/incarnation 2^64 - 1 (about node 2, about
#                        the receiver, about nobody), sequence numbers 2^32 - 1: nobody stops, node 2 stays
#                        alive (it refutes with a new record version), forged leaves bad_signature
#   revocation-serial    node 4 announces revocation serial 2^32 - 1 (it holds none), a new record version every
#                        second for 30 s, and answers keyring requests without a list: each honest node asks it
#                        at most 3 times (a 10 s back-off, doubling) instead of every 5 s, and logs why
#   key-generation       node 4 advertises a cluster key of generation 2^64 - 1 and hands it over when asked:
#                        no honest node installs it, and a cluster key rotation still works afterwards
#   forged-liveness      "node 2 is suspect/dead" claimed every 0.1 s for 5 s in every member's name: node 2 is
#                        never declared dead, no honest node removes its peer, the refuted suspicions are counted
#                        (wiremesh_suspicions_total{outcome="refuted"})
#   replay               2 s of captured gossip sent again to its destinations: dropped as replay
#                        (wiremesh_gossip_datagrams_dropped_total{reason="replay"}); also to other members
#   member-flood         3000 fake members (fresh identities, no / node 4's / self-signed certificates): none
#                        enters a view, refused as untrusted
#   mint-token           tokens keyed from every secret node 4 holds: no join port admits; `wiremesh join`
#                        with one is refused; counted as wiremesh_joins_total{result="refused"}
#   keyring-after-eviction  `wiremesh evict node4` on node 1, then node 4 asks every member for the keyring:
#                        refused (evicted), also in node 2's name
#   old-key-closed       once the old cluster key is retired, node 4's gossip opens nowhere (bad_key)
#   stranger             without the cluster key: nothing answered, bad_key counted; the join port tells
#                        no cluster id, names or ranges, and does not say which names exist
#   allowed-ips-stable   no sample of nodes 1-3 ever has an honest block on another key or any prefix on node
#                        4's key beyond its own, or an unknown peer, or lacks an honest node's peer
#   ping-continuity      no ping stream stopped for more than 2 s
#   agents-up            nodes 1-3's agents ran throughout and answer `status`
# Everything carries a per-run prefix and is removed on exit (also on failure), unless --keep.
set -uo pipefail
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
NODES=4
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
HOSTILE="${WIREMESH_HOSTILE_BIN:-$ROOT/.build/debug/wiremesh-hostile}"
unset WIREMESH_BIN WIREMESH_HOSTILE_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg wireguard-go ping jq python3 tcpdump || exit 1
[ -x "$HOSTILE" ] || { log "$HOSTILE not found: run 'swift build' first"; exit 1; }
harness_start wmh
T0="$(now)"
GRACE=3
METRICS_PORT=9586
AGENT_ARGS=(--cluster-key-grace "${GRACE}s" --metrics-address "0.0.0.0:$METRICS_PORT" --log-format json)
TARGETS=(--target 10.99.0.1:7946 --target 10.99.0.2:7946 --target 10.99.0.3:7946)
BG=()
before_cleanup() { local p; for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done; }

# The attacker: node 4's state, from node 4's gossip address (its agent is gone).
hostile() { local a=$1; shift; ip netns exec "$P-n4" "$HOSTILE" "$a" --state-dir "$WORK/n4" --bind 10.99.0.4:7946 "${TARGETS[@]}" "$@"; }
keys_of() { status_field "$1" 'cluster_keys | map(.id) | join(",")' 2>/dev/null; }
# scrape TAG: nodes 1-3's metrics expositions into $WORK/m.TAG.I, fetched in one go from node 5's namespace.
scrape() {
  ip netns exec "$P-n5" python3 -c 'import sys, urllib.request
for i in (1, 2, 3):
    try:
        body = urllib.request.urlopen("http://10.99.0.%d:%s/metrics" % (i, sys.argv[1]), timeout=5).read().decode()
    except Exception:
        body = ""
    open("%s.%d" % (sys.argv[2], i), "w").write(body)' "$METRICS_PORT" "$WORK/m.$1" 2>/dev/null
}
# value TAG I SERIES: SERIES (name{labels}) in scrape TAG of node I (0 when absent)
value() { awk -v s="$3" '$1 == s { v = $2 } END { printf "%d", v + 0 }' "$WORK/m.$1.$2"; }
# delta FROM TO SERIES [NODES]: the sum over nodes (1 2 3) of SERIES(TO) - SERIES(FROM)
delta() {
  local i sum=0 nodes="${4:-1 2 3}"
  for i in $nodes; do sum=$((sum + $(value "$2" "$i" "$3") - $(value "$1" "$i" "$3"))); done
  echo "$sum"
}
dropped() { echo "wiremesh_gossip_datagrams_dropped_total{reason=\"$1\"}"; }
agents_alive() { local i; for i in 1 2 3; do kill -0 "${AGENT[$i]}" 2>/dev/null && ready "$i" || return 1; done; }
# log_count I EVENT PEER [SINCE]: JSON log lines of node I with this event about PEER (at or after SINCE, ISO)
log_count() {
  grep '^{' "$WORK/agent$1.log" | jq -r --arg e "$2" --arg p "$3" --arg t "${4:-}" \
    'select(.event == $e and .fields.peer == $p and .time >= $t) | .time' 2>/dev/null | wc -l
}
iso_now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
CASE=""; PROBLEMS=""
begin() { CASE=$1; PROBLEMS=""; log "--- $1 (at $(since "$T0") s)"; scrape before; }
problem() { PROBLEMS+=" $*;"; log "$CASE: $*"; }
finish() { agents_alive || problem "an honest agent is down or does not answer status"; result_problems "$CASE" "$PROBLEMS" "$1" "${2:-"{}"}"; }

# ---------------------------------------------------------------------------------------------
# The cluster, its pods, the traffic that must not stop and the allowed-IPs sampler

netns_underlay "$P" || exit 1
for i in 1 2 3 4 5; do netns_node "$P" "$i" || exit 1; done
mesh_up || { result setup false "$MESH_ERROR"; exit 1; }
add_pods 1 2 3 || { result setup false "pods"; exit 1; }
wait_until 40 all_alive || { result setup false "the mesh did not converge"; exit 1; }
for j in 2 3; do wait_until 10 ping_ok 1 "$(pod "$j")" || { result setup false "pod 1 cannot reach pod $j"; exit 1; }; done
declare -A OV KEY
for i in 1 2 3 4; do OV[$i]="$(status_field "$i" overlay_address)"; KEY[$i]="$(status_field "$i" public_key)"; done
CIDR4="$(status_field 4 'pod_cidrs[0]')"
CLUSTER_ID="$(status_field 1 cluster_id)"
POD_RANGE="$(jq -r .pod_range "$WORK/n1/cluster.json")"
log "4 nodes up on $(status_field 1 backend); node 4 ($CIDR4) turns hostile"
stop_agent 4 KILL

ip netns exec "$P-p1" ping -D -n -i 0.1 "$(pod 2)" >"$WORK/ping.pod1-pod2" 2>&1 & BG+=($!)
ip netns exec "$P-p3" ping -D -n -i 0.1 "$(pod 1)" >"$WORK/ping.pod3-pod1" 2>&1 & BG+=($!)
ip netns exec "$P-n2" ping -D -n -i 0.1 "${OV[3]}" >"$WORK/ping.node2-overlay3" 2>&1 & BG+=($!)
(
  while :; do
    t="$(date +%s.%N)"
    sample=""
    for i in 1 2 3; do
      sample+="$(ip netns exec "$P-n$i" wg show "${P}w$i" allowed-ips 2>/dev/null |
        awk -v t="$t" -v n="$i" '{ printf "%s %s", t, n; for (f = 1; f <= NF; f++) printf " %s", $f; print "" }')"$'\n'
    done
    printf '%s' "$sample"   # one write per sample: stopping the sampler never leaves half of one
    sleep 0.5
  done
) >"$WORK/allowed-ips" 2>/dev/null & BG+=($!)
sleep 1

# ---------------------------------------------------------------------------------------------
begin claim-block
out="$(hostile claim-block --victim node2 2>"$WORK/claim.err")" || problem "the tool failed: $(tail -2 "$WORK/claim.err")"
scrape after
accepted="$(jq -r '.accepted | join(",")' <<<"$out" 2>/dev/null)"
[ -z "$accepted" ] || problem "accepted: $accepted"
u="$(delta before after "$(dropped untrusted)")"; ic="$(delta before after "$(dropped identity_conflict)")"; rp="$(delta before after "$(dropped repeated)")"
[ "$u" -ge 15 ] || problem "untrusted rose by $u (5 forged records to each of 3 nodes)"
[ "$ic" -ge 3 ] || problem "identity_conflict rose by $ic (node 2's name with a new identity, to 3 nodes)"
finish "6 forged records to 3 nodes: untrusted +$u, identity_conflict +$ic, repeated +$rp; none accepted" \
  "$(jq -cn --argjson u "$u" --argjson ic "$ic" --argjson rp "$rp" '{untrusted: $u, identity_conflict: $ic, repeated: $rp}')"

# ---------------------------------------------------------------------------------------------
begin outside-range
out="$(hostile outside-range --prefix 10.244.0.0/17 --prefix 10.99.0.0/24 --prefix 0.0.0.0/0 \
  --prefix fd42:244:0:2::/64 --prefix ::/0 2>"$WORK/range.err")" ||
  problem "the tool failed: $(tail -2 "$WORK/range.err")"
scrape after
accepted="$(jq -r '.accepted | join(",")' <<<"$out" 2>/dev/null)"
[ -z "$accepted" ] || problem "accepted: $accepted"
u="$(delta before after "$(dropped untrusted)")"
[ "$u" -ge 45 ] || problem "untrusted rose by $u (15 records to each of 3 nodes)"
finish "a /17, the underlay, 0.0.0.0/0 and two IPv6 prefixes claimed 15 ways: untrusted +$u, none accepted" "$(jq -cn --argjson u "$u" '{untrusted: $u}')"

# ---------------------------------------------------------------------------------------------
begin forged-certificate
out="$(hostile forged-certificate --victim node2 2>"$WORK/forged.err")" || problem "the tool failed: $(tail -2 "$WORK/forged.err")"
scrape after
accepted="$(jq -r '.accepted | join(",")' <<<"$out" 2>/dev/null)"
[ -z "$accepted" ] || problem "accepted: $accepted"
u="$(delta before after "$(dropped untrusted)")"
[ "$u" -ge 12 ] || problem "untrusted rose by $u (4 records to each of 3 nodes)"
finish "certificates signed by node 4's key, the cluster key, node 2's re-used, self-certified: untrusted +$u, none accepted" \
  "$(jq -cn --argjson u "$u" '{untrusted: $u}')"

# ---------------------------------------------------------------------------------------------
begin max-numbers
out="$(hostile max-numbers --victim node2 2>"$WORK/max.err")" || problem "the tool failed: $(tail -2 "$WORK/max.err")"
sleep 1
scrape after
bs="$(delta before after "$(dropped bad_signature)")"
v0="$(jq -r .victim_version_before <<<"$out" 2>/dev/null)"; v1="$(jq -r .victim_version_after <<<"$out" 2>/dev/null)"
[ "$bs" -ge 3 ] || problem "bad_signature rose by $bs (forged leaves of node 2 and of the receiver itself, to each of 3 nodes)"
# A suspicion at the largest incarnation is refuted with a new record version.
[ -n "$v1" ] && [ "$v1" != "$v0" ] || problem "node 2 did not refute with a new record version ($v0 -> $v1)"
for i in 1 3; do [ "$(peer_state "$i" node2)" = alive ] || problem "node 2 is $(peer_state "$i" node2) on node $i"; done
[ "$(jq -r .members_answering <<<"$out" 2>/dev/null)" -ge 3 ] 2>/dev/null || problem "not every node answered afterwards: $out"
finish "claims at 2^64 - 1: nobody stopped; node 2 refuted with a new record version ($v0 -> $v1); forged leaves: bad_signature +$bs" \
  "$(jq -cn --argjson bs "$bs" '{bad_signature: $bs}')"

# ---------------------------------------------------------------------------------------------
begin revocation-serial
t_case="$(iso_now)"
out="$(hostile revocation-serial --seconds 30 2>"$WORK/revserial.err")" || problem "the tool failed: $(tail -2 "$WORK/revserial.err")"
versions="$(jq -r .versions <<<"$out" 2>/dev/null)"
per=""
for i in 1 2 3; do
  asked="$(jq -r --arg n "node$i" '[.keyring_requests[] | select(. == $n)] | length' <<<"$out" 2>/dev/null)"
  warned="$(grep '^{' "$WORK/agent$i.log" | jq -r --arg t "$t_case" \
    'select((.event | startswith("a member announces a revocation list it does not hand over")) and .fields.member == "node4" and .time >= $t) | .time' 2>/dev/null | wc -l)"
  [ "${asked:-0}" -ge 1 ] || problem "node $i never asked node 4 (did the announcement reach it?)"
  [ "${asked:-99}" -le 3 ] || problem "node $i asked node 4 for the keyring $asked times in 30 s (want at most 3: a 10 s back-off, doubling)"
  [ "$warned" -ge 1 ] || problem "node $i logged no warning about node 4's revocation serial"
  per+=" node $i asked ${asked:-?} times, warned $warned times;"
done
finish "node 4 announced revocation serial 2^32 - 1 in ${versions:-?} record versions over 30 s and answered without a list:$per" \
  "$(jq -cn --argjson v "${versions:-null}" --arg per "$per" '{versions: $v, per_node: $per}')"


# ---------------------------------------------------------------------------------------------
begin key-generation
out="$(hostile key-generation --seconds 4 2>"$WORK/keygen.err")" || problem "the tool failed: $(tail -2 "$WORK/keygen.err")"
evil="$(jq -r .key <<<"$out" 2>/dev/null)"
asked="$(jq -r '.keyring_requests | join(",")' <<<"$out" 2>/dev/null)"
for i in 1 2 3; do
  k="$(keys_of "$i")"
  [[ ",$k," != *",$evil,"* ]] || problem "node $i installed node 4's key $evil (generation 2^64 - 1): keys $k"
done
if wm 2 cluster-key rotate >"$WORK/rotate.out" 2>&1; then
  rotated="$(grep -o 'installed cluster key [0-9a-f]*' "$WORK/rotate.out" | awk '{print $4}')"
else
  problem "cluster-key rotate on node 2 fails afterwards: $(tail -1 "$WORK/rotate.out")"; rotated=""
fi
finish "node 4 advertised $evil at generation 2^64 - 1 (asked for it by: ${asked:-nobody}); no honest node took it; a rotation still works (${rotated:-none})" \
  "$(jq -cn --arg a "$asked" '{asked_by: $a}')"

# That rotation finishes during the next attacks (the tool fetches the new key at each start, as node
# 4's agent would); the eviction below waits for it: a rotation still installing would make the
# eviction's own rotation wait for an operator.
steady() { local i; for i in 1 2 3; do [ "$(status_field "$i" cluster_key_phase)" = steady ] || return 1; done; }

# ---------------------------------------------------------------------------------------------
begin forged-liveness
since_t="$(iso_now)"; w0="$(now)"
out="$(hostile forged-liveness --victim node2 --seconds 5 2>"$WORK/liveness.err")" || problem "the tool failed: $(tail -2 "$WORK/liveness.err")"
sleep 1
w1="$(now)"
scrape after
ref="$(delta before after 'wiremesh_suspicions_total{outcome="refuted"}' "1 3")"
dead1="$(log_count 1 "member declared dead" node2 "$since_t")"; dead3="$(log_count 3 "member declared dead" node2 "$since_t")"
susp1="$(log_count 1 "member suspected" node2 "$since_t")"; susp3="$(log_count 3 "member suspected" node2 "$since_t")"
# Samples of nodes 1 and 3 in the window without node 2's peer (the allowed-IPs sampler).
removes="$(awk -v a="$w0" -v b="$w1" -v k="${KEY[2]}" '$1 >= a && $1 <= b && ($2 == 1 || $2 == 3) { s[$1 " " $2] = 1; if ($3 == k) has[$1 " " $2] = 1 }
  END { n = 0; for (x in s) if (!(x in has)) n++; print n }' "$WORK/allowed-ips")"
[ "$ref" -ge 1 ] || problem "nodes 1 and 3 counted no refuted suspicion of node 2"
for i in 1 3; do [ "$(peer_state "$i" node2)" = alive ] || problem "node 2 is $(peer_state "$i" node2) on node $i at the end"; done
[ "$((dead1 + dead3))" = 0 ] || problem "healthy node 2 declared dead $dead1 times on node 1 and $dead3 times on node 3"
[ "$removes" = 0 ] || problem "node 2's peer was missing on node 1 or 3 in $removes samples"
finish "$(jq -r .claims <<<"$out") forged claims in 5 s: suspicions of node 2 refuted $ref times on nodes 1/3; suspected $susp1/$susp3 times, declared dead $dead1/$dead3 times on nodes 1/3; samples without node 2's peer: $removes" \
  "$(jq -cn --argjson r "$ref" --argjson d1 "$dead1" --argjson d3 "$dead3" --argjson s1 "$susp1" --argjson s3 "$susp3" --argjson rm "$removes" \
    '{refutations: $r, dead_on_node1: $d1, dead_on_node3: $d3, suspect_on_node1: $s1, suspect_on_node3: $s3, samples_without_peer: $rm}')"

# ---------------------------------------------------------------------------------------------
begin replay
ip netns exec "$P-ul" tcpdump -n -i br0 -U -w "$WORK/gossip.pcap" udp port 7946 >"$WORK/tcpdump.err" 2>&1 & CAP=$!
wait_until 5 grep -qs "listening on" "$WORK/tcpdump.err"
sleep 2
stop_proc "$CAP"
scrape before
out="$(ip netns exec "$P-n4" "$HOSTILE" replay --state-dir "$WORK/n4" --bind 10.99.0.4:7998 "${TARGETS[@]}" --pcap "$WORK/gossip.pcap" --cross \
  2>"$WORK/replay.err")" || problem "the tool failed: $(tail -2 "$WORK/replay.err")"
sleep 0.5
scrape after
sent="$(jq '[.replayed_to_destination[]] | add // 0' <<<"$out" 2>/dev/null || echo 0)"
cross="$(jq '[.replayed_elsewhere[]] | add // 0' <<<"$out" 2>/dev/null || echo 0)"
rd="$(delta before after "$(dropped replay)")"
[ "$sent" -ge 5 ] || problem "only $sent captured datagrams to replay"
[ "$rd" -ge $((sent * 9 / 10)) ] || problem "replay drops rose by $rd for $sent datagrams sent again to their destination"
[ "$(jq -r .replies <<<"$out")" = 0 ] || problem "replays were answered ($(jq -r .replies <<<"$out") datagrams back)"
xr="$(jq -r .replies_elsewhere <<<"$out")"
finish "$sent captured datagrams sent again to their destinations: replay drops +$rd, nothing answered; the same $cross to another member: opened there (a datagram is not bound to its destination), $xr datagrams answered" \
  "$(jq -cn --argjson s "$sent" --argjson r "$rd" --argjson c "$cross" --argjson x "$xr" '{replayed: $s, replay_drops: $r, replayed_elsewhere: $c, answered_elsewhere: $x}')"

# ---------------------------------------------------------------------------------------------
begin member-flood
for i in 1 2 3; do M0[$i]="$(wm "$i" peers --json | jq length)"; done
t_flood="$(now)"
out="$(hostile flood --count 3000 --rate 4000 2>"$WORK/flood.err")" || problem "the tool failed: $(tail -2 "$WORK/flood.err")"
sleep 1
scrape after
u="$(delta before after "$(dropped untrusted)")"; rp="$(delta before after "$(dropped repeated)")"
for i in 1 2 3; do
  m="$(wm "$i" peers --json | jq length)"
  [ "$m" = "${M0[$i]}" ] || problem "node $i lists $m peers (was ${M0[$i]})"
done
[ "$(jq -r .fakes_in_view <<<"$out")" = 0 ] || problem "fake members in a view: $(jq -r .fakes_in_view <<<"$out")"
[ "$u" -ge 8100 ] || problem "untrusted rose by $u for 3 x 3000 fake records"
finish "3000 fake members to each of 3 nodes in $(since "$t_flood") s: untrusted +$u, repeated +$rp; views unchanged" \
  "$(jq -cn --argjson u "$u" '{untrusted: $u}')"

# ---------------------------------------------------------------------------------------------
begin mint-token
out="$(hostile mint-token --token-out "$WORK/minted.token" 2>"$WORK/mint.err")" || problem "the tool failed: $(tail -2 "$WORK/mint.err")"
scrape after
admitted="$(jq -r '.admitted | join(",")' <<<"$out" 2>/dev/null)"
[ -z "$admitted" ] || problem "admitted with a minted token: $admitted"
refused="$(delta before after 'wiremesh_joins_total{result="refused"}')"
attempts="$(jq -r .attempts <<<"$out")"
[ "$refused" -ge "$attempts" ] || problem "joins refused rose by $refused for $attempts attempts"
if wm_node 5 join --token-file "$WORK/minted.token" --name node5 --prepare-only >"$WORK/join5.out" 2>&1; then
  problem "wiremesh join with a minted token succeeded"
fi
[ ! -e "$WORK/n5/cluster.json" ] || problem "the refused join wrote node 5's state"
finish "$attempts join attempts with tokens minted from node 4's secrets: $(jq -c .outcomes <<<"$out"); wiremesh join: $(tail -1 "$WORK/join5.out" | cut -c1-120)" \
  "$(jq -cn --argjson o "$(jq -c .outcomes <<<"$out")" '{outcomes: $o}')"

# ---------------------------------------------------------------------------------------------
begin keyring-after-eviction
wait_until $((GRACE + 20)) steady || problem "the rotation after key-generation did not settle: $(for i in 1 2 3; do printf '%s=%s ' "$i" "$(status_field "$i" cluster_key_phase)"; done)"
OLD_KEYS="$(keys_of 1)"
wm 1 evict node4 >"$WORK/evict.out" 2>&1 || problem "evict failed: $(cat "$WORK/evict.out")"
evicted() { local i; for i in 1 2 3; do [ "$(peer_state "$i" node4)" = evicted ] || return 1; done; }
wait_until 10 evicted || problem "node4 not listed as evicted on every node"
out="$(hostile keyring --as-name node2 2>"$WORK/keyring.err")" || problem "the tool failed: $(tail -2 "$WORK/keyring.err")"
handed="$(jq -r '.handed_over | join(",")' <<<"$out" 2>/dev/null)"
[ -z "$handed" ] || problem "keyring handed over: $handed"
own="$(jq -r '[.outcomes[] | select(startswith("node4@"))] | map(split(":") | last) | unique | join(",")' <<<"$out")"
[ "$own" = evicted ] || problem "node 4's own requests answered: $own"
logged=0; for i in 1 2 3; do logged=$((logged + $(grep -c "refused a keyring request from an evicted node" "$WORK/agent$i.log"))); done
[ "$logged" -ge 3 ] || problem "only $logged refusals logged"
finish "node 4's keyring requests after its eviction: $(jq -c .outcomes <<<"$out" | tr -d '"' | cut -c1-300)" "$(jq -cn --argjson l "$logged" '{logged: $l}')"

# ---------------------------------------------------------------------------------------------
begin old-key-closed
NEW=""
retired() {
  local i
  NEW="$(status_field 1 'cluster_keys[0].id')"
  [[ ",$OLD_KEYS," != *",$NEW,"* ]] || return 1
  for i in 1 2 3; do [ "$(keys_of "$i")" = "$NEW" ] && [ "$(status_field "$i" cluster_key_phase)" = steady ] || return 1; done
}
wait_until $((GRACE + 30)) retired || problem "the old cluster key was not retired: $(for i in 1 2 3; do printf '%s=[%s] ' "$i" "$(keys_of "$i")"; done)"
scrape before
out="$(hostile chatter --count 20 2>"$WORK/chatter.err")" || problem "the tool failed: $(tail -2 "$WORK/chatter.err")"
scrape after
bk="$(delta before after "$(dropped bad_key)")"
[ "$bk" -ge 54 ] || problem "bad_key rose by $bk for 60 datagrams"
[ "$(jq -r .opened <<<"$out")" = 0 ] || problem "node 4 opened $(jq -r .opened <<<"$out") datagrams"
finish "old keys [$OLD_KEYS] retired, now $NEW: node 4's 60 datagrams dropped as bad_key (+$bk), it opened $(jq -r .opened <<<"$out") of $(jq -r .received <<<"$out") received" \
  "$(jq -cn --argjson b "$bk" '{bad_key: $b}')"

# ---------------------------------------------------------------------------------------------
begin stranger
out="$(ip netns exec "$P-n5" "$HOSTILE" stranger --state-dir "$WORK/n1" --bind 10.99.0.5:7946 "${TARGETS[@]}" \
  --existing-name node1 --existing-name node2 --existing-name node4 --count 30 2>"$WORK/stranger.err")" ||
  problem "the tool failed: $(tail -2 "$WORK/stranger.err")"
scrape after
bk="$(delta before after "$(dropped bad_key)")"
tr="$(delta before after "$(dropped truncated)")"
[ "$(jq -r .received <<<"$out")" = 0 ] || problem "the stranger got $(jq -r .received <<<"$out") datagrams back"
[ "$bk" -ge 81 ] || problem "bad_key rose by $bk for 90 sealed datagrams"
replies="$(jq -r '.replies | to_entries[] | .value' <<<"$out")"
for secret in "$CLUSTER_ID" node1 node2 node3 node4 "${POD_RANGE%/*}" "${CIDR4%/*}"; do
  ! grep -qF "$secret" <<<"$replies" || problem "a join-port reply names '$secret': $(grep -F "$secret" <<<"$replies" | head -1 | cut -c1-200)"
done
oracle="$(jq -r '.name_oracle | join(",")' <<<"$out")"
[ -z "$oracle" ] || problem "keyring refusals tell which names exist: $oracle"
finish "90 datagrams under a stranger's key: none answered, bad_key +$bk (truncated/garbage +$tr); join port: $(jq -r '.replies | to_entries | map(.value) | unique | length' <<<"$out") distinct replies, no cluster id, names or ranges" \
  "$(jq -cn --argjson b "$bk" --argjson r "$(jq -c .replies <<<"$out")" '{bad_key: $b, replies: $r}')"

# ---------------------------------------------------------------------------------------------
# Across the whole run

# INT for the pings (a background job of a script ignores it, but ping sets its own handler), TERM for the sampler.
for p in "${BG[@]}"; do kill -INT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
for p in "${BG[@]}"; do wait "$p" 2>/dev/null; done
BG=()

# allowed-ips-stable: every honest block (and overlay /32) only on its owner's key; node 4's key holds only
# its own block; no peer of an unknown key.
CASE=allowed-ips-stable; PROBLEMS=""
own4="$CIDR4 ${OV[4]}/32"
bad="$(awk -v k1="${KEY[1]}" -v k2="${KEY[2]}" -v k3="${KEY[3]}" -v k4="${KEY[4]}" -v own4="$own4" \
  -v c1="$(cat "$WORK/cidr1")" -v c2="$(cat "$WORK/cidr2")" -v c3="$(cat "$WORK/cidr3")" \
  -v o1="${OV[1]}/32" -v o2="${OV[2]}/32" -v o3="${OV[3]}/32" '
  BEGIN { want[c1] = k1; want[o1] = k1; want[c2] = k2; want[o2] = k2; want[c3] = k3; want[o3] = k3
          split(own4, a, " "); for (i in a) mine4[a[i]] = 1; honest[k1]; honest[k2]; honest[k3] }
  NF < 3 { next }
  { key = $3
    if (!(key in honest) && key != k4) { print "node " $2 ": unknown peer " key; next }
    for (f = 4; f <= NF; f++) {
      p = $f; if (p == "(none)") continue
      if ((p in want) && want[p] != key) print "node " $2 ": " p " on " key
      else if (key == k4 && !(p in mine4)) print "node " $2 ": " p " on node 4"
      else if (!(p in want) && key != k4) print "node " $2 ": foreign prefix " p " on " key
    } }' "$WORK/allowed-ips" | sort | uniq -c | head -5)"
samples="$(awk '{ print $1 }' "$WORK/allowed-ips" | sort -u | wc -l)"
[ "$samples" -ge 20 ] || problem "only $samples samples"
[ -z "$bad" ] || problem "$(tr '\n' ';' <<<"$bad")"
# How often an honest node lacked a peer of another honest node (none: nothing the attacker did removes one).
missing="$(awk -v k1="${KEY[1]}" -v k2="${KEY[2]}" -v k3="${KEY[3]}" '
  NF >= 3 { seen[$1 " " $2 " " $3] = 1; times[$1] = 1 }
  END { n = 0; for (t in times) for (i = 1; i <= 3; i++) for (j = 1; j <= 3; j++) if (i != j) {
          k = (j == 1 ? k1 : j == 2 ? k2 : k3); if (!((t " " i " " k) in seen)) n++ }
        print n + 0 }' "$WORK/allowed-ips")"
[ "$missing" = 0 ] || problem "an honest node lacked another honest node's peer in $missing node-samples"
result_problems allowed-ips-stable "$PROBLEMS" "$samples samples of nodes 1-3: honest blocks only on their owners' keys, node 4 never more than its own; honest peer missing in $missing node-samples" \
  "$(jq -cn --argjson s "$samples" --argjson m "$missing" '{samples: $s, honest_peer_missing: $m}')"

# ping-continuity: the longest time between two replies (or from the start/to the end) per stream.
CASE=ping-continuity; PROBLEMS=""
gaps=""
for f in "$WORK"/ping.*; do
  g="$(awk -F'[][]' '/bytes from/ { t = $2 + 0; if (last) { d = t - last; if (d > max) max = d } ; if (!first) first = t; last = t }
    END { printf "%.2f %d", max, (last - first) }' "$f")"
  read -r gap span <<<"$g"
  gaps+=" ${f##*/ping.}=${gap}s/${span}s"
  awk -v g="$gap" 'BEGIN { exit !(g <= 2.0) }' || problem "${f##*/ping.} stopped for $gap s"
  [ "${span:-0}" -ge 30 ] || problem "${f##*/ping.} replied over $span s only"
done
result_problems ping-continuity "$PROBLEMS" "longest gap between replies / span:$gaps"

CASE=agents-up; PROBLEMS=""
agents_alive || problem "an honest agent is down or does not answer status"
for i in 1 2 3; do
  ! grep -qiE "fatal error|Fatal|panic|Trace/breakpoint|Illegal instruction" "$WORK/agent$i.log" || problem "agent $i log: $(grep -iE 'fatal|panic' "$WORK/agent$i.log" | head -1)"
done
result_problems agents-up "$PROBLEMS" "nodes 1-3's agents ran throughout (pids ${AGENT[1]} ${AGENT[2]} ${AGENT[3]}) and answer status"

exit "$HARNESS_FAILED"
