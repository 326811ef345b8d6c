import ArgumentParser
import Foundation
import IPNetwork
import LinePort
import Membership
import NIOPosix
import WireMeshAgent
import WireMeshCrypto
import WireMeshJoin

/// `wiremesh-hostile`: a test tool that holds one member's secrets (its state directory: identity
/// seed, cluster keys, certificate) and attacks real agents with them, one attack per subcommand.
/// Each prints one JSON object on stdout saying what it sent and what came back; whether the
/// cluster held is judged from outside (scripts/e2e/hostile.sh reads the agents' metrics, logs and
/// `wg show`). Never run it against a cluster you do not own.
@main
struct Hostile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wiremesh-hostile",
        abstract: "Attack wiremesh agents with one member's stolen secrets (a test tool for scripts/e2e/hostile.sh).",
        subcommands: [
            Observe.self, ClaimBlock.self, OutsideRange.self, ForgedCertificate.self, MaxNumbers.self,
            KeyGeneration.self, RevocationSerial.self, ForgedLiveness.self, Replay.self, Flood.self, MintToken.self, KeyringAfterEviction.self,
            Chatter.self, Stranger.self,
        ])
}

struct Options: ParsableArguments {
    @Option(help: "The member's state directory (the secrets it holds).") var stateDir: String
    @Option(help: "ADDRESS:PORT to send from (the member's own gossip address once its agent is stopped).") var bind: String
    @Option(name: .customLong("target"), help: "An honest member's gossip ADDRESS:PORT (repeat).") var targets: [String]

    var endpoints: [Endpoint] { get throws { try targets.map { try Endpoint($0) } } }

    /// The attacker; a member first asks for the current keyring (as its agent would at start).
    func attacker(stranger: Bool = false, sync: Bool = true) async throws -> Attacker {
        let a = try Attacker(stateDir: stateDir, bind: try Endpoint(bind), stranger: stranger)
        if sync && !stranger { await a.syncKeyring(try endpoints, stateDir: stateDir) }
        return a
    }
}

extension Attacker {
    /// The view summary the tool prints: name → version, status, pod CIDRs.
    var viewSummary: [[String: Any]] {
        records.values.sorted { $0.record.name < $1.record.name }.map { s in
            var o: [String: Any] = ["name": s.record.name, "version": "\(s.record.version)",
                                    "pod_cidrs": s.record.podCIDRs.map(\.description)]
            if let st = statuses[s.record.name] { o["status"] = "\(st.status)" }
            return o
        }
    }

    func victim(_ name: String) throws -> NodeRecord {
        guard let v = records[name]?.record else { throw HostileError("no member named '\(name)' answered: \(records.keys.sorted())") }
        return v
    }

    /// Sends every record (one datagram each, next to an alive claim for it) to every target.
    func sendRecords(_ forged: [(String, SignedNodeRecord)], to targets: [Endpoint]) {
        for target in targets {
            for (_, s) in forged {
                send([.record(s), .status(name: s.record.name, version: s.record.version, status: .alive(incarnation: 0),
                                          from: s.record.name)], to: target)
            }
        }
    }

    /// After the attack: which forged records some target holds (asked by name, as a member would).
    func acceptedRecords(_ forged: [(String, SignedNodeRecord)], at targets: [Endpoint]) -> [String] {
        var accepted: [String] = []
        for target in targets {
            records = [:]
            statuses = [:]
            for (_, s) in forged { refresh(s.record.name, at: target) }
            drain(for: 0.25)
            for (label, s) in forged where records[s.record.name].map({ $0 == s }) == true {
                accepted.append("\(label)@\(target)")
            }
        }
        return accepted
    }
}

func hex(_ n: Int) -> String { secureRandomBytes(n).map { String(format: "%02x", $0) }.joined() }

// MARK: - Observe

struct Observe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the members the targets list (digest + requests, as any member asks).")
    @OptionGroup var options: Options
    func run() async throws {
        let a = try await options.attacker()
        a.observe(try options.endpoints)
        emit(["attack": "observe", "members": a.viewSummary, "received": a.received, "unopened": a.unopened])
    }
}

// MARK: - Block claims

