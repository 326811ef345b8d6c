// WireGuard module.
