import IPNetwork
import Membership
import WireMeshCrypto

/// What a simulation run looks like: cluster size, protocol configuration, network and seed.
public struct SimulationOptions: Sendable {
    /// Number of simulated nodes.
    public var nodes: Int
    /// The protocol configuration every node runs.
    public var membership: MembershipConfig
    /// Delay and loss of the simulated network.
    public var network: NetworkModel
    /// The seed of everything random: keys, network, protocol generators.
    public var seed: UInt64
    /// Start from a converged view (every node seeded with every record) instead of joining through seeds.
    public var startConverged: Bool
    /// How many of the first nodes serve as join seeds for nodes that start (or restart) empty.
    public var seedNodes: Int
    /// Datagrams a stalled node buffers (its socket receive queue); further ones are dropped.
    public var backlogLimit: Int

    /// A run of `nodes` nodes with the given configuration.
    public init(nodes: Int, membership: MembershipConfig = .wiremeshDefaults, network: NetworkModel = .lan,
                seed: UInt64 = 1, startConverged: Bool = true, seedNodes: Int = 3, backlogLimit: Int = 512) {
        self.nodes = nodes
        self.membership = membership
        self.network = network
        self.seed = seed
        self.startConverged = startConverged
        self.seedNodes = seedNodes
        self.backlogLimit = backlogLimit
    }
}

/// Bytes and datagrams one simulated node sent and received, counting the 28-byte UDP/IPv4 header
/// on top of each datagram (which already includes the version byte, nonce and AEAD tag).
public struct NodeTraffic: Sendable, Equatable {
    /// Bytes the node put on the wire (whether or not the network then lost them).
    public var bytesSent = 0
    /// Bytes that reached the node while it was running (also while stalled).
    public var bytesReceived = 0
    /// Datagrams the node sent.
    public var datagramsSent = 0
    /// Datagrams that reached the node.
    public var datagramsReceived = 0
    /// Datagrams addressed to this node that the network lost (loss, partition, one-way block).
    public var datagramsLostInbound = 0
    /// Datagrams dropped because this node was stalled with a full receive queue.
    public var datagramsOverflowed = 0
    /// Bytes of push/pull streams (payloads and TCP/IP overhead, both directions' share this node
    /// sent), also counted in `bytesSent`.
    public var streamBytesSent = 0
    /// Push/pull streams this node opened.
    public var streamsOpened = 0
    /// Bytes of stream probes (as `streamBytesSent`), also counted in `bytesSent`.
    public var probeStreamBytesSent = 0
    /// Stream probes this node opened.
    public var probeStreamsOpened = 0
}

/// Per-datagram header bytes on the wire that the core does not see: IPv4 (20) + UDP (8).
public let udpIPv4HeaderBytes = 28

/// A deterministic, virtual-time network of `MembershipNode`s in one process.
///
/// Events (datagram deliveries, node wake-ups, stall ends) sit in one queue ordered by (time,
/// sequence); the simulation pops them in order and feeds them to the nodes, then turns the nodes'
/// directives into new events. Nothing reads a real clock, and all randomness comes from `seed`, so a
/// seed and a scenario always produce the same trace (`traceHash`), which covers every payload's
/// bytes. Like the UDP transport, the simulation seals what the cores emit and opens what they
/// receive (`DatagramSeal`); sealed bytes differ between runs (random nonces), their sizes do not.
public final class Simulation {
    enum Event {
        case deliver(to: Int32, from: Int32, datagram: [UInt8])
        case wake(node: Int32, generation: UInt32)
        case stallEnd(node: Int32, generation: UInt32)
        /// A push/pull request or reply (or a stream probe or its reply) arriving over a (simulated) TCP stream.
        case stream(to: Int32, from: Int32, sealed: [UInt8], reply: Bool, probe: Bool)
    }

    struct Host {
        var up = true
        var left = false
        var generation: UInt32 = 0
        var wakeAt: Int64 = .max
        var stalledUntil: Int64 = .min
        var backlog: [(from: Int32, datagram: [UInt8])] = []
        /// The record the node (re)starts with when it has no saved state.
        var initialRecord: NodeRecord
        /// State saved at the last crash, for a restart with saved state.
        var savedLocal: SignedNodeRecord?
        var savedView: [SignedNodeRecord] = []
        var burstBad = false
        var partitionGroup: Int = 0
        var inboundBlocked = false
        var outboundBlocked = false
    }