struct ClaimBlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Claim another node's pod block: new identities with an old version, the victim's name, and this member's own identity.")
    @OptionGroup var options: Options
    @Option(help: "The node whose block is claimed.") var victim: String

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        let v = try a.victim(victim)
        let fresh = a.freshVersion
        var forged: [(String, SignedNodeRecord)] = []
        forged.append(("new-identity-no-certificate",
                       try a.record(name: "evil-\(hex(3))", signer: .generate(), version: 1, podCIDRs: v.podCIDRs,
                                    overlay: v.overlayAddress, certificate: nil)))
        forged.append(("new-identity-victim-certificate",
                       try a.record(name: "evil-\(hex(3))", signer: .generate(), version: 1, podCIDRs: v.podCIDRs,
                                    overlay: v.overlayAddress, certificate: v.certificate)))
        forged.append(("victim-name-new-identity-old-version",
                       try a.record(name: v.name, signer: .generate(), version: 1, podCIDRs: v.podCIDRs,
                                    overlay: v.overlayAddress, certificate: v.certificate)))
        forged.append(("own-identity-victim-block", try a.ownRecord(version: fresh) {
            $0.podCIDRs = v.podCIDRs; $0.overlayAddress = v.overlayAddress
        }))
        forged.append(("own-identity-extra-block", try a.ownRecord(version: fresh + 1) { $0.podCIDRs += v.podCIDRs }))
        forged.append(("own-certificate-edited", try a.ownRecord(version: fresh + 2) {
            $0.podCIDRs = v.podCIDRs; $0.overlayAddress = v.overlayAddress
            $0.certificate?.podCIDRs = v.podCIDRs; $0.certificate?.overlayAddress = v.overlayAddress
        }))
        a.sendRecords(forged, to: targets)
        a.drain(for: 0.3)
        // A replayed forgery costs nothing (remembered as refused): sent again once.
        a.sendRecords(forged, to: targets)
        a.drain(for: 0.3)
        let accepted = a.acceptedRecords(forged, at: targets)
        emit(["attack": "claim-block", "victim": victim, "victim_block": v.podCIDRs.map(\.description),
              "records": forged.map(\.0), "sent": a.sent, "accepted": accepted])
    }
}

struct OutsideRange: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Claim prefixes outside the cluster range (with this member's certificate, and with certificates it signs itself).")
    @OptionGroup var options: Options
    @Option(name: .customLong("prefix"), help: "A prefix to claim (repeat).") var prefixes: [String]

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        guard let state = a.state else { throw HostileError("needs a member's state") }
        var version = a.freshVersion
        var forged: [(String, SignedNodeRecord)] = []
        for text in prefixes {
            let p = try IPPrefix(text)
            version += 1
            forged.append(("own-certificate \(p)", try a.ownRecord(version: version) { $0.podCIDRs = [p]; $0.overlayAddress = p.address }))
            version += 1
            let selfSigned = NodeCertificate.issue(clusterID: state.clusterID, name: state.node.name, identity: a.identity.publicKey,
                                                   podCIDRs: [p], overlayAddress: p.address, issuedAt: 1, authority: a.identity)
            forged.append(("self-signed-certificate \(p)", try a.ownRecord(version: version) {
                $0.podCIDRs = [p]; $0.overlayAddress = p.address; $0.certificate = selfSigned
            }))
            let stranger = SigningIdentity.generate()
            let name = "wide-\(hex(3))"
            let cert = NodeCertificate.issue(clusterID: state.clusterID, name: name, identity: stranger.publicKey,
                                             podCIDRs: [p], overlayAddress: p.address, issuedAt: 1, authority: stranger)
            forged.append(("new-identity \(p)", try a.record(name: name, signer: stranger, version: 1, podCIDRs: [p],
                                                             overlay: p.address, certificate: cert)))
        }
        a.sendRecords(forged, to: targets)
        a.drain(for: 0.3)
        let accepted = a.acceptedRecords(forged, at: targets)
        emit(["attack": "outside-range", "records": forged.map(\.0), "sent": a.sent, "accepted": accepted])
    }
}

