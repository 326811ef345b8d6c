import IPNetwork
@testable import Membership
import WireMeshCrypto

/// Deterministic 32 bytes from a label (test identities and keys must not depend on the clock).
func testBytes(_ label: String) -> [UInt8] {
    var out: [UInt8] = []
    var h: UInt64 = 0x1234_5678
    for b in label.utf8 { h = mix64(h ^ UInt64(b)) }
    for _ in 0..<4 {
        h = mix64(h)
        for s in 0..<8 { out.append(UInt8(truncatingIfNeeded: h >> UInt64(8 * s))) }
    }
    return out
}

func testIdentity(_ label: String) -> SigningIdentity {
    SigningIdentity(seed: try! Key(bytes: testBytes("identity-" + label)))
}

func testEndpoint(_ i: Int) -> Endpoint {
    Endpoint(address: .v4(0x0A00_0000 | UInt32(i)), port: 7946)
}

let testClusterID = Array("test-cluster".utf8)
let testClusterKey = ClusterKey(key: try! Key(bytes: testBytes("cluster-key")))
let testKeyring = Keyring(primary: testClusterKey)

func testRecord(_ name: String, index: Int, identity: SigningIdentity, version: UInt64 = 1, labels: [String: String] = [:]) -> NodeRecord {
    NodeRecord(name: name, identity: identity.publicKey, version: version,
               wireguardKey: try! Key(bytes: testBytes("wg-" + name)),
               wireguardEndpoints: [Endpoint(address: .v4(0xC0A8_0000 | UInt32(index)), port: 51820)],
               gossipAddress: testEndpoint(index),
               podCIDRs: [try! IPPrefix("10.244.\(index).0/24")], labels: labels)
}

/// A fast test configuration: memberlist-like probing with short timers.
func testConfig() -> MembershipConfig {
    var c = MembershipConfig.wiremeshDefaults
    c.antiEntropyInterval = .seconds(2)
    c.reapTime = .seconds(60)
    return c
}

/// A tiny deterministic message pump for driving `MembershipNode`s in virtual time. It carries the
/// cores' plaintext payloads as they are (sealing is the shells' job, tested with `DatagramSeal`).
struct Pump {
    struct Event {
        var time: Instant
        var serial: Int
        var payload: [UInt8]
        var from: Endpoint
        var to: Endpoint
        /// 0: a datagram; 1: a push/pull request; 2: a push/pull reply; 3: a stream probe; 4: its reply
        /// (streams, unsealed here too).
        var stream: UInt8 = 0
    }

    var nodes: [Endpoint: MembershipNode] = [:]
    var order: [Endpoint] = []
    var wake: [Endpoint: Instant] = [:]
    var queue: [Event] = []
    var serial = 0
    var now = Instant.zero
    var latency: Duration = .milliseconds(2)
    /// Returns true to drop a datagram from → to.
    var drop: (Endpoint, Endpoint) -> Bool = { _, _ in false }
    /// When set, decides for streams (which retransmit what datagrams lose) instead of `drop`.
    var dropStreams: ((Endpoint, Endpoint) -> Bool)?
    /// When set, also drops datagrams by content (from, to, payload, now).
    var dropPayload: ((Endpoint, Endpoint, [UInt8], Instant) -> Bool)?
    /// Every event each node reported, in order.
    var events: [(at: Endpoint, time: Instant, event: MemberEvent)] = []
    /// Every payload any node sent.
    var sent: [(from: Endpoint, to: Endpoint, payload: [UInt8])] = []
    /// Every push/pull request and reply any node sent.
    var streams: [(from: Endpoint, to: Endpoint, payload: [UInt8], reply: Bool)] = []
    var identities: [Endpoint: SigningIdentity] = [:]

    @discardableResult
    mutating func add(_ name: String, index: Int, config: MembershipConfig = testConfig(), labels: [String: String] = [:]) -> Endpoint {
        let identity = testIdentity(name)
        let record = testRecord(name, index: index, identity: identity, labels: labels)
        let node = try! MembershipNode(config: config, identity: identity, record: record, seed: UInt64(index) &* 7919, now: now)
        let ep = record.gossipAddress
        nodes[ep] = node
        identities[ep] = identity
        order.append(ep)
        return ep
    }

    mutating func apply(_ directives: [Directive], from ep: Endpoint) {
        for d in directives {
            switch d {
            case .send(let payload, let to):
                sent.append((ep, to, payload))
                serial += 1
                queue.append(Event(time: now + latency, serial: serial, payload: payload, from: ep, to: to))
            case .wakeUp(let at):
                if let w = wake[ep] { wake[ep] = min(w, at) } else { wake[ep] = at }
            case .changed(let e):
                events.append((ep, now, e))
            case .pushPull(let payload, let to): stream(payload, from: ep, to: to, kind: 1)
            case .pushPullReply(let payload, let to): stream(payload, from: ep, to: to, kind: 2)
            case .streamProbe(let payload, let to): stream(payload, from: ep, to: to, kind: 3)
            case .streamProbeReply(let payload, let to): stream(payload, from: ep, to: to, kind: 4)
            }
        }
    }

