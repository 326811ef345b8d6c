import Foundation
import TestSupport
import Testing

/// What scripts/e2e/restart.sh reports for one restart case.
private struct RestartCase: Decodable {
    var sent: Int
    var lost: Int
    var floodS: Double?
    var floodMinS: Double
    var deadSeen: Bool
    var kept: Bool
    var backS: Double?
    var covered: Bool
    var idleRemovedOn3: Bool

    enum CodingKeys: String, CodingKey {
        case sent, lost, floodS = "flood_s", floodMinS = "flood_min_s", deadSeen = "dead_seen", kept, backS = "back_s"
        case covered, idleRemovedOn3 = "idle_removed_on_3"
    }
}

/// The RESULT line of scripts/e2e/restart.sh.
private struct RestartResult: Decodable {
    var backend: String
    var pps: Int
    var gapS: Int
    var stop: RestartCase
    var kill9: RestartCase
    var hostDiedRemovedS: Double?
    var clearICMP: Int

    enum CodingKeys: String, CodingKey {
        case backend, pps, gapS = "gap_s", stop, kill9, hostDiedRemovedS = "host_died_removed_s", clearICMP = "clear_icmp"
    }
}

/// An agent stopped for 30 s (SIGTERM, then kill -9) on a 3-node mesh (netns + wireguard-go) while its
/// node's pod pings another pod at 1000 pps: the peers' gossip declares it dead, yet they keep its
/// WireGuard peer (its data plane is alive), so no ping is lost. Then its host dies for real (agent and
/// wireguard-go): the peers remove it, and nothing to its pods leaves in clear.
///
/// Runs wherever the suites run (root, as every machine of this project does): a missing prerequisite is
/// a failure, not a skip.
@Suite(.serialized) struct RestartE2ETests {
    @Test func anAgentDownFor30SecondsCostsNoTrafficAndADeadHostIsStillRemoved() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "jq", "tcpdump"]) {
            Issue.record("RestartE2ETests cannot run: \(reason)")
            return
        }
        let (result, status) = try await runResultScript(packageRoot + "/scripts/e2e/restart.sh", ["--gap", "30", "--pps", "1000"])
        let json = try #require(result, "the script printed no RESULT line (exit \(status)); its stderr is above")
        let r = try JSONDecoder().decode(RestartResult.self, from: json)
        for (name, c) in [("SIGTERM", r.stop), ("kill -9", r.kill9)] {
            print("agent down \(r.gapS) s (\(name)) on \(r.backend): lost \(c.lost) of \(c.sent) pings at \(r.pps) pps "
                  + "(flood \(c.floodS.map { "\($0)" } ?? "?") s, \(c.floodMinS) s at full rate); back after \(c.backS.map { "\($0) s" } ?? "never")")
            #expect(c.deadSeen, "\(name): node 1 never listed node 2 as dead during the gap: the scenario did not happen")
            #expect(c.sent >= r.pps * r.gapS, "\(name): the flood sent \(c.sent) pings, fewer than the gap's worth")
            #expect(c.covered, "\(name): the flood ended before node 2 was back")
            #expect(c.kept, "\(name): node 1 removed node 2's peer while its data plane carried traffic")
            #expect(c.lost == 0, "\(name): \(c.lost) of \(c.sent) pings lost across a \(r.gapS) s agent outage")
            #expect(c.backS != nil, "\(name): node 2 was not alive everywhere after its restart")
        }
        print("host died: peer removed after \(r.hostDiedRemovedS.map { "\($0) s" } ?? "never"); \(r.clearICMP) pod ICMP in clear")
        let removed = try #require(r.hostDiedRemovedS, "a node whose host died stayed on its peers' devices (120 s)")
        // The rule: gone 30 s after its last packet was seen, seen within a 10 s resync (README).
        #expect(removed <= 60, "a dead host was removed after \(removed) s (README promises about 40 s)")
        #expect(r.clearICMP == 0, "pod ICMP to the dead node's pod left in clear on the underlay")
        #expect(status == 0)
    }
}
