#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A userspace WireGuard implementation (wireguard-go, boringtun, …) driven over its UAPI unix
/// socket `DIR/IFACE.sock`, one connection per request like wireguard-tools.
public struct UserspaceBackend: WireGuardBackend {
    /// Where userspace implementations put their sockets on Linux.
    public static let defaultSocketDirectory = "/var/run/wireguard"

    public let kind = "userspace"
    /// Directory holding `IFACE.sock`; tests point it elsewhere.
    public let socketDirectory: String
    /// How long one connect, send or receive on the socket may block. wireguard-go answers in
    /// milliseconds (a `set` of thousands of peers in well under a second); a process that accepts
    /// and never answers must not hang the agent's reconcile pass, and with it `status`.
    public let timeoutSeconds: Int

    /// The default `timeoutSeconds`.
    public static let defaultTimeoutSeconds = 3

    public init(socketDirectory: String = UserspaceBackend.defaultSocketDirectory,
                timeoutSeconds: Int = UserspaceBackend.defaultTimeoutSeconds) {
        self.socketDirectory = socketDirectory
        self.timeoutSeconds = max(1, timeoutSeconds)
    }

    /// The UAPI socket path of device `name`.
    public func socketPath(for name: String) -> String {
        socketDirectory + "/" + name + ".sock"
    }