struct ForgedCertificate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Records carrying certificates this member forged (its own key, the cluster key, the victim's certificate re-used).")
    @OptionGroup var options: Options
    @Option(help: "The node whose block the forged certificates grant.") var victim: String

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let v = try a.victim(victim)
        let fresh = a.freshVersion
        func cert(_ name: String, _ identity: IdentityPublicKey, by signer: SigningIdentity) -> NodeCertificate {
            NodeCertificate.issue(clusterID: state.clusterID, name: name, identity: identity, podCIDRs: v.podCIDRs,
                                  overlayAddress: v.overlayAddress, issuedAt: 1, authority: signer)
        }
        let fromClusterKey = SigningIdentity(seed: state.keyring.primary.key)
        let newcomer = SigningIdentity.generate()
        let newName = "forged-\(hex(3))"
        let forged: [(String, SignedNodeRecord)] = [
            ("own-identity-own-key-certificate", try a.ownRecord(version: fresh) {
                $0.podCIDRs = v.podCIDRs; $0.overlayAddress = v.overlayAddress
                $0.certificate = cert(state.node.name, a.identity.publicKey, by: a.identity)
            }),
            ("own-identity-cluster-key-certificate", try a.ownRecord(version: fresh + 1) {
                $0.podCIDRs = v.podCIDRs; $0.overlayAddress = v.overlayAddress
                $0.certificate = cert(state.node.name, a.identity.publicKey, by: fromClusterKey)
            }),
            ("own-identity-victim-certificate", try a.ownRecord(version: fresh + 2) {
                $0.podCIDRs = v.podCIDRs; $0.overlayAddress = v.overlayAddress; $0.certificate = v.certificate
            }),
            ("new-identity-self-certified", try a.record(name: newName, signer: newcomer, version: 1, podCIDRs: v.podCIDRs,
                                                         overlay: v.overlayAddress, certificate: cert(newName, newcomer.publicKey, by: newcomer))),
        ]
        a.sendRecords(forged, to: targets)
        a.drain(for: 0.3)
        let accepted = a.acceptedRecords(forged, at: targets)
        emit(["attack": "forged-certificate", "victim": victim, "records": forged.map(\.0), "sent": a.sent, "accepted": accepted])
    }
}

// MARK: - Numbers at their maximum

struct MaxNumbers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Status claims, leaves, digests and sequence numbers at 2^64 - 1 (and 2^32 - 1).")
    @OptionGroup var options: Options
    @Option(help: "A healthy node the claims are about.") var victim: String

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let v = try a.victim(victim)
        let me = state.node.name
        let max = UInt64.max
        let junk = try Signature(bytes: secureRandomBytes(64))
        let h = WireFormat.nameHash(victim)
        for target in targets {
            let tName = a.name(at: target) ?? "node1"
            let tVersion = a.records[tName]?.record.version ?? 1
            let messages: [[WireMessage]] = [
                // Leaves first: the claims below make the victim refute with a new version, after which a
                // leave at the old one is merely stale.
                [.leave(LeaveNotice(name: victim, version: max, incarnation: max, signature: junk))],
                [.leave(LeaveNotice(name: victim, version: v.version, incarnation: max, signature: junk))],
                [.leave(LeaveNotice(name: tName, version: max, incarnation: max, signature: junk))],
                [.leave(LeaveNotice(name: tName, version: tVersion, incarnation: max, signature: junk))],
                [.status(name: victim, version: v.version, status: .alive(incarnation: max), from: me)],
                [.status(name: victim, version: max, status: .dead(incarnation: max), from: me)],
                [.status(name: victim, version: v.version, status: .suspect(incarnation: max), from: me)],
                [.status(name: victim, version: v.version, status: .dead(incarnation: max), from: me)],
                [.status(name: tName, version: max, status: .suspect(incarnation: max), from: me)],
                [.status(name: tName, version: tVersion, status: .dead(incarnation: max), from: me)],
                [.status(name: "ghost-\(hex(2))", version: max, status: .dead(incarnation: max), from: me)],
                [.digestEntries(lower: h, upper: h, more: true, entries: [DigestEntry(nameHash: h, version: max, status: .dead(incarnation: max))])],
                [.digestEntries(lower: 0, upper: max, more: true, entries: [])],
                [.request([DigestRequest(nameHash: max, haveVersion: max), DigestRequest(nameHash: h, haveVersion: max)])],
                [.ack(seq: UInt32.max), .nack(seq: UInt32.max)],
                [.ping(seq: UInt32.max, target: tName, source: me)],
                [.pingReq(seq: UInt32.max, target: victim, address: v.gossipAddress)],
            ]
            for m in messages { a.send(m, to: target) }
        }
        a.drain(for: 1.0)
        // Each target must still answer, and the victim be alive (it refutes with a new version).
        a.records = [:]
        a.statuses = [:]
        a.observe(targets)
        let after = a.records[victim]?.record.version ?? 0
        emit(["attack": "max-numbers", "victim": victim, "sent": a.sent, "victim_version_before": "\(v.version)",
              "victim_version_after": "\(after)", "victim_status_after": a.statuses[victim].map { "\($0.status)" } ?? "unknown",
              "members_answering": a.records.count])
    }
}

