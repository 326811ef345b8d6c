// glibc interfaces the Glibc module does not export: the allocator's controls (mallopt, malloc_trim)
// and the loaded program headers (dl_iterate_phdr). <link.h> declares the latter only under
// _GNU_SOURCE, which would change libc types seen by other modules: declared here with the leading
// fields of glibc's struct dl_phdr_info (the callback is told the real size).
#include <malloc.h>
#include <elf.h>
#include <stddef.h>

struct wiremesh_phdr_info {
    Elf64_Addr dlpi_addr;
    const char *dlpi_name;
    const Elf64_Phdr *dlpi_phdr;
    Elf64_Half dlpi_phnum;
};

int wiremesh_dl_iterate_phdr(int (*callback)(struct wiremesh_phdr_info *info, size_t size, void *data), void *data)
    __asm__("dl_iterate_phdr");
