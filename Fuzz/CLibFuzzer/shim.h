#ifndef WIREMESH_CLIBFUZZER_SHIM_H
#define WIREMESH_CLIBFUZZER_SHIM_H
#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry point for programs with their own main (libclang_rt.fuzzer_no_main). Weak, so
// one build serves both: scripts/fuzz links libFuzzer in (and forces this symbol with -u), a plain
// build does not and the address is null.
int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*callback)(const uint8_t *data, size_t size)) __attribute__((weak));

static inline int wm_libfuzzer_linked(void) { return LLVMFuzzerRunDriver != NULL; }
#endif
