import IPNetwork
import Membership

/// What an admitting member decides about a joiner besides its token: whether the name is free and
/// which pod block it gets. Pure: the agent passes in its view, its own node, the blocks it handed
/// out that gossip has not shown yet, and both clocks.
public struct JoinCandidate: Sendable {
    /// The IPAM of the cluster's settings.
    public let ipam: IPAM
    /// The IPv6 IPAM of a dual-stack cluster (a joiner gets a block of each family); nil for IPv4 only.
    public let ipamV6: IPAM?
    /// Every block claim this member knows of: members in view, itself, pending assignments.
    public let claims: [BlockClaim]
    /// Unix milliseconds the claims are resolved at.
    public let nowMs: UInt64

    /// Refuses `request` when a live member (or this one) already has its name.
    ///
    /// - Parameters:
    ///   - members: the member view (dead members keep their block for the grace period).
    ///   - local: this member's own assignment (it is not in its own view).
    ///   - pending: blocks this member handed to joiners whose records have not arrived yet.
    ///   - pendingV6: the same for IPv6 blocks (dual-stack).
    ///   - monotonicNow: the clock of `Member.since`, to date dead members' claims on the wall clock.
    public init(_ request: JoinRequest, members: [Member], local: NodeAssignment, settings: ClusterSettings,
                pending: [String: IPPrefix], pendingV6: [String: IPPrefix] = [:], nowMs: UInt64, monotonicNow: Instant) throws {
        var claims = members.filter { $0.name != local.name }.flatMap { m in
            m.record.record.podCIDRs.map {
                BlockClaim(node: m.name, block: $0, claimedAt: m.record.record.certificate?.issuedAt ?? m.record.record.version,
                           deadSince: m.status.isActive ? nil : BlockClaim.wallClock(of: m.since, monotonicNow: monotonicNow, wallNowMs: nowMs))
            }
        }
        // Each IPAM resolves the claims of its own family only (IPAM.resolve).
        claims += local.podCIDRs.map { BlockClaim(node: local.name, block: $0, claimedAt: 0) }
        claims += pending.map { BlockClaim(node: $0.key, block: $0.value, claimedAt: nowMs) }
        claims += pendingV6.map { BlockClaim(node: $0.key, block: $0.value, claimedAt: nowMs) }
        ipam = try IPAM(clusterRange: settings.podRange, nodePrefixLength: settings.nodePrefixLength)
        ipamV6 = try settings.ipamV6()
        guard !members.contains(where: { $0.name == request.nodeName && $0.status.isActive }), request.nodeName != local.name else {
            throw JoinError.invalidRequest("a live member is already named '\(request.nodeName)': pick another --name")
        }
        self.claims = claims
        self.nowMs = nowMs
    }

    /// The joiner's block and overlay address (`JoinExchange.admit`'s `assign`); an IPAM error refuses it.
    /// In a dual-stack cluster the joiner also gets an IPv6 block, always picked by IPAM
    /// (`--pod-cidr` names the IPv4 block only).
    public func assign(_ request: JoinRequest) throws -> NodeAssignment {
        var assignment = try ipam.assign(request.nodeName, requested: request.requestedPodCIDR, claims: claims, now: nowMs)
        if let ipamV6 {
            assignment.podCIDRV6 = try ipamV6.allocate(for: request.nodeName, claims: claims, now: nowMs)
        }
        return assignment
    }
}
