import Foundation
import IPNetwork
import LinePort
import Logging
import Membership
import Metrics
import MeshPlan
import Netlink
import ServiceLifecycle
import WireGuard
import WireMeshCrypto
import WireMeshJoin

/// Why the agent could not start, phrased for an operator.
public struct AgentError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The running node: membership in, WireGuard and routes out, control and join requests answered.
///
/// The reconciler is the only place that turns the member view into kernel state; it is idempotent
/// (a second run with nothing changed sends nothing) and runs on every membership event plus a
/// periodic resync that repairs drift (a peer removed by hand comes back, a foreign one goes).
public actor Agent {
    let config: AgentConfig
    let store: StateStore
    var state: NodeState
    /// The only way to the device, its link and the routes (a LinkManager, or in memory in tests), and
    /// the only writer of them: everything else changes what the plan is computed from.
    let reconciler: Reconciler
    let advertise: IPAddress
    let logger: Logger
    var transport: GossipTransport?
    var interfaceIndex: Int32
    /// Blocks handed to nodes admitted by this member whose records have not arrived yet (with the
    /// time: an admitted node that never shows up frees its block after `pendingAssignmentTTL`).
    var pendingAssignments: [String: (blocks: [IPPrefix], at: ContinuousClock.Instant)] = [:]
    static let pendingAssignmentTTL: Duration = .seconds(300)
    /// BLAKE2b of the member list last saved (the list itself is ~0.5 MB at 1000 members), and the
    /// view generation it was saved from.
    var lastSavedMembersDigest: [UInt8] = []
    var lastSavedGeneration: UInt64?
    /// The gossip view as last read (`currentView`).
    var view: MemberView?
    /// When to release start-up pages (see `releaseStartupPagesWhenSteady`).
    var pageRelease = PageReleasePolicy(start: .now)
    /// The last plan without key switches, and what it was computed from.
    var planCache: (inputs: PlanInputs, plan: DesiredMesh)?
    var lastMembersSave: ContinuousClock.Instant?
    /// WireGuard peers for nodes this member just admitted, until their signed records arrive by
    /// gossip (or 60 s pass). Programmed before the join reply goes out, so the new node's first
    /// handshake is answered: a handshake from an unknown key is dropped, and WireGuard retries
    /// only after 5 s, which would delay the new node's first packets by that much.
    var admittedPeers: [String: (peer: Peer, at: ContinuousClock.Instant)] = [:]
    static let admittedPeerTTL: Duration = .seconds(60)
    /// Set by `leave`: the services stop once the leave has been gossiped.
    var leaving = false
    /// Yields once on `leave` (the reconcile loop ends on it).
    nonisolated let leaves: AsyncStream<Void>
    let leaveSignal: AsyncStream<Void>.Continuation
    /// Monotonic time for TTLs, wall time for what other nodes compare (tests move both).
    let clock: AgentClock
    /// When this agent started, on `clock.monotonic`.
    let startedAt: ContinuousClock.Instant
    /// Key switches announced by peers and this node's own rotation (Rotation.swift).
    var rotation = RotationState()
    /// Cluster key rotation bookkeeping (ClusterKeyRotationAgent.swift).
    var clusterKeyAgent = ClusterKeyAgentState()
    /// Why the last reconcile pass could not program the device or the routes (nil: it could). A node
    /// in this state is black-holed whatever gossip says: `status` reports it and exits non-zero.
    var deviceProblem: String?

    /// The interface MTU set at start.
    let mtu: Int

    /// This member's token entries as last saved (`tokens.json` is read once, at start: a reconcile
    /// pass must not read the disk). A file that could not be read stays the error, so no token
    /// operation overwrites it.
    var tokenCache: Result<[TokenRecord], any Error>

    /// Per-peer metric series as last scraped (AgentMetrics.swift).
    var peerSeries = PeerSeries()
    /// Whether the last plan came from the cache (nothing it depends on changed), and the admitted
    /// peers it was programmed with: a pass that still writes then repaired drift.
    var planWasCached = false
    var lastAdmitted: [Peer] = []

    /// Dead members whose WireGuard peer stays while their data plane is alive (DataPlaneLiveness.swift).
    var dataPlane = DataPlaneLiveness()
    /// Which line-port refusals were logged lately (AgentLinePort.swift): a flood writes few lines.
    var refusalLog = RefusalLog()

    init(config: AgentConfig, store: StateStore, state: NodeState, link: any Dataplane, advertise: IPAddress,
         interfaceIndex: Int32, mtu: Int, logger: Logger, clock: AgentClock = .system) {
        self.config = config
        self.clock = clock
        startedAt = clock.monotonic()
        self.mtu = mtu
        self.store = store
        self.state = state
        self.reconciler = Reconciler(link)
        self.advertise = advertise
        self.interfaceIndex = interfaceIndex
        self.logger = logger
        tokenCache = Result { try store.loadTokens() }
        (leaves, leaveSignal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// This node's record as it is announced.
    func localRecord(version: UInt64) -> NodeRecord {
        var record = NodeRecord(name: state.node.name, identity: state.identity.publicKey, version: version,
                   wireguardKey: state.wireGuardKey.publicKey(), pendingWireguardKey: state.pendingWireGuardKey?.publicKey(),
                   wireguardEndpoints: [Endpoint(address: advertise, port: config.wireGuardPort)],
                   gossipAddress: Endpoint(address: advertise, port: config.gossipPort),
                   podCIDRs: state.node.podCIDRs, overlayAddress: state.node.overlayAddress,
                   tokens: TokenRecords.announcements((try? tokenCache.get()) ?? [], now: clock.wall()))
        record.clusterKeys = state.clusterKeys.tags
        record.certificate = state.certificate
        record.revocationSerial = state.revocations?.serial ?? 0
        return record
    }

    var settings: MeshSettings {
        MeshSettings(interface: config.interface, interfaceIndex: interfaceIndex, listenPort: config.wireGuardPort,
                     persistentKeepalive: UInt16(clamping: (config.persistentKeepalive?.components.seconds ?? 0)),
                     clusterCIDRs: state.settings.podRanges)
    }

    /// One reconciliation pass: plan from the view, diff against the device and routes, apply the delta.
    /// Its one job; what follows the view otherwise (saved members, tokens, cluster keys) is `followView`.
    func reconcile() async {
        reconcileNow(await currentView())
    }

    /// A pass with `view`, without suspending: callers that changed an input (a key switch, an
    /// admitted peer) get the device in line with it before anything else runs on the actor.
    @discardableResult
    func reconcileNow(_ view: MemberView) -> Bool {
        do {
            try programDataplane(view)
            return true
        } catch {
            return false
        }
    }

    /// The pass itself; throws what the dataplane answered (also recorded as `deviceProblem`).
    func programDataplane(_ view: MemberView) throws {
        let members = view.members
        let record = localRecord(version: 0)
        let overlays = state.node.overlayPrefixes
        let started = clock.monotonic()
        var admitted: [Peer] = []
        do {
            let report = try reconciler.pass(mtu: mtu, overlays: overlays) { actual, index in
                interfaceIndex = index
                // Read back first: the plan keeps dead members whose data plane the device shows alive.
                observeDataPlane(actual, members: members)
                let plan = planMesh(record: record, view: view)
                for conflict in plan.conflicts { logger.warning("pod CIDR conflict: \(conflict)") }
                admitted = admittedPeerList(members: members)
                return Reconciler.Plan(
                    mesh: plan, overrides: DeviceOverrides(gossipUp: transport != nil, admitted: admitted),
                    kick: settings.persistentKeepalive != 0 ? settings.persistentKeepalive : rotation.timing.kickKeepalive)
            }
            if report.recreated { planCache = nil }
            Timer(label: MetricName.reconcileDuration).record(duration: clock.monotonic() - started)
            let operations = ReconcileOperations.count(report.writes, routesAdded: report.routesAdded, routesRemoved: report.routesRemoved)
            for (kind, n) in operations { Counter(label: MetricName.reconcileOperations, dimensions: [("kind", kind)]).increment(by: n) }
            if !operations.isEmpty, planWasCached, admitted == lastAdmitted, !report.recreated {
                Counter(label: MetricName.driftRepaired).increment()
                logger.notice("repaired drift: the device or routes differed from the plan", metadata: [
                    "operations": "\(operations.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))"])
            }
            lastAdmitted = admitted
            if !report.writes.isEmpty {
                let peers = report.writes.first?.peers.count ?? 0
                logger.info("reconciled WireGuard", metadata: [
                    "peers_changed": "\(peers)", "operations": "\(report.writes.count)", "bytes": "\(report.bytes)"])
                pageRelease.meshChanged(peers: peers, at: .now)
            }
            if report.routesAdded + report.routesRemoved > 0 {
                pageRelease.meshChanged(peers: 0, at: .now)
                logger.info("reconciled routes", metadata: ["added": "\(report.routesAdded)", "removed": "\(report.routesRemoved)"])
            }
            if deviceProblem != nil { logger.notice("device and routes programmed again", metadata: ["interface": "\(config.interface)"]) }
            deviceProblem = nil
        } catch {
            let problem = Self.explain(error, config: config)
            // Once per distinct problem, not every resync.
            if problem != deviceProblem { logger.error("cannot program interface \(config.interface): \(problem)") }
            deviceProblem = problem
            throw error
        }
    }

    /// What follows a new view besides the device: the saved member list, expired block
    /// reservations, token announcements, the cluster-key phase, and memory handed back.
    func followView() async {
        let view = await currentView()
        let members = view.members
        // Before gossip is up there is no view: the saved list (from the last run or the join) must stay.
        if transport != nil { saveMembers(view) }
        let now = clock.monotonic()
        for (name, pending) in pendingAssignments
        where members.contains(where: { $0.name == name }) || now - pending.at > Self.pendingAssignmentTTL {
            pendingAssignments[name] = nil
        }
        await syncTokens(members: members)
        followRevocations(members: members)
        if transport != nil { await evaluateClusterKeys(members: members) }
        ProcessMemory.releaseFreed()
        releaseStartupPagesWhenSteady()
    }

    /// A reconcile failure in an operator's words: the errno the device answered becomes what to do.
    static func explain(_ error: Error, config: AgentConfig) -> String {
        if case WireGuardError.rejected(_, let errno, _) = error, errno == EADDRINUSE || errno == -EADDRINUSE {
            return "WireGuard port \(config.wireGuardPort) is in use by another process (\(error)): stop that process or choose another --wireguard-port"
        }
        return "\(error)"
    }

    /// Start-up — parsing, state loading, joining — and the sync of a large change (hundreds of
    /// members joining) run code that a steady agent does not run again, yet its pages stay mapped.
    /// They are released (`ProcessMemory.dropStartupPages`) when `PageReleasePolicy` says so.
    func releaseStartupPagesWhenSteady() {
        guard transport != nil, pageRelease.shouldRelease(at: .now) else { return }
        let bytes = ProcessMemory.dropStartupPages()
        logger.debug("released start-up pages", metadata: ["bytes": "\(bytes)"])
    }

    /// The block reserved for an admitted node whose record has not arrived yet.
    func reservedBlock(of name: String) -> IPPrefix? { pendingAssignments[name]?.blocks.first }

    /// Peers of just-admitted nodes whose records the view does not hold yet (for 60 s at most).
    func admittedPeerList(members: [Member]) -> [Peer] {
        let now = clock.monotonic()
        admittedPeers = admittedPeers.filter { name, entry in
            !members.contains { $0.name == name } && now - entry.at < Self.admittedPeerTTL
        }
        return admittedPeers.sorted { $0.key < $1.key }.map(\.value.peer)
    }

    /// The members the gossip core knows (none before gossip is up), copied out of it only when its
    /// generation moved since the last read.
    func currentView() async -> MemberView {
        guard let transport else { return .empty }
        do {
            if let fresh = try await transport.view(unlessAt: view?.generation) { view = fresh }
            return view ?? .empty
        } catch {
            return .empty
        }
    }

    func currentMembers() async -> [Member] { await currentView().members }

    /// Persists the active members (and dead ones whose peer is kept) so a restart rejoins without a
    /// token and keeps those peers.
    func saveMembers(_ view: MemberView) {
        guard view.generation != lastSavedGeneration else { return }
        // The saved list only seeds a restart: while a big cluster churns, writing (and fsyncing) it at
        // most every 2 s is enough; the periodic resync writes the final state.
        if let last = lastMembersSave, clock.monotonic() - last < .seconds(2) { return }
        let blob = MemberBlob.encode(view.members.filter { $0.status.isActive || dataPlane.kept.contains($0.name) }.map(\.record))
        let digest = KeyDerivation.genericHash(blob)
        guard digest != lastSavedMembersDigest else { lastSavedGeneration = view.generation; return }
        do {
            try store.saveMembers(blob)
            lastSavedMembersDigest = digest
            lastSavedGeneration = view.generation
            lastMembersSave = clock.monotonic()
        } catch {
            logger.error("could not save members: \(error)")
        }
    }

    // MARK: Control requests

    func handle(_ request: ControlRequest) async -> ControlResponse {
        do {
            switch request {
            case .status:
                let members = await currentMembers()
                let keys = clusterKeyStatus
                return .status(StatusInfo(
                    nodeName: state.node.name, clusterID: state.clusterID, podCIDRs: state.node.podCIDRs.map(\.description),
                    overlayAddress: state.node.overlayAddress.description, interface: config.interface,
                    wireGuardPublicKey: state.wireGuardKey.publicKey().base64, wireGuardPort: config.wireGuardPort,
                    gossipPort: config.gossipPort, backend: reconciler.backendKind,
                    livePeers: members.filter { $0.name != state.node.name && $0.status.isActive }.count,
                    keyCreatedAt: state.wireGuardKeyCreatedAt, nextKeyRotation: nextScheduledRotation,
                    clusterKeys: keys.keys, clusterKeyPhase: keys.phase, clusterKeyProblem: keys.problem,
                    healthy: deviceProblem == nil, problems: [deviceProblem].compactMap { $0 },
                    advertiseAddress: advertise.description, mtu: mtu,
                    overlayAddressV6: state.node.overlayAddressV6?.description))
            case .peers:
                return .peers(try await peers())
            case .tokenCreate(let ttl, let uses):
                // One use unless asked: a leaked token admits one node at most (`token create --uses`).
                return try await createToken(ttl: TimeInterval(ttl ?? 86_400), uses: uses ?? 1)
            case .tokenList:
                let members = await currentMembers()
                let now = clock.wall()
                let view = tokenView(try tokenCache.get(), members: members)
                return .tokens(view.values.map { TokenInfo($0, now: now) }.sorted {
                    ($0.createdAt ?? .distantPast, $0.id) < ($1.createdAt ?? .distantPast, $1.id)
                })
            case .tokenRevoke(let given):
                let id = try TokenReference.validatedID(given)  // never echoes what it got
                let members = await currentMembers()
                let records = try tokenCache.get()
                let revoked = try TokenRecords.revoke(id, in: records, view: tokenView(records, members: members))
                try saveTokenRecords(revoked)
                try await announceTokens(revoked)
                return .done("token \(id) revoked: every member refuses it once this is gossiped (about a second)")
            case .leave:
                // Recorded first: from here on the agent refuses to start until a new join.
                try store.markLeft(clusterID: state.clusterID)
                leaving = true
                leaveSignal.yield()
                try await transport?.leave()
                return .done("left cluster \(state.clusterID); the agent removes interface \(config.interface) and its routes, then stops")
            case .rotateKey:
                do { return .done(try await rotateKey().message) } catch {
                    return .failure(ControlFailure(code: "rotation", message: "rotate-key failed: \(error)"))
                }
            case .clusterKeyRotate:
                do { return .done(try await rotateClusterKey()) } catch {
                    return .failure(ControlFailure(code: "cluster-key", message: "cluster-key rotate failed: \(error)"))
                }
            case .evict(let name):
                return .done(try await evict(name))
            }
        } catch {
            // The request was well formed; the error names what failed (its code tells bad input apart).
            return .failure(ControlFailure(error))
        }
    }

    func peers() async throws -> [PeerInfo] {
        let members = await currentMembers()
        let device = try? reconciler.device()
        let now = clock.wall().timeIntervalSince1970
        return members.filter { $0.name != state.node.name }.sorted { $0.name < $1.name }.map { member in
            let record = member.record.record
            let peer = device?.peers.first { $0.publicKey == record.wireguardKey }
            let since = peer?.lastHandshake.flatMap { $0.seconds > 0 ? Int(now) - Int($0.seconds) : nil }
            return PeerInfo(name: member.name, state: Self.stateName(member.status),
                            podCIDRs: record.podCIDRs.map(\.description), publicKey: record.wireguardKey.base64,
                            endpoint: (peer?.endpoint ?? record.wireguardEndpoints.first)?.description,
                            secondsSinceHandshake: since, onDevice: device.map { _ in peer != nil },
                            receiveBytes: peer?.receiveBytes, transmitBytes: peer?.transmitBytes, recordVersion: record.version)
        } + (state.revocations?.entries ?? []).filter { e in !members.contains { $0.name == e.name } }.map { e in
            // Evicted nodes stay listed: an operator checks an eviction took.
            PeerInfo(name: e.name, state: "evicted", podCIDRs: [], publicKey: "", endpoint: nil, secondsSinceHandshake: nil)
        }
    }

    static func stateName(_ status: MemberStatus) -> String {
        switch status {
        case .alive: return "alive"
        case .suspect: return "suspect"
        case .dead: return "dead"
        case .left: return "left"
        }
    }

    // MARK: Join requests

    /// Answers one join request.
    func admit(_ request: JoinRequest) async -> LineReply {
        do {
            // First, before any view copy or disk read, and before any answer that says something.
            guard let authority = state.authority else { throw JoinError.notAnAuthority }
            try JoinExchange.authenticate(request, authority: authority, revocationSerial: state.revocations?.serial ?? 0)
            let members = await currentMembers()
            let ownRecord = try await transport?.localRecord()
            // From here until the block is recorded in `pendingAssignments` nothing suspends: a second
            // join answered by this member meanwhile would not see the block and could be given it too.
            let now = clock.wall()
            let candidate = try JoinCandidate(
                request, members: members, local: state.node, settings: state.settings,
                pending: pendingAssignments.compactMapValues { $0.blocks.first { $0.address.isIPv4 } },
                pendingV6: pendingAssignments.compactMapValues { $0.blocks.first { !$0.address.isIPv4 } }, nowMs: UInt64(now.timeIntervalSince1970 * 1000),
                monotonicNow: GossipHandler.now())  // the clock of `Member.since`
            let context = JoinExchange.MemberContext(
                clusterID: state.clusterID, settings: state.settings, keyring: state.keyring,
                authority: authority, revocations: state.revocations,
                members: MemberBlob.encode(members.filter { $0.status.isActive }.map(\.record)
                    + [ownRecord].compactMap { $0 }))
            // From the view to the saved use, nothing suspends: two joins at this member cannot both
            // take a token's last use (joins racing at two members can, see README).
            let records = try tokenCache.get()
            let admission = try JoinExchange.admit(
                request, token: tokenView(records, members: members)[request.tokenID],
                usedNonces: records.first { $0.id == request.tokenID }?.usedNonces ?? [], member: context, now: now,
                memberNonce: secureRandomBytes(JoinExchange.nonceLength), assign: candidate.assign)
            let used = TokenRecords.recordingUse(of: request, nonce: admission.nonce, in: records)
            try saveTokenRecords(used)
            pendingAssignments[request.nodeName] = (admission.assignment.podCIDRs, clock.monotonic())
            admittedPeers[request.nodeName] = (Peer(
                publicKey: request.wireGuardPublicKey, persistentKeepaliveInterval: settings.persistentKeepalive,
                allowedIPs: admission.assignment.podCIDRs + [admission.assignment.overlayPrefixes[0]]), clock.monotonic())
            do { try await announceTokens(used) } catch { logger.warning("could not announce the token use: \(error)") }
            await reconcile()
            Counter(label: MetricName.joins, dimensions: [("result", "admitted")]).increment()
            logger.info("admitted node", metadata: ["node": "\(request.nodeName)",
                                                     "pod_cidr": "\(admission.assignment.podCIDRs.map(\.description).joined(separator: ","))"])
            return .joined(admission.response)
        } catch {
            Counter(label: MetricName.joins, dimensions: [("result", "refused")]).increment()
            noteRefusal("join", code: JoinRejection(error).code.rawValue, "refused join: \(error)")
            return .refused(.join(JoinRejection(error)))
        }
    }
}

// MARK: Tokens

extension Agent {
    /// The cluster-wide view of every token: this member's entries merged with all members' records.
    func tokenView(_ records: [TokenRecord], members: [Member]) -> [String: ClusterToken] {
        TokenRecords.merge(local: (state.node.name, records), members: members.map { ($0.name, $0.record.record.tokens) })
    }

    /// Issues a token (authority nodes only) naming this node as the endpoint to contact.
    func createToken(ttl: TimeInterval, uses: Int?) async throws -> ControlResponse {
        guard let authority = state.authority else { throw JoinError.notAnAuthority }
        let now = clock.wall()
        let members = await currentMembers()
        var records = TokenRecords.pruned(try tokenCache.get(), now: now)
        guard TokenRecords.liveCount(records, now: now) < TokenAnnouncement.maxPerRecord else {
            throw JoinError.invalidRequest("this member already announces \(TokenAnnouncement.maxPerRecord) unexpired tokens, all a gossip record has room for: create the token on another member, or wait until some expire")
        }
        // Only authorities admit: the token names this node alone (tokens made on another authority
        // name that one; a joiner tries each endpoint it is given).
        let others: [Endpoint] = []
        let (token, record) = try JoinToken.issue(
            clusterID: state.clusterID, endpoints: [Endpoint(address: advertise, port: config.gossipPort)] + others,
            authority: authority, revocationSerial: state.revocations?.serial ?? 0, ttl: ttl, uses: uses, now: now)
        records.append(record)
        try saveTokenRecords(records)
        try await announceTokens(records)
        let info = TokenInfo(tokenView(records, members: members)[record.id]!, now: now)
        return .tokenCreated(token: token.text, info: info)
    }

    /// Saves this member's token entries (atomically) and keeps them as the current ones.
    func saveTokenRecords(_ records: [TokenRecord]) throws {
        try store.saveTokens(records)
        tokenCache = .success(records)
    }

    /// Puts this member's token entries into its gossiped record (if they changed).
    func announceTokens(_ records: [TokenRecord]) async throws {
        guard let transport else { return }
        let wanted = TokenRecords.announcements(records, now: clock.wall())
        if try await transport.localRecord().record.tokens != wanted {
            try await transport.updateLocalRecord { $0.tokens = wanted }
        }
    }

    /// Relays revocations seen in other records and drops entries of expired tokens from our record.
    func syncTokens(members: [Member]) async {
        guard transport != nil, !leaving else { return }
        do {
            var records = try tokenCache.get()
            if let adopted = TokenRecords.adoptingRevocations(records, view: tokenView(records, members: members), now: clock.wall()) {
                try saveTokenRecords(adopted)
                records = adopted
                logger.info("relaying token revocations seen in gossip")
            }
            try await announceTokens(records)
        } catch {
            logger.error("could not update the announced tokens: \(error)")
        }
    }
}

extension GossipTransport {
    /// Leaves the cluster gracefully (a signed leave, gossiped).
    func leave() async throws {
        try await withHandler { $0.leave() }
    }
}
