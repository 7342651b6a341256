"""The Backend spec, declared once: the CRD's schema (api/crd.py renders it) and the model's
validation (api/validation.py reads with it) both come from here."""

from __future__ import annotations

from typing import Any

from . import model
from .fields import DNS_LABEL, DNS_NAME, PATH, Fields
from .route_spec import secret_ref
from .schema import Duration, Enum, Integer, IntOrString, List, Object, Rule, String

PROTOCOLS = ("HTTP1", "HTTP2")
LOAD_BALANCERS = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
TARGETS = ("service", "endpoints", "dns")


def _port(description: str = "The port, 1 to 65535.") -> Integer:
    return Integer(description, minimum=1, maximum=65535)


def _exactly_one_target(spec: dict[str, Any]) -> str | None:
    targets = [k for k in TARGETS if spec.get(k) is not None]
    if len(targets) == 1:
        return None
    return "exactly one of service, endpoints or dns must be set" + (f" (found {', '.join(targets)})" if targets else "")


_SERVICE = Object(
    "A Kubernetes Service in the Backend's namespace. Its ready endpoints (from its EndpointSlices) are "
    "sent to Envoy over EDS and follow the Service's pods. A missing Service is reported in the "
    "ResolvedRefs condition.", {
        "name": String("The Service's name (a lower-case DNS label, RFC 1035).", min_length=1, max_length=63,
                       pattern=DNS_LABEL, what="a lower-case DNS label (RFC 1035)"),
        "port": IntOrString(
            "The Service port, by its number (spec.ports[].port, 1 to 65535) or its name (a lower-case DNS "
            "label). Envoy connects to the pods on the EndpointSlice port of the same name, so the "
            "Service's targetPort is followed.",
            integer=_port(), string=String("", min_length=1, max_length=63, pattern=DNS_LABEL,
                                            what="a lower-case DNS label (RFC 1035)")),
    }, required=("name", "port"),
    build=lambda v: model.ServiceRef(v["name"], v["port"]) if v["name"] and v["port"] else None)

_ENDPOINT = Object(
    "One upstream address and port.", {
        "address": String(
            "An IPv4 or IPv6 address such as 10.0.0.7 or fd00::1 (no zone; no IPv4-mapped IPv6 address, "
            "write the IPv4 address instead). Host names go in spec.dns.",
            min_length=1, max_length=64, parse=Fields.ip_address,
            rules=[Rule("isIP(self)", "must be an IPv4 or IPv6 address (use spec.dns for host names)")]),
        "port": _port(),
    }, required=("address", "port"), null_message="must be an object with address and port",
    build=lambda v: model.StaticEndpoint(v["address"], v["port"]) if v["address"] and v["port"] else None)

_DNS = Object(
    "A DNS name that Envoy resolves itself, preferring IPv4 (an Envoy STRICT_DNS cluster), for upstreams "
    "outside the cluster.", {
        "hostname": String("The name to resolve, a lower-case DNS name (RFC 1123).", min_length=1, max_length=253,
                           pattern=DNS_NAME, what="a lower-case DNS name (RFC 1123)"),
        "port": _port(),
    }, required=("hostname", "port"),
    build=lambda v: model.DnsTarget(v["hostname"], v["port"]) if v["hostname"] and v["port"] else None)

_HEALTH_CHECK = Object(
    "Active HTTP health checking of the endpoints (Envoy Cluster.health_checks): Envoy sends GET path to "
    "each endpoint every interval. An empty object uses all the defaults. Unset: no active health checks.", {
        "path": String("The absolute path to request (default /).", max_length=1024, pattern=PATH,
                       what="an absolute path such as /healthz", default="/"),
        "interval": Duration("The time between checks, a duration from 1ms to 24h (default 10s).",
                             minimum_ms=1, default="10s"),
        "timeout": Duration("How long to wait for a check's response, a duration from 1ms to 24h (default 2s).",
                            minimum_ms=1, default="2s"),
        "healthyThreshold": Integer(
            "Consecutive successful checks before an endpoint is healthy again (1 to 100, default 1).",
            minimum=1, maximum=100, default=1),
        "unhealthyThreshold": Integer(
            "Consecutive failed checks before an endpoint is unhealthy (1 to 100, default 3).",
            minimum=1, maximum=100, default=3),
    }, build=lambda v: model.HealthCheck(v["path"], v["interval"], v["timeout"], v["healthyThreshold"],
                                         v["unhealthyThreshold"]))


def _limit(description: str) -> Integer:
    return Integer(f"{description} (1 to 2147483647).", minimum=1, maximum=2**31 - 1)


_CIRCUIT_BREAKER = Object(
    "Limits on what Envoy sends to this Backend at once (Envoy Cluster.circuit_breakers, default priority). "
    "An unset limit keeps Envoy's default (1024 connections, pending requests and requests; 3 retries).", {
        "maxConnections": _limit("Maximum connections to all endpoints"),
        "maxPendingRequests": _limit("Maximum requests waiting for a connection"),
        "maxRequests": _limit("Maximum requests in flight"),
        "maxRetries": _limit("Maximum retries in flight"),
    }, build=lambda v: model.CircuitBreaker(v["maxConnections"], v["maxPendingRequests"], v["maxRequests"],
                                            v["maxRetries"]))

