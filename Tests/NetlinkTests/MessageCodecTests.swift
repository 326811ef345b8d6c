import CMnl
import IPNetwork
import Netlink
import Testing

@Suite struct MessageCodecTests {
    @Test func builderWritesHeaderAttributesPaddingAndNestedFlag() {
        let b = NetlinkMessageBuilder(type: 0x1234, flags: 0x0005)
        b.putExtraHeader(genlmsghdr(cmd: 7, version: 1, reserved: 0))
        b.putString(2, "abc")  // 3 chars + NUL = 4: no padding
        b.putU16(3, 0xBEEF)  // 2 bytes payload + 2 padding
        let nest = b.beginNest(9)!
        b.putU8(1, 0x7F)  // 1 byte + 3 padding
        b.endNest(nest)
        let expected = bytes(
            """
            30000000 3412 0500 00000000 00000000
            07010000
            08000200 61626300
            06000300 efbe0000
            0c000980 05000100 7f000000
            """)
        #expect(hex(b.bytes) == hex(expected))
        #expect(b.length == 0x30)
    }

    @Test func putFailsWithoutChangingTheMessageWhenFull() {
        let b = NetlinkMessageBuilder(type: 20, flags: 1, capacity: 64)
        #expect(b.put(1, bytes: [UInt8](repeating: 1, count: 40)))  // 16 + 44 = 60
        let before = b.bytes
        #expect(!b.putU32(2, 1))  // 60 + 8 > 64
        #expect(b.beginNest(3) != nil)  // 60 + 4 = 64 fits exactly
        #expect(b.bytes.count == 64)
        let small = NetlinkMessageBuilder(type: 20, flags: 1, capacity: 64)
        #expect(small.put(1, bytes: [UInt8](repeating: 1, count: 40)))
        #expect(!small.put(1, bytes: [1, 2, 3, 4, 5]))
        #expect(small.bytes == before)
    }

    @Test func cancelledNestLeavesNoTrace() {
        let b = NetlinkMessageBuilder(type: 20, flags: 1)
        b.putU32(1, 42)
        let before = b.bytes
        let n = b.beginNest(5)!
        #expect(b.isEmpty(n))
        b.putU32(1, 1)
        #expect(!b.isEmpty(n))
        b.cancelNest(n)
        #expect(b.bytes == before)
    }

    @Test func parserVisitsAttributesAndStopsAtTruncation() {
        // u32 42 (type 1), nested (type 4|NESTED) holding a string "hi", then a truncated header.
        let region = bytes("08000100 2a000000 0c000480 07000200 68690000 ff00")
        var seen: [(UInt16, Bool)] = []
        var inner = ""
        region.withUnsafeBytes { raw in
            NetlinkAttribute.forEach(in: raw) { a in
                seen.append((a.type, a.isNested))
                if a.type == 1 {
                    #expect(a.u32 == 42)
                    #expect(a.u16 == nil)
                }
                if a.type == 4 { a.forEachNested { inner = $0.string } }
            }
        }
        #expect(seen.map(\.0) == [1, 4])
        #expect(seen.map(\.1) == [false, true])
        #expect(inner == "hi")
    }

    @Test func splitsMessagesOfOneReceive() {
        let a = NetlinkMessageBuilder(type: 16, flags: 2)
        a.putU32(1, 1)
        let b = NetlinkMessageBuilder(type: 17, flags: 2)
        b.putString(3, "lo")
        let parts = splitNetlinkMessages(a.bytes + b.bytes + [0, 0])  // trailing junk is ignored
        #expect(parts == [a.bytes, b.bytes])
    }