    /// The options the simulation was created with.
    public let options: SimulationOptions
    /// Current virtual time.
    public private(set) var now: Instant = .zero
    /// The cluster id every node seals with.
    public let clusterID: [UInt8]
    /// The cluster keyring every node (and the adversary) holds.
    public let keyring: Keyring
    /// Node names, by index.
    public let names: [String]
    /// Gossip endpoints (virtual 10.x.y.z:7946), by index.
    public let endpoints: [Endpoint]
    /// The identity public keys, by index.
    public var identityKeys: [IdentityPublicKey] { identities.map(\.publicKey) }

    var rng: SimRandom
    var queue = EventQueue<Event>()
    var cores: [MembershipNode?]
    /// Each node's sealing of datagrams (kept across restarts, like its counters).
    var seals: [DatagramSeal]
    var hosts: [Host]
    let identities: [SigningIdentity]
    let endpointIndex: [Endpoint: Int32]
    let nameIndex: [String: Int32]
    var blockedLinks: Set<UInt64> = []

    /// Traffic per node since the start.
    public private(set) var traffic: [NodeTraffic]
    /// Datagrams sent to an endpoint no simulated node owns.
    public private(set) var unroutable = 0
    /// Wake-ups a node requested at or before the instant it was ticked (clamped to 1 ms later).
    public private(set) var immediateWakeups = 0
    /// Events processed so far.
    public private(set) var eventsProcessed = 0

    // Observation state.
    var trace = TraceHash()
    let n: Int
    /// Version and status rank (0 alive, 1 suspect, 2 dead, 3 left, 254 reaped, 255 unknown) of
    /// subject s in observer o's view, at o * n + s.
    var viewVersion: [UInt64]
    var viewRank: [UInt8]
    var recordWatches: [RecordWatch] = []
    var deathWatches: [DeathWatch] = []
    /// Healthy (up, reachable, not stalled) nodes that some node declared dead.
    public internal(set) var healthyDeclaredDead: Set<Int> = []
    /// Number of (observer, healthy subject) dead declarations.
    public internal(set) var healthyDeadDeclarations = 0
    /// Nodes that some node believes left although they never left.
    public internal(set) var falselyLeft: Set<Int> = []
    /// Times an observer's view of a subject went to a lower record version (must stay 0).
    public internal(set) var versionRegressions = 0
    /// Every member event, if `recordEvents` is on (for tests).
    public internal(set) var eventLog: [(at: Instant, observer: Int, event: MemberEvent)] = []
    /// Keep every member event in `eventLog`.
    public var recordEvents = false
    /// Keep every datagram sent in `captured` (for replay attacks).
    public var captureTraffic = false
    /// Datagrams captured while `captureTraffic` was on.
    public private(set) var captured: [CapturedDatagram] = []
    /// Count bytes sent by message kind in `breakdown` (costs a second decode of every payload).
    public var countByKind = false
    /// Bytes sent by kind while `countByKind` was on, all nodes together.
    public internal(set) var breakdown = TrafficBreakdown()

