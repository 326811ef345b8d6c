import Dispatch
import Foundation
import IPNetwork
import LinePort
import Logging
import Membership
import WireMeshCrypto

/// The agent's cluster key bookkeeping besides the persisted state (held by the `Agent` actor).
struct ClusterKeyAgentState: Sendable {
    /// Orders keyring updates sent to the gossip transport.
    var sequence: UInt64 = 0
    /// One keyring request at a time.
    var fetching = false
    /// When a member was last asked (a member that cannot answer is not asked on every reconcile).
    var lastAsked: [String: ContinuousClock.Instant] = [:]
    /// `droppedAuthFailed` at the last check: growing with no live peer means the cluster moved on.
    var authFailedSeen = 0
    /// Shown in `status` until a keyring request succeeds or a member is live.
    var problem: String?
    /// Every member asked at start had forgotten this node. Not reported yet: a node that just joined
    /// is not known until its record spreads; reported if no member becomes live.
    var forgottenAtStart = false
    /// A fetch was skipped (another one was running, or every member to ask was asked less than 5 s
    /// ago): the view is looked at again once that is over, not only at the next resync. Otherwise an
    /// eviction reached a member that had just fetched the keyring for another reason (at its start,
    /// say) up to 10 s late, and its peer stayed that long.
    /// Keys advertised at an implausible generation, logged once each.
    var ignoredKeys: Set<ClusterKeyID> = []
    var recheckAfterFetch = false
    var recheckScheduled = false
    /// Members whose record announced a newer revocation list than their answer carried (a damaged or
    /// hostile record: an honest member announces a list only once it holds it). Not followed again for
    /// that list until the back-off ends, so a false serial neither makes every node ask its holder
    /// every few seconds nor, asked first, hides the member that does hold the newer list.
    var unservedRevocations: [String: UnservedRevocation] = [:]
}

/// A member whose keyring answers did not bring this node to the revocation serial it announces.
struct UnservedRevocation: Sendable, Equatable {
    /// Unserved answers in a row (a new serial does not reset it: a liar could alternate).
    var times: Int
    var until: ContinuousClock.Instant

    /// 10 s, doubling with each unserved answer in a row, at most 10 minutes.
    static func backOff(times: Int) -> Duration {
        min(.seconds(10) * (1 << min(max(times, 1) - 1, 6)), .seconds(600))
    }
}

