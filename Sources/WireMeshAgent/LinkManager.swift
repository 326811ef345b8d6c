#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Logging
import Netlink
import WireGuard
import WireGuardKernel
import WireMeshCrypto

/// Brings up the node's WireGuard interface on whichever implementation the host has, and
/// programs its address, MTU and the agent's routes through rtnetlink.
///
/// Kernel WireGuard is used when the generic netlink family exists; otherwise a userspace
/// implementation (wireguard-go) is started once and left running across agent restarts, so a
/// restart of the agent never touches traffic.
///
/// Sendable because every use of its sockets and of `launcher` goes through `serialized`: a netlink
/// socket carries one request and its replies at a time.
public final class LinkManager: @unchecked Sendable {
    public let interface: String
    private let lock = NSLock()
    public let backend: any WireGuardBackend
    let rtnl: RouteNetlink
    let logger: Logger
    /// The wireguard-go this agent started (detached: it outlives the agent).
    private var launcher: UserspaceLauncher?
    /// How to start wireguard-go again if it dies (`ensureInterface`).
    private let userspaceImplementation: String
    /// Set when a request to the device timed out (a hung userspace WireGuard): until `until`, device
    /// requests fail at once with the same error (`unlessHung`).
    private var hung: (error: WireGuardError, until: ContinuousClock.Instant)?
    /// How long a timed-out device is not asked again. Each request to a hung device blocks its caller
    /// (the agent, and with it `status`) for the whole UAPI timeout; without this pause the event-driven
    /// and periodic passes and `peers` queued one timeout after another (9 s for one `status`).
    static let hungRetryInterval: Duration = .seconds(5)
    private let logDirectory: String

