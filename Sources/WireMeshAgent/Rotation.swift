import Dispatch
import Foundation
import IPNetwork
import LinePort
import Logging
import Membership
import Metrics
import MeshPlan
import WireGuard
import WireMeshCrypto

/// The agent's key-rotation bookkeeping (held by the `Agent` actor).
struct RotationState: Sendable {
    /// Switches peers announced directly, by member name, until the gossiped records catch up.
    var switches: [String: KeySwitch] = [:]
    /// True while this node runs `rotate-key` (one at a time).
    var inProgress = false
    var timing = RotationTiming()
    /// Give members' pending keys a peer entry ahead of the switch. Off: see `MeshPlanner.plan(...preinstallPending:)`.
    /// WM_ROTATION_PREINSTALL=1 turns it on: a benchmark-only knob to compare the two orders (outside the
    /// WIREMESH_ namespace, which the configuration checks strictly).
    var preinstallPending = ProcessInfo.processInfo.environment["WM_ROTATION_PREINSTALL"] == "1"
    /// How long the rotating node waits for each peer's answer.
    var peerTimeoutSeconds = 3
    /// Test-only crash injection: WM_FAULT_PAUSE_AT=<phase> makes `rotate-key` log a marker and block
    /// at that phase, so a test can kill -9 the agent exactly there (outside the strictly checked
    /// WIREMESH_ namespace, like WM_ROTATION_PREINSTALL).
    var pauseAt = ProcessInfo.processInfo.environment["WM_FAULT_PAUSE_AT"].flatMap(RotationPhase.init(rawValue:))
    /// When the agent started (scheduled rotation waits a moment after it).
    var startedAt = Date()
    /// When a scheduled rotation last failed (it is retried after `KeyRotationSchedule.retry`).
    var lastScheduledFailure: Date?
}

/// The points of `rotate-key` after which a crash leaves a distinct state (see `Agent.rotateKey`).
enum RotationPhase: String, CaseIterable, Sendable {
    /// The next key is saved as pending; nothing announced.
    case pendingSaved = "pending-saved"
    /// The record announces the pending key and every live peer was asked (prepare).
    case prepared
    /// The state names the new key and the device uses it; no peer was told yet.
    case promoted
    /// Every live peer was told (switch); the record still names the old key.
    case switched
    /// The record names the new key: the old key is gone everywhere on this node.
    case published
}

/// What one `rotate-key` did, for the operator.
struct RotationOutcome: Sendable {
    var newKey: Key
    var livePeers: [String]
    var prepared: [String]
    var switched: [String]
    var failures: [String]

    var message: String {
        var text = "new public key \(newKey.base64); \(switched.count) of \(livePeers.count) live peers switched directly"
        if prepared.count != livePeers.count { text += ", \(prepared.count) confirmed the announcement" }
        let missing = Set(livePeers).subtracting(switched).sorted()
        if !missing.isEmpty {
            text += "; \(missing.joined(separator: ", ")) will follow from the gossiped record"
        }
        return text
    }
}

extension Agent {
    /// The desired mesh with the key switches peers announced directly; forgets settled switches.
    func planMesh(record: NodeRecord, view: MemberView) -> DesiredMesh {
        let members = view.members
        let now = secondsSinceStart
        for (name, s) in rotation.switches where s.isSettled(member: members.first { $0.name == name }, now: now,
                                                              timing: rotation.timing) {
            rotation.switches[name] = nil
            logger.debug("key switch settled", metadata: ["node": "\(name)"])
        }
        // The resync every 10 s mostly finds the view unchanged: reuse the plan (the device is still
        // read back and diffed against it, so drift is repaired all the same). Not while a key switch
        // is in flight: those plans depend on time.
        let inputs = PlanInputs(record: record, key: state.wireGuardKey, settings: settings,
                                preinstall: rotation.preinstallPending, view: view.generation, keptDead: dataPlane.kept)
        planWasCached = false
        if rotation.switches.isEmpty, let cached = planCache, cached.inputs == inputs {
            planWasCached = true
            return cached.plan
        }
        let plan = MeshPlanner.plan(local: record, privateKey: state.wireGuardKey, members: members, settings: settings,
                                    switches: Array(rotation.switches.values), preinstallPending: rotation.preinstallPending,
                                    timing: rotation.timing, keepingDead: dataPlane.kept)
        planCache = rotation.switches.isEmpty ? (inputs, plan) : nil
        return plan
    }