    @Test func errorMessageWithExtendedAckText() throws {
        // NLMSG_ERROR, flags CAPPED|ACK_TLVS, error -95, echoed header only, then NLMSGERR_ATTR_MSG.
        let msg = bytes(
            """
            3c000000 0200 0003 01000000 00000000
            a1ffffff
            3c000000 1000 0506 01000000 00000000
            18000100 556e6b6e6f776e206465766963652074 79706500
            """)
        let parsed = try msg.withUnsafeBytes { raw in try #require(NetlinkMessageView(raw).flatMap(parseNetlinkError)) }
        #expect(parsed.errno == 95)
        #expect(parsed.message == "Unknown device type")
        // A plain ACK: error 0, no TLVs.
        let ack = bytes("24000000 0200 0001 01000000 00000000 00000000 24000000 1000 0506 01000000 00000000")
        let parsedAck = try ack.withUnsafeBytes { raw in
            try #require(NetlinkMessageView(raw).flatMap(parseNetlinkError))
        }
        #expect(parsedAck.errno == 0)
        #expect(parsedAck.message == nil)
    }

    @Test func errorsSayWhatToDo() {
        let eperm = NetlinkError.kernel(operation: "adding route 10.0.0.0/8", errno: 1, message: nil)
        #expect(eperm.description.contains("CAP_NET_ADMIN"))
        let withText = NetlinkError.kernel(
            operation: "creating wireguard interface 'wg0'", errno: 95,
            message: "Unknown device type")
        #expect(withText.description.contains("wg0"))
        #expect(withText.description.contains("Unknown device type"))
        #expect(withText.description.contains("errno 95"))
        #expect(NetlinkError.noSuchInterface("wm9").description.contains("'wm9'"))
    }

    @Test func genericNetlinkFamilyRequestAndReply() throws {
        let req = GenericNetlink.getFamilyRequest(name: "wireguard")
        let expected = bytes(
            """
            24000000 1000 0500 00000000 00000000
            03010000
            0e000200 77697265677561726400 0000
            """)
        #expect(hex(req) == hex(expected))
        // A CTRL_CMD_NEWFAMILY reply: family name then CTRL_ATTR_FAMILY_ID = 0x1f.
        let reply = bytes(
            """
            2c000000 1000 0000 01000000 00000000
            01020000
            0e000200 77697265677561726400 0000
            06000100 1f000000
            """)
        #expect(GenericNetlink.parseFamilyID([reply]) == 0x1f)
        #expect(GenericNetlink.parseFamilyID([]) == nil)
    }

    @Test("the nftables generation request, and the generation read from a reply (big endian)")
    func nftablesGeneration() {
        // NFT_MSG_GETGEN (subsystem 10, message 16), NLM_F_REQUEST|NLM_F_ACK, nfgenmsg AF_UNSPEC v0.
        #expect(hex(NftablesGeneration.request()) == hex(bytes("14000000 100a 0500 00000000 00000000 00000000")))
        // NFT_MSG_NEWGEN: NFTA_GEN_ID = 0x01020304, then NFTA_GEN_PROC_PID.
        let reply = bytes("24000000 0f0a 0000 01000000 00000000 00000000 08000100 01020304 08000200 2a000000")
        #expect(NftablesGeneration.parse([reply]) == 0x0102_0304)
        // Another message type, a generation attribute of the wrong size, nothing: no generation.
        let other = bytes("1c000000 010a 0000 01000000 00000000 00000000 08000100 01020304")
        let short = bytes("1c000000 0f0a 0000 01000000 00000000 00000000 06000100 0102 0000")
        #expect(NftablesGeneration.parse([other]) == nil)
        #expect(NftablesGeneration.parse([short]) == nil)
        #expect(NftablesGeneration.parse([]) == nil)
    }
}

@Suite struct RouteMessageTests {
    @Test func newWireGuardLinkGolden() {
        let m = RouteMessages.newLink(name: "wg0", kind: "wireguard")
        let expected = bytes(
            """
            3c000000 1000 0506 00000000 00000000
            00000000 00000000 00000000 00000000
            08000300 77673000
            14001280 0e000100 77697265677561726400 0000
            """)
        #expect(hex(m) == hex(expected))
    }

    @Test func newLinkWithMTUAndDeleteAndSet() {
        let m = RouteMessages.newLink(name: "wm0", kind: "wireguard", mtu: 1420)
        // IFLA_MTU (4) = 1420 sits between IFLA_IFNAME and IFLA_LINKINFO.
        #expect(hex(Array(m[40..<48])) == "080004008c050000")
        let del = RouteMessages.deleteLink(index: 7)
        #expect(hex(del) == hex(bytes("20000000 1100 0500 00000000 00000000  00000000 07000000 00000000 00000000")))
        let up = RouteMessages.setLink(index: 7, mtu: 1380, up: true)
        #expect(
            hex(up)
                == hex(
                    bytes(
                        """
                        28000000 1000 0500 00000000 00000000
                        00000000 07000000 01000000 01000000
                        08000400 64050000
                        """)))
        let down = RouteMessages.setLink(index: 7, up: false)
        #expect(hex(Array(down[16...])) == hex(bytes("00000000 07000000 00000000 01000000")))
        let untouched = RouteMessages.setLink(index: 7, mtu: 1380)
        #expect(hex(Array(untouched[16..<32])) == hex(bytes("00000000 07000000 00000000 00000000")))
    }

