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


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RouteEntryIR:
    """One Envoy route: a match and what to do with it. Backends name clusters here."""

    name: str  # route_entry_name(): unique, and names the source in Envoy's stats
    source: ObjectKey
    match: model.Match
    action: model.Rule


@dataclass(frozen=True)
class VirtualHostIR:
    name: str
    domains: tuple[str, ...]
    routes: tuple[RouteEntryIR, ...]


@dataclass(frozen=True)
class ListenerIR:
    name: str  # also the name of its RouteConfiguration
    port: int
    virtual_hosts: tuple[VirtualHostIR, ...]
    sources: tuple[ObjectKey, ...]


@dataclass(frozen=True)
class ProxyConfigIR:
    """Everything one proxy group (Envoy node.cluster) is sent."""

    listeners: tuple[ListenerIR, ...] = ()
    clusters: tuple[ClusterIR, ...] = ()


def to_data(value: Any) -> Any:
    """Plain dicts/lists/scalars for YAML, omitting None and empty fields."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = to_data(getattr(value, f.name))
            if v not in (None, [], {}, ()):
                out[f.name] = v
        return out
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    return value


def listener_name(port: int) -> str:
    return f"http-{port}"


def cluster_name(key: ObjectKey) -> str:
    """namespace/name, injective whatever the parts contain (see joined)."""
    return joined(key.namespace, key.name)


def route_entry_name(key: ObjectKey, rule: int, match: int) -> str:
    return joined(key.namespace, key.name, rule, match)
