import CMnl

/// Builds one netlink message (header, optional family header, attributes) in a fixed-size buffer
/// through libmnl, then hands it out as bytes.
///
/// Pure: no I/O. The sequence number and port id are left 0; `NetlinkSocket` stamps the sequence
/// number when it sends, so encoders stay deterministic and golden-testable.
/// Every `put…` returns false (and leaves the message unchanged) when the attribute would not fit in
/// `capacity`; that is how chunking encoders notice that a message is full.
public final class NetlinkMessageBuilder {
    /// Bytes the message may grow to.
    public let capacity: Int
    private let buffer: UnsafeMutableRawPointer
    private let header: UnsafeMutablePointer<nlmsghdr>

    /// Starts a message of `type` with `flags` (NLM_F_REQUEST is not added implicitly).
    public init(type: UInt16, flags: UInt16, capacity: Int = 4096) {
        precondition(capacity >= 64, "netlink message capacity too small")
        self.capacity = capacity
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        header = mnl_nlmsg_put_header(buffer)
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = flags
    }

    deinit { buffer.deallocate() }

    /// Current length of the message in bytes (header included, always 4-byte aligned).
    public var length: Int { Int(header.pointee.nlmsg_len) }

    /// Bytes still free in the buffer.
    public var remaining: Int { capacity - length }

    /// Appends a fixed family header (genlmsghdr, ifinfomsg, rtmsg, ifaddrmsg…) right after the
    /// netlink header. Call it before any attribute.
    public func putExtraHeader<T>(_ value: T) {
        let size = MemoryLayout<T>.size
        let p = mnl_nlmsg_put_extra_header(header, size)!
        withUnsafeBytes(of: value) { p.copyMemory(from: $0.baseAddress!, byteCount: size) }
    }

    /// Appends an attribute with a raw payload (mnl_attr_put_check).
    @discardableResult
    public func put(_ type: UInt16, _ payload: UnsafeRawBufferPointer) -> Bool {
        mnl_attr_put_check(header, capacity, type, payload.count, payload.baseAddress)
    }

    /// Appends an attribute whose payload is `bytes`.
    @discardableResult
    public func put(_ type: UInt16, bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { put(type, $0) }
    }

    /// Appends an attribute whose payload is the in-memory representation of `value` (host order,
    /// as netlink integers and C structs like sockaddr_in are carried).
    @discardableResult
    public func put<T>(_ type: UInt16, value: T) -> Bool {
        withUnsafeBytes(of: value) { put(type, $0) }
    }

    /// Appends a u8 attribute.
    @discardableResult public func putU8(_ type: UInt16, _ v: UInt8) -> Bool {
        mnl_attr_put_u8_check(header, capacity, type, v)
    }
    /// Appends a u16 attribute (host order).
    @discardableResult public func putU16(_ type: UInt16, _ v: UInt16) -> Bool {
        mnl_attr_put_u16_check(header, capacity, type, v)
    }
    /// Appends a u32 attribute (host order).
    @discardableResult public func putU32(_ type: UInt16, _ v: UInt32) -> Bool {
        mnl_attr_put_u32_check(header, capacity, type, v)
    }
    /// Appends a u64 attribute (host order).
    @discardableResult public func putU64(_ type: UInt16, _ v: UInt64) -> Bool {
        mnl_attr_put_u64_check(header, capacity, type, v)
    }

    /// Appends a NUL-terminated string attribute (mnl_attr_put_strz_check).
    @discardableResult
    public func putString(_ type: UInt16, _ s: String) -> Bool {
        s.withCString { mnl_attr_put_strz_check(header, capacity, type, $0) }
    }

    /// A started nested attribute; close it with `endNest` or drop it with `cancelNest`.
    public struct Nest: Sendable {
        fileprivate let offset: Int
    }

