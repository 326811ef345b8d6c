import Foundation

/// Why a token or a join exchange was refused. Each message names the token and what to do.
public enum JoinError: Error, Equatable, CustomStringConvertible {
    case garbled(String)
    case outdatedToken(version: Int)
    case expired(id: String, at: Date)
    case revoked(id: String)
    case unknownToken(id: String)
    case otherCluster(token: String, member: String)
    case exhausted(id: String)
    case authenticationFailed(id: String)
    case replayed(id: String)
    case notAMember(cluster: String, reason: String)
    case malformedMessage(String)
    case invalidRequest(String)
    case rejected(JoinRejection)
    /// This member holds no authority key: only authority nodes admit.
    case notAnAuthority
    /// The joiner's identity was evicted.
    case evicted(name: String)

    public var description: String {
        switch self {
        case .garbled(let what):
            return "garbled join token: \(what): copy the whole token printed by 'wiremesh token create'"
        case .outdatedToken(let version):
            return "join token is of format \(version), which this version of wiremesh no longer accepts: re-create the token with 'wiremesh token create' on any member"
        case .expired(let id, let at):
            return "join token \(id) expired at \(at.formatted(.iso8601)): create a new one with 'wiremesh token create'"
        case .revoked(let id):
            return "join token \(id) was revoked: create a new one with 'wiremesh token create'"
        case .unknownToken(let id):
            return "join token \(id) is unknown to this member: no member announces it (not created in this cluster, or expired and pruned); check the id with 'wiremesh token list'"
        case .otherCluster(let token, let member):
            return "join token is for cluster \(token), but the answering member belongs to cluster \(member): create the token with 'wiremesh token create' on a member of the cluster to join"
        case .exhausted(let id):
            return "join token \(id) has no uses left (joins are counted across all members): create a new one with 'wiremesh token create --uses N'"
        case .authenticationFailed(let id):
            return "join request for token \(id) failed authentication: the token key does not match its id, expiry and uses (damaged or forged token, a token of another cluster, or one issued before a node was evicted: create a new one)"
        case .replayed(let id):
            return "join request for token \(id) was already answered (replayed request): run 'wiremesh join' again"
        case .notAMember(let cluster, let reason):
            return "the answering node is not a member of cluster \(cluster): \(reason); check the endpoints in the token"
        case .malformedMessage(let what):
            return "malformed join message: \(what)"
        case .invalidRequest(let what):
            return "invalid join token request: \(what)"
        case .rejected(let r):
            return r.message
        case .notAnAuthority:
            return "this member is not an authority of the cluster and cannot admit nodes: use a token created on an authority node ('wiremesh token create' there)"
        case .evicted(let name):
            return "the identity joining as '\(name)' was evicted from the cluster: join from a fresh state directory with a new token"
        }
    }
}

/// A member's refusal, sent back to the joiner in clear (it holds no secret).
public struct JoinRejection: Codable, Sendable, Equatable {
    /// Why, as a stable code for scripts (the raw values are what `wiremesh` prints and sends).
    public enum Code: String, Codable, Sendable {
        case garbled, expired, revoked, unknown, exhausted, authentication, replayed, malformed, ipam, evicted
        case notAuthority = "not-authority"
        case otherCluster = "other-cluster"
        case `internal`
    }

    public var code: Code
    /// The member's error text.
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The rejection for a member-side error.
    public init(_ error: Error) {
        let code: Code
        switch error as? JoinError {
        case .garbled?, .outdatedToken?: code = .garbled
        case .expired?: code = .expired
        case .revoked?: code = .revoked
        case .unknownToken?: code = .unknown
        case .otherCluster?: code = .otherCluster
        case .exhausted?: code = .exhausted
        case .authenticationFailed?: code = .authentication
        case .replayed?: code = .replayed
        case .malformedMessage?, .invalidRequest?: code = .malformed
        case .rejected(let r)?: code = r.code
        case .notAnAuthority?: code = .notAuthority
        case .evicted?: code = .evicted
        case .notAMember?, nil: code = error is IPAMError ? .ipam : .internal
        }
        self.init(code: code, message: "\(error)")
    }
}
