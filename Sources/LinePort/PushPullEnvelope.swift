import Foundation

/// One side of a membership push/pull on the line port (`LineRequest.pushPull`, `LineReply.pushPull`):
/// the payload sealed with the cluster key (`PushPullSeal` in `Membership`), base64.
///
/// The line port only carries it: the gossip transport opens it (and only a cluster-key holder can
/// seal one), and the membership core checks every record and claim inside as it checks a datagram's.
public struct PushPullEnvelope: Codable, Sendable, Equatable {
    /// The sender's gossip endpoint ("address:port"), where the receiver sends the state requests the
    /// payload makes it ask (a few datagrams at most; a lie only sends them to another member, who
    /// answers the receiver). Absent in a reply: the asker knows whom it asked.
    public var from: String?
    /// The sealed payload, base64.
    public var sealed: String

    /// Longest sealed payload carried (bytes before base64): with base64 and the envelope it stays
    /// within `LineRequest.maxLength`.
    public static let maxSealedBytes = 46 * 1024

    public init(from: String?, sealed: [UInt8]) {
        self.from = from
        self.sealed = Data(sealed).base64EncodedString()
    }

    /// The sealed bytes; nil when they are not base64 or longer than `maxSealedBytes` (checked on the
    /// text's length before decoding, so an oversized one costs nothing).
    public var sealedBytes: [UInt8]? {
        guard sealed.utf8.count <= (Self.maxSealedBytes + 2) / 3 * 4, let data = Data(base64Encoded: sealed),
              data.count <= Self.maxSealedBytes else { return nil }
        return Array(data)
    }
}