    /// Queues a stream payload (`Event.stream` kind 1...4), recorded in `streams`.
    mutating func stream(_ payload: [UInt8], from ep: Endpoint, to: Endpoint, kind: UInt8) {
        streams.append((ep, to, payload, kind % 2 == 0))
        serial += 1
        queue.append(Event(time: now + latency, serial: serial, payload: payload, from: ep, to: to, stream: kind))
    }

    mutating func join(_ ep: Endpoint, seeds: [Endpoint]) {
        let d = nodes[ep]!.join(seeds: seeds, now: now)
        apply(d, from: ep)
    }

    mutating func with(_ ep: Endpoint, _ body: (inout MembershipNode, Instant) -> [Directive]) {
        var node = nodes[ep]!
        let d = body(&node, now)
        nodes[ep] = node
        apply(d, from: ep)
    }

    /// Injects a raw payload as if `from` had sent it to `to`.
    mutating func inject(_ payload: [UInt8], from: Endpoint, to: Endpoint) {
        serial += 1
        queue.append(Event(time: now, serial: serial, payload: payload, from: from, to: to))
    }

    /// Removes a node (a crash: it stops receiving and ticking).
    mutating func crash(_ ep: Endpoint) -> MembershipNode? {
        wake[ep] = nil
        order.removeAll { $0 == ep }
        return nodes.removeValue(forKey: ep)
    }

    mutating func run(for d: Duration) { run(until: now + d) }

    mutating func run(until end: Instant) {
        while true {
            var nextTime: Instant?
            var qi: Int?
            for (i, e) in queue.enumerated() {
                if nextTime == nil || e.time < nextTime! || (e.time == nextTime! && e.serial < queue[qi!].serial) {
                    nextTime = e.time; qi = i
                }
            }
            var wakeEp: Endpoint?
            for ep in order {
                if let w = wake[ep], nextTime == nil || w < nextTime! { nextTime = w; wakeEp = ep; qi = nil }
            }
            guard let t = nextTime, t <= end else { break }
            now = max(now, t)
            if let ep = wakeEp {
                wake[ep] = nil
                if var node = nodes[ep] {
                    let d = node.tick(now: now)
                    nodes[ep] = node
                    apply(d, from: ep)
                }
            } else if let i = qi {
                let e = queue.remove(at: i)
                if e.stream != 0, let dropStreams {
                    if dropStreams(e.from, e.to) { continue }
                } else if drop(e.from, e.to) {
                    continue
                } else if e.stream == 0, let dropPayload, dropPayload(e.from, e.to, e.payload, now) {
                    continue
                }
                if var node = nodes[e.to] {
                    let d = switch e.stream {
                    case 1: node.receivePushPull(request: e.payload, from: e.from, now: now)
                    case 2: node.receivePushPull(reply: e.payload, from: e.from, now: now)
                    case 3: node.receiveStreamProbe(request: e.payload, from: e.from, now: now)
                    case 4: node.receiveStreamProbe(reply: e.payload, from: e.from, now: now)
                    default: node.receive(payload: e.payload, from: e.from, now: now)
                    }
                    nodes[e.to] = node
                    apply(d, from: e.to)
                }
            }
        }
        now = end
    }

    func status(of name: String, at ep: Endpoint) -> MemberStatus? {
        nodes[ep]?.member(named: name)?.status
    }

    func version(of name: String, at ep: Endpoint) -> UInt64? {
        nodes[ep]?.member(named: name)?.record.record.version
    }

    /// True when every running node sees every other running node with the given predicate.
    func allSee(_ predicate: (Member) -> Bool) -> Bool {
        for ep in order {
            guard let node = nodes[ep] else { return false }
            for other in order where other != ep {
                let name = nodes[other]!.localRecord.record.name
                guard let m = node.member(named: name), predicate(m) else { return false }
            }
        }
        return true
    }

    func events(at ep: Endpoint, kind: MemberEvent.Kind, name: String) -> [(time: Instant, event: MemberEvent)] {
        events.filter { $0.at == ep && $0.event.kind == kind && $0.event.member.name == name }.map { ($0.time, $0.event) }
    }
}

extension Pump {
    /// n nodes named n0..n(k-1) that all join through n0 and converge.
    static func cluster(_ n: Int, config: MembershipConfig = testConfig()) -> (Pump, [Endpoint]) {
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<n { eps.append(pump.add("n\(i)", index: i + 1, config: config)) }
        for ep in eps.dropFirst() { pump.join(ep, seeds: [eps[0]]) }
        pump.run(for: .seconds(20))
        return (pump, eps)
    }
}

/// A payload of messages, as any member holding the cluster key could send.
func forgedPayload(_ messages: [WireMessage]) -> [UInt8] {
    messages.flatMap { WireFormat.encode($0) }
}

/// Builds a sealed datagram from messages.
func sealedDatagram(_ messages: [WireMessage], keyring: Keyring = testKeyring) -> [UInt8] {
    DatagramSeal.datagram(messages, keyring: keyring, clusterID: testClusterID)
}

/// The messages of a payload a node sent.
func messages(in payload: [UInt8]) -> [WireMessage] {
    WireFormat.decodePayload(payload).messages
}
