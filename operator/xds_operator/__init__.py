"""xds-operator: an Envoy xDS control plane that runs as a Kubernetes operator or from files."""
