import ByteCodec
import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

@Suite("TokenAnnouncement")
struct TokenAnnouncementTests {
    func entry(_ n: UInt8, revoked: Bool = false, used: UInt16 = 0) -> TokenAnnouncement {
        TokenAnnouncement(id: [UInt8](repeating: n, count: 8), createdAt: 1_000, expiresAt: 2_000_000_000 + UInt32(n),
                          usesLimit: 3, issued: n % 2 == 0, revoked: revoked, used: used)
    }

    /// The biggest record an agent can announce: longest name, pending key, v4 + v6 endpoints,
    /// an overlay address and a full token section.
    func largestAgentRecord(identity: SigningIdentity) throws -> NodeRecord {
        NodeRecord(name: String(repeating: "n", count: 63), identity: identity.publicKey, version: 1,
                   wireguardKey: try Key(bytes: testBytes("wg")), pendingWireguardKey: try Key(bytes: testBytes("wg2")),
                   wireguardEndpoints: [try Endpoint("192.0.2.1:51820"), try Endpoint("[2001:db8::1]:51820")],
                   gossipAddress: try Endpoint("[2001:db8::1]:7946"), podCIDRs: [try IPPrefix("fd00:244:1:2::/64")],
                   overlayAddress: try IPAddress("fd00:244:1:2::"),
                   tokens: (0..<UInt8(TokenAnnouncement.maxPerRecord)).map { entry($0, revoked: $0 % 3 == 0, used: UInt16($0)) })
    }

    @Test func recordWithTokensRoundTripsSigned() throws {
        let identity = testIdentity("a")
        var record = testRecord("a", index: 1, identity: identity)
        record.tokens = [entry(2, used: 7), entry(1, revoked: true)]
        let signed = try SignedNodeRecord(signing: record, with: identity)
        let decoded = try SignedNodeRecord.decode(signed.encode())
        #expect(decoded.verify())
        // Canonical order is by id, whatever order the owner gave.
        #expect(decoded.record.tokens == [entry(1, revoked: true), entry(2, used: 7)])
        #expect(decoded.record.tokens[1].issued && !decoded.record.tokens[1].revoked && decoded.record.tokens[1].used == 7)
    }

    @Test func recordWithoutTokensEncodesAsBefore() throws {
        let identity = testIdentity("a")
        let record = testRecord("a", index: 1, identity: identity)
        var with = record
        with.tokens = [entry(1)]
        let plain = try record.canonicalEncoding()
        let extended = try with.canonicalEncoding()
        // No section at all without tokens: records of nodes that never touched a token are unchanged.
        #expect(extended.count == plain.count + 3 + TokenAnnouncement.encodedSize, "tag, length, count, entry")
        #expect(Array(extended.prefix(plain.count)) == plain)
    }

    @Test func strictDecodingKeepsOneEncodingPerRecord() throws {
        let identity = testIdentity("a")
        var record = testRecord("a", index: 1, identity: identity)
        record.tokens = [entry(1), entry(2)]
        let good = try record.canonicalEncoding()
        let size = TokenAnnouncement.encodedSize
        let section = good.count - 3 - 2 * size   // tag, length, count, entries
        #expect(good[section] == 1 && Int(good[section + 1]) == 1 + 2 * size && good[section + 2] == 2)
        let body = section + 3
        func decode(_ bytes: [UInt8]) throws(WireDecodeError) -> NodeRecord {
            var r = ByteReader(bytes)
            return try NodeRecord.decode(&r)
        }
        #expect(try decode(good).tokens.count == 2)
        var swapped = good   // entries out of order
        let first = Array(good[body..<(body + size)]), second = Array(good[(body + size)..<(body + 2 * size)])
        swapped.replaceSubrange(body..<(body + 2 * size), with: second + first)
        #expect(throws: WireDecodeError.self) { try decode(swapped) }
        var badFlags = good
        badFlags[body + 18] = 0x80
        #expect(throws: WireDecodeError.self) { try decode(badFlags) }
        // Another tag is an extension this version does not know: skipped, not an error.
        var otherTag = good
        otherTag[section] = 9
        let skipped = try decode(otherTag)
        #expect(skipped.tokens.isEmpty && skipped.unknownExtensionTags == [9])
        var zero = Array(good.prefix(section)) + [1, 1, 0]
        #expect(throws: WireDecodeError.self) { try decode(zero) }
        zero = Array(good.prefix(body + size))  // the length says two entries, one present
        #expect(throws: WireDecodeError.self) { try decode(zero) }
        zero = Array(good.prefix(section)) + [1, UInt8(1 + size), 2] + Array(good[body..<(body + size)])  // count 2, one entry
        #expect(throws: WireDecodeError.self) { try decode(zero) }
    }

    @Test func validationBoundsTheSection() throws {
        let identity = testIdentity("a")
        var record = testRecord("a", index: 1, identity: identity)
        record.tokens = (0...UInt8(TokenAnnouncement.maxPerRecord)).map { entry($0) }
        #expect(throws: RecordError.tooMany(field: "tokens", count: TokenAnnouncement.maxPerRecord + 1,
                                            limit: TokenAnnouncement.maxPerRecord)) { try record.canonicalEncoding() }
        record.tokens = [entry(1), entry(1)]
        #expect(throws: RecordError.self) { try record.canonicalEncoding() }
    }

    /// A full token section still fits one gossip datagram next to a probe: the node accepts the
    /// update (it refuses records that do not fit), and the record travels to a peer.
    @Test func fullSectionFitsTheDatagramBudget() throws {
        let identity = testIdentity("big")
        let big = try largestAgentRecord(identity: identity)
        let signed = try SignedNodeRecord(signing: big, with: identity)
        var node = try MembershipNode(config: testConfig(), identity: identity, record: testRecord(big.name, index: 1, identity: identity),
                                      seed: 1, now: .zero)
        _ = try node.updateLocalRecord(now: .zero) { $0 = big }
        #expect(node.localRecord.record.tokens.count == TokenAnnouncement.maxPerRecord)
        print("largest agent record with \(TokenAnnouncement.maxPerRecord) token entries: \(signed.encodedSize) bytes signed")
        // And it reaches another node through real datagrams.
        var pump = Pump()
        let a = pump.add("a", index: 1)
        let b = pump.add("b", index: 2)
        pump.join(b, seeds: [a])
        pump.run(for: .seconds(3))
        var tokens: [TokenAnnouncement] = []
        for i in 0..<TokenAnnouncement.maxPerRecord { tokens.append(entry(UInt8(i))) }
        pump.with(b) { node, now in (try? node.updateLocalRecord(now: now) { $0.tokens = tokens }) ?? [] }
        pump.run(for: .seconds(5))
        #expect(pump.nodes[a]!.member(named: "b")?.record.record.tokens == tokens)
    }
}