    /// Opens a nested attribute of `type` with NLA_F_NESTED set (the kernel's strict policies
    /// require the flag); nil when even the empty nest does not fit.
    public func beginNest(_ type: UInt16) -> Nest? {
        guard let start = mnl_attr_nest_start_check(header, capacity, type) else { return nil }
        start.pointee.nla_type = type | wm_nla_f_nested()
        return Nest(offset: UnsafeMutableRawPointer(start) - buffer)
    }

    /// Closes `nest`, fixing up its length.
    public func endNest(_ nest: Nest) {
        mnl_attr_nest_end(header, (buffer + nest.offset).assumingMemoryBound(to: nlattr.self))
    }

    /// Removes `nest` and everything appended after it.
    public func cancelNest(_ nest: Nest) {
        mnl_attr_nest_cancel(header, (buffer + nest.offset).assumingMemoryBound(to: nlattr.self))
    }

    /// True when `nest` holds no attribute yet.
    public func isEmpty(_ nest: Nest) -> Bool {
        length - nest.offset <= Int(wm_nla_hdrlen())
    }

    /// The finished message.
    public var bytes: [UInt8] {
        Array(UnsafeRawBufferPointer(start: buffer, count: length))
    }
}

/// One attribute seen while parsing. `payload` points into the message being parsed and is only
/// valid inside the closure that received it.
public struct NetlinkAttribute {
    /// Attribute type with NLA_F_NESTED / NLA_F_NET_BYTEORDER masked off.
    public let type: UInt16
    /// True when the sender set NLA_F_NESTED.
    public let isNested: Bool
    /// The payload (without padding).
    public let payload: UnsafeRawBufferPointer

    /// The payload as u8 when it has exactly that size.
    public var u8: UInt8? { payload.count == 1 ? payload[0] : nil }
    /// The payload as a host-order u16 when it has exactly that size.
    public var u16: UInt16? { payload.count == 2 ? payload.loadUnaligned(as: UInt16.self) : nil }
    /// The payload as a host-order u32 when it has exactly that size.
    public var u32: UInt32? { payload.count == 4 ? payload.loadUnaligned(as: UInt32.self) : nil }
    /// The payload as a host-order u64 when it has exactly that size.
    public var u64: UInt64? { payload.count == 8 ? payload.loadUnaligned(as: UInt64.self) : nil }
    /// The payload as a string, up to the first NUL.
    public var string: String {
        let end = payload.firstIndex(of: 0) ?? payload.count
        return String(decoding: UnsafeRawBufferPointer(rebasing: payload[0..<end]), as: UTF8.self)
    }
    /// A copy of the payload.
    public var bytes: [UInt8] { Array(payload) }

    /// Visits the attributes nested in this one (whether or not NLA_F_NESTED was set: older
    /// kernels and some families omit it).
    public func forEachNested(_ body: (NetlinkAttribute) throws -> Void) rethrows {
        try NetlinkAttribute.forEach(in: payload, body)
    }

    /// Visits every well-formed attribute in `region` in order (mnl_attr_ok / mnl_attr_next);
    /// stops at the first truncated one.
    public static func forEach(
        in region: UnsafeRawBufferPointer,
        _ body: (NetlinkAttribute) throws -> Void
    ) rethrows {
        guard let base = region.baseAddress, region.count > 0 else { return }
        var attr = base.assumingMemoryBound(to: nlattr.self)
        var rest = region.count
        let hdr = Int(wm_nla_hdrlen())
        while rest > 0, mnl_attr_ok(attr, Int32(clamping: rest)) {
            let len = Int(attr.pointee.nla_len)
            let raw = attr.pointee.nla_type
            let payload = UnsafeRawBufferPointer(start: UnsafeRawPointer(attr) + hdr, count: len - hdr)
            try body(
                NetlinkAttribute(
                    type: raw & wm_nla_type_mask(), isNested: raw & wm_nla_f_nested() != 0,
                    payload: payload))
            rest -= Int(wm_mnl_align(len))
            attr = UnsafePointer(mnl_attr_next(attr)!)
        }
    }
}

