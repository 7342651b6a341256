"""The status of every Route and Backend: the build's conditions plus what the proxies did.

`Programmed` tells the truth about the data plane: True only when every connected proxy the
object targets has ACKed the current versions of the resources made from it; False with
Envoy's own error message when one of them rejected one of those versions (a NACK narrowed
down to the resource, so the objects that built other resources of the same type stay clean).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..api.conditions import ACCEPTED, PROGRAMMED, Condition
from ..api.objects import ObjectKey
from ..ir.builder import BuildResult, ObjectStatus
from ..ir.ir import cluster_name, listener_name, tls_route_config_name
from ..translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET, VIRTUAL_HOST
from ..xds.cache import SnapshotCache
from ..xds.proxies import ProxyRegistry, ProxyState
from ..xds.snapshot import Snapshot


@dataclass(frozen=True)
class ProxyCounts:
    total: int = 0
    synced: int = 0
    nacked: int = 0


@dataclass(frozen=True)
class ObjectReport:
    generation: int
    conditions: tuple[Condition, ...]
    proxies: ProxyCounts
    nacks: tuple[str, ...] = ()  # "node: Envoy's message" of each proxy that rejected it
    served: bool = True  # made into resources sent to proxies (else Programmed says why not)

    def to_status(self) -> dict[str, Any]:
        return {
            "observedGeneration": self.generation,
            "conditions": [c.to_dict(self.generation) for c in self.conditions],
            "proxies": {"total": self.proxies.total, "synced": self.proxies.synced, "nacked": self.proxies.nacked},
        }


def resources_of(key: ObjectKey, result: BuildResult, vhds: bool = False) -> list[tuple[str, str]] | None:
    """The (type, name) of the Envoy resources made from an object; None if it is not served.
    With `vhds` as delta proxies get them: a plain Route is in the virtual host of each of its
    hostnames (VHDS), not in the whole route configuration."""
    if key.kind == "Backend":
        cluster = result.clusters.get(cluster_name(key))
        if cluster is None:
            return None
        types = [CLUSTER, ENDPOINT] if cluster.discovery == "EDS" else [CLUSTER]
        tls = cluster.tls
        secrets = [] if tls is None else [(SECRET, s) for s in (tls.ca_secret, tls.client_secret) if s]
        return [(t, cluster.name) for t in types] + secrets
    route = result.routes_by_key.get(key)
    if route is None or route.left_out:
        return None
    name = listener_name(route.port)
    if route.tls is not None:  # its own route configuration per hostname, and its certificates
        redirect = route.https_redirect  # and the plain port's, where it redirects to HTTPS
        plain = [] if redirect is None else [(LISTENER, listener_name(redirect.port)),
                                             (ROUTE, listener_name(redirect.port))]
        if redirect is not None and vhds:  # (a delta proxy gets the redirects as virtual hosts)
            plain += [(VIRTUAL_HOST, f"{listener_name(redirect.port)}/{h}") for h in route.hostnames]
        return [(LISTENER, name), *((ROUTE, tls_route_config_name(route.port, h)) for h in route.hostnames),
                *((SECRET, s.name) for s in route.secrets), *plain]
    if vhds:
        return [(LISTENER, name), (ROUTE, name), *((VIRTUAL_HOST, f"{name}/{h}") for h in route.hostnames)]
    return [(LISTENER, name), (ROUTE, name)]


@dataclass(frozen=True)
class AckClass:
    """Proxies of a group in the same ACK state, judged against the group's snapshot once."""
    proxy: ProxyState  # one of them
    protocol: str  # theirs ("sotw", "delta"): what they are sent differs (VHDS)
    nodes: tuple[str, ...]  # the node of each
    state: tuple[object, ...]  # what is equal: ids of its ACK tables (valid while `proxy` holds them), refusals
    behind: frozenset[tuple[str, str]]  # (type, name) of the snapshot's resources not ACKed at its version
    refusals: Mapping[tuple[str, str], str]  # (type, name) refused at the snapshot's version -> Envoy's message


def ack_classes(proxies: list[ProxyState], snapshot: Snapshot) -> list[AckClass]:
    """The proxies grouped by ACK state, so each object's verdict is computed once per state,
    not per proxy. The registry shares equal ACK tables (xds/ack_tables.py), so equal states
    are found by identity; refusals (few, and not shared) by what they say."""
    classes: dict[tuple[object, ...], tuple[ProxyState, list[str]]] = {}
    for proxy in proxies:
        state = (proxy.protocol, tuple(sorted((t, id(v)) for t, v in proxy.acked.items() if v)),
                 tuple(sorted((t, n, r.version, r.message) for t, rs in proxy.rejected.items() for n, r in rs.items())))
        classes.setdefault(state, (proxy, []))[1].append(proxy.node_id)
    return [AckClass(proxy, proxy.protocol, tuple(nodes), state, *_judged(proxy, snapshot.for_protocol(proxy.protocol)))
            for state, (proxy, nodes) in classes.items()]


