"""What the event loop serving the ADS streams no longer does: make a new group's snapshot,
compute /status, copy every proxy's ACK tables, or judge each object once per proxy.

No timing here (speed is what benchmarks/scale.py prints): the tests check where work runs and
that the status it gives is the one it always gave.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable

import aiohttp
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject
from xds_operator.controlplane import controller as controller_module
from xds_operator.controlplane.app import ControlPlane
from xds_operator.controlplane.controller import make_snapshot
from xds_operator.ir.builder import Builder, BuildResult
from xds_operator.sources.state import StateStore
from xds_operator.status import report as report_module
from xds_operator.status import status_page as status_page_module
from xds_operator.status.report import proxy_groups, reports
from xds_operator.status.status_page import StatusPage
from xds_operator.translate import TranslateOptions
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE
from xds_operator.xds.cache import SnapshotCache
from xds_operator.xds.callbacks import StreamInfo
from xds_operator.xds.proxies import ProxyRegistry, ProxyState
from xds_operator.xds.snapshot import Snapshot

from .xds_client import AdsClient, resource_names

NS = "t"


def objects(n: int) -> list[UserObject]:
    out = []
    for i in range(n):
        out.append(UserObject.from_manifest({
            "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": f"b{i}", "namespace": NS},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9000 + i}]}}))
        out.append(UserObject.from_manifest({
            "apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": f"r{i}", "namespace": NS},
            "spec": {"hostnames": [f"h{i}.example.com"],
                     "rules": [{"matches": [{"path": {"type": "Prefix", "value": "/"}}], "backends": [{"name": f"b{i}"}]}]}}))
    return out


def built(n: int) -> tuple[BuildResult, Snapshot]:
    state = StateStore()
    for obj in objects(n):
        state.put(obj)
    result = Builder().build(state)
    return result, make_snapshot(result, "g", TranslateOptions())


def versions(snapshot: Snapshot, type_url: str) -> dict[str, str]:
    return {n: r.version for n, r in snapshot.resources(type_url).items()}


@pytest.fixture
async def plane():
    made: list[ControlPlane] = []

    async def make(http: bool = False) -> ControlPlane:
        p = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0" if http else None, debounce=0.01)
        for obj in objects(3):
            p.state.put(obj)
        made.append(p)
        await p.start()
        await asyncio.wait_for(p.controller.wait_built(), 10)
        return p

    yield make
    for p in made:
        await p.stop()


def record_snapshot_threads(monkeypatch: pytest.MonkeyPatch, gate: dict[str, threading.Event] | None = None
                            ) -> list[tuple[str, int]]:
    """(group, thread id) of every snapshot the controller makes; a group in `gate` waits for its event."""
    calls: list[tuple[str, int]] = []

    def recording(result: BuildResult, group: str, *args: object, **kwargs: object) -> Snapshot:
        calls.append((group, threading.get_ident()))
        if gate is not None and group in gate:
            assert gate[group].wait(10)
        return make_snapshot(result, group, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(controller_module, "make_snapshot", recording)
    return calls


# -- a new group's snapshot -------------------------------------------------------------

async def test_a_new_groups_first_proxy_has_its_snapshot_made_off_the_event_loop(plane, monkeypatch) -> None:
    """It was made on the loop, by the stream's first request: 0.7-0.8 s at 10,000 Routes."""
    calls = record_snapshot_threads(monkeypatch)
    p = await plane()
    client = AdsClient(p.xds_port, node_id="newcomer", cluster="new-group")
    try:
        client.send(CLUSTER)
        cds = await client.expect(CLUSTER, timeout=10)
        assert sorted(resource_names(cds)) == [f"{NS}/b{i}" for i in range(3)]
        client.send(ENDPOINT, resource_names(cds))
        client.ack(cds)
        await client.expect(ENDPOINT, timeout=10)
    finally:
        await client.close()
    made = [thread for group, thread in calls if group == "new-group"]
    assert made and threading.get_ident() not in made


