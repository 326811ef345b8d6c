// WireGuardKernel module.
