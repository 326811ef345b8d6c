import Foundation
import Testing
import LinePort
import WireMeshCrypto

@Suite struct RotationMessageTests {
    let identity = SigningIdentity.generate()
    let old = Key.generatePrivate().publicKey()
    let new = Key.generatePrivate().publicKey()

    @Test func signedSwitchRoundTripsAndVerifies() throws {
        let m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        guard case .rotation(let decoded) = try LineRequest.decode(line: LineRequest.rotation(m).line().dropLast()) else {
            Issue.record("a rotation line decodes as something else"); return
        }
        #expect(decoded == m)
        let keys = try decoded.verified(by: identity.publicKey, nowMs: 1_000_500)
        #expect(keys.old == old && keys.new == new)
    }

    @Test func anotherIdentityOrAChangedFieldIsRefused() throws {
        var m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: 1_000_000, identity: identity)
        // A bad signature is refused as a sender nobody knows: no name in it to learn from.
        #expect(throws: RotationRefusal.unknownSender) { try m.verified(by: SigningIdentity.generate().publicKey, nowMs: 1_000_000) }
        #expect(!RotationRefusal.unknownSender.description.contains("'a'"))
        m.newKey = Key.generatePrivate().publicKey().base64
        #expect(throws: RotationRefusal.unknownSender) { try m.verified(by: identity.publicKey, nowMs: 1_000_000) }
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

    /// A member signs its own rotation messages, so it chooses `issued_at`: near `Int64.min` the
    /// freshness check's `abs(now - issuedAt)` overflowed and the receiving agent trapped (found
    /// while writing the keyring-message fuzz target's freshness invariant).
    @Test func anIssueTimeAtTheEdgeOfInt64IsStaleNotATrap() throws {
        for issuedAt: Int64 in [.min, .min + 1, -9_221_572_036_854_775_809, .max] {
            let m = RotationMessage(phase: .switch, node: "a", oldKey: old, newKey: new, issuedAt: issuedAt, identity: identity)
            #expect(throws: RotationRefusal.self) { try m.verified(by: identity.publicKey, nowMs: 1_800_000_000_000) }
        }
        #expect(RotationMessage.skewMs(issuedAt: .min, nowMs: 1) == .max)
        #expect(RotationMessage.skewMs(issuedAt: .min, nowMs: -1) == .max)
        #expect(RotationMessage.skewMs(issuedAt: .min, nowMs: 0) == .max)
        #expect(RotationMessage.skewMs(issuedAt: .max, nowMs: .min) == .max)
        #expect(RotationMessage.skewMs(issuedAt: 5, nowMs: 2) == 3 && RotationMessage.skewMs(issuedAt: 2, nowMs: 5) == 3)
    }

    @Test func ackAndRefusalAreOneJSONLineEach() throws {
        for reply in [LineReply.rotated(node: "b"), .refused(.rotation(RotationRefusal("no")))] {
            let line = reply.line()
            #expect(line.last == 0x0A && !line.dropLast().contains(0x0A))
            #expect(try LineReply.decode(line: Array(line.dropLast())) == reply)
        }
    }
}
