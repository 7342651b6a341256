"""The intermediate representation: what one proxy group should run, independent of Envoy's types.

Plain frozen dataclasses, sorted and deterministic, so that equal state gives equal IR (and so
equal content-hash versions), and `to_data` gives the YAML of the golden tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..api import model
from ..api.objects import ObjectKey, joined


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class SecretIR:
    """One SDS resource: a certificate and its key, or a CA bundle to validate peers with."""

    name: str  # tls_secret_name(), ca_secret_name() or config_map_ca_name()
    source: ObjectKey  # the Kubernetes Secret or ConfigMap
    certificate_chain: str = ""
    private_key: str = dataclasses.field(default="", repr=False, metadata={"redact": True})
    trusted_ca: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTlsIR:
    sni: str | None
    ca_secret: str | None  # None: the system's CA bundle
    client_secret: str | None
    subject_alt_names: tuple[str, ...]
    alpn: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClusterIR:
    name: str
    source: ObjectKey
    discovery: str  # "EDS" (static endpoints and Services) or "STRICT_DNS"
    protocol: str
    load_balancer: str
    connect_timeout_ms: int
    endpoints: tuple[Endpoint, ...] = ()
    dns: model.DnsTarget | None = None
    health_check: model.HealthCheck | None = None
    circuit_breaker: model.CircuitBreaker | None = None
    outlier_detection: model.OutlierDetection | None = None
    tls: UpstreamTlsIR | None = None


@dataclass(frozen=True, slots=True)
class RouteEntryIR:
    """One Envoy route: a match and what to do with it. Backends name clusters here."""

    name: str  # route_entry_name(): unique, and names the source in Envoy's stats
    source: ObjectKey
    match: model.Match
    action: model.Rule


@dataclass(frozen=True, slots=True)
class VirtualHostIR:
    name: str
    domains: tuple[str, ...]
    routes: tuple[RouteEntryIR, ...]


@dataclass(frozen=True, slots=True)
class DownstreamTlsIR:
    """How one SNI hostname's filter chain terminates TLS."""

    certificate_secret: str
    ca_secret: str | None  # set: a client certificate signed by it is required
    min_version: str
    alpn: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TlsHostIR:
    """One SNI hostname of a listener: its own filter chain and route configuration."""

    hostname: str
    route_config: str  # tls_route_config_name()
    tls: DownstreamTlsIR
    virtual_host: VirtualHostIR
    sources: tuple[ObjectKey, ...]


@dataclass(frozen=True, slots=True)
class ListenerIR:
    name: str  # also the name of the plain chain's RouteConfiguration
    port: int
    virtual_hosts: tuple[VirtualHostIR, ...]  # of the plain (not TLS) chain
    sources: tuple[ObjectKey, ...]  # the plain Routes: none, no plain chain (a TLS-only port)
    tls_hosts: tuple[TlsHostIR, ...] = ()


@dataclass(frozen=True, slots=True)
class ProxyConfigIR:
    """Everything one proxy group (Envoy node.cluster) is sent."""

    listeners: tuple[ListenerIR, ...] = ()
    clusters: tuple[ClusterIR, ...] = ()
    secrets: tuple[SecretIR, ...] = ()


def to_data(value: Any) -> Any:
    """Plain dicts/lists/scalars for YAML, omitting None and empty fields."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = to_data(getattr(value, f.name))
            if v and f.metadata.get("redact"):
                v = "(redacted)"
            if v not in (None, [], {}, ()):
                out[f.name] = v
        return out
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    return value


def listener_name(port: int) -> str:
    return f"http-{port}"


def tls_route_config_name(port: int, hostname: str) -> str:
    return f"https-{port}/{hostname}"


def tls_secret_name(namespace: str, name: str) -> str:
    """The SDS name of a kubernetes.io/tls Secret's certificate and key."""
    return joined("tls", namespace, name)


def ca_secret_name(namespace: str, name: str) -> str:
    """The SDS name of a Secret's ca.crt, as a validation context."""
    return joined("ca", namespace, name)


def config_map_ca_name(namespace: str, name: str) -> str:
    """The SDS name of a ConfigMap's ca.crt, as a validation context (apart from a Secret's of the same name)."""
    return joined("configmap-ca", namespace, name)


def cluster_name(key: ObjectKey) -> str:
    """namespace/name, injective whatever the parts contain (see joined)."""
    return joined(key.namespace, key.name)


def route_entry_name(key: ObjectKey, rule: int, match: int) -> str:
    return joined(key.namespace, key.name, rule, match)
