# A minimal CNI runtime for the test VM (busybox sh + jq), doing for a network config list what libcni
# (podman, containerd, CRI-O) does. Sourced after lib.sh as /wmtest/cni.sh.
#
# ADD: the list's plugins in order; each gets, on stdin, its plugin object from the list with the list's
# `cniVersion` and `name` added, `prevResult` (the previous plugin's stdout) from the second plugin on, and
# `runtimeConfig` holding the runtime's capability arguments that the plugin declares in `capabilities`
# (e.g. `portMappings` for portmap); in the environment CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
# CNI_IFNAME and CNI_PATH. The last plugin's stdout is the result, which the runtime caches.
# DEL: the plugins in reverse order, each given the cached result as `prevResult`; then the cache goes.
# The plugins run in the runtime's own network namespace (the node's): that is where `bridge` puts
# the bridge and the host end of the pod's veth.

# The plugins' directory (CNI_PATH): Debian's containernetworking-plugins, copied in by build-initramfs.
CNI_BIN=/cni
# The result cache (libcni: /var/lib/cni/results/NAME-CONTAINERID-IFNAME).
CNI_CACHE=/tmp/cni-results

# cni_conf LIST INDEX PREV CAPS: plugin INDEX of the config list LIST as the runtime hands it to the plugin.
# PREV: a file holding the previous result (empty or /dev/null: none). CAPS: a file holding the runtime's
# capability arguments as one JSON object, e.g. {"portMappings": [...]} (empty or /dev/null: none).
cni_conf() {
  jq -c --argjson i "$2" --slurpfile prev "$3" --slurpfile caps "$4" '
    . as $list | .plugins[$i] + {cniVersion: $list.cniVersion, name: $list.name}
    | if ($prev | length) > 0 then . + {prevResult: $prev[0]} else . end
    | (.capabilities // {}) as $c
    | (($caps[0] // {}) | with_entries(select($c[.key] == true))) as $rc
    | if ($rc | length) > 0 then . + {runtimeConfig: $rc} else . end' "$1"
}

# cni_call NODE_NETNS COMMAND TYPE CONTAINERID NETNS IFNAME CONF OUT: runs plugin TYPE with CONF on stdin
# in the node's namespace; its stdout goes to OUT, its stderr to OUT.err. Returns the plugin's status.
cni_call() {
  CNI_COMMAND=$2 CNI_CONTAINERID=$4 CNI_NETNS=$5 CNI_IFNAME=$6 CNI_PATH=$CNI_BIN \
    nsenter --net=/run/netns/$1 "$CNI_BIN/$3" < "$7" > "$8" 2> "$8.err"
}

# cni_add NODE_NETNS LIST CONTAINERID NETNS IFNAME CAPS RESULT: ADD for the whole list; the final result
# goes to RESULT (and the cache). On a plugin's failure prints which plugin and its error, and returns 1
# (a runtime would then DEL what was added; the caller fails its case instead).
cni_add() {
  local node=$1 list=$2 id=$3 ns=$4 ifname=$5 caps=$6 result=$7 n k type prev=/dev/null conf out
  n=$(jq '.plugins | length' "$list") || { echo "cni: $list is not JSON"; return 1; }
  k=0
  while [ "$k" -lt "$n" ]; do
    type=$(jq -r --argjson i "$k" '.plugins[$i].type' "$list")
    conf=/tmp/cni.$id.add$k.conf; out=/tmp/cni.$id.add$k.out
    cni_conf "$list" "$k" "$prev" "$caps" > "$conf" || { echo "cni: cannot build the config of plugin $k ($type)"; return 1; }
    if ! cni_call "$node" ADD "$type" "$id" "$ns" "$ifname" "$conf" "$out"; then
      echo "cni: ADD $type for $id failed: $(cat "$out") $(cat "$out.err")"; echo "its config: $(cat "$conf")"
      return 1
    fi
    prev=$out; k=$((k + 1))
  done
  mkdir -p "$CNI_CACHE"
  cp "$prev" "$CNI_CACHE/$(jq -r .name "$list")-$id-$ifname"
  cp "$prev" "$result"
}

# cni_del NODE_NETNS LIST CONTAINERID NETNS IFNAME CAPS: DEL for the whole list (reverse order, the cached
# result as prevResult). A runtime goes on after a failed plugin; this reports every failure and returns 1.
cni_del() {
  local node=$1 list=$2 id=$3 ns=$4 ifname=$5 caps=$6 cached k type conf out rc=0
  cached="$CNI_CACHE/$(jq -r .name "$list")-$id-$ifname"
  [ -e "$cached" ] || cached=/dev/null
  k=$(( $(jq '.plugins | length' "$list") - 1 ))
  while [ "$k" -ge 0 ]; do
    type=$(jq -r --argjson i "$k" '.plugins[$i].type' "$list")
    conf=/tmp/cni.$id.del$k.conf; out=/tmp/cni.$id.del$k.out
    cni_conf "$list" "$k" "$cached" "$caps" > "$conf"
    cni_call "$node" DEL "$type" "$id" "$ns" "$ifname" "$conf" "$out" \
      || { echo "cni: DEL $type for $id failed: $(cat "$out") $(cat "$out.err")"; rc=1; }
    k=$((k - 1))
  done
  rm -f "$CNI_CACHE/$(jq -r .name "$list")-$id-$ifname"
  return $rc
}
