import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

/// Gossip datagrams as a member receives them: opened by `DatagramSeal` with the cluster keyring,
/// decoded by `WireFormat.decodePayload`, handled by a `MembershipNode` that checks every record
/// against the cluster authority (`ClusterTrust`).
///
/// The first byte picks the mode (low 2 bits) and how far the clock moves before the payload is
/// delivered a second time (high 6 bits, × 500 ms: probes, suspicions, reaping). The rest is:
/// - mode 0: a datagram as it comes off the wire (opened with the keyring; a mutation of a sealed
///   datagram fails its tag, so this mode tests the refusal paths);
/// - mode 1 / 2: a plaintext payload the target seals with the primary / the second key first, so the
///   fuzzer reaches the decoder and the core;
/// - mode 3: a plaintext payload whose records and leave notices the target re-signs with the
///   fixture's keys (and whose certificates it re-issues with the authority, or with a member's key
///   when a member made the original) before sealing, so mutated records get past their owner's
///   signature and reach `ClusterTrust.refusal` and the core.
/// A clock step of 63 (the high 6 bits all set) delivers the payload as a push/pull request over the
/// stream instead (`receivePushPull(request:)`, up to `pushPullMaxBytes`), still through the mode's
/// sealing or re-signing. The node runs with push/pull on (`wiremeshPushPull`).
enum GossipTarget {
    static let target = FuzzTarget(
        name: "gossip",
        summary: "DatagramSeal.open, WireFormat.decodePayload, MembershipNode.receive with ClusterTrust (sealed, plaintext and re-signed modes)",
        run: run, seeds: seeds)

    static let from = try! Endpoint("192.0.2.200:7946")
    static let start = Instant.seconds(1000)

    static let config: MembershipConfig = {
        var c = MembershipConfig.wiremeshPushPull
        c.reapTime = .seconds(10)
        c.tombstoneTime = .seconds(20)
        return c
    }()

    /// The receiving node: certified, trusting the authority (with its revocation list), three
    /// members in view (n3 has left). Copied per input (a value type), so inputs do not interact.
    nonisolated(unsafe) static var base: MembershipNode?

    static func setUp() -> MembershipNode {
        if let base { return base }
        var node = try! MembershipNode(config: config, identity: TrustFixture.identities[TrustFixture.local],
                                       record: TrustFixture.record(TrustFixture.local), seed: 1, now: start)
        _ = node.setTrust(TrustFixture.trust, now: start)
        node.seed(with: [1, 2, 3].map { TrustFixture.signed($0) }, now: start)
        let leave = LeaveNotice(record: TrustFixture.record(TrustFixture.left), incarnation: 0,
                                identity: TrustFixture.identities[TrustFixture.left])
        _ = node.receive(payload: WireFormat.encode(.leave(leave)), from: from, now: start)
        precondition(node.member(named: TrustFixture.names[TrustFixture.left])?.status == .left(incarnation: 0))
        base = node
        return node
    }

    static let payloadBudget = config.maxDatagram - config.sealOverhead

