"""Route-level NACK isolation without gRPC or Envoy: the halving search (ir/culprits.py), and
controlplane/isolation.py driven by a make-believe proxy group that refuses any route
configuration with a route on a /broken path (the real-Envoy test is test_route_isolation_envoy.py)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject
from xds_operator.controlplane.controller import make_snapshot
from xds_operator.controlplane.isolation import RouteIsolation
from xds_operator.ir.builder import Builder
from xds_operator.ir.culprits import CulpritSearch
from xds_operator.sources.state import StateStore
from xds_operator.status.report import proxy_groups, reports
from xds_operator.translate import TranslateOptions
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_operator.xds.cache import SnapshotCache
from xds_operator.xds.callbacks import StreamInfo
from xds_operator.xds.proxies import ProxyRegistry

NS = "iso"
PORT = 8080
GROUP = "g"


def search_for(suspects: list[int], culprits: set[int]) -> CulpritSearch[int]:
    search = CulpritSearch(suspects)
    while not search.done:
        search.failed() if search.trial & culprits else search.passed()
    return search


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 33, 100])
def test_the_search_finds_every_culprit_in_few_trials(n):
    rng = random.Random(n)
    for k in range(1, min(n, 4) + 1):
        for _ in range(20):
            culprits = set(rng.sample(range(n), k))
            search = search_for(list(range(n)), culprits)
            assert set(search.culprits) == culprits
            assert search.cleared == set(range(n)) - culprits
            assert search.trials <= k * (math.ceil(math.log2(n)) + 1), (n, culprits, search.trials)


def test_every_pair_of_culprits_among_a_few_is_found():
    for n in range(2, 9):
        for pair in itertools.combinations(range(n), 2):
            assert sorted(search_for(list(range(n)), set(pair)).culprits) == list(pair)


def route(name: str, path: str, generation: int = 1) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"port": PORT, "rules": [{"matches": [{"path": {"type": "Prefix", "value": path}}],
                                          "backends": [{"name": "web"}]}]}})


class Group:
    """N Routes on one port, served to proxies of one group that refuse a /broken route."""

    def __init__(self, n: int, nodes: tuple[str, ...] = ("a",), refusing: tuple[str, ...] | None = None) -> None:
        self.state = StateStore()
        self.state.put(UserObject.from_manifest({
            "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "web", "namespace": NS},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9}]}}))
        for i in range(n):
            self.state.put(route(f"r{i}", f"/r{i}"))
        self.registry = ProxyRegistry()
        self.requests = 0
        self.isolation = RouteIsolation(self.registry, self._requested)
        self.builder = Builder()
        self.streams = [StreamInfo(i, node, GROUP, "sotw") for i, node in enumerate(nodes)]
        self.refusing = set(nodes if refusing is None else refusing)
        for stream in self.streams:
            self.registry.on_stream_open(stream)
        self.round_trips = 0
        self.runs: dict[int, str] = {}  # stream id -> the version of the route configuration it runs
        self.refused: dict[int, set[str]] = {}
        self.settle()

    def _requested(self) -> None:
        self.requests += 1

    def change(self, name: str, path: str) -> None:
        old = self.state.objects[ObjectKey("Route", NS, name)]
        self.state.put(route(name, path, old.generation + 1))

    def round(self) -> bool:
        """One build served to every proxy; whether the isolation asked for another."""
        before = self.requests
        self.result = self.builder.build(self.state)
        self.snapshot = make_snapshot(self.result, GROUP, TranslateOptions(), None, self.isolation)
        self.round_trips += 1
        for stream in self.streams:  # (clusters, endpoints, listeners: all fine)
            for type_url in (CLUSTER, ENDPOINT, LISTENER):
                versions = {n: r.version for n, r in self.snapshot.resources(type_url).items()}
                self.registry.on_ack(stream, type_url, versions, (), versions)
        resource = self.snapshot.resources(ROUTE).get(f"http-{PORT}")
        if resource is not None:
            bad = any(r.match.path_separated_prefix.startswith("/broken")
                      for vh in resource.message.virtual_hosts for r in vh.routes)
            for stream in self.streams:
                # A stream sends neither what the proxy runs nor what it refused.
                if resource.version == self.runs.get(stream.stream_id) or resource.version in self.refused.setdefault(stream.stream_id, set()):
                    continue
                if bad and stream.node_id in self.refusing:
                    self.refused[stream.stream_id].add(resource.version)
                    self.registry.on_rejected(stream, ROUTE, {resource.name: resource.version}, "bad regex")
                else:
                    self.runs[stream.stream_id] = resource.version
                    self.registry.on_ack(stream, ROUTE, {resource.name: resource.version}, (), None)
        return self.requests > before

    def settle(self) -> int:
        """Round trips until nothing more is asked."""
        start = self.round_trips
        while self.round():
            assert self.round_trips - start < 100
        return self.round_trips - start

    def paths(self) -> set[str]:
        resource = self.snapshot.resources(ROUTE)[f"http-{PORT}"]
        return {r.match.path_separated_prefix for vh in resource.message.virtual_hosts for r in vh.routes}

    def reasons(self) -> dict[str, str]:
        cache = SnapshotCache()
        cache.watch(GROUP, lambda: None)  # as the group's streams do: the status pass reads watched groups
        cache.publish(lambda group: self.snapshot, {GROUP: self.snapshot})
        found = reports(self.result, proxy_groups(self.registry, cache), self.registry.refused_objects)
        return {key.name: next(c.reason for c in r.conditions if c.type == "Programmed")
                for key, r in found.items() if key.kind == "Route"}


def test_one_culprit_among_changes_on_a_port_is_held_back_and_the_rest_served():
    group = Group(8)
    for i in range(8):
        group.change(f"r{i}", f"/new{i}" if i != 5 else "/broken5")
    group.settle()
    assert group.paths() == {f"/new{i}" for i in range(8) if i != 5} | {"/r5"}
    reasons = group.reasons()
    assert reasons.pop("r5") == "Rejected" and set(reasons.values()) == {"Programmed"}
    assert (group.registry.isolations, group.registry.culprits) == (1, 1)
    assert group.registry.refused_objects[GROUP][ObjectKey("Route", NS, "r5")] == "a: bad regex"

    # Released when it changes: served again, with the next changes of the others.
    group.change("r5", "/fixed5")
    group.change("r1", "/newer1")
    assert group.settle() == 1
    assert {"/fixed5", "/newer1"} <= group.paths()
    assert set(group.reasons().values()) == {"Programmed"}


def test_two_culprits_and_a_new_route_without_an_acked_version():
    group = Group(6)
    group.change("r1", "/broken1")
    group.change("r4", "/broken4")
    group.change("r2", "/new2")
    group.state.put(route("added", "/broken-added"))  # never ACKed: left out
    group.settle()
    assert group.paths() == {"/r0", "/r1", "/new2", "/r3", "/r4", "/r5"}
    assert {n for n, reason in group.reasons().items() if reason == "Rejected"} == {"r1", "r4", "added"}
    assert group.registry.culprits == 3


def test_a_culprit_is_held_for_the_group_when_one_of_its_proxies_refuses_it():
    group = Group(4, nodes=("a", "b"), refusing=("b",))
    group.change("r0", "/broken0")
    group.change("r3", "/new3")
    group.settle()
    assert group.paths() == {"/r0", "/r1", "/r2", "/new3"}
    assert group.registry.refused_objects == {GROUP: {ObjectKey("Route", NS, "r0"): "b: bad regex"}}


def test_a_trial_that_changes_nothing_in_the_route_configuration_does_not_stall_the_search():
    group = Group(3)
    # A change that leaves the route configuration as it is: "a" is first in the search order,
    # so it is the first trial, which the proxies already run.
    group.state.put(route("a", "/a"))
    group.settle()
    obj = route("a", "/a", 2)
    group.state.put(UserObject.from_manifest({"apiVersion": API_VERSION, "kind": "Route",
                                              "metadata": {"name": "a", "namespace": NS, "generation": 2},
                                              "spec": {**obj.spec, "proxies": [GROUP]}}))
    group.change("r0", "/broken0")
    group.change("r2", "/new2")
    group.settle()
    assert not group.isolation.searching()
    assert group.paths() == {"/a", "/r0", "/r1", "/new2"}
    assert set(group.registry.refused_objects[GROUP]) == {ObjectKey("Route", NS, "r0")}


def test_a_deleted_culprit_is_forgotten():
    group = Group(3)
    group.change("r0", "/broken0")
    group.change("r1", "/new1")
    group.settle()
    assert set(group.registry.refused_objects[GROUP]) == {ObjectKey("Route", NS, "r0")}
    group.state.delete(ObjectKey("Route", NS, "r0"))
    group.settle()
    assert group.registry.refused_objects == {}
    group.state.put(route("r0", "/again0"))
    group.settle()
    assert group.paths() == {"/again0", "/new1", "/r2"}


def test_a_search_stops_when_its_group_has_no_proxy_left():
    group = Group(4)
    group.change("r0", "/broken0")
    group.change("r1", "/new1")
    group.round()  # rejected: the search starts
    assert group.isolation.searching()
    for stream in group.streams:
        group.registry.on_stream_closed(stream)
    assert not group.isolation.searching()


def test_without_a_rejection_nothing_is_held():
    group = Group(5)
    for i in range(5):
        group.change(f"r{i}", f"/new{i}")
    assert group.settle() == 1
    assert group.paths() == {f"/new{i}" for i in range(5)}
    assert group.registry.isolations == 0
