#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Netlink
import WireGuard
import WireGuardKernel

extension Doctor {
    /// Reads what `findings` decides on: the kernel, PATH, /proc, the ports, the links and routes,
    /// the state directory and the agent. Every read is best effort: what fails becomes a fact.
    public static func gather(config: AgentConfig, controlTimeoutSeconds: Int = 5) -> DoctorFacts {
        var f = DoctorFacts(interface: config.interface, controlSocket: config.controlSocket,
                            stateDirectory: config.stateDirectory, nowMs: Int64(Date().timeIntervalSince1970 * 1000))
        f.kernelWireGuard = (try? KernelBackend()) != nil
        f.wireGuardGo = findExecutable("wireguard-go")
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
            f.netAdmin = Preflight.hasNetAdmin(procStatus: status)
        }

        let client = ControlClient(path: config.controlSocket, timeoutSeconds: controlTimeoutSeconds)
        do {
            switch try client.send(.status) {
            case .status(let s): f.status = s
            case .failure(let e): f.agentError = e.message
            default: f.agentError = "unexpected answer to 'status'"
            }
            if f.status != nil, case .peers(let p)? = try? client.send(.peers) { f.peers = p }
        } catch {
            f.agentError = "\(error)"
        }

        let store = StateStore(directory: config.stateDirectory)
        let settings = try? store.readCluster().settings
        f.podRange = settings?.podRange
        f.podRangeV6 = settings?.podRangeV6

        let rtnl = try? RouteNetlink(socket: NetlinkSocket(.route))
        let interface = f.status?.interface ?? config.interface
        f.interface = interface
        if let link = try? rtnl?.link(named: interface) {
            f.interfaceMTU = Int(link.mtu)
            f.interfaceIndex = link.index
        }
        if let device = try? wireGuardBackend(for: interface, kernel: { try KernelBackend() }).device(named: interface) {
            f.interfaceListenPort = device.listenPort
            f.devicePeers = device.peers.map { DoctorFacts.DevicePeer(publicKey: $0.publicKey.base64, allowedIPs: $0.allowedIPs) }
        }
        do {
            guard let rtnl else { throw AgentError("no rtnetlink socket") }
            f.routes = try rtnl.routes()
        } catch {
            f.routesError = "\(error)"
        }

        f.advertiseAddress = f.status?.advertiseAddress.flatMap { try? IPAddress($0) } ?? (try? Lifecycle.advertiseAddress(config))
        if let address = f.advertiseAddress, let rtnl { f.underlayMTU = LinkManager.underlayMTU(for: address, rtnl: rtnl) }

        // The running agent's own ports, else the configured ones.
        let gossipPort = f.status?.gossipPort ?? config.gossipPort
        let wireGuardPort = f.status?.wireGuardPort ?? config.wireGuardPort
        let anyV4 = IPAddress(bytes: [0, 0, 0, 0])!
        f.ports = Preflight.portProbes(advertise: f.advertiseAddress ?? anyV4, gossipPort: gossipPort, wireGuardPort: wireGuardPort).map {
            let errno = Preflight.bindProbe(address: $0.address, port: $0.port, type: $0.type)
            return DoctorFacts.Port(what: $0.what, address: "\($0.address)", port: $0.port, flag: $0.flag, bindErrno: errno,
                                    holders: errno == EADDRINUSE ? portHolders(port: $0.port, type: $0.type) : [])
        }
        return f
    }

    /// "COMMAND (pid N)" for each process with a socket of `type` bound to local `port` in this network
    /// namespace: the socket inodes from /proc/net/{udp,tcp}{,6}, then the processes whose descriptors
    /// point at them (what `ss -p` does). Best effort: empty when nothing is found or readable.
    static func portHolders(port: UInt16, type: Int32) -> [String] {
        let tables = type == Int32(SOCK_STREAM.rawValue) ? ["tcp", "tcp6"] : ["udp", "udp6"]
        var inodes: Set<String> = []
        for table in tables {
            guard let text = try? String(contentsOfFile: "/proc/net/\(table)", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
                let fields = line.split(separator: " ")
                guard fields.count > 9, let colon = fields[1].lastIndex(of: ":"),
                      UInt16(fields[1][fields[1].index(after: colon)...], radix: 16) == port, fields[9] != "0" else { continue }
                inodes.insert(String(fields[9]))
            }
        }
        guard !inodes.isEmpty, let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var holders: [String] = []
        for pid in pids.compactMap(Int32.init).sorted() {
            guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            let holds = fds.contains { fd in
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                      target.hasPrefix("socket:[") else { return false }
                return inodes.contains(String(target.dropFirst("socket:[".count).dropLast()))
            }
            guard holds else { continue }
            let command = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            holders.append("\(command) (pid \(pid))")
        }
        return holders
    }
}

/// The first executable called `name` in PATH (wireguard-go for `doctor`, Graphviz's dot for `graph`).
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}