    static func run(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let body = Array(data.dropFirst())
        let mode = first & 3
        let viaStream = first >> 2 == 63
        let advance = viaStream ? Duration.zero : Duration.milliseconds(500 * Int(first >> 2))
        var seal = DatagramSeal(keyring: TrustFixture.keyring, clusterID: TrustFixture.clusterIDBytes, maxDatagram: config.maxDatagram)

        let payload: [UInt8]
        switch mode {
        case 0:
            let pure = DatagramSeal.decode(body, keyring: TrustFixture.keyring, clusterID: TrustFixture.clusterIDBytes,
                                           maxDatagram: config.maxDatagram)
            guard let opened = seal.open(body, now: start) else {
                require(seal.counters.datagramsReceived == 1, "a dropped datagram was not counted")
                if case .success = pure { fatalError("invariant broken: decode opened what open dropped") }
                return
            }
            guard case .success(let decoded) = pure, decoded == WireFormat.decodePayload(opened.payload) else {
                fatalError("invariant broken: open and decode disagree")
            }
            payload = opened.payload
        case 1, 2:
            payload = body
            sealAndOpen(payload, keyIndex: Int(mode) - 1, &seal)
        default:
            payload = resigned(body)
            sealAndOpen(payload, keyIndex: 0, &seal)
        }
        // The core only ever receives what fits a datagram (or a push/pull payload).
        guard payload.count <= (viaStream ? config.pushPullMaxBytes : payloadBudget) else { return }
        checkCodec(payload)

        var node = setUp()
        let trust = node.trust!
        if viaStream {
            check(node.receivePushPull(request: payload, from: from, now: start), node)
            // A reply nobody asked for is refused whatever it holds.
            let before = node.members
            check(node.receivePushPull(reply: payload, from: from, now: start), node)
            require(node.members == before, "an unsolicited push/pull reply changed the view")
            check(node.tick(now: start + .seconds(30)), node)
            require(node.trust == trust, "the core changed its trust by itself")
            return
        }
        check(node.receive(payload: payload, from: from, now: start), node)
        if advance > .zero {
            check(node.tick(now: start + advance), node)
            // The same payload again, later (resent by a peer with a new nonce): after suspicions,
            // refutations, reaping.
            check(node.receive(payload: payload, from: from, now: start + advance), node)
        }
        check(node.tick(now: start + advance + .seconds(30)), node)
        require(node.trust == trust, "the core changed its trust by itself")
    }

    /// Seals `payload` with key `keyIndex` of the keyring; it must open to itself, once.
    static func sealAndOpen(_ payload: [UInt8], keyIndex: Int, _ seal: inout DatagramSeal) {
        let keys = TrustFixture.keyring.keys
        let datagram = DatagramSeal.seal(payload, keyring: Keyring(primary: keys[keyIndex]), clusterID: TrustFixture.clusterIDBytes)
        let opened = seal.open(datagram, now: start)
        if datagram.count > seal.maxDatagram {
            require(opened == nil && seal.counters.droppedOversized == 1, "an oversized datagram opened")
            return
        }
        require(opened?.payload == payload && opened?.keyIndex == keyIndex, "a sealed payload does not open to itself")
        require(seal.open(datagram, now: start) == nil && seal.counters.droppedReplayed == 1, "a replayed datagram opened again")
        var other = datagram
        other[other.count - 1] ^= 1
        require(seal.open(other, now: start) == nil && seal.counters.droppedAuthFailed == 1, "a tampered datagram opened")
    }

    /// Decoded messages re-encode to bytes that decode to the same messages.
    static func checkCodec(_ payload: [UInt8]) {
        let decoded = WireFormat.decodePayload(payload)
        let again = WireFormat.decodePayload(decoded.messages.flatMap { WireFormat.encode($0) })
        require(again.messages == decoded.messages, "messages re-encoded decode differently")
        require(again.unknown == 0 && again.malformed == 0 && !again.truncated, "re-encoded messages do not decode cleanly")
    }

