# Guest half of `./scripts/bench rotation --backend kernel` (runs inside the VM, busybox sh).
# A NODES-node mesh on kernel WireGuard (guest/mesh.sh), then ROTATIONS rotations of node 1's key, each
# under ping floods at PPS per direction between pod 1 and every other pod (from 1 s before the
# command to 1 s after it). Before the rotations, FLOOD seconds of the same floods without a rotation
# measure the loss the loaded VM causes by itself. STREAM > 0: an iperf3 TCP stream of STREAM s from pod 1
# to pod 2 in each rotation as well (rotate_under_load).
# Prints: the ROTATION lines of rotate_under_load (tags baseline, 1..ROTATIONS), then WMBENCH-END.
. /wmtest/lib.sh
. /wmtest/mesh.sh
. /wmtest/bench.env      # NODES, ROTATIONS, PPS, FLOOD, STREAM
modprobe wireguard || { echo "WMBENCH-ERROR modprobe wireguard failed"; exit 1; }
modprobe veth || { echo "WMBENCH-ERROR modprobe veth failed"; exit 1; }
( mesh_up "$NODES" && pods_up "$NODES" ) || { echo "WMBENCH-ERROR the mesh did not come up"; exit 1; }

# baseline: the same floods, no rotation (pings only; counted like a rotation's).
interval=$(awk -v p="$PPS" 'BEGIN { printf "%.4f", 1 / p }')
count=$(awk -v p="$PPS" -v s="$FLOOD" 'BEGIN { printf "%d", p * s }')
pids=""
for j in $(seq 2 "$NODES"); do
  in_ns wmp1 $PING -n -q -i "$interval" -c "$count" -W 2 "$(cat /tmp/k$j.pod)" > /tmp/base.1to$j 2>&1 & pids="$pids $!"
  in_ns wmp$j $PING -n -q -i "$interval" -c "$count" -W 2 "$(cat /tmp/k1.pod)" > /tmp/base.${j}to1 2>&1 & pids="$pids $!"
done
for p in $pids; do wait "$p"; done
lost=0; sent=0; rate=""
for f in /tmp/base.*; do
  tx=$(grep -o '[0-9]* packets transmitted' "$f" | awk '{print $1}'); rx=$(grep -o '[0-9]* received' "$f" | awk '{print $1}')
  ms=$(grep -o 'time [0-9]*ms' "$f" | tr -dc 0-9)
  lost=$((lost + ${tx:-0} - ${rx:-0})); sent=$((sent + ${tx:-0}))
  r=$(awk -v n="${tx:-0}" -v ms="${ms:-0}" 'BEGIN { printf "%d", (ms > 0 ? n * 1000 / ms : 0) }')
  [ -z "$rate" ] || [ "$r" -lt "$rate" ] && rate=$r
done
echo "ROTATION baseline lost=$lost sent=$sent pps_min=$rate switched_s=null rotate_s=null stream=none keys=ok flood=ok phases=none"

r=1
while [ "$r" -le "$ROTATIONS" ]; do
  ( rotate_under_load 1 "$NODES" "$PPS" "${STREAM:-0}" "$r" ) > /tmp/bench.rot 2>&1 || {
    cat /tmp/bench.rot; echo "WMBENCH-ERROR rotation $r failed"; }
  grep -E '^(ROTATION|lost per flow|rotate-key:|device counters)|receiver$' /tmp/bench.rot
  r=$((r + 1))
done
echo "WMBENCH-END"
