import ByteCodec
/// One join token's state as a member announces it in its own signed record, so every member can
/// list, refuse and count the tokens of the whole cluster without a central server.
///
/// A member announces only what it did itself (issued, revoked, joins admitted) plus revocations it
/// learned from others (so a revocation outlives the member that made it); the cluster-wide state is
/// the merge over all records (revoked anywhere, uses summed). Entries of expired tokens are dropped.
public struct TokenAnnouncement: Sendable, Equatable, Hashable {
    /// Encoded size of one entry: id 8, created 4, expiry 4, uses limit 2, flags 1, used 2.
    public static let encodedSize = 21
    /// At most this many entries per record (24 × 21 B = 504 B): the largest record an agent writes
    /// (63-byte name, pending key, v4 + v6 endpoints) is then 825 B signed, within the 1019 B that fit
    /// a datagram next to a probe (`MembershipNode.checkRecordSize`), with room for other fields.
    public static let maxPerRecord = 24

    /// The token id (8 random bytes, printed as 16 hex digits).
    public var id: [UInt8]
    /// When the token was created (Unix seconds; 0 when this member did not issue it).
    public var createdAt: UInt32
    /// When the token stops being accepted (Unix seconds).
    public var expiresAt: UInt32
    /// The token's uses limit; 0 = unlimited until expiry.
    public var usesLimit: UInt16
    /// This member issued the token.
    public var issued: Bool
    /// This member revoked the token (or relays a revocation it saw).
    public var revoked: Bool
    /// Joins this member admitted with the token.
    public var used: UInt16

    public init(id: [UInt8], createdAt: UInt32 = 0, expiresAt: UInt32, usesLimit: UInt16 = 0, issued: Bool = false,
                revoked: Bool = false, used: UInt16 = 0) {
        precondition(id.count == 8, "token ids are 8 bytes")
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLimit = usesLimit
        self.issued = issued
        self.revoked = revoked
        self.used = used
    }

    static let issuedFlag: UInt8 = 1
    static let revokedFlag: UInt8 = 2

    /// Appends the token section of a record: tag 1, count, entries sorted by id. Nothing for none,
    /// so records without tokens encode exactly as before.
    /// Writes the token section's body (the record frames it with `sectionTag` and a length).
    static func encodeEntries(_ entries: [TokenAnnouncement], into w: inout ByteWriter) {
        w.u8(UInt8(entries.count))
        for e in entries.sorted(by: { $0.id.lexicographicallyPrecedes($1.id) }) {
            w.raw(e.id)
            w.u32(e.createdAt)
            w.u32(e.expiresAt)
            w.u16(e.usesLimit)
            w.u8((e.issued ? issuedFlag : 0) | (e.revoked ? revokedFlag : 0))
            w.u16(e.used)
        }
    }

    /// Reads the token section's body.
    /// Strict, so each record keeps exactly one encoding: entries sorted, ids unique, no unknown flags.
    static func decodeEntries(_ r: inout ByteReader) throws(WireDecodeError) -> [TokenAnnouncement] {
        let n = Int(try r.u8())
        guard n >= 1, n <= maxPerRecord else { throw .malformed("token entry count \(n)") }
        var out: [TokenAnnouncement] = []
        for _ in 0..<n {
            let id = Array(try r.raw(8))
            if let last = out.last, !last.id.lexicographicallyPrecedes(id) { throw .malformed("token entries not sorted") }
            let created = try r.u32(), expires = try r.u32(), limit = try r.u16(), flags = try r.u8(), used = try r.u16()
            guard flags & ~(issuedFlag | revokedFlag) == 0 else { throw .malformed("token entry flags") }
            out.append(TokenAnnouncement(id: id, createdAt: created, expiresAt: expires, usesLimit: limit,
                                         issued: flags & issuedFlag != 0, revoked: flags & revokedFlag != 0, used: used))
        }
        return out
    }

    static let sectionTag: UInt8 = 1
}
