import Testing
import IPNetwork

@Suite struct IPNetworkTests {
    @Test func parsesAndPrintsAddresses() throws {
        #expect(try IPAddress("10.244.1.7").description == "10.244.1.7")
        #expect(try IPAddress("2001:DB8:0:0::1").description == "2001:db8::1")
        #expect(try IPAddress("10.0.0.1").bytes == [10, 0, 0, 1])
        #expect(IPAddress(bytes: [10, 0, 0, 1]) == (try IPAddress("10.0.0.1")))
        let v6 = try IPAddress("fd00::1:2")
        #expect(IPAddress(bytes: v6.bytes) == v6)
        for bad in ["", "10.0.0", "10.0.0.256", "::g", "host"] {
            #expect(throws: IPParseError.self) { try IPAddress(bad) }
        }
    }

    @Test func prefixesContainAndMask() throws {
        let p = try IPPrefix("10.244.1.9/24")
        #expect(p.network.description == "10.244.1.0/24")
        #expect(try IPPrefix("10.244.0.0/16").contains(p))
        #expect(!p.contains(try IPPrefix("10.244.0.0/16")))
        #expect(p.contains(try IPAddress("10.244.1.200")))
        #expect(try IPPrefix("10.0.0.1").length == 32)
        #expect(try IPPrefix("fd00::/8").contains(try IPPrefix("fd12::/64")))
        #expect(try IPPrefix("::/0").contains(try IPAddress("2001:db8::1")))
        #expect(!(try IPPrefix("0.0.0.0/0").contains(try IPAddress("2001:db8::1"))))
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "fd00::/129", "x/8", "10.0.0.0/8/8", "10.0.0.0/+8"] {
            #expect(throws: IPParseError.self) { try IPPrefix(bad) }
        }
    }

    @Test func endpoints() throws {
        #expect(try Endpoint("192.0.2.1:51820").description == "192.0.2.1:51820")
        #expect(try Endpoint("[2001:db8::1]:51820").description == "[2001:db8::1]:51820")
        for bad in ["192.0.2.1", "2001:db8::1:51820", "[2001:db8::1]51820", "1.2.3.4:70000", "host:1", "[::1]:"] {
            #expect(throws: IPParseError.self) { try Endpoint(bad) }
        }
    }

    @Test func addingWalksAddresses() throws {
        #expect(try IPAddress("10.0.0.255").adding(1) == (try IPAddress("10.0.1.0")))
        #expect(try IPAddress("fd00::ffff:ffff:ffff:ffff").adding(1) == (try IPAddress("fd00:0:0:1::")))
    }
}
