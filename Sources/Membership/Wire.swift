import ByteCodec
import IPNetwork
import WireMeshCrypto

/// One protocol message. Several travel in one datagram, each as type (1 byte) ‖ length (2 bytes) ‖ body,
/// so a receiver skips types it does not know.
///
/// Public so that simulators and fuzzers can build arbitrary (including hostile) traffic.
public enum WireMessage: Sendable, Equatable {
    /// SWIM probe of `target` (the receiver checks it is addressed to it); `source` names the prober.
    case ping(seq: UInt32, target: String, source: String)
    /// Ask the receiver to probe `target` at `address` and relay the ack (or a nack) back.
    case pingReq(seq: UInt32, target: String, address: Endpoint)
    /// Answer to a ping (or relayed answer to a ping-req) with the same sequence number.
    case ack(seq: UInt32)
    /// An intermediary could not reach the target in time (Lifeguard: the prober is not the slow one).
    case nack(seq: UInt32)
    /// An owner-signed node record.
    case record(SignedNodeRecord)
    /// A liveness claim about `name` at record `version`; `from` names the claimant (for suspicion
    /// confirmations). `status` is never `.left`: leaving needs the owner's signature (`leave`).
    case status(name: String, version: UInt64, status: MemberStatus, from: String)
    /// The owner's signed notice that it leaves at (version, incarnation).
    case leave(LeaveNotice)
    /// Anti-entropy: 32-bit fingerprints of the sender's view, one per hash bucket.
    case digestSummary(fingerprints: [UInt32])
    /// Anti-entropy: every entry the sender has in the name-hash range `lower...upper`.
    case digestEntries(lower: UInt64, upper: UInt64, more: Bool, entries: [DigestEntry])
    /// Anti-entropy: send me the state of these members (with the version I have, 0 if none).
    case request([DigestRequest])

    var typeCode: UInt8 {
        switch self {
        case .ping: return 1
        case .pingReq: return 2
        case .ack: return 3
        case .nack: return 4
        case .record: return 5
        case .status: return 6
        case .leave: return 7
        case .digestSummary: return 8
        case .digestEntries: return 9
        case .request: return 10
        }
    }
}

/// A member's state in a digest: name hash, record version and status.
public struct DigestEntry: Sendable, Equatable {
    public var nameHash: UInt64
    public var version: UInt64
    public var status: MemberStatus
    public init(nameHash: UInt64, version: UInt64, status: MemberStatus) {
        self.nameHash = nameHash
        self.version = version
        self.status = status
    }
}

/// One item of an anti-entropy request: a name hash and the record version the requester has.
public struct DigestRequest: Sendable, Equatable {
    public var nameHash: UInt64
    public var haveVersion: UInt64
    public init(nameHash: UInt64, haveVersion: UInt64) {
        self.nameHash = nameHash
        self.haveVersion = haveVersion
    }
}

/// A graceful leave, signed by the leaving node over (name, identity, version, incarnation).
public struct LeaveNotice: Sendable, Equatable {
    public var name: String
    public var version: UInt64
    public var incarnation: UInt64
    public var signature: Signature

    static let signingContext = Array("wiremesh/leave/v1".utf8)

    /// The bytes the owner signs.
    static func signedBytes(name: String, identity: IdentityPublicKey, version: UInt64, incarnation: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 96)
        w.raw(signingContext)
        w.raw(identity.bytes)
        w.shortString(name)
        w.u64(version)
        w.u64(incarnation)
        return w.bytes
    }

    /// Signs a leave notice for `record` at `incarnation`.
    public init(record: NodeRecord, incarnation: UInt64, identity: SigningIdentity) {
        name = record.name
        version = record.version
        self.incarnation = incarnation
        signature = identity.sign(Self.signedBytes(name: record.name, identity: identity.publicKey,
                                                   version: record.version, incarnation: incarnation))
    }

    /// A notice with an arbitrary signature (for decoding and for forging in tests).
    public init(name: String, version: UInt64, incarnation: UInt64, signature: Signature) {
        self.name = name
        self.version = version
        self.incarnation = incarnation
        self.signature = signature
    }

    /// True when the notice is signed by `identity`.
    public func verify(identity: IdentityPublicKey) -> Bool {
        identity.verify(signature, over: Self.signedBytes(name: name, identity: identity, version: version, incarnation: incarnation))
    }
}

/// The payload codec: a payload (what `MembershipNode` emits and takes, sealed by `DatagramSeal` on
/// the wire) is a sequence of TLV messages.
public enum WireFormat {
    /// TLV header bytes per message.
    static let messageHeader = 3

