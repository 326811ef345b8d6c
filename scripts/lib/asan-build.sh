# Sourced by scripts/sanitize and scripts/fuzz: the one ASan build both use. AddressSanitizer plus the
# coverage instrumentation that -sanitize=fuzzer adds (checked against its IR on Swift 6.3.1; only
# its extra stack-depth tracking has no -sanitize-coverage spelling), so the same objects run the
# unit suites under ASan and, relinked with libFuzzer, the fuzz targets: one build instead of two.
ASAN_SCRATCH=.build-asan
ASAN_BUILD_FLAGS=(--scratch-path "$ASAN_SCRATCH" --sanitize=address
  -Xswiftc -sanitize-coverage=edge,indirect-calls,trace-cmp,inline-8bit-counters,pc-table)
