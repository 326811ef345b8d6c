import CMnl
import IPNetwork

#if canImport(Glibc)
    import Glibc
#endif

/// The route protocol number (rtm_protocol) wiremesh stamps on every route it installs, so it only
/// ever lists, replaces or deletes its own routes. 87 is unassigned in iproute2's rt_protos and in
/// the kernel's RTPROT_* list; `ip route show proto 87` shows them.
public let WireMeshRouteProtocol: UInt8 = 87

/// A network interface as rtnetlink reports it.
public struct LinkInfo: Sendable, Equatable {
    /// ifindex.
    public var index: Int32
    /// Interface name.
    public var name: String
    /// MTU in bytes.
    public var mtu: UInt32
    /// IFF_UP (administratively up).
    public var isUp: Bool
    /// IFLA_INFO_KIND ("wireguard", "veth", …); nil for devices without one (lo, TUN shows "tun").
    public var kind: String?

    /// Describes one interface.
    public init(index: Int32, name: String, mtu: UInt32, isUp: Bool, kind: String?) {
        self.index = index
        self.name = name
        self.mtu = mtu
        self.isUp = isUp
        self.kind = kind
    }
}

/// An address assigned to an interface.
public struct InterfaceAddress: Sendable, Hashable {
    /// ifindex of the interface holding the address.
    public var interfaceIndex: Int32
    /// The address with the prefix length of its subnet, e.g. 10.0.0.1/24.
    public var prefix: IPPrefix

    /// An address on interface `interfaceIndex`.
    public init(interfaceIndex: Int32, prefix: IPPrefix) {
        self.interfaceIndex = interfaceIndex
        self.prefix = prefix
    }
}

/// rtm_type values wiremesh uses.
public enum RouteType: UInt8, Sendable {
    /// Forward out of an interface or via a gateway.
    case unicast = 1
    /// Drop silently.
    case blackhole = 6
    /// Fail closed: packets to a missing peer get ICMP unreachable instead of leaking.
    case unreachable = 7
    /// Drop with ICMP administratively prohibited.
    case prohibit = 8
}

/// A route, as installed or as read back.
public struct Route: Sendable, Hashable, CustomStringConvertible {
    /// Destination prefix (host bits are cleared when encoding).
    public var destination: IPPrefix
    /// Output interface (RTA_OIF); nil for unreachable/blackhole routes.
    public var interfaceIndex: Int32?
    /// Next hop (RTA_GATEWAY); nil for a device route.
    public var gateway: IPAddress?
    /// Routing table; 254 is `main`.
    public var table: UInt32
    /// Unicast, or a fail-closed type (unreachable, blackhole, prohibit).
    public var type: RouteType
    /// RTA_PRIORITY, nil for the kernel default (0).
    public var metric: UInt32?
    /// Source address for locally generated packets (RTA_PREFSRC).
    public var preferredSource: IPAddress?
    /// rtm_protocol; `WireMeshRouteProtocol` unless read back from someone else's route.
    public var routeProtocol: UInt8

    /// A route; defaults: main table, unicast, tagged `WireMeshRouteProtocol`.
    public init(
        destination: IPPrefix, interfaceIndex: Int32? = nil, gateway: IPAddress? = nil,
        table: UInt32 = 254, type: RouteType = .unicast, metric: UInt32? = nil,
        preferredSource: IPAddress? = nil, routeProtocol: UInt8 = WireMeshRouteProtocol
    ) {
        self.destination = destination
        self.interfaceIndex = interfaceIndex
        self.gateway = gateway
        self.table = table
        self.type = type
        self.metric = metric
        self.preferredSource = preferredSource
        self.routeProtocol = routeProtocol
    }

    public var description: String {
        var s = type == .unicast ? "\(destination)" : "\(type) \(destination)"
        if let gateway { s += " via \(gateway)" }
        if let interfaceIndex { s += " ifindex \(interfaceIndex)" }
        if table != 254 { s += " table \(table)" }
        if let metric { s += " metric \(metric)" }
        return s
    }
}

/// Pure rtnetlink encoders and decoders (no I/O). Messages leave the sequence number 0.
public enum RouteMessages {
    static let requestAck = UInt16(NLM_F_REQUEST | NLM_F_ACK)

