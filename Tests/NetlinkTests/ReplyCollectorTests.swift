import CMnl
import Netlink
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A reply message as the kernel writes it: type, flags, sequence, port and a payload.
private func message(type: Int32, flags: Int32 = 0, seq: UInt32 = 7, port: UInt32 = 99, payload: [UInt8] = [])
    -> [UInt8]
{
    var m = [UInt8](repeating: 0, count: 16) + payload
    while m.count % 4 != 0 { m.append(0) }
    m.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: UInt32(16 + payload.count), toByteOffset: 0, as: UInt32.self)
        raw.storeBytes(of: UInt16(type), toByteOffset: 4, as: UInt16.self)
        raw.storeBytes(of: UInt16(flags), toByteOffset: 6, as: UInt16.self)
        raw.storeBytes(of: seq, toByteOffset: 8, as: UInt32.self)
        raw.storeBytes(of: port, toByteOffset: 12, as: UInt32.self)
    }
    return m
}

private func le32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

private func feed(_ c: NetlinkReplyCollector, _ buffer: [UInt8]) throws -> NetlinkReplyCollector.Progress {
    try buffer.withUnsafeBytes { try c.consume($0) }
}

@Suite struct ReplyCollectorTests {
    @Test func dumpAcrossTwoReceivesEndsAtDone() throws {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "listing routes")
        let a = message(type: 24, flags: NLM_F_MULTI, payload: [1, 2, 3, 4])
        let b = message(type: 24, flags: NLM_F_MULTI, payload: [5, 6, 7, 8])
        #expect(try feed(c, a + b) == .needMore)
        let d = message(type: 24, flags: NLM_F_MULTI, payload: [9, 9, 9, 9])
        #expect(try feed(c, d + message(type: NLMSG_DONE, flags: NLM_F_MULTI, payload: le32(0))) == .complete)
        #expect(c.messages == [a, b, d])
    }

    @Test func ackEndsARequestAndDataBeforeItIsKept() throws {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "resolving family")
        let reply = message(type: 16, payload: [1, 2, 0, 0])
        let ack = message(type: NLMSG_ERROR, flags: 0x100, payload: le32(0) + message(type: 16, seq: 7, port: 99))
        #expect(try feed(c, reply + ack) == .complete)
        #expect(c.messages == [reply])
        let quiet = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "x", collect: false)
        #expect(try feed(quiet, reply + ack) == .complete)
        #expect(quiet.messages.isEmpty)
    }

    @Test func kernelRefusalCarriesErrnoAndExtendedAckText() throws {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "creating wireguard interface 'wg0'")
        // NLMSG_ERROR -EOPNOTSUPP, capped echo, then NLMSGERR_ATTR_MSG "Unknown device type".
        let text = Array("Unknown device type".utf8) + [0]
        let tlv: [UInt8] = [UInt8(4 + text.count), 0, 1, 0] + text
        let err = message(
            type: NLMSG_ERROR, flags: 0x300, payload: le32(-95) + message(type: 16, seq: 7, port: 99) + tlv)
        #expect {
            _ = try feed(c, err)
        } throws: { e in
            guard case NetlinkError.kernel(let op, 95, "Unknown device type")? = e as? NetlinkError else {
                return false
            }
            return op.contains("wg0") && "\(e)".contains("Unknown device type")
        }
    }

    @Test func errorReportedInDoneFailsTheDump() {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "reading device")
        let done = message(type: NLMSG_DONE, flags: NLM_F_MULTI, payload: le32(-19))
        #expect { _ = try feed(c, done) } throws: { ($0 as? NetlinkError)?.errno == 19 }
    }

    @Test func interruptedDumpIsReportedAndItsEndIsFound() throws {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "reading device")
        let first = message(type: 24, flags: NLM_F_MULTI, payload: [1, 0, 0, 0])
        let changed = message(type: 24, flags: NLM_F_MULTI | NLM_F_DUMP_INTR, payload: [2, 0, 0, 0])
        #expect(try feed(c, first + changed) == .interrupted)
        // Where the dump ends decides whether the socket must be drained before the retry.
        let done = message(type: NLMSG_DONE, flags: NLM_F_MULTI, payload: le32(0))
        let rest = message(type: 24, flags: NLM_F_MULTI | NLM_F_DUMP_INTR, payload: [3, 0, 0, 0])
        #expect(!(first + changed).withUnsafeBytes { NetlinkReplyCollector.endsReply($0, sequence: 7) })
        #expect((rest + done).withUnsafeBytes { NetlinkReplyCollector.endsReply($0, sequence: 7) })
        #expect(!(rest + done).withUnsafeBytes { NetlinkReplyCollector.endsReply($0, sequence: 8) })
    }

    /// Fuzzing (netlink-route): libmnl's mnl_nlmsg_ok casts nlmsg_len to int, so a length of 2^31 or
    /// more passed and a 36-byte buffer was copied as 4 GiB (out of memory, or a read past the buffer).
    @Test func messageLengthOf2To31OrMoreIsNotTrusted() throws {
        var huge = message(type: 24, flags: NLM_F_MULTI, payload: [1, 2, 3, 4])
        huge.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(0x8000_0010), toByteOffset: 0, as: UInt32.self) }
        let good = message(type: 24, flags: NLM_F_MULTI, payload: [5, 6, 7, 8])
        #expect(splitNetlinkMessages(good + huge) == [good])
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "listing routes")
        #expect(try feed(c, good + huge) == .needMore)
        #expect(c.messages == [good])
        #expect(!(huge + message(type: NLMSG_DONE, payload: le32(0))).withUnsafeBytes {
            NetlinkReplyCollector.endsReply($0, sequence: 7)
        })
    }

    /// Fuzzing (netlink-route): an NLMSG_ERROR or NLMSG_DONE carrying Int32.min trapped on `-code`.
    @Test func errorCodeInt32MinIsAnErrorNotATrap() {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "adding route")
        let err = message(type: NLMSG_ERROR, flags: 0x100, payload: le32(.min) + message(type: 24, seq: 7, port: 99))
        #expect { _ = try feed(c, err) } throws: { ($0 as? NetlinkError)?.errno == .max }
        let d = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "reading device")
        let done = message(type: NLMSG_DONE, flags: NLM_F_MULTI, payload: le32(.min))
        #expect { _ = try feed(d, done) } throws: { ($0 as? NetlinkError)?.errno == .max }
    }

    @Test func repliesToAnotherRequestAreRejected() {
        let c = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "listing links")
        #expect(throws: NetlinkError.self) { _ = try feed(c, message(type: 16, seq: 6)) }
        let d = NetlinkReplyCollector(sequence: 7, portID: 99, operation: "listing links")
        #expect(throws: NetlinkError.self) { _ = try feed(d, message(type: 16, port: 12)) }
    }
}
