"""What the control plane serves, as plain data for people and tools: each proxy group's
resources, each proxy's sync state per type, and what one object became.

Pure functions over a build result, snapshots and proxy states (no I/O): the server's debug
endpoints (status/debug.py) call them on live data, `xds-operator diff` on files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from envoy.config.route.v3 import route_components_pb2, route_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from ..api.objects import ObjectKey
from ..ir.builder import BuildResult
from ..ir.ir import cluster_name, listener_name, tls_route_config_name
from ..translate.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    VIRTUAL_HOST,
)
from ..xds.proxies import ProxyState
from ..xds.snapshot import Snapshot, version_of_pairs
from .report import proxy_verdict, resources_of

DEFAULT_GROUP = "default"  # the node.cluster of an Envoy bootstrap that names none (xds-operator bootstrap)
SYNCED, STALE, NACKED = "SYNCED", "STALE", "NACKED"

JSON = dict[str, Any]


def resource_dict(message: Message) -> JSON:
    """A resource as Envoy's admin /config_dump shows it: proto field names, Any with "@type"."""
    plain: JSON = _plain(json_format.MessageToDict(message, preserving_proto_field_name=True))
    return plain


def _plain(value: Any) -> Any:
    """Plain dicts for YAML: json_format gives an embedded Any's fields as an OrderedDict."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def snapshot_dump(group: str, snapshot: Snapshot) -> JSON:
    """Everything a proxy of `group` is sent now, by type (CDS, EDS, LDS, RDS) and resource name."""
    return {
        "group": group,
        "version": snapshot.version,
        "types": {
            SHORT_NAMES[t]: {
                "version": snapshot.versions[t],
                "resources": [{"name": r.name, "version": r.version, "resource": resource_dict(r.message)}
                              for r in sorted(snapshot.resources(t).values(), key=lambda r: r.name)],
            }
            for t in PUSH_ORDER
            if t != VIRTUAL_HOST or snapshot.resources(t)  # (VHDS: delta proxies only)
        },
    }


def target_groups(result: BuildResult, also: Iterable[str] = ()) -> list[str]:
    """The proxy groups worth looking at: the default one, every group a Route names, and `also`."""
    groups = {DEFAULT_GROUP, *also}
    for route in result.routes:
        groups.update(route.proxies)
    return sorted(groups)


# -- proxy status -------------------------------------------------------------------------------

def proxy_status(proxy: ProxyState, snapshot: Snapshot) -> JSON:
    """One proxy's state per type: SYNCED (it ACKed exactly what its group's snapshot holds),
    NACKED (its last response of the type was rejected, or it refused a resource of the snapshot) or STALE (anything else: an older
    version, or a response not yet answered)."""
    types: JSON = {}
    for type_url in PUSH_ORDER:
        acked = proxy.acked.get(type_url, {})
        nack = proxy.nacks.get(type_url)
        expected = {n: r.version for n, r in snapshot.resources(type_url).items()}
        if type_url == VIRTUAL_HOST and not expected and not acked and nack is None:
            continue  # (VHDS: delta proxies' virtual hosts)
        # A NACK isolated down to single resources leaves the rest ACKed: the type is NACKED as long
        # as a resource of the snapshot is refused at the version the snapshot holds.
        refused = {name: r for name, r in proxy.rejected.get(type_url, {}).items() if expected.get(name) == r.version}
        if nack is not None:
            entry = {"state": NACKED, "version": nack.version or version_of_pairs(type_url, nack.resources), "message": nack.message}
        elif refused:
            entry = {"state": NACKED, "version": version_of_pairs(type_url, acked),
                     "message": "; ".join(f"{name}: {r.message}" for name, r in sorted(refused.items()))}
        elif acked == expected:
            entry = {"state": SYNCED, "version": snapshot.versions[type_url]}
        else:
            entry = {"state": STALE, "version": version_of_pairs(type_url, acked), "expected": snapshot.versions[type_url]}
        types[SHORT_NAMES[type_url]] = entry
    return {**proxy.to_dict(), "group": proxy.group, "types": types}


# -- explain ------------------------------------------------------------------------------------

def explain(key: ObjectKey, result: BuildResult, snapshots: Mapping[str, Snapshot],
            proxies: Mapping[str, list[ProxyState]]) -> JSON:
    """What `key` became in each proxy group of `snapshots`, and which of the group's
    `proxies` run it. Groups the object adds nothing to are left out."""
    groups: list[JSON] = []
    served = resources_of(key, result)  # the resources Programmed is judged on
    if served is None:
        return {"object": str(key), "groups": groups}
    for group, snapshot in sorted(snapshots.items()):
        if any(name not in snapshot.resources(t) for t, name in served):
            continue
        if key.kind == "Route":
            found = _route_in_group(key, result, group, snapshot)
        else:
            found = _backend_in_group(cluster_name(key), snapshot)
        if found is None:
            continue
        found["group"] = group
        found["snapshot"] = snapshot.version
        expected = [(t, r["name"], r["version"]) for t in PUSH_ORDER
                    for r in found["resources"].get(SHORT_NAMES[t], [])]
        by_protocol = {"sotw": expected, "delta": _delta_expected(key, result, snapshot, expected)}
        found["proxies"] = [_verdict(p, by_protocol.get(p.protocol, expected))
                            for p in sorted(proxies.get(group, []), key=lambda p: p.node_id)]
        groups.append(found)
    return {"object": str(key), "groups": groups}


def _delta_expected(key: ObjectKey, result: BuildResult, snapshot: Snapshot,
                    expected: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """What a delta proxy must run of what `expected` lists: a plain Route's virtual hosts over
    VHDS instead of its route configuration whole."""
    view = snapshot.for_protocol("delta")
    if view is snapshot or key.kind != "Route":
        return expected
    routes = [(t, n) for t, n in resources_of(key, result, vhds=True) or [] if t in (ROUTE, VIRTUAL_HOST)]
    plain = {n for t, n in routes if t == ROUTE}
    return [e for e in expected if e[0] != ROUTE or e[1] not in plain] + [
        (t, n, view.resources(t)[n].version) for t, n in routes if n in view.resources(t)]


def _verdict(proxy: ProxyState, expected: list[tuple[str, str, str]]) -> JSON:
    synced, nack = proxy_verdict(proxy, expected)
    state = "NACKED" if nack is not None else "ACKED" if synced else "PENDING"
    return {"node": proxy.node_id, "protocol": proxy.protocol, "state": state, "message": nack or ""}


def _entry(snapshot: Snapshot, type_url: str, name: str, message: Message | None = None) -> JSON:
    resource = snapshot.resources(type_url)[name]
    return {"name": name, "version": resource.version, "resource": resource_dict(message or resource.message)}


def _route_in_group(key: ObjectKey, result: BuildResult, group: str, snapshot: Snapshot) -> JSON | None:
    """The listener, this Route's virtual hosts and routes, and the clusters they send to."""
    route = result.routes_by_key[key]
    if not route.applies_to(group):
        return None
    name = listener_name(route.port)
    own = {e.name for e in route.entries}
    # A TLS Route's entries are in the route configuration of each of its SNI hostnames.
    config_names = [name] if route.tls is None else [tls_route_config_name(route.port, h) for h in route.hostnames]
    listeners = [name]
    if (redirect := route.https_redirect) is not None:  # and its HTTP to HTTPS redirects on the plain port
        own.add(redirect.entry.name)
        listeners.append(listener_name(redirect.port))
        config_names.append(listener_name(redirect.port))
    positions: list[JSON] = []
    clusters: set[str] = set()
    rds = [_entry(snapshot, ROUTE, config_name, _narrowed(cast(route_pb2.RouteConfiguration, snapshot.resources(ROUTE)[config_name].message), own,
                                                          positions, clusters))
           for config_name in config_names if config_name in snapshot.resources(ROUTE)]
    clusters &= set(snapshot.resources(CLUSTER))
    return {
        "listener": name,
        "precedence": positions,
        "resources": {
            "SDS": [_entry(snapshot, SECRET, s.name) for s in route.secrets if s.name in snapshot.resources(SECRET)],
            "CDS": [_entry(snapshot, CLUSTER, c) for c in sorted(clusters)],
            "EDS": [_entry(snapshot, ENDPOINT, c) for c in sorted(clusters) if c in snapshot.resources(ENDPOINT)],
            "LDS": [_entry(snapshot, LISTENER, n) for n in listeners if n in snapshot.resources(LISTENER)],
            "RDS": rds,
        },
    }


