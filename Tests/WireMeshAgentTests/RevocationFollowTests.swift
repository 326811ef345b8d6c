import Foundation
import IPNetwork
import LinePort
import Membership
import NIOConcurrencyHelpers
import Testing
import WireMeshCrypto
@testable import WireMeshAgent

/// Following a newer revocation list that a member announces, against a member whose record lies about
/// it (issue 12: a hostile record's serial made every node ask its holder every 5 s, and, asked first,
/// hid the member that held the real list).
@Suite struct RevocationFollowTests {
    /// A member's line port on 127.0.0.1 that answers keyring requests as `name`, with `list`, once the
    /// harness made its identity and the node's state (`ready`).
    final class KeyringPeer: Sendable {
        let server: LineServer
        let asked = NIOLockedValueBox(0)
        private let setup = NIOLockedValueBox<(identity: SigningIdentity, requester: KnownMember, state: NodeState)?>(nil)
        private let serving: Task<Void, Never>

        init(name: String, list: RevocationList?) async throws {
            let asked = self.asked, setup = self.setup
            server = try await LineServer.bind(Endpoint(address: try IPAddress("127.0.0.1"), port: 0)) { request in
                guard case .keyring(let r) = request, let peer = setup.withLockedValue({ $0 }) else {
                    return .refused(.malformed("not a keyring request"))
                }
                asked.withLockedValue { $0 += 1 }
                let s = peer.state
                let generations = Dictionary(s.clusterKeys.entries.map { ($0.id, $0.generation ?? 0) }, uniquingKeysWith: { x, _ in x })
                do throws(KeyringRefusal) {
                    return .keyring(try KeyringAnswer.answer(r, clusterID: s.clusterID, members: [peer.requester], keyring: s.keyring, generations: generations,
                                                             identity: peer.identity, name: name, nowMs: Int64(Date().timeIntervalSince1970 * 1000),
                                                             revocations: list))
                } catch {
                    return .refused(.keyring(error))
                }
            }
            let server = self.server
            serving = Task { try? await server.run() }
        }
        func ready(identity: SigningIdentity, node: NodeState) {
            setup.withLockedValue { $0 = (identity, KnownMember(name: node.node.name, identity: node.identity.publicKey, left: false), node) }
        }
        var endpoint: Endpoint { Endpoint(address: try! IPAddress("127.0.0.1"), port: UInt16(server.localPort!)) }
        deinit { serving.cancel() }
    }

    @Test func aMemberAnnouncingAListItDoesNotHoldIsBackedOffAndDoesNotHideTheOneThatHoldsIt() async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualClock()
            // The real list (serial 1, evicting a third node) is held by peer1; peer0 announces serial 1000.
            let evicted = SigningIdentity.generate()
            let list = try RevocationList.issue(adding: .init(name: "gone", identity: evicted.publicKey, evictedAt: 1), to: nil,
                                                clusterID: "c0ffee00c0ffee00", authority: AgentHarness.authority)
            let liar = try await KeyringPeer(name: "peer0", list: nil)
            let holder = try await KeyringPeer(name: "peer1", list: list)
            let h = try await AgentHarness(directory: dir, peers: 2, clock: clock.agentClock, holdsAuthority: false,
                                           editPeer: { i, record in
                                               record.gossipAddress = [liar, holder][i].endpoint
                                               record.revocationSerial = [1000, 1][i]
                                           })
            for (i, p) in [liar, holder].enumerated() { p.ready(identity: h.peers[i].identity, node: h.state) }

            // The liar is asked first (highest serial), answers without the list: the holder is asked next.
            await h.agent.followView()
            try await waitFor("the list adopted from peer1") { await h.agent.state.revocations?.serial == 1 }
            #expect(liar.asked.withLockedValue { $0 } == 1 && holder.asked.withLockedValue { $0 } == 1)
            #expect(try h.store.loadRevocations(clusterID: h.state.clusterID, authority: h.state.authorityKey)?.serial == 1)

            // Still announcing 1000: not asked again within its back-off (10 s), asked once after it.
            for _ in 0..<3 {
                clock.advance(.seconds(3))
                await h.agent.followView()
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(liar.asked.withLockedValue { $0 } == 1, "asked again within its back-off")
            clock.advance(.seconds(2))
            await h.agent.followView()
            try await waitFor("peer0 asked again once its back-off ended") { liar.asked.withLockedValue { $0 } == 2 }
            // A second unserved answer doubles the back-off (20 s).
            try await waitFor("the second back-off recorded") { await h.agent.clusterKeyAgent.unservedRevocations["peer0"]?.times == 2 }
            clock.advance(.seconds(15))
            await h.agent.followView()
            try await Task.sleep(for: .milliseconds(300))
            #expect(liar.asked.withLockedValue { $0 } == 2, "asked again within the doubled back-off")
            #expect(holder.asked.withLockedValue { $0 } == 1, "a member that served what it announces is not asked again")
        }
    }

    @Test func theBackOffDoublesUpToTenMinutes() {
        #expect((1...9).map { UnservedRevocation.backOff(times: $0) }
                == [10, 20, 40, 80, 160, 320, 600, 600, 600].map { Duration.seconds($0) })
        #expect(UnservedRevocation.backOff(times: .max) == .seconds(600) && UnservedRevocation.backOff(times: 0) == .seconds(10))
    }

    private func waitFor(_ what: String, _ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while !(await condition()) {
            guard ContinuousClock.now < deadline else { Issue.record("not within 20 s: \(what)"); return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
