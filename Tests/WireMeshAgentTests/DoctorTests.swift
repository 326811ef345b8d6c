import Foundation
import IPNetwork
import Netlink
import Testing
@testable import WireMeshAgent

#if canImport(Glibc)
import Glibc
#endif

/// A healthy node running its agent: every check passes (made-up facts, no I/O).
private func healthyFacts() throws -> DoctorFacts {
    var f = DoctorFacts(interface: "wm0", controlSocket: "/run/wiremesh/wiremesh.sock", stateDirectory: "/var/lib/wiremesh",
                        nowMs: 1_800_000_000_000)
    f.kernelWireGuard = true
    f.netAdmin = true
    f.status = StatusInfo(nodeName: "a", clusterID: "c1", podCIDRs: ["10.244.0.0/24"], overlayAddress: "10.244.0.1",
                          interface: "wm0", wireGuardPublicKey: "pub", wireGuardPort: 51820, gossipPort: 7946, backend: "kernel",
                          livePeers: 1, keyCreatedAt: Date(timeIntervalSince1970: 1_700_000_000), nextKeyRotation: nil,
                          healthy: true, problems: [], advertiseAddress: "192.0.2.10", mtu: 1420)
    f.peers = [PeerInfo(name: "b", state: "alive", podCIDRs: ["10.244.1.0/24"], publicKey: "pb", endpoint: "192.0.2.11:51820",
                        secondsSinceHandshake: 20, onDevice: true, receiveBytes: 10, transmitBytes: 20,
                        recordVersion: 1_799_999_000_000)]
    f.ports = [DoctorFacts.Port(what: "gossip port", address: "192.0.2.10", port: 7946, flag: "--gossip-port", bindErrno: EADDRINUSE),
               DoctorFacts.Port(what: "WireGuard port", address: "0.0.0.0", port: 51820, flag: "--wireguard-port", bindErrno: EADDRINUSE)]
    f.interfaceMTU = 1420
    f.interfaceIndex = 7
    f.advertiseAddress = try IPAddress("192.0.2.10")
    f.underlayMTU = 1500
    f.podRange = try IPPrefix("10.244.0.0/16")
    f.routes = [Route(destination: try IPPrefix("10.244.0.0/16"), interfaceIndex: 7),
                Route(destination: try IPPrefix("10.244.0.0/16"), type: .unreachable, metric: 4_200_000_000)]
    return f
}

private func finding(_ check: String, _ f: DoctorFacts) -> Finding? { Doctor.findings(f).first { $0.check == check } }

@Suite("doctor: decisions from facts")
struct DoctorTests {
    @Test func aHealthyNodePassesAndExitsZero() throws {
        let findings = Doctor.findings(try healthyFacts())
        #expect(findings.allSatisfy { $0.status == .ok || $0.status == .info }, "\(findings)")
        #expect(DoctorReport(findings: findings).ok)
        #expect(findings.filter { $0.status == .ok }.allSatisfy { $0.fix == nil })
        #expect(Doctor.text(findings).hasSuffix("all checks passed\n"))
    }

    @Test func noWireGuardAtAllFailsAndNamesBothWays() throws {
        var f = try healthyFacts()
        f.kernelWireGuard = false
        #expect(finding("wireguard", f)?.status == .fail)
        #expect(finding("wireguard", f)?.fix?.contains("wireguard-go") == true)
        f.wireGuardGo = "/usr/bin/wireguard-go"
        #expect(finding("wireguard", f)?.status == .ok)
    }

    @Test func missingNetAdminFails() throws {
        var f = try healthyFacts()
        f.netAdmin = false
        #expect(finding("privileges", f)?.status == .fail)
        f.netAdmin = nil
        #expect(finding("privileges", f)?.status == .info)
    }

    @Test func aPortHeldBySomeoneElseFailsButOursIsFine() throws {
        var f = try healthyFacts()
        f.status = nil
        f.peers = nil
        let ports = Doctor.findings(f).filter { $0.check == "ports" }
        #expect(ports.count == 2 && ports.allSatisfy { $0.status == .fail }, "\(ports)")
        #expect(ports[0].fix?.contains("--gossip-port") == true)
        // The interface the stopped agent left holds its WireGuard port: that one is ours.
        f.interfaceListenPort = 51820
        let again = Doctor.findings(f).filter { $0.check == "ports" }
        #expect(again.map(\.status) == [.fail, .ok])
        // Free ports with no agent: fine.
        f.ports = f.ports.map { var p = $0; p.bindErrno = nil; return p }
        #expect(Doctor.findings(f).filter { $0.check == "ports" }.allSatisfy { $0.status == .ok })
        // A bind refused for another reason names it.
        f.ports[0].bindErrno = EADDRNOTAVAIL
        #expect(Doctor.findings(f).first { $0.check == "ports" }?.fix?.contains("--advertise-address") == true)
    }

