import Foundation
import Testing
import WireMeshCrypto
@testable import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// A one-shot UAPI server on a unix socket in a private temporary directory: it answers each
/// connection with the next canned reply and records what it was sent.
final class FakeUAPIServer: @unchecked Sendable {
    let directory: String
    let interface: String
    private let fd: Int32
    private let lock = NSLock()
    private var _requests: [String] = []
    private let done = DispatchSemaphore(value: 0)
    private let replyCount: Int

    var requests: [String] { lock.lock(); defer { lock.unlock() }; return _requests }

    init(replies: [String]) throws {
        directory = FileManager.default.temporaryDirectory.path + "/wmt-uapi-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        interface = "wmtfake0"
        let path = directory + "/" + interface + ".sock"
        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let b = Array(path.utf8)
            raw.copyBytes(from: b)
            raw[b.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(rc == 0 && listen(sock, 4) == 0, "fake UAPI server could not listen on \(path)")
        fd = sock
        replyCount = replies.count
        Thread.detachNewThread { [self] in
            for reply in replies {
                let c = accept(fd, nil, nil)
                if c < 0 { break }
                var got: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 4096)
                while !(got.count >= 2 && got.suffix(2) == [10, 10]) {
                    let n = recv(c, &buf, buf.count, 0)
                    if n <= 0 { break }
                    got += buf[0..<n]
                }
                lock.lock(); _requests.append(String(decoding: got, as: UTF8.self)); lock.unlock()
                _ = Array(reply.utf8).withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(c)
            }
            done.signal()
        }
    }

    /// Waits for the thread to answer every reply, then removes the socket and directory.
    func finish() {
        if requests.count == replyCount { done.wait() }
        shutdown(fd, Int32(SHUT_RDWR))  // wakes a thread still blocked in accept
        close(fd)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite struct UserspaceBackendTests {
    @Test func readsADeviceOverTheSocket() throws {
        let server = try FakeUAPIServer(replies: ["listen_port=7\npublic_key=\(fixedKey(2).hex)\nallowed_ip=10.0.0.0/8\nerrno=0\n\n"])
        defer { server.finish() }
        let backend = UserspaceBackend(socketDirectory: server.directory)
        #expect(backend.hasSocket(for: server.interface))
        let d = try backend.device(named: server.interface)
        #expect(d.listenPort == 7)
        #expect(d.peers.map(\.publicKey) == [fixedKey(2)])
        #expect(server.requests == ["get=1\n\n"])
    }

    @Test func configureSendsOneRequestAndReportsItsSize() throws {
        let server = try FakeUAPIServer(replies: ["errno=0\n\n"])
        defer { server.finish() }
        let backend = UserspaceBackend(socketDirectory: server.directory)
        let config = DeviceConfig(listenPort: 9, peers: [PeerConfig(publicKey: fixedKey(2), remove: true)])
        let report = try backend.configure(device: server.interface, config)
        let expected = String(decoding: UAPI.encodeSet(config), as: UTF8.self)
        #expect(server.requests == [expected])
        #expect(report == ApplyReport(messages: 1, bytes: expected.utf8.count))
    }

    @Test func emptyConfigSendsNothing() throws {
        let server = try FakeUAPIServer(replies: [])
        defer { server.finish() }
        let report = try UserspaceBackend(socketDirectory: server.directory).configure(device: server.interface, DeviceConfig())
        #expect(report == ApplyReport(messages: 0, bytes: 0))
        #expect(server.requests.isEmpty)
    }

    @Test func nonZeroErrnoIsRejected() throws {
        let server = try FakeUAPIServer(replies: ["errno=-22\n\n"])
        defer { server.finish() }
        let e = try #require(throws: WireGuardError.self) {
            try UserspaceBackend(socketDirectory: server.directory).configure(device: server.interface, DeviceConfig(fwmark: 1))
        }
        guard case .rejected(let dev, let code, let message) = e else { Issue.record("got \(e)"); return }
        #expect(dev == server.interface)
        #expect(code == 22)
        #expect(message.contains("Invalid argument"))
    }

    @Test func missingSocketIsNoSuchDevice() throws {
        let backend = UserspaceBackend(socketDirectory: "/nonexistent-wmt-\(UUID().uuidString.prefix(6))")
        #expect(!backend.hasSocket(for: "wg0"))
        for op in [{ _ = try backend.device(named: "wg0") },
                   { _ = try backend.configure(device: "wg0", DeviceConfig(fwmark: 1)) },
                   { _ = try backend.configure(device: "wg0", DeviceConfig()) }] {
            let e = try #require(throws: WireGuardError.self) { try op() }
            guard case .noSuchDevice("wg0") = e else { Issue.record("got \(e)"); continue }
        }
    }

    @Test func invalidInterfaceNamesNeverReachTheFilesystem() throws {
        let backend = UserspaceBackend(socketDirectory: "/tmp")
        for name in ["", "../etc/x", "a/b", "sixteen-chars-xx", "has space"] {
            #expect(!backend.hasSocket(for: name))
            #expect(throws: WireGuardError.self) { try backend.device(named: name) }
        }
    }

    @Test func backendChoicePrefersTheUserspaceSocket() throws {
        let server = try FakeUAPIServer(replies: [])
        defer { server.finish() }
        struct FakeKernel: WireGuardBackend {
            let kind = "kernel"
            func device(named name: String) throws -> Device { Device(name: name) }
            func configure(device name: String, _ config: DeviceConfig) throws -> ApplyReport { ApplyReport() }
        }
        #expect(try wireGuardBackend(for: server.interface, socketDirectory: server.directory, kernel: { FakeKernel() }).kind == "userspace")
        #expect(try wireGuardBackend(for: "other0", socketDirectory: server.directory, kernel: { FakeKernel() }).kind == "kernel")
        let e = try #require(throws: WireGuardError.self) {
            try wireGuardBackend(for: "other0", socketDirectory: server.directory, kernel: { throw WireGuardError.kernelModuleMissing })
        }
        guard case .noSuchDevice("other0") = e else { Issue.record("got \(e)"); return }
    }
}

