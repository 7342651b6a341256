"""Read-only debug endpoints, for `xds-operator proxy-status`, `explain`, `config-dump` and `diff`:

/debug/proxy-status                     each connected proxy, per type SYNCED / STALE / NACKED
/debug/config_dump?group=G | ?node=ID   every resource the server would send that group or proxy now
/debug/explain?kind=K&namespace=N&name=X  what one Route or Backend became, per proxy group
/debug/state                            the objects the server holds, for diffs against them

Answers are computed in a thread from copies and immutable snapshots: a large config never
blocks the event loop that serves the ADS streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ..api.objects import API_VERSION, KINDS, ObjectKey
from ..ir.builder import BuildResult
from ..sources.state import StateStore
from ..translate import TranslateOptions
from ..xds.cache import SnapshotCache
from ..xds.proxies import ProxyRegistry, ProxyState
from ..xds.snapshot import PROTOCOLS, Snapshot
from .inspection import explain, proxy_status, snapshot_dump, target_groups
from .report import proxy_groups, report


class Served(Protocol):
    """What the debug endpoints read of the controller."""

    state: StateStore
    cache: SnapshotCache
    options: TranslateOptions

    @property
    def result(self) -> BuildResult | None: ...


def add_debug_routes(app: web.Application, served: Served, registry: ProxyRegistry) -> None:
    async def proxy_status_(_: web.Request) -> web.Response:
        await served.cache.settled()
        groups = proxy_groups(registry, served.cache, copy=True)
        pairs = sorted(((p, snapshot) for snapshot, proxies in groups.values() for p in proxies),
                       key=lambda pair: (pair[0].group, pair[0].node_id))
        return await _json(lambda: [proxy_status(p, s.for_protocol(p.protocol)) for p, s in pairs])

    async def config_dump(request: web.Request) -> web.Response:
        result = _built(served)
        group = request.query.get("group")
        node = request.query.get("node")
        if (group is None) == (node is None):
            raise _error(web.HTTPBadRequest, "give exactly one of group= or node=")
        # A node's dump is what its protocol gets (delta: virtual hosts over VHDS); a group's, SotW's
        # unless protocol=delta.
        protocol = request.query.get("protocol", "sotw")
        if protocol not in PROTOCOLS:
            raise _error(web.HTTPBadRequest, f"protocol= is one of {', '.join(PROTOCOLS)}")
        if node is not None:
            proxy = _proxy(registry, node)
            group, protocol = proxy.group, proxy.protocol
        assert group is not None
        snapshot = (await _snapshot(served, result, group)).for_protocol(protocol)
        return await _json(lambda: snapshot_dump(group, snapshot))

    async def explain_(request: web.Request) -> web.Response:
        result = _built(served)
        kind, namespace, name = (request.query.get(k, "") for k in ("kind", "namespace", "name"))
        key = ObjectKey(kind, namespace, name)
        if key not in result.statuses:
            raise _error(web.HTTPNotFound, f"{key} is not known to this server")
        await served.cache.settled()
        groups = proxy_groups(registry, served.cache, copy=True)
        proxies = {g: ps for g, (_, ps) in groups.items()}
        snapshots = {g: await _snapshot(served, result, g) for g in target_groups(result, groups)}
        # With the conditions, Programmed included, as /status shows them.
        return await _json(lambda: {**explain(key, result, snapshots, proxies),
                                    **report(key, result, groups, registry.refused_objects).to_status()})

    async def state(_: web.Request) -> web.Response:
        # Shallow copies on the loop (sources change the store there); the rest in a thread.
        store, options = served.state, served.options
        objects, services, slices = dict(store.objects), dict(store.services), dict(store.endpoint_slices)
        return await _json(lambda: {
            "options": {"listenerAddress": options.listener_address},
            "objects": [{"apiVersion": API_VERSION, "kind": o.key.kind,
                         "metadata": {"name": o.key.name, "namespace": o.key.namespace, "generation": o.generation},
                         "spec": o.spec}
                        for o in sorted(objects.values(), key=lambda o: o.key) if o.key.kind in KINDS],
            # Keyed as the state store keeps them: the stored manifests are trimmed of metadata.
            "services": [{"namespace": ns, "name": n, "manifest": m} for (ns, n), m in sorted(services.items())],
            "endpointSlices": [{"namespace": ns, "name": n, "manifest": m} for (ns, n), m in sorted(slices.items())],
        })

    app.add_routes([web.get("/debug/proxy-status", proxy_status_), web.get("/debug/config_dump", config_dump),
                    web.get("/debug/explain", explain_), web.get("/debug/state", state)])


async def _json(compute: Callable[[], Any]) -> web.Response:
    """The answer computed and serialized in a thread: for a large config both take a while."""
    text = await asyncio.to_thread(lambda: _to_json(compute()))
    return web.Response(text=text, content_type="application/json")


def _to_json(value: Any, depth: int = 0) -> str:
    """JSON, written piece by piece: json.dumps holds the GIL for its whole run, which for a
    config of 10,000 Routes would stall the event loop for a third of a second. So the
    outer levels and any large container are written one member at a time."""
    if isinstance(value, (dict, list)) and (depth < 3 or len(value) > 64):
        if isinstance(value, dict):
            return "{" + ",".join(f"{json.dumps(str(k))}:{_to_json(v, depth + 1)}" for k, v in value.items()) + "}"
        return "[" + ",".join(_to_json(v, depth + 1) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"), default=str)  # specs from YAML may hold dates


def _error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


def _built(served: Served) -> BuildResult:
    result = served.result
    if result is None:
        raise _error(web.HTTPServiceUnavailable, "no config built yet")
    return result


def _proxy(registry: ProxyRegistry, node: str) -> ProxyState:
    streams = [p for p in registry.proxies.values() if p.node_id == node]
    if not streams:
        raise _error(web.HTTPNotFound, f"no proxy with node id {node!r} is connected")
    return max(streams, key=lambda p: p.stream_id)  # the newest stream, after a reconnect


async def _snapshot(served: Served, result: BuildResult, group: str) -> Snapshot:
    """The group's snapshot: the cache's when a proxy of the group is connected (exactly what
    is sent), else made as the cache would make it, without putting it there."""
    if group in served.cache.groups():
        await served.cache.settled()
        snapshot = served.cache.made(group)
        if snapshot is not None:
            return snapshot
    options = served.options
    return await asyncio.to_thread(lambda: Snapshot.from_config(result.config_for(group), options))

