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
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>

static inline size_t wm_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline size_t wm_mnl_align(size_t len) { return MNL_ALIGN(len); }
static inline size_t wm_nla_hdrlen(void) { return MNL_ATTR_HDRLEN; }

// Netlink constants that are macros (not importable into Swift).
static inline uint16_t wm_nla_f_nested(void) { return NLA_F_NESTED; }
static inline uint16_t wm_nla_type_mask(void) { return NLA_TYPE_MASK; }
static inline int wm_mnl_cb_ok(void) { return MNL_CB_OK; }
static inline int wm_mnl_cb_stop(void) { return MNL_CB_STOP; }
static inline int wm_mnl_cb_error(void) { return MNL_CB_ERROR; }
static inline unsigned int wm_mnl_socket_autopid(void) { return MNL_SOCKET_AUTOPID; }

// setns(2) for a dedicated thread: glibc declares it only under _GNU_SOURCE.
#include <unistd.h>
#include <sys/syscall.h>
static inline int wm_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int wm_clone_newnet(void) { return 0x40000000; /* CLONE_NEWNET */ }
#endif
