# Helpers for scripts that run inside the test VM (busybox sh). Sourced as /wmtest/lib.sh.
# Result protocol on the console, read by the host:
#   WMTEST-BEGIN NAME / ...case output... / WMTEST-END NAME / WMTEST NAME PASS|FAIL detail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
IP=/sbin/ip   # iproute2 (busybox's ip has no netns)

# fail MESSAGE: ends the current case with MESSAGE as its detail.
fail() { echo "FAIL: $*"; exit 1; }

# wm_case NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell, prints its output (at most 400 lines)
# between markers and one result line. The detail is the last line starting with "FAIL:" or "OK:".
wm_case() {
  name="$1"; shift
  out="/tmp/case.$name.out"
  ( "$@" ) > "$out" 2>&1
  rc=$?
  echo "WMTEST-BEGIN $name"
  lines=$(wc -l < "$out")
  head -n 400 "$out"
  [ "$lines" -le 400 ] || echo "... ($lines lines, first 400 shown)"
  echo "WMTEST-END $name"
  detail=$(grep -E '^(FAIL|OK):' "$out" | tail -n 1 | cut -d' ' -f2-)
  if [ "$rc" -eq 0 ]; then
    echo "WMTEST $name PASS ${detail:-ok}"
  else
    echo "WMTEST $name FAIL ${detail:-exit status $rc}"
  fi
}

# canon_dump: reads `wg show dump` text, writes it with each peer's allowed IPs sorted and peer lines
# sorted (interface line first). Peers and allowed IPs are sets; the kernel lists them in insertion order.
canon_dump() {
  awk -F'\t' 'NR == 1 { print "0\t" $0; next }
    { n = split($4, a, ","); for (i = 2; i <= n; i++) { v = a[i]; j = i - 1;
        while (j > 0 && a[j] > v) { a[j + 1] = a[j]; j-- } a[j + 1] = v }
      s = a[1]; for (i = 2; i <= n; i++) s = s "," a[i]; $4 = s
      line = $1; for (i = 2; i <= NF; i++) line = line "\t" $i; print "1\t" line }' OFS='\t' |
    sort | cut -f2-
}

# conf2dump CONF: the `wg show IFACE dump` text a device configured from CONF (wg config format) shows
# before any traffic, in CONF's order. Needs `wg pubkey` for the interface line.
conf2dump() {
  priv=$(awk 'match($0, / *= */) && substr($0, 1, RSTART - 1) == "PrivateKey" { print substr($0, RSTART + RLENGTH); exit }' "$1")
  pub=$(echo "$priv" | wg pubkey)
  awk -v pub="$pub" '
    function flush() { if (pk != "") print pk "\t" (psk == "" ? "(none)" : psk) "\t" (ep == "" ? "(none)" : ep) "\t" (ips == "" ? "(none)" : ips) "\t0\t0\t0\t" (ka == "" || ka == 0 ? "off" : ka); pk = psk = ep = ips = ka = "" }
    /^\[Interface\]/ { sec = "i"; next }
    /^\[Peer\]/ { flush(); sec = "p"; next }
    # Split "Key = Value" at the first "=" only: base64 values end in "=".
    match($0, / *= */) { k = substr($0, 1, RSTART - 1); v = substr($0, RSTART + RLENGTH) }
    !match($0, /=/) { next }
    sec == "i" && k == "PrivateKey" { priv = v }
    sec == "i" && k == "ListenPort" { port = v }
    sec == "i" && k == "FwMark" { fw = v }
    sec == "p" && k == "PublicKey" { pk = v }
    sec == "p" && k == "PresharedKey" { psk = v }
    sec == "p" && k == "Endpoint" { ep = v }
    sec == "p" && k == "AllowedIPs" { gsub(/ /, "", v); ips = (ips == "" ? v : ips "," v) }
    sec == "p" && k == "PersistentKeepalive" { ka = v }
    END { flush(); print priv "\t" pub "\t" (port == "" ? 0 : port) "\t" (fw == "" || fw == 0 ? "off" : sprintf("0x%x", fw)) > "/dev/stderr" }' "$1" 2>/tmp/conf2dump.head >/tmp/conf2dump.peers
  cat /tmp/conf2dump.head /tmp/conf2dump.peers
}

# same_dump NAME EXPECTED ACTUAL: succeeds when the two dumps are equal as sets; otherwise prints a diff.
same_dump() {
  canon_dump < "$2" > /tmp/same.a; canon_dump < "$3" > /tmp/same.b
  if cmp -s /tmp/same.a /tmp/same.b; then return 0; fi
  echo "$1: dumps differ ($(wc -l < /tmp/same.a) expected lines, $(wc -l < /tmp/same.b) actual lines); first differences:"
  diff /tmp/same.a /tmp/same.b | head -n 40
  return 1
}

# now: seconds since boot with nanoseconds (GNU date is in the image as gdate).
now() { gdate +%s.%N; }
export WG_COLOR_MODE=never