    /// Builds the nodes (deterministic keys from the seed) and, if `startConverged`, seeds every node
    /// with every record; otherwise every node joins through the first `seedNodes` nodes.
    public init(_ options: SimulationOptions) throws {
        precondition(options.nodes >= 1 && options.nodes < 1 << 22, "between 1 and 4M nodes")
        self.options = options
        self.n = options.nodes
        var rng = SimRandom(seed: options.seed)
        clusterID = Array("sim-cluster".utf8)
        keyring = Keyring(primary: ClusterKey(key: try Key(bytes: rng.bytes(32))))
        var names: [String] = [], endpoints: [Endpoint] = [], identities: [SigningIdentity] = [], hosts: [Host] = []
        var endpointIndex: [Endpoint: Int32] = [:], nameIndex: [String: Int32] = [:]
        for i in 0..<options.nodes {
            let name = "node-\(i)"
            let a = UInt32(i + 1)
            let ip = IPAddress.v4(0x0A00_0000 | a)
            let gossip = Endpoint(address: ip, port: 7946)
            let identity = SigningIdentity(seed: try Key(bytes: rng.bytes(32)))
            let pod = try IPPrefix(address: .v4(0x6400_0000 &+ (UInt32(i) << 8)), length: 24)
            let record = NodeRecord(name: name, identity: identity.publicKey, version: 1,
                                    wireguardKey: try Key(bytes: rng.bytes(32)),
                                    wireguardEndpoints: [Endpoint(address: ip, port: 51820)], gossipAddress: gossip,
                                    podCIDRs: [pod], labels: ["zone": "z\(i % 3)"])
            names.append(name)
            endpoints.append(gossip)
            identities.append(identity)
            endpointIndex[gossip] = Int32(i)
            nameIndex[name] = Int32(i)
            hosts.append(Host(initialRecord: record))
        }
        self.names = names
        self.endpoints = endpoints
        self.identities = identities
        self.endpointIndex = endpointIndex
        self.nameIndex = nameIndex
        self.hosts = hosts
        self.traffic = Array(repeating: NodeTraffic(), count: options.nodes)
        self.viewVersion = Array(repeating: 0, count: options.nodes * options.nodes)
        self.viewRank = Array(repeating: 255, count: options.nodes * options.nodes)
        self.cores = []
        self.cores.reserveCapacity(options.nodes)
        self.seals = Array(repeating: DatagramSeal(keyring: keyring, clusterID: clusterID, maxDatagram: options.membership.maxDatagram),
                           count: options.nodes)
        self.rng = rng
        for i in 0..<options.nodes {
            cores.append(try makeCore(i, record: hosts[i].initialRecord))
        }
        if options.startConverged {
            var signed: [SignedNodeRecord] = []
            for i in 0..<n { signed.append(cores[i]!.localRecord) }
            for i in 0..<n {
                cores[i]!.seed(with: signed, now: now)
                for s in 0..<n where s != i {
                    viewVersion[i * n + s] = 1
                    viewRank[i * n + s] = 0
                }
            }
            for i in 0..<n { tick(Int32(i)) }
        } else {
            for i in 0..<n { tick(Int32(i)) }
            for i in 0..<n {
                let directives = cores[i]!.join(seeds: seedEndpoints(excluding: i), now: now)
                execute(Int32(i), directives, fromTick: false)
            }
        }
    }

    func makeCore(_ i: Int, record: NodeRecord) throws -> MembershipNode {
        var config = options.membership
        config.sealOverhead = DatagramSeal.overhead
        return try MembershipNode(config: config, identity: identities[i], record: record, seed: rng.next(), now: now)
    }

    func seedEndpoints(excluding i: Int) -> [Endpoint] {
        (0..<min(options.seedNodes, n)).filter { $0 != i }.map { endpoints[$0] }
    }

    // MARK: - Running

    /// Processes every event up to and including `deadline`, then sets the clock to it.
    public func run(until deadline: Instant) {
        let limit = deadline.nanoseconds
        while let t = queue.nextTime, t <= limit {
            step()
        }
        if now.nanoseconds < limit { now = deadline }
    }

    /// Runs for `duration` of virtual time.
    public func run(for duration: Duration) {
        run(until: now + duration)
    }

    /// Runs until `condition` holds (checked every `checkEvery`) or `timeout` passes; returns the
    /// virtual time at which it first held, or nil on timeout.
    @discardableResult
    public func run(for timeout: Duration, checkEvery: Duration = .milliseconds(100),
                    until condition: (Simulation) -> Bool) -> Instant? {
        let deadline = now + timeout
        if condition(self) { return now }
        while now < deadline {
            let next = min(now + checkEvery, deadline)
            run(until: next)
            if condition(self) { return now }
        }
        return nil
    }

