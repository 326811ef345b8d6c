import Netlink
import WireGuard

#if canImport(Glibc)
    import Glibc
#endif

/// Kernel WireGuard over generic netlink (the `wireguard` family), through this project's own
/// libmnl client: no `wg` process.
///
/// Each call opens its own short-lived socket, so one backend can be shared across tasks.
public final class KernelBackend: WireGuardBackend {
    /// Always "kernel".
    public let kind = "kernel"
    /// The `wireguard` generic netlink family id resolved at init.
    public let familyID: UInt16
    /// Network namespace the sockets are opened in (nil: the caller's).
    public let networkNamespacePath: String?

    /// Opens a generic netlink socket and resolves the `wireguard` family; throws
    /// `WireGuardError.kernelModuleMissing` when the kernel has no WireGuard.
    public convenience init() throws {
        try self.init(networkNamespacePath: nil)
    }

    /// Like `init()`, but every socket lives in the network namespace at `path`
    /// (e.g. /var/run/netns/NAME).
    public init(networkNamespacePath path: String?) throws {
        networkNamespacePath = path
        do {
            let socket = try Self.openSocket(path)
            familyID = try GenericNetlink.resolveFamily(WireGuardNetlinkCodec.familyName, on: socket)
        } catch let e as NetlinkError {
            switch e.errno {
            case ENOENT?: throw WireGuardError.kernelModuleMissing
            case EPERM?, EACCES?: throw WireGuardError.permissionDenied("generic netlink family 'wireguard'")
            default: throw WireGuardError.protocolError("resolving the 'wireguard' netlink family: \(e)")
            }
        }
    }

    private static func openSocket(_ path: String?) throws -> NetlinkSocket {
        if let path { return try NetlinkSocket.open(.generic, inNetworkNamespaceAt: path) }
        return try NetlinkSocket(.generic)
    }

    /// Reads device `name` with a GET dump (several messages for large devices; retried whole when
    /// the device changes mid-dump).
    public func device(named name: String) throws -> Device {
        try validate(name)
        let socket = try mapped(name) { try Self.openSocket(networkNamespacePath) }
        let replies = try mapped(name) {
            try socket.dump(
                WireGuardNetlinkCodec.getDeviceRequest(family: familyID, device: name),
                operation: "reading WireGuard device '\(name)'")
        }
        var device = try WireGuardNetlinkCodec.decodeDevice(replies)
        if device.name.isEmpty { device.name = name }
        return device
    }

    /// Applies `config` to device `name`: sends the chunked SET messages one by one, each waiting
    /// for its ACK, and stops at the first refusal.
    @discardableResult
    public func configure(device name: String, _ config: DeviceConfig) throws -> ApplyReport {
        try validate(name)
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: familyID, device: name, config: config)
        let socket = try mapped(name) { try Self.openSocket(networkNamespacePath) }
        var report = ApplyReport()
        for message in messages {
            try mapped(name) { try socket.request(message, operation: "configuring WireGuard device '\(name)'") }
            report.messages += 1
            report.bytes += message.count
        }
        return report
    }

    private func validate(_ name: String) throws {
        do { try RouteNetlink.validateInterfaceName(name) } catch { throw WireGuardError.noSuchDevice(name) }
    }

    /// Turns netlink failures into the backend-neutral `WireGuardError`.
    private func mapped<T>(_ name: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as NetlinkError {
            switch e {
            case .kernel(_, let errno, let message):
                switch errno {
                case ENODEV, EOPNOTSUPP: throw WireGuardError.noSuchDevice(name)
                case EPERM, EACCES: throw WireGuardError.permissionDenied("WireGuard device '\(name)'")
                default: throw WireGuardError.rejected(device: name, errno: errno, message: message ?? "")
                }
            case .system(_, let errno) where errno == EPERM || errno == EACCES:
                throw WireGuardError.permissionDenied("WireGuard device '\(name)'")
            default:
                throw WireGuardError.protocolError("\(e)")
            }
        }
    }
}
