#if canImport(CGlibcExtras)
import CGlibcExtras
import Glibc
#endif

/// The agent runs for months and is idle most of the time: keep it from holding memory it no
/// longer uses.
enum ProcessMemory {
    /// Caps malloc arenas. glibc gives threads that contend for the heap arenas of their own (up to
    /// 8 per core), and each keeps its high-water mark; the agent's threads (NIO loop, Dispatch,
    /// Swift's pool) allocate little and never in parallel for long.
    static func limitArenas(to count: Int32 = 2) {
        #if canImport(CGlibcExtras)
        _ = mallopt(M_ARENA_MAX, count)
        #endif
    }

    /// Returns freed heap pages to the kernel: a reconcile pass over a large view allocates and
    /// frees megabytes that would otherwise stay resident until the next pass.
    static func releaseFreed() {
        #if canImport(CGlibcExtras)
        _ = malloc_trim(0)
        #endif
    }

    /// Start-up (argument parsing, YAML, state loading, ICU tables Foundation reads once) touches
    /// code and tables across the whole executable, and the kernel maps them in 64 KB+ chunks that
    /// then stay in the agent's page tables for its lifetime; so do the libraries' symbol tables read
    /// while linking. This releases the read-only load segments of the executable and its libraries
    /// (code, symbol and metadata tables: clean pages of the files, never written): pages
    /// only this process maps are reclaimed, shared ones unmapped from it; what the agent still runs
    /// faults back in. Writable segments (data, relocated tables) are left alone.
    /// Returns the bytes advised.
    @discardableResult
    static func dropStartupPages() -> Int {
        #if canImport(CGlibcExtras)
        var total = 0
        for range in readOnlyImageRanges() {
            let start = UnsafeMutableRawPointer(bitPattern: range.start), length = Int(range.end - range.start)
            // Reclaim what only this process maps (the page cache copy too: memory really freed; what
            // runs again is read back in small pieces), then unmap what other processes share.
            _ = madvise(start, length, madvisePageout)
            if madvise(start, length, MADV_DONTNEED) == 0 { total += length }
        }
        return total
        #else
        return 0
        #endif
    }

    #if canImport(CGlibcExtras)
    /// MADV_PAGEOUT (Linux 5.4; older kernels refuse it with EINVAL, which is harmless here).
    static let madvisePageout: Int32 = 21

    /// Page ranges (inside the segment, never a page shared with another one) of the loadable segments
    /// of the executable and its libraries that are neither writable nor made read-only after
    /// relocation.
    static func readOnlyImageRanges() -> [(start: UInt, end: UInt)] {
        var ranges: [(start: UInt, end: UInt)] = []
        withUnsafeMutablePointer(to: &ranges) { out in
            _ = wiremesh_dl_iterate_phdr({ info, _, data in
                guard let info, let data else { return 1 }
                let out = data.assumingMemoryBound(to: [(start: UInt, end: UInt)].self)
                let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
                let image = info.pointee
                // The vDSO is the kernel's, not a file.
                if let name = image.dlpi_name, strstr(name, "linux-vdso") != nil { return 0 }
                var relro: [(UInt, UInt)] = []
                for k in 0..<Int(image.dlpi_phnum) where image.dlpi_phdr[k].p_type == UInt32(PT_GNU_RELRO) {
                    let ph = image.dlpi_phdr[k]
                    relro.append((UInt(image.dlpi_addr) + UInt(ph.p_vaddr), UInt(image.dlpi_addr) + UInt(ph.p_vaddr + ph.p_memsz)))
                }
                for k in 0..<Int(image.dlpi_phnum) {
                    let ph = image.dlpi_phdr[k]
                    guard ph.p_type == UInt32(PT_LOAD), ph.p_flags & UInt32(PF_W) == 0 else { continue }
                    let low = UInt(image.dlpi_addr) + UInt(ph.p_vaddr)
                    let start = (low + page - 1) & ~(page - 1)
                    let end = (low + UInt(ph.p_memsz)) & ~(page - 1)
                    guard end > start, !relro.contains(where: { $0.0 < end && start < $0.1 }) else { continue }
                    out.pointee.append((start, end))
                }
                return 0  // every loaded object: the executable, then libc, libstdc++, libsodium...
            }, out)
        }
        return ranges
    }
    #endif
}

/// When the agent releases its start-up pages: once the mesh has needed no change for `steadyAfter`,
/// first after start, then again only after a change of at least `largeChange` peers and at most every
/// `minimumInterval`. Pure: the caller passes the time.
struct PageReleasePolicy {
    var steadyAfter: Duration = .seconds(30)
    var largeChange = 100
    var minimumInterval: Duration = .seconds(120)
    private(set) var lastChange: ContinuousClock.Instant
    private(set) var changedSinceRelease = 0
    private(set) var lastRelease: ContinuousClock.Instant?

    init(start: ContinuousClock.Instant) { lastChange = start }

    /// A reconcile pass changed the device (`peers` peers) or the routes.
    mutating func meshChanged(peers: Int, at now: ContinuousClock.Instant) {
        lastChange = now
        changedSinceRelease += peers
    }

    /// True when the pages should be released now; records the release.
    mutating func shouldRelease(at now: ContinuousClock.Instant) -> Bool {
        guard now - lastChange >= steadyAfter else { return false }
        if let last = lastRelease {
            guard changedSinceRelease >= largeChange, now - last >= minimumInterval else { return false }
        }
        lastRelease = now
        changedSinceRelease = 0
        return true
    }
}
