import IPNetwork
import Membership
import WireMeshCrypto

/// A hostile member: it holds the cluster key (so its datagrams authenticate) and its own identity
/// key, but not the identity keys of other nodes. It builds hostile messages with the membership
/// codec and seals them like any member.
public struct Adversary {
    /// The index of the simulated node the adversary controls (it also runs as a normal member).
    public let node: Int
    let identity: SigningIdentity

    /// The record-signature domain string of the wire format (public knowledge).
    static let recordContext = Array("wiremesh/record/v1".utf8)
}

extension Simulation {
    /// The adversary controlling node `node`.
    public func adversary(at node: Int) -> Adversary {
        Adversary(node: node, identity: identities[node])
    }

    /// A record claiming to be `victim`'s (its name and identity, a higher version, `change` applied)
    /// but signed with the adversary's own key: it must fail verification everywhere.
    public func forgedRecord(of victim: Int, by adversary: Adversary, versionBump: UInt64 = 10,
                             _ change: (inout NodeRecord) -> Void) throws -> SignedNodeRecord {
        var record = cores[victim]?.localRecord.record ?? hosts[victim].initialRecord
        record.version += versionBump
        change(&record)
        let encoded = try record.canonicalEncoding()
        let signature = adversary.identity.sign(Adversary.recordContext + encoded)
        var wire: [UInt8] = [UInt8(encoded.count >> 8), UInt8(encoded.count & 0xFF)]
        wire += encoded
        wire += signature.bytes
        return try SignedNodeRecord.decode(wire)
    }

    /// A record with `victim`'s name but the adversary's identity, validly signed by the adversary:
    /// a takeover of a name bound to another identity, which must be refused.
    public func impersonatingRecord(of victim: Int, by adversary: Adversary, _ change: (inout NodeRecord) -> Void) throws -> SignedNodeRecord {
        var record = cores[victim]?.localRecord.record ?? hosts[victim].initialRecord
        record.identity = adversary.identity.publicKey
        record.version += 10
        change(&record)
        return try SignedNodeRecord(signing: record, with: adversary.identity)
    }

    /// A leave notice for `victim` signed by the adversary (not by the victim).
    public func forgedLeave(of victim: Int, by adversary: Adversary) -> LeaveNotice {
        let record = cores[victim]?.localRecord.record ?? hosts[victim].initialRecord
        let genuine = LeaveNotice(record: record, incarnation: 0, identity: adversary.identity)
        return LeaveNotice(name: record.name, version: record.version, incarnation: cores[victim]?.localIncarnation ?? 0,
                           signature: genuine.signature)
    }

    /// A claim that `victim` is dead at its current record version and the given incarnation.
    public func forgedDeath(of victim: Int, by adversary: Adversary, incarnation: UInt64) -> WireMessage {
        let version = cores[victim]?.localRecord.record.version ?? 1
        return .status(name: names[victim], version: version, status: .dead(incarnation: incarnation),
                       from: names[adversary.node])
    }

    /// Seals `messages` (one per datagram) with the cluster key and sends them from the adversary's
    /// address to each target node through the simulated network.
    public func send(_ messages: [WireMessage], from adversary: Adversary, to targets: [Int]) {
        for t in targets {
            for m in messages {
                let datagram = DatagramSeal.datagram([m], keyring: keyring, clusterID: clusterID)
                transmit(from: Int32(adversary.node), to: endpoints[t], datagram: datagram)
            }
        }
    }
}
