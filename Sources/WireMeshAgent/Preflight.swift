#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Netlink
import WireGuard
import WireGuardKernel

/// Checks made before `init`/`join`/`agent` write any state, spend a token or touch the network
/// configuration: the operator learns what is wrong while nothing has happened yet.
public enum Preflight {
    /// Runs the checks for a node that is about to be set up or started. `startsAgent` false
    /// (`--prepare-only`): the agent runs later, so privileges and ports are checked when it starts.
    public static func check(_ config: AgentConfig, startsAgent: Bool, adoptInterface: Bool = false) throws {
        if startsAgent { try checkPrivileges() }
        try checkAdvertiseAddressIsLocal(config)
        if !adoptInterface { try checkInterfaceIsFree(config.interface) }
        if startsAgent { try checkPortsFree(config: config) }
        try ContainerNetwork.checkWritable(directory: config.cniConfigDirectory)
    }

    /// A new node has no keys yet, so an existing interface of its name can only be someone else's,
    /// unless it is blank (see `LinkManager.init`).
    public static func checkInterfaceIsFree(_ name: String) throws {
        let rtnl = RouteNetlink(socket: try NetlinkSocket(.route))
        let userspace = UserspaceBackend()
        if userspace.hasSocket(for: name), let device = try? userspace.device(named: name) {
            return try LinkManager.checkOwnership(device, interface: name, ownKeys: [])
        }
        guard let link = try? rtnl.link(named: name) else { return }
        guard link.kind == "wireguard" else {
            throw AgentError("interface \(name) exists and is not a WireGuard interface (kind \(link.kind ?? "unknown")): choose another --interface")
        }
        if let device = try? KernelBackend().device(named: name) {
            try LinkManager.checkOwnership(device, interface: name, ownKeys: [])
        }
    }

    /// CAP_NET_ADMIN (bit 12 of the effective set in /proc/self/status): creating the interface
    /// and routes needs it, and without it wireguard-go fails with a TUN permission error that says
    /// nothing about the cause.
    public static func checkPrivileges(status: String? = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) throws {
        guard let status, let hasIt = hasNetAdmin(procStatus: status) else { return }  // unknown: let the kernel say
        if !hasIt {
            throw AgentError("this needs CAP_NET_ADMIN to create the WireGuard interface and its routes (running as uid \(getuid())): run it as root (sudo), or as the systemd unit does")
        }
    }

    /// Whether the `CapEff:` line of a /proc/PID/status text has CAP_NET_ADMIN; nil without that line.
    static func hasNetAdmin(procStatus: String) -> Bool? {
        for line in procStatus.split(separator: "\n") where line.hasPrefix("CapEff:") {
            guard let bits = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return nil }
            return bits & (1 << 12) != 0
        }
        return nil
    }

    /// A configured advertise address must be one of this host's (this network namespace's): other
    /// nodes would send to an address nobody here answers, and `join` would spend a token on it.
    public static func checkAdvertiseAddressIsLocal(_ config: AgentConfig) throws {
        guard let wanted = config.advertiseAddress else { return }  // detected: local by construction
        let rtnl = RouteNetlink(socket: try NetlinkSocket(.route))
        for link in try rtnl.links() {
            if try rtnl.addresses(interface: link.name).contains(where: { $0.address == wanted }) { return }
        }
        throw AgentError("advertise address \(wanted) is not an address of this host: give --advertise-address one of its own addresses (other nodes reach this one there)")
    }

    /// Refuses to start a node whose ports another process holds, before `init`/`join` write any
    /// state: otherwise the state directory is prepared and the agent then fails to bind.
    /// Checks the gossip port (UDP) and the join port (TCP, same number) on the advertise address,
    /// and the WireGuard port (UDP, every address, as wireguard-go binds it).
    public static func checkPortsFree(config: AgentConfig) throws {
        let probes = portProbes(advertise: try Lifecycle.advertiseAddress(config),
                                gossipPort: config.gossipPort, wireGuardPort: config.wireGuardPort)
        for probe in probes {
            if let err = bindProbe(address: probe.address, port: probe.port, type: probe.type) {
                throw AgentError("\(probe.what) \(probe.port) on \(probe.address) is not available: \(String(cString: strerror(err))); stop the process holding it or choose another \(probe.flag)")
            }
        }
    }

    /// A port the agent binds: what it is for, where, and the flag that moves it.
    struct PortProbe {
        var what: String
        var address: IPAddress
        var port: UInt16
        /// SOCK_DGRAM or SOCK_STREAM.
        var type: Int32
        var flag: String
    }

    /// The gossip port (UDP) and the join port (TCP, same number) on the advertise address, and the
    /// WireGuard port (UDP, every address, as wireguard-go binds it).
    static func portProbes(advertise: IPAddress, gossipPort: UInt16, wireGuardPort: UInt16) -> [PortProbe] {
        let any: IPAddress = advertise.isIPv4 ? IPAddress(bytes: [0, 0, 0, 0])! : IPAddress(bytes: [UInt8](repeating: 0, count: 16))!
        return [
            PortProbe(what: "gossip port", address: advertise, port: gossipPort, type: Int32(SOCK_DGRAM.rawValue),
                      flag: "--gossip-port"),
            PortProbe(what: "join port (TCP, the gossip port number)", address: advertise, port: gossipPort,
                      type: Int32(SOCK_STREAM.rawValue), flag: "--gossip-port"),
            PortProbe(what: "WireGuard port", address: any, port: wireGuardPort, type: Int32(SOCK_DGRAM.rawValue),
                      flag: "--wireguard-port"),
        ]
    }

    /// Binds and closes a socket; the errno of a failed bind, nil when the port is free.
    static func bindProbe(address: IPAddress, port: UInt16, type: Int32) -> Int32? {
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        if type == Int32(SOCK_STREAM.rawValue) {
            // As the join server binds: connections it answered just before a restart linger in
            // TIME_WAIT on the port for a minute and must not make it look taken. (Not for UDP, where
            // SO_REUSEADDR on both sides would let two agents share the gossip port.)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let raw = address.bytes
        let rc: Int32
        if address.isIPv4 {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: raw) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } else {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: raw) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        return rc == 0 ? nil : errno
    }

}
