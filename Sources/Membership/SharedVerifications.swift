import NIOConcurrencyHelpers

/// Records that a node of the same process and cluster has already verified (owner's signature and
/// the authority's certificate), shared by many nodes in one process.
///
/// For `wiremesh-swarm` only: it hosts a thousand members of one cluster in one process, and each of
/// them verifying every record itself costs the process what a thousand machines would spend (an
/// Ed25519 check a record, two with a certificate: libsodium took 63 % of the swarm's CPU in a join
/// storm, profiled), so the swarm, not the agent under test, was the bound. Agents never share one. A hit still checks revocations (they
/// change at run time); the authority and cluster are the same for every node that shares it.
public final class SharedVerifications: Sendable {
    private let keys = NIOLockedValueBox(Set<[UInt8]>())
    /// Most keys held; the set is emptied when full (a miss only costs a verification).
    public let capacity: Int

    public init(capacity: Int = 1 << 16) { self.capacity = capacity }

    func contains(_ key: [UInt8]) -> Bool { keys.withLockedValue { $0.contains(key) } }

    func insert(_ key: [UInt8]) {
        keys.withLockedValue {
            if $0.count >= capacity { $0.removeAll() }
            $0.insert(key)
        }
    }
}
