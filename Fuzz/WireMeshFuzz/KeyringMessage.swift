import Foundation
import LinePort
import Membership
import WireMeshCrypto

/// The line port's keyring and rotation messages, from both ends: `KeyringRequest` (a member answers
/// it), `KeyringAnswer` (the requester opens it, with the revocation list inside), `RotationMessage`.
///
/// The first byte picks the mode (its value mod 6), the rest is:
/// - 0: a `KeyringRequest` JSON, answered by member n1 (which knows n2, newcomer, and n3 that left);
///   it answers only a request its sender signed, and the answer opens to its keyring;
/// - 1: the same, re-signed by the fixture key of the node it names (a member asking), so the fuzzer
///   reaches the version, left, freshness and ephemeral-key checks;
/// - 2: a `KeyringAnswer` JSON to a fixed request of n2: only n1's answer opens;
/// - 3: the sealed payload of an answer (JSON: cluster id, keys, revocation list), which the target
///   seals to the request's ephemeral key and signs as n1, so the fuzzer reaches what is inside: a
///   revocation list that comes out and verifies with the authority is one the authority signed;
/// - 4: a `RotationMessage` JSON, checked with n2's identity; 5: the same re-signed by its node's key.
enum KeyringMessageTarget {
    static let target = FuzzTarget(
        name: "keyring-message",
        summary: "KeyringRequest/KeyringAnswer JSON, KeyringAnswer.answer/openAll (fixed keys; re-signed and re-sealed modes), RotationMessage",
        run: run, seeds: seeds)

    static let f = TrustFixture.self
    static let nowMs: Int64 = 1_800_000_000_000
    /// The answering member.
    static let memberName = "n1"
    static var memberIdentity: SigningIdentity { f.identities[1] }
    /// What n1 knows: n2 (asks), n3 (left), newcomer.
    static var members: [KnownMember] {
        [KnownMember(name: "n2", identity: f.identities[2].publicKey, left: false),
         KnownMember(name: f.names[f.left], identity: f.identities[f.left].publicKey, left: true),
         KnownMember(name: f.names[f.newcomer], identity: f.identities[f.newcomer].publicKey, left: false)]
    }
    static let generations = Dictionary(uniqueKeysWithValues: TrustFixture.keyring.keys.enumerated().map { ($1.id, UInt64(2 - $0)) })
    /// n2's one-time key for its request.
    static let ephemeral = TrustFixture.key(0xE5)
    static let request = KeyringRequest(clusterID: TrustFixture.clusterID, node: "n2", ephemeral: ephemeral, issuedAt: nowMs,
                                        identity: TrustFixture.identities[2])

    static func run(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let body = Array(data.dropFirst())
        switch first % 6 {
        case 0: if let r = decode(KeyringRequest.self, body) { answer(r, resigned: false) }
        case 1: if let r = decode(KeyringRequest.self, body) { answer(resign(r), resigned: true) }
        case 2: if let a = decode(KeyringAnswer.self, body) { open(a) }
        case 3: open(answer(sealing: body))
        case 4: if let m = decode(RotationMessage.self, body) { verify(m, resigned: false) }
        default: if let m = decode(RotationMessage.self, body) { verify(resign(m), resigned: true) }
        }
    }

    /// Decodes JSON; what decodes encodes to JSON that decodes to the same value.
    static func decode<T: Codable & Equatable>(_ type: T.Type, _ body: [UInt8]) -> T? {
        guard let value = try? JSONDecoder().decode(T.self, from: Data(body)) else { return nil }
        let json = try! JSONEncoder().encode(value)
        require((try? JSONDecoder().decode(T.self, from: json)) == value, "a \(T.self) re-encoded decodes differently")
        return value
    }

    // The signed bytes, as the messages make them (checked against their own signing by `seeds`).
    static func requestBytes(_ r: KeyringRequest) -> [UInt8] {
        Array("wiremesh-keyring-request-v1\n\(TrustFixture.clusterID)\n\(r.node)\n\(r.ephemeralKey)\n\(r.issuedAt)".utf8)
    }