/// A record advertising a cluster key at generation 2^64 - 1, and a keyring answer that hands that key
/// over when members ask for it: does the cluster take a key whose generation leaves no room for the
/// next rotation (the one an eviction needs)?
struct KeyGeneration: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Advertise a cluster key of generation 2^64 - 1 and hand it to members that ask (keyring answers signed by this member).")
    @OptionGroup var options: Options
    @Option(help: "How long to stay live and answer keyring requests.") var seconds: Double = 6
    @Option(help: "The generation advertised (default 2^64 - 1).") var generation: UInt64 = .max

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let key = ClusterKey.generate()
        let tag = ClusterKeyTag(id: key.id, generation: generation)
        var generations = a.keyGenerations(state)
        generations[key.id] = generation
        let keyring = Keyring(primary: key, others: state.keyring.keys)
        let counter = Counter()
        let serving = try await a.serveKeyring(keyring: keyring, generations: generations, counter: counter)
        let record = try a.ownRecord(version: a.freshVersion) { $0.clusterKeys = state.clusterKeys.tags + [tag] }
        _ = try await a.stayLive(seconds: seconds, to: targets) { record }
        serving.cancel()
        emit(["attack": "key-generation", "key": "\(key.id)", "generation": "\(generation)", "sent": a.sent,
              "keyring_requests": counter.names, "acks_sent": a.acksSent])
    }
}

/// A record announcing a revocation list of serial `--serial` that the member does not hold, a new
/// version of it every second (each one a view change on every member), and keyring answers without
/// that list: do members keep asking it, and does it hide the member holding a real newer list?
struct RevocationSerial: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Announce a revocation serial this member does not hold, re-announced every second, and answer keyring requests without the list.")
    @OptionGroup var options: Options
    @Option(help: "How long to stay live and answer keyring requests.") var seconds: Double = 30
    @Option(help: "The serial announced (default 2^32 - 1).") var serial: UInt32 = .max

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let counter = Counter()
        let serving = try await a.serveKeyring(keyring: a.keyring, generations: a.keyGenerations(state), counter: counter,
                                               revocations: state.revocations)
        let versions = try await a.stayLive(seconds: seconds, to: targets) {
            try a.ownRecord(version: a.freshVersion) { $0.revocationSerial = serial }
        }
        serving.cancel()
        emit(["attack": "revocation-serial", "serial": "\(serial)", "held_serial": "\(state.revocations?.serial ?? 0)",
              "versions": versions, "keyring_requests": counter.names, "sent": a.sent])
    }
}

extension Attacker {
    /// The generation of each cluster key the member's state lists.
    func keyGenerations(_ state: NodeState) -> [ClusterKeyID: UInt64] {
        Dictionary(state.clusterKeys.entries.map { ($0.id, $0.generation ?? 0) }, uniquingKeysWith: { x, _ in x })
    }

    /// Answers keyring requests on the member's line port as the member would (signed with its
    /// identity, to the members observed), with `keyring` and `revocations`; counts who asked.
    /// Cancel the task to stop.
    func serveKeyring(keyring: Keyring, generations: [ClusterKeyID: UInt64], counter: Counter,
                      revocations: RevocationList? = nil) async throws -> Task<Void, Never> {
        guard let state else { throw HostileError("needs a member's state") }
        let members = records.values.map { KnownMember(name: $0.record.name, identity: $0.record.identity, left: false) }
        let identity = self.identity, name = state.node.name, clusterID = state.clusterID
        let server = try await LineServer.bind(local) { request in
            guard case .keyring(let r) = request else { return .refused(.malformed("no")) }
            counter.add(r.node)
            do throws(KeyringRefusal) {
                return .keyring(try KeyringAnswer.answer(r, clusterID: clusterID, members: members, keyring: keyring, generations: generations,
                                                         identity: identity, name: name, nowMs: Int64(Date().timeIntervalSince1970 * 1000),
                                                         revocations: revocations))
            } catch {
                return .refused(.keyring(error))
            }
        }
        return Task { try? await server.run() }
    }

