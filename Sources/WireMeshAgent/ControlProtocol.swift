import Foundation
import WireMeshJoin

/// A request from the CLI to the agent over the control socket.
///
/// Wire form: one JSON object per line, discriminated by `"op"`, e.g.
/// `{"op":"token-create","ttl_seconds":86400,"uses":1}` or `{"op":"status"}`.
public enum ControlRequest: Sendable, Equatable {
    case status
    case peers
    /// `wiremesh token create [--ttl] [--uses]` (nil: the agent's defaults: 24 h, one use).
    case tokenCreate(ttlSeconds: Int64?, uses: Int?)
    case tokenList
    case tokenRevoke(id: String)
    case leave
    case rotateKey
    case clusterKeyRotate
    /// Evict a node (authority nodes only).
    case evict(name: String)

    /// The `op` value on the wire.
    public var op: String {
        switch self {
        case .status: return "status"
        case .peers: return "peers"
        case .tokenCreate: return "token-create"
        case .tokenList: return "token-list"
        case .tokenRevoke: return "token-revoke"
        case .leave: return "leave"
        case .rotateKey: return "rotate-key"
        case .clusterKeyRotate: return "cluster-key-rotate"
        case .evict: return "evict"
        }
    }
}

extension ControlRequest: Codable {
    enum CodingKeys: String, CodingKey { case op, ttlSeconds = "ttl_seconds", uses, id, name }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let op = try c.decode(String.self, forKey: .op)
        switch op {
        case "status": self = .status
        case "peers": self = .peers
        case "token-create":
            self = .tokenCreate(ttlSeconds: try c.decodeIfPresent(Int64.self, forKey: .ttlSeconds),
                                uses: try c.decodeIfPresent(Int.self, forKey: .uses))
        case "token-list": self = .tokenList
        case "token-revoke": self = .tokenRevoke(id: try c.decode(String.self, forKey: .id))
        case "leave": self = .leave
        case "rotate-key": self = .rotateKey
        case "cluster-key-rotate": self = .clusterKeyRotate
        case "evict": self = .evict(name: try c.decode(String.self, forKey: .name))
        default:
            throw DecodingError.dataCorruptedError(forKey: .op, in: c, debugDescription: "unknown op '\(op)'")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(op, forKey: .op)
        switch self {
        case .tokenCreate(let ttl, let uses):
            try c.encodeIfPresent(ttl, forKey: .ttlSeconds)
            try c.encodeIfPresent(uses, forKey: .uses)
        case .tokenRevoke(let id):
            try c.encode(id, forKey: .id)
        case .evict(let name):
            try c.encode(name, forKey: .name)
        default: break
        }
    }
}

/// What `wiremesh status` shows; `status --json` prints this object.
public struct StatusInfo: Codable, Sendable, Equatable {
    public var nodeName: String
    public var clusterID: String
    public var podCIDRs: [String]
    public var overlayAddress: String
    /// The node's IPv6 overlay address in a dual-stack cluster.
    public var overlayAddressV6: String?
    public var interface: String
    public var wireGuardPublicKey: String
    public var wireGuardPort: UInt16
    public var gossipPort: UInt16
    /// "kernel" or "userspace".
    public var backend: String
    /// Members other than this node that are alive.
    public var livePeers: Int
    public var keyCreatedAt: Date
    public var nextKeyRotation: Date?
    /// Installed cluster (gossip) keys, primary first (nil from agents before cluster-key rotation).
    public var clusterKeys: [ClusterKeyInfo]?
    /// steady, installing or retiring (`ClusterKeyPhase`).
    public var clusterKeyPhase: String?
    /// Why this node cannot get the cluster's current keys, and what to do (nil when fine).
    public var clusterKeyProblem: String?
    /// False when the agent cannot program its interface or routes: the node is black-holed.
    public var healthy: Bool?
    /// What is wrong and what to do, one sentence each (empty when healthy).
    public var problems: [String]?
    /// The underlay address other nodes reach this one at.
    public var advertiseAddress: String?
    /// The WireGuard interface MTU.
    public var mtu: Int?

    public init(nodeName: String, clusterID: String, podCIDRs: [String], overlayAddress: String, interface: String,
                wireGuardPublicKey: String, wireGuardPort: UInt16, gossipPort: UInt16, backend: String, livePeers: Int,
                keyCreatedAt: Date, nextKeyRotation: Date?, clusterKeys: [ClusterKeyInfo]? = nil,
                clusterKeyPhase: String? = nil, clusterKeyProblem: String? = nil, healthy: Bool? = nil,
                problems: [String]? = nil, advertiseAddress: String? = nil, mtu: Int? = nil, overlayAddressV6: String? = nil) {
        self.overlayAddressV6 = overlayAddressV6
        self.healthy = healthy
        self.problems = problems
        self.advertiseAddress = advertiseAddress
        self.mtu = mtu
        self.clusterKeys = clusterKeys
        self.clusterKeyPhase = clusterKeyPhase
        self.clusterKeyProblem = clusterKeyProblem
        self.nodeName = nodeName
        self.clusterID = clusterID
        self.podCIDRs = podCIDRs
        self.overlayAddress = overlayAddress
        self.interface = interface
        self.wireGuardPublicKey = wireGuardPublicKey
        self.wireGuardPort = wireGuardPort
        self.gossipPort = gossipPort
        self.backend = backend
        self.livePeers = livePeers
        self.keyCreatedAt = keyCreatedAt
        self.nextKeyRotation = nextKeyRotation
    }