    @Test func mtuTooLargeForTheUnderlayFailsWithTheOverheadOfItsFamily() throws {
        var f = try healthyFacts()
        f.interfaceMTU = 1441  // 1441 + 60 > 1500 over IPv4
        #expect(finding("mtu", f)?.status == .fail)
        #expect(finding("mtu", f)?.fix?.contains("--mtu 1420") == true)
        f.interfaceMTU = 1440
        #expect(finding("mtu", f)?.status == .ok)
        f.advertiseAddress = try IPAddress("2001:db8::1")  // IPv6: 80 B
        #expect(finding("mtu", f)?.status == .fail)
        f.interfaceMTU = nil
        #expect(finding("mtu", f)?.status == .warn)
    }

    @Test func agentNotAnsweringFailsAndSkipsWhatOnlyItKnows() throws {
        var f = try healthyFacts()
        f.status = nil
        f.peers = nil
        f.agentError = "no agent is running"
        #expect(finding("agent", f)?.status == .fail)
        #expect(finding("agent", f)?.fix?.contains("systemctl start wiremesh") == true)
        for check in ["device", "handshakes", "clock"] { #expect(finding(check, f)?.status == .info, "\(check)") }
        f.podRange = nil
        #expect(finding("agent", f)?.fix?.contains("wiremesh init") == true)
        #expect(DoctorReport(findings: Doctor.findings(f)).ok == false)
    }

    @Test func deviceOutOfSyncFailsWithTheAgentsReason() throws {
        var f = try healthyFacts()
        f.status?.healthy = false
        f.status?.problems = ["WireGuard port 51820 is taken: choose another --wireguard-port"]
        #expect(finding("device", f)?.status == .fail)
        #expect(finding("device", f)?.detail.contains("51820 is taken") == true)
        f = try healthyFacts()
        f.peers?[0].onDevice = false
        #expect(finding("device", f)?.status == .fail)
        #expect(finding("device", f)?.detail.contains("b") == true)
    }

    @Test func aPortHolderFoundIsNamedInTheFindingAndItsFix() throws {
        var f = try healthyFacts()
        f.status = nil
        f.peers = nil
        f.ports[0].holders = ["nc (pid 4242)"]
        let gossip = Doctor.findings(f).first { $0.check == "ports" }
        #expect(gossip?.status == .fail)
        #expect(gossip?.detail.contains("gossip port 7946") == true && gossip?.detail.contains("nc (pid 4242)") == true, "\(String(describing: gossip))")
        #expect(gossip?.fix?.contains("stop nc (pid 4242)") == true && gossip?.fix?.contains("--gossip-port") == true)
    }

    @Test func aPodBlockTheDeviceDoesNotRouteToItsMemberFails() throws {
        var f = try healthyFacts()
        // As the agent programs it: b's block on b's key.
        f.devicePeers = [DoctorFacts.DevicePeer(publicKey: "pb", allowedIPs: [try IPPrefix("10.244.1.0/24")])]
        #expect(finding("device", f)?.status == .ok)
        #expect(finding("device", f)?.detail.contains("1 peers read") == true)
        // Allowed IPs changed behind the agent's back: the block is in no peer's allowed IPs.
        f.devicePeers![0].allowedIPs = [try IPPrefix("10.250.0.0/24")]
        #expect(finding("device", f)?.status == .fail)
        #expect(finding("device", f)?.detail.contains("10.244.1.0/24 of b (in no peer's allowed IPs)") == true, "\(String(describing: finding("device", f)))")
        #expect(finding("device", f)?.fix?.contains("resync") == true)
        // ... or in another member's.
        f.peers?.append(PeerInfo(name: "c", state: "alive", podCIDRs: ["10.244.2.0/24"], publicKey: "pc", endpoint: nil,
                                 secondsSinceHandshake: 5, onDevice: true))
        f.devicePeers = [DoctorFacts.DevicePeer(publicKey: "pc", allowedIPs: [try IPPrefix("10.244.1.0/24"), try IPPrefix("10.244.2.0/24")]),
                         DoctorFacts.DevicePeer(publicKey: "pb", allowedIPs: [])]
        #expect(finding("device", f)?.detail.contains("10.244.1.0/24 of b (in c's allowed IPs)") == true, "\(String(describing: finding("device", f)))")
        // During a key rotation b's old key (no member's) keeps the block: not a problem.
        f.devicePeers = [DoctorFacts.DevicePeer(publicKey: "pc", allowedIPs: [try IPPrefix("10.244.2.0/24")]),
                         DoctorFacts.DevicePeer(publicKey: "pb-old", allowedIPs: [try IPPrefix("10.244.1.0/24")]),
                         DoctorFacts.DevicePeer(publicKey: "pb", allowedIPs: [])]
        #expect(finding("device", f)?.status == .ok, "\(String(describing: finding("device", f)))")
        // A missing peer and a misrouted block are both named, in one finding.
        f.peers?[1].onDevice = false
        f.devicePeers = [DoctorFacts.DevicePeer(publicKey: "pb", allowedIPs: [])]
        let both = finding("device", f)
        #expect(both?.status == .fail && both?.detail.contains("no peer on the device: c") == true
                    && both?.detail.contains("10.244.1.0/24 of b") == true, "\(String(describing: both))")
    }

