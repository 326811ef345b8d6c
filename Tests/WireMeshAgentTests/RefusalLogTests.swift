import Testing
@testable import WireMeshAgent

/// Line-port refusals in the log: a stranger's flood of bad requests writes a line per window, not one
/// per request (issue 10: 9000 bad-MAC join lines made 9000 log lines).
@Suite struct RefusalLogTests {
    @Test func theFirstOfAKindIsLoggedTheRestCountedUntilTheWindowEnds() {
        var log = RefusalLog()
        let t0 = ContinuousClock.now
        #expect(log.shouldLog("join/authentication", now: t0) == 0)
        for i in 1...500 { #expect(log.shouldLog("join/authentication", now: t0 + .milliseconds(i)) == nil) }
        // Another reason is not hidden by the flood.
        #expect(log.shouldLog("join/exhausted", now: t0 + .seconds(1)) == 0)
        // After the window, one line again, saying how many were left out.
        #expect(log.shouldLog("join/authentication", now: t0 + RefusalLog.window) == 500)
        #expect(log.shouldLog("join/authentication", now: t0 + RefusalLog.window + .seconds(1)) == nil)
    }
}
