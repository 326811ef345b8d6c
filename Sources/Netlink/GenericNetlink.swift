import CMnl

/// Generic netlink: message headers and family resolution (CTRL_CMD_GETFAMILY).
public enum GenericNetlink {
    /// Starts a generic netlink message for `family` with command `command` (genlmsghdr).
    public static func message(
        family: UInt16, command: UInt8, version: UInt8, flags: UInt16,
        capacity: Int = 4096
    ) -> NetlinkMessageBuilder {
        let b = NetlinkMessageBuilder(type: family, flags: flags, capacity: capacity)
        b.putExtraHeader(genlmsghdr(cmd: command, version: version, reserved: 0))
        return b
    }

    /// The CTRL_CMD_GETFAMILY request asking the kernel for the id of family `name`.
    public static func getFamilyRequest(name: String) -> [UInt8] {
        let b = message(
            family: UInt16(GENL_ID_CTRL), command: UInt8(CTRL_CMD_GETFAMILY), version: 1,
            flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        b.putString(UInt16(CTRL_ATTR_FAMILY_NAME), name)
        return b.bytes
    }

    /// The family id (CTRL_ATTR_FAMILY_ID) in a CTRL_CMD_NEWFAMILY reply; nil when absent.
    public static func parseFamilyID(_ replies: [[UInt8]]) -> UInt16? {
        for reply in replies {
            let id: UInt16? = reply.withUnsafeBytes { raw in
                guard let view = NetlinkMessageView(raw), view.type == UInt16(GENL_ID_CTRL) else { return nil }
                var found: UInt16?
                view.forEachAttribute(afterExtraHeader: MemoryLayout<genlmsghdr>.size) { attr in
                    if attr.type == UInt16(CTRL_ATTR_FAMILY_ID) { found = attr.u16 }
                }
                return found
            }
            if let id { return id }
        }
        return nil
    }

    /// Resolves family `name` to its id over `socket` (a `.generic` socket). A family the kernel
    /// does not have fails with `NetlinkError.kernel` carrying ENOENT.
    public static func resolveFamily(_ name: String, on socket: NetlinkSocket) throws -> UInt16 {
        let replies = try socket.transact(
            getFamilyRequest(name: name),
            operation: "resolving generic netlink family '\(name)'")
        guard let id = parseFamilyID(replies) else {
            throw NetlinkError.malformed("CTRL_CMD_GETFAMILY reply for '\(name)' carries no family id")
        }
        return id
    }
}
