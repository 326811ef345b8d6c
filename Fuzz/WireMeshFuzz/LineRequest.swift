import Foundation
import IPNetwork
import LinePort
import WireMeshCrypto
import WireMeshJoin

/// Request lines anyone can send to the line port, and the replies a joiner, a rotating peer, a
/// push/pull or a stream probe reads.
enum LineRequestTarget {
    static let target = FuzzTarget(
        name: "line-request",
        summary: "line port: LineRequest.decode (the one envelope the server decodes), LineReply.decode",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        do {
            let request = try LineRequest.decode(line: data)
            // The server hands a push/pull's or stream probe's sealed bytes to the transport.
            switch request {
            case .pushPull(let e), .streamProbe(let e): checkSealed(e)
            default: break
            }
            // What decodes re-encodes as one line that decodes to the same request.
            let line = request.line()
            require(line.last == 0x0A && !line.dropLast().contains(0x0A), "request line is not one line")
            require((try? LineRequest.decode(line: Array(line.dropLast()))) == request, "request re-encoded decodes differently")
        } catch {
            guard case .malformed(let why) = error else { fatalError("decode refused with \(error), not .malformed") }
            _ = LineReply.refused(error).line()
            require(!why.isEmpty, "a refusal without a reason")
        }
        if let reply = try? LineReply.decode(line: data) {
            switch reply {
            case .pushPull(let e), .streamProbe(let e): checkSealed(e)
            default: break
            }
            require((try? LineReply.decode(line: Array(reply.line().dropLast()))) == reply, "reply re-encoded decodes differently")
        }
    }

    /// The sealed bytes come out only within their bound, and as what an envelope of them carries.
    static func checkSealed(_ e: PushPullEnvelope) {
        guard let bytes = e.sealedBytes else { return }
        require(bytes.count <= PushPullEnvelope.maxSealedBytes, "sealed bytes over the bound")
        require(PushPullEnvelope(from: e.from, sealed: bytes).sealedBytes == bytes, "sealed bytes re-encode differently")
    }

    static func seeds() throws -> [[UInt8]] {
        let identity = SigningIdentity(seed: try Key(bytes: [UInt8](repeating: 7, count: 32)))
        let key = try Key(bytes: [UInt8](repeating: 9, count: 32))
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let (token, _) = try JoinToken.issue(clusterID: "c0ffee00c0ffee00", endpoints: [try Endpoint("192.0.2.1:7946")],
                                             authority: identity, revocationSerial: 0, ttl: 600, uses: 2, now: now,
                                             random: { [UInt8](repeating: 3, count: $0) })
        let join = JoinExchange.makeRequest(token: token, nodeName: "n1", identity: identity.publicKey,
                                            wireGuardPublicKey: key.publicKey(), requestedPodCIDR: try IPPrefix("10.244.3.0/24"),
                                            nonce: [UInt8](repeating: 5, count: JoinExchange.nonceLength))
        let rotation = RotationMessage(phase: .switch, node: "a", oldKey: key.publicKey(), newKey: identity.seed.publicKey(),
                                       issuedAt: 1_800_000_000_000, identity: identity)
        let keyring = KeyringRequest(clusterID: "c0ffee00c0ffee00", node: "a", ephemeral: key, issuedAt: 1_800_000_000_000,
                                     identity: identity)
        let sealed = PushPullEnvelope(from: "192.0.2.1:7946", sealed: [UInt8](repeating: 0xA5, count: 64))
        let requests: [LineRequest] = [.join(join), .rotation(rotation), .keyring(keyring), .pushPull(sealed), .streamProbe(sealed)]
        let replies: [LineReply] = [
            .rotated(node: "b"),
            .keyring(KeyringAnswer(node: "b", sealed: "AAAA", signature: "AAAA")),
            .refused(.join(JoinRejection(JoinError.revoked(id: token.idText)))),
            .refused(.keyring(KeyringRefusal(code: .stale, message: "stale"))),
            .refused(.malformed("request lacks 'kind'")),
            .pushPull(PushPullEnvelope(from: nil, sealed: [UInt8](repeating: 0x5A, count: 48))),
            .streamProbe(PushPullEnvelope(from: nil, sealed: [1, 2, 3])),
            .refused(.pushPull("replayed")),
            .refused(.streamProbe("over its rate")),
        ]
        return requests.map { Array($0.line().dropLast()) } + replies.map { Array($0.line().dropLast()) }
    }
}