/// A wireguard-go that exits at once is reported with its own last error line (issue 14: as a non-root
/// user, its TUN permission error was only in its log while the agent guessed "is it installed?").
@Suite struct LaunchFailureTests {
    @Test func theLastErrorLineOfTheLogIsQuoted() throws {
        var template = Array("/tmp/wmt-wglog-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path) }
        let log = "INFO: (ux5) 2026/12/02 Starting wireguard-go version 0.0.20220316\nERROR: (ux5) 2026/12/02 Failed to create TUN device: operation not permitted\n\n"
        _ = log.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        #expect(UserspaceLauncher.lastError(inLog: path) == "ERROR: (ux5) 2026/12/02 Failed to create TUN device: operation not permitted")
        #expect(UserspaceLauncher.lastError(inLog: path + ".absent") == nil)
    }

    @Test func theLaunchErrorOfAnExecutableThatFailsSaysWhatItPrinted() throws {
        var template = Array("/tmp/wmt-wglog-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        close(fd)
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path) }
        // /bin/sh -f IFACE: "sh: 0: cannot open IFACE: No such file" (exits at once).
        let error = try #require(throws: UserspaceLaunchError.self) {
            _ = try UserspaceLauncher(interface: "wmtnosuch0", executable: "/bin/sh", socketDirectory: "/tmp", logFile: path, timeout: 5)
        }
        #expect(error.description.contains("it said:") && error.description.contains("wmtnosuch0"))
    }
}

/// A UAPI socket that accepts and never answers (a hung wireguard-go): requests time out, naming the
/// device, the socket and the timeout, instead of blocking their caller for ever (issue 12).
@Suite struct UserspaceBackendTimeoutTests {
    @Test func aListenerThatNeverAnswersTimesOutNamingTheDevice() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/wmt-hung-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/wmthung0.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let b = Array(path.utf8)
            raw.copyBytes(from: b)
            raw[b.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(rc == 0 && listen(listener, 4) == 0)
        // The kernel completes the connection into the backlog: nobody ever accepts or answers.
        let backend = UserspaceBackend(socketDirectory: directory, timeoutSeconds: 1)
        let started = Date()
        do {
            _ = try backend.device(named: "wmthung0")
            Issue.record("a device that never answers was read")
        } catch WireGuardError.timedOut(let device, let socket, let seconds) {
            #expect(device == "wmthung0" && socket == path && seconds == 1)
        }
        #expect(Date().timeIntervalSince(started) < 5)
        let text = WireGuardError.timedOut(device: "wmthung0", socket: path, seconds: 1).description
        #expect(text.contains("'wmthung0'") && text.contains(path) && text.contains("within 1 s"))
    }

    @Test func aSocketNobodyListensOnIsNoDevice() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/wmt-stale-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: WireGuardError.self) { try UserspaceBackend(socketDirectory: directory, timeoutSeconds: 1).device(named: "wmtgone0") }
        do { _ = try UserspaceBackend(socketDirectory: directory).device(named: "wmtgone0") } catch WireGuardError.noSuchDevice(let name) {
            #expect(name == "wmtgone0")
        }
    }
}