    /// Stays live for `seconds`: every second `record()` with an alive claim to each target, answering
    /// pings meanwhile. Returns how many records were sent to each target.
    func stayLive(seconds: Double, to targets: [Endpoint], record: () throws -> SignedNodeRecord) async throws -> Int {
        guard let state else { throw HostileError("needs a member's state") }
        let name = state.node.name
        pingName = name
        var rounds = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let r = try record()
            rounds += 1
            for t in targets { send([.record(r), .status(name: name, version: r.record.version, status: .alive(incarnation: 0), from: name)], to: t) }
            // The socket is blocking: drain on a thread of its own so the line server keeps answering.
            _ = try await onThread { self.drain(for: 1) }
        }
        return rounds
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var names: [String] { lock.lock(); defer { lock.unlock() }; return list }
}

func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread { do { c.resume(returning: try body()) } catch { c.resume(throwing: error) } }.start()
    }
}

extension Attacker: @unchecked Sendable {}

// MARK: - Liveness

struct ForgedLiveness: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Claim, in other members' names, that a healthy node is suspect and dead, again and again.")
    @OptionGroup var options: Options
    @Option(help: "The healthy node.") var victim: String
    @Option(help: "How long.") var seconds: Double = 10
    @Option(help: "Claims per second to each target.") var rate: Double = 10

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        a.observe(targets)
        _ = try a.victim(victim)
        let claimants = a.records.keys.filter { $0 != victim }.sorted() + [a.state?.node.name ?? "x"]
        var claims = 0
        var seen: Set<String> = []
        let deadline = Date().addingTimeInterval(seconds)
        var round = 0
        while Date() < deadline {
            round += 1
            let v = a.records[victim]!.record.version
            let inc = a.statuses[victim].map { $0.version == v ? $0.status.incarnation : 0 } ?? 0
            seen.insert("\(v)/\(inc)")
            for t in targets {
                var m: [WireMessage] = []
                for c in claimants {
                    m.append(.status(name: victim, version: v, status: .suspect(incarnation: inc), from: c))
                    m.append(.status(name: victim, version: v, status: .dead(incarnation: inc + 1), from: c))
                }
                // Now and then at the largest incarnation: a refutation then needs a new record version.
                if round % 10 == 0 { m.append(.status(name: victim, version: v, status: .dead(incarnation: .max), from: claimants[0])) }
                claims += m.count
                a.send(m, to: t)
            }
            if round % 3 == 0 { a.refresh(victim, at: targets[round % targets.count]) }
            a.drain(for: 1 / rate)
        }
        emit(["attack": "forged-liveness", "victim": victim, "claims": claims, "claimants": claimants,
              "victim_states_seen": seen.count, "sent": a.sent])
    }
}

// MARK: - Replay

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send captured gossip datagrams (a pcap of the underlay) again: to their destination, and to another member.")
    @OptionGroup var options: Options
    @Option(help: "A pcap file (tcpdump -w, Ethernet) of the underlay.") var pcap: String
    @Option(help: "The gossip port.") var port: UInt16 = 7946
    @Flag(help: "Also send each to the next target in the list (a destination it was not sealed for).") var cross = false

    /// Replaying needs no secret (a stranger on the path can do it): the datagrams go out as
    /// captured, from a port no member sends to on its own, so whatever comes back answers a replay.
    func run() async throws {
        let a = try await options.attacker(stranger: true)
        let targets = try options.endpoints
        let packets = try Pcap.udp(try Array(Data(contentsOf: URL(fileURLWithPath: pcap))))
            .filter { $0.dst.port == port && $0.src.address != a.local.address && $0.dst.address != a.local.address && targets.contains($0.dst) }
        var toOrigin: [String: Int] = [:], toOther: [String: Int] = [:]
        for p in packets {
            a.sendRaw(p.payload, to: p.dst)
            toOrigin["\(p.dst)", default: 0] += 1
            if a.sent % 50 == 0 { usleep(5000) }
        }
        a.drain(for: 0.7)
        var crossReplies = 0
        if cross {
            // The same datagrams to a member they were not sent to (from another port, to tell the answers apart).
            let b = try Attacker(stateDir: nil, bind: Endpoint(address: a.local.address, port: a.local.port &+ 1), stranger: true)
            for p in packets {
                let other = targets[(targets.firstIndex(of: p.dst)! + 1) % targets.count]
                guard other.address != p.src.address else { continue }
                b.sendRaw(p.payload, to: other)
                toOther["\(other)", default: 0] += 1
            }
            b.drain(for: 0.7)
            crossReplies = b.received
        }
        emit(["attack": "replay", "captured": packets.count, "replayed_to_destination": toOrigin, "replayed_elsewhere": toOther,
              "replies": a.received, "replies_elsewhere": crossReplies])
    }
}

