import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

/// Node records and the authority's documents they rely on: `SignedNodeRecord.decode` with the
/// canonical re-encoding of `NodeRecord`, `NodeCertificate(decoding:)`, `RevocationList(decoding:)`.
///
/// The first byte picks the mode (its low 7 bits mod 5), the rest is:
/// - 0: a signed record's wire form (decode, one encoding per record, verify, trust);
/// - 1: a certificate; 2: a revocation list (decode, re-encode to the same bytes, verify, adopt);
/// - 3: a signed record whose fields the fuzzer changed: the target re-signs it with the fixture key of
///   its identity (or of the identity the last byte picks) and re-issues its certificate with the
///   authority (or, when the first byte's bit 7 is set, with a member's key), so the record reaches
///   `ClusterTrust.refusal` and a `MembershipNode`'s `applyRecord`;
/// - 4: a revocation list the target re-signs with the authority: adopted when its serial is higher,
///   then installed in a node, which must evict every listed member.
enum NodeRecordTarget {
    static let target = FuzzTarget(
        name: "node-record",
        summary: "SignedNodeRecord.decode + canonical re-encoding, NodeCertificate, RevocationList; re-signed records through ClusterTrust and applyRecord",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let body = Array(data.dropFirst())
        switch (first & 0x7F) % 5 {
        case 0: decodeRecord(body)
        case 1: decodeCertificate(body)
        case 2: decodeRevocations(body)
        case 3: resignedRecord(body, forgedCertificate: first & 0x80 != 0)
        default: resignedRevocations(body)
        }
    }

    /// One encoding per record: the wire form re-encodes to its bytes, the record to its signed bytes.
    static func checkEncoding(_ signed: SignedNodeRecord, wire: [UInt8]) {
        require(signed.encode() == wire, "a decoded record re-encodes to other bytes")
        require(signed.encodedSize == wire.count, "encodedSize differs from the wire form")
        let record = signed.record
        do {
            try record.validate()
            if record.unknownExtensionTags.isEmpty {
                let canonical = try record.canonicalEncoding()
                require(canonical == signed.encodedRecord, "a decoded record's canonical encoding differs from its signed bytes")
            }
        } catch {
            fatalError("invariant broken: a decoded record does not validate: \(error)")
        }
        require((try? SignedNodeRecord.decode(signed.encode())) == signed, "a record decodes differently the second time")
    }

    static func decodeRecord(_ body: [UInt8]) {
        guard let signed = try? SignedNodeRecord.decode(body) else { return }
        checkEncoding(signed, wire: body)
        if signed.verify() {
            // Only the seeds (genuinely signed) get here: the trust decision must not trap either.
            _ = TrustFixture.trust.refusal(for: signed.record)
        }
        _ = signed.record.certificate?.verify(clusterID: TrustFixture.clusterID, name: signed.record.name,
                                               identity: signed.record.identity, authority: TrustFixture.authority.publicKey)
    }

    static func decodeCertificate(_ body: [UInt8]) {
        guard let cert = try? NodeCertificate(decoding: body) else { return }
        require(cert.encoded == body, "a decoded certificate re-encodes to other bytes")
        require(cert.podCIDRs.count <= 8, "a certificate with \(cert.podCIDRs.count) prefixes")
        let r = TrustFixture.record(1)
        _ = cert.verify(clusterID: TrustFixture.clusterID, name: r.name, identity: r.identity, authority: TrustFixture.authority.publicKey)
    }

    static func decodeRevocations(_ body: [UInt8]) {
        guard let list = try? RevocationList(decoding: body) else { return }
        require(list.encoded == body, "a decoded revocation list re-encodes to other bytes")
        require(list.entries.count <= RevocationList.maxEntries, "a list of \(list.entries.count) entries")
        var trust = TrustFixture.trust
        if trust.adopt(list) {
            require(list.verify(clusterID: TrustFixture.clusterID, authority: TrustFixture.authority.publicKey), "adopted a list that does not verify")
            require(TrustFixture.knownLists.contains(list.encoded), "a list the authority never signed verifies")
        }
    }

