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
        #expect(b.count == a.count + 2 + ClusterKeyID.length + 1)
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
        #expect(throws: WireDecodeError.self, "zero tags has no canonical form") { try decode([0xC1, 0]) }
        #expect(throws: WireDecodeError.self, "unknown extension") { try decode([0x7F]) }
        #expect(throws: WireDecodeError.self, "truncated id") { try decode([0xC1, 1, 1, 2, 3]) }
        #expect(throws: WireDecodeError.self, "the extension twice") {
            try decode([0xC1, 1] + [UInt8](repeating: 1, count: 8) + [1, 0xC1, 1] + [UInt8](repeating: 2, count: 8) + [2])
        }
        var tooMany = testRecord("a", index: 1, identity: identity)
        tooMany.clusterKeys = (0..<9).map { tag("k\($0)", UInt64($0)) }
        #expect(throws: RecordError.tooMany(field: "clusterKeys", count: 9, limit: 8)) { try tooMany.canonicalEncoding() }
    }
}
