#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ByteCodec
import IPNetwork
import LinePort
import Logging
import Membership
import Netlink
import ServiceLifecycle
import WireMeshCrypto
import WireMeshJoin

/// What `init` and `join` need besides the agent configuration.
public struct NodeOptions: Sendable {
    public var name: String
    /// Operator-given pod CIDR (e.g. from Kubernetes); nil = assigned by IPAM.
    public var podCIDR: IPPrefix?

    public init(name: String, podCIDR: IPPrefix? = nil) {
        self.name = name
        self.podCIDR = podCIDR
    }
}

/// Cluster lifecycle: create a cluster, join one, run the agent.
public enum Lifecycle {
    /// Creates a new cluster in an empty state directory and returns the first join token (one use).
    /// `clusterCIDRV6`: the IPv6 pod range of a dual-stack cluster (every node also gets a
    /// `/nodePrefixV6` block of it), nil for IPv4 only.
    public static func initCluster(config: AgentConfig, node: NodeOptions, clusterCIDR: IPPrefix, nodePrefix: Int,
                                   clusterCIDRV6: IPPrefix? = nil, nodePrefixV6: Int = ClusterSettings.defaultNodePrefixLengthV6,
                                   tokenTTL: TimeInterval = 86_400, tokenUses: Int? = 1) throws -> String {
        if let problem = JoinExchange.nodeNameProblem(node.name) { throw AgentError("\(problem): choose one with --name") }
        let store = StateStore(directory: config.stateDirectory)
        try refuseInitialised(store)
        let settings = ClusterSettings(podRange: clusterCIDR.network, nodePrefixLength: nodePrefix,
                                       podRangeV6: clusterCIDRV6.map(\.network), nodePrefixLengthV6: nodePrefixV6)
        if let v6 = clusterCIDRV6, v6.address != v6.network.address {
            throw IPAMError.invalidSettings("IPv6 cluster range \(v6) has host bits set: did you mean \(v6.network)?")
        }
        try settings.validate()
        let ipam = try IPAM(clusterRange: clusterCIDR.network, nodePrefixLength: nodePrefix)
        var assignment = try ipam.assign(node.name, requested: node.podCIDR, claims: [], now: 0)
        assignment.podCIDRV6 = try settings.ipamV6()?.allocate(for: node.name, claims: [], now: 0)
        let advertise = try advertiseAddress(config)
        // The first node is the cluster's authority: only it (and nodes given a copy of its seed)
        // certifies nodes, evicts them and issues tokens.
        let authority = SigningIdentity.generate()
        let clusterID = Hex.encode(secureRandomBytes(8))
        let now = Date()
        let state = InitialState.certified(
            clusterID: clusterID, settings: settings,
            node: assignment, identity: .generate(), wireGuardKey: .generatePrivate(), keyring: Keyring(primary: .generate()),
            authority: authority, issuedAt: now)
        let (token, record) = try JoinToken.issue(
            clusterID: clusterID, endpoints: [Endpoint(address: advertise, port: config.gossipPort)],
            authority: authority, revocationSerial: 0, ttl: tokenTTL, uses: tokenUses, now: now)  // one node by default, like `token create`
        try store.initialise(state)
        try store.saveTokens([record])
        try config.saveSettings(to: store)
        return token.text
    }

    /// The name a node joins under when `--name` is not given: the one it had if it left the cluster
    /// (a rejoin keeps its name, and with it its block while that is free), else nil (the host name).
    public static func previousName(config: AgentConfig) -> String? {
        (try? StateStore(directory: config.stateDirectory).keysOfLeftNode())??.name
    }

    /// The argv of the `wiremesh agent` that `join` becomes. Every flag join was given is passed again:
    /// saved settings sit under the environment, so a `WIREMESH_*` variable left in join's environment
    /// would otherwise win over what the operator typed on join's command line.
    public static func agentArguments(stateDirectory: String, configFile: String?, flags: [ConfigKey: String],
                                      adoptInterface: Bool) -> [String] {
        var argv = ["wiremesh", "agent", "--state-dir", stateDirectory]
        if let configFile { argv += ["--config", configFile] }
        for key in ConfigKey.allCases where key != .stateDir {
            if let value = flags[key] { argv += [key.flag, value] }
        }
        if adoptInterface { argv.append("--adopt-interface") }
        return argv
    }

