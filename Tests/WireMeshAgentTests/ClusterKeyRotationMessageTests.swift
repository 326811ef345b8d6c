import Foundation
import Testing
import WireMeshCrypto
@testable import WireMeshAgent

@Suite("Keyring request and answer (join history)")
struct ClusterKeyRotationMessageTests {
    let cluster = "c0ffee00c0ffee00"
    let node = SigningIdentity.generate()
    let member = SigningIdentity.generate()
    let k1 = ClusterKey.generate(), k2 = ClusterKey.generate()
    let now: Int64 = 1_800_000_000_000

    var keyring: Keyring { Keyring(primary: k2, others: [k1]) }
    var generations: [ClusterKeyID: UInt64] { [k1.id: 1, k2.id: 2] }

    func request(_ ephemeral: Key, signer: SigningIdentity? = nil, name: String = "node-d", at: Int64? = nil,
                 cluster: String? = nil) -> KeyringRequest {
        KeyringRequest(clusterID: cluster ?? self.cluster, node: name, ephemeral: ephemeral, issuedAt: at ?? now,
                       identity: signer ?? node)
    }

    func answer(_ r: KeyringRequest, known: [KnownMember]? = nil, at: Int64? = nil) -> KeyringAnswer {
        KeyringAnswer.answer(r, clusterID: cluster, members: known ?? [KnownMember(name: "node-d", identity: node.publicKey, left: false)],
                             keyring: keyring, generations: generations, identity: member, name: "node-a", nowMs: at ?? now)
    }

    @Test func aKnownMemberGetsTheKeyringSealedToItsOneTimeKey() throws {
        let ephemeral = Key.generatePrivate()
        let r = request(ephemeral)
        let line = r.line()
        let decoded = try #require(KeyringRequest.decode(line: Array(line.dropLast())))
        #expect(decoded == r)
        let a = answer(decoded)
        #expect(a.ok, "\(a.error ?? "")")
        let wire = try JSONDecoder().decode(KeyringAnswer.self, from: Data(a.line().dropLast()))
        let got = try wire.open(for: r, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: cluster)
        #expect(got.map { $0.key } == [k2, k1], "primary first")
        #expect(got.map { $0.tag } == [ClusterKeyTag(id: k2.id, generation: 2), ClusterKeyTag(id: k1.id, generation: 1)])
        #expect(!(a.sealed ?? "").contains(k2.key.base64), "the key never travels in clear")
    }

    @Test func aForgottenNodeIsToldItIsUnknown() {
        let a = answer(request(.generatePrivate()), known: [])
        #expect(!a.ok && a.code == "unknown-member")
        #expect(a.sealed == nil)
    }

    @Test func aNodeThatLeftIsRefused() {
        let a = answer(request(.generatePrivate()), known: [KnownMember(name: "node-d", identity: node.publicKey, left: true)])
        #expect(!a.ok && a.code == "left")
    }

    @Test func aRequestSignedByAnotherIdentityIsRefused() {
        // Someone holding the name but not the node's identity key (a forged request).
        let forged = answer(request(.generatePrivate(), signer: .generate()))
        #expect(!forged.ok && forged.code == "bad-signature" && forged.sealed == nil)
        var unsigned = request(.generatePrivate())
        unsigned.signature = ""
        #expect(answer(unsigned).code == "bad-signature")
        var altered = request(.generatePrivate())
        altered.ephemeralKey = Key.generatePrivate().publicKey().base64  // swapped for the attacker's key
        #expect(answer(altered).code == "bad-signature")
        #expect(answer(request(.generatePrivate(), cluster: "another")).code == "bad-signature", "signed for another cluster")
    }

    @Test func aStaleRequestIsRefused() {
        let a = answer(request(.generatePrivate(), at: now - RotationMessage.maxSkewMs - 1))
        #expect(!a.ok && a.code == "stale")
    }

    @Test func theRequesterRejectsAnAnswerNotFromTheMemberOrNotForItsRequest() throws {
        let ephemeral = Key.generatePrivate()
        let r = request(ephemeral)
        let a = answer(r)
        #expect(throws: KeyringRefusal.self, "signed by someone else") {
            _ = try a.open(for: r, ephemeral: ephemeral, memberIdentity: SigningIdentity.generate().publicKey, clusterID: cluster)
        }
        #expect(throws: KeyringRefusal.self, "an answer to another request") {
            let other = request(ephemeral, at: now + 1)
            _ = try a.open(for: other, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: cluster)
        }
        #expect(throws: KeyringRefusal.self, "a different one-time key") {
            _ = try a.open(for: r, ephemeral: .generatePrivate(), memberIdentity: member.publicKey, clusterID: cluster)
        }
        #expect(throws: KeyringRefusal.self, "another cluster") {
            _ = try a.open(for: r, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: "other")
        }
        let refused = answer(r, known: [])
        do {
            _ = try refused.open(for: r, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: cluster)
            Issue.record("a refusal opened")
        } catch {
            #expect(error.code == "unknown-member")
        }
    }

    @Test func otherLinesOnThePortAreNotKeyringRequests() {
        #expect(KeyringRequest.decode(line: Array(#"{"rotation":"prepare","node":"a"}"#.utf8)) == nil)
        #expect(KeyringRequest.decode(line: Array(#"{"version":1,"token_id":"x"}"#.utf8)) == nil)
        #expect(KeyringRequest.decode(line: Array(#"{"keyring_request":2,"node":"a","ephemeral_key":"","issued_at":0,"signature":""}"#.utf8)) == nil,
                "an unknown version")
        #expect(RotationMessage.decode(line: request(.generatePrivate()).line().dropLast().map { $0 }) == nil)
    }

    @Test func sealedBoxOpensOnlyWithTheRecipientKey() throws {
        let recipient = Key.generatePrivate()
        let box = SealedBox.seal([1, 2, 3], to: recipient.publicKey())
        #expect(box.count == 3 + SealedBox.overhead)
        #expect(try SealedBox.open(box, privateKey: recipient) == [1, 2, 3])
        #expect(throws: SealError.authenticationFailed) { try SealedBox.open(box, privateKey: .generatePrivate()) }
        var tampered = box
        tampered[tampered.count - 1] ^= 1
        #expect(throws: SealError.authenticationFailed) { try SealedBox.open(tampered, privateKey: recipient) }
        #expect(throws: SealError.tooShort(2)) { try SealedBox.open([1, 2], privateKey: recipient) }
    }
}