    /// A peer's prepare or switch. The switch moves the peer's allowed IPs to its new key in one
    /// device operation (adding a prefix to another peer moves it: allowed IPs are unique per
    /// interface), so no packet finds the prefix without an owner.
    func handleRotation(_ message: RotationMessage) async throws {
        let view = await currentView()
        guard let member = view.members.first(where: { $0.name == message.node }), member.status.isActive,
              message.node != state.node.name else {
            throw RotationRefusal.unknownSender  // the same as a bad signature: names are no one's to probe
        }
        let record = member.record.record
        let keys = try message.verified(by: record.identity, nowMs: clock.wallMs)
        switch message.rotation {
        case .prepare:
            guard record.wireguardKey == keys.old || record.wireguardKey == keys.new else {
                throw RotationRefusal("'\(message.node)' announces a rotation from a key this node does not know it by")
            }
        case .switch:
            if record.wireguardKey == keys.new { return } // gossip was faster: the reconciler has it
            if rotation.switches[message.node]?.newKey == keys.new { return } // a retry
            guard record.wireguardKey == keys.old else {
                throw RotationRefusal("'\(message.node)' switches from a key this node does not know it by")
            }
            // From here to the end no suspension point: a reconcile cannot interleave.
            rotation.switches[message.node] = KeySwitch(node: message.node, oldKey: keys.old, newKey: keys.new,
                                                        appliedAt: secondsSinceStart)
            let plan = planMesh(record: localRecord(version: 0), view: view)
            guard let entry = plan.device.peers.first(where: { $0.publicKey == keys.new }) else {
                rotation.switches[message.node] = nil
                throw RotationRefusal("'\(message.node)' switches to a key another member holds")
            }
            // The reconciler moves the prefixes to the new entry (gains before losses: they always
            // have an owner); nothing suspends between the switch and the write.
            guard reconcileNow(view) else {
                rotation.switches[message.node] = nil
                throw RotationRefusal("this node could not program its device: \(deviceProblem ?? "unknown error")")
            }
            // The old entry goes once the record names the new key and the grace has passed; reconcile
            // then rather than waiting for the periodic resync.
            let grace = rotation.timing.grace
            Task { [weak self] in
                try? await Task.sleep(for: .milliseconds(Int(grace * 1000) + 500))
                await self?.reconcile()
            }
            logger.info("peer switched its WireGuard key", metadata: [
                "node": "\(message.node)", "new_key": "\(keys.new.base64)", "allowed_ips": "\(entry.allowedIPs.count)"])
        }
    }

