"""The xDS resource types this control plane serves, in the order a change must reach Envoy.

Make-before-break: secrets before the clusters and listeners that use them, clusters before
the endpoints that fill them, both before the listeners and routes that send traffic to them
(envoy api-docs xds_protocol, "eventual consistency").
"""

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# Virtual hosts on their own (VHDS): delta xDS only. A delta proxy's plain route configurations
# hold no virtual hosts, only where to find them, so a one-Route change sends one virtual host.
VIRTUAL_HOST = "type.googleapis.com/envoy.config.route.v3.VirtualHost"

PUSH_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST)
SHORT_NAMES = {SECRET: "SDS", CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS", VIRTUAL_HOST: "VHDS"}
# For these, a SotW response carries every resource and absence means deletion; for the
# others a response carries only what was asked for (xds_protocol, "resource types").
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER})
