#ifndef WIREMESH_CMNL_SHIM_H
#define WIREMESH_CMNL_SHIM_H
// libmnl plus the kernel netlink headers; macros Swift cannot import get
// tiny static inline wrappers prefixed wm_.
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/wireguard.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>

static inline size_t wm_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline size_t wm_mnl_align(size_t len) { return MNL_ALIGN(len); }
static inline size_t wm_nla_hdrlen(void) { return MNL_ATTR_HDRLEN; }
#endif
