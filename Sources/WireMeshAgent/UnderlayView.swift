import IPNetwork
import Netlink

/// The host's interfaces and routes as far as choosing an advertise address needs them.
struct UnderlayView {
    struct Link {
        var index: Int32
        var name: String
        var addresses: [IPAddress]
    }
    /// Up interfaces but loopback and the agent's own.
    var links: [Link]
    var routes: [Route]

    static func read(_ rtnl: RouteNetlink? = nil, excluding interface: String) throws -> UnderlayView {
        let rtnl = try rtnl ?? RouteNetlink()
        let links = try rtnl.links().filter { $0.isUp && $0.name != "lo" && $0.name != interface }
            .map { Link(index: $0.index, name: $0.name, addresses: try rtnl.addresses(interface: $0.name).map(\.address)) }
        return UnderlayView(links: links, routes: try rtnl.allRoutes())
    }

    /// What other hosts most likely reach this one at: the source of the default route (IPv4 before
    /// IPv6, lowest metric first): its preferred source, else its interface's first routable address
    /// of that family. Without a default route: the first routable IPv4 address, else IPv6 (an
    /// IPv6-only host needs no --advertise-address). Never loopback or link-local.
    func defaultAdvertiseAddress() -> IPAddress? {
        let defaults = routes.filter { $0.destination.length == 0 && $0.table == 254 && $0.type == .unicast && $0.interfaceIndex != nil }
            .sorted { ($0.destination.address.isIPv4 ? 0 : 1, $0.metric ?? 0) < ($1.destination.address.isIPv4 ? 0 : 1, $1.metric ?? 0) }
        for route in defaults {
            guard let link = links.first(where: { $0.index == route.interfaceIndex }) else { continue }
            let family = route.destination.address.isIPv4
            if let source = route.preferredSource, source.isRoutableUnicast { return source }
            if let a = link.addresses.first(where: { $0.isIPv4 == family && $0.isRoutableUnicast }) { return a }
        }
        let candidates = links.flatMap(\.addresses).filter(\.isRoutableUnicast)
        return candidates.first(where: \.isIPv4) ?? candidates.first
    }
}
