import Foundation
import Testing
@testable import WireMeshAgent

@Suite("graph: DOT text of the mesh")
struct MeshGraphTests {
    let status = StatusInfo(nodeName: "a", clusterID: "c1", podCIDRs: ["10.244.0.0/24"], overlayAddress: "10.244.0.1",
                            interface: "wm0", wireGuardPublicKey: "pub", wireGuardPort: 51820, gossipPort: 7946,
                            backend: "userspace", livePeers: 3, keyCreatedAt: Date(timeIntervalSince1970: 0), nextKeyRotation: nil)

    @Test func healthyStaleMissingAndDeadEdges() {
        let peers = [
            PeerInfo(name: "b", state: "alive", podCIDRs: ["10.244.1.0/24"], publicKey: "pb", endpoint: "192.0.2.2:51820",
                     secondsSinceHandshake: 12, onDevice: true, receiveBytes: 1536, transmitBytes: 100),
            PeerInfo(name: "c", state: "alive", podCIDRs: ["10.244.2.0/24"], publicKey: "pc", endpoint: nil,
                     secondsSinceHandshake: 200, onDevice: true, receiveBytes: 0, transmitBytes: 0),
            PeerInfo(name: "d", state: "suspect", podCIDRs: ["10.244.3.0/24"], publicKey: "pd", endpoint: nil,
                     secondsSinceHandshake: nil, onDevice: false),
            PeerInfo(name: "e", state: "dead", podCIDRs: ["10.244.4.0/24"], publicKey: "pe", endpoint: nil,
                     secondsSinceHandshake: nil, onDevice: false),
            PeerInfo(name: "f", state: "dead", podCIDRs: ["10.244.5.0/24"], publicKey: "pf", endpoint: nil,
                     secondsSinceHandshake: 30, onDevice: true, receiveBytes: 5, transmitBytes: 6),
        ]
        let expected = #"""
            digraph wiremesh {
              label="cluster c1, seen from a";
              labelloc=t;
              node [shape=box, style=rounded, fontname="Helvetica"];
              edge [fontname="Helvetica", fontsize=10];
              "a" [label="a\n10.244.0.0/24\nthis node", penwidth=2];
              "b" [label="b\n10.244.1.0/24\nalive"];
              "c" [label="c\n10.244.2.0/24\nalive"];
              "d" [label="d\n10.244.3.0/24\nsuspect", color=orange];
              "e" [label="e\n10.244.4.0/24\ndead", color=gray, fontcolor=gray];
              "f" [label="f\n10.244.5.0/24\ndead", color=gray, fontcolor=gray];
              "a" -> "b" [label="handshake 12 s ago\nrx 1.50 KiB, tx 100 B"];
              "a" -> "c" [label="handshake 200 s ago\nrx 0 B, tx 0 B\nstale", color=red, fontcolor=red, penwidth=2];
              "a" -> "d" [label="missing: no peer on the device", color=red, fontcolor=red, style=dashed];
              "a" -> "f" [label="handshake 30 s ago\nrx 5 B, tx 6 B", color=gray, fontcolor=gray];
            }

            """#
        #expect(MeshGraph.dot(status: status, peers: peers) == expected)
    }

    @Test func anAlivePeerThatNeverHandshookIsStale() {
        let peers = [PeerInfo(name: "b", state: "alive", podCIDRs: [], publicKey: "pb", endpoint: nil, secondsSinceHandshake: nil,
                              onDevice: true, receiveBytes: 0, transmitBytes: 0)]
        #expect(MeshGraph.dot(status: status, peers: peers).contains(#""a" -> "b" [label="no handshake\nrx 0 B, tx 0 B\nstale", color=red"#))
    }

    @Test func namesAreQuotedSoTheyCannotBreakTheGraph() {
        var s = status
        s.nodeName = #"x"; y -> z\"#
        let text = MeshGraph.dot(status: s, peers: [])
        #expect(text.contains(#""x\"; y -> z\\" [label="x\"; y -> z\\\n10.244.0.0/24\nthis node""#), "\(text)")
    }

    @Test func agentsWithoutDeviceFieldsStillGetEdges() {
        // Agents before on_device / bytes: an edge with the handshake only.
        let peers = [PeerInfo(name: "b", state: "alive", podCIDRs: [], publicKey: "pb", endpoint: nil, secondsSinceHandshake: 3)]
        #expect(MeshGraph.dot(status: status, peers: peers).contains(#""a" -> "b" [label="handshake 3 s ago"];"#))
    }
}
