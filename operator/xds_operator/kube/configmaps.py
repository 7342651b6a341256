"""ConfigMaps from the API: only those a Backend names as its CA bundle, each read with a GET.

A cluster holds a ConfigMap or more per namespace (kube-root-ca.crt at least) and the operator needs
a handful, so none is listed or watched: a referenced one is read when first referenced (the
state's revision is checked every 0.2 s, as kube/secrets.py does for referenced non-TLS Secrets)
and read again every `refresh` seconds, so a change to it is served within `refresh`. Only its
ca.crt is kept (sources/kubernetes.trimmed_config_map). RBAC: `get` on configmaps, nothing more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..sources.kubernetes import trimmed_config_map
from ..sources.state import StateStore
from .client import KubeClient
from .referenced import read_passes

log = logging.getLogger(__name__)

CONFIG_MAP = "ConfigMap"


def _ca_ref(spec: object) -> dict[str, Any] | None:
    tls = spec.get("tls") if isinstance(spec, dict) else None
    ref = tls.get("caCertificateRef") if isinstance(tls, dict) else None
    return ref if isinstance(ref, dict) and isinstance(ref.get("name"), str) else None


def referenced_config_maps(state: StateStore) -> set[tuple[str, str]]:
    """The ConfigMaps the Backends name (spec.tls.caCertificateRef of kind ConfigMap), as written."""
    return {(key.namespace, ref["name"]) for key, obj in state.objects.items()
            if key.kind == "Backend" and (ref := _ca_ref(obj.spec)) is not None and ref.get("kind") == CONFIG_MAP}


def names_a_config_map(ref: object) -> bool:
    """A reference of kind ConfigMap (read here, not by the Secret reader)."""
    return isinstance(ref, dict) and ref.get("kind") == CONFIG_MAP


@dataclass
class ConfigMapReads:
    settings: kopf.OperatorSettings
    state: StateStore
    refresh: float = 30.0
    _read: set[tuple[str, str]] = field(default_factory=set)  # what the GETs put in the state
    _failing: set[tuple[str, str]] = field(default_factory=set)  # logged once until read again

    async def run(self) -> None:
        client = KubeClient(self.settings)
        async for full in read_passes(self.state, self.refresh):
            wanted = referenced_config_maps(self.state)
            for key in sorted(self._read - wanted):
                self._read.discard(key)
                self.state.put_config_map(*key, None)
            for key in sorted(wanted if full else wanted - self._read):
                try:
                    body = await client.get("/api/v1", "configmaps", *key)
                except Exception as exc:  # forbidden, or the API away: kept as it was, tried again
                    if key not in self._failing:
                        log.warning("reading ConfigMap %s/%s failed: %s", *key, exc)
                        self._failing.add(key)
                    continue
                self._failing.discard(key)
                self._read.add(key)
                self.state.put_config_map(*key, None if body is None else trimmed_config_map(body))