/// The UDP datagrams of a classic pcap file (Ethernet, IPv4).
enum Pcap {
    struct Packet { var src: Endpoint; var dst: Endpoint; var payload: [UInt8] }

    static func udp(_ b: [UInt8]) throws -> [Packet] {
        guard b.count >= 24 else { throw HostileError("not a pcap file") }
        let magic = UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
        let little: Bool
        switch magic {
        case 0xa1b2c3d4, 0xa1b23c4d: little = true
        case 0xd4c3b2a1, 0x4d3cb2a1: little = false
        default: throw HostileError("not a pcap file (magic \(String(magic, radix: 16)))")
        }
        func u32(_ i: Int) -> Int {
            let v = little ? UInt32(b[i]) | UInt32(b[i+1]) << 8 | UInt32(b[i+2]) << 16 | UInt32(b[i+3]) << 24
                           : UInt32(b[i+3]) | UInt32(b[i+2]) << 8 | UInt32(b[i+1]) << 16 | UInt32(b[i]) << 24
            return Int(v)
        }
        var out: [Packet] = []
        var i = 24
        while i + 16 <= b.count {
            let len = u32(i + 8)
            let start = i + 16
            i = start + len
            guard i <= b.count, len >= 14 + 20 + 8 else { continue }
            var e = start + 12
            var type = Int(b[e]) << 8 | Int(b[e+1])
            if type == 0x8100 { e += 4; type = Int(b[e]) << 8 | Int(b[e+1]) }
            guard type == 0x0800 else { continue }
            let ip = e + 2
            let ihl = Int(b[ip] & 0x0f) * 4
            guard b[ip + 9] == 17, ip + ihl + 8 <= i else { continue }
            let total = Int(b[ip+2]) << 8 | Int(b[ip+3])
            let src = IPAddress(bytes: b[(ip+12)..<(ip+16)])!, dst = IPAddress(bytes: b[(ip+16)..<(ip+20)])!
            let u = ip + ihl
            let sport = UInt16(b[u]) << 8 | UInt16(b[u+1]), dport = UInt16(b[u+2]) << 8 | UInt16(b[u+3])
            let end = min(i, ip + total)
            guard u + 8 <= end else { continue }
            out.append(Packet(src: Endpoint(address: src, port: sport), dst: Endpoint(address: dst, port: dport),
                              payload: Array(b[(u+8)..<end])))
        }
        return out
    }
}

// MARK: - Flood

struct Flood: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Announce thousands of fake members (fresh identities; no, this member's, or self-signed certificates).")
    @OptionGroup var options: Options
    @Option(help: "How many fake members.") var count = 3000
    @Option(help: "Datagrams per second to each target.") var rate = 1000.0

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let range = state.settings.podRange
        var messages: [WireMessage] = []
        messages.reserveCapacity(count)
        let tag = hex(2)
        for i in 0..<count {
            let signer = SigningIdentity.generate()
            let name = "fake-\(tag)-\(i)"
            let block = try IPPrefix(address: range.address, length: 24)
            let cert: NodeCertificate? = switch i % 3 {
            case 0: nil
            case 1: state.certificate
            default: NodeCertificate.issue(clusterID: state.clusterID, name: name, identity: signer.publicKey, podCIDRs: [block],
                                           overlayAddress: block.address, issuedAt: 1, authority: signer)
            }
            messages.append(.record(try a.record(name: name, signer: signer, version: 1, podCIDRs: [block], overlay: block.address,
                                                 certificate: cert)))
        }
        let pace = Duration.nanoseconds(Int64(1e9 / rate))
        let started = Date()
        for t in targets { a.sendPacked(messages, to: t, pace: pace) }
        let seconds = Date().timeIntervalSince(started)
        a.drain(for: 0.5)
        a.records = [:]
        a.observe(targets)
        let fakes = a.records.keys.filter { $0.hasPrefix("fake-") }.count
        emit(["attack": "flood", "records": count, "datagrams": a.sent, "seconds": seconds, "fakes_in_view": fakes,
              "members_listed": a.records.count])
    }
}

// MARK: - Tokens

