#!/usr/bin/env bash
# Doctor and graph e2e (issue 11): three nodes (network namespaces, wireguard-go); each fault is made on
# purpose and `wiremesh doctor --json` must name it, with its fix, and exit 1; a healthy node exits 0.
# WireGuard (UDP 51820) from node 3 is dropped from the start by an nftables table in node 1's namespace
# (gossip passes), so node 1 never has a handshake with node 3. Cases (one RESULT line each):
#   healthy       node 2 (traffic to both peers): exit 0, ok, every check present, none warns or fails
#   graph-healthy node 2's `graph --format svg`, rendered to PNG (rsvg-convert): every node drawn, both
#                 edges, no red pixel anywhere
#   picture-controls the picture check fails on a blank PNG of the same size, and on the healthy
#                 picture when asked for a red edge
#   no-handshake  node 1 after pinging pod 3: exit 1, handshakes FAIL naming node3 (and not node2), fix
#                 names the WireGuard UDP port; the only failing check
#   out-of-sync   node 1's device changed with `wg set` behind the agent (node 2's peer removed, node 3's
#                 allowed IPs replaced): exit 1, device FAIL naming node2 and node 3's pod block
#   graph-broken  node 1's `graph --format svg` at that moment, as a picture: both edges red where the
#                 SVG draws them (missing and stale highlights)
#   route         node 1's route for the cluster range into its interface deleted: routes FAIL
#   port          node 2's agent stopped, its gossip port bound by another process: ports FAIL naming
#                 the port and that process's pid, fix names --gossip-port; the agent then refuses to start
# A fault the agent repairs (its 10 s resync) before doctor has answered is made again (3 tries).
set -euo pipefail
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done
NODES=3
WGPORT=51820
GOSSIP=7946
DPI=96
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/scripts/lib/harness.sh"
WM="${WIREMESH_BIN:-$ROOT/.build/debug/wiremesh}"
unset WIREMESH_BIN   # the agent refuses WIREMESH_* variables it does not know
harness_check ip wg wireguard-go ping jq python3 nft dot rsvg-convert || exit 1
harness_start wmd
HOLDER=""
before_cleanup() { [ -z "$HOLDER" ] || stop_proc "$HOLDER"; }

netns_underlay "$P"
for i in $(seq 1 "$NODES"); do netns_node "$P" "$i"; done
# Inbound only: node 1's handshake initiations leave (and are counted as sent), node 3's answers and
# its own initiations never arrive. (A drop on output would fail node 1's send, so nothing counted.)
ip netns exec "$P-n1" nft -f - <<EOF
table inet wmdoctor {
  chain in { type filter hook input priority 0; ip saddr 10.99.0.3 udp sport $WGPORT drop; }
}
EOF
mesh_up || exit 1
add_pods
wait_until 40 all_alive || { log "the mesh did not converge"; exit 1; }
for j in 1 3; do wait_until 10 ping_ok 2 "$(pod "$j")" || { log "pod 2 cannot reach pod $j"; exit 1; }; done
wait_until 10 ping_ok 1 "$(pod 2)" || { log "pod 1 cannot reach pod 2"; exit 1; }

