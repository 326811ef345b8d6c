#if canImport(Glibc)
import Glibc
#endif
import IPNetwork
import LinePort
import Logging
import Membership
import NIOCore
import NIOPosix
import ServiceLifecycle
import WireMeshCrypto

/// Everything the gossip transport needs to run the local membership node.
public struct GossipSettings: Sendable {
    /// Protocol timings.
    public var config: MembershipConfig
    /// The node's long-term identity (signs its record).
    public var identity: SigningIdentity
    /// The node's record. If its gossip port is 0, the port the socket was bound to is filled in.
    public var record: NodeRecord
    /// Cluster keys (seal with the primary, open with any).
    public var keyring: Keyring
    /// The cluster id, bound into every datagram's authentication tag.
    public var clusterID: [UInt8]
    /// Address and port to bind the UDP socket to (port 0: the system picks one).
    public var bind: Endpoint
    /// Members to contact when the service starts.
    public var seeds: [Endpoint]
    /// A saved view to start from (records of members known before a restart).
    public var savedView: [SignedNodeRecord]
    /// Send a signed leave when the service stops. Off for the agent: a restart must not make every
    /// peer drop this node (and its pods' traffic); only `wiremesh leave` leaves.
    public var leaveOnShutdown: Bool
    /// What records must satisfy (the authority's certificates, evictions); nil: signatures only.
    public var trust: ClusterTrust?
    /// Verifications shared among the nodes of one process (`wiremesh-swarm`; nil for an agent).
    public var sharedVerifications: SharedVerifications?

    public init(config: MembershipConfig = .wiremeshDefaults, identity: SigningIdentity, record: NodeRecord, keyring: Keyring,
                clusterID: [UInt8], bind: Endpoint, seeds: [Endpoint] = [], savedView: [SignedNodeRecord] = [],
                leaveOnShutdown: Bool = false, trust: ClusterTrust? = nil) {
        self.leaveOnShutdown = leaveOnShutdown
        self.trust = trust
        self.config = config
        self.identity = identity
        self.record = record
        self.keyring = keyring
        self.clusterID = clusterID
        self.bind = bind
        self.seeds = seeds
        self.savedView = savedView
    }
}

/// Why the gossip transport could not start or act.
public enum GossipTransportError: Error, CustomStringConvertible {
    case bind(Endpoint, underlying: Error)
    case node(MembershipError)
    case notRunning

    public var description: String {
        switch self {
        case .bind(let e, let underlying):
            return "cannot bind the gossip socket to \(e): \(underlying) (is the port in use or the address not local?)"
        case .node(let e):
            return "cannot start the membership node: \(e)"
        case .notRunning:
            return "the gossip transport is not running (it was closed or failed to start)"
        }
    }
}

/// The UDP shell around the pure `MembershipNode`: one SwiftNIO datagram channel whose handler owns
/// the node and the cluster keys on the channel's event loop, opens incoming datagrams for the node,
/// executes its directives (seal and send payloads, schedule the next tick on the event loop,
/// publish member events to `events`) and feeds it the monotonic clock.
///
/// Bind first (`GossipTransport.bind`), then run it as a `Service`: `run()` joins the seeds, keeps
/// gossiping until cancelled or asked to shut down gracefully, then closes the socket — after a signed
/// leave notice if `GossipSettings.leaveOnShutdown` is set.
public final class GossipTransport: Service, Sendable {
    /// The address the socket is bound to (with the port the system chose if 0 was asked).
    public let localAddress: Endpoint
    /// Member events (joined, updated, suspect, alive, dead, left, reaped) in the order they happened.
    public let events: AsyncStream<MemberEvent>

    let channel: Channel
    let seeds: [Endpoint]
    let logger: Logger
    let leaveOnShutdown: Bool

    private init(channel: Channel, localAddress: Endpoint, events: AsyncStream<MemberEvent>, seeds: [Endpoint],
                 leaveOnShutdown: Bool, logger: Logger) {
        self.leaveOnShutdown = leaveOnShutdown
        self.channel = channel
        self.localAddress = localAddress
        self.events = events
        self.seeds = seeds
        self.logger = logger
    }

