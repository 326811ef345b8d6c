#ifndef WIREMESH_CNFTABLES_SHIM_H
#define WIREMESH_CNFTABLES_SHIM_H
// nftables' own library (Debian's libnftables-dev): takes nft commands or JSON, as the nft tool does.
#include <nftables/libnftables.h>
#include <linux/netlink.h>

// NFT_CTX_DEFAULT is a macro (not importable into Swift).
static inline unsigned int wm_nft_ctx_default(void) { return NFT_CTX_DEFAULT; }
// The netlink family libnftables talks to the kernel with.
static inline int wm_netlink_netfilter(void) { return NETLINK_NETFILTER; }
#endif
