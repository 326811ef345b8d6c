# Guest half of ./scripts/bench device-apply (runs inside the VM, busybox sh).
# For each size and run, on fresh links (deleting a link with thousands of peers takes about a minute
# under TCG), times `wiremesh device set` against `wg setconf` applying a fresh config, alternating
# which goes first; then it applies a file that differs in one peer to each
# tool's device: `wiremesh device set --report` against `wg syncconf`.
# Prints: WMBENCH kernel PEERS TOOL fresh|onepeer RUN SECONDS BYTES, then the start-up alone
# (`wiremesh --version` against `wg --version`): WMBENCH-START kernel TOOL RUN SECONDS
. /wmtest/lib.sh
. /wmtest/bench.env      # RUNS, SIZES
modprobe wireguard || { echo "WMBENCH-ERROR modprobe wireguard failed"; exit 1; }
elapsed() { echo "$1 $2" | awk '{ printf "%.6f", $2 - $1 }'; }

# apply TOOL IFACE FILE: prints seconds.
apply_fresh() {
  t0=$(now)
  if [ "$1" = wiremesh ]; then wiremesh device set "$2" "$3" || echo "WMBENCH-ERROR wiremesh device set $2 failed" >&2
  else wg setconf "$2" "$3" || echo "WMBENCH-ERROR wg setconf $2 failed" >&2; fi
  t1=$(now); elapsed "$t0" "$t1"
}
apply_onepeer() {
  t0=$(now)
  if [ "$1" = wiremesh ]; then wiremesh device set "$2" "$3" --report 2>/tmp/report || echo "WMBENCH-ERROR wiremesh device set $2 (one peer) failed: $(cat /tmp/report)" >&2
  else wg syncconf "$2" "$3" || echo "WMBENCH-ERROR wg syncconf $2 failed" >&2; fi
  t1=$(now); elapsed "$t0" "$t1"
}

for n in $SIZES; do
  r=1
  while [ "$r" -le "$RUNS" ]; do
    if [ $((r % 2)) -eq 1 ]; then order="wiremesh wg"; else order="wg wiremesh"; fi
    for tool in $order; do
      ifc="b$(echo $tool | cut -c1-2)${n}r$r"
      $IP link add "$ifc" type wireguard || echo "WMBENCH-ERROR ip link add $ifc failed"
      s=$(apply_fresh "$tool" "$ifc" "/wmtest/conf$n.conf")
      echo "WMBENCH kernel $n $tool fresh $r $s -"
    done
    for tool in $order; do
      ifc="b$(echo $tool | cut -c1-2)${n}r$r"
      s=$(apply_onepeer "$tool" "$ifc" "/wmtest/conf${n}b.conf")
      bytes=-
      [ "$tool" = wiremesh ] && bytes=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' /tmp/report | tail -n 1)
      echo "WMBENCH kernel $n $tool onepeer $r $s ${bytes:--}"
    done
    # The one-peer file must now be what both devices hold.
    a=$(wg show "bwi${n}r$r" dump | tail -n +2 | sort | md5sum); b=$(wg show "bwg${n}r$r" dump | tail -n +2 | sort | md5sum)
    [ "$a" = "$b" ] || echo "WMBENCH-ERROR after the one-peer change the two devices differ"
    r=$((r + 1))
  done
done
r=1
while [ "$r" -le "$RUNS" ]; do
  if [ $((r % 2)) -eq 1 ]; then order="wiremesh wg"; else order="wg wiremesh"; fi
  for tool in $order; do
    t0=$(now); "$tool" --version >/dev/null 2>&1 || echo "WMBENCH-ERROR $tool --version failed"; t1=$(now)
    echo "WMBENCH-START kernel $tool $r $(elapsed "$t0" "$t1")"
  done
  r=$((r + 1))
done
echo "WMBENCH-END"
