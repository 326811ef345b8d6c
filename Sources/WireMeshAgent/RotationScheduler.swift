import Foundation
import MeshPlan
import ServiceLifecycle

/// Runs `rotate-key` by itself when `--key-rotation-interval` is set (the decision is the pure
/// `KeyRotationSchedule`; this is the clock).
struct RotationScheduler: Service {
    let agent: Agent

    func run() async throws {
        // A shutdown cutting a rotation short is safe: every phase survives a crash (rotation e2e, "crash").
        // Off (the default): nothing to wake up for.
        guard await agent.rotationSchedule != nil else {
            try? await gracefulShutdown()
            return
        }
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(1))
                await agent.scheduledRotationTick()
            }
        }
    }
}

extension Agent {
    /// The schedule from the configuration, nil when scheduled rotation is off.
    var rotationSchedule: KeyRotationSchedule? {
        guard let interval = config.keyRotationInterval else { return nil }
        let c = interval.components
        return KeyRotationSchedule(interval: Double(c.seconds) + Double(c.attoseconds) / 1e18)
    }

    /// What the schedule says now (nil: off).
    func scheduledRotation(now: Date = Date()) -> KeyRotationSchedule.Decision? {
        rotationSchedule?.decide(now: now.timeIntervalSince1970,
                                 keyCreatedAt: state.wireGuardKeyCreatedAt.timeIntervalSince1970,
                                 node: state.node.name, key: state.wireGuardKey.publicKey(),
                                 agentStartedAt: rotation.startedAt.timeIntervalSince1970,
                                 lastFailure: rotation.lastScheduledFailure?.timeIntervalSince1970)
    }

    /// When the next scheduled rotation runs, for `status` (nil: off).
    var nextScheduledRotation: Date? {
        switch scheduledRotation() {
        case nil: return nil
        case .rotate: return Date()
        case .wait(let until): return Date(timeIntervalSince1970: until)
        }
    }

    /// One tick of the scheduler: rotates when the schedule says so.
    func scheduledRotationTick() async {
        guard scheduledRotation() == .rotate, transport != nil, !rotation.inProgress, !leaving else { return }
        logger.info("scheduled key rotation", metadata: ["key_created_at": "\(state.wireGuardKeyCreatedAt)"])
        do {
            _ = try await rotateKey()
            rotation.lastScheduledFailure = nil
        } catch {
            rotation.lastScheduledFailure = Date()
            logger.error("scheduled key rotation failed (retried later): \(error)")
        }
    }
}
