import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// The netlink bus a socket talks to.
public enum NetlinkBus: Sendable {
    /// rtnetlink: links, addresses, routes.
    case route
    /// Generic netlink: families such as `wireguard`, resolved by name.
    case generic
    /// nfnetlink: nftables (only its ruleset generation is read here).
    case netfilter

    var rawValue: Int32 {
        switch self {
        case .route: return NETLINK_ROUTE
        case .generic: return NETLINK_GENERIC
        case .netfilter: return NETLINK_NETFILTER
        }
    }
}

/// Owns one libmnl netlink socket: bound, with extended ACKs and capped ACKs turned on, stamping a
/// fresh sequence number on every request.
///
/// Three exchanges cover every use: `request` (send, wait for the ACK), `transact` (send, collect
/// the replies before the ACK) and `dump` (collect until NLMSG_DONE; the whole dump is retried when
/// the kernel flags it NLM_F_DUMP_INTR). Failures come back as `NetlinkError` with errno and the
/// kernel's extended-ACK text. Not thread-safe: one owner at a time.
public final class NetlinkSocket {
    private let nl: OpaquePointer
    /// The port id the kernel assigned at bind time.
    public let portID: UInt32
    private var sequence: UInt32
    /// 32 KiB: the most the kernel puts in one dump skb, so a recv never truncates.
    private static let receiveCapacity = 32768
    private let receiveBuffer: UnsafeMutableRawPointer
    /// Messages written to the kernel so far (for ApplyReport and benchmarks).
    public private(set) var messagesSent = 0
    /// Bytes written to the kernel so far.
    public private(set) var bytesSent = 0

    /// Opens and binds a socket on `bus` in the calling thread's network namespace
    /// (mnl_socket_open + mnl_socket_bind + NETLINK_EXT_ACK/NETLINK_CAP_ACK).
    public init(_ bus: NetlinkBus) throws {
        guard let nl = mnl_socket_open(bus.rawValue) else {
            throw NetlinkError.system(call: "socket", errno: errno)
        }
        guard mnl_socket_bind(nl, 0, pid_t(bitPattern: wm_mnl_socket_autopid())) == 0 else {
            let e = errno
            mnl_socket_close(nl)
            throw NetlinkError.system(call: "bind", errno: e)
        }
        var one: Int32 = 1
        // Both options exist since Linux 4.12 / 4.2; on older kernels errors just lose their text.
        _ = mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        self.nl = nl
        portID = mnl_socket_get_portid(nl)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.receiveCapacity, alignment: 8)
    }

    /// Opens a socket inside the network namespace at `path` (e.g. /var/run/netns/NAME): a short-lived
    /// thread joins the namespace (setns) and creates the socket there; the socket stays in that
    /// namespace for its whole life while the calling thread's namespace is untouched.
    public static func open(_ bus: NetlinkBus, inNetworkNamespaceAt path: String) throws -> NetlinkSocket {
        try runInNetworkNamespace(path: path) { try NetlinkSocket(bus) }
    }

    deinit {
        mnl_socket_close(nl)
        receiveBuffer.deallocate()
    }

    /// Sends `message` (built with NLM_F_ACK) and waits for its ACK.
    public func request(_ message: [UInt8], operation: String) throws {
        _ = try exchange(message, operation: operation, collect: false)
    }

    /// Sends `message` and returns the data messages the kernel answers with before its ACK or
    /// NLMSG_DONE (e.g. CTRL_CMD_GETFAMILY, RTM_GETLINK by name).
    public func transact(_ message: [UInt8], operation: String) throws -> [[UInt8]] {
        try exchange(message, operation: operation, collect: true)
    }

    /// Sends a dump request (NLM_F_DUMP) and returns every message up to NLMSG_DONE. When the kernel
    /// marks the dump inconsistent (NLM_F_DUMP_INTR: the object changed meanwhile), the rest is
    /// drained and the whole dump requested again, a few times at most.
    public func dump(_ message: [UInt8], operation: String) throws -> [[UInt8]] {
        var attempts = 0
        while true {
            do {
                return try exchange(message, operation: operation, collect: true)
            } catch DumpInterrupted.interrupted {
                attempts += 1
                if attempts >= 8 {
                    throw NetlinkError.kernel(
                        operation: operation, errno: EINTR,
                        message: "dump kept changing while it was read; retry later")
                }
            }
        }
    }

    private enum DumpInterrupted: Error { case interrupted(UInt32) }

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        if sequence == 0 { sequence = 1 }
        return sequence
    }

    private func send(_ message: [UInt8], operation: String) throws -> UInt32 {
        let seq = nextSequence()
        var m = message
        precondition(m.count >= MemoryLayout<nlmsghdr>.size)
        m.withUnsafeMutableBytes { $0.storeBytes(of: seq, toByteOffset: 8, as: UInt32.self) }
        let sent = m.withUnsafeBytes { mnl_socket_sendto(nl, $0.baseAddress, $0.count) }
        guard sent == m.count else {
            throw NetlinkError.system(call: "sendto (\(operation))", errno: sent < 0 ? errno : EMSGSIZE)
        }
        messagesSent += 1
        bytesSent += m.count
        return seq
    }

    private func exchange(_ message: [UInt8], operation: String, collect: Bool) throws -> [[UInt8]] {
        let seq = try send(message, operation: operation)
        let collector = NetlinkReplyCollector(sequence: seq, portID: portID, operation: operation, collect: collect)
        while true {
            let n = mnl_socket_recvfrom(nl, receiveBuffer, Self.receiveCapacity)
            if n < 0 {
                if errno == EINTR { continue }
                throw NetlinkError.system(call: "recvfrom (\(operation))", errno: errno)
            }
            let buffer = UnsafeRawBufferPointer(start: receiveBuffer, count: n)
            switch try collector.consume(buffer) {
            case .needMore: continue
            case .complete: return collector.messages
            case .interrupted:
                // The rest of the dump may still be on its way; read it off unless this very
                // buffer already ended it, so the retry starts on a clean socket.
                if !NetlinkReplyCollector.endsReply(buffer, sequence: seq) {
                    try drain(sequence: seq, operation: operation)
                }
                throw DumpInterrupted.interrupted(seq)
            }
        }
    }

    /// Reads and drops what is left of an interrupted dump.
    private func drain(sequence seq: UInt32, operation: String) throws {
        while true {
            let n = mnl_socket_recvfrom(nl, receiveBuffer, Self.receiveCapacity)
            if n < 0 {
                if errno == EINTR { continue }
                throw NetlinkError.system(call: "recvfrom (\(operation))", errno: errno)
            }
            if NetlinkReplyCollector.endsReply(UnsafeRawBufferPointer(start: receiveBuffer, count: n), sequence: seq) {
                return
            }
        }
    }
}

