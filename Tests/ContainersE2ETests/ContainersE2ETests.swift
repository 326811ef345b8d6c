import Foundation
import TestSupport
import Testing

/// Runs scripts/e2e/containers.sh once; its RESULT object and exit status.
private func runContainersE2E() async throws -> (result: [String: Any], status: Int32) {
    let (result, status) = try await runResultScript(packageRoot + "/scripts/e2e/containers.sh", [])
    let json = try #require(result, "scripts/e2e/containers.sh printed no RESULT line (exit \(status)); its stderr is above")
    return (try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any]), status)
}

/// Containers on the mesh (issue 13): three nodes (network namespaces, wireguard-go), Debian's podman
/// running real containers on each node's `wiremesh` CNI network as the agent wrote it. One script run
/// shared by every check (each check names the script's RESULT key; its stderr says what failed).
///
/// Not skipped when a tool is missing: this suite is what proves the CNI path, so a machine that
/// cannot run it fails it (scripts/setup installs podman, runc, the CNI plugins and libnftables).
@Suite(.serialized) struct ContainersE2ETests {
    @Test func containersOnThreeNodesReachEachOtherEncryptedWithEgressAndServices() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "podman", "runc", "nft", "tcpdump", "jq", "busybox", "nsenter"]) {
            Issue.record("ContainersE2ETests cannot run on this machine: \(reason)")
            return
        }
        let (r, status) = try await runContainersE2E()
        print("containers e2e: \(r["seconds"] ?? "?") s")
        func check(_ key: String, _ what: String) {
            #expect(r[key] as? Bool == true, "\(key): \(what) (\(r[key + "_detail"] ?? "see stderr"))")
        }
        check("conflist_ok", "each node's 10-wiremesh.conflist is the agent's (network wiremesh, its block, the WireGuard MTU, host-local store in its state dir)")
        check("ping_ok", "containers on different nodes ping each other by their own addresses")
        check("tcp_ok", "a TCP server in a container on one node sees the client container's own address")
        check("capture_ok", "the underlay capture holds no clear-text packet between cluster addresses")
        check("egress_ok", "a container reaches the internet namespace with its source masqueraded to its node's address")
        check("egress_table_ok", "the agent's nftables table is as planned (checked with nft) and not replaced by a restart")
        check("release_ok", "removing a container frees its address in host-local's store")
        check("node_to_pod_ok", "a node's own process reaches a container on another node (ICMP, TCP) and the server sees the node's overlay address")
        check("service_ok", "a kube-proxy-style DNAT (VIP -> container on another node) works from the node and from a container, replies included")
        check("portmap_ok", "a port published with podman --publish (portmap) is reached from outside the cluster")
        check("bad_dir_ok", "an unwritable CNI directory fails join with a clear error and writes nothing")
        check("leave_ok", "leave removes the conflist and the egress table")
        check("cleanup_ok", "no container is left in the run's podman storage")
        #expect(status == 0)
    }
}