async def test_status_waits_for_a_new_groups_snapshot_and_counts_its_proxy(plane, monkeypatch) -> None:
    """While the snapshot is being made, the proxy of that group is counted as it always was
    (connected, not yet synced), not left out of the totals."""
    gate = {"slow": threading.Event()}
    record_snapshot_threads(monkeypatch, gate)
    p = await plane(http=True)
    client = AdsClient(p.xds_port, node_id="slow-1", cluster="slow")
    try:
        client.send(CLUSTER)
        for _ in range(500):
            if any(proxy.group == "slow" for proxy in p.registry.proxies.values()):
                break
            await asyncio.sleep(0.01)
        assert p.cache.made("slow") is None
        async with aiohttp.ClientSession() as session:
            answer = asyncio.create_task(session.get(f"http://127.0.0.1:{p.http_port}/status"))
            await asyncio.sleep(0.3)
            assert not answer.done()  # it waits for the snapshot
            gate["slow"].set()
            response = await asyncio.wait_for(answer, 10)
            body = await response.json()
        route = body[f"Route/{NS}/r0"]
        assert route["proxies"] == {"total": 1, "synced": 0, "nacked": 0}
        programmed = next(c for c in route["conditions"] if c["type"] == "Programmed")
        assert (programmed["status"], programmed["reason"]) == ("False", "Pending")
        await client.expect(CLUSTER, timeout=10)  # and the stream is served once it is made
    finally:
        gate["slow"].set()
        await client.close()


def _snapshot(name: str) -> Snapshot:
    return Snapshot.from_messages({CLUSTER: {name: cluster_pb2.Cluster(name=name)}})


async def test_a_build_published_while_a_group_snapshot_is_made_supersedes_it() -> None:
    """The snapshot made from the older build is dropped; the group gets the newer build's."""
    cache = SnapshotCache()
    release = threading.Event()
    old, new = _snapshot("old"), _snapshot("new")

    def slow_old_factory(group: str) -> Snapshot:
        assert release.wait(10)
        return old

    cache.publish(slow_old_factory, {})
    heard: list[str] = []
    cache.watch("g", lambda: heard.append("changed"))
    assert cache.made("g") is None
    cache.publish(lambda group: new, {})  # the watched group was not among the build's groups
    release.set()
    await asyncio.wait_for(cache.settled(), 10)
    await asyncio.sleep(0.05)  # the superseded making ends too
    assert cache.made("g") is new
    assert heard == ["changed"]
    cache.close()


async def test_a_watched_groups_snapshot_is_kept_while_its_next_one_is_made() -> None:
    """A group that missed a build's precomputed snapshots goes on being served its last one."""
    cache = SnapshotCache()
    first, second = _snapshot("a"), _snapshot("b")
    cache.publish(lambda group: first, {})
    heard: list[str] = []
    cache.watch("g", lambda: heard.append("changed"))
    await cache.settled()
    assert cache.made("g") is first and heard == ["changed"]
    release = threading.Event()

    def slow(group: str) -> Snapshot:
        assert release.wait(10)
        return second

    cache.publish(slow, {})
    assert cache.made("g") is first  # not None: the streams keep something to compare with
    release.set()
    await cache.settled()
    assert cache.made("g") is second and heard == ["changed", "changed"]


# -- /status ----------------------------------------------------------------------------

async def test_status_is_computed_off_the_event_loop(plane, monkeypatch) -> None:
    threads: list[int] = []
    original = status_page_module.tally

    def recording(*args: object, **kwargs: object) -> object:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(status_page_module, "tally", recording)
    p = await plane(http=True)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{p.http_port}/status") as response:
        body = await response.json()
    assert f"Route/{NS}/r0" in body
    assert threads and threading.get_ident() not in threads


# -- /proxies ---------------------------------------------------------------------------

async def test_proxies_is_rendered_off_the_event_loop_from_copies_and_filters_by_node_and_cluster(
        plane, monkeypatch) -> None:
    threads: list[int] = []
    original = ProxyState.to_dict

    def recording(self: ProxyState) -> dict[str, object]:
        threads.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(ProxyState, "to_dict", recording)
    p = await plane(http=True)
    for stream in (StreamInfo(901, "a", "g1", "sotw"), StreamInfo(902, "b", "g2", "delta")):
        p.registry.on_stream_open(stream)
        p.registry.on_ack(stream, CLUSTER, {"x": "1"}, (), {"x": "1"})
    frozen = p.registry.frozen()
    p.registry.on_ack(StreamInfo(901, "a", "g1", "sotw"), CLUSTER, {"x": "2"}, (), {"x": "2"})
    assert frozen[0].acked[CLUSTER] == {"x": "1"}  # a copy: later ACKs do not change it
    base = f"http://127.0.0.1:{p.http_port}/proxies"
    async with aiohttp.ClientSession() as session:
        async def get(query: str) -> list[dict]:
            async with session.get(base + query) as response:
                return await response.json()

        assert [(x["node"], x["cluster"]) for x in await get("")] == [("a", "g1"), ("b", "g2")]
        assert [x["node"] for x in await get("?node=b")] == ["b"]
        [one] = await get("?cluster=g1")
        assert one["acked"] == {"CDS": {"x": "2"}}
        assert await get("?cluster=g1&node=b") == []
    assert threads and threading.get_ident() not in threads


