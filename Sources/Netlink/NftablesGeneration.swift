import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// The nftables ruleset generation of a network namespace (NFT_MSG_GETGEN): the kernel moves it on
/// every committed change to any table. One netlink round trip through libmnl, so a periodic check
/// can tell "nothing changed since I looked" without loading libnftables or listing a table.
public enum NftablesGeneration {
    /// NFT_MSG_GETGEN request (nfgenmsg for AF_UNSPEC), answered by one NFT_MSG_NEWGEN, then the ACK.
    public static func request() -> [UInt8] {
        let b = NetlinkMessageBuilder(type: messageType(UInt16(NFT_MSG_GETGEN.rawValue)), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        var header = nfgenmsg()
        header.nfgen_family = UInt8(AF_UNSPEC)
        header.version = UInt8(NFNETLINK_V0)
        b.putExtraHeader(header)
        return b.bytes
    }

    /// NFTA_GEN_ID (big endian on the wire) of the first NFT_MSG_NEWGEN in `replies`; nil when absent.
    public static func parse(_ replies: [[UInt8]]) -> UInt32? {
        let newGen = messageType(UInt16(NFT_MSG_NEWGEN.rawValue))
        for reply in replies {
            let id: UInt32? = reply.withUnsafeBytes { raw in
                guard let view = NetlinkMessageView(raw), view.type == newGen else { return nil }
                var found: UInt32?
                view.forEachAttribute(afterExtraHeader: MemoryLayout<nfgenmsg>.size) { attr in
                    if attr.type == UInt16(NFTA_GEN_ID.rawValue), let v = attr.u32 { found = UInt32(bigEndian: v) }
                }
                return found
            }
            if let id { return id }
        }
        return nil
    }

    /// The current generation, read over a fresh socket in the calling thread's network namespace.
    public static func current() throws -> UInt32 {
        let socket = try NetlinkSocket(.netfilter)
        guard let id = parse(try socket.transact(request(), operation: "reading the nftables generation")) else {
            throw NetlinkError.malformed("NFT_MSG_GETGEN reply carries no generation")
        }
        return id
    }

    static func messageType(_ message: UInt16) -> UInt16 { UInt16(NFNL_SUBSYS_NFTABLES) << 8 | message }
}
