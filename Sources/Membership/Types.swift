import IPNetwork
import WireMeshCrypto

/// The liveness of a member as this node believes it, within one record version.
///
/// The merge order (`<`) follows SWIM/memberlist: alive(n) < suspect(n) < dead(n) < alive(n+1), so a
/// node refutes a suspicion or a death by announcing a higher incarnation. `left` is signed by the
/// member itself and is final for its record version: only a record with a higher version (a rejoin)
/// replaces it. Claims about different record versions are ordered by the version first.
public enum MemberStatus: Sendable, Hashable, Comparable, CustomStringConvertible {
    case alive(incarnation: UInt64)
    case suspect(incarnation: UInt64)
    case dead(incarnation: UInt64)
    case left(incarnation: UInt64)

    /// The SWIM incarnation number the status was claimed at.
    public var incarnation: UInt64 {
        switch self {
        case .alive(let i), .suspect(let i), .dead(let i), .left(let i): return i
        }
    }

    /// 0 alive, 1 suspect, 2 dead, 3 left (the wire encoding too).
    var rank: UInt8 {
        switch self {
        case .alive: return 0
        case .suspect: return 1
        case .dead: return 2
        case .left: return 3
        }
    }

    init?(rank: UInt8, incarnation: UInt64) {
        switch rank {
        case 0: self = .alive(incarnation: incarnation)
        case 1: self = .suspect(incarnation: incarnation)
        case 2: self = .dead(incarnation: incarnation)
        case 3: self = .left(incarnation: incarnation)
        default: return nil
        }
    }

    /// True for alive and suspect: the member is still probed and still gets traffic.
    public var isActive: Bool { rank <= 1 }

    public static func < (a: MemberStatus, b: MemberStatus) -> Bool {
        if a.rank == 3 || b.rank == 3 {
            // left beats every incarnation of the same version.
            if a.rank == 3 && b.rank == 3 { return a.incarnation < b.incarnation }
            return b.rank == 3
        }
        if a.incarnation != b.incarnation { return a.incarnation < b.incarnation }
        return a.rank < b.rank
    }

    public var description: String {
        switch self {
        case .alive(let i): return "alive(\(i))"
        case .suspect(let i): return "suspect(\(i))"
        case .dead(let i): return "dead(\(i))"
        case .left(let i): return "left(\(i))"
        }
    }
}

/// Orders two claims about one member: record version first, then the status merge order.
func claimPrecedes(_ a: (version: UInt64, status: MemberStatus), _ b: (version: UInt64, status: MemberStatus)) -> Bool {
    if a.version != b.version { return a.version < b.version }
    return a.status < b.status
}

/// One member of the cluster as this node sees it.
public struct Member: Sendable, Equatable {
    /// The member's owner-signed record.
    public var record: SignedNodeRecord
    /// Its liveness.
    public var status: MemberStatus
    /// When this node last changed `status` or `record`.
    public var since: Instant

    public init(record: SignedNodeRecord, status: MemberStatus, since: Instant) {
        self.record = record
        self.status = status
        self.since = since
    }

    /// The member's node name.
    public var name: String { record.record.name }
}

/// A change in this node's view of the cluster, for the agent (reconciler) and for tests.
public struct MemberEvent: Sendable, Equatable {
    /// What changed.
    public enum Kind: Sendable, Equatable {
        /// A member appeared (first record accepted).
        case joined
        /// A member's record changed (higher version).
        case updated
        /// A member became suspect.
        case suspect
        /// A suspect or dead member was confirmed alive again.
        case alive
        /// A member was declared dead.
        case dead
        /// A member left gracefully (signed by itself).
        case left
        /// A dead or left member was removed from the view (a tombstone remains).
        case reaped
        /// The authority evicted the member: removed from the view, its records refused from now on.
        case evicted
    }

    public var kind: Kind
    /// The member after the change (for `.reaped`, its last state).
    public var member: Member

    public init(kind: Kind, member: Member) {
        self.kind = kind
        self.member = member
    }
}