    /// Binds the UDP socket and creates the membership node (nothing is sent until `run()`).
    public static func bind(_ settings: GossipSettings, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            logger: Logger = Logger(label: "wiremesh.gossip")) async throws -> GossipTransport {
        let (stream, continuation) = AsyncStream<MemberEvent>.makeStream(bufferingPolicy: .bufferingNewest(65_536))
        let channel: Channel
        do {
            // Our own socket: the handler sends with sendto(2) itself, because NIO closes a datagram
            // channel on a send error other than EMSGSIZE/EHOSTUNREACH, and EPERM (a firewall drop
            // on this host) or ENETUNREACH (link down) would then stop the agent during a partition.
            let fd = try GossipSocket.bound(to: settings.bind)
            channel = try await DatagramBootstrap(group: group)
                .channelOption(.maxMessagesPerRead, value: 32)  // drain bursts in fewer wake-ups
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            GossipHandler(settings: settings, events: continuation, logger: logger, socket: fd))
                    }
                }
                .withBoundSocket(fd)
                .get()
        } catch {
            continuation.finish()
            throw GossipTransportError.bind(settings.bind, underlying: error)
        }
        // The handler created the node in channelActive (it needs the bound port); surface its error.
        let started: Result<Endpoint, MembershipError> = try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: GossipHandler.self).startResult
        }.get()
        switch started {
        case .success(let local):
            return GossipTransport(channel: channel, localAddress: local, events: stream, seeds: settings.seeds,
                                   leaveOnShutdown: settings.leaveOnShutdown, logger: logger)
        case .failure(let error):
            try? await channel.close()
            continuation.finish()
            throw GossipTransportError.node(error)
        }
    }

    /// Runs `body` with the handler on the channel's event loop.
    func withHandler<T: Sendable>(_ body: @escaping @Sendable (GossipHandler) throws -> T) async throws -> T {
        let channel = self.channel
        do {
            return try await channel.eventLoop.submit {
                try body(try channel.pipeline.syncOperations.handler(type: GossipHandler.self))
            }.get()
        } catch is ChannelPipelineError {
            throw GossipTransportError.notRunning
        }
    }

    /// Joins through the seeds, gossips until cancellation or graceful shutdown, then (if configured) leaves and closes.
    public func run() async throws {
        let seeds = self.seeds
        try await withHandler { $0.join(seeds: seeds) }
        logger.info("gossip running", metadata: ["address": "\(localAddress)", "seeds": "\(seeds)"])
        await cancelWhenGracefulShutdown {
            // Park until cancelled; the channel does the work.
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(3600))
            }
        }
        if leaveOnShutdown { try? await withHandler { $0.leave() } }
        try? await channel.close()
        logger.info("gossip stopped", metadata: ["address": "\(localAddress)"])
    }

    /// Every member the node knows (alive, suspect, dead or left, not yet reaped).
    public func members() async throws -> [Member] {
        try await withHandler { $0.node?.members ?? [] }
    }

    /// The view with its generation, or nil when it is still at `generation` (nothing is copied:
    /// the 10 s resync among a thousand members mostly finds it unchanged).
    public func view(unlessAt generation: UInt64?) async throws -> MemberView? {
        try await withHandler { handler in
            guard let node = handler.node else { return .empty }
            if node.viewGeneration == generation { return nil }
            return MemberView(generation: node.viewGeneration, members: node.members)
        }
    }

    /// The node's own signed record.
    public func localRecord() async throws -> SignedNodeRecord {
        try await withHandler {
            guard let node = $0.node else { throw GossipTransportError.notRunning }
            return node.localRecord
        }
    }

    /// Counters of traffic and refused datagrams and messages.
    public func counters() async throws -> GossipCounters {
        try await withHandler { GossipCounters(seal: $0.seal.counters, membership: $0.node?.counters ?? MembershipCounters()) }
    }

    /// Changes the local record (new version, re-signed) and gossips it.
    public func updateLocalRecord(_ change: @escaping @Sendable (inout NodeRecord) -> Void) async throws {
        try await withHandler { try $0.update(change) }
    }

    /// Replaces what records must satisfy (a newer revocation list): evicted members leave the view.
    public func setTrust(_ trust: ClusterTrust) async throws {
        try await withHandler { handler in
            guard handler.node != nil else { return }
            handler.execute(handler.node!.setTrust(trust, now: GossipHandler.now()))
        }
    }

    /// Answers a stream probe from the line port (see `GossipHandler.answerStreamProbe`).
    public func answerStreamProbe(_ envelope: PushPullEnvelope) async -> LineReply {
        (try? await withHandler { $0.answerStreamProbe(envelope) }) ?? .refused(.streamProbe("this member's gossip is not running"))
    }

    /// Answers a push/pull request from the line port (see `GossipHandler.answerPushPull`).
    public func answerPushPull(_ envelope: PushPullEnvelope) async -> LineReply {
        (try? await withHandler { $0.answerPushPull(envelope) }) ?? .refused(.pushPull("this member's gossip is not running"))
    }

    /// Installs a new keyring (cluster key rotation).
    public func setKeyring(_ keyring: Keyring) async throws {
        try await withHandler { $0.seal.keyring = keyring }
    }

    /// Installs `keyring` and, if they changed, advertises `tags` in the local record. Calls may reach
    /// the event loop out of order: one with a `sequence` at or below the last applied one is ignored.
    public func setClusterKeys(_ keyring: Keyring, tags: [ClusterKeyTag], sequence: UInt64) async throws {
        try await withHandler { handler in
            guard sequence > handler.clusterKeysSequence, handler.node != nil else { return }
            handler.clusterKeysSequence = sequence
            handler.seal.keyring = keyring
            if handler.node!.localRecord.record.clusterKeys != tags { try handler.update { $0.clusterKeys = tags } }
        }
    }
}