    /// The record (decoded without its signature) re-signed and re-certified by fixture keys.
    static func resignedRecord(_ body: [UInt8], forgedCertificate: Bool) {
        guard let decoded = try? SignedNodeRecord.decode(body) else { return }
        var record = decoded.record
        let signer: SigningIdentity
        if let known = TrustFixture.signer(for: record.identity) {
            signer = known
        } else {
            signer = TrustFixture.signers[TrustFixture.pick(body.last, TrustFixture.signers.count)]
            record.identity = signer.publicKey
        }
        if let cert = record.certificate {
            record.certificate = TrustFixture.certificate(for: record, podCIDRs: cert.podCIDRs, overlayAddress: cert.overlayAddress,
                                                          issuedAt: cert.issuedAt, by: forgedCertificate ? TrustFixture.mallory : TrustFixture.authority)
        }
        guard let signed = try? SignedNodeRecord(signing: record, with: signer) else { return }
        require(signed.verify(), "a freshly signed record does not verify")
        checkEncoding(signed, wire: signed.encode())

        let trust = TrustFixture.trust
        let refusal = trust.refusal(for: record)
        if refusal == nil {
            // What the trust takes is exactly what the authority vouches for.
            guard let cert = record.certificate else { fatalError("invariant broken: trusted a record without a certificate") }
            require(!forgedCertificate, "trusted a certificate a member signed")
            require(!trust.isEvicted(record.identity), "trusted an evicted identity")
            require(cert.podCIDRs == record.podCIDRs && cert.overlayAddress == record.overlayAddress, "trusted prefixes the certificate does not grant")
            require(cert.podCIDRs.allSatisfy { TrustFixture.range.contains($0) }, "trusted prefixes outside the cluster range")
            require(cert.verify(clusterID: TrustFixture.clusterID, name: record.name, identity: record.identity,
                                authority: TrustFixture.authority.publicKey), "trusted a certificate that does not verify")
        }

        // The record through a member's core, as gossip brings it.
        var node = GossipTarget.setUp()
        let directives = node.receive(payload: WireFormat.encode(.record(signed)), from: GossipTarget.from, now: GossipTarget.start)
        GossipTarget.check(directives, node)
        if refusal != nil {
            require(!node.members.contains { $0.record == signed }, "the core took a record the trust refuses (\(refusal!))")
        }
    }

    /// The list re-signed by the authority: adopted iff newer; a node given it evicts its members.
    static func resignedRevocations(_ body: [UInt8]) {
        guard let decoded = try? RevocationList(decoding: body) else { return }
        let list = TrustFixture.resign(decoded)
        require(list.verify(clusterID: TrustFixture.clusterID, authority: TrustFixture.authority.publicKey), "a list the authority signed does not verify")
        require((try? RevocationList(decoding: list.encoded)) == list, "a signed list does not decode to itself")
        var trust = TrustFixture.trust
        let adopted = trust.adopt(list)
        require(adopted == (list.serial > TrustFixture.revocations.serial), "adoption of serial \(list.serial) over \(TrustFixture.revocations.serial) was \(adopted)")
        guard adopted else { return }
        for e in list.entries { require(trust.isEvicted(e.identity), "a listed identity is not evicted") }
        require(trust.adopt(list) == false, "the same list adopted twice")

        var node = GossipTarget.setUp()
        let directives = node.setTrust(trust, now: GossipTarget.start)
        GossipTarget.check(directives, node)
        for m in node.members { require(!list.contains(m.record.record.identity), "\(m.name) stays in the view after its eviction") }
    }

    static func seeds() throws -> [[UInt8]] {
        let f = TrustFixture.self
        var full = f.record(2, version: 1_800_000_000_000)
        full.labels = ["zone": "a", "rack": "7", "é": "x"]
        full.tokens = [TokenAnnouncement(id: [1, 2, 3, 4, 5, 6, 7, 8], createdAt: 1_700_000_000, expiresAt: 1_700_003_600, usesLimit: 2,
                                         issued: true, used: 1),
                       TokenAnnouncement(id: [9, 9, 9, 9, 9, 9, 9, 9], expiresAt: 1_700_003_600, revoked: true)]
        full.clusterKeys = f.keyring.keys.enumerated().map { ClusterKeyTag(id: $1.id, generation: UInt64(2 - $0)) }
        full.revocationSerial = 3
        full.pendingWireguardKey = f.key(0xE2).publicKey()
        full.wireguardEndpoints.append(try Endpoint("[2001:db8::2]:51820"))
        full.podCIDRs = [f.podCIDR(2), try IPPrefix("fd00:0:0:3::/64")]
        full.certificate = f.certificate(for: full, podCIDRs: [f.podCIDR(2)])
        var bare = f.record(1)
        bare.certificate = nil
        bare.overlayAddress = nil
        var outside = f.record(f.newcomer)
        outside.podCIDRs = [try IPPrefix("192.168.0.0/16")]
        outside.certificate = f.certificate(for: outside)
        let second = f.nextRevocations
        return [
            [0] + f.signed(1).encode(),
            [0] + f.signed(full).encode(),
            [0] + f.signed(bare).encode(),
            [1] + f.record(1).certificate!.encoded,
            [1] + full.certificate!.encoded,
            [2] + f.revocations.encoded,
            [2] + second.encoded,
            [3] + f.signed(f.newcomer).encode(),
            [3] + f.signed(full).encode(),
            [3] + f.signed(f.evicted).encode(),
            [3] + f.signed(outside).encode(),
            [3 | 0x80] + f.signed(f.newcomer).encode(),
            [4] + f.revocations.encoded,
            [4] + second.encoded,
        ]
    }
}
