import Foundation
import WireMeshJoin

/// One request on the line port (TCP on the gossip port number): one JSON line in, one `LineReply`
/// line out. On the wire `{"kind":"join"|"rotation"|"keyring"|"push-pull"|"stream-probe","body":{…}}`: the kind names the body's
/// type, so a line is decoded once, into exactly one of these.
public enum LineRequest: Sendable, Equatable {
    /// A joiner's token-authenticated request (`JoinExchange`).
    case join(JoinRequest)
    /// A rotating peer's signed prepare or switch.
    case rotation(RotationMessage)
    /// A member's signed request for the cluster keyring.
    case keyring(KeyringRequest)
    /// A member's push/pull request: its whole membership state, sealed with the cluster key.
    case pushPull(PushPullEnvelope)
    /// A member's probe of this one after its datagrams went unanswered: one ping, sealed with the
    /// cluster key (`StreamProbeSeal`).
    case streamProbe(PushPullEnvelope)

    /// The longest request line the server reads.
    public static let maxLength = 64 * 1024

    /// Decodes one line (without its newline). Anything that is not a request of this protocol is
    /// `.malformed`, saying where it breaks without repeating its content.
    public static func decode(line: [UInt8]) throws(LineRefusal) -> LineRequest {
        guard line.count <= maxLength else { throw .malformed("request line longer than \(maxLength) bytes") }
        do {
            return try JSONDecoder().decode(LineRequest.self, from: Data(line))
        } catch {
            throw .malformed(LineRefusal.explain(error, what: "request"))
        }
    }

    /// The request as one line, newline included.
    public func line() -> [UInt8] { lineBytes(self) }
}

/// The answer to one `LineRequest`.
public enum LineReply: Sendable, Equatable {
    /// The join was admitted; the grant is sealed inside.
    case joined(JoinResponse)
    /// The peer did what the rotation message asked (or already had); `node` is the peer's name.
    case rotated(node: String)
    /// The sealed keyring.
    case keyring(KeyringAnswer)
    /// The answer to a push/pull: this member's whole membership state, sealed with the cluster key.
    case pushPull(PushPullEnvelope)
    /// The answer to a stream probe: its ack, sealed with the cluster key.
    case streamProbe(PushPullEnvelope)
    /// The request was refused.
    case refused(LineRefusal)

    /// The longest reply a client reads (a join reply carries the member list: ~0.5 KiB per member).
    public static let maxLength = 1 << 20

    /// Decodes one reply line (without its newline).
    public static func decode(line: [UInt8]) throws(LineRefusal) -> LineReply {
        do {
            return try JSONDecoder().decode(LineReply.self, from: Data(line))
        } catch {
            throw .malformed(LineRefusal.explain(error, what: "reply"))
        }
    }

    /// The reply as one line, newline included.
    public func line() -> [UInt8] { lineBytes(self) }
}

/// Every way a request on the line port is refused: one enum, each case with the typed reason of its
/// kind. Sent back in clear (it holds no secret), so it is no proof: a joiner tries the next member.
public enum LineRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// The line is not a request (or reply) of this protocol.
    case malformed(String)
    /// The join was refused (token, authentication, name, IPAM).
    case join(JoinRejection)
    /// The peer refused the rotation message.
    case rotation(RotationRefusal)
    /// The member refused to hand out the keyring.
    case keyring(KeyringRefusal)
    /// The member did not take the push/pull (not sealed with a key it holds, replayed, oversized,
    /// over its rate): the asker falls back to datagrams.
    case pushPull(String)
    /// The member did not answer the stream probe (not sealed with a key it holds, replayed, not a
    /// ping of it, over its rate).
    case streamProbe(String)

    public var description: String {
        switch self {
        case .malformed(let what): return "malformed line-port message: \(what)"
        case .join(let r): return r.message
        case .rotation(let r): return r.description
        case .keyring(let r): return r.message
        case .pushPull(let why): return "push/pull refused: \(why)"
        case .streamProbe(let why): return "stream probe refused: \(why)"
        }
    }

    /// A decoding error in words: which field, never the value.
    static func explain(_ error: Error, what: String) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            let at = path(context)
            return "\(what) lacks '\(at.isEmpty ? key.stringValue : at + "." + key.stringValue)'"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            return "\(what) has a wrong type at '\(path(context))'"
        case DecodingError.dataCorrupted(let context) where !context.codingPath.isEmpty:
            return "\(what) has an invalid value at '\(path(context))'"
        default:
            return "not a JSON \(what) of the wiremesh line port (one object with 'kind' and 'body')"
        }
    }
}

// MARK: - Wire form

private func lineBytes<T: Encodable>(_ value: T) -> [UInt8] {
    // Every field is a string, number or key already validated: encoding cannot fail.
    Array(try! JSONEncoder().encode(value)) + [0x0A]
}

