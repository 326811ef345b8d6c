import Foundation
import LinePort
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
                logger.notice("refused rotation message: \(error)", metadata: ["from": "\(message.node)"])
                return .refused(.rotation(error as? RotationRefusal ?? RotationRefusal("\(error)")))
            }
        case .keyring(let keyring):
            return await answerKeyring(keyring)
        }
    }

    /// Hands the keyring to a member that signs for itself (see `KeyringAnswer.answer`).
    func answerKeyring(_ request: KeyringRequest) async -> LineReply {
        // Only the member the request names: nothing is copied for a stranger's request.
        let known: [KnownMember] = await currentMembers().first { $0.name == request.node }.map { m in
            let left = if case .left = m.status { true } else { false }
            return [KnownMember(name: m.name, identity: m.record.record.identity, left: left)]
        } ?? []
        let generations = Dictionary(state.clusterKeys.entries.map { ($0.id, $0.generation ?? 0) }, uniquingKeysWith: { a, _ in a })
        do throws(KeyringRefusal) {
            let answer = try KeyringAnswer.answer(request, clusterID: state.clusterID, members: known, keyring: state.keyring,
                                                  generations: generations, identity: state.identity, name: state.node.name,
                                                  nowMs: clock.wallMs)
            logger.info("handed the cluster keyring to a member", metadata: ["node": "\(request.node)"])
            return .keyring(answer)
        } catch {
            logger.notice("refused a keyring request", metadata: ["node": "\(request.node)", "error": "\(error.message)"])
            return .refused(.keyring(error))
        }
    }
}
