#if os(Linux)
import Foundation
import Testing
@testable import WireMeshAgent

@Suite struct ProcessMemoryTests {
    /// /proc/self/maps: (start, end, permissions) of every mapping.
    func mappings() throws -> [(start: UInt, end: UInt, perms: String)] {
        // Read to the end by hand: procfs reports a size of 0, and this file is longer than one read.
        let fd = open("/proc/self/maps", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            let bounds = fields[0].split(separator: "-")
            guard let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16) else { return nil }
            return (start, end, String(fields[1]))
        }
    }

    @Test func dropsOnlyReadOnlyPagesOfTheExecutable() throws {
        let ranges = ProcessMemory.readOnlyImageRanges()
        #expect(!ranges.isEmpty, "the test executable has read-only load segments")
        let maps = try mappings()
        // The executable's code is among them.
        #expect(ranges.contains { r in maps.contains { $0.start <= r.start && r.start < $0.end && $0.perms.contains("x") } })
        for range in ranges {
            #expect(range.start < range.end && range.start % 4096 == 0 && range.end % 4096 == 0)
            // Every mapping a range touches is not writable, so no data or relocated table (relro:
            // written at load, then made read-only) can be thrown away. (A segment may have unmapped
            // holes: madvise skips those.)
            let touched = maps.filter { $0.start < range.end && range.start < $0.end }
            #expect(!touched.isEmpty, "nothing mapped at \(String(range.start, radix: 16))")
            for m in touched {
                #expect(!m.perms.contains("w"), "writable mapping \(m.perms) at \(String(m.start, radix: 16))")
            }
        }
    }

    @Test func codeRunsAfterDroppingAndTheHeapIsTrimmed() throws {
        ProcessMemory.limitArenas()
        var blocks: [[UInt8]] = (0..<64).map { _ in [UInt8](repeating: 1, count: 64 * 1024) }
        blocks.removeAll()
        ProcessMemory.releaseFreed()
        let dropped = ProcessMemory.dropStartupPages()
        #expect(dropped > 1 << 20, "dropped \(dropped) bytes")
        // The code and constant tables come back from the page cache on use.
        let text = String(decoding: try JSONEncoder().encode(["after": [1, 2, 3]]), as: UTF8.self)
        #expect(text == #"{"after":[1,2,3]}"#)
        #expect(blocks.isEmpty)
    }
}
@Suite struct PageReleasePolicyTests {
    let t0 = ContinuousClock.now
    func at(_ seconds: Int) -> ContinuousClock.Instant { t0 + .seconds(seconds) }
    func release(_ policy: inout PageReleasePolicy, _ seconds: Int) -> Bool { policy.shouldRelease(at: at(seconds)) }

    @Test func firstReleaseOnceTheMeshIsSteadyAfterStart() {
        var policy = PageReleasePolicy(start: t0)
        #expect(!release(&policy, 10))
        policy.meshChanged(peers: 3, at: at(20))
        #expect(!release(&policy, 40), "only 20 s since the last change")
        #expect(release(&policy, 50))
        #expect(!release(&policy, 60), "once; nothing changed since")
    }

    @Test func againOnlyAfterALargeChangeAndNotTooOften() {
        var policy = PageReleasePolicy(start: t0)
        #expect(release(&policy, 30))
        policy.meshChanged(peers: 40, at: at(40))
        #expect(!release(&policy, 500), "40 peers is not a large change")
        policy.meshChanged(peers: 60, at: at(510))     // 100 in all since the release
        #expect(!release(&policy, 530), "not steady yet")
        #expect(release(&policy, 540))
        policy.meshChanged(peers: 1000, at: at(550))
        #expect(!release(&policy, 600), "steady, but only 60 s since the last release")
        #expect(release(&policy, 660))
        #expect(policy.changedSinceRelease == 0)
    }
}
#endif
