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
        f.podRange = try? store.readCluster().settings.podRange

        let rtnl = try? RouteNetlink(socket: NetlinkSocket(.route))
        let interface = f.status?.interface ?? config.interface
        f.interface = interface
        if let link = try? rtnl?.link(named: interface) {
            f.interfaceMTU = Int(link.mtu)
            f.interfaceIndex = link.index
        }
        f.interfaceListenPort = (try? wireGuardBackend(for: interface, kernel: { try KernelBackend() }).device(named: interface))?.listenPort
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
            DoctorFacts.Port(what: $0.what, address: "\($0.address)", port: $0.port, flag: $0.flag,
                             bindErrno: Preflight.bindProbe(address: $0.address, port: $0.port, type: $0.type))
        }
        return f
    }
}

/// The first executable called `name` in PATH (wireguard-go for `doctor`, Graphviz's dot for `graph`).
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}
