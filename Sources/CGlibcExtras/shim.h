// glibc interfaces the Glibc module does not export: the allocator's controls (mallopt, malloc_trim)
// and the loaded program headers (dl_iterate_phdr, a GNU extension).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <link.h>
