"""Object-level NACK isolation: which Route made a proxy refuse a RouteConfiguration.

The streams narrow a NACK down to one resource (xds/stream.py); a RouteConfiguration is built
from every plain Route on its port (`http-<port>`), or every TLS Route of one SNI hostname on it
(`https-<port>/<hostname>`), so that is not yet the object to blame. This component remembers,
per proxy group and route configuration, which Route versions each served version was built
from, and which version each proxy last ACKed. When a proxy rejects a version, the Routes
that changed since the version that proxy last ACKed are the suspects: the controller is asked to
rebuild with only some of them served new (the others held at their last ACKed version, or
left out if they have none), halving by what the proxies ACK or reject (ir/culprits.py), until
the culprits are known. From then on everyone else's changes are served, each culprit held
back for the group (and reported Rejected, with Envoy's message) until its spec changes.

Delta proxies get a plain route configuration's virtual hosts one by one (VHDS): there the
slot is one virtual host ("<route configuration>/<hostname>"), its suspects the Routes of that
hostname, and what the refusing proxy last ACKed is read from the registry (no ACK of the
thousands of virtual hosts is tracked here, only those of slots under search).

It listens to the proxy registry's stream events on the event loop; `plan` runs in the build
thread, hence the lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..api.objects import ObjectKey
from ..ir.builder import BuildResult, BuiltRoute
from ..ir.culprits import CulpritSearch
from ..ir.ir import ClusterIR, ProxyConfigIR, listener_name, tls_route_config_name
from ..translate.resources import ROUTE, VIRTUAL_HOST
from ..xds.callbacks import NoCallbacks, StreamInfo
from ..xds.proxies import ProxyRegistry
from ..xds.snapshot import Snapshot, VersionedResource, vhds_namespace

log = logging.getLogger(__name__)

_KEPT_VERSIONS = 32  # served versions remembered per route configuration (a proxy ACKs one of the last few)

Slot = tuple[str, str]  # (proxy group, route configuration name, or VHDS virtual host name)
Step = tuple[int, int]  # (search id, trial number)


@dataclass(frozen=True)
class _Served:
    version: str
    routes: tuple[BuiltRoute, ...]  # every Route the group was served in that build (filtered lazily)
    port: int
    steps: Mapping[str, Step]  # the trial each slot of it carried, if any
    # The build's VHDS virtual hosts (delta proxies), by name: shared with its snapshot.
    virtual_hosts: Mapping[str, VersionedResource]
    sni_hostname: str | None = None  # an SNI hostname's route configuration; None: the port's plain one

    def contributors(self, group: str, hostname: str | None = None) -> dict[ObjectKey, BuiltRoute]:
        """The Routes this version was made from (a VHDS virtual host: those of `hostname`)."""
        if self.sni_hostname is not None:
            return {r.key: r for r in self.routes if r.port == self.port and r.tls is not None
                    and self.sni_hostname in r.hostnames and r.applies_to(group)}
        return {r.key: r for r in self.routes if r.port == self.port and r.tls is None and r.applies_to(group)
                and (hostname is None or hostname in r.hostnames)}


@dataclass
class _Search:
    id: int
    search: CulpritSearch[ObjectKey]
    suspects: dict[ObjectKey, BuiltRoute]  # the versions under suspicion
    baseline: dict[ObjectKey, BuiltRoute]  # what the refusing proxy last ACKed: held Routes stay there
    message: str  # of the last rejection: what a culprit is reported with
    step: int = 0


@dataclass(frozen=True)
class Culprit:
    route: BuiltRoute  # the version refused: held back until the Route changes
    held: BuiltRoute | None  # what is served instead: its version the proxy last ACKed, if any
    message: str  # "node: Envoy's message"


@dataclass(frozen=True)
class Plan:
    """What one build serves one group: the config, and what it was made from."""

    config: ProxyConfigIR
    routes: tuple[BuiltRoute, ...]
    steps: dict[str, Step]  # route configuration name -> the trial it carries


class RouteIsolation(NoCallbacks):
    def __init__(self, registry: ProxyRegistry, on_change: Callable[[], None]) -> None:
        self.registry = registry
        self._on_change = on_change  # asks for a rebuild (called on the event loop)
        self._lock = threading.Lock()
        self._served: dict[Slot, dict[str, _Served]] = {}
        self._acked: dict[Slot, dict[int, _Served]] = {}  # stream id -> what that proxy last ACKed
        self._searches: dict[Slot, _Search] = {}
        self._culprits: dict[Slot, dict[ObjectKey, Culprit]] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None  # the stream events' (plan runs in a thread)
        registry.observers.append(self)

    # -- the build thread ------------------------------------------------------------------

    def plan(self, result: BuildResult, group: str) -> Plan:
        with self._lock:
            slots = {name for g, name in (*self._searches, *self._culprits) if g == group}
            if not slots:
                return Plan(result.config_for(group), result.routes, {})
            current = {r.key: r for r in result.routes if r.applies_to(group)}
            for (g, _name), culprits in self._culprits.items():
                for key in [k for k, c in culprits.items() if g == group and current.get(k) != c.route]:
                    del culprits[key]  # changed, moved or deleted: tried again (if still there)
                    log.info("%s changed: no longer held back from group %s", key, group)
            routes = []
            for route in result.routes:
                chosen: BuiltRoute | None = route
                for name in _slots_of(route):
                    if name in slots:
                        chosen = self._choose(group, name, route)
                        if chosen is not route:
                            break  # held back (a TLS Route: for all its hostnames, it is one object)
                if chosen is not None and (chosen is route or _clusters_exist(chosen, result.clusters)):
                    routes.append(chosen)
            self._publish_refused()
            steps = {name: (s.id, s.step) for (g, name), s in self._searches.items() if g == group}
        # A config of its own, made whole from these Routes: not the build's cached group configs,
        # nor an incremental update of them (which read the build's own Routes).
        held = dataclasses.replace(result, routes=tuple(routes), configs={}, changed_routes=None,
                                   routes_by_key={r.key: r for r in routes})
        return Plan(held.config_for(group), held.routes, steps)

    def served(self, group: str, plan: Plan, snapshot: Snapshot) -> None:
        """Remembers which Route versions each route configuration version was made from."""
        virtual_hosts = snapshot.for_protocol("delta").resources(VIRTUAL_HOST)
        with self._lock:
            for listener in plan.config.listeners:
                self._remember(group, plan, snapshot, listener.name, listener.port, None, virtual_hosts)
                for host in listener.tls_hosts:
                    self._remember(group, plan, snapshot, host.route_config, listener.port, host.hostname, {})
                for (g, name), search in list(self._searches.items()):  # the same, for virtual hosts
                    found = virtual_hosts.get(name)
                    if g == group and vhds_namespace(name) == listener.name and found is not None \
                            and plan.steps.get(name) == (search.id, search.step) \
                            and self._all_acked(group, name, found.version, VIRTUAL_HOST):
                        search.search.passed()
                        self._advanced((group, name), search)
                        self._call_on_loop(self._on_change)

    def _remember(self, group: str, plan: Plan, snapshot: Snapshot, name: str, port: int,
                  sni_hostname: str | None, virtual_hosts: Mapping[str, VersionedResource]) -> None:
        resource = snapshot.resources(ROUTE).get(name)
        if resource is None:
            return
        versions = self._served.setdefault((group, name), {})
        versions.pop(resource.version, None)
        step = plan.steps.get(name)
        steps = {n: st for n, st in plan.steps.items() if n == name or vhds_namespace(n) == name}
        versions[resource.version] = _Served(resource.version, plan.routes, port, steps, virtual_hosts, sni_hostname)
        if len(versions) > _KEPT_VERSIONS:
            del versions[next(iter(versions))]
        search = self._searches.get((group, name))
        acked = {s.version for s in self._acked.get((group, name), {}).values()}
        if search is not None and step == (search.id, search.step) and acked == {resource.version}:
            # The trial's changes make no difference to the route configuration (a Route
            # whose rules were all left out): the proxies run it already, and the stream
            # will not send it again, so no answer would come.
            search.search.passed()
            self._advanced((group, name), search)
            self._call_on_loop(self._on_change)

    def _choose(self, group: str, name: str, route: BuiltRoute) -> BuiltRoute | None:
        """The version of `route` to serve: its own, or its last ACKed one (None: left out)."""
        slot = (group, name)
        culprits = self._culprits.get(slot, {})
        culprit = culprits.get(route.key)
        if culprit is not None:  # (the same version: plan() released the others)
            return culprit.held
        search = self._searches.get(slot)
        if search is not None and route.key not in search.search.trial and route.key not in search.search.cleared:
            last = search.baseline.get(route.key)
            if last != route:
                return last  # not on trial now: only the changes under test travel
        return route

    # -- stream events, on the event loop --------------------------------------------------

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        if type_url == VIRTUAL_HOST:
            self._virtual_hosts_acked(stream, resources)
            return
        if type_url != ROUTE:
            return
        self._remember_loop()
        changed = False
        with self._lock:
            for name, version in resources.items():
                slot = (stream.group, name)
                served = self._served.get(slot, {}).get(version)
                if served is None:
                    continue
                self._acked.setdefault(slot, {})[stream.stream_id] = served
                search = self._searches.get(slot)
                if search is not None and served.steps.get(name) == (search.id, search.step) \
                        and self._all_acked(stream.group, name, version):
                    search.search.passed()
                    self._advanced(slot, search)
                    changed = True
        if changed:
            self._on_change()

    def _virtual_hosts_acked(self, stream: StreamInfo, resources: Mapping[str, str]) -> None:
        """A delta proxy ACKed virtual hosts: a search in one of them may have passed a trial."""
        self._remember_loop()
        changed = False
        with self._lock:
            for slot, search in list(self._searches.items()):
                group, name = slot
                version = resources.get(name) if group == stream.group else None
                served = self._served_virtual_host(group, name, version)
                if version is not None and served is not None and served.steps.get(name) == (search.id, search.step) \
                        and self._all_acked(group, name, version, VIRTUAL_HOST):
                    search.search.passed()
                    self._advanced(slot, search)
                    changed = True
        if changed:
            self._on_change()

    def _served_virtual_host(self, group: str, name: str, version: str | None) -> _Served | None:
        """The newest build that served this version of a VHDS virtual host."""
        if version is None:
            return None
        for served in reversed(self._served.get((group, vhds_namespace(name)), {}).values()):
            resource = served.virtual_hosts.get(name)
            if resource is not None and resource.version == version:
                return served
        return None

    def on_rejected(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str], message: str) -> None:
        if type_url not in (ROUTE, VIRTUAL_HOST):
            return
        self._remember_loop()
        changed = False
        with self._lock:
            for name, version in resources.items():
                slot = (stream.group, name)
                hostname = None
                if type_url == ROUTE:
                    served = self._served.get(slot, {}).get(version)
                else:  # one virtual host: the Routes of its hostname
                    served = self._served_virtual_host(stream.group, name, version)
                    hostname = name[len(vhds_namespace(name)) + 1:]
                if served is None:
                    continue
                why = f"{stream.node_id}: {message}"
                search = self._searches.get(slot)
                if search is not None:
                    if served.steps.get(name) == (search.id, search.step):
                        search.message = why
                        search.search.failed()
                        self._advanced(slot, search)
                        changed = True
                    continue  # (a version built before the search began)
                contributors = served.contributors(stream.group, hostname)
                if type_url == ROUTE:
                    last = self._acked.get(slot, {}).get(stream.stream_id)
                else:
                    proxy = self.registry.proxies.get(stream.stream_id)
                    last = self._served_virtual_host(
                        stream.group, name, None if proxy is None else proxy.acked.get(VIRTUAL_HOST, {}).get(name))
                acked = {} if last is None else last.contributors(stream.group, hostname)
                suspects = {k: r for k, r in contributors.items() if acked.get(k) != r}
                if not suspects:
                    log.warning("group %s refused %s, and no Route in it changed since the last ACK", *slot)
                    continue
                self.registry.isolations += 1
                order = sorted(suspects, key=str)
                search = _Search(next(self._ids), CulpritSearch(order), suspects, acked, why)
                log.warning("group %s refused %s: looking for the Route(s) to blame among %d changed", *slot,
                            len(suspects))
                self._searches[slot] = search
                self._advanced(slot, search)
                changed = True
            self._publish_refused()
        if changed:
            self._on_change()

    def _remember_loop(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # (driven without a loop: the unit tests)
            self._loop = None

    def _call_on_loop(self, callback: Callable[[], None]) -> None:
        if self._loop is None:
            callback()
        else:
            self._loop.call_soon_threadsafe(callback)

    def on_stream_closed(self, stream: StreamInfo) -> None:
        # The registry forgot the stream already: a search whose group has no proxy left
        # cannot learn anything more (the culprits found stay held).
        with self._lock:
            for acked in self._acked.values():
                acked.pop(stream.stream_id, None)
            if any(p.group == stream.group for p in self.registry.proxies.values()):
                return
            for slot in [s for s in self._searches if s[0] == stream.group]:
                del self._searches[slot]
                log.info("group %s has no proxy left: the search in %s stops", *slot)

    def _all_acked(self, group: str, name: str, version: str, type_url: str = ROUTE) -> bool:
        """Every proxy of the group that is sent `type_url` (VHDS: the delta ones) runs it."""
        return all(p.acked.get(type_url, {}).get(name) == version for p in self.registry.proxies.values()
                   if p.group == group and (type_url == ROUTE or p.protocol == "delta"))

    def _advanced(self, slot: Slot, search: _Search) -> None:
        search.step += 1
        culprits = self._culprits.setdefault(slot, {})
        for key in search.search.culprits:
            if key not in culprits:
                culprits[key] = Culprit(search.suspects[key], search.baseline.get(key), search.message)
                self.registry.culprits += 1
                log.warning("%s is refused by group %s (%s): held back until it changes", key, slot[0],
                            search.message)
        if search.search.done:
            del self._searches[slot]
            log.info("group %s, %s: %d culprit(s) among %d changed Routes, after %d trial(s)", *slot,
                     len(search.search.culprits), len(search.suspects), search.search.trials)
        self._publish_refused()

    def _publish_refused(self) -> None:
        """The registry's view for status reports: replaced whole, so readers need no lock."""
        refused: dict[str, dict[ObjectKey, str]] = {}
        self._culprits = {slot: culprits for slot, culprits in self._culprits.items() if culprits}
        for (group, _), culprits in self._culprits.items():
            for key, culprit in culprits.items():
                refused.setdefault(group, {})[key] = culprit.message
        self.registry.refused_objects = refused

    def searching(self) -> bool:
        with self._lock:
            return bool(self._searches)


def _slots_of(route: BuiltRoute) -> list[str]:
    """The slots a Route is in: a plain Route, its port's route configuration and (delta) the
    virtual host of each of its hostnames there; a TLS Route, the route configuration of each of
    its SNI hostnames."""
    if route.tls is not None:
        return [tls_route_config_name(route.port, h) for h in route.hostnames]
    name = listener_name(route.port)
    return [name, *(f"{name}/{h}" for h in route.hostnames)]


def _clusters_exist(route: BuiltRoute, clusters: Mapping[str, ClusterIR]) -> bool:
    """A held version may name a Backend deleted since: then it is left out."""
    for entry in route.entries:
        if any(b.name not in clusters for b in entry.action.backends):
            return False
        if entry.action.mirror is not None and entry.action.mirror.backend not in clusters:
            return False
    return True
