import Foundation

/// Runs blocking code (a synchronous client, a script that takes minutes) on a thread of its own, so
/// it cannot starve Swift's cooperative pool (one thread per core: two here), where every other test's
/// tasks run. Tests that blocked there made unrelated async tests time out when suites ran in parallel.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
        thread.start()
    }
}