# -- shared ACK tables --------------------------------------------------------------------

def test_proxies_that_ack_the_same_state_share_one_table_that_later_acks_do_not_change() -> None:
    registry = ProxyRegistry()
    a, b = StreamInfo(1, "a", "g", "sotw"), StreamInfo(2, "b", "g", "delta")
    registry.on_stream_open(a)
    registry.on_stream_open(b)
    state = {"x": "1", "y": "1"}
    registry.on_ack(a, CLUSTER, state, (), dict(state))  # SotW: the whole state
    registry.on_ack(b, CLUSTER, state, (), None)  # delta: the changes, on an empty table
    table_a, table_b = registry.proxies[1].acked[CLUSTER], registry.proxies[2].acked[CLUSTER]
    assert table_a == table_b == state and table_a is table_b
    taken = registry.proxies[1].acked[CLUSTER]
    registry.on_ack(a, CLUSTER, {"x": "2"}, (), {"x": "2", "y": "1"})
    assert taken == {"x": "1", "y": "1"}  # what a reader took is not changed under it
    assert registry.proxies[1].acked[CLUSTER] == {"x": "2", "y": "1"}
    registry.on_ack(b, CLUSTER, {"x": "2"}, ("y",), None)
    assert registry.proxies[2].acked[CLUSTER] == {"x": "2"} and taken == {"x": "1", "y": "1"}


def test_the_same_delta_change_on_the_same_table_gives_every_proxy_the_same_table() -> None:
    registry = ProxyRegistry()
    streams = [StreamInfo(i, f"e{i}", "g", "delta") for i in range(3)]
    for stream in streams:
        registry.on_stream_open(stream)
        registry.on_ack(stream, ENDPOINT, {"a": "1", "b": "1"}, (), None)
    for stream in streams:
        registry.on_ack(stream, ENDPOINT, {"a": "2"}, ("b",), None)
    tables = [registry.proxies[s.stream_id].acked[ENDPOINT] for s in streams]
    assert tables[0] == {"a": "2"} and all(t is tables[0] for t in tables)


def test_a_rejection_is_cleared_by_an_ack_without_changing_a_table_taken_before() -> None:
    registry = ProxyRegistry()
    stream = StreamInfo(1, "a", "g", "sotw")
    registry.on_stream_open(stream)
    registry.on_rejected(stream, ROUTE, {"r": "2"}, "bad")
    taken = registry.proxies[1].rejected[ROUTE]
    registry.on_ack(stream, ROUTE, {"r": "3"}, (), {"r": "3"})
    assert "r" in taken and not registry.proxies[1].rejected[ROUTE]


# -- one verdict per ACK state ------------------------------------------------------------

def _proxies_in_mixed_states(snapshot: Snapshot) -> ProxyRegistry:
    """Twenty proxies: synced, one type behind, a route configuration refused, nothing ACKed yet."""
    registry = ProxyRegistry()
    listener = next(iter(snapshot.resources(LISTENER)))
    for i in range(20):
        stream = StreamInfo(i, f"envoy-{i % 17}", "g", "sotw")  # some nodes with two streams
        registry.on_stream_open(stream)
        if i % 4 == 3:
            continue  # nothing ACKed
        for type_url in PUSH_ORDER:
            acked = versions(snapshot, type_url)
            if i % 4 == 1 and type_url == ENDPOINT:
                acked = dict.fromkeys(acked, "old")
            if i % 4 == 2 and type_url == ROUTE:
                registry.on_rejected(stream, ROUTE, {listener: snapshot.resources(ROUTE)[listener].version},
                                     f"bad regex {i % 3}")
                continue
            registry.on_ack(stream, type_url, acked, (), acked)
    return registry