    /// What the node emits fits a datagram and decodes cleanly; its view holds only certified members.
    static func check(_ directives: [Directive], _ node: MembershipNode) {
        let trust = node.trust!
        let localName = TrustFixture.names[TrustFixture.local]
        for d in directives {
            switch d {
            case .send(let payload, _):
                require(!payload.isEmpty && payload.count <= payloadBudget, "a payload of \(payload.count) bytes (budget \(payloadBudget))")
                let decoded = WireFormat.decodePayload(payload)
                require(decoded.unknown == 0 && decoded.malformed == 0 && !decoded.truncated, "the node emitted a malformed payload")
            case .changed(let event):
                require(event.member.name != localName, "an event about the local node")
                if event.kind == .joined || event.kind == .updated {
                    require(isCertified(event.member.record, trust: trust), "\(event.kind) a member the authority does not vouch for")
                }
            case .pushPull(let payload, _), .pushPullReply(let payload, _):
                require(payload.count <= node.config.pushPullMaxBytes, "a push/pull payload of \(payload.count) bytes")
                let decoded = WireFormat.decodePayload(payload)
                require(decoded.unknown == 0 && decoded.malformed == 0 && !decoded.truncated, "the node emitted a malformed push/pull payload")
            case .streamProbe(let payload, _), .streamProbeReply(let payload, _):
                require(payload.count <= MembershipNode.streamProbeMaxBytes, "a stream probe of \(payload.count) bytes")
                require(WireFormat.decodePayload(payload).messages.count == 1, "a stream probe that is not one message")
            case .wakeUp:
                break
            }
        }
        for m in node.members {
            require(m.name != localName, "the view holds the local node")
            require(isCertified(m.record, trust: trust), "the view holds \(m.name), which the authority does not vouch for")
        }
    }

    /// The payload with its records and leaves re-signed by the fixture key of their identity (or
    /// name), and certificates re-issued by the authority over what they say (so a mutated
    /// certificate still verifies and the prefix, range and revocation checks decide).
    static func resigned(_ payload: [UInt8]) -> [UInt8] {
        WireFormat.decodePayload(payload).messages.flatMap { m -> [UInt8] in
            switch m {
            case .record(let signed):
                return WireFormat.encode(.record(resign(signed)))
            case .leave(let notice):
                guard let i = TrustFixture.names.firstIndex(of: notice.name) else { return WireFormat.encode(m) }
                var r = TrustFixture.record(i)
                r.version = notice.version
                return WireFormat.encode(.leave(LeaveNotice(record: r, incarnation: notice.incarnation, identity: TrustFixture.identities[i])))
            default:
                return WireFormat.encode(m)
            }
        }
    }

    static func resign(_ signed: SignedNodeRecord) -> SignedNodeRecord {
        guard let signer = TrustFixture.signer(for: signed.record.identity) else { return signed }
        var r = signed.record
        if let cert = r.certificate {
            // A member's forgery stays one (re-made by the member), anything else is the authority's.
            let forged = cert.verify(clusterID: TrustFixture.clusterID, name: signed.record.name, identity: signed.record.identity,
                                     authority: TrustFixture.mallory.publicKey)
            r.certificate = TrustFixture.certificate(for: r, podCIDRs: cert.podCIDRs, overlayAddress: cert.overlayAddress,
                                                     issuedAt: cert.issuedAt, by: forged ? TrustFixture.mallory : TrustFixture.authority)
        }
        return (try? SignedNodeRecord(signing: r, with: signer)) ?? signed
    }