/// Decodes an NLMSG_ERROR message: the positive errno (0 for an ACK) and the kernel's
/// extended-ACK text (NLMSGERR_ATTR_MSG) when present. Pure; nil when truncated.
public func parseNetlinkError(_ view: NetlinkMessageView) -> (errno: Int32, message: String?)? {
    let inner = MemoryLayout<nlmsghdr>.size
    guard view.type == UInt16(NLMSG_ERROR), view.payload.count >= 4 + inner else { return nil }
    let code = view.payload.loadUnaligned(as: Int32.self)
    // The echoed request is capped to its header when NETLINK_CAP_ACK is on.
    let echoed =
        view.flags & UInt16(NLM_F_CAPPED) != 0
        ? inner : Int(view.payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    // Clamped: -Int32.min traps, and the bytes are the kernel's (or a fuzzer's), not a promise.
    return (Int32(clamping: -Int64(code)), extendedAckMessage(view, tlvOffset: 4 + echoed))
}

/// The NLMSGERR_ATTR_MSG string of an error/done message whose TLVs start at `tlvOffset` in the payload.
func extendedAckMessage(_ view: NetlinkMessageView, tlvOffset: Int) -> String? {
    guard view.flags & UInt16(NLM_F_ACK_TLVS) != 0 else { return nil }
    let start = Int(wm_mnl_align(tlvOffset))
    guard start < view.payload.count else { return nil }
    var text: String?
    NetlinkAttribute.forEach(in: UnsafeRawBufferPointer(rebasing: view.payload[start...])) { attr in
        if attr.type == UInt16(NLMSGERR_ATTR_MSG.rawValue) { text = attr.string }
    }
    return text
}