    /// True when a socket file for `name` exists (the implementation may still have died).
    public func hasSocket(for name: String) -> Bool {
        guard isValidInterfaceName(name) else { return false }
        var st = stat()
        return stat(socketPath(for: name), &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }

    public func device(named name: String) throws -> Device {
        let reply = try roundTrip(device: name, request: UAPI.getRequest)
        return try UAPI.decodeGet(reply, deviceName: name)
    }

    @discardableResult
    public func configure(device name: String, _ config: DeviceConfig) throws -> ApplyReport {
        if config.isEmpty {
            guard hasSocket(for: name) else { throw WireGuardError.noSuchDevice(name) }
            return ApplyReport()
        }
        let request = UAPI.encodeSet(config)
        let reply = try roundTrip(device: name, request: request)
        let status = try UAPI.parseErrno(reply)
        if status != 0 {
            let code = Int32(clamping: status.magnitude)
            throw WireGuardError.rejected(
                device: name, errno: code,
                message: "\(String(cString: strerror(code))) (check keys, endpoints and allowed IPs in the change)")
        }
        return ApplyReport(messages: 1, bytes: request.count)
    }

    /// Sends one request on a fresh connection and returns the reply up to its blank line.
    func roundTrip(device name: String, request: [UInt8]) throws -> [UInt8] {
        guard isValidInterfaceName(name) else { throw WireGuardError.noSuchDevice(name) }
        let path = socketPath(for: name)
        let timedOut = WireGuardError.timedOut(device: name, socket: path, seconds: timeoutSeconds)
        let fd = try connectUnix(path: path, device: name, timeoutSeconds: timeoutSeconds, timedOut: timedOut)
        defer { close(fd) }
        try sendAll(fd, request, device: name, timedOut: timedOut)
        return try receiveReply(fd, device: name, timedOut: timedOut)
    }
}

/// Linux interface names: 1-15 bytes, no '/', no whitespace, not "." or "..".
func isValidInterfaceName(_ name: String) -> Bool {
    let u = Array(name.utf8)
    guard !u.isEmpty, u.count <= 15, name != ".", name != ".." else { return false }
    return !u.contains { $0 == UInt8(ascii: "/") || $0 <= 0x20 || $0 == UInt8(ascii: ":") }
}

/// socket(2) + connect(2) on a unix stream socket; maps "nobody listens" to `.noSuchDevice`.
/// With `timeoutSeconds`, SO_SNDTIMEO and SO_RCVTIMEO bound the connect (a listener whose backlog is
/// full blocks it) and every later send and receive; running out of time throws `timedOut`.
func connectUnix(path: String, device: String, timeoutSeconds: Int? = nil, timedOut: WireGuardError? = nil) throws -> Int32 {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let pathBytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: addr.sun_path)
    guard pathBytes.count < capacity else {
        throw WireGuardError.protocolError("UAPI socket path too long: \(path)")
    }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: pathBytes)
        raw[pathBytes.count] = 0
    }
    #if canImport(Glibc)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    #else
    let fd = socket(AF_UNIX, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else {
        throw WireGuardError.protocolError("socket(AF_UNIX) for the UAPI socket of '\(device)' failed: \(String(cString: strerror(errno)))")
    }
    if let timeoutSeconds {
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    if rc != 0 {
        let e = errno
        close(fd)
        // A full backlog with SO_SNDTIMEO set: the listener does not accept.
        if let timedOut, e == EAGAIN || e == EINPROGRESS { throw timedOut }
        switch e {
        case ENOENT, ECONNREFUSED, ENOTDIR:
            throw WireGuardError.noSuchDevice(device)
        case EACCES, EPERM:
            throw WireGuardError.permissionDenied("UAPI socket \(path)")
        default:
            throw WireGuardError.protocolError("connect to \(path) failed: \(String(cString: strerror(e)))")
        }
    }
    return fd
}

/// send(2) until every byte is written; MSG_NOSIGNAL so a dying peer is an error, not SIGPIPE.
/// A send that runs into the socket's SO_SNDTIMEO throws `timedOut` (when given).
func sendAll(_ fd: Int32, _ bytes: [UInt8], device: String, timedOut: WireGuardError? = nil) throws {
    var offset = 0
    try bytes.withUnsafeBytes { raw in
        while offset < raw.count {
            #if canImport(Glibc)
            let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            #else
            let n = send(fd, raw.baseAddress! + offset, raw.count - offset, 0)
            #endif
            if n < 0 {
                if errno == EINTR { continue }
                if let timedOut, errno == EAGAIN || errno == EWOULDBLOCK { throw timedOut }
                throw WireGuardError.protocolError("writing to the UAPI socket of '\(device)' failed: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }
}

/// recv(2) until the reply's terminating blank line (or EOF). A receive that runs into the socket's
/// SO_RCVTIMEO throws `timedOut` (when given).
func receiveReply(_ fd: Int32, device: String, timedOut: WireGuardError? = nil) throws -> [UInt8] {
    var reply: [UInt8] = []
    reply.reserveCapacity(1 << 18)
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 {
            if errno == EINTR { continue }
            if let timedOut, errno == EAGAIN || errno == EWOULDBLOCK { throw timedOut }
            throw WireGuardError.protocolError("reading the UAPI socket of '\(device)' failed: \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        let before = reply.count
        reply.append(contentsOf: chunk[0..<n])
        // A reply ends at its first empty line; look only at the new bytes (and one before them).
        var i = max(before, 1)
        var done = reply.count >= 1 && reply[0] == UInt8(ascii: "\n")
        while !done && i < reply.count {
            if reply[i] == UInt8(ascii: "\n") && reply[i - 1] == UInt8(ascii: "\n") { done = true }
            i += 1
        }
        if done { break }
    }
    if reply.isEmpty {
        throw WireGuardError.protocolError("the UAPI socket of '\(device)' closed without a reply")
    }
    return reply
}

/// Picks the backend that serves device `name`: the userspace one when `DIR/name.sock` exists,
/// otherwise the one `kernel` opens (generic netlink). Shared by the CLI and the agent so both
/// make the same choice. A kernel without WireGuard means no such device can exist, so that case
/// is reported as `.noSuchDevice(name)`.
public func wireGuardBackend(
    for name: String,
    socketDirectory: String = UserspaceBackend.defaultSocketDirectory,
    kernel: () throws -> any WireGuardBackend
) throws -> any WireGuardBackend {
    let userspace = UserspaceBackend(socketDirectory: socketDirectory)
    if userspace.hasSocket(for: name) { return userspace }
    do {
        return try kernel()
    } catch WireGuardError.kernelModuleMissing {
        throw WireGuardError.noSuchDevice(name)
    }
}
