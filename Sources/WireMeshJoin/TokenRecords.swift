import ByteCodec
import Foundation
import Membership

/// What this member knows from its own actions about one token (`tokens.json`, 0600): whether it
/// issued or revoked it, how many joins it admitted with it, and the nonces of those requests. No
/// secret: K is derived again from the authority key when a request arrives.
/// The same entry, minus the nonces, is announced in this member's node record.
public struct TokenRecord: Codable, Sendable, Equatable {
    /// Token id, 16 hex digits.
    public var id: String
    /// When the token was created (set by its issuer only).
    public var createdAt: Date?
    public var expiresAt: Date
    /// The token's limit (nil: unlimited until expiry).
    public var usesLimit: Int?
    /// This member created the token.
    public var issued: Bool
    /// This member revoked it, or learned of a revocation from another member and relays it.
    public var revoked: Bool
    /// Joins this member admitted with the token.
    public var used: Int
    /// Nonces of join requests this member admitted (base64), so a replayed request is refused here.
    public var usedNonces: [String]

    public init(id: String, createdAt: Date? = nil, expiresAt: Date, usesLimit: Int?, issued: Bool = false,
                revoked: Bool = false, used: Int = 0, usedNonces: [String] = []) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLimit = usesLimit
        self.issued = issued
        self.revoked = revoked
        self.used = used
        self.usedNonces = usedNonces
    }

    enum CodingKeys: String, CodingKey {
        case id, createdAt = "created_at", expiresAt = "expires_at", usesLimit = "uses_limit", issued, revoked, used
        case usedNonces = "used_nonces"
    }

    /// The entry this member announces for the token.
    public var announcement: TokenAnnouncement? {
        guard let bytes = Hex.decode(id), bytes.count == JoinToken.idLength else { return nil }
        return TokenAnnouncement(id: bytes, createdAt: UInt32(clamping: Int64(createdAt?.timeIntervalSince1970 ?? 0)),
                                 expiresAt: UInt32(clamping: Int64(expiresAt.timeIntervalSince1970)),
                                 usesLimit: UInt16(clamping: usesLimit ?? 0), issued: issued, revoked: revoked,
                                 used: UInt16(clamping: used))
    }
}

/// Whether a token can still admit a node.
public enum TokenState: String, Codable, Sendable {
    case valid, expired, revoked, exhausted
}

/// One token as the whole cluster knows it: the merge of every member's announcement.
public struct ClusterToken: Sendable, Equatable {
    public var id: String
    public var createdAt: Date?
    public var expiresAt: Date
    public var usesLimit: Int?
    /// Members that announce having issued it (normally one).
    public var issuedBy: [String]
    /// Members that announce a revocation (the revoker and those relaying it).
    public var revokedBy: [String]
    /// Joins admitted with it, summed over the members' own counts.
    public var used: Int

    public init(id: String, createdAt: Date?, expiresAt: Date, usesLimit: Int?, issuedBy: [String], revokedBy: [String], used: Int) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLimit = usesLimit
        self.issuedBy = issuedBy
        self.revokedBy = revokedBy
        self.used = used
    }

    /// Revoked anywhere, then expired, then out of uses.
    public func state(at now: Date) -> TokenState {
        if !revokedBy.isEmpty { return .revoked }
        if now >= expiresAt { return .expired }
        if let usesLimit, used >= usesLimit { return .exhausted }
        return .valid
    }

    /// Joins still admitted (nil: unlimited until expiry).
    public var usesLeft: Int? { usesLimit.map { max(0, $0 - used) } }

    /// Throws the error a joiner should see unless the token still admits a join at `now`.
    public func checkUsable(at now: Date) throws {
        switch state(at: now) {
        case .revoked: throw JoinError.revoked(id: id)
        case .expired: throw JoinError.expired(id: id, at: expiresAt)
        case .exhausted: throw JoinError.exhausted(id: id)
        case .valid: return
        }
    }
}