    func step() {
        guard let entry = queue.pop() else { return }
        now = Instant(nanoseconds: entry.time)
        eventsProcessed += 1
        switch entry.payload {
        case .deliver(let to, let from, let datagram):
            let t = Int(to)
            guard hosts[t].up else { return }
            traffic[t].bytesReceived += datagram.count + udpIPv4HeaderBytes
            traffic[t].datagramsReceived += 1
            if hosts[t].stalledUntil > entry.time {
                if hosts[t].backlog.count < options.backlogLimit {
                    hosts[t].backlog.append((from, datagram))
                } else {
                    traffic[t].datagramsOverflowed += 1
                }
                return
            }
            trace.mix(1, UInt64(entry.time), UInt64(to), UInt64(from), UInt64(datagram.count))
            deliver(t, datagram, from: from)
        case .wake(let node, let generation):
            let i = Int(node)
            guard hosts[i].up, hosts[i].generation == generation, hosts[i].wakeAt == entry.time else { return }
            hosts[i].wakeAt = .max
            if hosts[i].stalledUntil > entry.time { return }   // the stall end ticks
            tick(node)
        case .stallEnd(let node, let generation):
            let i = Int(node)
            guard hosts[i].up, hosts[i].generation == generation, hosts[i].stalledUntil == entry.time else { return }
            let backlog = hosts[i].backlog
            hosts[i].backlog = []
            for (from, datagram) in backlog {
                trace.mix(1, UInt64(entry.time), UInt64(node), UInt64(from), UInt64(datagram.count))
                deliver(i, datagram, from: from)
            }
            tick(node)
        case .stream(let to, let from, let sealed, let reply, let probe):
            let t = Int(to)
            // A crashed peer or a partition in between resets the stream: the opener gives up on
            // its timeout. A stalled one reads it when it runs again.
            guard hosts[t].up, reachable(Int(from), t) else { return }
            if hosts[t].stalledUntil > entry.time {
                queue.push(at: hosts[t].stalledUntil, entry.payload)
                return
            }
            traffic[t].bytesReceived += sealed.count
            trace.mix(10, UInt64(entry.time), UInt64(to), UInt64(from), UInt64(sealed.count), reply ? 1 : 0)
            if probe {
                guard let payload = StreamProbeSeal.open(sealed, reply: reply, keyring: keyring, clusterID: clusterID) else { return }
                let directives = reply
                    ? cores[t]!.receiveStreamProbe(reply: payload, from: endpoints[Int(from)], now: now)
                    : cores[t]!.receiveStreamProbe(request: payload, from: endpoints[Int(from)], now: now)
                execute(to, directives, fromTick: false)
                return
            }
            guard let payload = PushPullSeal.open(sealed, reply: reply, keyring: keyring, clusterID: clusterID,
                                                  maxPayload: options.membership.pushPullMaxBytes) else { return }
            let directives = reply
                ? cores[t]!.receivePushPull(reply: payload, from: endpoints[Int(from)], now: now)
                : cores[t]!.receivePushPull(request: payload, from: endpoints[Int(from)], now: now)
            execute(to, directives, fromTick: false)
        }
    }

    /// Opens a datagram that reached running node `i` and hands its payload to the core.
    func deliver(_ i: Int, _ datagram: [UInt8], from: Int32) {
        guard let opened = seals[i].open(datagram, now: now) else {
            trace.mix(9, UInt64(i))
            return
        }
        let directives = cores[i]!.receive(payload: opened.payload, from: endpoints[Int(from)], now: now)
        execute(Int32(i), directives, fromTick: false)
    }

    func tick(_ node: Int32) {
        let i = Int(node)
        hosts[i].wakeAt = .max
        trace.mix(2, UInt64(now.nanoseconds), UInt64(node))
        let directives = cores[i]!.tick(now: now)
        execute(node, directives, fromTick: true)
    }

