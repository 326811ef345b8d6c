import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// Collects the kernel's answer to one request from the buffers `recv` returns, through libmnl's
/// mnl_cb_run2 (sequence/port checks, message walking) with callbacks for data, NLMSG_ERROR and
/// NLMSG_DONE. Pure: it never touches a socket, so replies captured or built by hand can drive it.
public final class NetlinkReplyCollector {
    /// What the caller should do after a buffer.
    public enum Progress: Equatable, Sendable {
        /// The reply continues in the next buffer.
        case needMore
        /// ACK or NLMSG_DONE seen: `messages` holds the whole reply.
        case complete
        /// The kernel flagged the dump NLM_F_DUMP_INTR (the object changed while it was read):
        /// the collected messages are inconsistent and the dump must be requested again.
        case interrupted
    }

    /// Sequence number of the request being answered.
    public let sequence: UInt32
    /// Our port id (0 skips the check).
    public let portID: UInt32
    /// Named in errors.
    public let operation: String
    private let collect: Bool
    /// Data messages (type ≥ NLMSG_MIN_TYPE) of the reply, each with its header, when collecting.
    public private(set) var messages: [[UInt8]] = []
    private var failure: (errno: Int32, message: String?)?

    /// A collector for the reply to request `sequence`; `collect` false keeps no data messages.
    public init(sequence: UInt32, portID: UInt32, operation: String, collect: Bool = true) {
        self.sequence = sequence
        self.portID = portID
        self.operation = operation
        self.collect = collect
    }

    /// Consumes one received buffer. Throws `NetlinkError.kernel` (with the extended-ACK text) when
    /// the kernel refused the request, `NetlinkError.malformed` for a reply that belongs to another
    /// request or does not parse.
    public func consume(_ buffer: UnsafeRawBufferPointer) throws -> Progress {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .needMore }
        // libmnl walks only what is well formed: it would trust a message length of 2^31 or more.
        let length = wellFormedNetlinkLength(buffer)
        let data = Unmanaged.passUnretained(self).toOpaque()
        var callbacks = Self.controlCallbacks
        errno = 0
        let ret = withExtendedLifetime(self) {
            callbacks.withUnsafeMutableBufferPointer { ctl in
                mnl_cb_run2(
                    base, length, sequence, portID, Self.dataCallback, data,
                    ctl.baseAddress, UInt32(ctl.count))
            }
        }
        if ret == wm_mnl_cb_error() {
            let e = errno
            if let failure {
                throw NetlinkError.kernel(operation: operation, errno: failure.errno, message: failure.message)
            }
            switch e {
            case EINTR: return .interrupted
            case ESRCH: throw NetlinkError.malformed("\(operation): reply with a foreign sequence number")
            case EPROTO: throw NetlinkError.malformed("\(operation): reply for another netlink port")
            default: throw NetlinkError.malformed("\(operation): \(errnoText(e))")
            }
        }
        return ret == wm_mnl_cb_stop() ? .complete : .needMore
    }

    /// True when `buffer` holds the NLMSG_DONE or NLMSG_ERROR that ends the reply to `sequence`.
    public static func endsReply(_ buffer: UnsafeRawBufferPointer, sequence: UInt32) -> Bool {
        guard let base = buffer.baseAddress else { return false }
        var rest = Int32(clamping: buffer.count)
        var nlh = UnsafePointer(base.assumingMemoryBound(to: nlmsghdr.self))
        while netlinkMessageOK(nlh, rest) {
            let t = Int32(nlh.pointee.nlmsg_type)
            if nlh.pointee.nlmsg_seq == sequence && (t == NLMSG_DONE || t == NLMSG_ERROR) { return true }
            nlh = UnsafePointer(mnl_nlmsg_next(nlh, &rest))
        }
        return false
    }

    private static func collector(_ data: UnsafeMutableRawPointer?) -> NetlinkReplyCollector {
        Unmanaged<NetlinkReplyCollector>.fromOpaque(data!).takeUnretainedValue()
    }

    private static func view(_ nlh: UnsafePointer<nlmsghdr>?) -> NetlinkMessageView? {
        guard let nlh else { return nil }
        return NetlinkMessageView(UnsafeRawBufferPointer(start: nlh, count: Int(nlh.pointee.nlmsg_len)))
    }

    private static let dataCallback: mnl_cb_t = { nlh, data in
        let c = collector(data)
        if c.collect, let nlh {
            c.messages.append(Array(UnsafeRawBufferPointer(start: nlh, count: Int(nlh.pointee.nlmsg_len))))
        }
        return wm_mnl_cb_ok()
    }

    /// NLMSG_ERROR: 0 is the ACK (stop), anything else is kept with its extended-ACK text.
    private static let errorCallback: mnl_cb_t = { nlh, data in
        let c = collector(data)
        guard let v = view(nlh), let parsed = parseNetlinkError(v) else {
            c.failure = (EBADMSG, "truncated NLMSG_ERROR")
            return wm_mnl_cb_error()
        }
        if parsed.errno == 0 { return wm_mnl_cb_stop() }
        c.failure = parsed
        return wm_mnl_cb_error()
    }

    /// NLMSG_DONE: ends a dump; a negative code in it is an error that happened mid-dump.
    private static let doneCallback: mnl_cb_t = { nlh, data in
        let c = collector(data)
        if let v = view(nlh), v.payload.count >= 4 {
            let code = v.payload.loadUnaligned(as: Int32.self)
            if code < 0 {
                c.failure = (Int32(clamping: -Int64(code)), extendedAckMessage(v, tlvOffset: 4))
                return wm_mnl_cb_error()
            }
        }
        return wm_mnl_cb_stop()
    }

    private static let controlCallbacks: [mnl_cb_t?] = {
        var table = [mnl_cb_t?](repeating: nil, count: Int(NLMSG_MIN_TYPE))
        table[Int(NLMSG_ERROR)] = errorCallback
        table[Int(NLMSG_DONE)] = doneCallback
        return table
    }()
}
