"""The xDS side: immutable per-group snapshots and their cache, the ADS gRPC server, the protocol state of its streams, and the registry of connected proxies."""
