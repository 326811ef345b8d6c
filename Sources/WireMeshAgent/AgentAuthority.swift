import Foundation
import IPNetwork
import LinePort
import Membership
import WireMeshCrypto
import WireMeshJoin

/// The cluster authority on this node: what records must satisfy, evictions, and following the
/// authority's revocation list.
extension Agent {
    /// What every record must satisfy: the authority's certificate, inside the cluster range, not evicted.
    var trust: ClusterTrust {
        ClusterTrust(authority: state.authorityKey, clusterID: state.clusterID, ranges: state.settings.podRanges,
                     revocations: state.revocations)
    }

    /// `wiremesh evict NAME`: signs a revocation list with the node added, applies it here (its peer
    /// goes, its records are refused), and rotates the cluster key; every member fetches the new key
    /// together with the list. Tokens are keyed by the list's serial, so every outstanding token dies.
    func evict(_ name: String) async throws -> String {
        guard let authority = state.authority else {
            throw ControlFailure(code: "not-authority", message: "evict: this node is not an authority of the cluster: run 'wiremesh evict \(name)' on an authority node (the first node, or one given a copy of its authority.key)")
        }
        guard name != state.node.name else {
            throw ControlFailure(code: "invalid", message: "evict: '\(name)' is this node: evict it from another authority node")
        }
        if state.revocations?.entries.contains(where: { $0.name == name }) == true,
           !(await currentMembers()).contains(where: { $0.name == name }) {
            throw ControlFailure(code: "invalid", message: "evict: '\(name)' is already evicted")
        }
        guard let member = await currentMembers().first(where: { $0.name == name }) else {
            throw ControlFailure(code: "unknown-node", message: "evict: no member is named '\(name)': 'wiremesh peers' lists the members this node knows")
        }
        let entry = RevocationList.Entry(name: name, identity: member.record.record.identity, evictedAt: UInt64(clamping: clock.wallMs))
        let list: RevocationList
        do { list = try RevocationList.issue(adding: entry, to: state.revocations, clusterID: state.clusterID, authority: authority) } catch {
            throw ControlFailure(code: "invalid", message: "evict: \(error)")
        }
        try await adoptRevocations(list, from: "this node")
        var message = "evicted \(name): every member removes its peer and refuses its records once it holds revocation list \(list.serial) (seconds); join tokens created before now no longer work"
        do {
            message += "; " + (try await rotateClusterKey())
        } catch {
            // The eviction stands; the key still has to change so the evicted node's copy opens nothing new.
            logger.error("evict: cluster key rotation could not start: \(error)")
            message += "; the cluster key could not be rotated yet (\(error)): run 'wiremesh cluster-key rotate' when it can"
        }
        logger.notice("evicted node", metadata: ["peer": "\(name)", "revocations": "\(list.serial)"])
        return message
    }

    /// Takes `list` if it is the authority's and newer than ours: saved first, then applied to gossip
    /// (evicted members leave the view) and announced by serial in this node's record.
    func adoptRevocations(_ list: RevocationList, from source: String) async throws {
        var trust = self.trust
        guard trust.adopt(list) else { return }
        try store.saveRevocations(list)
        state.revocations = list
        for entry in list.entries {
            admittedPeers[entry.name] = nil
            pendingAssignments[entry.name] = nil
        }
        try await transport?.setTrust(trust)
        try await transport?.updateLocalRecord { $0.revocationSerial = list.serial }
        planCache = nil
        logger.notice("revocation list adopted", metadata: [
            "serial": "\(list.serial)", "from": "\(source)", "evicted": "\(list.entries.map(\.name).joined(separator: ","))"])
        await reconcile()
    }

    /// A member announces a newer revocation list than ours: fetch it (it comes with the keyring).
    /// A member whose answer lacked the list it announces waits out its back-off.
    func followRevocations(members: [Member]) {
        let mine = state.revocations?.serial ?? 0
        let now = clock.monotonic()
        let ahead = members.filter {
            $0.name != state.node.name && $0.status.isActive && $0.record.record.revocationSerial > mine
                && !(clusterKeyAgent.unservedRevocations[$0.name].map { now < $0.until } ?? false)
        }
        guard !ahead.isEmpty else { return }
        let names = ahead.sorted { $0.record.record.revocationSerial > $1.record.record.revocationSerial }.map(\.name)
        Task { await self.fetchClusterKeys(from: names, reason: "\(names[0]) holds a newer revocation list") }
    }
}