extension Agent {
    var clusterKeyGraceSeconds: Double {
        let c = config.clusterKeyGrace.components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    /// What every other member advertises, from the view.
    func memberKeys(_ members: [Member]) -> [MemberKeys] {
        members.filter { $0.name != state.node.name }.map {
            MemberKeys(name: $0.name, live: $0.status.isActive, keys: $0.record.record.clusterKeys)
        }
    }

    /// `wiremesh cluster-key rotate`: makes a new cluster key and installs it here (persisted before
    /// it is advertised). Members see it in this node's record, ask for it, and list it in their own
    /// records; each makes it primary once every live member lists it.
    func rotateClusterKey() async throws -> String {
        guard let transport else { throw AgentError("the agent is still starting: retry in a moment") }
        let current = state.clusterKeys
        guard current.phase != .installing else {
            throw AgentError("cluster key \(current.target.id) is still being installed (phase installing): wait until every live member holds it ('wiremesh status' shows the phase), then rotate again")
        }
        let members = try await transport.members()
        let key = ClusterKey.generate()
        guard let generation = state.clusterKeys.nextGeneration(members: memberKeys(members)) else {
            let who = memberKeys(members).filter { $0.keys.contains { $0.generation == .max } }.map(\.name)
            throw AgentError("cannot number a new cluster key: \(who.isEmpty ? "this node's keyring" : "the record of " + who.joined(separator: ", ")) advertises the largest key generation there is, which no real rotation reaches (a damaged or hostile record): remove that node from the cluster, then rotate")
        }
        let tag = ClusterKeyTag(id: key.id, generation: generation)
        var rotation = state.clusterKeys
        rotation.install(tag)
        try await applyClusterKeys(rotation, newKeys: [key], actions: [])
        logger.info("cluster key rotation started", metadata: ["new_key": "\(tag)"])
        await evaluateClusterKeys(members: members)
        // Counted from what `evaluate` reads, so the message names the members promotion waits for.
        return ClusterKeyAudience(members: memberKeys(members))
            .startedMessage(tag, graceSeconds: Int(clusterKeyGraceSeconds.rounded()))
    }

    /// One step of the rotation state machine (on every reconcile); applies and persists what changed.
    func evaluateClusterKeys(members: [Member]) async {
        var rotation = state.clusterKeys
        let actions = rotation.evaluate(members: memberKeys(members), now: clock.wall().timeIntervalSince1970,
                                        grace: clusterKeyGraceSeconds)
        do { try await applyClusterKeys(rotation, newKeys: [], actions: actions) } catch {
            logger.error("cluster key rotation: could not save the keyring (nothing changed): \(error)")
            return
        }
        for case .ignore(let tag, let from) in actions where clusterKeyAgent.ignoredKeys.insert(tag.id).inserted {
            logger.warning("ignoring a cluster key a member advertises: its generation is implausibly far above this node's newest (a hostile or damaged record)",
                           metadata: ["member": "\(from)", "key": "\(tag)", "newest": "\(state.clusterKeys.target.tag)"])
        }
        // Requests take a round trip (or a timeout): off the reconcile path.
        // Ask the member named first, then any other live member advertising the key.
        for case .fetch(let tag, let from) in actions {
            let others = members.filter { $0.name != from && $0.status.isActive && $0.record.record.clusterKeys.contains { $0.id == tag.id } }
            let names = [from] + others.map(\.name).shuffled()
            Task { await self.fetchClusterKeys(from: names, reason: "\(from) advertises cluster key \(tag)") }
        }
        await checkClusterKeysReachable(members: members)
    }

    /// Persists `rotation` (with `newKeys` added to the keyring) atomically, then hands it to gossip.
    /// Nothing changes in memory when the write fails, so the node never advertises an unsaved key.
    func applyClusterKeys(_ rotation: ClusterKeyRotation, newKeys: [ClusterKey], actions: [ClusterKeyAction]) async throws {
        guard rotation != state.clusterKeys || !newKeys.isEmpty else { return }
        let pool = state.keyring.keys + newKeys
        let ordered = rotation.entries.compactMap { e in pool.first { $0.id == e.id } }
        guard ordered.count == rotation.entries.count else {
            throw AgentError("cluster key rotation lost track of a key (bug): keyring \(state.keyring.ids), state \(rotation.entries.map(\.id))")
        }
        let keyring = Keyring(primary: ordered[0], others: Array(ordered.dropFirst()))
        if keyring != state.keyring || rotation != state.clusterKeys {
            try store.saveKeyring(keyring, rotation: rotation)
        }
        state.keyring = keyring
        state.clusterKeys = rotation
        clusterKeyAgent.sequence += 1
        for action in actions {
            switch action {
            case .promote(let id): logger.info("cluster key promoted: gossip is sealed with it from now on", metadata: ["key": "\(id)"])
            case .remove(let id): logger.info("old cluster key removed", metadata: ["key": "\(id)"])
            case .fetch, .ignore: break
            }
        }
        try? await transport?.setClusterKeys(keyring, tags: rotation.tags, sequence: clusterKeyAgent.sequence)
    }

    /// Asks `names` in turn for the keyring until one answers, and merges it.
    /// Returns the refusals (member → reason) when nobody handed it over.
    @discardableResult
    func fetchClusterKeys(from names: [String], reason: String, quiet: Bool = false) async -> [String: KeyringRefusal] {
        guard let transport else { return [:] }
        guard !clusterKeyAgent.fetching else {
            clusterKeyAgent.recheckAfterFetch = true
            return [:]
        }
        clusterKeyAgent.fetching = true
        var throttledFor: Duration?
        defer {
            clusterKeyAgent.fetching = false
            if clusterKeyAgent.recheckAfterFetch || throttledFor != nil {
                clusterKeyAgent.recheckAfterFetch = false
                recheckView(after: throttledFor ?? .zero)
            }
        }
        let members = (try? await transport.members()) ?? []
        var refusals: [String: KeyringRefusal] = [:]
        var served = false
        for name in names {
            guard let member = members.first(where: { $0.name == name }) else { continue }
            if let last = clusterKeyAgent.lastAsked[name], clock.monotonic() - last < .seconds(5) {
                let wait = .seconds(5) - (clock.monotonic() - last)
                throttledFor = min(throttledFor ?? wait, wait)
                continue
            }
            clusterKeyAgent.lastAsked[name] = clock.monotonic()
            let record = member.record.record
            let result = await Self.requestKeyring(
                from: record.gossipAddress, memberIdentity: record.identity, clusterID: state.clusterID,
                node: state.node.name, identity: state.identity)
            switch result {
            case .success(let (got, revocations)):
                // The list before the keys: a member never holds a new key without the eviction it
                // follows, so it never hands that key to the evicted node.
                if let revocations {
                    do { try await adoptRevocations(revocations, from: name) } catch {
                        logger.error("could not save the revocation list from \(name): \(error)")
                        return refusals
                    }
                }
                var rotation = state.clusterKeys
                let actions = rotation.merge(got.map { $0.tag })
                do {
                    try await applyClusterKeys(rotation, newKeys: got.map { $0.key }.filter { !state.keyring.keys.contains($0) },
                                               actions: actions)
                } catch {
                    logger.error("cluster key rotation: could not save the keyring from \(name): \(error)")
                    return refusals
                }
                clusterKeyAgent.problem = nil
                logger.info("cluster keys fetched", metadata: [
                    "from": "\(name)", "reason": "\(reason)", "keys": "\(got.map { $0.tag })"])
                served = true
                let held = state.revocations?.serial ?? 0
                guard record.revocationSerial > held else {
                    clusterKeyAgent.unservedRevocations[name] = nil
                    return [:]
                }
                // It announced a list it did not hand over: back off from it, and ask the next member.
                let times = (clusterKeyAgent.unservedRevocations[name]?.times ?? 0) + 1
                let backOff = UnservedRevocation.backOff(times: times)
                clusterKeyAgent.unservedRevocations[name] = UnservedRevocation(
                    times: times, until: clock.monotonic() + backOff)
                logger.warning("a member announces a revocation list it does not hand over (a damaged or hostile record): not followed for a while", metadata: [
                    "member": "\(name)", "announced_serial": "\(record.revocationSerial)",
                    "received_serial": "\(revocations?.serial ?? 0)", "held_serial": "\(held)", "retry_in": "\(backOff)"])
            case .failure(let refusal):
                refusals[name] = refusal
                logger.log(level: quiet ? .debug : .notice, "keyring request refused",
                           metadata: ["member": "\(name)", "error": "\(refusal)"])
            }
        }
        return served ? [:] : refusals
    }

    /// Follows the view again after `delay` (once at a time): what a skipped fetch was for is asked
    /// again if it is still needed (`followView` decides from the view as it is then).
    func recheckView(after delay: Duration) {
        guard !clusterKeyAgent.recheckScheduled else { return }
        clusterKeyAgent.recheckScheduled = true
        Task {
            try? await Task.sleep(for: delay + .milliseconds(50))
            self.clusterKeyAgent.recheckScheduled = false
            await self.followView()
        }
    }

    /// A node that cannot read the cluster any more (it was away during a rotation, or partitioned
    /// past the grace period): nobody is live in its view while datagrams fail authentication, or
    /// every member asked at start had forgotten it. Then it asks the members it remembers ("join
    /// history"); if every member that answers has forgotten it, `status` says to join again.
    func checkClusterKeysReachable(members: [Member]) async {
        guard let counters = try? await transport?.counters() else { return }
        let failed = counters.seal.droppedAuthFailed
        defer { clusterKeyAgent.authFailedSeen = failed }
        let others = members.filter { $0.name != state.node.name && Self.stateName($0.status) != "left" }
        if others.contains(where: { $0.status.isActive }) {
            clusterKeyAgent.problem = nil
            clusterKeyAgent.forgottenAtStart = false
            return
        }
        guard failed > clusterKeyAgent.authFailedSeen || clusterKeyAgent.forgottenAtStart else { return }
        let names = others.map(\.name).shuffled()
        Task { await self.syncClusterKeys(members: names, reason: "no live member while gossip fails authentication", report: true) }
    }

    /// Asks remembered members for the keyring (at start, and when the cluster cannot be read).
    /// With `report`, a node every answering member has forgotten gets the problem in `status`.
    func syncClusterKeys(members names: [String], reason: String, report: Bool) async {
        guard !names.isEmpty else { return }
        let refusals = await fetchClusterKeys(from: names, reason: reason, quiet: !report)
        guard !refusals.isEmpty else { return }
        let forgotten = refusals.values.filter(\.isForgotten)
        if forgotten.count == refusals.count && !report {
            clusterKeyAgent.forgottenAtStart = true
        } else if forgotten.count == refusals.count {
            let problem = "no member of cluster \(state.clusterID) that answered knows node '\(state.node.name)' any more "
                + "(\(refusals.keys.sorted().joined(separator: ", ")): \(forgotten.first!.message)); it cannot get the current cluster key: "
                + "stop the agent, move the state directory \(store.directory) away, and run 'wiremesh join TOKEN' with a fresh token "
                + "('wiremesh token create' on a member)"
            if clusterKeyAgent.problem != problem { logger.error("\(problem)") }
            clusterKeyAgent.problem = problem
        }
    }

    /// At agent start: ask the remembered members for the keyring, in case a rotation happened while
    /// this node was down (its old key may be gone everywhere).
    func syncClusterKeysAtStart() async {
        let members = await currentMembers()
        await syncClusterKeys(members: members.filter { $0.name != state.node.name }.map(\.name).shuffled(),
                              reason: "agent start", report: false)
    }

    /// The cluster key part of `status`.
    var clusterKeyStatus: (keys: [ClusterKeyInfo], phase: String, problem: String?) {
        let keys = state.clusterKeys.entries.enumerated().map { i, e in
            ClusterKeyInfo(id: e.id.description, generation: e.generation ?? 0, primary: i == 0,
                           retireAt: e.retireAt.map { Date(timeIntervalSince1970: $0) })
        }
        return (keys, state.clusterKeys.phase.rawValue, clusterKeyAgent.problem)
    }

    /// One keyring request over the line port.
    static func requestKeyring(from endpoint: Endpoint, memberIdentity: IdentityPublicKey, clusterID: String, node: String,
                               identity: SigningIdentity) async -> Result<(keys: [(key: ClusterKey, tag: ClusterKeyTag)], revocations: RevocationList?), KeyringRefusal> {
        let ephemeral = Key.generatePrivate()
        let request = KeyringRequest(clusterID: clusterID, node: node, ephemeral: ephemeral,
                                     issuedAt: Int64(Date().timeIntervalSince1970 * 1000), identity: identity)
        let reply: LineReply
        do { reply = try await LineClient.exchange(.keyring(request), with: endpoint, timeout: .seconds(3)) } catch {
            return .failure(KeyringRefusal(code: .unreachable, message: "\(error)"))
        }
        switch reply {
        case .keyring(let answer):
            return Result { () throws(KeyringRefusal) in
                try answer.openAll(for: request, ephemeral: ephemeral, memberIdentity: memberIdentity, clusterID: clusterID)
            }
        case .refused(.keyring(let refusal)):
            return .failure(refusal)
        default:
            return .failure(KeyringRefusal(code: .badAnswer, message: "\(endpoint) answered something that is not a keyring answer"))
        }
    }
}