def _judged(proxy: ProxyState, snapshot: Snapshot) -> tuple[frozenset[tuple[str, str]], dict[tuple[str, str], str]]:
    """What of the snapshot a proxy is behind on, and what it refused: an ACK table equal to the
    snapshot's versions (the usual case) is one comparison in C, not a look-up per resource."""
    behind: set[tuple[str, str]] = set()
    for type_url in PUSH_ORDER:
        versions = _versions(snapshot, type_url)
        acked = proxy.acked.get(type_url, {})
        if acked != versions:
            behind.update((type_url, n) for n, v in versions.items() if acked.get(n) != v)
    refusals = {(t, n): r.message for t, rs in proxy.rejected.items() for n, r in rs.items()
                if (resource := snapshot.resources(t).get(n)) is not None and resource.version == r.version}
    return frozenset(behind), refusals


# Per snapshot: type URL -> name -> version (a snapshot never changes).
_snapshot_versions: weakref.WeakKeyDictionary[Snapshot, dict[str, dict[str, str]]] = weakref.WeakKeyDictionary()
# Per snapshot, for one build: object -> the (type, name, version)s the group is sent of it (None: not sent).
_expected_of: weakref.WeakKeyDictionary[Snapshot, tuple[BuildResult, dict[ObjectKey, Expected | None]]] = \
    weakref.WeakKeyDictionary()
_memo_lock = threading.Lock()

Expected = tuple[tuple[str, str, str], ...]


def _versions(snapshot: Snapshot, type_url: str) -> dict[str, str]:
    by_type = _snapshot_versions.get(snapshot)
    if by_type is None:
        with _memo_lock:
            by_type = _snapshot_versions.setdefault(snapshot, {})
    versions = by_type.get(type_url)
    if versions is None:
        versions = by_type[type_url] = {n: r.version for n, r in snapshot.resources(type_url).items()}
    return versions


def _expected_in(snapshot: Snapshot, result: BuildResult) -> dict[ObjectKey, Expected | None]:
    kept = _expected_of.get(snapshot)
    if kept is None or kept[0] is not result:
        with _memo_lock:
            kept = _expected_of[snapshot] = (result, {})
    return kept[1]


def _expected(key: ObjectKey, resources: list[tuple[str, str]], snapshot: Snapshot,
              result: BuildResult) -> Expected | None:
    """The (type, name, version) of each resource made from the object, as the group is sent
    them; None if the group is not sent the object."""
    memo = _expected_in(snapshot, result)
    if key in memo:
        return memo[key]
    expected = []
    for type_url, name in resources:
        resource = snapshot.resources(type_url).get(name)
        if resource is None:
            memo[key] = None
            return None
        expected.append((type_url, name, resource.version))
    found = memo[key] = tuple(expected)
    return found


def proxy_verdict(proxy: ProxyState, expected: list[tuple[str, str, str]]) -> tuple[bool, str | None]:
    """(synced, NACK message or None) of one proxy for the expected (type, name, version)s (explain)."""
    for type_url, name, version in expected:
        rejection = proxy.rejected.get(type_url, {}).get(name)
        if rejection is not None and rejection.version == version:
            return False, rejection.message
    synced = all(proxy.acked.get(t, {}).get(n) == v for t, n, v in expected)
    return synced, None


def _verdict(ack_class: AckClass, expected: Expected) -> tuple[bool, str | None]:
    """(synced, NACK message or None) of a class of proxies for the expected (type, name, version)s."""
    if ack_class.refusals:
        for type_url, name, _ in expected:
            message = ack_class.refusals.get((type_url, name))
            if message is not None:
                return False, message
    behind = ack_class.behind
    return not behind or not any((t, n) in behind for t, n, _ in expected), None


Classes = dict[str, tuple[Snapshot, list[AckClass]]]


def report(key: ObjectKey, result: BuildResult, groups: dict[str, tuple[Snapshot, list[ProxyState]]],
           refused: Mapping[str, Mapping[ObjectKey, str]] = MappingProxyType({})) -> ObjectReport:
    """The status of one object, given each proxy group's snapshot and connected proxies, and
    the objects held back from a group because its proxies refused them (registry.refused_objects)."""
    return _report(key, result, classes_of(groups), refused)


def classes_of(groups: dict[str, tuple[Snapshot, list[ProxyState]]]) -> Classes:
    return {group: (snapshot, ack_classes(proxies, snapshot)) for group, (snapshot, proxies) in groups.items()}