    enum CodingKeys: String, CodingKey {
        case nodeName = "name", clusterID = "cluster_id", podCIDRs = "pod_cidrs", overlayAddress = "overlay_address"
        case overlayAddressV6 = "overlay_address_v6"
        case interface, wireGuardPublicKey = "public_key", wireGuardPort = "wireguard_port", gossipPort = "gossip_port"
        case backend, livePeers = "live_peers", keyCreatedAt = "key_created_at", nextKeyRotation = "next_key_rotation"
        case clusterKeys = "cluster_keys", clusterKeyPhase = "cluster_key_phase", clusterKeyProblem = "cluster_key_problem"
        case healthy, problems, advertiseAddress = "advertise_address", mtu
    }
}

/// One installed cluster key in `status` (never the key itself: its id is a fingerprint).
public struct ClusterKeyInfo: Codable, Sendable, Equatable {
    /// 16 hex digits.
    public var id: String
    /// 0 when not known yet.
    public var generation: UInt64
    public var primary: Bool
    /// When a retiring key is removed.
    public var retireAt: Date?

    public init(id: String, generation: UInt64, primary: Bool, retireAt: Date?) {
        self.id = id
        self.generation = generation
        self.primary = primary
        self.retireAt = retireAt
    }

    enum CodingKeys: String, CodingKey { case id, generation, primary, retireAt = "retire_at" }
}

/// One row of `wiremesh peers`; `peers --json` prints an array of these.
public struct PeerInfo: Codable, Sendable, Equatable {
    public var name: String
    /// alive, suspect, dead, left or evicted.
    public var state: String
    public var podCIDRs: [String]
    public var publicKey: String
    /// WireGuard endpoint "ADDRESS:PORT" (nil before the first contact).
    public var endpoint: String?
    /// Seconds since the latest WireGuard handshake (nil: never).
    public var secondsSinceHandshake: Int?
    /// Whether the device has a peer for this member (nil from agents before `graph`/`doctor`).
    public var onDevice: Bool?
    /// Bytes received from / sent to this peer since its peer was set up (nil: no peer on the device).
    public var receiveBytes: UInt64?
    public var transmitBytes: UInt64?
    /// The version of the member's signed record: the member's wall clock in ms when it made the record
    /// (start, key rotation); `doctor` reads clock skew from it.
    public var recordVersion: UInt64?

    public init(name: String, state: String, podCIDRs: [String], publicKey: String, endpoint: String?, secondsSinceHandshake: Int?,
                onDevice: Bool? = nil, receiveBytes: UInt64? = nil, transmitBytes: UInt64? = nil, recordVersion: UInt64? = nil) {
        self.name = name
        self.state = state
        self.podCIDRs = podCIDRs
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.secondsSinceHandshake = secondsSinceHandshake
        self.onDevice = onDevice
        self.receiveBytes = receiveBytes
        self.transmitBytes = transmitBytes
        self.recordVersion = recordVersion
    }

    enum CodingKeys: String, CodingKey {
        case name, state, podCIDRs = "pod_cidrs", publicKey = "public_key", endpoint
        case secondsSinceHandshake = "seconds_since_handshake", onDevice = "on_device"
        case receiveBytes = "receive_bytes", transmitBytes = "transmit_bytes", recordVersion = "record_version"
    }
}

/// One row of `wiremesh token list`: a token as the whole cluster knows it (merged from every
/// member's announcements).
public struct TokenInfo: Codable, Sendable, Equatable {
    public var id: String
    public var state: TokenState
    /// nil when the issuer's announcement is not (or no longer) in the view.
    public var createdAt: Date?
    public var expiresAt: Date
    /// nil: unlimited until expiry.
    public var usesLimit: Int?
    /// Joins admitted with it, summed over all members.
    public var usesConsumed: Int
    /// nil: unlimited until expiry.
    public var usesLeft: Int?
    /// The member(s) that created it.
    public var issuedBy: [String]
    /// The members that revoked it or relay the revocation.
    public var revokedBy: [String]

    public init(id: String, state: TokenState, createdAt: Date?, expiresAt: Date, usesLimit: Int? = nil, usesConsumed: Int = 0,
                usesLeft: Int?, issuedBy: [String] = [], revokedBy: [String] = []) {
        self.id = id
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLimit = usesLimit
        self.usesConsumed = usesConsumed
        self.usesLeft = usesLeft
        self.issuedBy = issuedBy
        self.revokedBy = revokedBy
    }