/// Pure operations over this member's token entries and the announcements gossiped by the others.
public enum TokenRecords {
    /// The cluster-wide view: this member's entries merged with every member's announcement
    /// (dead and left members included while they are in the view: their uses and revocations
    /// still count). Keyed by token id.
    public static func merge(local: (name: String, records: [TokenRecord]),
                             members: [(name: String, tokens: [TokenAnnouncement])]) -> [String: ClusterToken] {
        var view: [String: ClusterToken] = [:]
        func add(_ id: String, from name: String, createdAt: Date?, expiresAt: Date, usesLimit: Int?, issued: Bool,
                 revoked: Bool, used: Int) {
            var t = view[id] ?? ClusterToken(id: id, createdAt: nil, expiresAt: expiresAt, usesLimit: usesLimit,
                                             issuedBy: [], revokedBy: [], used: 0)
            if issued {
                t.issuedBy.append(name)
                // The issuer's word on expiry and limit (a request's MAC pins them anyway).
                t.createdAt = createdAt ?? t.createdAt
                t.expiresAt = expiresAt
                t.usesLimit = usesLimit
            }
            if revoked { t.revokedBy.append(name) }
            t.used += used
            view[id] = t
        }
        for r in local.records {
            add(r.id, from: local.name, createdAt: r.createdAt, expiresAt: r.expiresAt, usesLimit: r.usesLimit,
                issued: r.issued, revoked: r.revoked, used: r.used)
        }
        for (name, tokens) in members where name != local.name {
            for a in tokens {
                add(Hex.encode(a.id), from: name, createdAt: a.createdAt == 0 ? nil : Date(timeIntervalSince1970: TimeInterval(a.createdAt)),
                    expiresAt: Date(timeIntervalSince1970: TimeInterval(a.expiresAt)),
                    usesLimit: a.usesLimit == 0 ? nil : Int(a.usesLimit), issued: a.issued, revoked: a.revoked, used: Int(a.used))
            }
        }
        return view
    }

    /// What this member announces: entries of tokens that have not expired, at most
    /// `TokenAnnouncement.maxPerRecord` (revocations first, then entries with admitted joins, then
    /// the latest-expiring issued ones), sorted by id.
    public static func announcements(_ records: [TokenRecord], now: Date) -> [TokenAnnouncement] {
        let live = records.filter { $0.expiresAt > now }
        let ranked = live.sorted { a, b in
            func rank(_ r: TokenRecord) -> Int { r.revoked ? 0 : r.used > 0 ? 1 : 2 }
            return (rank(a), -a.expiresAt.timeIntervalSince1970, a.id) < (rank(b), -b.expiresAt.timeIntervalSince1970, b.id)
        }
        return ranked.prefix(TokenAnnouncement.maxPerRecord).compactMap(\.announcement)
            .sorted { $0.id.lexicographicallyPrecedes($1.id) }
    }

    /// Number of unexpired entries this member holds (what `token create` must keep within the record's room).
    public static func liveCount(_ records: [TokenRecord], now: Date) -> Int {
        records.filter { $0.expiresAt > now }.count
    }

    /// Marks token `id` revoked in this member's entries. A token this member has no entry for is
    /// revoked if the cluster view knows it; an id nobody announces is `TokenRequestError.noSuchToken`.
    public static func revoke(_ id: String, in records: [TokenRecord], view: [String: ClusterToken]) throws -> [TokenRecord] {
        let id = try TokenReference.validatedID(id)  // anything else is refused without being repeated
        var out = records
        if let i = out.firstIndex(where: { $0.id == id }) {
            out[i].revoked = true
        } else if let t = view[id] {
            out.append(TokenRecord(id: id, expiresAt: t.expiresAt, usesLimit: t.usesLimit, revoked: true))
        } else {
            throw TokenRequestError.noSuchToken(id: id)
        }
        return out
    }

    /// Takes over revocations other members announce for tokens that have not expired, so the
    /// revocation is still gossiped after the revoking member is gone. Returns nil when nothing changes.
    public static func adoptingRevocations(_ records: [TokenRecord], view: [String: ClusterToken], now: Date) -> [TokenRecord]? {
        var out = records
        var changed = false
        for t in view.values.sorted(by: { $0.id < $1.id }) where !t.revokedBy.isEmpty && t.expiresAt > now {
            if let i = out.firstIndex(where: { $0.id == t.id }) {
                if !out[i].revoked { out[i].revoked = true; changed = true }
            } else {
                out.append(TokenRecord(id: t.id, expiresAt: t.expiresAt, usesLimit: t.usesLimit, revoked: true))
                changed = true
            }
        }
        return changed ? out : nil
    }

    /// Records one admitted join (count and nonce) in this member's entries.
    public static func recordingUse(of request: JoinRequest, nonce: String, in records: [TokenRecord]) -> [TokenRecord] {
        var out = records
        if let i = out.firstIndex(where: { $0.id == request.tokenID }) {
            out[i].used += 1
            out[i].usedNonces.append(nonce)
        } else {
            out.append(TokenRecord(id: request.tokenID, expiresAt: Date(timeIntervalSince1970: TimeInterval(request.expiresAt)),
                                   usesLimit: request.usesLimit == 0 ? nil : request.usesLimit, used: 1, usedNonces: [nonce]))
        }
        return out
    }

    /// Drops entries of tokens that expired more than `retention` ago (kept a while so `token list`
    /// can still show why a join failed); their nonces go with them, as an expired token is refused anyway.
    public static func pruned(_ records: [TokenRecord], now: Date, retention: TimeInterval = 7 * 86400) -> [TokenRecord] {
        records.filter { now.timeIntervalSince($0.expiresAt) < retention }
    }
}
