#if os(Linux)
import Foundation
import Testing
@testable import WireMeshAgent

@Suite struct ProcessMemoryTests {
    /// /proc/self/maps: (start, end, permissions) of every mapping.
    func mappings() throws -> [(start: UInt, end: UInt, perms: String)] {
        try String(contentsOfFile: "/proc/self/maps", encoding: .utf8).split(separator: "\n").compactMap { line in
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
            // Every page of every range sits in mappings that are not writable, so no data or relocated
            // table (relro: written at load, then made read-only) can be thrown away.
            var at = range.start
            while at < range.end {
                let m = try #require(maps.first { $0.start <= at && at < $0.end }, "no mapping at \(String(at, radix: 16))")
                #expect(!m.perms.contains("w"), "writable mapping \(m.perms) at \(String(at, radix: 16))")
                at = m.end
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
#endif