struct MintToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mint join tokens from every secret this member holds and try them on every target's join port.")
    @OptionGroup var options: Options
    @Option(help: "Write one minted token here (for a try with 'wiremesh join').") var tokenOut: String?

    func run() async throws {
        let a = try await options.attacker()
        let targets = try options.endpoints
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let serial = state.revocations?.serial ?? 0
        let fingerprint = JoinToken.fingerprint(of: state.authorityKey)
        let seeds: [(String, Key)] = [
            ("identity-seed", state.identity.seed), ("cluster-key", state.keyring.primary.key),
            ("wireguard-key", state.wireGuardKey), ("random", Key.generatePreshared()),
        ]
        var tokens: [(String, JoinToken)] = []
        let expiry = Date().addingTimeInterval(600)
        for (label, seed) in seeds {
            for s in Set([serial, 0, serial + 1]) {
                let id = secureRandomBytes(JoinToken.idLength)
                let key = JoinToken.derivedKey(authoritySeed: seed, revocationSerial: s, id: id,
                                               expiresAt: Int64(expiry.timeIntervalSince1970), usesLimit: 1)
                tokens.append(("\(label)/serial\(s)", JoinToken(id: id, key: key, clusterID: state.clusterID, endpoints: targets,
                                                                expiresAt: expiry, usesLimit: 1, authorityFingerprint: fingerprint)))
            }
        }
        // A token as if this member were the authority (its own fingerprint).
        let (own, _) = try JoinToken.issue(clusterID: state.clusterID, endpoints: targets, authority: state.identity,
                                           revocationSerial: serial, ttl: 600, uses: 1, now: Date())
        tokens.append(("own-authority", own))
        if let tokenOut { try (tokens[0].1.text + "\n").write(toFile: tokenOut, atomically: true, encoding: .utf8) }
        var outcomes: [String: Int] = [:]
        var admitted: [String] = []
        for (label, token) in tokens {
            for target in targets {
                let request = JoinExchange.makeRequest(token: token, nodeName: "minted-\(hex(2))", identity: SigningIdentity.generate().publicKey,
                                                       wireGuardPublicKey: Key.generatePrivate().publicKey(),
                                                       nonce: secureRandomBytes(JoinExchange.nonceLength))
                let outcome: String
                do {
                    switch try await LineClient.exchange(.join(request), with: target, timeout: .seconds(3)) {
                    case .joined: outcome = "ADMITTED"; admitted.append("\(label)@\(target)")
                    case .refused(.join(let r)): outcome = r.code.rawValue
                    case .refused(let other): outcome = "refused:\(other)"
                    default: outcome = "other"
                    }
                } catch { outcome = "unreachable" }
                outcomes[outcome, default: 0] += 1
            }
        }
        emit(["attack": "mint-token", "tokens": tokens.map(\.0), "attempts": tokens.count * targets.count,
              "outcomes": outcomes, "admitted": admitted])
    }
}

// MARK: - Keyring

struct KeyringAfterEviction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keyring", abstract: "Ask every target for the cluster keyring as this member (and in another member's name).")
    @OptionGroup var options: Options
    @Option(help: "Also ask in this member's name (signed with this member's identity).") var asName: String?

    func run() async throws {
        let a = try await options.attacker(sync: false)
        let targets = try options.endpoints
        guard let state = a.state else { throw HostileError("needs a member's state") }
        var outcomes: [String] = []
        var handedOver: [String] = []
        for name in [state.node.name] + [asName].compactMap({ $0 }) {
            for target in targets {
                let ephemeral = Key.generatePrivate()
                let request = KeyringRequest(clusterID: state.clusterID, node: name, ephemeral: ephemeral,
                                             issuedAt: Int64(Date().timeIntervalSince1970 * 1000), identity: a.identity)
                let outcome: String
                do {
                    switch try await LineClient.exchange(.keyring(request), with: target, timeout: .seconds(3)) {
                    case .keyring: outcome = "HANDED-OVER"; handedOver.append("\(name)@\(target)")
                    case .refused(.keyring(let r)): outcome = r.code.rawValue
                    case .refused(let other): outcome = "refused:\(other)"
                    default: outcome = "other"
                    }
                } catch { outcome = "unreachable" }
                outcomes.append("\(name)@\(target):\(outcome)")
            }
        }
        emit(["attack": "keyring", "outcomes": outcomes, "handed_over": handedOver])
    }
}

// MARK: - Plain gossip with the held key