    /// The listing of a token at `now`.
    public init(_ token: ClusterToken, now: Date) {
        id = token.id
        state = token.state(at: now)
        createdAt = token.createdAt
        expiresAt = token.expiresAt
        usesLimit = token.usesLimit
        usesConsumed = token.used
        usesLeft = token.usesLeft
        issuedBy = token.issuedBy.sorted()
        revokedBy = token.revokedBy.sorted()
    }

    enum CodingKeys: String, CodingKey {
        case id, state, createdAt = "created_at", expiresAt = "expires_at", usesLimit = "uses_limit"
        case usesConsumed = "uses_consumed", usesLeft = "uses_left", issuedBy = "issued_by", revokedBy = "revoked_by"
    }
}

/// An error the agent reports for a request; `message` is for a person, `code` for scripts.
public struct ControlFailure: Codable, Sendable, Equatable, Error, CustomStringConvertible {
    /// e.g. bad-request, unknown-token, invalid-value, not-supported, internal.
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Codes that mean the request asked for something impossible (a bad value, an unknown id): the
    /// CLI exits 2 for these, 1 for every other (operational) failure.
    public static let badInputCodes: Set<String> = ["invalid-value", "unknown-token"]

    /// True when the person's input was wrong rather than the agent or the system.
    public var isBadInput: Bool { Self.badInputCodes.contains(code) }

    /// The failure to report for an error raised while handling a request: the error's own text,
    /// and a code from its kind (join errors use the `JoinRejection` codes).
    public init(_ error: Error) {
        let code: String
        switch error {
        case is JoinError: code = JoinRejection(error).code.rawValue
        case is IPAMError: code = "ipam"
        case is StateError, is FileError: code = "state"
        case is ConfigError: code = "config"
        case let failure as ControlFailure: code = failure.code
        case let token as TokenRequestError: code = token.code
        default: code = "internal"
        }
        self.init(code: code, message: "\(error)")
    }
}

/// The agent's answer to one `ControlRequest`.
///
/// Wire form: one JSON object per line, discriminated by `"type"`, e.g.
/// `{"type":"status","status":{...}}` or `{"type":"error","error":{"code":...,"message":...}}`.
public enum ControlResponse: Sendable, Equatable {
    case status(StatusInfo)
    case peers([PeerInfo])
    /// The new token's text (printed alone on stdout) and its listing.
    case tokenCreated(token: String, info: TokenInfo)
    case tokens([TokenInfo])
    /// Acknowledgement of an action (revoke, leave, rotate-key, cluster-key rotate) with a message.
    case done(String)
    case failure(ControlFailure)
}

extension ControlResponse: Codable {
    enum CodingKeys: String, CodingKey { case type, status, peers, token, info, tokens, message, error }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "status": self = .status(try c.decode(StatusInfo.self, forKey: .status))
        case "peers": self = .peers(try c.decode([PeerInfo].self, forKey: .peers))
        case "token-created":
            self = .tokenCreated(token: try c.decode(String.self, forKey: .token), info: try c.decode(TokenInfo.self, forKey: .info))
        case "tokens": self = .tokens(try c.decode([TokenInfo].self, forKey: .tokens))
        case "done": self = .done(try c.decode(String.self, forKey: .message))
        case "error": self = .failure(try c.decode(ControlFailure.self, forKey: .error))
        default:
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown response type '\(type)'")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .status(let s):
            try c.encode("status", forKey: .type)
            try c.encode(s, forKey: .status)
        case .peers(let p):
            try c.encode("peers", forKey: .type)
            try c.encode(p, forKey: .peers)
        case .tokenCreated(let token, let info):
            try c.encode("token-created", forKey: .type)
            try c.encode(token, forKey: .token)
            try c.encode(info, forKey: .info)
        case .tokens(let t):
            try c.encode("tokens", forKey: .type)
            try c.encode(t, forKey: .tokens)
        case .done(let m):
            try c.encode("done", forKey: .type)
            try c.encode(m, forKey: .message)
        case .failure(let f):
            try c.encode("error", forKey: .type)
            try c.encode(f, forKey: .error)
        }
    }
}

/// The line codec of the control protocol: one compact JSON object per line, dates in ISO 8601.
public enum ControlCodec {
    /// Longest line accepted (a peers listing of thousands of nodes fits easily).
    public static let maxLineLength = 4 << 20

    /// Encodes a message as one line (with the trailing newline).
    public static func encodeLine<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Compact JSON escapes control characters inside strings, so it never contains a raw newline.
        return Array(try encoder.encode(value)) + [0x0A]
    }

    /// Decodes one line (with or without its newline).
    public static func decode<T: Decodable>(_ type: T.Type, from line: [UInt8]) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var bytes = line
        if bytes.last == 0x0A { bytes.removeLast() }
        return try decoder.decode(type, from: Data(bytes))
    }

    /// A failure response for a line that is not a valid request.
    public static func badRequest(_ error: Error) -> ControlResponse {
        let reason = (error as? DecodingError).map(StateStore.describe) ?? "\(error)"
        return .failure(ControlFailure(code: "bad-request", message: "malformed control request: \(reason)"))
    }
}
