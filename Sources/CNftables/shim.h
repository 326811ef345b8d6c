#ifndef WIREMESH_CNFTABLES_SHIM_H
#define WIREMESH_CNFTABLES_SHIM_H
// nftables' own library (Debian's libnftables1), loaded with dlopen only while the agent uses it: linked
// in, it and its dependencies stayed mapped and dirty in every agent (+7 MiB idle RSS, BENCHMARKS.md).
// The declarations come from libnftables-dev's header; nothing here links against it.
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <nftables/libnftables.h>
#include <linux/netlink.h>

typedef struct {
    void *handle;
    struct nft_ctx *(*ctx_new)(uint32_t flags);
    void (*ctx_free)(struct nft_ctx *ctx);
    int (*buffer_output)(struct nft_ctx *ctx);
    int (*buffer_error)(struct nft_ctx *ctx);
    const char *(*get_output_buffer)(struct nft_ctx *ctx);
    const char *(*get_error_buffer)(struct nft_ctx *ctx);
    void (*output_set_flags)(struct nft_ctx *ctx, unsigned int flags);
    int (*run_cmd_from_buffer)(struct nft_ctx *nft, const char *buf);
} wm_nft_api;

// Loads the library and its entry points; 0 on success, -1 with dlerror() saying why.
static inline int wm_nft_open(wm_nft_api *api) {
    memset(api, 0, sizeof *api);
    api->handle = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!api->handle) return -1;
#define WM_NFT_SYM(field, name) if (!(*(void **)&api->field = dlsym(api->handle, name))) { dlclose(api->handle); api->handle = 0; return -1; }
    WM_NFT_SYM(ctx_new, "nft_ctx_new")
    WM_NFT_SYM(ctx_free, "nft_ctx_free")
    WM_NFT_SYM(buffer_output, "nft_ctx_buffer_output")
    WM_NFT_SYM(buffer_error, "nft_ctx_buffer_error")
    WM_NFT_SYM(get_output_buffer, "nft_ctx_get_output_buffer")
    WM_NFT_SYM(get_error_buffer, "nft_ctx_get_error_buffer")
    WM_NFT_SYM(output_set_flags, "nft_ctx_output_set_flags")
    WM_NFT_SYM(run_cmd_from_buffer, "nft_run_cmd_from_buffer")
#undef WM_NFT_SYM
    return 0;
}

static inline void wm_nft_close(wm_nft_api *api) {
    if (api->handle) dlclose(api->handle);
    api->handle = 0;
}

static inline const char *wm_dlerror(void) { return dlerror(); }

// NFT_CTX_DEFAULT is a macro (not importable into Swift).
static inline unsigned int wm_nft_ctx_default(void) { return NFT_CTX_DEFAULT; }
// The netlink family libnftables talks to the kernel with.
static inline int wm_netlink_netfilter(void) { return NETLINK_NETFILTER; }
#endif