def watched_cache(snapshot: Snapshot) -> SnapshotCache:
    """A cache serving `snapshot` to group "g", which is watched (connected proxies)."""
    cache = SnapshotCache()
    cache.watch("g", lambda: None)
    cache.publish(lambda group: snapshot, {"g": snapshot})
    return cache


def _unshared(groups: dict[str, tuple[Snapshot, list[ProxyState]]]) -> dict[str, tuple[Snapshot, list[ProxyState]]]:
    """The same proxies, each with tables of its own (as before they were shared)."""
    return {g: (s, [dataclasses.replace(p, acked={t: dict(v) for t, v in p.acked.items()},
                                        rejected={t: dict(v) for t, v in p.rejected.items()}) for p in ps])
            for g, (s, ps) in groups.items()}


def test_reports_from_shared_states_are_those_of_every_proxy_judged_alone() -> None:
    result, snapshot = built(4)
    registry = _proxies_in_mixed_states(snapshot)
    cache = watched_cache(snapshot)
    groups = proxy_groups(registry, cache, copy=True)
    shared = reports(result, groups)
    alone = reports(result, _unshared(groups))
    assert shared == alone
    route = shared[ObjectKey("Route", NS, "r0")]
    assert (route.proxies.total, route.proxies.synced, route.proxies.nacked) == (20, 10, 5)  # envoy-1 and the like are only behind on endpoints
    assert list(route.nacks) == sorted(f"envoy-{i % 17}: bad regex {i % 3}" for i in (2, 6, 10, 14, 18))
    backend = shared[ObjectKey("Backend", NS, "b0")]
    assert (backend.proxies.total, backend.proxies.synced, backend.proxies.nacked) == (20, 10, 0)


def test_a_thousand_synced_proxies_cost_one_verdict_per_object(monkeypatch) -> None:
    """It was one per object and proxy: 39.6 s of CPU at 1,000 proxies and 20,000 objects."""
    result, snapshot = built(5)
    registry = ProxyRegistry()
    for i in range(1000):
        stream = StreamInfo(i, f"envoy-{i}", "g", "sotw")
        registry.on_stream_open(stream)
        for type_url in PUSH_ORDER:
            registry.on_ack(stream, type_url, versions(snapshot, type_url), (), versions(snapshot, type_url))
    cache = watched_cache(snapshot)
    verdicts = count_calls(monkeypatch, report_module, "_verdict")
    found = reports(result, proxy_groups(registry, cache, copy=True))
    served = [r for r in found.values() if r.served]
    assert len(served) == 10 and all(r.proxies.synced == r.proxies.total == 1000 for r in served)
    assert verdicts() == len(served)


def count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> Callable[[], int]:
    calls = 0
    original = getattr(module, name)

    def counting(*args: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args)

    monkeypatch.setattr(module, name, counting)
    return lambda: calls


# -- the /status document -----------------------------------------------------------------

def test_the_status_page_is_the_json_of_the_reports_as_they_change() -> None:
    """Kept pieces and a kept document are reused only while their inputs are the same."""
    result, snapshot = built(3)
    registry = _proxies_in_mixed_states(snapshot)
    cache = watched_cache(snapshot)
    page = StatusPage()
    problems = [{"file": "x.yaml", "message": "broken"}]

    def expected(indent: bool) -> str:
        groups = proxy_groups(registry, cache, copy=True)
        body: dict[str, object] = {str(k): r.to_status() for k, r in reports(result, groups).items()}
        body["problems"] = problems
        return json.dumps(body, indent=2 if indent else None) + "\n"

    def page_now(indent: bool = False) -> str:
        return page.document(result, proxy_groups(registry, cache, copy=True), {}, problems, indent=indent)

    first = page_now()
    assert first == expected(False) and page_now() == first
    assert page_now(indent=True) == expected(True)
    behind = StreamInfo(3, "envoy-3", "g", "sotw")  # the proxy that had ACKed nothing catches up
    for type_url in PUSH_ORDER:
        registry.on_ack(behind, type_url, versions(snapshot, type_url), (), versions(snapshot, type_url))
    assert page_now() == expected(False) != first
    registry.on_stream_closed(StreamInfo(0, "envoy-0", "g", "sotw"))
    assert page_now() == expected(False)
    assert page.document(None, {}, {}, [], indent=False) == "{}\n"