    static func seeds() throws -> [[UInt8]] {
        let f = TrustFixture.self
        let local = f.names[f.local]
        func payload(_ messages: [WireMessage]) -> [UInt8] { messages.flatMap { WireFormat.encode($0) } }
        func input(mode: UInt8, advance: UInt8, _ messages: [WireMessage]) -> [UInt8] { [mode | advance << 2] + payload(messages) }

        var n2 = f.record(2, version: 2)
        n2.labels = ["zone": "a", "rack": "7"]
        n2.tokens = [TokenAnnouncement(id: [1, 2, 3, 4, 5, 6, 7, 8], createdAt: 1_700_000_000, expiresAt: 1_700_003_600, usesLimit: 2,
                                       issued: true, used: 1)]
        n2.clusterKeys = f.keyring.keys.enumerated().map { ClusterKeyTag(id: $1.id, generation: UInt64(2 - $0)) }
        n2.revocationSerial = 1
        n2.pendingWireguardKey = f.key(0xE2).publicKey()
        n2.certificate = f.certificate(for: n2)
        // A new identity takes the name of n3, which left, with its own certificate.
        var heir = f.record(f.newcomer, version: 2)
        heir.name = f.names[f.left]
        heir.certificate = f.certificate(for: heir)
        // A member's own certificate, and a genuine one with a stolen block.
        var forged = f.record(f.newcomer)
        forged.certificate = f.certificate(for: forged, by: f.mallory)
        var hijack = f.record(f.newcomer)
        hijack.podCIDRs = [f.podCIDR(1)]
        // Our own record from an earlier life, at a higher version.
        let earlier = f.record(f.local, version: 7)
        let leaveN1 = LeaveNotice(record: f.record(1), incarnation: 2, identity: f.identities[1])
        let summary = [UInt32](repeating: 0, count: config.digestBuckets)
        let entries = [DigestEntry(nameHash: 0x1234, version: 1, status: .alive(incarnation: 0)),
                       DigestEntry(nameHash: 0x8000_0000_0000_0000, version: 3, status: .dead(incarnation: 2))]

        return [
            // A newcomer's record, its liveness, a probe of us.
            input(mode: 3, advance: 0, [.record(f.signed(f.newcomer)), .status(name: f.names[f.newcomer], version: 1, status: .alive(incarnation: 1), from: "n1"),
                                        .ping(seq: 7, target: local, source: "n1")]),
            // Every kind of probe and anti-entropy message, and claims about members.
            input(mode: 1, advance: 4, [.ping(seq: 1, target: local, source: "n1"), .pingReq(seq: 2, target: "n2", address: f.record(2).gossipAddress),
                                        .ack(seq: 3), .nack(seq: 4), .status(name: "n1", version: 1, status: .suspect(incarnation: 0), from: "n2"),
                                        .status(name: "n2", version: 1, status: .dead(incarnation: 1), from: "n1"),
                                        .digestSummary(fingerprints: summary), .digestEntries(lower: 0, upper: .max, more: false, entries: entries),
                                        .request([DigestRequest(nameHash: 0x1234, haveVersion: 0)])]),
            // A signed leave, and a suspicion of us (we refute).
            input(mode: 3, advance: 20, [.leave(leaveN1), .status(name: local, version: 1, status: .suspect(incarnation: 5), from: "n2")]),
            // An evicted identity with a genuine certificate.
            input(mode: 3, advance: 0, [.record(f.signed(f.evicted))]),
            // An update of n2 with every extension.
            input(mode: 3, advance: 2, [.record(f.signed(n2))]),
            // The heir of a left name, forgeries, our own earlier life.
            input(mode: 3, advance: 30, [.record(f.signed(heir)), .record(f.signed(forged)), .record(f.signed(hijack)),
                                         .record(f.signed(earlier))]),
            // Sealed with the second key of the keyring (a rotation in progress).
            input(mode: 2, advance: 0, [.status(name: "n1", version: 1, status: .alive(incarnation: 3), from: "n1"), .ack(seq: 9)]),
            // A liveness claim about us far above our version (the 2^64 - 1 datagram), unknown types.
            [1] + payload([.status(name: local, version: .max, status: .dead(incarnation: .max), from: "n2")]) + [0xEE, 0, 2, 1, 2],
            // A whole state over the stream (push/pull): records of every member, re-signed, and claims.
            input(mode: 3, advance: 63, [.record(f.signed(1)), .record(f.signed(2)), .record(f.signed(f.newcomer)), .record(f.signed(hijack)),
                                         .status(name: "n1", version: 1, status: .alive(incarnation: 0), from: "n2"),
                                         .status(name: local, version: 1, status: .dead(incarnation: 0), from: "n2"), .leave(leaveN1)]),
            // A datagram as it comes off the wire.
            [0] + DatagramSeal.datagram([.ping(seq: 5, target: local, source: "n2"), .record(f.signed(1))],
                                        keyring: f.keyring, clusterID: f.clusterIDBytes),
        ]
    }
}
