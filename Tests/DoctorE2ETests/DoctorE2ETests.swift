import Foundation
import TestSupport
import Testing

/// `wiremesh doctor` and `wiremesh graph` on a live 3-node mesh (issue 11): each fault made on purpose
/// (no handshake, device out of sync, fail-closed route gone, port taken) is named with its fix and
/// exits 1, a healthy node exits 0, and the SVG graph is looked at as a picture (rendered to PNG).
/// scripts/e2e/doctor.sh, one run shared by every check.
@Suite(.serialized) struct DoctorE2ETests {
    @Test func doctorNamesEachFaultMadeOnPurposeAndTheGraphShowsIt() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "nft", "jq", "python3", "dot", "rsvg-convert"]) {
            Issue.record("DoctorE2ETests cannot run on this machine: \(reason)")
            return
        }
        let started = Date()
        let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/doctor.sh", [])
        print("doctor e2e: \(Int(Date().timeIntervalSince(started))) s")
        func check(_ name: String, _ what: String) {
            #expect(cases[name]?.pass == true, "\(name): \(what) (\(cases[name]?.detail ?? "no RESULT line; see stderr"))")
        }
        check("healthy", "doctor on a node with traffic to both peers exits 0, ok, every check present, none warns or fails")
        check("graph-healthy", "its SVG names every node and edge; as a PNG: right size, not blank, each node inked, no red")
        check("picture-controls", "the picture check fails on a blank PNG of the same size, and on the healthy one asked for a red edge")
        check("no-handshake", "a peer whose WireGuard UDP is dropped: exit 1, handshakes FAIL naming it and the port")
        check("out-of-sync", "a peer removed and allowed IPs replaced with wg set: exit 1, device FAIL naming both")
        check("graph-broken", "the SVG of that moment as a PNG: the missing and the stale edge drawn red where the SVG puts them")
        check("route", "the route for the cluster range into the interface deleted: exit 1, routes FAIL")
        check("port", "the gossip port bound by another process: exit 1, ports FAIL naming the port and that process, the agent refuses")
        #expect(status == 0)
    }
}
