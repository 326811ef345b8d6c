import Foundation
import Testing
import WireMeshCrypto
@testable import LinePort

@Suite("Keyring request and answer (join history)")
struct KeyringMessageTests {
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

    func answer(_ r: KeyringRequest, known: [KnownMember]? = nil, at: Int64? = nil) -> Result<KeyringAnswer, KeyringRefusal> {
        Result { () throws(KeyringRefusal) in
            try KeyringAnswer.answer(r, clusterID: cluster, members: known ?? [KnownMember(name: "node-d", identity: node.publicKey, left: false)],
                                     keyring: keyring, generations: generations, identity: member, name: "node-a", nowMs: at ?? now)
        }
    }

    /// The refusal's code, nil when the member answered.
    func refusal(_ r: KeyringRequest, known: [KnownMember]? = nil, at: Int64? = nil) -> KeyringRefusal.Code? {
        if case .failure(let e) = answer(r, known: known, at: at) { return e.code }
        return nil
    }

    @Test func aKnownMemberGetsTheKeyringSealedToItsOneTimeKey() throws {
        let ephemeral = Key.generatePrivate()
        let r = request(ephemeral)
        guard case .keyring(let decoded) = try LineRequest.decode(line: LineRequest.keyring(r).line().dropLast()) else {
            Issue.record("a keyring line decodes as something else"); return
        }
        #expect(decoded == r)
        let a = try answer(decoded).get()
        guard case .keyring(let wire) = try LineReply.decode(line: LineReply.keyring(a).line().dropLast()) else {
            Issue.record("a keyring reply decodes as something else"); return
        }
        let got = try wire.open(for: r, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: cluster)
        #expect(got.map { $0.key } == [k2, k1], "primary first")
        #expect(got.map { $0.tag } == [ClusterKeyTag(id: k2.id, generation: 2), ClusterKeyTag(id: k1.id, generation: 1)])
        #expect(!a.sealed.contains(k2.key.base64), "the key never travels in clear")
    }

    @Test func aForgottenNodeIsToldItIsUnknown() {
        #expect(refusal(request(.generatePrivate()), known: []) == .unknownMember)
    }

    @Test func aNodeThatLeftIsRefused() {
        #expect(refusal(request(.generatePrivate()), known: [KnownMember(name: "node-d", identity: node.publicKey, left: true)]) == .left)
    }

    @Test func aRequestSignedByAnotherIdentityIsRefusedAsIfTheNameWereUnknown() {
        // Someone holding the name but not the node's identity key (a forged request).
        #expect(refusal(request(.generatePrivate(), signer: .generate())) == .unknownMember)
        var unsigned = request(.generatePrivate())
        unsigned.signature = ""
        #expect(refusal(unsigned) == .unknownMember)
        var altered = request(.generatePrivate())
        altered.ephemeralKey = Key.generatePrivate().publicKey().base64  // swapped for the attacker's key
        #expect(refusal(altered) == .unknownMember)
        #expect(refusal(request(.generatePrivate(), cluster: "another")) == .unknownMember, "signed for another cluster")
    }

    @Test func aStrangerCannotTellAKnownNameFromAnUnknownOne() throws {
        // A forged request naming a member and one naming nobody: the same answer, naming neither the
        // answering member ("node-a"), the asked-for name, nor the cluster.
        func message(_ r: KeyringRequest) -> String? {
            if case .failure(let e) = answer(r) { return e.message }
            return nil
        }
        let known = try #require(message(request(.generatePrivate(), signer: .generate(), name: "node-d")))
        let unknown = try #require(message(request(.generatePrivate(), signer: .generate(), name: "nobody")))
        #expect(known == unknown)
        for secret in ["node-a", "node-d", "nobody", cluster] { #expect(!known.contains(secret), "\(known)") }
    }

    @Test func aStaleRequestIsRefused() {
        #expect(refusal(request(.generatePrivate(), at: now - RotationMessage.maxSkewMs - 1)) == .stale)
    }

    /// The requester signs `issued_at`: at the edge of Int64 the freshness check overflowed and the
    /// answering member trapped (see `RotationMessageTests.anIssueTimeAtTheEdgeOfInt64IsStaleNotATrap`).
    @Test func anIssueTimeAtTheEdgeOfInt64IsStaleNotATrap() {
        for at: Int64 in [.min, .min + 1, .max] {
            #expect(refusal(request(.generatePrivate(), at: at)) == .stale)
        }
    }

    @Test func theRequesterRejectsAnAnswerNotFromTheMemberOrNotForItsRequest() throws {
        let ephemeral = Key.generatePrivate()
        let r = request(ephemeral)
        let a = try answer(r).get()
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
        var forgedSeal = a
        forgedSeal.sealed = Data(SealedBox.seal([1], to: ephemeral.publicKey())).base64EncodedString()
        #expect(throws: KeyringRefusal.self, "a box swapped under the member's signature") {
            _ = try forgedSeal.open(for: r, ephemeral: ephemeral, memberIdentity: member.publicKey, clusterID: cluster)
        }
    }

    @Test func anUnknownRequestVersionIsRefused() {
        var r = request(.generatePrivate())
        r.keyringRequest = 2
        #expect(refusal(r) == .badRequest)
    }

    @Test func forgottenMeansUnknownOrLeft() {
        #expect(KeyringRefusal(code: .unknownMember, message: "").isForgotten)
        #expect(KeyringRefusal(code: .left, message: "").isForgotten)
        #expect(!KeyringRefusal(code: .stale, message: "").isForgotten)
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