    /// Joins the cluster a token names: the exchange hands this node the cluster key and its pod CIDR.
    /// The token's members are tried in order until one answers (a refusal is final).
    /// A node that left (`wiremesh leave`) joins again with its old identity and WireGuard key.
    /// Returns the cluster id and this node's assignment.
    @discardableResult
    public static func join(token text: String, config: AgentConfig, node: NodeOptions) async throws -> (clusterID: String, node: NodeAssignment) {
        let token = try JoinToken(parsing: text)
        if let problem = JoinExchange.nodeNameProblem(node.name) { throw AgentError("\(problem): choose one with --name") }
        let store = StateStore(directory: config.stateDirectory)
        let previous = try store.keysOfLeftNode()
        if previous == nil { try refuseInitialised(store) }
        // A node that left may still have its agent running (stopping): two writers on one directory.
        if let pid = StateLock.holder(directory: store.directory) { throw StateError.inUse(directory: store.directory, pid: pid) }
        let identity = previous?.identity ?? SigningIdentity.generate()
        let wireGuardKey = previous?.wireGuardKey ?? Key.generatePrivate()
        let request = JoinExchange.makeRequest(
            token: token, nodeName: node.name, identity: identity.publicKey, wireGuardPublicKey: wireGuardKey.publicKey(),
            requestedPodCIDR: node.podCIDR, nonce: secureRandomBytes(JoinExchange.nonceLength))
        var lastError: Error = AgentError("the token names no member to contact")
        var refusal: JoinError?
        for endpoint in token.endpoints {
            let response: JoinResponse
            do {
                switch try await LineClient.exchange(.join(request), with: endpoint) {
                case .joined(let r):
                    response = r
                case .refused(let refused):
                    // Unsigned, so not final: anyone on the path can forge one. The next member is asked;
                    // only when none admits is the first refusal the answer (a JoinError: the CLI exits 2).
                    let code = if case .join(let r) = refused { r.code } else { JoinRejection.Code.malformed }
                    refusal = refusal ?? JoinError.rejected(JoinRejection(code: code, message: "join refused by \(endpoint): \(refused)"))
                    continue
                default:
                    lastError = AgentError("\(endpoint) answered something that is not a join reply"); continue
                }
            } catch { lastError = error; continue }
            let grant: JoinGrant
            do { grant = try JoinExchange.accept(response, for: request, token: token) } catch { lastError = error; continue }
            try store.initialise(InitialState(
                clusterID: grant.clusterID, settings: grant.settings, node: grant.assignment, identity: identity,
                wireGuardKey: wireGuardKey, keyring: grant.keyring, authorityKey: grant.authority, authority: nil,
                certificate: grant.certificate, revocations: grant.revocations, members: grant.members))
            try config.saveSettings(to: store)
            return (grant.clusterID, grant.assignment)
        }
        throw refusal ?? lastError
    }

    static func refuseInitialised(_ store: StateStore) throws {
        if store.isInitialised {
            let id = (try? store.recordedClusterID()).flatMap { $0 } ?? "unknown"
            throw StateError.alreadyInitialised(directory: store.directory, clusterID: id)
        }
    }

    /// The configured advertise address, or `defaultAdvertiseAddress` of this network namespace.
    static func advertiseAddress(_ config: AgentConfig) throws -> IPAddress {
        if let a = config.advertiseAddress { return a }
        if let a = try UnderlayView.read(excluding: config.interface).defaultAdvertiseAddress() { return a }
        throw AgentError("no address to advertise (no up interface has a routable address): give --advertise-address IP")
    }

    /// IPv6's minimum link MTU (RFC 8200).
    static let ipv6MinimumMTU = 1280