Tally = tuple[ProxyCounts, tuple[str, ...]] | None  # the proxy counts and NACKs; None: not served


def _report(key: ObjectKey, result: BuildResult, groups: Classes,
            refused: Mapping[str, Mapping[ObjectKey, str]]) -> ObjectReport:
    return report_of(result.statuses[key], tally(key, result, groups, refused))


def report_of(status: ObjectStatus, counted: Tally) -> ObjectReport:
    """The report of an object with the build's `status`, from its tally."""
    if counted is None:
        accepted = status.condition(ACCEPTED)
        programmed = Condition(PROGRAMMED, False, "Invalid" if accepted and not accepted.status else "NotServed",
                               "not sent to any proxy")
        return ObjectReport(status.generation, (*status.conditions, programmed), ProxyCounts(), served=False)
    counts, nacked = counted
    return ObjectReport(status.generation, (*status.conditions, programmed_condition(counts, nacked)), counts,
                        nacked)


def tally(key: ObjectKey, result: BuildResult, groups: Classes,
          refused: Mapping[str, Mapping[ObjectKey, str]]) -> Tally:
    """What the proxies did with an object: how many are sent it, have it, refused it (and why)."""
    resources = resources_of(key, result)
    if resources is None:
        return None
    vhds_resources = resources_of(key, result, vhds=True) or resources
    total = synced = 0
    nacks: list[str] = []
    for group, (snapshot, classes) in groups.items():
        refusal = refused.get(group, {}).get(key)
        if refusal is not None:  # held back from the whole group, whatever it runs now
            total += sum(len(c.nodes) for c in classes)
            nacks.append(refusal)
            continue
        for ack_class in classes:
            # (By protocol: a delta proxy gets a plain Route in the virtual hosts of its hostnames.)
            view = snapshot.for_protocol(ack_class.protocol)
            expected = _expected(key, vhds_resources if view.resources(VIRTUAL_HOST) else resources, view, result)
            if expected is None:
                continue  # this group is not sent this object
            total += len(ack_class.nodes)
            ok, nack = _verdict(ack_class, expected)
            if ok:
                synced += len(ack_class.nodes)
            if nack is not None:
                nacks.extend(f"{node}: {nack}" for node in ack_class.nodes)
    return ProxyCounts(total, synced, len(nacks)), tuple(sorted(nacks))


def programmed_condition(counts: ProxyCounts, nacks: tuple[str, ...]) -> Condition:
    """Programmed from the proxy counts (of one replica's proxies, or all replicas' merged)."""
    if nacks or counts.nacked:
        return Condition(PROGRAMMED, False, "Rejected", "rejected by Envoy: " + "; ".join(nacks))
    if counts.total == 0:
        return Condition(PROGRAMMED, False, "NoProxies", "no connected proxy is sent this object")
    if counts.synced == counts.total:
        return Condition(PROGRAMMED, True, "Programmed", f"{counts.synced}/{counts.total} proxies ACKed it")
    return Condition(PROGRAMMED, False, "Pending", f"{counts.synced}/{counts.total} proxies ACKed it")


def proxy_groups(registry: ProxyRegistry, cache: SnapshotCache, *, copy: bool = False
                 ) -> dict[str, tuple[Snapshot, list[ProxyState]]]:
    """Connected proxies by group, with the group's snapshot (await cache.settled() first, so
    that a group whose snapshot is still being made is not left out). With `copy`, the proxies' ACK and
    NACK tables are taken as they are now, so the result can be read in another thread while
    streams go on (the tables themselves are never changed, only replaced: no copy of them)."""
    groups: dict[str, tuple[Snapshot, list[ProxyState]]] = {}
    for proxy in registry.proxies.values():
        snapshot = cache.made(proxy.group)
        if snapshot is None:
            continue
        if copy:
            proxy = dataclasses.replace(proxy, acked=dict(proxy.acked), nacks=dict(proxy.nacks),
                                        rejected=dict(proxy.rejected))
        groups.setdefault(proxy.group, (snapshot, []))[1].append(proxy)
    return groups


def reports(result: BuildResult, groups: dict[str, tuple[Snapshot, list[ProxyState]]],
            refused: Mapping[str, Mapping[ObjectKey, str]] = MappingProxyType({})) -> dict[ObjectKey, ObjectReport]:
    return reports_of_classes(result, classes_of(groups), refused)


def reports_of_classes(result: BuildResult, classes: Classes,
                       refused: Mapping[str, Mapping[ObjectKey, str]] = MappingProxyType({})
                       ) -> dict[ObjectKey, ObjectReport]:
    """reports(), the proxies already grouped by ACK state (classes_of)."""
    return {key: _report(key, result, classes, refused) for key in sorted(result.statuses)}
