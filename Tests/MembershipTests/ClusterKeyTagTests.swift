import ByteCodec
import Testing
import WireMeshCrypto
@testable import Membership

@Suite("NodeRecord cluster key tags")
struct ClusterKeyTagTests {
    let identity = testIdentity("tags")

    func tag(_ label: String, _ generation: UInt64) -> ClusterKeyTag {
        ClusterKeyTag(id: ClusterKey(key: try! Key(bytes: testBytes(label))).id, generation: generation)
    }

    @Test func tagsRoundTripInTheSignedRecord() throws {
        var record = testRecord("a", index: 1, identity: identity)
        record.clusterKeys = [tag("k2", 300), tag("k1", 1)]
        let signed = try SignedNodeRecord(signing: record, with: identity)
        let decoded = try SignedNodeRecord.decode(signed.encode())
        #expect(decoded.verify())
        #expect(decoded.record.clusterKeys == record.clusterKeys)
        #expect(decoded.record == record)
    }

    @Test func aRecordWithoutTagsKeepsItsFormerBytes() throws {
        let plain = testRecord("a", index: 1, identity: identity)
        var tagged = plain
        tagged.clusterKeys = [tag("k1", 1)]
        let a = try plain.canonicalEncoding(), b = try tagged.canonicalEncoding()
        #expect(Array(b.prefix(a.count)) == a, "the tags are a trailing extension")
        #expect(b.count == a.count + 3 + ClusterKeyID.length + 1, "tag, length, count, id, generation")
    }

    @Test func tagsCannotBeChangedWithoutTheOwnersSignature() throws {
        var record = testRecord("a", index: 1, identity: identity)
        record.clusterKeys = [tag("k1", 1)]
        var bytes = try SignedNodeRecord(signing: record, with: identity).encode()
        // The generation varint is the record's last byte before the 64-byte signature.
        bytes[bytes.count - 65] ^= 0x02
        let forged = try SignedNodeRecord.decode(bytes)
        #expect(forged.record.clusterKeys.first?.generation == 3)
        #expect(!forged.verify())
    }

    @Test func malformedExtensionsAreRejected() throws {
        let base = try testRecord("a", index: 1, identity: identity).canonicalEncoding()
        func decode(_ tail: [UInt8]) throws(WireDecodeError) -> NodeRecord {
            var r = ByteReader(base + tail)
            return try NodeRecord.decode(&r)
        }
        let id = [UInt8](repeating: 1, count: ClusterKeyID.length)
        #expect(throws: WireDecodeError.self, "zero tags has no canonical form") { try decode([0xC1, 1, 0]) }
        #expect(throws: WireDecodeError.self, "a tag without a length") { try decode([0x7F]) }
        #expect(throws: WireDecodeError.self, "a length past the end") { try decode([0x7F, 5, 1, 2]) }
        #expect(throws: WireDecodeError.self, "truncated id") { try decode([0xC1, 4, 1, 1, 2, 3]) }
        #expect(throws: WireDecodeError.self, "trailing bytes in a known extension") { try decode([0xC1, 11, 1] + id + [1, 0xFF]) }
        #expect(throws: WireDecodeError.self, "the extension twice") {
            try decode([0xC1, 10, 1] + id + [1, 0xC1, 10, 1] + id + [2])
        }
        #expect(throws: WireDecodeError.self, "an unknown extension out of order") { try decode([0xC1, 10, 1] + id + [1, 0x80, 0]) }
        var tooMany = testRecord("a", index: 1, identity: identity)
        tooMany.clusterKeys = (0..<9).map { tag("k\($0)", UInt64($0)) }
        #expect(throws: RecordError.tooMany(field: "clusterKeys", count: 9, limit: 8)) { try tooMany.canonicalEncoding() }
    }

    /// Rolling upgrades: a newer node adds an extension this version does not know. The record is
    /// accepted, its known fields read, and its signature (over the bytes as written) still holds, so
    /// it is relayed unchanged.
    @Test func unknownExtensionsAreSkippedAndTheSignatureHolds() throws {
        var record = testRecord("a", index: 1, identity: identity)
        record.clusterKeys = [tag("k1", 7)]
        record.tokens = [TokenAnnouncement(id: [1, 2, 3, 4, 5, 6, 7, 8], createdAt: 1, expiresAt: 2, usesLimit: 3,
                                           issued: true, revoked: false, used: 0)]
        // Tags 0x05 (between the tokens and cluster keys) and 0xE0 (after them), as a newer node writes.
        let known = try record.canonicalEncoding()
        var plain = testRecord("a", index: 1, identity: identity)
        plain.tokens = record.tokens
        let head = try plain.canonicalEncoding()
        let encoded = head + [0x05, 3, 9, 9, 9] + Array(known[head.count...]) + [0xE0, 0x81, 0x01] + [UInt8](repeating: 0xAB, count: 129)
        let signed = SignedNodeRecord(record: record, encodedRecord: encoded,
                                      signature: identity.sign(NodeRecord.signingContext + encoded))
        let decoded = try SignedNodeRecord.decode(signed.encode())
        #expect(decoded.verify())
        #expect(decoded.encodedRecord == encoded)
        #expect(decoded.record.unknownExtensionTags == [0x05, 0xE0])
        #expect(decoded.record.clusterKeys == record.clusterKeys)
        #expect(decoded.record.tokens == record.tokens)
        var comparable = decoded.record
        comparable.unknownExtensionTags = []
        #expect(comparable == record)
    }
}