    private static func linkMessage(
        type: Int, flags: UInt16, index: Int32 = 0,
        up: Bool? = nil
    ) -> NetlinkMessageBuilder {
        let b = NetlinkMessageBuilder(type: UInt16(type), flags: flags)
        var ifi = ifinfomsg()
        ifi.ifi_family = UInt8(AF_UNSPEC)
        ifi.ifi_index = index
        if let up {
            ifi.ifi_flags = up ? UInt32(IFF_UP) : 0
            ifi.ifi_change = UInt32(IFF_UP)
        }
        b.putExtraHeader(ifi)
        return b
    }

    /// RTM_NEWLINK creating interface `name` of `kind` (NLM_F_CREATE|NLM_F_EXCL: fails if it exists).
    public static func newLink(name: String, kind: String, mtu: UInt32? = nil) -> [UInt8] {
        let b = linkMessage(type: RTM_NEWLINK, flags: requestAck | UInt16(NLM_F_CREATE | NLM_F_EXCL))
        b.putString(UInt16(IFLA_IFNAME), name)
        if let mtu { b.putU32(UInt16(IFLA_MTU), mtu) }
        let info = b.beginNest(UInt16(IFLA_LINKINFO))!
        b.putString(UInt16(IFLA_INFO_KIND), kind)
        b.endNest(info)
        return b.bytes
    }

    /// RTM_DELLINK of the interface with `index`.
    public static func deleteLink(index: Int32) -> [UInt8] {
        linkMessage(type: RTM_DELLINK, flags: requestAck, index: index).bytes
    }

    /// RTM_GETLINK of one interface by name (the kernel answers one RTM_NEWLINK, or ENODEV).
    public static func getLink(name: String) -> [UInt8] {
        let b = linkMessage(type: RTM_GETLINK, flags: requestAck)
        b.putString(UInt16(IFLA_IFNAME), name)
        return b.bytes
    }