    /// Encodes one message as TLV.
    public static func encode(_ message: WireMessage) -> [UInt8] {
        var body = ByteWriter(capacity: 64)
        switch message {
        case .ping(let seq, let target, let source):
            body.u32(seq); body.shortString(target); body.shortString(source)
        case .pingReq(let seq, let target, let address):
            body.u32(seq); body.shortString(target); body.endpoint(address)
        case .ack(let seq), .nack(let seq):
            body.u32(seq)
        case .record(let signed):
            signed.encode(into: &body)
        case .status(let name, let version, let status, let from):
            body.shortString(name); body.varint(version); body.u8(status.rank); body.varint(status.incarnation)
            body.shortString(from)
        case .leave(let notice):
            body.shortString(notice.name); body.varint(notice.version); body.varint(notice.incarnation)
            body.raw(notice.signature.bytes)
        case .digestSummary(let fps):
            body.u8(UInt8(truncatingIfNeeded: fps.count))
            for f in fps { body.u32(f) }
        case .digestEntries(let lower, let upper, let more, let entries):
            body.u64(lower); body.u64(upper); body.u8(more ? 1 : 0); body.varint(UInt64(entries.count))
            for e in entries {
                body.u64(e.nameHash); body.varint(e.version); body.u8(e.status.rank); body.varint(e.status.incarnation)
            }
        case .request(let items):
            body.varint(UInt64(items.count))
            for i in items { body.u64(i.nameHash); body.varint(i.haveVersion) }
        }
        var w = ByteWriter(capacity: body.bytes.count + 3)
        w.u8(message.typeCode)
        w.u16(UInt16(truncatingIfNeeded: body.bytes.count))
        w.raw(body.bytes)
        return w.bytes
    }

    /// Bytes needed for one digest entry.
    static func entrySize(_ e: DigestEntry) -> Int {
        8 + varintSize(e.version) + 1 + varintSize(e.status.incarnation)
    }

    static func varintSize(_ v: UInt64) -> Int {
        var n = 1
        var v = v >> 7
        while v > 0 { n += 1; v >>= 7 }
        return n
    }

    /// The result of decoding a payload: the messages that parsed, plus how many were skipped.
    public struct Decoded: Sendable, Equatable {
        public var messages: [WireMessage] = []
        /// Messages of unknown type (skipped by length).
        public var unknown = 0
        /// Messages of a known type whose body did not parse (skipped by length).
        public var malformed = 0
        /// True when the TLV framing itself ended early (the rest of the payload was dropped).
        public var truncated = false
    }

    /// Decodes a plaintext payload (a sequence of TLV messages). A pure function that never traps.
    public static func decodePayload(_ payload: [UInt8]) -> Decoded {
        var out = Decoded()
        var r = ByteReader(payload)
        while !r.isAtEnd {
            guard let type = try? r.u8(), let length = try? r.u16(), r.remaining >= Int(length) else {
                out.truncated = true
                break
            }
            let start = r.offset
            let end = start + Int(length)
            r.offset = end
            var body = ByteReader(payload, offset: start, end: end)
            do {
                if let m = try decodeBody(type: type, &body) {
                    guard body.isAtEnd else { out.malformed += 1; continue }
                    out.messages.append(m)
                } else {
                    out.unknown += 1
                }
            } catch {
                out.malformed += 1
            }
        }
        return out
    }

    static func decodeBody(type: UInt8, _ r: inout ByteReader) throws(WireDecodeError) -> WireMessage? {
        switch type {
        case 1:
            let seq = try r.u32()
            let target = try r.shortString()
            return .ping(seq: seq, target: target, source: try r.shortString())
        case 2:
            let seq = try r.u32()
            let target = try r.shortString()
            return .pingReq(seq: seq, target: target, address: try r.endpoint())
        case 3: return .ack(seq: try r.u32())
        case 4: return .nack(seq: try r.u32())
        case 5: return .record(try SignedNodeRecord.decode(&r))
        case 6:
            let name = try r.shortString()
            let version = try r.varint()
            let rank = try r.u8()
            let inc = try r.varint()
            guard rank <= 2, let status = MemberStatus(rank: rank, incarnation: inc) else { throw .malformed("status rank") }
            return .status(name: name, version: version, status: status, from: try r.shortString())
        case 7:
            let name = try r.shortString()
            let version = try r.varint()
            let inc = try r.varint()
            guard let sig = try? Signature(bytes: try r.raw(64)) else { throw .truncated }
            return .leave(LeaveNotice(name: name, version: version, incarnation: inc, signature: sig))
        case 8:
            let n = Int(try r.u8())
            var fps: [UInt32] = []
            fps.reserveCapacity(n)
            for _ in 0..<n { fps.append(try r.u32()) }
            return .digestSummary(fingerprints: fps)
        case 9:
            let lower = try r.u64()
            let upper = try r.u64()
            let more = try r.u8() != 0
            let n = try r.varint()
            guard n <= UInt64(r.remaining / 11) else { throw .malformed("entry count") }
            var entries: [DigestEntry] = []
            entries.reserveCapacity(Int(n))
            for _ in 0..<n {
                let h = try r.u64()
                let v = try r.varint()
                let rank = try r.u8()
                let inc = try r.varint()
                guard let s = MemberStatus(rank: rank, incarnation: inc) else { throw .malformed("status rank") }
                entries.append(DigestEntry(nameHash: h, version: v, status: s))
            }
            return .digestEntries(lower: lower, upper: upper, more: more, entries: entries)
        case 10:
            let n = try r.varint()
            guard n <= UInt64(r.remaining / 9) else { throw .malformed("request count") }
            var items: [DigestRequest] = []
            for _ in 0..<n {
                let h = try r.u64()
                items.append(DigestRequest(nameHash: h, haveVersion: try r.varint()))
            }
            return .request(items)
        default:
            return nil
        }
    }
}

extension WireFormat {
    /// The 64-bit hash by which digests and requests name a member (`DigestEntry.nameHash`). Public
    /// for tools that build traffic of their own (the hostile-member test tool, simulators).
    public static func nameHash(_ name: String) -> UInt64 { stableNameHash(name) }
}
