import Foundation
import Testing
import WireMeshAgent
import WireMeshCrypto

@Suite struct RotationMessageTests {
    let identity = SigningIdentity.generate()
    let old = Key.generatePrivate().publicKey()
    let new = Key.generatePrivate().publicKey()

    func line(_ m: RotationMessage) throws -> [UInt8] { Array(try JSONEncoder().encode(m)) + [0x0A] }

    @Test func signedSwitchRoundTripsAndVerifies() throws {
        let m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        let decoded = try #require(RotationMessage.decode(line: try line(m).dropLast().map { $0 }))
        #expect(decoded == m)
        let keys = try decoded.verified(by: identity.publicKey, nowMs: 1_000_500)
        #expect(keys.old == old && keys.new == new)
    }

    @Test func anotherIdentityOrAChangedFieldIsRefused() throws {
        var m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        #expect(throws: RotationRefusal.self) { try m.verified(by: SigningIdentity.generate().publicKey, nowMs: 1_000_000) }
        m.newKey = Key.generatePrivate().publicKey().base64
        #expect(throws: RotationRefusal.self) { try m.verified(by: identity.publicKey, nowMs: 1_000_000) }
        var phase = RotationMessage(phase: .prepare, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        phase.rotation = .switch
        #expect(throws: RotationRefusal.self) { try phase.verified(by: identity.publicKey, nowMs: 1_000_000) }
    }

    @Test func staleMessageIsRefusedAsAReplay() throws {
        let m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        #expect(throws: RotationRefusal.self) {
            try m.verified(by: identity.publicKey, nowMs: 1_000_000 + RotationMessage.maxSkewMs + 1)
        }
    }

    @Test func joinRequestLinesAreNotRotationMessages() {
        #expect(RotationMessage.decode(line: Array(#"{"token_id":"x","node_name":"n"}"#.utf8)) == nil)
        #expect(RotationMessage.decode(line: Array("not json".utf8)) == nil)
    }

    @Test func ackLineIsOneJSONLine() throws {
        let line = RotationAck(ok: false, node: "b", error: "no").line()
        #expect(line.last == 0x0A)
        #expect(line.dropLast().contains(0x0A) == false)
        #expect(try JSONDecoder().decode(RotationAck.self, from: Data(line.dropLast())) == RotationAck(ok: false, node: "b", error: "no"))
    }
}