/// Owns the `MembershipNode` on the channel's event loop; every access happens on that loop.
final class GossipHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let settings: GossipSettings
    let eventsContinuation: AsyncStream<MemberEvent>.Continuation
    let logger: Logger
    var node: MembershipNode?
    /// Seals what the node sends and opens what it receives (the node holds no key).
    var seal: DatagramSeal
    var startResult: Result<Endpoint, MembershipError> = .failure(.invalidConfig("the gossip channel never became active"))
    var context: ChannelHandlerContext?
    var timer: Scheduled<Void>?
    var timerAt: Instant?
    var sendErrors = 0
    /// The channel's socket, for `sendto` (see `GossipTransport.bind`).
    let socket: CInt
    /// Last `setClusterKeys` sequence applied.
    var clusterKeysSequence: UInt64 = 0
    /// Nonces of push/pull requests answered lately: a captured request is not answered twice.
    var pushPullReplays = ReplayFilter(window: .seconds(60), capacity: 4096)
    /// Push/pulls whose reply never came or did not open.
    var pushPullFailures = 0
    /// Nonces of stream probes answered lately.
    var streamProbeReplays = ReplayFilter(window: .seconds(60), capacity: 4096)

    init(settings: GossipSettings, events: AsyncStream<MemberEvent>.Continuation, logger: Logger, socket: CInt) {
        self.settings = settings
        self.seal = DatagramSeal(keyring: settings.keyring, clusterID: settings.clusterID, maxDatagram: settings.config.maxDatagram)
        self.eventsContinuation = events
        self.logger = logger
        self.socket = socket
    }

    /// The monotonic clock as the core's `Instant`.
    static func now() -> Instant {
        Instant(nanoseconds: Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        var record = settings.record
        guard let bound = context.channel.localAddress.flatMap(Endpoint.init(socketAddress:)) else {
            startResult = .failure(.invalidConfig("the gossip socket has no local address"))
            context.fireChannelActive()
            return
        }
        if record.gossipAddress.port == 0 {
            record.gossipAddress = Endpoint(address: record.gossipAddress.address, port: bound.port)
        }
        do {
            var seed: UInt64 = 0
            for b in secureRandomBytes(8) { seed = seed << 8 | UInt64(b) }
            var config = settings.config
            config.sealOverhead = DatagramSeal.overhead
            var node = try MembershipNode(config: config, identity: settings.identity, record: record, seed: seed, now: Self.now())
            _ = node.setTrust(settings.trust, now: Self.now())
            node.sharedVerifications = settings.sharedVerifications
            // Saved records are checked again like any other: a file is no more trusted than the network.
            let saved = settings.savedView.filter { $0.verify() && settings.trust?.refusal(for: $0.record) == nil }
            if saved.count < settings.savedView.count {
                logger.warning("dropped saved member records that no longer verify", metadata: ["dropped": "\(settings.savedView.count - saved.count)"])
            }
            if !saved.isEmpty { node.seed(with: saved, now: Self.now()) }
            self.node = node
            startResult = .success(bound)
        } catch {
            startResult = .failure(error)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        eventsContinuation.finish()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard node != nil, let from = Endpoint(socketAddress: envelope.remoteAddress) else { return }
        let now = Self.now()
        guard let opened = seal.open(Array(envelope.data.readableBytesView), now: now) else { return }
        let directives = node!.receive(payload: opened.payload, from: from, now: now)
        execute(directives)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A UDP socket reports ICMP errors of earlier sends (e.g. connection refused); they are not fatal.
        sendErrors += 1
        logger.debug("gossip socket error", metadata: ["error": "\(error)"])
    }

    func join(seeds: [Endpoint]) {
        guard node != nil else { return }
        execute(node!.join(seeds: seeds, now: Self.now()))
        // The core asks for its first wake-up only when it has something to do; make sure it ticks.
        execute(node!.tick(now: Self.now()), fromTick: true)
    }

    func leave() {
        guard node != nil else { return }
        execute(node!.leave(now: Self.now()))
    }

    func update(_ change: (inout NodeRecord) -> Void) throws {
        guard node != nil else { throw GossipTransportError.notRunning }
        execute(try node!.updateLocalRecord(now: Self.now(), change))
    }

    func tick() {
        timer = nil
        timerAt = nil
        guard node != nil else { return }
        execute(node!.tick(now: Self.now()), fromTick: true)
    }

    /// Carries out the core's directives: datagrams go out (flushed once), the earliest wake-up is
    /// scheduled on the event loop, view changes are published.
    func execute(_ directives: [Directive], fromTick: Bool = false) {
        guard let context else { return }
        for d in directives {
            switch d {
            case .send(let payload, let to):
                guard let address = try? SocketAddress(ipAddress: to.address.description, port: Int(to.port)) else { continue }
                let datagram = seal.seal(payload)
                // A lost datagram is what the protocol expects anyway: count the error, never close.
                if let err = GossipSocket.send(datagram, on: socket, to: address) {
                    sendErrors += 1
                    if sendErrors == 1 || sendErrors % 1000 == 0 {
                        logger.notice("gossip send failed", metadata: [
                            "to": "\(to)", "error": "\(String(cString: strerror(err)))", "send_errors": "\(sendErrors)"])
                    }
                }
            case .wakeUp(let at):
                schedule(at: at, context: context)
            case .changed(let event):
                eventsContinuation.yield(event)
            case .pushPull(let payload, let to):
                startPushPull(payload, to: to, context: context)
            case .pushPullReply:
                break   // only `answerPushPull` asks for one, and takes it from the directives itself
            case .streamProbe(let payload, let to):
                startStreamProbe(payload, to: to, context: context)
            case .streamProbeReply:
                break   // only `answerStreamProbe` asks for one, and takes it from the directives itself
            }
        }
    }

    /// Sends the core's push/pull request over the line port (TCP on the peer's gossip port) off the
    /// loop, and hands the reply (or the failure) back to the core on the loop.
    func startPushPull(_ payload: [UInt8], to peer: Endpoint, context: ChannelHandlerContext) {
        let sealed = PushPullSeal.seal(payload, reply: false, keyring: seal.keyring, clusterID: settings.clusterID)
        let request = LineRequest.pushPull(PushPullEnvelope(from: node?.localRecord.record.gossipAddress.description, sealed: sealed))
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let timeout = settings.config.pushPullTimeout
        Task {
            let reply = try? await LineClient.exchange(request, with: peer, timeout: timeout)
            loop.execute { loopBound.value.finishPushPull(reply, from: peer) }
        }
    }

    /// The reply to our push/pull request to `peer` (nil: unreachable, silent or garbled).
    func finishPushPull(_ reply: LineReply?, from peer: Endpoint) {
        guard node != nil else { return }
        let now = Self.now()
        guard case .pushPull(let envelope)? = reply, let sealed = envelope.sealedBytes,
              let payload = PushPullSeal.open(sealed, reply: true, keyring: seal.keyring, clusterID: settings.clusterID,
                                              maxPayload: settings.config.pushPullMaxBytes) else {
            pushPullFailures += 1
            execute(node!.pushPullFailed(to: peer, now: now))
            return
        }
        execute(node!.receivePushPull(reply: payload, from: peer, now: now))
    }

    /// Answers a push/pull request that came in on the line port: opened with the cluster keys, never
    /// a replay, then the core applies it and gives its own state, sealed back.
    func answerPushPull(_ envelope: PushPullEnvelope) -> LineReply {
        guard node != nil else { return .refused(.pushPull("this member's gossip is not running")) }
        let now = Self.now()
        guard let sealed = envelope.sealedBytes, let from = envelope.from.flatMap({ try? Endpoint($0) }) else {
            return .refused(.pushPull("not a push/pull request (sealed payload or sender endpoint missing, garbled or too long)"))
        }
        guard let payload = PushPullSeal.open(sealed, reply: false, keyring: seal.keyring, clusterID: settings.clusterID,
                                              maxPayload: settings.config.pushPullMaxBytes) else {
            return .refused(.pushPull("not sealed with a cluster key this member holds"))
        }
        // Checked after the tag: only authentic requests take a place in the filter.
        guard pushPullReplays.admit(nonce: sealed.dropFirst().prefix(ClusterKey.nonceLength), now: now) else {
            return .refused(.pushPull("a request seen before (replayed)"))
        }
        var directives = node!.receivePushPull(request: payload, from: from, now: now)
        guard let i = directives.firstIndex(where: { if case .pushPullReply = $0 { true } else { false } }),
              case .pushPullReply(let reply, _) = directives.remove(at: i) else {
            execute(directives)
            return .refused(.pushPull("not taken: push/pull is off on this member, or over its rate; try later"))
        }
        execute(directives)
        return .pushPull(PushPullEnvelope(from: nil, sealed: PushPullSeal.seal(reply, reply: true, keyring: seal.keyring,
                                                                                clusterID: settings.clusterID)))
    }

    /// Sends the core's stream probe over the line port off the loop (given up after a probe
    /// interval: the probe's period is over by then) and hands an opened reply to the core. A failed
    /// stream needs no report: the probe ends on its own.
    func startStreamProbe(_ payload: [UInt8], to peer: Endpoint, context: ChannelHandlerContext) {
        let sealed = StreamProbeSeal.seal(payload, reply: false, keyring: seal.keyring, clusterID: settings.clusterID)
        let request = LineRequest.streamProbe(PushPullEnvelope(from: node?.localRecord.record.gossipAddress.description, sealed: sealed))
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let timeout = settings.config.probeInterval
        Task {
            let reply = try? await LineClient.exchange(request, with: peer, timeout: timeout)
            loop.execute { loopBound.value.finishStreamProbe(reply, from: peer) }
        }
    }

    func finishStreamProbe(_ reply: LineReply?, from peer: Endpoint) {
        guard node != nil, case .streamProbe(let envelope)? = reply, let sealed = envelope.sealedBytes,
              let payload = StreamProbeSeal.open(sealed, reply: true, keyring: seal.keyring, clusterID: settings.clusterID) else { return }
        execute(node!.receiveStreamProbe(reply: payload, from: peer, now: Self.now()))
    }

    /// Answers a stream probe that came in on the line port: opened with the cluster keys, never a
    /// replay; the core takes only one ping of this member, at a bounded rate, and gives its ack.
    func answerStreamProbe(_ envelope: PushPullEnvelope) -> LineReply {
        guard node != nil else { return .refused(.streamProbe("this member's gossip is not running")) }
        let now = Self.now()
        guard let sealed = envelope.sealedBytes, let from = envelope.from.flatMap({ try? Endpoint($0) }),
              let payload = StreamProbeSeal.open(sealed, reply: false, keyring: seal.keyring, clusterID: settings.clusterID) else {
            return .refused(.streamProbe("not a stream probe sealed with a cluster key this member holds, or no sender endpoint"))
        }
        guard streamProbeReplays.admit(nonce: sealed.dropFirst().prefix(ClusterKey.nonceLength), now: now) else {
            return .refused(.streamProbe("a probe seen before (replayed)"))
        }
        var directives = node!.receiveStreamProbe(request: payload, from: from, now: now)
        guard let i = directives.firstIndex(where: { if case .streamProbeReply = $0 { true } else { false } }),
              case .streamProbeReply(let ack, _) = directives.remove(at: i) else {
            execute(directives)
            return .refused(.streamProbe("not taken: not one ping of this member, or over its rate; try later"))
        }
        execute(directives)
        return .streamProbe(PushPullEnvelope(from: nil, sealed: StreamProbeSeal.seal(ack, reply: true, keyring: seal.keyring,
                                                                                      clusterID: settings.clusterID)))
    }

    func schedule(at: Instant, context: ChannelHandlerContext) {
        if let current = timerAt, current <= at, timer != nil { return }
        timer?.cancel()
        // Never spin: a wake-up in the past runs after a millisecond.
        let earliest = Self.now() + .milliseconds(1)
        let when = max(at, earliest)
        timerAt = when
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, when.nanoseconds)))) {
            loopBound.value.tick()
        }
    }
}

