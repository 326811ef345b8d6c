#if canImport(Glibc)
import Glibc
#endif
import IPNetwork
import Testing
@testable import WireMeshAgent

@Suite("Port probe")
struct PortProbeTests {
    /// A bound socket on 127.0.0.1 (port chosen by the kernel) and its port.
    func boundSocket(_ type: Int32, reuseAddress: Bool = false) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, type, 0)
        try #require(fd >= 0)
        var one: Int32 = 1
        if reuseAddress { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try #require(withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } } == 0)
        try #require(withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } } == 0)
        return (fd, UInt16(bigEndian: sa.sin_port))
    }

    let loopback = try! IPAddress("127.0.0.1")

    @Test func portsInUseAreReported() throws {
        for type in [Int32(SOCK_STREAM.rawValue), Int32(SOCK_DGRAM.rawValue)] {
            let (fd, port) = try boundSocket(type)
            defer { close(fd) }
            if type == Int32(SOCK_STREAM.rawValue) { #expect(listen(fd, 1) == 0) }
            #expect(Preflight.bindProbe(address: loopback, port: port, type: type) == EADDRINUSE)
        }
    }

    /// A connection the join server closed first stays in TIME_WAIT on its port for a minute; a
    /// restarted agent must still find the port free (it failed `wiremesh join` right after a leave).
    @Test func timeWaitOnTheJoinPortIsFree() throws {
        // The join server sets SO_REUSEADDR (LineServer), and accepted connections inherit it.
        let (listener, port) = try boundSocket(Int32(SOCK_STREAM.rawValue), reuseAddress: true)
        #expect(listen(listener, 1) == 0)
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        sa.sin_port = port.bigEndian
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try #require(withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, len) } } == 0)
        let served = accept(listener, nil, nil)
        try #require(served >= 0)
        close(served)  // the server side closes first: its end goes to TIME_WAIT
        var byte: UInt8 = 0
        _ = read(client, &byte, 1)  // sees the FIN
        close(client)
        close(listener)
        #expect(Preflight.bindProbe(address: loopback, port: port, type: Int32(SOCK_STREAM.rawValue)) == nil)
    }
}
