#if canImport(CMalloc)
import CMalloc
#endif

/// The agent runs for months and is idle most of the time: keep glibc's allocator from holding
/// memory the agent no longer uses.
enum ProcessMemory {
    /// Caps malloc arenas. glibc gives threads that contend for the heap arenas of their own (up to
    /// 8 per core), and each keeps its high-water mark; the agent's threads (NIO loop, Dispatch,
    /// Swift's pool) allocate little and never in parallel for long.
    static func limitArenas(to count: Int32 = 2) {
        #if canImport(CMalloc)
        _ = mallopt(M_ARENA_MAX, count)
        #endif
    }

    /// Returns freed heap pages to the kernel: a reconcile pass over a large view allocates and
    /// frees megabytes that would otherwise stay resident until the next pass.
    static func releaseFreed() {
        #if canImport(CMalloc)
        _ = malloc_trim(0)
        #endif
    }
}