    /// RTM_GETLINK dump of every interface.
    public static func dumpLinks() -> [UInt8] {
        linkMessage(type: RTM_GETLINK, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP)).bytes
    }

    /// RTM_NEWLINK changing MTU and/or administrative state of an existing interface; attributes
    /// left nil are not touched.
    public static func setLink(index: Int32, mtu: UInt32? = nil, up: Bool? = nil) -> [UInt8] {
        let b = linkMessage(type: RTM_NEWLINK, flags: requestAck, index: index, up: up)
        if let mtu { b.putU32(UInt16(IFLA_MTU), mtu) }
        return b.bytes
    }

    /// RTM_NEWADDR (create or replace, so re-adding is idempotent) or RTM_DELADDR for `prefix`
    /// (the interface address with its subnet length) on interface `index`.
    public static func address(add: Bool, index: Int32, prefix: IPPrefix) -> [UInt8] {
        let flags = add ? requestAck | UInt16(NLM_F_CREATE | NLM_F_REPLACE) : requestAck
        let b = NetlinkMessageBuilder(type: UInt16(add ? RTM_NEWADDR : RTM_DELADDR), flags: flags)
        var ifa = ifaddrmsg()
        ifa.ifa_family = UInt8(prefix.address.family)
        ifa.ifa_prefixlen = UInt8(prefix.length)
        ifa.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        ifa.ifa_index = UInt32(bitPattern: index)
        b.putExtraHeader(ifa)
        let bytes = prefix.address.bytes
        b.put(UInt16(IFA_LOCAL), bytes: bytes)
        b.put(UInt16(IFA_ADDRESS), bytes: bytes)
        return b.bytes
    }

    /// RTM_GETADDR dump of every address of `family` (AF_UNSPEC for both).
    public static func dumpAddresses(family: Int32 = AF_UNSPEC) -> [UInt8] {
        let b = NetlinkMessageBuilder(type: UInt16(RTM_GETADDR), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        var ifa = ifaddrmsg()
        ifa.ifa_family = UInt8(family)
        b.putExtraHeader(ifa)
        return b.bytes
    }

    /// What to do with a route.
    public enum RouteOperation: Sendable {
        /// Create; fails with EEXIST when a route to the same destination/metric exists.
        case add
        /// Create or overwrite the route to the same destination/metric.
        case replace
        /// Remove; only a route carrying the same protocol tag matches.
        case delete
    }

    /// RTM_NEWROUTE / RTM_DELROUTE for `route`.
    public static func route(_ operation: RouteOperation, _ route: Route) -> [UInt8] {
        let type: Int
        let flags: UInt16
        switch operation {
        case .add: (type, flags) = (RTM_NEWROUTE, requestAck | UInt16(NLM_F_CREATE | NLM_F_EXCL))
        case .replace: (type, flags) = (RTM_NEWROUTE, requestAck | UInt16(NLM_F_CREATE | NLM_F_REPLACE))
        case .delete: (type, flags) = (RTM_DELROUTE, requestAck)
        }
        let b = NetlinkMessageBuilder(type: UInt16(type), flags: flags)
        let dst = route.destination.network
        var rtm = rtmsg()
        rtm.rtm_family = UInt8(dst.address.family)
        rtm.rtm_dst_len = UInt8(dst.length)
        rtm.rtm_table = route.table < 256 ? UInt8(route.table) : UInt8(RT_TABLE_UNSPEC.rawValue)
        rtm.rtm_protocol = route.routeProtocol
        rtm.rtm_type = route.type.rawValue
        if operation == .delete {
            rtm.rtm_scope = UInt8(RT_SCOPE_NOWHERE.rawValue)
        } else if route.type == .unicast && route.gateway == nil && dst.address.isIPv4 {
            // A directly connected (device) route, like `ip route add PREFIX dev IFACE`.
            rtm.rtm_scope = UInt8(RT_SCOPE_LINK.rawValue)
        } else {
            rtm.rtm_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        }
        b.putExtraHeader(rtm)
        b.putU32(UInt16(RTA_TABLE.rawValue), route.table)
        if dst.length > 0 { b.put(UInt16(RTA_DST.rawValue), bytes: dst.address.bytes) }
        if let oif = route.interfaceIndex { b.putU32(UInt16(RTA_OIF.rawValue), UInt32(bitPattern: oif)) }
        if let gw = route.gateway { b.put(UInt16(RTA_GATEWAY.rawValue), bytes: gw.bytes) }
        if let metric = route.metric { b.putU32(UInt16(RTA_PRIORITY.rawValue), metric) }
        if let src = route.preferredSource { b.put(UInt16(RTA_PREFSRC.rawValue), bytes: src.bytes) }
        return b.bytes
    }

    /// RTM_GETROUTE dump of every route of `family` (AF_UNSPEC for both) in every table.
    public static func dumpRoutes(family: Int32 = AF_UNSPEC) -> [UInt8] {
        let b = NetlinkMessageBuilder(type: UInt16(RTM_GETROUTE), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        var rtm = rtmsg()
        rtm.rtm_family = UInt8(family)
        b.putExtraHeader(rtm)
        return b.bytes
    }

    /// Decodes an RTM_NEWLINK message; nil for anything else.
    public static func parseLink(_ message: [UInt8]) -> LinkInfo? {
        message.withUnsafeBytes { raw -> LinkInfo? in
            guard let view = NetlinkMessageView(raw), view.type == UInt16(RTM_NEWLINK),
                let ifi = view.extraHeader(as: ifinfomsg.self)
            else { return nil }
            var info = LinkInfo(
                index: ifi.ifi_index, name: "", mtu: 0,
                isUp: ifi.ifi_flags & UInt32(IFF_UP) != 0, kind: nil)
            view.forEachAttribute(afterExtraHeader: MemoryLayout<ifinfomsg>.size) { attr in
                switch Int(attr.type) {
                case IFLA_IFNAME: info.name = attr.string
                case IFLA_MTU: info.mtu = attr.u32 ?? 0
                case IFLA_LINKINFO:
                    attr.forEachNested { inner in
                        if Int(inner.type) == IFLA_INFO_KIND { info.kind = inner.string }
                    }
                default: break
                }
            }
            return info
        }
    }

    /// Decodes an RTM_NEWADDR message; nil for anything else.
    public static func parseAddress(_ message: [UInt8]) -> InterfaceAddress? {
        message.withUnsafeBytes { raw -> InterfaceAddress? in
            guard let view = NetlinkMessageView(raw), view.type == UInt16(RTM_NEWADDR),
                let ifa = view.extraHeader(as: ifaddrmsg.self)
            else { return nil }
            var local: IPAddress?
            var address: IPAddress?
            view.forEachAttribute(afterExtraHeader: MemoryLayout<ifaddrmsg>.size) { attr in
                switch Int(attr.type) {
                case IFA_LOCAL: local = IPAddress(bytes: attr.payload)
                case IFA_ADDRESS: address = IPAddress(bytes: attr.payload)
                default: break
                }
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
            guard let a = local ?? address,
                let prefix = try? IPPrefix(address: a, length: Int(ifa.ifa_prefixlen))
            else { return nil }
            return InterfaceAddress(interfaceIndex: Int32(bitPattern: ifa.ifa_index), prefix: prefix)
        }
    }

    /// Decodes an RTM_NEWROUTE message; nil for anything else (and for families other than IPv4/6).
    public static func parseRoute(_ message: [UInt8]) -> Route? {
        message.withUnsafeBytes { raw -> Route? in
            guard let view = NetlinkMessageView(raw), view.type == UInt16(RTM_NEWROUTE),
                let rtm = view.extraHeader(as: rtmsg.self),
                Int32(rtm.rtm_family) == AF_INET || Int32(rtm.rtm_family) == AF_INET6
            else { return nil }
            var dst: IPAddress?
            var oif: Int32?
            var gw: IPAddress?
            var table = UInt32(rtm.rtm_table)
            var metric: UInt32?
            var src: IPAddress?
            view.forEachAttribute(afterExtraHeader: MemoryLayout<rtmsg>.size) { attr in
                switch UInt32(attr.type) {
                case RTA_DST.rawValue: dst = IPAddress(bytes: attr.payload)
                case RTA_OIF.rawValue: oif = attr.u32.map { Int32(bitPattern: $0) }
                case RTA_GATEWAY.rawValue: gw = IPAddress(bytes: attr.payload)
                case RTA_TABLE.rawValue: table = attr.u32 ?? table
                case RTA_PRIORITY.rawValue: metric = attr.u32
                case RTA_PREFSRC.rawValue: src = IPAddress(bytes: attr.payload)
                default: break
                }
            }
            let zero: IPAddress = Int32(rtm.rtm_family) == AF_INET ? .v4(0) : .v6(0, 0)
            guard let prefix = try? IPPrefix(address: dst ?? zero, length: Int(rtm.rtm_dst_len)) else { return nil }
            return Route(
                destination: prefix, interfaceIndex: oif, gateway: gw, table: table,
                type: RouteType(rawValue: rtm.rtm_type) ?? .unicast, metric: metric,
                preferredSource: src, routeProtocol: rtm.rtm_protocol)
        }
    }
}

/// rtnetlink operations on links, addresses and routes over one `.route` socket.
///
/// Every failure names the object and the kernel's reason; a missing interface is
/// `NetlinkError.noSuchInterface`.
public final class RouteNetlink {
    /// The underlying socket (for its sent-bytes counters).
    public let socket: NetlinkSocket

    /// Uses `socket` (which must be a `.route` socket; possibly opened in another namespace).
    public init(socket: NetlinkSocket) { self.socket = socket }

    /// Opens an rtnetlink socket in the current network namespace.
    public convenience init() throws { try self.init(socket: NetlinkSocket(.route)) }

    /// Checks an interface name the way the kernel will (1–15 bytes, no '/', ':' or whitespace), so
    /// bad input fails before anything is sent.
    public static func validateInterfaceName(_ name: String) throws {
        let ok =
            !name.isEmpty && name.utf8.count < Int(IF_NAMESIZE) && name != "." && name != ".."
            && !name.utf8.contains(where: {
                $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 32 || $0 >= 127
            })
        if !ok { throw NetlinkInputError.invalidInterfaceName(name) }
    }

    /// Creates interface `name` of `kind` (e.g. "wireguard"); fails with EEXIST if it exists and
    /// EOPNOTSUPP ("Unknown device type") if the kernel lacks that kind.
    public func createLink(name: String, kind: String, mtu: UInt32? = nil) throws {
        try Self.validateInterfaceName(name)
        try socket.request(
            RouteMessages.newLink(name: name, kind: kind, mtu: mtu),
            operation: "creating \(kind) interface '\(name)'")
    }

    /// Deletes interface `name`.
    public func deleteLink(name: String) throws {
        let index = try interfaceIndex(named: name)
        try socket.request(RouteMessages.deleteLink(index: index), operation: "deleting interface '\(name)'")
    }

    /// Reads one interface by name.
    public func link(named name: String) throws -> LinkInfo {
        try Self.validateInterfaceName(name)
        let replies: [[UInt8]]
        do {
            replies = try socket.transact(
                RouteMessages.getLink(name: name), operation: "looking up interface '\(name)'")
        } catch let e as NetlinkError where e.errno == ENODEV {
            throw NetlinkError.noSuchInterface(name)
        }
        guard let info = replies.lazy.compactMap(RouteMessages.parseLink).first else {
            throw NetlinkError.noSuchInterface(name)
        }
        return info
    }

    /// Every interface in the socket's namespace.
    public func links() throws -> [LinkInfo] {
        try socket.dump(RouteMessages.dumpLinks(), operation: "listing interfaces").compactMap(RouteMessages.parseLink)
    }

    /// The ifindex of interface `name`.
    public func interfaceIndex(named name: String) throws -> Int32 {
        try link(named: name).index
    }

    /// Changes MTU and/or up/down state of interface `name`; nil leaves that property alone.
    public func setLink(name: String, mtu: UInt32? = nil, up: Bool? = nil) throws {
        let index = try interfaceIndex(named: name)
        try socket.request(
            RouteMessages.setLink(index: index, mtu: mtu, up: up),
            operation: "changing interface '\(name)'")
    }

    /// Assigns `prefix` (address/subnet length) to interface `name`; assigning it again is harmless.
    public func addAddress(_ prefix: IPPrefix, interface name: String) throws {
        let index = try interfaceIndex(named: name)
        try socket.request(
            RouteMessages.address(add: true, index: index, prefix: prefix),
            operation: "adding address \(prefix) to '\(name)'")
    }

    /// Removes `prefix` from interface `name`.
    public func deleteAddress(_ prefix: IPPrefix, interface name: String) throws {
        let index = try interfaceIndex(named: name)
        try socket.request(
            RouteMessages.address(add: false, index: index, prefix: prefix),
            operation: "removing address \(prefix) from '\(name)'")
    }

    /// Addresses of interface `name` (both families), in kernel order.
    public func addresses(interface name: String) throws -> [IPPrefix] {
        let index = try interfaceIndex(named: name)
        return try socket.dump(RouteMessages.dumpAddresses(), operation: "listing addresses of '\(name)'")
            .compactMap(RouteMessages.parseAddress).filter { $0.interfaceIndex == index }.map(\.prefix)
    }

    /// Installs `route` (tag it with `WireMeshRouteProtocol`, the default).
    public func addRoute(_ route: Route) throws {
        try socket.request(RouteMessages.route(.add, route), operation: "adding route \(route)")
    }

    /// Installs or overwrites `route`.
    public func replaceRoute(_ route: Route) throws {
        try socket.request(RouteMessages.route(.replace, route), operation: "replacing route \(route)")
    }

    /// Removes `route` (matched by destination, table, protocol tag and, when set, interface/metric).
    public func deleteRoute(_ route: Route) throws {
        try socket.request(RouteMessages.route(.delete, route), operation: "deleting route \(route)")
    }

    /// Every route tagged with `routeProtocol` (wiremesh's own by default), in every table.
    public func routes(taggedWith routeProtocol: UInt8 = WireMeshRouteProtocol) throws -> [Route] {
        try allRoutes().filter { $0.routeProtocol == routeProtocol }
    }

    /// Every route of every table, whoever added it (read only: the agent changes only its own).
    public func allRoutes() throws -> [Route] {
        try socket.dump(RouteMessages.dumpRoutes(), operation: "listing routes").compactMap(RouteMessages.parseRoute)
    }
}

/// Input rejected before anything was sent to the kernel.
public enum NetlinkInputError: Error, Equatable, CustomStringConvertible {
    case invalidInterfaceName(String)

    public var description: String {
        switch self {
        case .invalidInterfaceName(let n):
            return "invalid interface name '\(n)': use 1-15 characters without '/', ':' or spaces"
        }
    }
}