_OUTLIER_DETECTION = Object(
    "Passive health checking (Envoy Cluster.outlier_detection): endpoints that keep failing are ejected "
    "from load balancing for a while. An empty object uses all the defaults. Unset: no outlier detection.", {
        "consecutive5xx": Integer("Consecutive 5xx responses that eject an endpoint (1 to 1000, default 5).",
                                  minimum=1, maximum=1000, default=5),
        "interval": Duration("The time between ejection sweeps, a duration from 1ms to 24h (default 10s).",
                             minimum_ms=1, default="10s"),
        "baseEjectionTime": Duration(
            "How long an endpoint stays ejected the first time (longer each time it is ejected again), a "
            "duration from 1ms to 24h (default 30s).", minimum_ms=1, default="30s"),
        "maxEjectionPercent": Integer(
            "The most endpoints that may be ejected at once, in percent (0 to 100, default 10).",
            minimum=0, maximum=100, default=10),
    }, build=lambda v: model.OutlierDetection(v["consecutive5xx"], v["interval"], v["baseEjectionTime"],
                                              v["maxEjectionPercent"]))

CA_BUNDLE_KINDS = ("Secret", "ConfigMap")

_CA_BUNDLE_REF = Object(
    "A Secret or ConfigMap whose ca.crt holds the CA certificates that sign the server's certificate, PEM "
    "(a ConfigMap as cert-manager's trust-manager or kube-root-ca.crt publish one). Unset: the system's CA bundle.", {
        "kind": Enum("Secret (default) or ConfigMap.", CA_BUNDLE_KINDS, default="Secret"),
        "name": String("The Secret's or ConfigMap's name (a lower-case DNS name, RFC 1123), in the same namespace.",
                       min_length=1, max_length=253, pattern=DNS_NAME, what="a lower-case DNS name (RFC 1123)"),
    }, required=("name",), build=lambda v: model.CaBundleRef(v["kind"], v["name"]))

_TLS = Object(
    "Connect to the endpoints over TLS (Envoy UpstreamTlsContext). The server's certificate is verified against "
    "caCertificateRef (a Secret or a ConfigMap), or the system's CA bundle when unset. The ALPN offered follows protocol (h2 for HTTP2, "
    "http/1.1 for HTTP1). Certificates are sent over SDS; a missing or invalid Secret or ConfigMap sets ResolvedRefs=False "
    "(InvalidCertificateRef) and the cluster is left out.", {
        "sni": String("The server name sent in the TLS handshake (SNI), a lower-case DNS name. Unset: the dns "
                      "hostname for dns targets, none otherwise.", min_length=1, max_length=253, pattern=DNS_NAME,
                      what="a lower-case DNS name (RFC 1123)"),
        "caCertificateRef": _CA_BUNDLE_REF,
        "clientCertificateRef": secret_ref("A Secret of type kubernetes.io/tls (tls.crt, tls.key) presented to "
                                           "the server as client certificate (mutual TLS)."),
        "subjectAltNames": List(
            "The server certificate must carry one of these DNS subject alternative names (exact). Empty: any "
            "name the CA vouches for. At most 16.",
            String("A DNS name.", min_length=1, max_length=253, pattern=DNS_NAME,
                   what="a lower-case DNS name (RFC 1123)"), max_items=16),
    }, build=lambda v: model.BackendTLS(v["sni"], v["caCertificateRef"], v["clientCertificateRef"],
                                        tuple(v["subjectAltNames"])))

BACKEND_SPEC = Object(
    "Where the upstream is, and how Envoy talks to it. Exactly one of service, endpoints or dns.", {
        "service": _SERVICE,
        "endpoints": List("Fixed endpoints (1 to 1000), as IP addresses; for names use dns. Sent to Envoy over EDS.",
                          _ENDPOINT, min_items=1, max_items=1000, too_few="must list at least one endpoint"),
        "dns": _DNS,
        "protocol": Enum(
            "The protocol Envoy speaks to the upstream: HTTP1 (default) or HTTP2 (for gRPC or h2c upstreams; "
            "Envoy explicit http2_protocol_options).", PROTOCOLS, default="HTTP1"),
        "loadBalancer": Enum("The load-balancing policy (Envoy Cluster.lb_policy); default ROUND_ROBIN.",
                             LOAD_BALANCERS, default="ROUND_ROBIN"),
        "connectTimeout": Duration(
            "The timeout for opening a connection to an endpoint (Envoy Cluster.connect_timeout), a duration "
            "from 1ms to 1h such as 250ms or 5s; default 5s.", minimum_ms=1, maximum_ms=3_600_000, default="5s"),
        "healthCheck": _HEALTH_CHECK,
        "circuitBreaker": _CIRCUIT_BREAKER,
        "outlierDetection": _OUTLIER_DETECTION,
        "tls": _TLS,
    }, rules=[Rule("(has(self.service) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) + (has(self.dns) ? 1 : 0) == 1",
                   "exactly one of service, endpoints or dns must be set", check=_exactly_one_target)],
    build=lambda v: model.BackendSpec(v["service"], v["endpoints"], v["dns"], v["protocol"], v["loadBalancer"],
                                      v["connectTimeout"], v["healthCheck"], v["circuitBreaker"],
                                      v["outlierDetection"], v["tls"]))
