"""Validated Route and Backend specs. Instances exist only for input that passed validation.

Field names mirror the YAML (`spec.rules[].matches[].path`); defaults are applied during
validation, so every field here holds its effective value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_LISTENER_PORT = 15001


@dataclass(frozen=True, slots=True)
class ServiceRef:
    name: str
    port: int | str  # a number, or the name of a port of the Service


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class DnsTarget:
    hostname: str
    port: int


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/"
    interval_ms: int = 10_000
    timeout_ms: int = 2_000
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    interval_ms: int = 10_000
    base_ejection_time_ms: int = 30_000
    max_ejection_percent: int = 10


@dataclass(frozen=True, slots=True)
class CaBundleRef:
    """Where a CA bundle (the ca.crt key) is: a Secret or a ConfigMap, in the referrer's namespace."""

    kind: str  # "Secret" or "ConfigMap"
    name: str


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """TLS from Envoy to the Backend's endpoints. Secret names are in the Backend's namespace."""

    sni: str | None = None
    ca_certificate_ref: CaBundleRef | None = None  # None: the system's CA bundle
    client_certificate_ref: str | None = None  # a kubernetes.io/tls Secret: mTLS
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendSpec:
    service: ServiceRef | None = None
    endpoints: tuple[StaticEndpoint, ...] = ()
    dns: DnsTarget | None = None
    protocol: str = "HTTP1"
    load_balancer: str = "ROUND_ROBIN"
    connect_timeout_ms: int = 5_000
    health_check: HealthCheck | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    tls: BackendTLS | None = None


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: str = "Prefix"  # Prefix | Exact | RegularExpression
    value: str = "/"


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query parameter match."""

    name: str
    value: str
    type: str = "Exact"  # Exact | RegularExpression


@dataclass(frozen=True, slots=True)
class Match:
    path: PathMatch = PathMatch()
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True)
class BackendRef:
    name: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int = 1
    per_try_timeout_ms: int | None = None
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "gateway-error")
    status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rewrite:
    path_prefix: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderValue:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: str | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class Mirror:
    backend: str
    percent: int = 100


@dataclass(frozen=True, slots=True)
class Rule:
    matches: tuple[Match, ...] = (Match(),)
    backends: tuple[BackendRef, ...] = ()
    timeout_ms: int | None = None
    retries: Retries | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    mirror: Mirror | None = None


@dataclass(frozen=True, slots=True)
class HttpRedirect:
    """On the plain port `port`, the TLS Route's hostnames answer with a redirect to HTTPS."""

    port: int
    status_code: int = 301


@dataclass(frozen=True, slots=True)
class RouteTLS:
    """TLS termination for a Route's hostnames on its port. Secret names are in the Route's namespace."""

    certificate_ref: str  # a kubernetes.io/tls Secret (tls.crt, tls.key)
    ca_certificate_ref: str | None = None  # a Secret with ca.crt: clients must present a certificate it signed
    min_version: str = "1.2"
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    http_redirect: HttpRedirect | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    port: int = DEFAULT_LISTENER_PORT
    hostnames: tuple[str, ...] = ("*",)
    proxies: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    tls: RouteTLS | None = None
