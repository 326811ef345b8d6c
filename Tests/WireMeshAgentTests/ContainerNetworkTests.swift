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

    @Test func blocksTooSmallOrIPv6AreRefusedNamingTheBlock() throws {
        let cni = CNIConfig(block: try IPPrefix("10.244.3.0/30"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d")
        #expect(throws: CNIConfig.BlockTooSmall.self) { try cni.render() }
        #expect("\(CNIConfig.BlockTooSmall(block: try IPPrefix("10.244.3.0/30")))".contains("10.244.3.0/30"))
        let v6 = CNIConfig(block: try IPPrefix("fd00:1:0:3::/64"), mtu: 1420, bridge: "b", ipamDataDirectory: "/d")
        #expect(throws: CNIConfig.UnsupportedFamily.self) { try v6.render() }
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
