import Foundation
import IPNetwork
import Testing
@testable import WireMeshAgent
#if canImport(Glibc)
import Glibc
import WireMeshJoin
#endif

@Suite("CNI config list and egress table")
struct ContainerNetworkTests {
    static let golden = """
        {
          "cniVersion" : "1.0.0",
          "name" : "wiremesh",
          "plugins" : [
            {
              "bridge" : "wm0-br",
              "hairpinMode" : true,
              "ipam" : {
                "dataDir" : "/var/lib/wiremesh/cni-ipam",
                "ranges" : [
                  [
                    {
                      "gateway" : "10.244.3.1",
                      "rangeEnd" : "10.244.3.254",
                      "rangeStart" : "10.244.3.2",
                      "subnet" : "10.244.3.0/24"
                    }
                  ]
                ],
                "routes" : [
                  {
                    "dst" : "0.0.0.0/0"
                  }
                ],
                "type" : "host-local"
              },
              "ipMasq" : false,
              "isGateway" : true,
              "mtu" : 1420,
              "type" : "bridge"
            },
            {
              "capabilities" : {
                "portMappings" : true
              },
              "type" : "portmap"
            }
          ]
        }

        """

    /// libnftables and its dependencies stay mapped only while a context lives (an idle agent must
    /// not carry them: +7 MiB RSS when they were linked in).
    @Test func libnftablesIsMappedOnlyWhileAContextLives() throws {
        func mapped() throws -> Bool {
            // Read to the end: /proc files report size 0, and the library may sit past a first chunk.
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/maps"))
            defer { try? handle.close() }
            return String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self).contains("libnftables.so")
        }
        #expect(try !mapped())
        guard getuid() == 0 else {
            print("skipped the loaded half: creating a libnftables context needs root (CAP_NET_ADMIN)")
            return
        }
        do {
            let nft = try Nftables()
            #expect(try mapped())
            // A read in this (the test's) namespace, of a table no one has: nothing is changed.
            #expect(try nft.listTable(family: "ip", name: "wiremesh-test-absent") == nil)
        }
        #expect(try !mapped())
    }

    @Test func conflistForA24BlockIsTheGoldenText() throws {
        let cni = CNIConfig(block: try IPPrefix("10.244.3.0/24"), mtu: 1420, bridge: CNIConfig.bridgeName(forInterface: "wm0"),
                            ipamDataDirectory: ContainerNetwork.ipamDataDirectory(stateDirectory: "/var/lib/wiremesh"))
        #expect(try cni.render() == Self.golden)
    }

    /// The overlay address (block + 0) and the gateway (block + 1) are outside host-local's range.
    @Test func hostLocalNeverHandsOutTheOverlayAddressOrTheGateway() throws {
        for (text, start, end) in [("10.244.3.0/24", "10.244.3.2", "10.244.3.254"), ("10.8.0.0/20", "10.8.0.2", "10.8.15.254"),
                                   ("10.9.0.8/29", "10.9.0.10", "10.9.0.14")] {
            let block = try IPPrefix(text)
            let cni = CNIConfig(block: block, mtu: 1380, bridge: "b", ipamDataDirectory: "/d")
            #expect(cni.gateway == block.firstAddress.adding(1))
            #expect(cni.rangeStart == (try IPAddress(start)))
            #expect(cni.rangeEnd == (try IPAddress(end)))
            let ipam = try IPAM(clusterRange: try IPPrefix("10.0.0.0/8"), nodePrefixLength: block.length)
            #expect(ipam.overlayAddress(of: block) < cni.rangeStart)
        }
    }

    @Test func blocksTooSmallOrOfTheWrongFamilyAreRefusedNamingTheBlock() throws {
        let cni = CNIConfig(block: try IPPrefix("10.244.3.0/30"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d")
        #expect(throws: CNIConfig.BlockTooSmall.self) { try cni.render() }
        #expect("\(CNIConfig.BlockTooSmall(block: try IPPrefix("10.244.3.0/30")))".contains("10.244.3.0/30"))
        let v6 = CNIConfig(block: try IPPrefix("fd00:1:0:3::/64"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d")
        #expect(throws: CNIConfig.UnsupportedFamily.self) { try v6.render() }
        // Dual-stack: the second block must be IPv6, and hold the overlay, the gateway and containers.
        let swapped = CNIConfig(block: try IPPrefix("10.244.3.0/24"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d",
                                blockV6: try IPPrefix("10.244.4.0/24"))
        #expect(throws: CNIConfig.UnsupportedFamily.self) { try swapped.render() }
        let tiny = CNIConfig(block: try IPPrefix("10.244.3.0/24"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d",
                             blockV6: try IPPrefix("fd00:1::/127"))
        #expect(throws: CNIConfig.BlockTooSmall.self) { try tiny.render() }
        #expect("\(CNIConfig.BlockTooSmall(block: try IPPrefix("fd00:1::/127")))".contains("IPv6 node prefix of /126"))
    }

    /// Dual-stack: one range set per family (a container gets an address of each), the IPv6 gateway on
    /// block + 1, containers from block + 2 (block + 0 is the node's IPv6 overlay address), both default routes.
    @Test func aDualStackConflistHasARangeSetAndADefaultRoutePerFamily() throws {
        let cni = CNIConfig(block: try IPPrefix("10.244.3.0/24"), mtu: 1420, bridge: "wm0-br", ipamDataDirectory: "/d",
                            blockV6: try IPPrefix("fd42:1:0:3::/64"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(try cni.render().utf8)) as? [String: Any])
        let bridge = try #require((object["plugins"] as? [[String: Any]])?.first)
        let ipam = try #require(bridge["ipam"] as? [String: Any])
        let ranges = try #require(ipam["ranges"] as? [[[String: String]]])
        #expect(ranges.count == 2 && ranges.allSatisfy { $0.count == 1 })
        #expect(ranges[0][0]["subnet"] == "10.244.3.0/24")
        #expect(ranges[1][0] == ["subnet": "fd42:1:0:3::/64", "gateway": "fd42:1:0:3::1",
                                 "rangeStart": "fd42:1:0:3::2", "rangeEnd": "fd42:1:0:3:ffff:ffff:ffff:ffff"])
        #expect((ipam["routes"] as? [[String: String]]) == [["dst": "0.0.0.0/0"], ["dst": "::/0"]])
        #expect(bridge["ipMasq"] as? Bool == false)
        // Without an IPv6 block the conflist is the IPv4 one, byte for byte.
        let v4 = CNIConfig(block: try IPPrefix("10.244.3.0/24"), mtu: 1420, bridge: "wm0-br", ipamDataDirectory: "/var/lib/wiremesh/cni-ipam")
        #expect(try v4.render() == Self.golden)
    }

    @Test func bridgeNamesFitIFNAMSIZAndDifferPerInterface() {
        #expect(CNIConfig.bridgeName(forInterface: "wm0") == "wm0-br")
        let a = CNIConfig.bridgeName(forInterface: "averylongname01"), b = CNIConfig.bridgeName(forInterface: "averylongname02")
        #expect(a.utf8.count <= 15 && b.utf8.count <= 15 && a != b)
        #expect(a == CNIConfig.bridgeName(forInterface: "averylongname01"))  // stable
    }

    static func rules() throws -> EgressRules {
        EgressRules(clusterRange: try IPPrefix("10.244.0.0/16"), block: try IPPrefix("10.244.1.0/24"),
                    overlayAddress: try IPAddress("10.244.1.0"), interface: "wm0")
    }

    /// What `nft -j list table ip wiremesh` printed (nftables 1.0.6) after the agent's batch: the
    /// plan must recognise it, or the agent would replace its table at every check.
    static let listing = """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "wiremesh", "handle": 2}},
        {"chain": {"family": "ip", "table": "wiremesh", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "wiremesh", "chain": "postrouting", "handle": 2, "expr": [
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
          {"return": null}]}},
        {"rule": {"family": "ip", "table": "wiremesh", "chain": "postrouting", "handle": 3, "expr": [
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}},
          {"masquerade": null}]}},
        {"rule": {"family": "ip", "table": "wiremesh", "chain": "postrouting", "handle": 4, "expr": [
          {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wm0"}},
          {"snat": {"addr": "10.244.1.0"}}]}}]}
        """

    static func rulesV6() throws -> EgressRules {
        EgressRules(clusterRange: try IPPrefix("fd42:1::/48"), block: try IPPrefix("fd42:1:0:1::/64"),
                    overlayAddress: try IPAddress("fd42:1:0:1::"), interface: "wm0")
    }

    /// What `nft -j list table ip6 wiremesh` printed (nftables 1.0.6) for the IPv6 plan.
    static let listingV6 = """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "ip6", "name": "wiremesh", "handle": 1}},
        {"chain": {"family": "ip6", "table": "wiremesh", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip6", "table": "wiremesh", "chain": "postrouting", "handle": 2, "expr": [
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd42:1::", "len": 48}}}},
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd42:1::", "len": 48}}}},
          {"return": null}]}},
        {"rule": {"family": "ip6", "table": "wiremesh", "chain": "postrouting", "handle": 3, "expr": [
          {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": "fd42:1:0:1::", "len": 64}}}},
          {"masquerade": null}]}},
        {"rule": {"family": "ip6", "table": "wiremesh", "chain": "postrouting", "handle": 4, "expr": [
          {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "wm0"}},
          {"snat": {"addr": "fd42:1:0:1::"}}]}}]}
        """

    /// Dual-stack: a second table, `ip6 wiremesh`, with the same three rules over the IPv6 range,
    /// block and overlay address; the IPv4 table is unchanged.
    @Test func theIPv6TableIsPlannedInItsOwnFamilyAndMatchesTheKernelsListing() throws {
        let v6 = try Self.rulesV6(), v4 = try Self.rules()
        let listing = try Self.parsed(Self.listing), listingV6 = try Self.parsed(Self.listingV6)
        #expect(v6.family == "ip6" && v4.family == "ip")
        #expect(v6.matches(listing: listingV6))
        #expect(!v6.matches(listing: listing) && !v4.matches(listing: listingV6))
        let batch = try Self.parsed(try v6.replaceBatch())
        let tables = batch.compactMap { ($0.values.first as? [String: Any])?["table"] as? [String: Any] }
        #expect(tables.count == 3 && tables.allSatisfy { $0["family"] as? String == "ip6" })
        let remove = try Self.parsed(try EgressRules.removeBatch(family: "ip6"))
        #expect(remove.compactMap { ($0.values.first as? [String: Any])?["table"] as? [String: Any] }.allSatisfy { $0["family"] as? String == "ip6" })
        // Mixed families are a planning error, not a table nftables would half accept.
        var mixed = v6
        mixed.overlayAddress = try IPAddress("10.244.1.0")
        #expect(throws: NftablesError.self) { try mixed.replaceBatch() }
    }

    @Test func aDualStackNodePlansBothTablesAndTheConflistWithBothBlocks() throws {
        var config = AgentConfig()
        config.stateDirectory = "/var/lib/wiremesh"
        let settings = ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24, podRangeV6: try IPPrefix("fd42:1::/48"))
        let node = NodeAssignment(name: "n", podCIDR: try IPPrefix("10.244.1.0/24"), overlayAddress: try IPAddress("10.244.1.0"),
                                  podCIDRV6: try IPPrefix("fd42:1:0:1::/64"))
        let network = ContainerNetwork(config: config, settings: settings, node: node, mtu: 1420)
        let v4Rules = try Self.rules(), v6Rules = try Self.rulesV6(), blockV6 = try IPPrefix("fd42:1:0:1::/64")
        #expect(network.egress == [v4Rules, v6Rules])
        #expect(network.cni.blockV6 == blockV6)
        var v4 = settings
        v4.podRangeV6 = nil
        var v4Node = node
        v4Node.podCIDRV6 = nil
        let single = ContainerNetwork(config: config, settings: v4, node: v4Node, mtu: 1420)
        #expect(single.egress == [v4Rules] && single.cni.blockV6 == nil)
    }

    static func parsed(_ text: String) throws -> [[String: Any]] {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        return try #require(object["nftables"] as? [[String: Any]])
    }

    @Test func theKernelsListingOfThePlanMatchesIt() throws {
        #expect(try Self.rules().matches(listing: try Self.parsed(Self.listing)))
    }

    @Test func aChangedBlockAFlushedChainOrAForeignRuleDoNotMatch() throws {
        var moved = try Self.rules()
        moved.block = try IPPrefix("10.244.2.0/24")
        #expect(!moved.matches(listing: try Self.parsed(Self.listing)))
        let items = try Self.parsed(Self.listing)
        #expect(!(try Self.rules().matches(listing: items.filter { $0["rule"] == nil })))  // flushed
        #expect(!(try Self.rules().matches(listing: items + [items[3]])))                   // a rule too many
        #expect(!(try Self.rules().matches(listing: [])))                                  // no table
    }

    /// The batch replaces the whole table in one transaction and carries each rule of the plan.
    @Test func replaceBatchIsAddDeleteAddThenTheChainAndTheRules() throws {
        let batch = try Self.parsed(try Self.rules().replaceBatch())
        #expect(batch.map { $0.keys.first ?? "" } == ["add", "delete", "add", "add", "add", "add", "add"])
        let rules = batch.compactMap { ($0["add"] as? [String: Any])?["rule"] as? [String: Any] }
        let listed = try Self.parsed(Self.listing).compactMap { $0["rule"] as? [String: Any] }
        #expect(rules.count == 3)
        for (r, l) in zip(rules, listed) { #expect(NSArray(array: r["expr"] as! [Any]).isEqual(to: l["expr"] as! [Any])) }
        let remove = try Self.parsed(try EgressRules.removeBatch())
        #expect(remove.map { $0.keys.first ?? "" } == ["add", "delete"])
    }

    @Test func interfaceNamesNeedNoQuotingInTheJSONBatch() throws {
        var r = try Self.rules()
        r.interface = #"we"ird"#
        let batch = try r.replaceBatch()
        #expect(batch.contains(#""we\"ird""#))
    }

    @Test func cniConfigDirComesFromFlagEnvironmentOrFileAndDefaultsToEtcCNI() throws {
        #expect(AgentConfig().cniConfigDirectory == "/etc/cni/net.d")
        let file = try ConfigLayer(yaml: "cni-config-dir: /srv/cni\n", file: "c.yaml")
        let env = try ConfigLayer(environment: ["WIREMESH_CNI_CONFIG_DIR": "/env/cni"])
        let flags = try ConfigLayer(flags: [.cniConfigDir: "/flag/cni"])
        #expect(AgentConfig.merge(file: file).cniConfigDirectory == "/srv/cni")
        #expect(AgentConfig.merge(file: file, environment: env).cniConfigDirectory == "/env/cni")
        #expect(AgentConfig.merge(file: file, environment: env, flags: flags).cniConfigDirectory == "/flag/cni")
        #expect(file.savedValues["cni-config-dir"] == "/srv/cni")  // kept with the node, like the other settings
        #expect(throws: ConfigError.self) { try ConfigLayer(flags: [.cniConfigDir: ""]) }
    }

    @Test func conflistIsWrittenOnceAtomicallyAndAnUnwritableDirectoryIsNamed() throws {
        try withTemporaryDirectory { (dir: String) throws in
            var config = AgentConfig()
            config.stateDirectory = dir + "/state"
            config.cniConfigDirectory = dir + "/etc/cni/net.d"
            let network = ContainerNetwork(config: config, clusterRange: try IPPrefix("10.244.0.0/16"), block: try IPPrefix("10.244.3.0/24"),
                                           overlayAddress: try IPAddress("10.244.3.0"), mtu: 1420)
            #expect(try network.writeConfigList())
            #expect(try !network.writeConfigList())  // unchanged: not rewritten
            #expect(AtomicFile.mode(of: network.configListPath) == 0o644)
            #expect(try FileManager.default.contentsOfDirectory(atPath: config.cniConfigDirectory) == [CNIConfig.fileName])

            try AtomicFile.write("x", to: dir + "/file", mode: 0o644)
            config.cniConfigDirectory = dir + "/file/cni"
            #expect(throws: AgentError.self) { try ContainerNetwork.checkWritable(directory: config.cniConfigDirectory) }
            let blocked = ContainerNetwork(config: config, clusterRange: try IPPrefix("10.244.0.0/16"), block: try IPPrefix("10.244.3.0/24"),
                                           overlayAddress: try IPAddress("10.244.3.0"), mtu: 1420)
            do {
                try blocked.writeConfigList()
                Issue.record("writing under a regular file succeeded")
            } catch {
                #expect("\(error)".contains(dir + "/file/cni/10-wiremesh.conflist"))
                #expect("\(error)".contains("--cni-config-dir"))
            }
        }
    }
}
