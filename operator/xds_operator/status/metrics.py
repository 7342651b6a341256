"""/metrics, through prometheus_client: a registry per control plane (several run in one test
process), the live gauges and totals computed at scrape time by a Collector over the controller
and the proxy registry, and the convergence histogram kept by a stream callback.

xds_operator_convergence_seconds{group}: from a change (the first of the batch a build took in)
to the moment every proxy of the group connected then has ACKed the new versions of each type
the change touched. A NACKing proxy holds its group's observation until a later version is
ACKed; a proxy that connects meanwhile gets the new config at once and is not waited for.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..api.conditions import ACCEPTED
from ..ir.builder import BuildResult
from ..sources.findings import Finding
from ..sources.state import StateStore
from ..translate.resources import PUSH_ORDER, SHORT_NAMES
from ..xds.cache import SnapshotCache
from ..xds.callbacks import NoCallbacks, StreamInfo
from ..xds.proxies import ProxyRegistry
from ..xds.snapshot import PROTOCOLS, Snapshot

# From one Envoy on loopback (milliseconds) to thousands of streams on a busy node (seconds).
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Built(Protocol):
    """What the metrics read of the controller (controlplane.controller.Controller, a layer above)."""

    state: StateStore
    builds: int
    last_build_seconds: float

    @property
    def result(self) -> BuildResult | None: ...


def source_problems(controller: Built) -> list[Finding]:
    return [p for problems in controller.state.problems.values() for p in problems]


class ControlPlaneCollector(Collector):
    """Gauges and totals read from the live state at each scrape (nothing to keep in step)."""

    def __init__(self, controller: Built, registry: ProxyRegistry) -> None:
        self.controller = controller
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        proxies = list(self.registry.proxies.values())
        by_protocol = Counter(p.protocol for p in proxies)
        connected = GaugeMetricFamily("xds_operator_connected_proxies", "Envoys connected over ADS.",
                                      labels=["protocol"])
        for protocol in ("sotw", "delta"):
            connected.add_metric([protocol], by_protocol.get(protocol, 0))
        yield connected
        yield GaugeMetricFamily("xds_operator_nacking_proxies",
                                "Connected Envoys whose last response of some type was a NACK.",
                                value=sum(1 for p in proxies if p.nacks))
        for name, totals, help_ in (("xds_operator_xds_responses", self.registry.responses, "xDS responses sent."),
                                    ("xds_operator_xds_acks", self.registry.acks, "ACKs received."),
                                    ("xds_operator_xds_nacks", self.registry.nacks, "NACKs received.")):
            family = CounterMetricFamily(name, help_, labels=["type"])
            for type_url in PUSH_ORDER:
                family.add_metric([SHORT_NAMES[type_url]], totals.get(type_url, 0))
            yield family
        yield CounterMetricFamily("xds_operator_route_isolations",
                                  "Searches for the Routes to blame in a refused route configuration.",
                                  value=self.registry.isolations)
        yield CounterMetricFamily("xds_operator_route_culprits", "Routes found refused (and held back).",
                                  value=self.registry.culprits)
        yield CounterMetricFamily("xds_operator_builds", "Config builds (each one a debounced batch of changes).",
                                  value=self.controller.builds)
        yield GaugeMetricFamily("xds_operator_last_build_seconds",
                                "Duration of the last build, translation and snapshot.",
                                value=self.controller.last_build_seconds)
        by_severity = Counter(p.severity.value for p in source_problems(self.controller))
        problems = GaugeMetricFamily("xds_operator_source_problems",
                                     "What the sources cannot load now (unreadable or broken files, duplicates).",
                                     labels=["severity"])
        for severity in ("error", "warning"):
            problems.add_metric([severity], by_severity.get(severity, 0))
        yield problems
        states: Counter[tuple[str, str]] = Counter()
        result = self.controller.result
        if result is not None:
            for key, status in result.statuses.items():
                accepted = status.condition(ACCEPTED)
                states[(key.kind, "true" if accepted and accepted.status else "false")] += 1
        objects = GaugeMetricFamily("xds_operator_objects", "Routes and Backends, by whether their spec is accepted.",
                                    labels=["kind", "accepted"])
        for kind in ("Route", "Backend"):
            for ok in ("true", "false"):
                objects.add_metric([kind, ok], states.get((kind, ok), 0))
        yield objects


@dataclass
class _Pending:
    """A group's change not yet ACKed by all: since when, and who still owes which types."""

    version: str
    since: float  # time.monotonic()
    waiting: dict[int, set[str]]  # stream id -> type URLs whose new versions it has not ACKed
    # (protocol, type URL) -> name -> version, made lazily
    expected: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