    static func answerBytes(_ sealed: String) -> [UInt8] {
        Array("wiremesh-keyring-answer-v1\n\(request.signature)\n\(sealed)".utf8)
    }

    static func base64(_ s: Signature) -> String { Data(s.bytes).base64EncodedString() }
    static func signature(_ text: String) -> Signature? { Data(base64Encoded: text).flatMap { try? Signature(bytes: Array($0)) } }

    /// The request signed by the fixture key of the node it names (or n2's when the name is unknown).
    static func resign(_ r: KeyringRequest) -> KeyringRequest {
        var r = r
        let i = f.names.firstIndex(of: r.node) ?? 2
        r.signature = base64(f.identities[i].sign(requestBytes(r)))
        return r
    }

    /// n1 answers only what a member it knows signed; the answer opens to its keyring and list.
    static func answer(_ request: KeyringRequest, resigned: Bool) {
        let answer: KeyringAnswer
        do {
            answer = try KeyringAnswer.answer(request, clusterID: f.clusterID, members: members, keyring: f.keyring, generations: generations,
                                              identity: memberIdentity, name: memberName, nowMs: nowMs, revocations: f.revocations)
        } catch {
            require(!error.message.isEmpty, "a refusal without a reason")
            if error.code == .unknownMember { require(!resigned || !members.contains { $0.name == request.node }, "refused a member's own signature") }
            return
        }
        guard let known = members.first(where: { $0.name == request.node }), !known.left else {
            fatalError("invariant broken: answered '\(request.node)', which is not a member that may ask")
        }
        require(abs(Double(nowMs) - Double(request.issuedAt)) <= Double(RotationMessage.maxSkewMs), "answered a stale request")
        require(signature(request.signature).map { known.identity.verify($0, over: requestBytes(request)) } == true,
                "answered a request its member did not sign")
        guard let mine = try? Key(base64: request.ephemeralKey), mine == ephemeral.publicKey() else { return }
        do {
            let opened = try answer.openAll(for: request, ephemeral: ephemeral, memberIdentity: memberIdentity.publicKey, clusterID: f.clusterID)
            require(opened.keys.map { $0.key } == f.keyring.keys && opened.keys.map { $0.tag.generation } == [2, 1], "the answer opens to another keyring")
            require(opened.revocations == f.revocations, "the answer opens to another revocation list")
        } catch {
            fatalError("invariant broken: the requester cannot open a genuine answer: \(error)")
        }
        require((try? answer.openAll(for: request, ephemeral: ephemeral, memberIdentity: f.identities[2].publicKey, clusterID: f.clusterID)) == nil,
                "an answer opened with another member's identity")
    }

    /// An answer whose sealed payload is `plaintext`, sealed to the request's key and signed by n1.
    static func answer(sealing plaintext: [UInt8]) -> KeyringAnswer {
        let sealed = Data(SealedBox.seal(plaintext, to: ephemeral.publicKey())).base64EncodedString()
        return KeyringAnswer(node: memberName, sealed: sealed, signature: base64(memberIdentity.sign(answerBytes(sealed))))
    }

    /// The requester opens only n1's answer; a revocation list it then verifies is the authority's.
    static func open(_ answer: KeyringAnswer) {
        let opened: (keys: [(key: ClusterKey, tag: ClusterKeyTag)], revocations: RevocationList?)
        do {
            opened = try answer.openAll(for: request, ephemeral: ephemeral, memberIdentity: memberIdentity.publicKey, clusterID: f.clusterID)
        } catch {
            require(error.code == .badAnswer && !error.message.isEmpty, "openAll failed with \(error.code)")
            return
        }
        require(!opened.keys.isEmpty, "opened an answer without keys")
        guard let list = opened.revocations else { return }
        require((try? RevocationList(decoding: list.encoded)) == list, "an opened list does not re-encode to itself")
        if list.verify(clusterID: f.clusterID, authority: f.authority.publicKey) {
            require(TrustFixture.knownLists.contains(list.encoded), "a revocation list the authority never signed verifies")
        }
        var trust = f.trust
        if trust.adopt(list) { require(TrustFixture.knownLists.contains(list.encoded), "adopted a list the authority never signed") }
    }