# doctor --json on node I into $WORK/NAME.json; DOCTOR_RC its exit status.
doctor() { DOCTOR_RC=0; wm "$1" doctor --json >"$WORK/$2.json" 2>"$WORK/$2.err" || DOCTOR_RC=$?; }
# jq over a doctor output.
dq() { jq -r "$2" "$WORK/$1.json" 2>/dev/null; }
finding() { dq "$1" "[.findings[] | select(.check == \"$2\")] | first | .$3 // \"\""; }
failing() { dq "$1" '[.findings[] | select(.status == "fail") | .check] | unique | join(",")'; }
# graph --format svg of node I to $WORK/NAME.svg, rendered to $WORK/NAME.png; then the picture check.
graph_svg() { wm "$1" graph --format svg >"$WORK/$2.svg" 2>"$WORK/$2.err" && rsvg-convert -d "$DPI" -p "$DPI" -o "$WORK/$2.png" "$WORK/$2.svg"; }
picture() { python3 "$ROOT/scripts/lib/svg-picture.py" "$WORK/$1.svg" "$WORK/$1.png" "$DPI" "$2" "$3"; }
# A graph case: the SVG as text (every node and edge named) and as a picture.
graph_case() {
  local name=$1 file=$2 edges=$3 red=$4 problems="" e pic titles
  for e in node1 node2 node3; do grep -q ">$e</text>" "$WORK/$file.svg" || problems+=" no text $e in the SVG;"; done
  # Graphviz titles each node and edge group: <title>node1&#45;&gt;node2</title>.
  titles="$(grep -o '<title>[^<]*</title>' "$WORK/$file.svg" | sed 's/<[^>]*>//g; s/&#45;/-/g; s/&gt;/>/g')"
  for e in ${edges//,/ }; do grep -qxF -- "$e" <<<"$titles" || problems+=" no edge $e in the SVG;"; done
  pic="$(picture "$file" node1,node2,node3 "$red")" || problems+=" picture: $(jq -r '.problems | join("; ")' <<<"$pic" 2>/dev/null || echo "$pic");"
  result_problems "$name" "$problems" "SVG names 3 nodes and edges $edges; PNG $(jq -c '{size, colours, red_pixels, edge_red_pixels}' <<<"$pic" 2>/dev/null)" \
    "$(jq -c '{picture: .}' <<<"$pic" 2>/dev/null || echo '{}')"
}

# --- healthy: node 2 had traffic with both peers
doctor 2 healthy
problems=""
[ "$DOCTOR_RC" = 0 ] || problems+=" exit $DOCTOR_RC;"
[ "$(dq healthy .ok)" = true ] || problems+=" ok is $(dq healthy .ok);"
checks="$(dq healthy '[.findings[].check] | unique | join(",")')"
[ "$checks" = "agent,clock,device,handshakes,mtu,ports,privileges,routes,wireguard" ] || problems+=" checks: $checks;"
bad="$(dq healthy '[.findings[] | select(.status == "warn" or .status == "fail") | "\(.check): \(.detail)"] | join("; ")')"
[ -z "$bad" ] || problems+=" $bad;"
finding healthy handshakes detail | grep -q "all 2 alive peers" || problems+=" handshakes: $(finding healthy handshakes detail);"
finding healthy device detail | grep -q "2 peers read" || problems+=" device: $(finding healthy device detail);"
result_problems healthy "$problems" "exit 0, ok, 9 checks, none warns or fails; $(finding healthy device detail)"

# --- graph-healthy: node 2's picture has both edges and no highlight
if graph_svg 2 graph-healthy; then graph_case graph-healthy graph-healthy "node2->node1,node2->node3" -
else result graph-healthy false "graph --format svg or rsvg-convert failed: $(cat "$WORK/graph-healthy.err")"; fi

# --- picture-controls: the picture check itself fails on a blank picture of the same size, and on the
# healthy picture when asked for a red edge (so its passes above mean something)
problems=""
sed -n 's/^\(<svg width="[^"]*" height="[^"]*"\).*/\1/p' "$WORK/graph-healthy.svg" >"$WORK/blank.svg"
echo ' viewBox="'"$(grep -o 'viewBox="[^"]*"' "$WORK/graph-healthy.svg" | head -1 | cut -d'"' -f2)"'" xmlns="http://www.w3.org/2000/svg"><rect width="100%" height="100%" fill="white"/></svg>' >>"$WORK/blank.svg"
if rsvg-convert -d "$DPI" -p "$DPI" -o "$WORK/blank.png" "$WORK/blank.svg" 2>/dev/null; then
  cp "$WORK/graph-healthy.svg" "$WORK/blank-control.svg"; cp "$WORK/blank.png" "$WORK/blank-control.png"
  blank="$(picture blank-control node1,node2,node3 -)" && problems+=" a blank picture passed: $blank;"
else
  problems+=" rsvg-convert could not render a blank SVG;"
fi
red="$(picture graph-healthy node1,node2,node3 "node2->node1")" && problems+=" the healthy picture passed as having a red edge;"
result_problems picture-controls "$problems" "a blank PNG fails ($(jq -r '.problems | length' <<<"${blank:-{\}}" 2>/dev/null) problems), a healthy one asked for red fails: $(jq -r '.problems[0]' <<<"${red:-{\}}" 2>/dev/null)"

# --- no-handshake: node 1 sends to pod 3, its handshake initiations are dropped
ip netns exec "$P-p1" ping -c 3 -i 0.3 -W 1 "$(pod 3)" >/dev/null 2>&1 && log "pod 1 reached pod 3 through the block?"
doctor 1 no-handshake
problems=""
[ "$DOCTOR_RC" = 1 ] || problems+=" exit $DOCTOR_RC;"
[ "$(dq no-handshake .ok)" = false ] || problems+=" ok is $(dq no-handshake .ok);"
[ "$(failing no-handshake)" = handshakes ] || problems+=" failing checks: [$(failing no-handshake)];"
detail="$(finding no-handshake handshakes detail)"; fix="$(finding no-handshake handshakes fix)"
[[ "$detail" == *"node3 ("*"never a handshake"* ]] || problems+=" detail: $detail;"
[[ "$detail" != *node2* ]] || problems+=" names node2, which had a handshake: $detail;"
[[ "$fix" == *"UDP $WGPORT"* ]] || problems+=" fix: $fix;"
result_problems no-handshake "$problems" "exit 1; FAIL handshakes: $detail; fix: $fix"

# --- out-of-sync (and graph-broken): node 1's device changed behind the agent's back
KEY2="$(cat "$WORK/key2")"; KEY3="$(cat "$WORK/key3")"; CIDR3="$(cat "$WORK/cidr3")"
still_broken() {
  ! has_peer 1 "$KEY2" && wg_dump 1 | awk -v k="$KEY3" 'NR > 1 && $1 == k { found = ($4 == "10.250.0.0/24") } END { exit !found }'
}
held=0
for try in 1 2 3; do
  ip netns exec "$P-n1" wg set "${P}w1" peer "$KEY2" remove
  ip netns exec "$P-n1" wg set "${P}w1" peer "$KEY3" allowed-ips 10.250.0.0/24
  doctor 1 out-of-sync
  graph_svg 1 graph-broken || true
  if still_broken; then held=1; break; fi
  log "try $try: the agent repaired the device before doctor and graph were done; again"
  sleep 1
done
problems=""
[ "$held" = 1 ] || problems+=" the agent repaired the device before doctor answered, 3 times;"
[ "$DOCTOR_RC" = 1 ] || problems+=" exit $DOCTOR_RC;"
[ "$(dq out-of-sync .ok)" = false ] || problems+=" ok is $(dq out-of-sync .ok);"
detail="$(finding out-of-sync device detail)"; fix="$(finding out-of-sync device fix)"
[ "$(finding out-of-sync device status)" = fail ] || problems+=" device is $(finding out-of-sync device status);"
[[ "$detail" == *"no peer on the device: node2"* ]] || problems+=" node2 not named missing: $detail;"
[[ "$detail" == *"$CIDR3 of node3"* ]] || problems+=" node 3's block $CIDR3 not named: $detail;"
[[ "$fix" == *resync* ]] || problems+=" fix: $fix;"
result_problems out-of-sync "$problems" "exit 1 (try $try); FAIL device: $detail; fix: $fix"

# --- graph-broken: node 1's picture at that moment: node 2 missing and node 3 stale, both red
if [ -s "$WORK/graph-broken.png" ]; then graph_case graph-broken graph-broken "node1->node2,node1->node3" "node1->node2,node1->node3"
else result graph-broken false "graph --format svg or rsvg-convert failed: $(cat "$WORK/graph-broken.err")"; fi

# --- route: the cluster range into the interface deleted (the unreachable backstop stays)
route_gone() { [ -z "$(ip -n "$P-n1" route show 10.244.0.0/16 dev "${P}w1" proto 87 2>/dev/null)" ]; }
held=0
for try in 1 2 3; do
  ip -n "$P-n1" route del 10.244.0.0/16 dev "${P}w1" proto 87 2>/dev/null || true
  doctor 1 route
  if route_gone; then held=1; break; fi
  sleep 1
done
problems=""
[ "$held" = 1 ] || problems+=" the agent restored the route before doctor answered, 3 times;"
[ "$DOCTOR_RC" = 1 ] || problems+=" exit $DOCTOR_RC;"
detail="$(finding route routes detail)"; fix="$(finding route routes fix)"
[ "$(finding route routes status)" = fail ] || problems+=" routes is $(finding route routes status);"
[[ "$detail" == *"the route for 10.244.0.0/16 into ${P}w1"* && "$detail" != *backstop* ]] || problems+=" detail: $detail;"
[[ "$fix" == *restart* ]] || problems+=" fix: $fix;"
result_problems route "$problems" "exit 1 (try $try); FAIL routes: $detail; fix: $fix"

# --- port: node 2's agent stopped, another process on its gossip port
stop_agent 2
ip netns exec "$P-n2" python3 -c 'import os, signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.99.0.2", int(sys.argv[1])))
open(sys.argv[2], "w").write(str(os.getpid())); signal.pause()' "$GOSSIP" "$WORK/holder.pid" &
HOLDER=$!
wait_until 5 test -s "$WORK/holder.pid" || log "the port holder did not start"
hpid="$(cat "$WORK/holder.pid" 2>/dev/null)"
doctor 2 port
problems=""
[ "$DOCTOR_RC" = 1 ] || problems+=" exit $DOCTOR_RC;"
gossip="$(dq port '[.findings[] | select(.check == "ports" and (.detail | startswith("gossip port ")))] | first')"
detail="$(jq -r '.detail // ""' <<<"$gossip")"; fix="$(jq -r '.fix // ""' <<<"$gossip")"
[ "$(jq -r '.status // ""' <<<"$gossip")" = fail ] || problems+=" gossip port finding: $gossip;"
[[ "$detail" == *"gossip port $GOSSIP on 10.99.0.2 is held by another process"*"(pid $hpid)"* ]] || problems+=" detail: $detail;"
[[ "$fix" == *"(pid $hpid)"* && "$fix" == *--gossip-port* ]] || problems+=" fix: $fix;"
others="$(dq port '[.findings[] | select(.check == "ports" and .status != "ok")] | length')"
[ "$others" = 1 ] || problems+=" $others port findings not ok, expected only the gossip port's;"
# The agent refuses to start on it, naming the port.
arc=0; timeout 20 ip netns exec "$P-n2" "$WM" agent --state-dir "$WORK/n2" --control-socket "$WORK/n2.sock" \
  --interface "${P}w2" --advertise-address 10.99.0.2 >"$WORK/agent2-refused.log" 2>&1 </dev/null || arc=$?
[ "$arc" != 0 ] && [ "$arc" != 124 ] && grep -q "10.99.0.2:$GOSSIP.*in use" "$WORK/agent2-refused.log" ||
  problems+=" the agent did not refuse the port (exit $arc): $(tail -2 "$WORK/agent2-refused.log" | tr '\n' ' ');"
result_problems port "$problems" "exit 1; FAIL ports: $detail; fix: $fix; the agent refused to start (exit $arc)"

exit "$HARNESS_FAILED"