def _narrowed(config: route_pb2.RouteConfiguration, own: set[str], positions: list[JSON],
              clusters: set[str]) -> route_pb2.RouteConfiguration:
    """The route configuration cut down to this Route's entries, each with its place in the
    virtual host's precedence order (which the other Routes on the port share)."""
    narrowed = route_pb2.RouteConfiguration()
    narrowed.CopyFrom(config)
    del narrowed.virtual_hosts[:]
    for vhost in config.virtual_hosts:
        mine = [(i, r) for i, r in enumerate(vhost.routes) if r.name in own]
        if not mine:
            continue
        kept = narrowed.virtual_hosts.add()
        kept.CopyFrom(vhost)
        del kept.routes[:]
        kept.routes.extend(r for _, r in mine)
        positions.append({"virtualHost": vhost.name, "total": len(vhost.routes),
                          "positions": [i + 1 for i, _ in mine]})
        for _, r in mine:
            clusters.update(_clusters_of(r))
    return narrowed


def _clusters_of(route: route_components_pb2.Route) -> set[str]:
    action = route.route
    names = {action.cluster} if action.cluster else set()
    names.update(w.name for w in action.weighted_clusters.clusters)
    names.update(m.cluster for m in action.request_mirror_policies)
    return names


def _backend_in_group(name: str, snapshot: Snapshot) -> JSON:
    """The cluster, its endpoints, and the routes of the group that send to it."""
    used_by = []
    for config in snapshot.resources(ROUTE).values():
        for vhost in cast(route_pb2.RouteConfiguration, config.message).virtual_hosts:
            for i, route in enumerate(vhost.routes):
                if name in _clusters_of(route):
                    used_by.append({"routeConfiguration": config.name, "virtualHost": vhost.name,
                                    "route": route.name, "position": i + 1})
    return {
        "usedBy": used_by,
        "resources": {
            "CDS": [_entry(snapshot, CLUSTER, name)],
            "EDS": [_entry(snapshot, ENDPOINT, name)] if name in snapshot.resources(ENDPOINT) else [],
            "LDS": [],
            "RDS": [],
        },
    }