extension Endpoint {
    /// The endpoint of an IP socket address (nil for unix sockets).
    init?(socketAddress: SocketAddress) {
        guard let ip = socketAddress.ipAddress, let port = socketAddress.port, let address = try? IPAddress(ip),
              let p = UInt16(exactly: port) else { return nil }
        self.init(address: address, port: p)
    }
}

/// The gossip UDP socket, outside NIO's write path (see `GossipTransport.bind`).
enum GossipSocket {
    /// socket(2) + bind(2), non-blocking, close-on-exec. No SO_REUSEADDR: UDP has no TIME_WAIT to
    /// wait out, and with it on both sides a second socket binds the same port and takes its datagrams.
    static func bound(to endpoint: Endpoint) throws -> CInt {
        let address = try SocketAddress(ipAddress: endpoint.address.description, port: Int(endpoint.port))
        let family = endpoint.address.isIPv4 ? AF_INET : AF_INET6
        let fd = Glibc.socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        let rc = address.withSockAddr { sa, len -> CInt in Glibc.bind(fd, sa, socklen_t(len)) }
        guard rc == 0 else {
            let err = errno
            close(fd)
            throw IOError(errnoCode: err, reason: "bind")
        }
        setReceiveBuffer(fd, bytes: receiveBufferBytes)
        return fd
    }

