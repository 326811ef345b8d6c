import Foundation
import IPNetwork
@testable import LinePort
import Testing
import WireMeshCrypto
import WireMeshJoin

@Suite("Line port envelope: one typed request, decoded once")
struct LineProtocolTests {
    let identity = SigningIdentity.generate()

    func joinRequest() throws -> JoinRequest {
        let (token, _) = try JoinToken.issue(clusterID: "c1", endpoints: [try Endpoint("192.0.2.1:7946")],
                                             authority: .generate(), revocationSerial: 0, ttl: 600, uses: 1, now: Date())
        return JoinExchange.makeRequest(token: token, nodeName: "n1", identity: identity.publicKey,
                                        wireGuardPublicKey: Key.generatePrivate().publicKey(),
                                        nonce: secureRandomBytes(JoinExchange.nonceLength))
    }

    func decode(_ text: String) throws(LineRefusal) -> LineRequest { try LineRequest.decode(line: Array(text.utf8)) }

    /// The reason a line is refused, or nil when it decodes.
    func refusal(_ text: String) -> String? {
        do { _ = try decode(text); return nil } catch {
            guard case .malformed(let why) = error else { return "not malformed: \(error)" }
            return why
        }
    }

    @Test func everyKindRoundTripsAsOneLine() throws {
        let requests: [LineRequest] = [
            .join(try joinRequest()),
            .rotation(RotationMessage(phase: .prepare, node: "a", oldKey: Key.generatePrivate().publicKey(),
                                      newKey: Key.generatePrivate().publicKey(), issuedAt: 5, identity: identity)),
            .keyring(KeyringRequest(clusterID: "c1", node: "a", ephemeral: .generatePrivate(), issuedAt: 5, identity: identity)),
        ]
        for request in requests {
            let line = request.line()
            #expect(line.last == 0x0A && !line.dropLast().contains(0x0A))
            #expect(try LineRequest.decode(line: Array(line.dropLast())) == request)
        }
    }

    @Test func theKindTagPicksTheBodyType() throws {
        // A rotation body under the keyring tag is not read as a rotation (no fall-through).
        let rotation = RotationMessage(phase: .switch, node: "a", oldKey: Key.generatePrivate().publicKey(),
                                       newKey: Key.generatePrivate().publicKey(), issuedAt: 5, identity: identity)
        let body = String(decoding: try JSONEncoder().encode(rotation), as: UTF8.self)
        #expect(refusal(#"{"kind":"keyring","body":\#(body)}"#) == "request lacks 'body.keyring_request'")
        #expect(refusal(#"{"kind":"rotation","body":\#(body)}"#) == nil)
    }

    @Test func malformedLinesAreRefusedSayingWhereNotWhat() throws {
        #expect(refusal("not json")?.contains("not a JSON request") == true)
        #expect(refusal(#"{"kind":"join"}"#) == "request lacks 'body'")
        #expect(refusal(#"{"body":{}}"#) == "request lacks 'kind'")
        #expect(refusal(#"{"kind":"teleport","body":{}}"#) == "request has an invalid value at 'kind'")
        #expect(refusal(#"{"kind":"rotation","body":{"rotation":"prepare"}}"#) == "request lacks 'body.node'")
        // The old bare forms (before the envelope) are refused, not guessed at.
        let bare = String(decoding: try JSONEncoder().encode(try joinRequest()), as: UTF8.self)
        #expect(refusal(bare) == "request lacks 'kind'")
        // A secret-looking value is never repeated.
        let secret = "c2VjcmV0LXRva2VuLWtleS1tYXRlcmlhbA=="
        let why = try #require(refusal(#"{"kind":"join","body":{"version":2,"token_id":"\#(secret)","nonce":5}}"#))
        #expect(!why.contains(secret))
    }

    @Test func anOverlongLineIsRefusedBeforeDecoding() {
        let line = [UInt8](repeating: UInt8(ascii: " "), count: LineRequest.maxLength + 1)
        #expect(throws: LineRefusal.malformed("request line longer than \(LineRequest.maxLength) bytes")) {
            try LineRequest.decode(line: line)
        }
    }

    @Test func refusalsKeepTheirTypedCodeAcrossTheWire() throws {
        let refusals: [LineRefusal] = [
            .malformed("request lacks 'kind'"),
            .join(JoinRejection(JoinError.expired(id: "00aa", at: Date(timeIntervalSince1970: 0)))),
            .join(JoinRejection(code: .otherCluster, message: "x")),
            .rotation(RotationRefusal("'a' is not a live member here")),
            .keyring(KeyringRefusal(code: .unknownMember, message: "who?")),
        ]
        for refusal in refusals {
            let reply = LineReply.refused(refusal)
            #expect(try LineReply.decode(line: Array(reply.line().dropLast())) == reply)
        }
        let text = String(decoding: LineReply.refused(.join(JoinRejection(code: .otherCluster, message: "m"))).line(), as: UTF8.self)
        #expect(text.contains(#""code":"other-cluster""#), "codes keep their script-stable spelling: \(text)")
        #expect(throws: LineRefusal.self) { try LineReply.decode(line: Array(#"{"kind":"refused","body":{"kind":"join","code":"nope","message":""}}"#.utf8)) }
    }

    @Test func aRefusalReadsAsItsReason() {
        #expect("\(LineRefusal.join(JoinRejection(JoinError.revoked(id: "00aa"))))" == "join token 00aa was revoked: create a new one with 'wiremesh token create'")
        #expect("\(LineRefusal.rotation(RotationRefusal("no")))" == "no")
        #expect("\(LineRefusal.malformed("x"))" == "malformed line-port message: x")
    }
}