    /// Runs the agent until SIGTERM/SIGINT or `wiremesh leave`. The interface, its peers and the
    /// routes stay when the agent stops, so traffic keeps flowing across restarts.
    ///
    /// `adoptInterface`: take over an existing WireGuard interface that is not this node's (see
    /// `LinkManager.init`); without it such an interface is refused.
    public static func runAgent(config: AgentConfig, logger: Logger, adoptInterface: Bool = false,
                                extraSeeds: [Endpoint] = []) async throws {
        ProcessMemory.limitArenas()
        let store = StateStore(directory: config.stateDirectory)
        // One agent per state directory, held until this process ends (however it ends).
        let lock = store.isInitialised ? try StateLock.acquire(directory: store.directory) : nil
        let state = try store.load()  // refuses a node that left
        // Before anything is counted: swift-metrics drops what is recorded before its bootstrap.
        let registry = config.metricsAddress.map { _ in AgentMetricsBackend.bootstrap() }
        var logger = logger
        logger[metadataKey: "node"] = "\(state.node.name)"
        try Preflight.checkPrivileges()
        try Preflight.checkAdvertiseAddressIsLocal(config)
        let ownKeys = Set([state.wireGuardKey.publicKey()] + [state.pendingWireGuardKey?.publicKey()].compactMap { $0 })
        let link = try LinkManager(interface: config.interface, ownKeys: ownKeys, adopt: adoptInterface,
                                   logDirectory: config.stateDirectory, logger: logger)
        if let old = try AgentConfig.savedLayer(store).interface, old != config.interface {
            // Otherwise the old interface keeps the WireGuard port, the cluster route and stale peers.
            try LinkManager.retire(old, ownKeys: ownKeys, logger: logger)
        }
        let advertise = try advertiseAddress(config)
        let mtu = config.effectiveMTU(underlayMTU: link.underlayMTU(for: advertise) ?? 1500)
        // Linux takes no IPv6 address on a link below IPv6's minimum MTU (its error would not say so).
        if state.node.podCIDRV6 != nil && mtu < Self.ipv6MinimumMTU {
            throw AgentError("the WireGuard interface MTU would be \(mtu), below IPv6's minimum of \(Self.ipv6MinimumMTU), and this cluster is dual-stack: give --mtu \(Self.ipv6MinimumMTU) or more (it needs an underlay MTU of at least \(Self.ipv6MinimumMTU + AgentConfig.wireGuardOverhead))")
        }
        try link.configureLink(mtu: mtu, addresses: state.node.overlayPrefixes)
        // Containers: the runtime's conflist and the egress table (ContainerNetwork.swift).
        let containers = ContainerNetworkService(
            network: ContainerNetwork(config: config, settings: state.settings, node: state.node, mtu: mtu),
            interval: .seconds(10), logger: logger)
        try containers.start()

        let agent = Agent(config: config, store: store, state: state, link: link, advertise: advertise,
                          interfaceIndex: try link.interfaceIndex(), mtu: mtu, logger: logger)
        // Private key, port and the fail-closed routes go in before any gossip. A node that cannot
        // program them would be announced alive while black-holed: stop here, saying why.
        await agent.reconcile()
        if let problem = await agent.deviceProblem { throw AgentError("cannot program interface \(config.interface): \(problem)") }
        do { try config.saveSettings(to: store) } catch { logger.warning("could not save this node's settings: \(error)") }

        let saved = MemberBlob.decode(try store.loadMembers()).filter { $0.record.name != state.node.name }
        let version = UInt64(Date().timeIntervalSince1970 * 1000)
        let gossip = GossipSettings(
            config: config.membership(nodeBlocks: try IPAM(clusterRange: state.settings.podRange,
                                                             nodePrefixLength: state.settings.nodePrefixLength).blockCount),
            identity: state.identity, record: await agent.localRecord(version: version), keyring: state.keyring,
            clusterID: Array(state.clusterID.utf8), bind: Endpoint(address: advertise, port: config.gossipPort),
            seeds: saved.map(\.record.gossipAddress) + extraSeeds, savedView: saved, trust: await agent.trust)
        let transport = try await GossipTransport.bind(gossip, logger: logger)
        await agent.setTransport(transport)
        // A saved or granted view is installed without events: program it now, not at the first resync.
        await agent.reconcile()
        await agent.followView()
        let control = try await ControlServer.bind(path: config.controlSocket) { request in await agent.handle(request) }
        let join = try await LineServer.bind(Endpoint(address: advertise, port: config.gossipPort)) { request in
            await agent.answer(request)
        }
        let loop = ReconcileLoop(agent: agent, events: transport.events, resync: .seconds(10))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: transport), .init(service: control), .init(service: join),
            .init(service: RotationScheduler(agent: agent)), .init(service: containers),
            .init(service: loop, successTerminationBehavior: .gracefullyShutdownGroup)]
        if let address = config.metricsAddress, let registry {
            let metrics = try await MetricsServer.bind(address, sources: .init(
                registry: registry, refresh: { await agent.refreshMetrics() },
                notReady: { await agent.notReady() }))
            services.append(.init(service: metrics))
            logger.info("serving metrics", metadata: ["address": "\(metrics.address)"])
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // A rotation may have happened while this node was down: ask the members it remembers.
        Task { await agent.syncClusterKeysAtStart() }
        logger.info("agent running", metadata: [
            "node": "\(state.node.name)", "interface": "\(config.interface)", "backend": "\(link.backend.kind)",
            "pod_cidr": "\(state.node.podCIDRs.map(\.description).joined(separator: ","))", "gossip": "\(advertise):\(config.gossipPort)", "mtu": "\(mtu)"])
        _ = try? SystemdNotify.notify("READY=1", environment: ProcessInfo.processInfo.environment)
        try await group.run()
        if await agent.isLeaving {
            // The leave has been gossiped: end this node's part in the mesh.
            link.tearDown(clusterRanges: state.settings.podRanges)
            ContainerNetwork.remove(directory: config.cniConfigDirectory, logger: logger)
            logger.info("left the cluster: interface and routes removed", metadata: ["interface": "\(config.interface)"])
        }
        withExtendedLifetime(lock) {}
    }
}

