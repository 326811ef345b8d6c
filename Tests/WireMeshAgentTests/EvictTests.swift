import Foundation
import IPNetwork
import LinePort
import Membership
import Testing
import WireGuard
import WireMeshCrypto
@testable import WireMeshAgent
import WireMeshJoin

/// `wiremesh evict` on an authority, and what a member that is not one may not do (issue 10).
@Suite struct EvictTests {
    func joinRequest(_ token: JoinToken, name: String, identity: SigningIdentity = .generate()) -> LineRequest {
        .join(JoinExchange.makeRequest(token: token, nodeName: name, identity: identity.publicKey,
                                       wireGuardPublicKey: Key.generatePrivate().publicKey(), nonce: secureRandomBytes(JoinExchange.nonceLength)))
    }

    @Test func evictRemovesThePeerPersistsTheListKillsOldTokensAndRefusesTheNodeEverywhere() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 2)
            await h.agent.reconcile()
            let victim = h.peers[0]
            #expect(try h.device.peers.contains { $0.publicKey == victim.record.wireguardKey })
            guard case .tokenCreated(let before, _) = await h.agent.handle(.tokenCreate(ttlSeconds: 600, uses: 5)) else {
                Issue.record("no token"); return
            }
            let reply = await h.agent.handle(.evict(name: "peer0"))
            guard case .done(let message) = reply else { Issue.record("evict failed: \(reply)"); return }
            #expect(message.contains("evicted peer0"))
            // The peer is gone from the device; the other stays.
            let keys = Set(try h.device.peers.map(\.publicKey))
            #expect(!keys.contains(victim.record.wireguardKey) && keys.contains(h.peers[1].record.wireguardKey))
            // Saved (a restart keeps it), announced, listed.
            let saved = try #require(try h.store.loadRevocations(clusterID: h.state.clusterID, authority: h.state.authorityKey))
            #expect(saved.serial == 1 && saved.contains(victim.identity.publicKey))
            #expect(try await h.agent.transport!.localRecord().record.revocationSerial == 1)
            let peers = try await h.agent.peers()
            #expect(peers.contains { $0.name == "peer0" && $0.state == "evicted" })
            // Its record, even a newer one, is refused by the core.
            let members = try await h.agent.transport!.members()
            #expect(!members.contains { $0.name == "peer0" })
            // A token created before the eviction admits nobody; one created after does.
            let old = try JoinToken(parsing: before)
            guard case .refused(.join(let refused)) = await h.agent.answer(joinRequest(old, name: "newcomer")) else {
                Issue.record("an old token still admits"); return
            }
            #expect(refused.code == .authentication)
            guard case .tokenCreated(let after, _) = await h.agent.handle(.tokenCreate(ttlSeconds: 600, uses: 5)) else {
                Issue.record("no token"); return
            }
            let fresh = try JoinToken(parsing: after)
            guard case .joined = await h.agent.answer(joinRequest(fresh, name: "newcomer")) else { Issue.record("a new token does not admit"); return }
            // The evicted identity cannot come back with a new token either.
            guard case .refused(.join(let again)) = await h.agent.answer(joinRequest(fresh, name: "peer0-again", identity: victim.identity)) else {
                Issue.record("the evicted identity joined again"); return
            }
            #expect(again.code == .evicted)
            // Its keyring requests are refused, saying why.
            let ask = KeyringRequest(clusterID: h.state.clusterID, node: "peer0", ephemeral: .generatePrivate(),
                                     issuedAt: Int64(Date().timeIntervalSince1970 * 1000), identity: victim.identity)
            guard case .refused(.keyring(let no)) = await h.agent.answer(.keyring(ask)) else { Issue.record("evicted node got the keyring"); return }
            #expect(no.code == .evicted)
            // Evicting twice, or an unknown name, or itself: a clear error.
            for (name, says) in [("peer0", "already evicted"), ("nobody", "no member is named"), ("self", "is this node")] {
                guard case .failure(let f) = await h.agent.handle(.evict(name: name)) else { Issue.record("evict \(name) succeeded"); continue }
                #expect(f.message.contains(says), "\(f.message)")
            }
        }
    }

    @Test func aMemberThatIsNotAnAuthorityMintsNothingAdmitsNothingEvictsNothing() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1, holdsAuthority: false)
            #expect(h.state.authority == nil)
            #expect(!FileManager.default.fileExists(atPath: h.store.directory + "/authority.key"))
            guard case .failure(let f) = await h.agent.handle(.tokenCreate(ttlSeconds: 600, uses: 1)) else { Issue.record("minted"); return }
            #expect(f.message.contains("not an authority"))
            guard case .failure(let e) = await h.agent.handle(.evict(name: "peer0")) else { Issue.record("evicted"); return }
            #expect(e.message.contains("not an authority"))
            // A token minted with what a member holds (its identity as if it were the authority) is refused.
            let (forged, _) = try JoinToken.issue(clusterID: h.state.clusterID, endpoints: [Endpoint(address: try IPAddress("127.0.0.1"), port: 7946)],
                                                  authority: h.state.identity, revocationSerial: 0, ttl: 600, uses: nil, now: Date())
            guard case .refused(.join(let r)) = await h.agent.answer(joinRequest(forged, name: "x")) else { Issue.record("admitted"); return }
            #expect(r.code == .notAuthority)
        }
    }
}