    func execute(_ node: Int32, _ directives: [Directive], fromTick: Bool) {
        let i = Int(node)
        for d in directives {
            switch d {
            case .send(let payload, let to):
                trace.mix(bytes: payload)
                let sealed = seals[i].seal(payload)
                if countByKind { breakdown.count(payload: payload, overhead: sealed.count - payload.count + udpIPv4HeaderBytes) }
                transmit(from: node, to: to, datagram: sealed)
            case .wakeUp(let at):
                var t = at.nanoseconds
                if fromTick, t <= now.nanoseconds {
                    immediateWakeups += 1
                    t = now.nanoseconds + 1_000_000
                }
                t = max(t, now.nanoseconds)
                if t < hosts[i].wakeAt {
                    hosts[i].wakeAt = t
                    queue.push(at: t, .wake(node: node, generation: hosts[i].generation))
                }
            case .changed(let event):
                observe(observer: i, event)
            case .pushPull(let payload, let to):
                trace.mix(bytes: payload)
                transmitStream(from: node, to: to, payload: payload, reply: false)
            case .pushPullReply(let payload, let to):
                trace.mix(bytes: payload)
                transmitStream(from: node, to: to, payload: payload, reply: true)
            case .streamProbe(let payload, let to):
                trace.mix(bytes: payload)
                transmitStream(from: node, to: to, payload: payload, reply: false, probe: true)
            case .streamProbeReply(let payload, let to):
                trace.mix(bytes: payload)
                transmitStream(from: node, to: to, payload: payload, reply: true, probe: true)
            }
        }
    }

    /// Puts one datagram on the simulated network from node `from` (whose address it carries).
    func transmit(from: Int32, to: Endpoint, datagram: [UInt8]) {
        let f = Int(from)
        traffic[f].bytesSent += datagram.count + udpIPv4HeaderBytes
        traffic[f].datagramsSent += 1
        if captureTraffic { captured.append(CapturedDatagram(from: f, to: to, datagram: datagram, at: now)) }
        guard let dest = endpointIndex[to] else { unroutable += 1; return }
        let d = Int(dest)
        let lost = !reachable(f, d) || randomlyLost(to: d)
        let model = options.network
        trace.mix(3, UInt64(now.nanoseconds), UInt64(from), UInt64(dest), UInt64(datagram.count), lost ? 1 : 0)
        if lost {
            traffic[d].datagramsLostInbound += 1
            return
        }
        var delay = model.latency.simNanoseconds
        let jitter = model.jitter.simNanoseconds
        if jitter > 0 { delay += Int64(rng.unit() * Double(jitter)) }
        queue.push(at: now.nanoseconds + delay, .deliver(to: dest, from: from, datagram: datagram))
    }

    /// Whether the network's random loss (independent, then bursty on `d`'s access link) takes one
    /// datagram or segment to `d`.
    func randomlyLost(to d: Int) -> Bool {
        let model = options.network
        if model.loss > 0, rng.chance(model.loss) { return true }
        if let ge = model.burst {
            let bad = hosts[d].burstBad
            let flip = rng.chance(bad ? ge.badToGood : ge.goodToBad)
            hosts[d].burstBad = flip ? !bad : bad
            if rng.chance(hosts[d].burstBad ? ge.lossBad : ge.lossGood) { return true }
        }
        return false
    }

    /// One datagram's or segment's one-way delay.
    func oneWayDelay() -> Int64 {
        let model = options.network
        var oneWay = model.latency.simNanoseconds
        let jitter = model.jitter.simNanoseconds
        if jitter > 0 { oneWay += Int64(rng.unit() * Double(jitter)) }
        return oneWay
    }

    /// TCP's first SYN timeout and least retransmission timeout (Linux: 1 s and 200 ms), both doubled
    /// on every retry; the handshake gives up after `synTries`, a segment after `segmentTries`.
    static let synTimeout: Int64 = 1_000_000_000
    static let minRTO: Int64 = 200_000_000
    static let synTries = 4
    static let segmentTries = 6

    /// A TCP handshake from `f` to `d` under random loss: SYN, then SYN-ACK, the SYN sent again after
    /// 1, 2, 4 s while either is lost. Returns when `f` can send data and the SYNs and SYN-ACKs sent,
    /// or nil when it gives up.
    func tcpHandshake(from f: Int, to d: Int) -> (delay: Int64, syns: Int, synAcks: Int)? {
        var start: Int64 = 0, timeout = Self.synTimeout, syns = 0, synAcks = 0
        for _ in 0..<Self.synTries {
            syns += 1
            if !randomlyLost(to: d) {
                synAcks += 1
                if !randomlyLost(to: f) { return (start + oneWayDelay() + oneWayDelay(), syns, synAcks) }
            }
            start += timeout
            timeout *= 2
        }
        return nil
    }

