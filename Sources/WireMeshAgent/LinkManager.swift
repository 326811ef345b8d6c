import IPNetwork
import Logging
import Netlink
import WireGuard
import WireGuardKernel

/// Brings up the node's WireGuard interface on whichever implementation the host has, and
/// programs its address, MTU and the agent's routes through rtnetlink.
///
/// Kernel WireGuard is used when the generic netlink family exists; otherwise a userspace
/// implementation (wireguard-go) is started once and left running across agent restarts, so a
/// restart of the agent never touches traffic.
public final class LinkManager: @unchecked Sendable {
    public let interface: String
    public let backend: any WireGuardBackend
    let rtnl: RouteNetlink
    let logger: Logger
    /// The wireguard-go this agent started (detached: it outlives the agent).
    private var launcher: UserspaceLauncher?

    /// Opens the backends; creates the interface if it does not exist yet.
    public init(interface: String, userspaceImplementation: String = "wireguard-go", logDirectory: String,
                logger: Logger) throws {
        self.interface = interface
        self.logger = logger
        rtnl = RouteNetlink(socket: try NetlinkSocket(.route))
        let userspace = UserspaceBackend()
        if userspace.hasSocket(for: interface), (try? userspace.device(named: interface)) != nil {
            backend = userspace
            logger.info("using running userspace WireGuard", metadata: ["interface": "\(interface)"])
            return
        }
        do {
            let kernel = try KernelBackend()
            if (try? rtnl.link(named: interface)) == nil {
                try rtnl.createLink(name: interface, kind: "wireguard")
                logger.info("created kernel WireGuard interface", metadata: ["interface": "\(interface)"])
            }
            backend = kernel
        } catch WireGuardError.kernelModuleMissing {
            logger.notice("kernel has no WireGuard; starting \(userspaceImplementation)", metadata: ["interface": "\(interface)"])
            let launcher = try UserspaceLauncher(interface: interface, executable: userspaceImplementation,
                                                 logFile: logDirectory + "/\(userspaceImplementation).log")
            // Detached: wireguard-go (and with it the interface and its peers) outlives the agent,
            // so a restart does not touch traffic.
            launcher.detach()
            self.launcher = launcher
            backend = launcher.wireGuardBackend
        }
    }

    /// Sets MTU, the overlay address and brings the link up; only what differs is changed.
    public func configureLink(mtu: Int, address: IPPrefix?) throws {
        let link = try rtnl.link(named: interface)
        if link.mtu != UInt32(mtu) { try rtnl.setLink(name: interface, mtu: UInt32(mtu)) }
        if let address {
            let have = try rtnl.addresses(interface: interface)
            if !have.contains(address) { try rtnl.addAddress(address, interface: interface) }
        }
        if !link.isUp { try rtnl.setLink(name: interface, up: true) }
    }

    /// The interface index, for routes.
    public func interfaceIndex() throws -> Int32 { try rtnl.interfaceIndex(named: interface) }

    /// Routes carrying the agent's protocol tag.
    public func ownRoutes() throws -> [Route] { try rtnl.routes() }

    /// Applies route changes; additions first so the cluster range is never uncovered.
    public func apply(_ changes: RouteChangesInput) throws {
        for route in changes.add { try rtnl.replaceRoute(route) }
        for route in changes.remove { try? rtnl.deleteRoute(route) }
    }

    /// The MTU of the interface that carries `address` (the underlay), or nil if none does.
    public func underlayMTU(for address: IPAddress) -> Int? {
        guard let links = try? rtnl.links() else { return nil }
        for link in links {
            if let addrs = try? rtnl.addresses(interface: link.name), addrs.contains(where: { $0.address == address }) {
                return Int(link.mtu)
            }
        }
        return nil
    }

    /// The first global IPv4 address of any interface but loopback and our own: the default
    /// advertise address when none is configured.
    public func defaultAdvertiseAddress() -> IPAddress? {
        guard let links = try? rtnl.links() else { return nil }
        for link in links where link.name != "lo" && link.name != interface && link.isUp {
            if let addrs = try? rtnl.addresses(interface: link.name),
               let v4 = addrs.first(where: { $0.address.isIPv4 && !$0.address.description.hasPrefix("127.") }) {
                return v4.address
            }
        }
        return nil
    }
}

/// Routes to add and remove (see `MeshPlanner.routeChanges`).
public typealias RouteChangesInput = (add: [Route], remove: [Route])
