import Foundation
import TestSupport
import Testing


/// Containers on the mesh (issue 13): three nodes (network namespaces, wireguard-go), Debian's podman
/// running real containers on each node's `wiremesh` CNI network as the agent wrote it. One script run
/// shared by every check (each check names the script's case; its stderr says what failed).
///
/// Not skipped when a tool is missing: this suite is what proves the CNI path, so a machine that
/// cannot run it fails it (scripts/setup installs podman, runc, the CNI plugins and libnftables).
@Suite(.serialized) struct ContainersE2ETests {
    @Test func containersOnThreeNodesReachEachOtherEncryptedWithEgressAndServices() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "podman", "runc", "nft", "tcpdump", "jq", "busybox", "nsenter"]) {
            Issue.record("ContainersE2ETests cannot run on this machine: \(reason)")
            return
        }
        let started = Date()
        let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/containers.sh", [])
        print("containers e2e: \(Int(Date().timeIntervalSince(started))) s")
        func check(_ name: String, _ what: String) {
            #expect(cases[name]?.pass == true, "\(name): \(what) (\(cases[name]?.detail ?? "no RESULT line; see stderr"))")
        }
        check("conflist", "each node's 10-wiremesh.conflist is the agent's (network wiremesh, its block, the WireGuard MTU, host-local store in its state dir)")
        check("ping", "containers on different nodes ping each other by their own addresses")
        check("tcp", "a TCP server in a container on one node sees the client container's own address")
        check("ping6", "containers on different nodes ping each other by their own IPv6 addresses (dual-stack)")
        check("tcp6", "over IPv6 too, the TCP server sees the client container's own IPv6 address")
        check("capture", "the underlay capture holds no clear-text packet with a cluster address of either family")
        check("egress", "a container reaches the internet namespace with its source masqueraded to its node's address")
        check("egress6", "over IPv6 too, masqueraded to its node's IPv6 underlay address")
        check("egress-table", "the agent's nftables table is as planned (checked with nft) and not replaced by a restart")
        check("release", "removing a container frees its address in host-local's store")
        check("node-to-pod", "a node's own process reaches a container on another node (ICMP, TCP) and the server sees the node's overlay address")
        check("service", "a kube-proxy-style DNAT (VIP -> container on another node) works from the node and from a container, replies included")
        check("portmap", "a port published with podman --publish (portmap) is reached from outside the cluster")
        check("bad-dir", "an unwritable CNI directory fails join with a clear error and writes nothing")
        check("leave", "leave removes the conflist and the egress table")
        check("cleanup", "no container is left in the run's podman storage")
        #expect(status == 0)
    }

    /// Dual-stack's other half: nodes that advertise IPv6 addresses only (token, gossip and WireGuard
    /// over IPv6), scripts/e2e/ipv6-underlay.sh.
    @Test func nodesAdvertisingIPv6AddressesFormTheMeshOverAnIPv6Underlay() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "tcpdump", "jq"]) {
            Issue.record("the IPv6 underlay e2e cannot run on this machine: \(reason)")
            return
        }
        let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/ipv6-underlay.sh", [])
        func check(_ name: String, _ what: String) {
            #expect(cases[name]?.pass == true, "\(name): \(what) (\(cases[name]?.detail ?? "no RESULT line; see stderr"))")
        }
        check("mesh", "init, the token, joins and gossip over IPv6: every node sees the others alive")
        check("endpoints", "each WireGuard peer's endpoint is the other node's IPv6 address")
        check("overlay", "nodes reach each other's IPv4 and IPv6 overlay addresses through the mesh")
        check("capture", "WireGuard and gossip run over IPv6 only, no cluster address in clear")
        check("steady", "the IPv6 routes the kernel lists are the planned ones: nothing is rewritten at a resync")
        #expect(status == 0)
    }
}
