// WireMeshAgent module.