/// A read-only view of one netlink message (header + payload) held in bytes.
public struct NetlinkMessageView {
    /// The whole message, header included.
    public let raw: UnsafeRawBufferPointer

    /// Wraps `raw` when it holds at least a header and its length field fits.
    public init?(_ raw: UnsafeRawBufferPointer) {
        guard raw.count >= MemoryLayout<nlmsghdr>.size else { return nil }
        let len = Int(raw.loadUnaligned(as: UInt32.self))
        guard len >= MemoryLayout<nlmsghdr>.size, len <= raw.count else { return nil }
        self.raw = UnsafeRawBufferPointer(rebasing: raw[0..<len])
    }

    /// nlmsg_type.
    public var type: UInt16 { raw.loadUnaligned(fromByteOffset: 4, as: UInt16.self) }
    /// nlmsg_flags.
    public var flags: UInt16 { raw.loadUnaligned(fromByteOffset: 6, as: UInt16.self) }
    /// nlmsg_seq.
    public var sequence: UInt32 { raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
    /// The payload after the netlink header.
    public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: raw[MemoryLayout<nlmsghdr>.size...])
    }

    /// Reads the family header of type `T` at the start of the payload, nil when too short.
    public func extraHeader<T>(as: T.Type) -> T? {
        guard payload.count >= MemoryLayout<T>.size else { return nil }
        return payload.loadUnaligned(as: T.self)
    }

    /// Visits the attributes following a family header of `extraHeaderSize` bytes (aligned).
    public func forEachAttribute(
        afterExtraHeader extraHeaderSize: Int,
        _ body: (NetlinkAttribute) throws -> Void
    ) rethrows {
        let start = Int(wm_mnl_align(extraHeaderSize))
        guard payload.count >= start else { return }
        try NetlinkAttribute.forEach(in: UnsafeRawBufferPointer(rebasing: payload[start...]), body)
    }
}

/// mnl_nlmsg_ok with the check libmnl 1.0.4 gets wrong: it compares `(int)nlmsg_len`, so a length
/// of 2^31 or more passes as negative and the caller reads far past the buffer (found by fuzzing).
func netlinkMessageOK(_ nlh: UnsafePointer<nlmsghdr>, _ rest: Int32) -> Bool {
    mnl_nlmsg_ok(nlh, rest) && nlh.pointee.nlmsg_len <= UInt32(rest)
}

/// The length of the leading run of well-formed messages in `buffer` (`netlinkMessageOK`): what may
/// be handed to libmnl's own walkers (mnl_cb_run2), which would trust a length of 2^31 or more.
func wellFormedNetlinkLength(_ buffer: UnsafeRawBufferPointer) -> Int {
    guard let base = buffer.baseAddress else { return 0 }
    var rest = Int32(clamping: buffer.count)
    var nlh = UnsafePointer(base.assumingMemoryBound(to: nlmsghdr.self))
    while netlinkMessageOK(nlh, rest) {
        nlh = UnsafePointer(mnl_nlmsg_next(nlh, &rest))
    }
    return UnsafeRawPointer(nlh) - base
}

/// Splits a buffer holding several netlink messages back to back (one `recv`) into copies of each
/// message (mnl_nlmsg_ok / mnl_nlmsg_next). Pure; used by tests and captured-reply parsers.
public func splitNetlinkMessages(_ bytes: [UInt8]) -> [[UInt8]] {
    bytes.withUnsafeBytes { buf -> [[UInt8]] in
        guard let base = buf.baseAddress else { return [] }
        var out: [[UInt8]] = []
        var rest = Int32(clamping: buf.count)
        var nlh = UnsafePointer(base.assumingMemoryBound(to: nlmsghdr.self))
        while netlinkMessageOK(nlh, rest) {
            out.append(Array(UnsafeRawBufferPointer(start: nlh, count: Int(nlh.pointee.nlmsg_len))))
            nlh = UnsafePointer(mnl_nlmsg_next(nlh, &rest))
        }
        return out
    }
}
