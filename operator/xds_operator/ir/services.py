"""Resolving a Backend's `service` reference to ready endpoints, from Service and EndpointSlice manifests."""

from __future__ import annotations

import ipaddress
from typing import Any

from ..api.model import ServiceRef
from ..sources.state import StateStore
from .ir import Endpoint

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


SlicesByService = dict[tuple[str, str], list[dict[str, Any]]]


def slices_by_service(state: StateStore) -> SlicesByService:
    """EndpointSlices grouped by (namespace, Service name): one pass, not one per Backend."""
    index: SlicesByService = {}
    for (namespace, _), slice_ in state.endpoint_slices.items():
        service = ((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            index.setdefault((namespace, service), []).append(slice_)
    return index


class UnresolvedService(Exception):
    """The Service or the port it names does not exist (the message says which)."""


def resolve_service(state: StateStore, slices: SlicesByService, namespace: str,
                    ref: ServiceRef) -> tuple[Endpoint, ...]:
    service = state.services.get((namespace, ref.name))
    if service is None:
        raise UnresolvedService(f"Service {namespace}/{ref.name} not found")
    ports = (service.get("spec") or {}).get("ports") or []
    wanted = next((p for p in ports if (p.get("port") if isinstance(ref.port, int) else p.get("name")) == ref.port),
                  None)
    if wanted is None:
        raise UnresolvedService(f"Service {namespace}/{ref.name} has no port {ref.port!r}")
    port_name = wanted.get("name") or ""
    endpoints: set[Endpoint] = set()
    for slice_ in slices.get((namespace, ref.name), ()):
        if slice_.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        slice_port = next((p.get("port") for p in slice_.get("ports") or [] if (p.get("name") or "") == port_name),
                          None)
        if not slice_port:
            continue
        for ep in slice_.get("endpoints") or []:
            # Per the EndpointSlice API, a missing `ready` means ready.
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            endpoints.update(Endpoint(address, slice_port) for address in ep.get("addresses") or []
                             if _is_ip(address))
    return tuple(sorted(endpoints, key=lambda e: (e.address, e.port)))


def _is_ip(text: Any) -> bool:  # anything a manifest holds
    """Only IPs reach Envoy: anything else in an EDS address would be a NACK."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