class ConvergenceTracker(NoCallbacks):
    """Observes xds_operator_convergence_seconds. Stream callbacks placed after the proxy
    registry (xds.callbacks.FanOut), so an ACK is on the registry's books when it is looked at."""

    def __init__(self, registry: ProxyRegistry, cache: SnapshotCache, histogram: Histogram) -> None:
        self.registry = registry
        self.cache = cache
        self.histogram = histogram
        self._versions: dict[str, Snapshot] = {}  # group -> the snapshot its proxies were given
        self._pending: dict[str, _Pending] = {}

    def on_build(self, changed_at: float) -> None:
        """After a build is published: `changed_at` (time.monotonic()) is when its first change was made."""
        groups = self.cache.groups()
        for gone in self._versions.keys() - groups:
            self._versions.pop(gone, None)
            self._pending.pop(gone, None)
        for group in groups:
            snapshot = self.cache.made(group)
            if snapshot is None:
                continue  # its first proxy just connected: made from this build, off the loop
            before = self._versions.get(group)
            self._versions[group] = snapshot
            if before is None:
                continue  # first seen now: no change of this group to time
            # By protocol: delta proxies get the route configurations' virtual hosts over VHDS.
            touched = {protocol: {t for t in PUSH_ORDER if before.for_protocol(protocol).versions.get(t)
                                  != snapshot.for_protocol(protocol).versions.get(t)}
                       for protocol in PROTOCOLS}
            if not any(touched.values()):
                continue
            pending = self._pending.get(group)
            since = changed_at if pending is None else min(changed_at, pending.since)
            waiting = {p.stream_id: set(touched[p.protocol]) for p in self.registry.proxies.values()
                       if p.group == group and touched.get(p.protocol)}
            if pending is not None:  # what the last change still waits for is owed too
                for stream_id, types in pending.waiting.items():
                    waiting.get(stream_id, set()).update(types)
            self._pending[group] = _Pending(snapshot.version, since, waiting)
            self._check(group)

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._first_seen(stream.group)

    def _first_seen(self, group: str) -> None:
        """What a group is given, from its first proxy on: a change is timed from there. (A new
        group's snapshot is made off the loop: it may come after the first proxy, before its first ACK.)"""
        if group not in self._versions and (snapshot := self.cache.made(group)) is not None:
            self._versions[group] = snapshot

    def on_stream_closed(self, stream: StreamInfo) -> None:
        pending = self._pending.get(stream.group)
        if pending is not None and pending.waiting.pop(stream.stream_id, None) is not None:
            if any(p.group == stream.group for p in self.registry.proxies.values()):
                self._check(stream.group)
            else:  # nobody left to converge
                del self._pending[stream.group]

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        self._first_seen(stream.group)
        pending = self._pending.get(stream.group)
        if pending is None:
            return
        types = pending.waiting.get(stream.stream_id)
        proxy = self.registry.proxies.get(stream.stream_id)
        if not types or type_url not in types or proxy is None:
            return
        expected = pending.expected.get((stream.protocol, type_url))
        if expected is None:
            snapshot = self.cache.made(stream.group)
            if snapshot is None or snapshot.version != pending.version:
                return  # superseded: the next build replaces this entry
            expected = pending.expected[stream.protocol, type_url] = {
                n: r.version for n, r in snapshot.for_protocol(stream.protocol).resources(type_url).items()}
        if proxy.acked.get(type_url, {}) == expected:
            types.discard(type_url)
            if not types:
                del pending.waiting[stream.stream_id]
                self._check(stream.group)

    def _check(self, group: str) -> None:
        pending = self._pending.get(group)
        if pending is not None and not pending.waiting:
            del self._pending[group]
            self.histogram.labels(group=group).observe(time.monotonic() - pending.since)


class Metrics:
    """The registry /metrics renders, and the tracker that feeds its histogram."""

    def __init__(self, controller: Built, registry: ProxyRegistry, cache: SnapshotCache) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ControlPlaneCollector(controller, registry))
        self.convergence = Histogram("xds_operator_convergence_seconds",
                                     "Time from a change to its ACK by every connected proxy of the group.",
                                     ["group"], registry=self.registry, buckets=CONVERGENCE_BUCKETS)
        self.tracker = ConvergenceTracker(registry, cache, self.convergence)