    /// `segments` data segments from `f` to `d` on an open connection, each sent again after the
    /// RTO (200 ms, doubling) while lost. Returns when the last one arrives and the transmissions, or
    /// nil when one of them is given up (the connection breaks).
    func tcpData(from f: Int, to d: Int, segments: Int) -> (delay: Int64, sends: Int)? {
        var latest: Int64 = 0, sends = 0
        for _ in 0..<max(1, segments) {
            var at: Int64 = 0, rto = Self.minRTO, arrived = false
            for _ in 0..<Self.segmentTries {
                sends += 1
                if !randomlyLost(to: d) { latest = max(latest, at + oneWayDelay()); arrived = true; break }
                at += rto
                rto *= 2
            }
            if !arrived { return nil }
        }
        return (latest, sends)
    }

    /// Per-segment TCP/IPv4 header bytes (with timestamps) and the maximum segment size, for the
    /// bytes a push/pull stream costs on the wire.
    static let tcpHeaderBytes = 52
    static let tcpSegment = 1448

    /// Sends a push/pull request or a stream probe (on a new stream: handshake, then the data) or its
    /// reply (on the same stream). Cut by partitions and crashes. On a lossless network a request
    /// takes 1.5 round trips and a reply half of one; under random loss TCP is modelled: SYNs sent
    /// again after 1, 2, 4 s, lost segments after a 200 ms RTO, doubling (the ACKs' own loss is not
    /// modelled). Bytes count the payload sealed, a header per segment and per retransmission, the
    /// receiver's acks (one per two segments), and for a request the handshake and teardown.
    func transmitStream(from: Int32, to: Endpoint, payload: [UInt8], reply: Bool, probe: Bool = false) {
        let f = Int(from)
        let sealed = probe
            ? StreamProbeSeal.seal(payload, reply: reply, keyring: keyring, clusterID: clusterID)
            : PushPullSeal.seal(payload, reply: reply, keyring: keyring, clusterID: clusterID)
        let segments = (sealed.count + Self.tcpSegment - 1) / Self.tcpSegment
        var sent = sealed.count + segments * Self.tcpHeaderBytes
        if !reply {
            sent += 4 * Self.tcpHeaderBytes + 16   // SYN (with options), ACK, FIN, last ACK
            if probe { traffic[f].probeStreamsOpened += 1 } else { traffic[f].streamsOpened += 1 }
        }
        guard let dest = endpointIndex[to] else {
            count(streamBytes: sent, by: f, probe: probe)
            unroutable += 1
            return
        }
        let d = Int(dest)
        var acks = (segments + 1) / 2 * Self.tcpHeaderBytes
        if !reply { acks += 3 * Self.tcpHeaderBytes + 8 }   // SYN-ACK, FIN, ACK
        trace.mix(11, UInt64(now.nanoseconds), UInt64(from), UInt64(dest), UInt64(sealed.count), reply ? 1 : 0)
        guard reachable(f, d) else {
            count(streamBytes: sent, by: f, probe: probe)
            count(streamBytes: acks, by: d, probe: probe)
            return
        }
        let model = options.network
        var delay: Int64
        if model.loss == 0, model.burst == nil {
            delay = (reply ? 1 : 3) * oneWayDelay()
        } else {
            delay = 0
            if !reply {
                guard let hs = tcpHandshake(from: f, to: d) else {
                    count(streamBytes: Self.synTries * (Self.tcpHeaderBytes + 8), by: f, probe: probe)
                    return
                }
                delay += hs.delay
                sent += (hs.syns - 1) * (Self.tcpHeaderBytes + 8)
                acks += (hs.synAcks - 1) * (Self.tcpHeaderBytes + 8)
            }
            guard let data = tcpData(from: f, to: d, segments: segments) else {
                count(streamBytes: sent, by: f, probe: probe)
                count(streamBytes: acks, by: d, probe: probe)
                return
            }
            delay += data.delay
            sent += (data.sends - segments) * (Self.tcpHeaderBytes + min(sealed.count, Self.tcpSegment))
        }
        count(streamBytes: sent, by: f, probe: probe)
        count(streamBytes: acks, by: d, probe: probe)
        queue.push(at: now.nanoseconds + delay, .stream(to: dest, from: from, sealed: sealed, reply: reply, probe: probe))
    }

