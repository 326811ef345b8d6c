import Foundation
import IPNetwork
import Membership
import WireMeshCrypto
import WireMeshJoin

/// Everything `wiremesh init` or `wiremesh join` writes into a fresh state directory.
public struct InitialState: Sendable {
    public var clusterID: String
    public var settings: ClusterSettings
    public var node: NodeAssignment
    /// Seed of this node's Ed25519 identity (signs its node records).
    public var identity: SigningIdentity
    /// This node's WireGuard private key.
    public var wireGuardKey: Key
    /// The cluster (gossip) keys.
    public var keyring: Keyring
    /// The cluster authority's public key.
    public var authorityKey: IdentityPublicKey
    /// The authority's seed, on authority nodes only (the first node; others by copying it).
    public var authority: SigningIdentity?
    /// The authority's certificate for this node.
    public var certificate: NodeCertificate
    /// The newest revocation list known at creation.
    public var revocations: RevocationList?
    /// Members known at creation time (opaque, encoded by the membership layer); may be empty.
    public var members: [UInt8]

    public init(clusterID: String, settings: ClusterSettings, node: NodeAssignment, identity: SigningIdentity,
                wireGuardKey: Key, keyring: Keyring, authorityKey: IdentityPublicKey, authority: SigningIdentity?,
                certificate: NodeCertificate, revocations: RevocationList? = nil, members: [UInt8] = []) {
        self.clusterID = clusterID
        self.settings = settings
        self.node = node
        self.identity = identity
        self.wireGuardKey = wireGuardKey
        self.keyring = keyring
        self.authorityKey = authorityKey
        self.authority = authority
        self.certificate = certificate
        self.revocations = revocations
        self.members = members
    }
}

/// The persisted state of an initialised node, as loaded at agent start.
public struct NodeState: Sendable {
    public var clusterID: String
    public var settings: ClusterSettings
    public var node: NodeAssignment
    public var identity: SigningIdentity
    /// The WireGuard private key in use.
    public var wireGuardKey: Key
    /// The next WireGuard key of a rotation in progress (announced, not yet switched to), if any.
    public var pendingWireGuardKey: Key?
    public var keyring: Keyring
    /// Generations and retirement times of the keys in `keyring` (cluster key rotation).
    public var clusterKeys: ClusterKeyRotation
    /// The cluster authority's public key, and its seed on authority nodes.
    public var authorityKey: IdentityPublicKey
    public var authority: SigningIdentity?
    /// The authority's certificate for this node.
    public var certificate: NodeCertificate
    /// The newest revocation list this node holds (nil: nobody was evicted).
    public var revocations: RevocationList?
    /// When this WireGuard key was first saved (for the key age in `status` and scheduled rotation).
    public var wireGuardKeyCreatedAt: Date
}

/// Errors about the state directory a person reads; each names the directory or file and what to do.
public enum StateError: Error, Equatable, CustomStringConvertible {
    case alreadyInitialised(directory: String, clusterID: String)
    case notInitialised(directory: String)
    case left(directory: String, clusterID: String, at: Date)
    case corrupted(file: String, reason: String)
    case io(FileError)
    /// Another agent holds the directory's lock (`StateLock`); pid nil when it could not be read.
    case inUse(directory: String, pid: Int32?)

    public var description: String {
        switch self {
        case .alreadyInitialised(let dir, let cluster):
            return "state directory \(dir) already initialised (cluster \(cluster)): start this node with 'wiremesh agent --state-dir \(dir)', or use another --state-dir for a new node"
        case .left(let dir, let cluster, let at):
            return "this node left cluster \(cluster) at \(StateStore.timestamp(at)) (state directory \(dir)): run 'wiremesh join TOKEN' to rejoin"
        case .notInitialised(let dir):
            return "state directory \(dir) is not initialised: run 'wiremesh init' or 'wiremesh join TOKEN'"
        case .corrupted(let file, let reason):
            return "state file \(file) is corrupted (\(reason)): restore it from a backup, or remove the state directory and join the cluster again with a new token"
        case .io(let e):
            return e.description
        case .inUse(let dir, let pid):
            let who = pid.map { "another wiremesh agent (pid \($0))" } ?? "another wiremesh agent"
            return "state directory \(dir) is in use by \(who): stop it first ('systemctl stop wiremesh' or kill that pid), or give this one its own --state-dir"
        }
    }
}

extension InitialState {
    /// The state of a node certified by `authority` for `node` (what `init` writes for the first
    /// node; tests build states the same way). `holdsAuthority`: the node keeps the authority seed.
    public static func certified(clusterID: String, settings: ClusterSettings, node: NodeAssignment, identity: SigningIdentity,
                                 wireGuardKey: Key, keyring: Keyring, authority: SigningIdentity, holdsAuthority: Bool = true,
                                 issuedAt: Date = Date(), members: [UInt8] = []) -> InitialState {
        let certificate = NodeCertificate.issue(
            clusterID: clusterID, name: node.name, identity: identity.publicKey, podCIDRs: node.podCIDRs,
            overlayAddress: node.overlayAddress, issuedAt: UInt64(max(0, issuedAt.timeIntervalSince1970 * 1000)), authority: authority)
        return InitialState(clusterID: clusterID, settings: settings, node: node, identity: identity, wireGuardKey: wireGuardKey,
                            keyring: keyring, authorityKey: authority.publicKey, authority: holdsAuthority ? authority : nil,
                            certificate: certificate, members: members)
    }
}
