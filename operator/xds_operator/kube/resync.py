"""Forgets objects that went away while kopf was not watching.

After a watch answers 410 Gone (its resourceVersion is too old: the API server restarted, or etcd
was compacted while the operator was away) kopf lists the kind again, but it reports no DELETED
for objects deleted before that new listing: without this they would stay in the state store, and
in Envoy, for good. So every `interval` each kind is listed (metadata only) and what the state
holds beyond that listing is checked with a GET; only a 404 removes it (an object created after
the LIST is in the state but not in the listing, and must stay).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..api.objects import ObjectKey
from ..sources.state import StateStore
from .client import KubeClient
from .readiness import WatchedKind

log = logging.getLogger(__name__)


@dataclass
class Resync:
    client: KubeClient
    state: StateStore
    kinds: dict[str, WatchedKind]  # by the state's name of it: "Route", "Backend", "services", "endpointslices"
    namespaces: list[str]
    interval: float = 30.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.prune()
            except Exception as exc:  # the API away again: next time
                log.debug("resync skipped: %s", exc)

    def held(self, name: str) -> set[tuple[str, str]]:
        if name == "services":
            return set(self.state.services)
        if name == "endpointslices":
            return set(self.state.endpoint_slices)
        return {(key.namespace, key.name) for key in self.state.objects if key.kind == name}

    async def prune(self) -> int:
        removed = 0
        for name, kind in self.kinds.items():
            listed: set[tuple[str, str]] = set()
            for namespace in self.namespaces or [""]:
                listed |= await self.client.list_names(kind.prefix, kind.plural, namespace)
            for namespace, object_name in sorted(self.held(name) - listed):
                if await self.client.get(kind.prefix, kind.plural, namespace, object_name) is not None:
                    continue
                log.info("%s %s/%s was deleted while the watch was down: removed", kind.full_name, namespace,
                         object_name)
                self.remove(name, namespace, object_name)
                removed += 1
        return removed

    def remove(self, name: str, namespace: str, object_name: str) -> None:
        if name == "services":
            self.state.put_service(namespace, object_name, None)
        elif name == "endpointslices":
            self.state.put_endpoint_slice(namespace, object_name, None)
        else:
            self.state.delete(ObjectKey(name, namespace, object_name))
