import Foundation
import WireMeshCrypto

/// A direct message of a WireGuard key rotation, sent by the rotating node to each live peer over the
/// TCP line port (`LineRequest.rotation`); the peer answers `LineReply.rotated` or a refusal.
///
/// Signed with the sender's identity key; the receiver verifies it with the identity in the sender's
/// gossiped record, so only the node itself can move its own allowed IPs to a new key.
public struct RotationMessage: Codable, Sendable, Equatable {
    /// What the receiver should do.
    public enum Phase: String, Codable, Sendable {
        /// "I am about to switch to `newKey`": the receiver checks it could, and answers.
        case prepare
        /// "My device now uses `newKey`": move my allowed IPs to it now.
        case `switch`
    }

    public var rotation: Phase
    /// The sender's member name.
    public var node: String
    /// WireGuard public keys, base64.
    public var oldKey: String
    public var newKey: String
    /// Milliseconds since the epoch; messages far from the receiver's clock are refused (replay).
    public var issuedAt: Int64
    /// Ed25519 over `signedBytes`, base64.
    public var signature: String

    enum CodingKeys: String, CodingKey {
        case rotation, node, oldKey = "old_key", newKey = "new_key", issuedAt = "issued_at", signature
    }

    /// How far `issuedAt` may be from the receiver's clock.
    public static let maxSkewMs: Int64 = 120_000

    /// How far `issuedAt` (a sender's clock, any 64-bit value) is from `nowMs`, saturated to
    /// `Int64.max`: `abs(nowMs - issuedAt)` traps when the difference does not fit (an `issuedAt`
    /// near `Int64.min`, which a member can sign).
    public static func skewMs(issuedAt: Int64, nowMs: Int64) -> Int64 {
        let (difference, overflow) = nowMs.subtractingReportingOverflow(issuedAt)
        guard !overflow, difference != .min else { return .max }
        return abs(difference)
    }

    /// Domain-separated bytes the signature covers.
    public static func signedBytes(phase: Phase, node: String, oldKey: String, newKey: String, issuedAt: Int64) -> [UInt8] {
        Array("wiremesh-rotation-v1\n\(phase.rawValue)\n\(node)\n\(oldKey)\n\(newKey)\n\(issuedAt)".utf8)
    }

    /// A signed message.
    public init(phase: Phase, node: String, oldKey: Key, newKey: Key, issuedAt: Int64, identity: SigningIdentity) {
        rotation = phase
        self.node = node
        self.oldKey = oldKey.base64
        self.newKey = newKey.base64
        self.issuedAt = issuedAt
        let bytes = Self.signedBytes(phase: phase, node: node, oldKey: self.oldKey, newKey: self.newKey, issuedAt: issuedAt)
        signature = Data(identity.sign(bytes).bytes).base64EncodedString()
    }

    /// The keys, if the signature verifies with `identity` and the message is fresh; otherwise a reason
    /// (for a bad signature `RotationRefusal.unknownSender`, as for a sender the receiver does not know).
    public func verified(by identity: IdentityPublicKey, nowMs: Int64) throws(RotationRefusal) -> (old: Key, new: Key) {
        guard let raw = Data(base64Encoded: signature), let sig = try? Signature(bytes: Array(raw)),
              identity.verify(sig, over: Self.signedBytes(phase: rotation, node: node, oldKey: oldKey, newKey: newKey,
                                                          issuedAt: issuedAt)) else {
            throw .unknownSender
        }
        let skew = Self.skewMs(issuedAt: issuedAt, nowMs: nowMs)
        guard skew <= Self.maxSkewMs else {
            throw RotationRefusal("rotation message from '\(node)' is \(skew / 1000) s off this node's clock (replayed, or clocks differ): check NTP")
        }
        guard let old = try? Key(base64: oldKey), let new = try? Key(base64: newKey), old != new else {
            throw RotationRefusal("rotation message from '\(node)' names invalid keys")
        }
        return (old, new)
    }
}

/// Why a peer refused a rotation message.
public struct RotationRefusal: Error, Sendable, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }

    /// The one answer for a sender that is not a live member here and for a bad signature: until the
    /// signature checks out the sender may be anyone, and learns neither which names exist nor the
    /// receiver's name.
    public static let unknownSender = RotationRefusal(
        "rotation message not signed by a live member of that name known here: wait until its record is gossiped, then retry")
}