    static func resign(_ m: RotationMessage) -> RotationMessage {
        var m = m
        let i = f.names.firstIndex(of: m.node) ?? 2
        m.signature = base64(f.identities[i].sign(RotationMessage.signedBytes(phase: m.rotation, node: m.node, oldKey: m.oldKey,
                                                                               newKey: m.newKey, issuedAt: m.issuedAt)))
        return m
    }

    /// Accepted only when signed by n2's identity, fresh, and naming two different valid keys.
    static func verify(_ m: RotationMessage, resigned: Bool) {
        let keys: (old: Key, new: Key)
        do {
            keys = try m.verified(by: f.identities[2].publicKey, nowMs: nowMs)
        } catch {
            require(!error.description.isEmpty, "a refusal without a reason")
            return
        }
        let signed = RotationMessage.signedBytes(phase: m.rotation, node: m.node, oldKey: m.oldKey, newKey: m.newKey, issuedAt: m.issuedAt)
        require(signature(m.signature).map { f.identities[2].publicKey.verify($0, over: signed) } == true, "accepted a message n2 did not sign")
        require(abs(Double(nowMs) - Double(m.issuedAt)) <= Double(RotationMessage.maxSkewMs), "accepted a stale rotation message")
        require(keys.old != keys.new && keys.old.base64 == m.oldKey && keys.new.base64 == m.newKey, "accepted keys the message does not name")
    }

    static func seeds() throws -> [[UInt8]] {
        func json<T: Encodable>(_ v: T) throws -> [UInt8] { Array(try JSONEncoder().encode(v)) }
        // The target's signed bytes are the messages' own.
        guard resign(request) == request else { throw FuzzSeedError("keyring request signing drifted") }
        let answer = try KeyringAnswer.answer(request, clusterID: f.clusterID, members: members, keyring: f.keyring, generations: generations,
                                              identity: memberIdentity, name: memberName, nowMs: nowMs, revocations: f.revocations)
        let plaintext = try SealedBox.open(Array(Data(base64Encoded: answer.sealed)!), privateKey: ephemeral)
        _ = try self.answer(sealing: plaintext).openAll(for: request, ephemeral: ephemeral, memberIdentity: memberIdentity.publicKey,
                                                        clusterID: f.clusterID)
        let left = KeyringRequest(clusterID: f.clusterID, node: f.names[f.left], ephemeral: ephemeral, issuedAt: nowMs - 5000,
                                  identity: f.identities[f.left])
        let stale = KeyringRequest(clusterID: f.clusterID, node: "n2", ephemeral: f.key(0xE6), issuedAt: nowMs - 600_000,
                                   identity: f.identities[2])
        let prepare = RotationMessage(phase: .prepare, node: "n2", oldKey: f.key(0xD2).publicKey(), newKey: f.key(0xE2).publicKey(),
                                      issuedAt: nowMs - 1000, identity: f.identities[2])
        guard resign(prepare) == prepare else { throw FuzzSeedError("rotation signing drifted") }
        let switchTo = RotationMessage(phase: .switch, node: "n2", oldKey: f.key(0xD2).publicKey(), newKey: f.key(0xE2).publicKey(),
                                       issuedAt: nowMs + 1000, identity: f.identities[2])
        let noList = Array(#"{"cluster_id":"c0ffee00c0ffee00","keys":[{"key":"\#(f.keyring.keys[0].key.base64)","generation":3}]}"#.utf8)
        return [
            [0] + (try json(request)),
            [0] + (try json(left)),
            [1] + (try json(request)),
            [1] + (try json(stale)),
            [2] + (try json(answer)),
            [3] + plaintext,
            [3] + noList,
            [4] + (try json(prepare)),
            [5] + (try json(switchTo)),
        ]
    }
}

/// A seed could not be made (the target's copy of a format drifted from the project's).
struct FuzzSeedError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