struct Chatter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Gossip as this member with the keys it holds (pings, digests, its record) and count what opens.")
    @OptionGroup var options: Options
    @Option(help: "Datagrams to each target.") var count = 20

    func run() async throws {
        let a = try await options.attacker(sync: false)
        let targets = try options.endpoints
        guard let state = a.state else { throw HostileError("needs a member's state") }
        let record = try a.ownRecord(version: a.freshVersion)
        for t in targets {
            for i in 0..<count {
                switch i % 3 {
                case 0: a.send([.ping(seq: UInt32(i), target: "node1", source: state.node.name)], to: t)
                case 1: a.send([.digestSummary(fingerprints: [UInt32](repeating: 0, count: 32))], to: t)
                default: a.send([.record(record)], to: t)
                }
            }
        }
        a.drain(for: 1)
        emit(["attack": "chatter", "sent": a.sent, "received": a.received, "opened": a.received - a.unopened])
    }
}

// MARK: - Stranger

struct Stranger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Without the cluster key: gossip sealed with a key of its own, and the join port asked about names.")
    @OptionGroup var options: Options
    @Option(name: .customLong("existing-name"), help: "A member's name (the answers must not tell it exists).") var existing: [String] = []
    @Option(help: "Datagrams to each target.") var count = 30

    func run() async throws {
        let a = try await options.attacker(stranger: true)
        let targets = try options.endpoints
        let record = try a.record(name: "stranger-\(hex(2))", signer: a.identity, version: 1, podCIDRs: [], overlay: nil, certificate: nil)
        for t in targets {
            for i in 0..<count {
                switch i % 3 {
                case 0: a.send([.ping(seq: UInt32(i), target: existing.first ?? "node1", source: "stranger")], to: t)
                case 1: a.send([.digestSummary(fingerprints: [UInt32](repeating: 0, count: 32))], to: t)
                default: a.send([.record(record), .request([DigestRequest(nameHash: WireFormat.nameHash(existing.first ?? "node1"), haveVersion: 0)])], to: t)
                }
            }
            // Garbage of every size class too.
            a.sendRaw([], to: t)
            a.sendRaw([1], to: t)
            a.sendRaw(secureRandomBytes(600), to: t)
            a.sendRaw([2] + secureRandomBytes(100), to: t)
        }
        a.drain(for: 1.0)
        // The join port: what does it tell someone without a token or identity?
        var replies: [String: String] = [:]
        let fakeToken = JoinToken(id: secureRandomBytes(8), key: Key.generatePreshared(), clusterID: a.clusterID, endpoints: targets,
                                  expiresAt: Date().addingTimeInterval(600), usesLimit: 1,
                                  authorityFingerprint: secureRandomBytes(16))
        let nobody = "nosuchnode\(hex(2))"
        for target in targets {
            let join = JoinExchange.makeRequest(token: fakeToken, nodeName: "stranger", identity: a.identity.publicKey,
                                                wireGuardPublicKey: Key.generatePrivate().publicKey(), nonce: secureRandomBytes(24))
            replies["join@\(target)"] = await line(LineRequest.join(join).line(), target)
            replies["garbage@\(target)"] = await line(Array("hello wiremesh\n".utf8), target)
            for name in existing + [nobody] {
                let request = KeyringRequest(clusterID: a.clusterID, node: name, ephemeral: Key.generatePrivate(),
                                             issuedAt: Int64(Date().timeIntervalSince1970 * 1000), identity: a.identity)
                // The name asked about is the stranger's own words: taken out before comparing.
                replies["keyring:\(name)@\(target)"] = await line(LineRequest.keyring(request).line(), target)
                    .replacingOccurrences(of: name, with: "<name>")
            }
        }
        // Whether the keyring answers for existing names differ from the one for a name that does not exist.
        var oracle: [String] = []
        for target in targets {
            let base = replies["keyring:\(nobody)@\(target)"]
            for name in existing where replies["keyring:\(name)@\(target)"] != base { oracle.append("\(name)@\(target)") }
        }
        emit(["attack": "stranger", "sent": a.sent, "received": a.received, "opened": a.received - a.unopened,
              "replies": replies, "name_oracle": oracle])
    }

    /// The reply line, its JSON keys sorted (the encoder's key order varies from reply to reply).
    func line(_ bytes: [UInt8], _ target: Endpoint) async -> String {
        do {
            let reply = try await LineClient.exchange(line: bytes, with: target, timeout: .seconds(3))
            guard let object = try? JSONSerialization.jsonObject(with: Data(reply)),
                  let sorted = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
                return String(decoding: reply, as: UTF8.self)
            }
            return String(decoding: sorted, as: UTF8.self)
        } catch {
            return "error: \(error)"
        }
    }
}
