import Foundation
import LinePort
import Logging
import Membership
import WireMeshCrypto

extension Agent {
    /// One request on the line port, decoded once by `LineServer`: each kind to its handler.
    func answer(_ request: LineRequest) async -> LineReply {
        switch request {
        case .join(let join):
            return await admit(join)
        case .rotation(let message):
            do {
                try await handleRotation(message)
                return .rotated(node: state.node.name)
            } catch {
                let refusal = error as? RotationRefusal ?? RotationRefusal("\(error)")
                noteRefusal("rotation", code: refusal == .unknownSender ? "unknown-sender" : "other",
                            "refused rotation message: \(error)", metadata: ["from": "\(message.node)"])
                return .refused(.rotation(refusal))
            }
        case .keyring(let keyring):
            return await answerKeyring(keyring)
        case .pushPull(let envelope):
            guard let transport else { return .refused(.pushPull("this member's gossip is not running yet")) }
            let reply = await transport.answerPushPull(envelope)
            if case .refused(let why) = reply { noteRefusal("push-pull", code: "refused", "refused a push/pull request: \(why)") }
            return reply
        case .streamProbe(let envelope):
            guard let transport else { return .refused(.streamProbe("this member's gossip is not running yet")) }
            return await transport.answerStreamProbe(envelope)
        }
    }

    /// Hands the keyring to a member that signs for itself (see `KeyringAnswer.answer`).
    func answerKeyring(_ request: KeyringRequest) async -> LineReply {
        // An evicted node is gone from the view, so it would be "unknown": tell it what happened, but
        // only when the request is signed by the evicted identity (a stranger learns no name).
        if let evicted = state.revocations?.entries.first(where: { $0.name == request.node }),
           request.isSigned(by: evicted.identity, clusterID: state.clusterID) {
            logger.notice("refused a keyring request from an evicted node", metadata: ["node": "\(request.node)"])
            return .refused(.keyring(KeyringRefusal(code: .evicted, message: "node '\(request.node)' was evicted from the cluster")))
        }
        // Only the member the request names: nothing is copied for a stranger's request.
        let known: [KnownMember] = await currentMembers().first { $0.name == request.node }.map { m in
            let left = if case .left = m.status { true } else { false }
            return [KnownMember(name: m.name, identity: m.record.record.identity, left: left)]
        } ?? []
        let generations = Dictionary(state.clusterKeys.entries.map { ($0.id, $0.generation ?? 0) }, uniquingKeysWith: { a, _ in a })
        do throws(KeyringRefusal) {
            let answer = try KeyringAnswer.answer(request, clusterID: state.clusterID, members: known, keyring: state.keyring,
                                                  generations: generations, identity: state.identity, name: state.node.name,
                                                  nowMs: clock.wallMs, revocations: state.revocations)
            logger.info("handed the cluster keyring to a member", metadata: ["node": "\(request.node)"])
            return .keyring(answer)
        } catch {
            noteRefusal("keyring", code: error.code.rawValue, "refused a keyring request",
                        metadata: ["node": "\(request.node)", "error": "\(error.message)"])
            return .refused(.keyring(error))
        }
    }
}

extension Agent {
    /// Logs a refused line-port request (kind: join, rotation, keyring; code: why), at most once per
    /// kind and code every `RefusalLog.window`: anyone can send requests that fail their MAC or
    /// signature, and a flood of them must not become a flood of log lines. The metrics count each.
    func noteRefusal(_ kind: String, code: String, _ message: String, metadata: Logger.Metadata = [:]) {
        guard let suppressed = refusalLog.shouldLog(kind + "/" + code, now: clock.monotonic()) else { return }
        var metadata = metadata
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        logger.notice("\(message)\(suppressed > 0 ? " (and \(suppressed) more like it since the last such line)" : "")",
                      metadata: metadata)
    }
}

/// Which refusals were logged when: the first of each key in a window is logged, the rest are counted
/// and reported with the next one logged.
struct RefusalLog {
    /// At most one line per key this often.
    static let window: Duration = .seconds(10)
    private var lastLogged: [String: ContinuousClock.Instant] = [:]
    private var suppressed: [String: Int] = [:]

    /// nil: do not log this one (it is counted); else log it, saying how many were left out before it.
    mutating func shouldLog(_ key: String, now: ContinuousClock.Instant) -> Int? {
        if let last = lastLogged[key], now - last < Self.window {
            suppressed[key, default: 0] += 1
            return nil
        }
        // Forget keys not seen for a while, so that many distinct keys cannot grow this without bound.
        if lastLogged.count > 64 {
            lastLogged = lastLogged.filter { now - $0.value < Self.window }
            suppressed = suppressed.filter { lastLogged[$0.key] != nil }
        }
        lastLogged[key] = now
        return suppressed.removeValue(forKey: key) ?? 0
    }
}