    /// Opens the backends; creates the interface if it does not exist yet.
    ///
    /// An interface that exists already is used only if it is this node's: its private key is one of
    /// `ownKeys` (public keys of this node's current and next WireGuard key), or it is blank (no key,
    /// no peers: e.g. left by a start that failed before configuring it). Anything else belongs to
    /// someone else and is refused, unless `adopt` (`--adopt-interface`) says to take it over.
    public init(interface: String, ownKeys: Set<Key> = [], adopt: Bool = true,
                userspaceImplementation: String = "wireguard-go", logDirectory: String, logger: Logger) throws {
        self.interface = interface
        self.logger = logger
        self.userspaceImplementation = userspaceImplementation
        self.logDirectory = logDirectory
        rtnl = RouteNetlink(socket: try NetlinkSocket(.route))
        let userspace = UserspaceBackend()
        if userspace.hasSocket(for: interface), let device = try Self.readIfAnswering(userspace, interface) {
            if !adopt { try Self.checkOwnership(device, interface: interface, ownKeys: ownKeys) }
            backend = userspace
            logger.info("using running userspace WireGuard", metadata: ["interface": "\(interface)"])
            return
        }
        let existing = try? rtnl.link(named: interface)
        if let existing, existing.kind != "wireguard" {
            // A TUN with our name and no UAPI socket is what a wireguard-go killed with -9 leaves.
            let hint = existing.kind == "tun" ? " (a TUN device: if a wireguard-go serving it was killed, delete it with 'wiremesh link del \(interface)')" : ""
            throw AgentError("interface \(interface) exists and is not a WireGuard interface (kind \(existing.kind ?? "unknown"))\(hint): choose another --interface")
        }
        do {
            let kernel = try KernelBackend()
            if existing == nil {
                try rtnl.createLink(name: interface, kind: "wireguard")
                logger.info("created kernel WireGuard interface", metadata: ["interface": "\(interface)"])
            } else if !adopt {
                try Self.checkOwnership(try kernel.device(named: interface), interface: interface, ownKeys: ownKeys)
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

    /// The userspace device, or nil when nothing listens on its socket any more (the process died:
    /// start another). Any other failure is thrown, not taken for a dead process: a socket that
    /// accepts and never answers (`WireGuardError.timedOut`: a hung wireguard-go), or no descriptor
    /// left to connect with (EMFILE). Unlinking a live process's socket and starting a second one would
    /// leave the interface unmanageable: the second cannot take the TUN the first still holds.
    static func readIfAnswering(_ userspace: UserspaceBackend, _ interface: String) throws -> Device? {
        do { return try userspace.device(named: interface) } catch WireGuardError.noSuchDevice { return nil }
    }

    /// Throws unless `device` is this node's or blank (see `init`). Names what was found, never a key.
    static func checkOwnership(_ device: Device, interface: String, ownKeys: Set<Key>) throws {
        if let key = device.privateKey {
            if ownKeys.contains(key.publicKey()) { return }
        } else if device.peers.isEmpty {
            return
        }
        let what = device.privateKey == nil ? "no private key" : "a private key that is not this node's"
        throw AgentError("interface \(interface) is a WireGuard interface wiremesh did not set up (\(what), \(device.peers.count) peer(s), listen port \(device.listenPort)): choose another --interface, or delete it, or pass --adopt-interface to let wiremesh take it over (its key, port and peers are replaced)")
    }

    /// Brings the interface back if it disappeared under the agent (wireguard-go killed or crashed,
    /// the kernel link deleted): the node would be black-holed until someone restarted the agent.
    /// Returns true when it had to recreate it (the caller then sets MTU and address again; the next
    /// reconcile pass programs key, port and peers).
    public func ensureInterface() throws -> Bool {
        try serialized {
            if let userspace = backend as? UserspaceBackend {
                if userspace.hasSocket(for: interface), try unlessHung({ try Self.readIfAnswering(userspace, interface) }) != nil { return false }
                // Reaped here, or each crash would leave a zombie for the agent's lifetime.
                let exit = launcher.map { "pid \($0.pid): \($0.reapIfExited() ?? "still running, its socket gone")" } ?? "started before this agent"
                logger.warning("userspace WireGuard for \(interface) is gone (\(exit)); starting \(userspaceImplementation) again", metadata: ["interface": "\(interface)"])
                // A socket left by a killed process would make the new one look alive before it is.
                unlink(userspace.socketPath(for: interface))
                let launcher = try UserspaceLauncher(interface: interface, executable: userspaceImplementation,
                                                     socketDirectory: userspace.socketDirectory,
                                                     logFile: logDirectory + "/\(userspaceImplementation).log")
                launcher.detach()
                self.launcher = launcher
                return true
            }
            if (try? rtnl.link(named: interface)) != nil { return false }
            logger.warning("WireGuard interface \(interface) is gone; creating it again", metadata: ["interface": "\(interface)"])
            try rtnl.createLink(name: interface, kind: "wireguard")
            return true
        }
    }

    /// Sets MTU, the overlay addresses (one per family) and brings the link up; only what differs is changed.
    public func configureLink(mtu: Int, addresses: [IPPrefix]) throws {
        try serialized {
            let link = try rtnl.link(named: interface)
            if link.mtu != UInt32(mtu) { try rtnl.setLink(name: interface, mtu: UInt32(mtu)) }
            if !addresses.isEmpty {
                let have = try rtnl.addresses(interface: interface)
                for address in addresses where !have.contains(address) { try rtnl.addAddress(address, interface: interface) }
            }
            if !link.isUp { try rtnl.setLink(name: interface, up: true) }
        }
    }

    /// The interface index, for routes.
    public func interfaceIndex() throws -> Int32 { try serialized { try rtnl.interfaceIndex(named: interface) } }

    /// Routes carrying the agent's protocol tag.
    public func ownRoutes() throws -> [Route] { try serialized { try rtnl.routes() } }

    /// Applies route changes; additions first so the cluster range is never uncovered.
    public func apply(_ changes: RouteChangesInput) throws {
        try serialized {
            for route in changes.add { try rtnl.replaceRoute(route) }
            for route in changes.remove { try? rtnl.deleteRoute(route) }
        }
    }

    /// The MTU of the interface that carries `address` (the underlay), or nil if none does.
    public func underlayMTU(for address: IPAddress) -> Int? {
        serialized { Self.underlayMTU(for: address, rtnl: rtnl) }
    }

    /// The same, on any rtnetlink socket (`doctor` has no `LinkManager`: making one creates the interface).
    static func underlayMTU(for address: IPAddress, rtnl: RouteNetlink) -> Int? {
        guard let links = try? rtnl.links() else { return nil }
        for link in links {
            if let addrs = try? rtnl.addresses(interface: link.name), addrs.contains(where: { $0.address == address }) {
                return Int(link.mtu)
            }
        }
        return nil
    }

    /// The default advertise address (`UnderlayView.defaultAdvertiseAddress`) when none is configured.
    public func defaultAdvertiseAddress() -> IPAddress? {
        serialized { (try? UnderlayView.read(rtnl, excluding: interface))?.defaultAdvertiseAddress() }
    }
}

extension LinkManager {
    /// Runs `body` alone on this manager's sockets.
    func serialized<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Runs a device request (inside `serialized`) unless the device timed out less than
    /// `hungRetryInterval` ago, in which case that timeout is thrown again at once.
    func unlessHung<R>(_ body: () throws -> R) throws -> R {
        if let hung, ContinuousClock.now < hung.until { throw hung.error }
        do {
            let result = try body()
            hung = nil
            return result
        } catch let error as WireGuardError {
            if case .timedOut = error { hung = (error, .now + Self.hungRetryInterval) }
            throw error
        }
    }

    /// Ends this node's part in the mesh after a leave: removes our routes (protocol 87) through the
    /// interface or into the cluster range (the fail-closed backstop too: the node is no longer a
    /// member), stops the userspace WireGuard serving the interface (found by its UAPI socket, so
    /// also one an earlier agent run started) and removes its socket, and deletes the interface.
    /// Best effort: each failure is logged and the next step still runs.
    public func tearDown(clusterRanges: [IPPrefix]) {
        serialized {
            Self.remove(interface, routesInto: clusterRanges, rtnl: rtnl, logger: logger, context: "leave")
        }
    }

    /// The node's interface was renamed (`--interface` differs from the saved one): removes the old
    /// one if it is this node's (see `init`), with its routes, so it cannot keep the WireGuard port,
    /// the cluster route or stale peers. One that is not this node's is left alone.
    public static func retire(_ old: String, ownKeys: Set<Key>, logger: Logger) throws {
        let rtnl = RouteNetlink(socket: try NetlinkSocket(.route))
        let userspace = UserspaceBackend()
        let device: Device?
        if userspace.hasSocket(for: old) {
            device = try? userspace.device(named: old)
        } else if (try? rtnl.link(named: old))?.kind == "wireguard" {
            device = try? KernelBackend().device(named: old)
        } else {
            device = nil
        }
        guard let device else { return }
        do { try checkOwnership(device, interface: old, ownKeys: ownKeys) } catch {
            logger.warning("the interface this node used before, \(old), is no longer this node's; left alone", metadata: ["interface": "\(old)"])
            return
        }
        logger.notice("interface changed: removing this node's old interface \(old)", metadata: ["interface": "\(old)"])
        remove(old, routesInto: [], rtnl: rtnl, logger: logger, context: "interface change")
    }

    /// Removes our routes (protocol 87) through `name` or into `routesInto` (the fail-closed
    /// backstop too), stops the userspace WireGuard serving it (found by its UAPI socket, so also one
    /// an earlier agent run started) and removes its socket, and deletes the interface.
    /// Best effort: each failure is logged and the next step still runs.
    static func remove(_ name: String, routesInto clusterRanges: [IPPrefix], rtnl: RouteNetlink, logger: Logger, context: String) {
        let index = try? rtnl.interfaceIndex(named: name)
        do {
            for route in try rtnl.routes()
            where (index != nil && route.interfaceIndex == index) || clusterRanges.contains(where: { $0.contains(route.destination) }) {
                do { try rtnl.deleteRoute(route) } catch { logger.warning("\(context): could not delete route \(route): \(error)") }
            }
        } catch { logger.warning("\(context): could not list routes: \(error)") }
        let userspace = UserspaceBackend()
        if userspace.hasSocket(for: name) {
            let socketPath = userspace.socketPath(for: name)
            if let pid = serverPID(ofUnixSocket: socketPath) {
                kill(pid, SIGTERM)
                if !waitGone(pid, seconds: 5) {
                    logger.warning("\(context): userspace WireGuard (pid \(pid)) did not stop on SIGTERM; killing it")
                    kill(pid, SIGKILL)
                    _ = waitGone(pid, seconds: 2)
                }
            }
            if unlink(socketPath) != 0 && errno != ENOENT {
                logger.warning("\(context): could not remove \(socketPath): \(String(cString: strerror(errno)))")
            }
        }
        if (try? rtnl.link(named: name)) != nil {
            do { try rtnl.deleteLink(name: name) } catch { logger.warning("\(context): could not delete interface \(name): \(error)") }
        }
    }

    /// The pid of the process listening on a unix socket (getsockopt(2) SO_PEERCRED on a connection
    /// to it), or nil when nothing answers there.
    static func serverPID(ofUnixSocket path: String) -> pid_t? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes + [0]) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return nil }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc hides it behind _GNU_SOURCE).
        var cred: [Int32] = [0, 0, 0]
        var length = socklen_t(12)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0, cred[0] > 0 else { return nil }
        return cred[0]
    }

    /// Waits until `pid` has exited (reaping it if it is our child), polling every 20 ms.
    static func waitGone(_ pid: pid_t, seconds: Double) -> Bool {
        var waited = 0.0
        while waited < seconds {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { return true }
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            usleep(20_000)
            waited += 0.02
        }
        return false
    }
}

/// Routes to add and remove (see `MeshPlanner.routeChanges`).
public typealias RouteChangesInput = (add: [Route], remove: [Route])