private enum EnvelopeKeys: String, CodingKey { case kind, body }

extension LineRequest: Codable {
    private enum Kind: String, Codable { case join, rotation, keyring, pushPull = "push-pull", streamProbe = "stream-probe" }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: EnvelopeKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .join: self = .join(try c.decode(JoinRequest.self, forKey: .body))
        case .rotation: self = .rotation(try c.decode(RotationMessage.self, forKey: .body))
        case .keyring: self = .keyring(try c.decode(KeyringRequest.self, forKey: .body))
        case .pushPull: self = .pushPull(try c.decode(PushPullEnvelope.self, forKey: .body))
        case .streamProbe: self = .streamProbe(try c.decode(PushPullEnvelope.self, forKey: .body))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: EnvelopeKeys.self)
        switch self {
        case .join(let r): try c.encode(Kind.join, forKey: .kind); try c.encode(r, forKey: .body)
        case .rotation(let m): try c.encode(Kind.rotation, forKey: .kind); try c.encode(m, forKey: .body)
        case .keyring(let r): try c.encode(Kind.keyring, forKey: .kind); try c.encode(r, forKey: .body)
        case .pushPull(let e): try c.encode(Kind.pushPull, forKey: .kind); try c.encode(e, forKey: .body)
        case .streamProbe(let e): try c.encode(Kind.streamProbe, forKey: .kind); try c.encode(e, forKey: .body)
        }
    }
}

extension LineReply: Codable {
    private enum Kind: String, Codable { case joined, rotated, keyring, refused, pushPull = "push-pull", streamProbe = "stream-probe" }
    private struct Rotated: Codable { var node: String }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: EnvelopeKeys.self)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .joined: self = .joined(try c.decode(JoinResponse.self, forKey: .body))
        case .rotated: self = .rotated(node: try c.decode(Rotated.self, forKey: .body).node)
        case .keyring: self = .keyring(try c.decode(KeyringAnswer.self, forKey: .body))
        case .refused: self = .refused(try c.decode(LineRefusal.self, forKey: .body))
        case .pushPull: self = .pushPull(try c.decode(PushPullEnvelope.self, forKey: .body))
        case .streamProbe: self = .streamProbe(try c.decode(PushPullEnvelope.self, forKey: .body))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: EnvelopeKeys.self)
        switch self {
        case .joined(let r): try c.encode(Kind.joined, forKey: .kind); try c.encode(r, forKey: .body)
        case .rotated(let node): try c.encode(Kind.rotated, forKey: .kind); try c.encode(Rotated(node: node), forKey: .body)
        case .keyring(let a): try c.encode(Kind.keyring, forKey: .kind); try c.encode(a, forKey: .body)
        case .refused(let r): try c.encode(Kind.refused, forKey: .kind); try c.encode(r, forKey: .body)
        case .pushPull(let e): try c.encode(Kind.pushPull, forKey: .kind); try c.encode(e, forKey: .body)
        case .streamProbe(let e): try c.encode(Kind.streamProbe, forKey: .kind); try c.encode(e, forKey: .body)
        }
    }
}

/// `{"kind":"malformed"|"join"|"rotation"|"keyring","code":…,"message":…}`: the code is typed by kind.
extension LineRefusal: Codable {
    private enum Kind: String, Codable { case malformed, join, rotation, keyring, pushPull = "push-pull", streamProbe = "stream-probe" }
    private enum Keys: String, CodingKey { case kind, code, message }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let message = try c.decode(String.self, forKey: .message)
        switch try c.decode(Kind.self, forKey: .kind) {
        case .malformed: self = .malformed(message)
        case .join: self = .join(JoinRejection(code: try c.decode(JoinRejection.Code.self, forKey: .code), message: message))
        case .rotation: self = .rotation(RotationRefusal(message))
        case .keyring: self = .keyring(KeyringRefusal(code: try c.decode(KeyringRefusal.Code.self, forKey: .code), message: message))
        case .pushPull: self = .pushPull(message)
        case .streamProbe: self = .streamProbe(message)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .malformed(let m):
            try c.encode(Kind.malformed, forKey: .kind); try c.encode(m, forKey: .message)
        case .join(let r):
            try c.encode(Kind.join, forKey: .kind); try c.encode(r.code, forKey: .code); try c.encode(r.message, forKey: .message)
        case .rotation(let r):
            try c.encode(Kind.rotation, forKey: .kind); try c.encode(r.description, forKey: .message)
        case .keyring(let r):
            try c.encode(Kind.keyring, forKey: .kind); try c.encode(r.code, forKey: .code); try c.encode(r.message, forKey: .message)
        case .pushPull(let m):
            try c.encode(Kind.pushPull, forKey: .kind); try c.encode(m, forKey: .message)
        case .streamProbe(let m):
            try c.encode(Kind.streamProbe, forKey: .kind); try c.encode(m, forKey: .message)
        }
    }
}