    @Test func addressMessagesGolden() throws {
        let v4 = RouteMessages.address(add: true, index: 3, prefix: try IPPrefix("10.9.0.1/24"))
        #expect(
            hex(v4)
                == hex(
                    bytes(
                        """
                        28000000 1400 0505 00000000 00000000
                        02180000 03000000
                        08000200 0a090001
                        08000100 0a090001
                        """)))
        let v6 = RouteMessages.address(add: false, index: 3, prefix: try IPPrefix("fd00::1/64"))
        #expect(
            hex(v6)
                == hex(
                    bytes(
                        """
                        40000000 1500 0500 00000000 00000000
                        0a400000 03000000
                        14000200 fd000000000000000000000000000001
                        14000100 fd000000000000000000000000000001
                        """)))
    }

    @Test func routeMessagesCarryTheProtocolTag() throws {
        let r = Route(destination: try IPPrefix("10.244.1.0/24"), interfaceIndex: 5)
        let add = RouteMessages.route(.add, r)
        #expect(
            hex(add)
                == hex(
                    bytes(
                        """
                        34000000 1800 0506 00000000 00000000
                        02180000 fe57fd01 00000000
                        08000f00 fe000000
                        08000100 0af40100
                        08000400 05000000
                        """)))
        let replace = RouteMessages.route(.replace, r)
        #expect(hex(Array(replace[6..<8])) == "0505")  // REQUEST|ACK|CREATE|REPLACE
        let del = RouteMessages.route(.delete, r)
        #expect(hex(Array(del[4..<8])) == "19000500")  // RTM_DELROUTE, REQUEST|ACK
        #expect(del[16 + 5] == WireMeshRouteProtocol)
        #expect(del[16 + 6] == 255)  // RT_SCOPE_NOWHERE matches any scope
        // Host bits are cleared; v6 has universe scope; unreachable has no output interface.
        let v6 = RouteMessages.route(
            .add, Route(destination: try IPPrefix("fd10::5/48"), type: .unreachable, metric: 10))
        #expect(hex(Array(v6[16..<28])) == hex(bytes("0a300000 fe570007 00000000")))
        #expect(hex(Array(v6[36...])) == hex(bytes("14000100 fd100000000000000000000000000000 08000600 0a000000")))
    }

    @Test func parsesLinkAddressAndRouteReplies() throws {
        // RTM_NEWLINK for "wm0", index 9, up, mtu 1420, kind wireguard.
        let link = bytes(
            """
            4c000000 1000 0200 01000000 00000000
            00000000 09000000 41000100 00000000
            08000300 776d3000
            08000400 8c050000
            14001280 0e000100 77697265677561726400 0000
            08000d00 e8030000
            """)
        let info = try #require(RouteMessages.parseLink(link))
        #expect(info == LinkInfo(index: 9, name: "wm0", mtu: 1420, isUp: true, kind: "wireguard"))
        // RTM_NEWADDR fd00::1/64 on index 9 (only IFA_ADDRESS, as the kernel sends for v6).
        let addr = bytes(
            """
            2c000000 1400 0200 01000000 00000000
            0a408000 09000000
            14000100 fd000000000000000000000000000001
            """)
        #expect(
            RouteMessages.parseAddress(addr) == InterfaceAddress(interfaceIndex: 9, prefix: try IPPrefix("fd00::1/64")))
        // RTM_NEWROUTE 10.244.0.0/16 dev 9, table main, proto 87, metric 100.
        let route = bytes(
            """
            3c000000 1800 0200 01000000 00000000
            02100000 fe57fd01 00000000
            08000f00 fe000000
            08000100 0af40000
            08000400 09000000
            08000600 64000000
            """)
        let r = try #require(RouteMessages.parseRoute(route))
        #expect(r == Route(destination: try IPPrefix("10.244.0.0/16"), interfaceIndex: 9, metric: 100))
        #expect(RouteMessages.parseRoute(link) == nil)
        // What we encode, we read back.
        let mine = Route(
            destination: try IPPrefix("fd10::/48"), interfaceIndex: 4, gateway: try IPAddress("fd00::9"),
            table: 1000, metric: 5)
        var echoed = RouteMessages.route(.add, mine)
        echoed[4] = UInt8(RTM_NEWROUTE)
        #expect(RouteMessages.parseRoute(echoed) == mine)
    }
}