extension Agent {
    func setTransport(_ t: GossipTransport) {
        transport = t
        // Generations count within one core.
        view = nil
        planCache = nil
        lastSavedGeneration = nil
    }
    var isLeaving: Bool { leaving }
}

/// Reconciles on every membership event and every `resync`; ends a second after a leave.
struct ReconcileLoop: Service {
    let reconcile: @Sendable () async -> Void
    let isLeaving: @Sendable () async -> Bool
    /// Yields once when the node leaves (`Agent.leaves`).
    let leaves: AsyncStream<Void>
    let events: AsyncStream<MemberEvent>
    let resync: Duration
    /// Sees every membership event (one log line each).
    let onEvent: @Sendable (MemberEvent) -> Void

    /// One line per membership change, naming the member (`peer`); the node is in the logger's metadata.
    static func log(_ event: MemberEvent, _ logger: Logger) {
        let (level, what): (Logger.Level, String) = switch event.kind {
        case .joined: (.info, "member joined")
        case .updated: (.info, "member updated its record")
        case .alive: (.info, "member alive")
        case .suspect: (.notice, "member suspected")
        case .dead: (.notice, "member declared dead")
        case .left: (.notice, "member left")
        case .reaped: (.info, "member forgotten")
        case .evicted: (.notice, "member evicted by the cluster authority")
        }
        logger.log(level: level, "\(what)", metadata: ["peer": "\(event.member.name)", "state": "\(Agent.stateName(event.member.status))"])
    }

    init(agent: Agent, events: AsyncStream<MemberEvent>, resync: Duration) {
        let logger = agent.logger
        self.init(reconcile: { await agent.reconcile(); await agent.followView() }, isLeaving: { await agent.isLeaving }, leaves: agent.leaves,
                  events: events, resync: resync, onEvent: { Self.log($0, logger) })
    }

    init(reconcile: @escaping @Sendable () async -> Void, isLeaving: @escaping @Sendable () async -> Bool,
         leaves: AsyncStream<Void>, events: AsyncStream<MemberEvent>, resync: Duration,
         onEvent: @escaping @Sendable (MemberEvent) -> Void = { _ in }) {
        self.onEvent = onEvent
        self.reconcile = reconcile
        self.isLeaving = isLeaving
        self.leaves = leaves
        self.events = events
        self.resync = resync
    }

    /// The membership events ended while the agent was neither stopping nor leaving: the gossip socket
    /// closed under it. Thrown so the agent exits non-zero and its service manager restarts it.
    struct GossipStopped: Error, CustomStringConvertible {
        var description: String {
            "the gossip transport stopped unexpectedly (its socket closed); exiting so the service manager restarts the agent"
        }
    }

    func run() async throws {
        let (reconcile, isLeaving, leaves, events, resync, onEvent) = (self.reconcile, self.isLeaving, self.leaves, self.events, self.resync, self.onEvent)
        // Events only mark the view dirty: a buffer of one collapses a burst (a thousand members joining)
        // into one pending pass, instead of one full pass per event.
        let (dirty, markDirty) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let gossipStopped = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in events.cancelOnGracefulShutdown() {
                    onEvent(event)
                    markDirty.yield()
                }
                markDirty.finish()
                if Task.isCancelled || Task.isShuttingDownGracefully { return false }
                return !(await isLeaving())
            }
            group.addTask {
                for await _ in dirty {
                    try? await Task.sleep(for: .milliseconds(20))  // let the rest of a burst arrive
                    await reconcile()
                }
                return false
            }
            group.addTask {
                // Woken only by its own timer: an idle agent among a thousand members should sleep.
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: resync)
                    if Task.isCancelled { break }
                    await reconcile()
                }
                return false
            }
            group.addTask {
                for await _ in leaves {
                    try? await Task.sleep(for: .seconds(1))  // time for the leave to be gossiped
                    return false
                }
                // Cancelled (the stream never ends by itself): wait like the others do.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if gossipStopped { throw GossipStopped() }
    }
}