    @Test func eachMissingFailClosedRouteFails() throws {
        var f = try healthyFacts()
        f.routes = [f.routes![1]]
        #expect(finding("routes", f)?.status == .fail)
        #expect(finding("routes", f)?.detail.contains("into wm0") == true)
        f = try healthyFacts()
        f.routes = [f.routes![0]]
        #expect(finding("routes", f)?.detail.contains("unreachable") == true)
        #expect(finding("routes", f)?.detail.contains("in clear") == true)
        // A route into another interface is not ours.
        f = try healthyFacts()
        f.interfaceIndex = 8
        #expect(finding("routes", f)?.status == .fail)
    }

    /// Dual-stack: the IPv6 range needs its two routes as well; the IPv4 ones alone are a failure.
    @Test func aDualStackNodeNeedsTheFailClosedRoutesOfBothRanges() throws {
        var f = try healthyFacts()
        let v6 = try IPPrefix("fd42:1::/48")
        f.podRangeV6 = v6
        #expect(finding("routes", f)?.status == .fail)
        #expect(finding("routes", f)?.detail.contains("the route for fd42:1::/48 into wm0") == true)
        f.routes! += [Route(destination: v6, interfaceIndex: 7, metric: 1024), Route(destination: v6, type: .unreachable, metric: 4_200_000_000)]
        #expect(finding("routes", f)?.status == .ok)
        #expect(finding("routes", f)?.detail.contains("10.244.0.0/16 and fd42:1::/48") == true)
    }

    @Test func alivePeersWithoutRecentHandshakeWarnButDoNotFail() throws {
        var f = try healthyFacts()
        f.peers?[0].secondsSinceHandshake = 181
        f.peers?.append(PeerInfo(name: "c", state: "alive", podCIDRs: [], publicKey: "pc", endpoint: nil,
                                 secondsSinceHandshake: nil, onDevice: true))
        f.peers?.append(PeerInfo(name: "d", state: "dead", podCIDRs: [], publicKey: "pd", endpoint: nil,
                                 secondsSinceHandshake: nil, onDevice: false))
        let h = finding("handshakes", f)
        #expect(h?.status == .warn)
        #expect(h?.detail.contains("b (181 s ago)") == true && h?.detail.contains("c (never)") == true && h?.detail.contains("d (") == false)
        #expect(DoctorReport(findings: Doctor.findings(f)).ok, "warnings alone exit 0")
        #expect(Doctor.text(Doctor.findings(f)).hasSuffix("nothing failed; see the warnings above\n"))
    }

    @Test func aPeerThatNeverAnsweredHandshakeInitiationsFails() throws {
        var f = try healthyFacts()
        // Bytes sent, never a handshake: initiations nobody answered.
        f.peers?.append(PeerInfo(name: "c", state: "alive", podCIDRs: [], publicKey: "pc", endpoint: "192.0.2.12:51820",
                                 secondsSinceHandshake: nil, onDevice: true, receiveBytes: 0, transmitBytes: 592))
        f.peers?[0].secondsSinceHandshake = 200
        let h = finding("handshakes", f)
        #expect(h?.status == .fail)
        #expect(h?.detail.contains("c (592 B sent, never a handshake)") == true && h?.detail.contains("b (200 s ago)") == true, "\(String(describing: h))")
        #expect(h?.fix?.contains("UDP 51820") == true)
        #expect(DoctorReport(findings: Doctor.findings(f)).ok == false)
        // Nothing sent: an idle peer, a warning only.
        f.peers?[1].transmitBytes = 0
        #expect(finding("handshakes", f)?.status == .warn)
    }

    @Test func clockSkewIsOnlyClaimedWhenARecordComesFromTheFuture() throws {
        var f = try healthyFacts()
        #expect(finding("clock", f)?.status == .info)
        #expect(finding("clock", f)?.detail.contains("not measurable") == true)
        f.peers?[0].recordVersion = UInt64(f.nowMs + 30_000)
        #expect(finding("clock", f)?.status == .warn)
        #expect(finding("clock", f)?.detail.contains("b by at least 30 s") == true)
        f.peers?[0].recordVersion = UInt64(f.nowMs + 600_000)
        #expect(finding("clock", f)?.status == .fail, "rotation messages would be refused")
        // Small versions are counters, not clocks; within gossip's noise proves nothing.
        f.peers?[0].recordVersion = 7
        #expect(finding("clock", f)?.status == .info)
        f.peers?[0].recordVersion = UInt64(f.nowMs + 1_000)
        #expect(finding("clock", f)?.status == .info)
    }

    @Test func theJSONReportHasOkAndFindingsWithoutSecrets() throws {
        let report = DoctorReport(findings: Doctor.findings(try healthyFacts()))
        let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(report)) as? [String: Any]
        #expect(object?["ok"] as? Bool == true)
        let first = (object?["findings"] as? [[String: Any]])?.first
        #expect(first?["check"] as? String == "wireguard" && first?["status"] as? String == "ok" && first?["detail"] is String)
    }
}