    /// `wiremesh rotate-key`: new key announced, peers asked, device switched, peers told, record published.
    ///
    /// Order: (1) the new key is saved as pending (crash-safe) and announced in the record;
    /// (2) every live peer is asked directly and answers; (3) the key is promoted in the state store
    /// (the old private key is forgotten: this node never needs it again) and set on the device;
    /// (4) every live peer is told directly and moves this node's allowed IPs to the new key
    /// (and starts the handshake with it);
    /// (5) the record names the new key. Between (3) and (4) packets wait in WireGuard's queues
    /// rather than being dropped: this node's sessions need a new handshake, which the peer can
    /// complete only once it has the new entry (see BENCHMARKS.md, "rotation").
    func rotateKey() async throws -> RotationOutcome {
        func reached(_ phase: RotationPhase) async {
            logger.info("rotation step", metadata: ["step": "\(phase.rawValue)"])
            guard rotation.pauseAt == phase else { return }
            logger.warning("WM_FAULT_PAUSE_AT: rotation paused at \(phase.rawValue)")
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
        }
        guard let transport else { throw AgentError("the agent is still starting: retry in a moment") }
        guard !rotation.inProgress else { throw AgentError("a key rotation is already running on this node: wait for it to finish") }
        rotation.inProgress = true
        defer { rotation.inProgress = false }
        let received = clock.monotonic()

        let next = state.pendingWireGuardKey ?? Key.generatePrivate()
        let oldPublic = state.wireGuardKey.publicKey(), newPublic = next.publicKey()
        try store.savePendingWireGuardKey(next)
        state.pendingWireGuardKey = next
        await reached(.pendingSaved)
        try await transport.updateLocalRecord { $0.pendingWireguardKey = newPublic }

        let members = try await transport.members()
        let peers = members.filter { MeshPlanner.isPeer($0, localName: state.node.name) }
            .map { (name: $0.name, endpoint: $0.record.record.gossipAddress) }
        func message(_ phase: RotationMessage.Phase) -> [UInt8] {
            let m = RotationMessage(phase: phase, node: state.node.name, oldKey: oldPublic, newKey: newPublic,
                                    issuedAt: clock.wallMs, identity: state.identity)
            return LineRequest.rotation(m).line()
        }
        let timeout = rotation.peerTimeoutSeconds
        let started = clock.monotonic()
        let prepared = await Self.tell(peers, message(.prepare), timeoutSeconds: timeout)
        let switchAt = clock.monotonic()
        await reached(.prepared)

        // Whole seconds, as the state file keeps it: the schedule must not move when a restart reloads it.
        let now = Date(timeIntervalSince1970: clock.wall().timeIntervalSince1970.rounded(.down))
        try store.promotePendingWireGuardKey(now: now)
        state.wireGuardKey = next
        state.pendingWireGuardKey = nil
        state.wireGuardKeyCreatedAt = now
        // The state names the new key: the reconciler switches the device to it (`deviceWrites`: the key
        // with a handshake kick to every peer), now or, if that fails, at its next pass.
        if !reconcileNow(view ?? .empty) {
            logger.error("setting the new private key failed (the reconciler retries): \(deviceProblem ?? "unknown error")")
        }
        await reached(.promoted)
        // The kernel sends the initiations from a work queue: let them leave before any peer moves.
        try? await Task.sleep(for: .milliseconds(5))
        let keySetAt = clock.monotonic()
        let switched = await Self.tell(peers, message(.switch), timeoutSeconds: timeout)
        let toldAt = clock.monotonic()
        await reached(.switched)
        try await transport.updateLocalRecord {
            $0.wireguardKey = newPublic
            $0.pendingWireguardKey = nil
        }
        await reached(.published)
        let publishedAt = clock.monotonic()
        let outcome = RotationOutcome(
            newKey: newPublic, livePeers: peers.map(\.name).sorted(),
            prepared: prepared.filter { $0.value == nil }.keys.sorted(),
            switched: switched.filter { $0.value == nil }.keys.sorted(),
            failures: (prepared.merging(switched) { _, b in b }).compactMap { k, v in v.map { "\(k): \($0)" } }.sorted())
        for failure in outcome.failures { logger.warning("rotation: peer did not answer: \(failure)") }
        Counter(label: MetricName.keyRotations).increment()
        logger.info("rotated WireGuard key", metadata: [
            "new_key": "\(newPublic.base64)", "peers": "\(peers.count)", "switched": "\(outcome.switched.count)",
            "announce_ms": "\((started - received).milliseconds)", "prepare_ms": "\((switchAt - started).milliseconds)",
            "key_ms": "\((keySetAt - switchAt).milliseconds)", "switch_ms": "\((toldAt - keySetAt).milliseconds)",
            "record_ms": "\((publishedAt - toldAt).milliseconds)"])
        return outcome
    }

    /// Sends `line` (a `LineRequest.rotation`) to every peer at once; the result maps each name to nil
    /// (acknowledged) or why not. The exchanges run on NIO's event loops, not a thread per peer.
    static func tell(_ peers: [(name: String, endpoint: Endpoint)], _ line: [UInt8],
                     timeoutSeconds: Int) async -> [String: String?] {
        await withTaskGroup(of: (String, String?).self) { group in
            for peer in peers {
                group.addTask {
                    do {
                        let reply = try await LineClient.exchange(line: line, with: peer.endpoint, timeout: .seconds(timeoutSeconds))
                        switch try LineReply.decode(line: reply) {
                        case .rotated: return (peer.name, nil)
                        case .refused(let refusal): return (peer.name, refusal.description)
                        default: return (peer.name, "answered something other than a rotation acknowledgement")
                        }
                    } catch {
                        return (peer.name, "\(error)")
                    }
                }
            }
            var out: [String: String?] = [:]
            for await (name, result) in group { out[name] = result }
            return out
        }
    }
}

extension Duration {
    /// Whole milliseconds, for logs.
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// What a plan without key switches depends on; the member view by its generation (a new
/// generation is a new view, even when the members came back to the same state).
struct PlanInputs: Equatable {
    var record: NodeRecord
    var key: Key
    var settings: MeshSettings
    var preinstall: Bool
    /// `MemberView.generation` (the cache is dropped when the transport changes).
    var view: UInt64
    /// Dead members kept for their live data plane: changes with the device, not the view.
    var keptDead: Set<String>
}

extension Agent {
    /// Monotonic seconds since this agent started: the clock of `KeySwitch.appliedAt` (a wall-clock
    /// jump must not settle a switch early or keep it for an hour).
    var secondsSinceStart: Double {
        let d = clock.monotonic() - startedAt
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// How long `rotate-key` waits for each peer (tests shorten it).
    func setPeerTimeout(seconds: Int) { rotation.peerTimeoutSeconds = seconds }
}