    /// Receive buffer asked for. A joining member's full-state exchange arrives as a burst of a few
    /// hundred datagrams at 1000 members; the default (~208 KiB) drops part of it.
    static let receiveBufferBytes: CInt = 4 << 20

    /// SO_RCVBUFFORCE (the agent has CAP_NET_ADMIN; it passes net.core.rmem_max), else SO_RCVBUF
    /// (capped by rmem_max). Best effort: a smaller buffer only means more loss in bursts.
    static func setReceiveBuffer(_ fd: CInt, bytes: CInt) {
        var size = bytes
        let len = socklen_t(MemoryLayout<CInt>.size)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, len) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, len)
        }
    }

    /// The socket's receive buffer as the kernel reports it (twice what was set, for bookkeeping).
    static func receiveBuffer(_ fd: CInt) -> CInt {
        var size: CInt = 0
        var len = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &len) == 0 ? size : -1
    }

    /// sendto(2) of one datagram; the errno when it failed (EAGAIN included: the datagram is dropped).
    static func send(_ datagram: [UInt8], on fd: CInt, to address: SocketAddress) -> CInt? {
        let sent = datagram.withUnsafeBytes { bytes in
            address.withSockAddr { sa, len in Glibc.sendto(fd, bytes.baseAddress, bytes.count, 0, sa, socklen_t(len)) }
        }
        return sent < 0 ? errno : nil
    }
}

/// What a transport counted: sealed datagrams (and those dropped before the core, e.g. under a
/// cluster key this node does not hold) and the core's payloads, messages and refusals.
public struct GossipCounters: Sendable, Equatable {
    /// Datagrams sealed and opened, and those refused before the core.
    public var seal: SealCounters
    /// The core's payloads, messages and refusals.
    public var membership: MembershipCounters
}

/// The members a transport's core knows, and the generation they were read at.
public struct MemberView: Sendable {
    public var generation: UInt64
    public var members: [Member]

    /// No members (generation 0 always holds none: a core counts from its first change).
    public static let empty = MemberView(generation: 0, members: [])
}