    func count(streamBytes: Int, by node: Int, probe: Bool) {
        traffic[node].bytesSent += streamBytes
        if probe { traffic[node].probeStreamBytesSent += streamBytes } else { traffic[node].streamBytesSent += streamBytes }
        if countByKind { breakdown.bytes[(probe ? TrafficBreakdown.Kind.streamProbe : .stream).rawValue] += streamBytes }
    }

    /// True when a datagram from `a` to `b` passes partitions and one-way blocks.
    public func reachable(_ a: Int, _ b: Int) -> Bool {
        hosts[a].partitionGroup == hosts[b].partitionGroup && !hosts[a].outboundBlocked && !hosts[b].inboundBlocked
            && (blockedLinks.isEmpty || !blockedLinks.contains(UInt64(a) << 32 | UInt64(b)))
    }

    // MARK: - Faults and actions

    /// Splits the network: nodes in different groups cannot reach each other until `heal()`.
    public func partition(groupOf: (Int) -> Int) {
        for i in 0..<n { hosts[i].partitionGroup = groupOf(i) }
    }

    /// Removes every partition and one-way block.
    public func heal() {
        for i in 0..<n {
            hosts[i].partitionGroup = 0
            hosts[i].inboundBlocked = false
            hosts[i].outboundBlocked = false
        }
        blockedLinks.removeAll()
    }

    /// Drops datagrams from `a` to `b` (but not from `b` to `a`).
    public func blockOneWay(from a: Int, to b: Int) {
        blockedLinks.insert(UInt64(a) << 32 | UInt64(b))
    }

    /// Drops every datagram `node` receives (it can still send: a one-way failure).
    public func blockInbound(_ node: Int, _ blocked: Bool = true) { hosts[node].inboundBlocked = blocked }

    /// Drops every datagram `node` sends.
    public func blockOutbound(_ node: Int, _ blocked: Bool = true) { hosts[node].outboundBlocked = blocked }

    /// Stops the node's processing for `duration`: datagrams queue up (to `backlogLimit`) and timers
    /// wait; at the end it handles the queue in order and then its timers.
    public func stall(_ node: Int, for duration: Duration) {
        guard hosts[node].up else { return }
        let end = max(hosts[node].stalledUntil, (now + duration).nanoseconds)
        hosts[node].stalledUntil = end
        queue.push(at: end, .stallEnd(node: Int32(node), generation: hosts[node].generation))
    }

    /// True while the node is stalled.
    public func isStalled(_ node: Int) -> Bool { hosts[node].stalledUntil > now.nanoseconds }

    /// Crashes the node: it stops at once, its in-flight timers are void, its view is saved for a
    /// restart with saved state.
    public func crash(_ node: Int) {
        guard hosts[node].up, let core = cores[node] else { return }
        hosts[node].savedLocal = core.localRecord
        hosts[node].savedView = core.members.map(\.record)
        hosts[node].up = false
        hosts[node].left = false
        hosts[node].generation &+= 1
        hosts[node].wakeAt = .max
        hosts[node].stalledUntil = .min
        hosts[node].backlog = []
        cores[node] = nil
        trace.mix(4, UInt64(now.nanoseconds), UInt64(node))
    }

