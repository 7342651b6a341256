"""The ADS gRPC server and the xDS protocol state of its streams."""
