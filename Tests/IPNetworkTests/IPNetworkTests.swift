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

@Suite struct RoutableUnicastTests {
    @Test func onlyAddressesOtherHostsCanReachAreRoutable() throws {
        for a in ["10.99.0.1", "192.0.2.7", "8.8.8.8", "fd99::1", "2001:db8::1", "fe00::1"] {
            #expect(try IPAddress(a).isRoutableUnicast, "\(a)")
        }
        for a in ["127.0.0.1", "127.1.2.3", "0.0.0.0", "169.254.1.1", "224.0.0.1", "255.255.255.255",
                  "::", "::1", "fe80::1", "febf::1", "ff02::1"] {
            #expect(try !IPAddress(a).isRoutableUnicast, "\(a)")
        }
    }
}

@Suite struct DisjointPrefixesTests {
    @Test func firstAndLastAddresses() throws {
        #expect(try IPPrefix("10.244.1.7/24").firstAddress == IPAddress("10.244.1.0"))
        #expect(try IPPrefix("10.244.1.7/24").lastAddress == IPAddress("10.244.1.255"))
        #expect(try IPPrefix("10.0.0.1/32").lastAddress == IPAddress("10.0.0.1"))
        #expect(try IPPrefix("0.0.0.0/0").lastAddress == IPAddress("255.255.255.255"))
        #expect(try IPPrefix("fd00::/64").lastAddress == IPAddress("fd00::ffff:ffff:ffff:ffff"))
        #expect(try IPPrefix("fd00::/56").lastAddress == IPAddress("fd00:0:0:ff:ffff:ffff:ffff:ffff"))
        #expect(try IPPrefix("fd00::1/128").lastAddress == IPAddress("fd00::1"))
        #expect(try IPPrefix("fd00::/72").lastAddress == IPAddress("fd00::ff:ffff:ffff:ffff"))
    }

    @Test func insertRefusesOverlapsAndNamesTheOwner() throws {
        var set = DisjointPrefixes<String>()
        #expect(set.insert(try IPPrefix("10.244.1.0/24"), "a") == nil)
        #expect(set.insert(try IPPrefix("10.244.3.0/24"), "b") == nil)
        #expect(["a", "b"].contains(set.insert(try IPPrefix("10.0.0.0/8"), "c")?.value ?? "none"))  // contains both
        #expect(set.insert(try IPPrefix("10.244.0.0/23"), "c2")?.value == "a")   // contains a only
        #expect(set.insert(try IPPrefix("10.244.1.9/32"), "d")?.value == "a")    // inside a
        #expect(set.insert(try IPPrefix("10.244.2.0/24"), "e") == nil)           // between a and b
        #expect(set.insert(try IPPrefix("10.244.0.0/22"), "f")?.value != nil)
        #expect(set.insert(try IPPrefix("fd00::/64"), "g") == nil)               // families never overlap
        #expect(set.insert(try IPPrefix("fd00::1/128"), "h")?.value == "g")
        #expect(set.count == 4)
        #expect(set.entries.map(\.value) == ["a", "e", "b", "g"])
        #expect(set.overlapping(try IPPrefix("10.244.4.0/24")) == nil)
    }

    /// Against the pairwise definition, on random prefixes from a small space (many overlaps).
    @Test func agreesWithPairwiseOverlaps() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var set = DisjointPrefixes<Int>()
            var kept: [IPPrefix] = []
            for i in 0..<200 {
                let length = Int.random(in: 20...32, using: &rng)
                let p = try IPPrefix(address: .v4(0x0A00_0000 | UInt32.random(in: 0..<(1 << 14), using: &rng)), length: length).network
                let expected = kept.first { $0.overlaps(p) }
                let clash = set.insert(p, i)
                #expect((clash == nil) == (expected == nil), "\(p)")
                if clash == nil { kept.append(p) } else { #expect(clash!.prefix.overlaps(p)) }
            }
        }
    }
}