    /// Restarts a crashed node. With saved state it continues above its last record version and
    /// starts from its last view (`seed(with:)`), joining through three members of that view; without,
    /// it starts at version 1 with an empty view and joins through the seed nodes.
    public func restart(_ node: Int, withSavedState: Bool) throws {
        guard !hosts[node].up else { return }
        var record = hosts[node].initialRecord
        if withSavedState, let saved = hosts[node].savedLocal {
            record = saved.record
            record.version = saved.record.version + 1
        }
        var core = try makeCore(node, record: record)
        hosts[node].up = true
        hosts[node].generation &+= 1
        for s in 0..<n {
            viewRank[node * n + s] = 255
            viewVersion[node * n + s] = 0
        }
        var seeds = seedEndpoints(excluding: node)
        if withSavedState {
            let view = hosts[node].savedView
            core.seed(with: view, now: now)
            for m in core.members {
                if let s = nameIndex[m.name] { setView(node, Int(s), m.record.record.version, 0) }
            }
            if !view.isEmpty {
                seeds = (0..<3).map { _ in view[Int(rng.next() % UInt64(view.count))].record.gossipAddress }
            }
        }
        cores[node] = core
        trace.mix(5, UInt64(now.nanoseconds), UInt64(node), withSavedState ? 1 : 0)
        tick(Int32(node))
        let directives = cores[node]!.join(seeds: seeds, now: now)
        execute(Int32(node), directives, fromTick: false)
    }

    /// The node leaves gracefully (signed leave notice).
    public func leave(_ node: Int) {
        guard hosts[node].up, cores[node] != nil else { return }
        hosts[node].left = true
        trace.mix(6, UInt64(now.nanoseconds), UInt64(node))
        let directives = cores[node]!.leave(now: now)
        execute(Int32(node), directives, fromTick: false)
    }

    /// A node that left joins again (with a higher record version) through the seed nodes.
    public func rejoin(_ node: Int) {
        guard hosts[node].up, cores[node] != nil else { return }
        hosts[node].left = false
        trace.mix(7, UInt64(now.nanoseconds), UInt64(node))
        let directives = cores[node]!.join(seeds: seedEndpoints(excluding: node), now: now)
        execute(Int32(node), directives, fromTick: false)
    }

    /// Changes a node's own record (new version, re-signed, gossiped); returns the new version.
    @discardableResult
    public func updateRecord(_ node: Int, _ change: (inout NodeRecord) -> Void) throws -> UInt64 {
        guard hosts[node].up, cores[node] != nil else { return 0 }
        let directives = try cores[node]!.updateLocalRecord(now: now, change)
        trace.mix(8, UInt64(now.nanoseconds), UInt64(node))
        execute(Int32(node), directives, fromTick: false)
        return cores[node]!.localRecord.record.version
    }

    /// Sends `datagram` as if from `from`'s address to `to` through the network model.
    public func inject(datagram: [UInt8], from: Int, to: Endpoint) {
        transmit(from: Int32(from), to: to, datagram: datagram)
    }

    /// Sends every captured datagram again, now, from its original sender to its original destination.
    public func replay(_ datagrams: [CapturedDatagram]) {
        for c in datagrams { transmit(from: Int32(c.from), to: c.to, datagram: c.datagram) }
    }

    /// Stops or restarts capturing, forgetting what was captured.
    public func clearCaptured() { captured.removeAll() }

}

/// A datagram seen on the simulated network, for replay attacks.
public struct CapturedDatagram: Sendable {
    /// Index of the sending node (its address is the datagram's source).
    public var from: Int
    public var to: Endpoint
    public var datagram: [UInt8]
    public var at: Instant
}

/// FNV-1a over 64-bit words.
struct TraceHash {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    /// Mixes a byte string (its length, then 8 bytes per step: payloads are hashed on every send).
    mutating func mix(bytes: [UInt8]) {
        mix(UInt64(bytes.count))
        var i = 0
        while i < bytes.count {
            var word: UInt64 = 0
            for k in i..<min(i + 8, bytes.count) { word = word << 8 | UInt64(bytes[k]) }
            value = (value ^ word) &* 0x0000_0100_0000_01B3
            i += 8
        }
    }

    mutating func mix(_ words: UInt64...) {
        for w in words {
            var x = w
            for _ in 0..<8 {
                value = (value ^ (x & 0xFF)) &* 0x0000_0100_0000_01B3
                x >>= 8
            }
        }
    }
}

extension Duration {
    var simNanoseconds: Int64 {
        let (s, a) = components
        return s * 1_000_000_000 + a / 1_000_000_000
    }
}
