import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Why the host cannot run this suite, or nil when it can (root, netns, a WireGuard implementation).
private func missingPrerequisite() -> String? { missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "jq"]) }

/// What scripts/e2e/cluster-key.sh reported on its RESULT line.
private struct ClusterKeyResult: Decodable {
    var backend: String
    var oldKey: String
    var newKey: String
    var rotated: Bool
    var downNodeKeptOldKeyring: Bool
    var pingsSent: Int
    var pingsLost: Int
    var rejoined: Bool
    var rejoinPingsOK: Bool
    var promotedS: Double?
    var oldRemovedS: Double?
    var rejoinS: Double?
    var crashConverged: Bool
    var crashConvergedS: Double?
    var partitionCaughtUp: Bool
    var partitionCaughtUpS: Double?

    enum CodingKeys: String, CodingKey {
        case backend, oldKey = "old_key", newKey = "new_key", rotated, downNodeKeptOldKeyring = "down_node_kept_old_keyring"
        case pingsSent = "pings_sent", pingsLost = "pings_lost", rejoined, rejoinPingsOK = "rejoin_pings_ok"
        case promotedS = "promoted_s", oldRemovedS = "old_removed_s", rejoinS = "rejoin_s"
        case crashConverged = "crash_converged", crashConvergedS = "crash_converged_s"
        case partitionCaughtUp = "partition_caught_up", partitionCaughtUpS = "partition_caught_up_s"
    }
}

/// `wiremesh cluster-key rotate` on a 4-node mesh (netns + wireguard-go) with one node's agent killed:
/// the three live nodes end with only the new key (read with `status --json`), pods keep pinging
/// across the rotation, and the node that was down starts with its old keyring, gets the new key from
/// a member (join history) and its pod pings every other pod. Then node 4 is partitioned away while
/// node 1 rotates and the others drop the old key; after the heal it must catch up (gossip it cannot
/// open makes it ask a member for the keyring). Then a third rotation whose agent is
/// killed (kill -9) right after installing the key must still complete on all four nodes after a restart.
@Suite(.serialized) struct ClusterKeyE2ETests {
    @Test func rotationWithOneNodeDownThenThatNodeGetsBackIn() async throws {
        if let reason = missingPrerequisite() {
            print("ClusterKeyE2ETests skipped: \(reason)")
            return
        }
        let (result, status) = try await runResultScript(packageRoot + "/scripts/e2e/cluster-key.sh", ["--grace", "5", "--pps", "50"])
        let json = try #require(result, "the script printed no RESULT line (exit \(status)); its stderr is above")
        let r = try JSONDecoder().decode(ClusterKeyResult.self, from: json)
        print("cluster-key rotate on \(r.backend): \(r.oldKey) -> \(r.newKey); primary everywhere after \(r.promotedS.map { "\($0) s" } ?? "never"), "
              + "old key gone after \(r.oldRemovedS.map { "\($0) s" } ?? "never"); \(r.pingsLost) of \(r.pingsSent) pings lost; "
              + "down node back in after \(r.rejoinS.map { "\($0) s" } ?? "never"); "
              + "partitioned node caught up after \(r.partitionCaughtUpS.map { "\($0) s" } ?? "never"); "
              + "after the crash all nodes on the new key after \(r.crashConvergedS.map { "\($0) s" } ?? "never")")
        #expect(r.newKey != r.oldKey)
        #expect(r.rotated, "nodes 1-3 do not hold exactly the new key (see stderr)")
        #expect(r.downNodeKeptOldKeyring, "node 4's keyring changed while its agent was down: the scenario did not happen")
        #expect(r.rejoined, "the node that was down did not get back in (see stderr)")
        #expect(r.rejoinPingsOK, "pods do not ping to and from the node that was down")
        #expect(r.partitionCaughtUp, "the node partitioned away during a rotation did not catch up after the heal")
        #expect(r.crashConverged, "after a kill -9 of the rotating agent and its restart, the nodes did not all end with its new key")
        #expect(r.pingsSent > 0)
        // The data path does not depend on the gossip key: a lost ping means a peer was dropped.
        #expect(r.pingsLost * 100 <= r.pingsSent, "\(r.pingsLost) of \(r.pingsSent) pings lost across the cluster key rotation")
        #expect(status == 0)
    }
}
