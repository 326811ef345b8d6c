#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: one datagram to the unix socket named by `$NOTIFY_SOCKET`.
///
/// The unit is `Type=notify`, so systemd considers the agent started only after `READY=1`, i.e. once
/// the interface, the control socket and gossip are up; `systemctl start` and units ordered after
/// wiremesh then see a working mesh, not a process that may still fail.
public enum SystemdNotify {
    /// The socket systemd gave this process, or nil when not started by systemd with Type=notify.
    public static func socketPath(environment: [String: String]) -> String? {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        return path
    }

    /// Sends `state` (e.g. "READY=1", "STATUS=...", "STOPPING=1") to `socketPath`.
    /// A path starting with "@" names a socket in the abstract namespace, as systemd documents.
    public static func send(_ state: String, to socketPath: String) throws {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ControlSocketError.io(path: socketPath, operation: "sd_notify (path too long)", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError.io(path: socketPath, operation: "sd_notify socket", errno: errno) }
        defer { close(fd) }
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { addr in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, message.count, Int32(MSG_NOSIGNAL), addr, length) }
            }
        }
        guard sent == message.count else {
            throw ControlSocketError.io(path: socketPath, operation: "sd_notify send", errno: sent < 0 ? errno : EMSGSIZE)
        }
    }

    /// Sends `state` if `$NOTIFY_SOCKET` is set; returns whether a notification was sent.
    @discardableResult
    public static func notify(_ state: String, environment: [String: String]) throws -> Bool {
        guard let path = socketPath(environment: environment) else { return false }
        try send(state, to: path)
        return true
    }
}