/// What the shell (transport or simulator) must do after a call into the core.
public enum Directive: Sendable {
    /// Send this plaintext payload (at most `config.maxDatagram - config.sealOverhead` bytes) to this
    /// endpoint; the shell seals it (`DatagramSeal`).
    case send(payload: [UInt8], to: Endpoint)
    /// Call `tick(now:)` no later than this instant. A new wake-up replaces an earlier request only
    /// if it is earlier; calling `tick` early is harmless.
    case wakeUp(at: Instant)
    /// The view changed.
    case changed(MemberEvent)
    /// Open a stream to this member (its gossip address) and send this push/pull request (at most
    /// `config.pushPullMaxBytes` bytes, sealed by the shell); hand its reply to
    /// `receivePushPull(reply:from:now:)` with `from` set to the same endpoint.
    case pushPull(payload: [UInt8], to: Endpoint)
    /// The answer to the push/pull request that `receivePushPull(request:from:now:)` just took: send
    /// it back on the request's stream.
    case pushPullReply(payload: [UInt8], to: Endpoint)
    /// Open a stream to this member (its gossip address), send this ping (at most
    /// `MembershipNode.streamProbeMaxBytes`, sealed by the shell) and hand the reply to
    /// `receiveStreamProbe(reply:from:now:)`. A stream that fails needs no report: the probe times out.
    case streamProbe(payload: [UInt8], to: Endpoint)
    /// The answer to the stream probe `receiveStreamProbe(request:from:now:)` just took: send it back
    /// on the request's stream.
    case streamProbeReply(payload: [UInt8], to: Endpoint)
}

/// Counters for operators and tests: payloads and every reason a payload or message was refused.
/// (Datagrams dropped before opening are counted by the shell's `DatagramSeal`.)
public struct MembershipCounters: Sendable, Equatable {
    /// Plaintext payloads emitted (one datagram each once sealed).
    public var payloadsSent = 0
    /// Payloads handed to `receive`.
    public var payloadsReceived = 0
    public var payloadBytesSent = 0
    public var payloadBytesReceived = 0
    /// Payloads whose messages do not parse (the rest of the payload is dropped).
    public var droppedMalformed = 0
    /// Messages of a type this version does not know (skipped, not fatal).
    public var unknownMessagesSkipped = 0
    /// Records or leaves whose signature does not verify.
    public var rejectedBadSignature = 0
    /// Records the cluster authority does not vouch for (`ClusterTrust`): no or a forged certificate,
    /// prefixes it does not grant or outside the range, an evicted identity.
    public var rejectedUntrusted = 0
    /// Records refused before, seen again (not verified a second time).
    public var rejectedRepeated = 0
    /// Records whose name is bound to another identity.
    public var rejectedIdentityConflict = 0
    /// Records or claims older than what this node has (including replays).
    public var ignoredStale = 0
    /// Acks/nacks whose sequence number is not pending (late or replayed).
    public var ignoredUnexpectedAck = 0
    /// Pings addressed to another node name.
    public var ignoredMisdirected = 0
    /// Signature verifications performed.
    public var signaturesVerified = 0
    /// Records of new members refused because the view holds `maxMembers` already.
    public var rejectedViewFull = 0
    /// Probes of an active member that ended without an ack: each started (or confirmed) a suspicion.
    public var probesFailed = 0
    /// Direct pings sent again after the probe timeout (`probeRetries`), and stream probes sent.
    public var probeRetriesSent = 0
    public var streamProbesSent = 0
    /// Probes that only a stream reply acked, and stream probes this node answered.
    public var streamProbeAcks = 0
    public var streamProbesAnswered = 0
    /// Stream probe requests or replies refused: oversized, not one ping addressed to us (or one ack
    /// of our pending probe of that member), or over the answer rate.
    public var streamProbesRefused = 0
    /// Suspicions told directly to the suspect shortly before their deadline (`suspicionCheckLead`).
    public var suspicionChecksSent = 0
    /// Suspicions that ended with the member alive again (refuted) or declared dead (confirmed).
    public var suspicionsRefuted = 0
    public var suspicionsConfirmed = 0
    /// Push/pulls this node started, requests it answered, and replies it took in.
    public var pushPullsStarted = 0
    public var pushPullsAnswered = 0
    public var pushPullRepliesApplied = 0
    /// Push/pull payloads refused: over `pushPullMaxBytes`, a reply nobody asked for (or too late),
    /// or a request over the answer rate.
    public var pushPullOversized = 0
    public var pushPullUnsolicited = 0
    public var pushPullRateLimited = 0
    /// Messages in a push/pull payload of a kind it may not carry (probes, digests, requests): skipped.
    public var pushPullDisallowedMessages = 0
    /// Bytes of push/pull payloads sent and received (requests and replies).
    public var pushPullBytesSent = 0
    public var pushPullBytesReceived = 0

    public init() {}
}

/// Why the local node could not be created or its record changed.
public enum MembershipError: Error, Equatable, Sendable, CustomStringConvertible {
    case record(RecordError)
    case invalidConfig(String)
    /// The local record's version is at its maximum: it cannot change again.
    case versionExhausted

    public var description: String {
        switch self {
        case .record(let e): return e.description
        case .invalidConfig(let why): return "invalid membership configuration: \(why)"
        case .versionExhausted: return "this node's record version is at its maximum (2^64 - 1) and cannot change again: join the cluster again with a new state directory"
        }
    }
}
