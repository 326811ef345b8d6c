// Netlink module.
