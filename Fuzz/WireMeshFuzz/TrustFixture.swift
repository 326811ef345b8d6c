import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

/// The fixed cluster the trust-model targets (gossip, node-record, join-token, keyring-message) run
/// in: an authority, a few certified nodes, one evicted, a two-key keyring. Every key is a constant,
/// so an input replays the same way on every run and the targets can re-sign or re-seal what the
/// fuzzer mutated (structure-aware modes) with the keys the receiver trusts.
enum TrustFixture {
    static func key(_ byte: UInt8) -> Key { try! Key(bytes: [UInt8](repeating: byte, count: 32)) }

    static let clusterID = "c0ffee00c0ffee00"
    static let clusterIDBytes = Array(clusterID.utf8)
    static let range = try! IPPrefix("10.244.0.0/16")
    /// The cluster authority: signs certificates, revocation lists, join answers; derives token keys.
    static let authority = SigningIdentity(seed: key(0xA0))
    /// A member's identity that is not the authority (its certificates and lists are forgeries).
    static let mallory = SigningIdentity(seed: key(0xA1))

    /// Node names; index 0 is the receiving (local) node. `n3` has left (in the gossip target's
    /// view), `evicted` is on the revocation list, `newcomer` is certified but not in the view yet.
    static let names = ["local", "n1", "n2", "n3", "evicted", "newcomer"]
    static let local = 0, left = 3, evicted = 4, newcomer = 5
    static let identities: [SigningIdentity] = names.indices.map { SigningIdentity(seed: key(0xB0 + UInt8($0))) }
    /// Every identity whose seed the targets hold, to re-sign what the fuzzer changed.
    static let signers: [SigningIdentity] = identities + [authority, mallory]

    static func signer(for identity: IdentityPublicKey) -> SigningIdentity? {
        signers.first { $0.publicKey == identity }
    }

    static let keyring = Keyring(primary: ClusterKey(key: key(0xC0)), others: [ClusterKey(key: key(0xC1))])

    /// Evicts `evicted` (serial 1).
    static let revocations: RevocationList = try! RevocationList.issue(
        adding: .init(name: names[evicted], identity: identities[evicted].publicKey, evictedAt: 1_700_000_000_000),
        to: nil, clusterID: clusterID, authority: authority)

    /// The next list (serial 2): also evicts n2.
    static let nextRevocations: RevocationList = try! RevocationList.issue(
        adding: .init(name: names[2], identity: identities[2].publicKey, evictedAt: 1_700_000_001_000),
        to: revocations, clusterID: clusterID, authority: authority)

    static let trust = ClusterTrust(authority: authority.publicKey, clusterID: clusterID, ranges: [range], revocations: revocations)

    static func podCIDR(_ i: Int) -> IPPrefix { try! IPPrefix("10.244.\(i + 1).0/24") }
    static func overlay(_ i: Int) -> IPAddress { try! IPAddress("10.244.\(i + 1).0") }

    /// Node `i`'s record with the authority's certificate for exactly what it claims.
    static func record(_ i: Int, version: UInt64 = 1) -> NodeRecord {
        var r = NodeRecord(
            name: names[i], identity: identities[i].publicKey, version: version, wireguardKey: key(0xD0 + UInt8(i)).publicKey(),
            wireguardEndpoints: [try! Endpoint("192.0.2.\(i + 1):51820")], gossipAddress: try! Endpoint("192.0.2.\(i + 1):7946"),
            podCIDRs: [podCIDR(i)], overlayAddress: overlay(i))
        r.certificate = certificate(for: r)
        return r
    }

    /// The authority's (or `by`'s) certificate for `record`'s name, identity and the given prefixes.
    static func certificate(for record: NodeRecord, podCIDRs: [IPPrefix]? = nil, overlayAddress: IPAddress?? = nil,
                            issuedAt: UInt64 = 1_700_000_000_000, by signer: SigningIdentity = authority) -> NodeCertificate {
        NodeCertificate.issue(clusterID: clusterID, name: record.name, identity: record.identity,
                              podCIDRs: podCIDRs ?? record.podCIDRs, overlayAddress: overlayAddress ?? record.overlayAddress,
                              issuedAt: issuedAt, authority: signer)
    }

    static func signed(_ record: NodeRecord) -> SignedNodeRecord {
        try! SignedNodeRecord(signing: record, with: signer(for: record.identity)!)
    }

    static func signed(_ i: Int, version: UInt64 = 1) -> SignedNodeRecord { signed(record(i, version: version)) }

    /// Re-signs `list`'s serial and entries with `signer` (the fuzzer changed them). Mirrors
    /// `RevocationList.signedBytes`: context ‖ short cluster id ‖ body (`encoded` without the signature).
    static func resign(_ list: RevocationList, by signer: SigningIdentity = authority) -> RevocationList {
        var w = ByteWriter()
        w.raw(Array("wiremesh/revocations/v1".utf8))
        w.shortString(clusterID)
        w.raw(list.encoded.dropLast(Signature.length))
        return RevocationList(serial: list.serial, entries: list.entries, signature: signer.sign(w.bytes))
    }

    /// Lists the authority signed that a target knows of: a list that verifies must be one of them.
    static var knownLists: [[UInt8]] { [revocations.encoded, nextRevocations.encoded] }

    /// Reads a fuzzer byte as an index into `count` things (0 when there is no byte).
    static func pick(_ byte: UInt8?, _ count: Int) -> Int { Int(byte ?? 0) % count }
}

/// Records of `signatureAndBytes` already checked (signature and certificate), so invariants that
/// re-verify the view do not pay 100 µs per member per input. Keyed by signature and bytes together.
nonisolated(unsafe) var verifiedRecords: Set<[UInt8]> = []

/// True when `signed` verifies with its identity and `trust` takes it (cached).
func isCertified(_ signed: SignedNodeRecord, trust: ClusterTrust) -> Bool {
    if trust.isEvicted(signed.record.identity) { return false }
    let key = signed.signature.bytes + signed.encodedRecord
    if verifiedRecords.contains(key) { return true }
    guard signed.verify(), trust.refusal(for: signed.record) == nil else { return false }
    if verifiedRecords.count > 10_000 { verifiedRecords.removeAll() }
    verifiedRecords.insert(key)
    return true
}
