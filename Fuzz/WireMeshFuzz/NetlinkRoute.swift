import CMnl
import IPNetwork
import Netlink

/// rtnetlink replies as one `recv` returns them: links, addresses, routes, the nftables generation
/// (NFT_MSG_NEWGEN), and the ACK / error / done messages the reply collector reads (with extended-ACK text).
enum NetlinkRouteTarget {
    static let target = FuzzTarget(
        name: "netlink-route",
        summary: "rtnetlink replies: RouteMessages.parseLink/parseAddress/parseRoute, NftablesGeneration.parse, NetlinkReplyCollector, parseFamilyID",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        for message in splitNetlinkMessages(data) {
            if let link = RouteMessages.parseLink(message) { _ = link.name.utf8.count }
            if let a = RouteMessages.parseAddress(message) {
                // What we read back is what we would send to set it again.
                let again = RouteMessages.parseAddress(RouteMessages.address(add: true, index: a.interfaceIndex, prefix: a.prefix))
                require(again == a, "address \(a) re-encodes as \(String(describing: again))")
            }
            if let r = RouteMessages.parseRoute(message) {
                _ = r.description
                var expected = r
                expected.destination = r.destination.network  // the encoder clears host bits
                let again = RouteMessages.parseRoute(RouteMessages.route(.replace, r))
                require(again == expected, "route \(r) re-encodes as \(String(describing: again))")
            }
            _ = GenericNetlink.parseFamilyID([message])
            if let generation = NftablesGeneration.parse([message]) {
                require(NftablesGeneration.parse([newGeneration(generation)]) == generation, "nftables generation \(generation) re-encodes differently")
            }
        }
        // The whole buffer as the reply to a request (sequence 0 and port 0: libmnl checks neither).
        let collector = NetlinkReplyCollector(sequence: 0, portID: 0, operation: "fuzz")
        data.withUnsafeBytes { buffer in
            do { _ = try collector.consume(buffer) } catch is NetlinkError {} catch {
                fatalError("collector threw \(type(of: error)), not NetlinkError")
            }
            _ = NetlinkReplyCollector.endsReply(buffer, sequence: 0)
        }
    }

    /// NLMSG_ERROR carrying `code` (0 = ACK), the request header echoed (capped), and `text` as
    /// extended ACK when given: what the kernel sends.
    static func errorMessage(code: Int32, text: String?) -> [UInt8] {
        var flags = UInt16(NLM_F_CAPPED)
        if text != nil { flags |= UInt16(NLM_F_ACK_TLVS) }
        let b = NetlinkMessageBuilder(type: UInt16(NLMSG_ERROR), flags: flags)
        var err = nlmsgerr()
        err.error = code
        err.msg.nlmsg_len = UInt32(MemoryLayout<nlmsghdr>.size)
        err.msg.nlmsg_type = UInt16(RTM_NEWROUTE)
        b.putExtraHeader(err)
        if let text { b.putString(UInt16(NLMSGERR_ATTR_MSG.rawValue), text) }
        return b.bytes
    }

    /// NFT_MSG_NEWGEN with `id` (big endian, as the kernel sends it): the answer to NFT_MSG_GETGEN.
    static func newGeneration(_ id: UInt32) -> [UInt8] {
        let b = NetlinkMessageBuilder(type: UInt16(NFNL_SUBSYS_NFTABLES) << 8 | UInt16(NFT_MSG_NEWGEN.rawValue), flags: 0)
        var header = nfgenmsg()
        header.nfgen_family = UInt8(AF_UNSPEC)
        header.version = UInt8(NFNETLINK_V0)
        b.putExtraHeader(header)
        b.putU32(UInt16(NFTA_GEN_ID.rawValue), id.bigEndian)
        b.putU32(UInt16(NFTA_GEN_PROC_PID.rawValue), UInt32(4242).bigEndian)
        return b.bytes
    }

    static func doneMessage(code: Int32) -> [UInt8] {
        let b = NetlinkMessageBuilder(type: UInt16(NLMSG_DONE), flags: UInt16(NLM_F_MULTI))
        b.putExtraHeader(code)
        return b.bytes
    }

    static func seeds() throws -> [[UInt8]] {
        let link = RouteMessages.newLink(name: "wm0", kind: "wireguard", mtu: 1420)
        let up = RouteMessages.setLink(index: 7, mtu: 1500, up: true)
        let v4addr = RouteMessages.address(add: true, index: 7, prefix: try IPPrefix("10.244.3.0/16"))
        let v6addr = RouteMessages.address(add: true, index: 7, prefix: try IPPrefix("fd00::3/64"))
        let route = RouteMessages.route(.replace, Route(destination: try IPPrefix("10.244.1.0/24"), interfaceIndex: 7))
        let backstop = RouteMessages.route(.replace, Route(destination: try IPPrefix("10.244.0.0/16"), type: .unreachable, metric: 4096))
        let v6route = RouteMessages.route(.add, Route(
            destination: try IPPrefix("fd00:1::/48"), interfaceIndex: 2, gateway: try IPAddress("fe80::1"),
            table: 1000, metric: 10, preferredSource: try IPAddress("fd00::3"), routeProtocol: 4))
        let family: [UInt8] = {
            let b = GenericNetlink.message(family: UInt16(GENL_ID_CTRL), command: UInt8(CTRL_CMD_NEWFAMILY), version: 2, flags: 0)
            b.putString(UInt16(CTRL_ATTR_FAMILY_NAME), "wireguard")
            b.putU16(UInt16(CTRL_ATTR_FAMILY_ID), 0x1c)
            return b.bytes
        }()
        return [
            link + up + doneMessage(code: 0),
            v4addr + v6addr + doneMessage(code: 0),
            route + backstop + v6route + doneMessage(code: 0),
            errorMessage(code: 0, text: nil),
            errorMessage(code: -17, text: "File exists"),
            doneMessage(code: -4),
            family + errorMessage(code: 0, text: nil),
            newGeneration(0x0102_0304) + errorMessage(code: 0, text: nil),
        ]
    }
}
