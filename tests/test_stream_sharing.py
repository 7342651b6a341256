"""What the streams of one proxy group share instead of a copy each (1,000 streams: issue 10), and
the turns that keep the event loop answering while a change wakes all of them.

grpc-free, against the state machines and the proxy registry; the protocol itself is checked by
test_xds_state_machines.py and test_ads_protocol.py.
"""

from __future__ import annotations

import asyncio

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_operator.translate.resources import CLUSTER, ENDPOINT
from xds_operator.xds.callbacks import StreamInfo
from xds_operator.xds.delta import DeltaStream
from xds_operator.xds.proxies import ProxyRegistry
from xds_operator.xds.server import Turns
from xds_operator.xds.snapshot import Snapshot
from xds_operator.xds.sotw import SotwStream

NAMES = [f"c{i}" for i in range(20)]


def snapshot() -> Snapshot:
    return Snapshot.from_messages({
        CLUSTER: {n: cluster_pb2.Cluster(name=n) for n in NAMES},
        ENDPOINT: {n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in NAMES},
    })


def sotw_synced(registry: ProxyRegistry, current: Snapshot, stream_id: int) -> SotwStream:
    """A SotW stream that has ACKed all clusters and endpoint sets, its requests made afresh
    (new strings, as grpc parses them for every stream)."""
    info = StreamInfo(stream_id, f"envoy-{stream_id}", "g", "sotw")
    registry.on_stream_open(info)
    stream = SotwStream(info, registry, lambda: current)
    cds = stream.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))[0]
    names = ["".join(n) for n in NAMES]  # (equal, not the same objects)
    eds = stream.on_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names))[0]
    stream.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                                     response_nonce=cds.nonce))
    stream.on_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=list(reversed(names)),
                                                     version_info=eds.version_info, response_nonce=eds.nonce))
    return stream


def test_sotw_streams_of_a_group_share_what_they_were_sent_and_the_registry_keeps_no_copy() -> None:
    registry, current = ProxyRegistry(), snapshot()
    a, b = sotw_synced(registry, current, 1), sotw_synced(registry, current, 2)
    for type_url in (CLUSTER, ENDPOINT):
        assert a.types[type_url].sent is b.types[type_url].sent
        assert dict(registry.proxies[1].acked[type_url]) == {n: current.resources(type_url)[n].version for n in NAMES}
    # One subscription object for both, however the requests spelled the names.
    assert a.types[ENDPOINT].names is b.types[ENDPOINT].names
    assert a.types[ENDPOINT].names == frozenset(NAMES)


def test_a_response_is_made_once_per_snapshot_and_copied_with_a_nonce_per_stream() -> None:
    current = snapshot()
    responses = []
    for stream_id in (1, 2):
        stream = SotwStream(StreamInfo(stream_id, f"envoy-{stream_id}", "g", "sotw"), ProxyRegistry(),
                            lambda: current)
        responses += stream.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
    first, second = responses
    assert first.nonce != second.nonce
    second.nonce = first.nonce
    assert first == second and len(first.resources) == len(NAMES)
    assert list(current.responses) == [(CLUSTER, first.version_info, None)]


def test_a_reconnecting_delta_client_keeps_the_snapshots_strings_and_not_its_report() -> None:
    current = snapshot()
    stream = DeltaStream(StreamInfo(1, "envoy-1", "g", "delta"), ProxyRegistry(), lambda: current)
    reported = {"".join(n): current.resources(CLUSTER)[n].version for n in NAMES}
    assert stream.on_request(discovery_pb2.DeltaDiscoveryRequest(
        type_url=CLUSTER, initial_resource_versions=reported)) == []  # it runs the current clusters
    state = stream.types[CLUSTER]
    assert state.reported == {}
    own = {n: n for n in current.resources(CLUSTER)}
    assert all(name is own[name] for name in state.client)


def test_turns_spread_the_woken_streams_over_loop_iterations() -> None:
    async def scenario() -> list[str]:
        turns, order = Turns(per_iteration=4), []

        async def stream(i: int) -> None:
            await turns.take()
            order.append(f"s{i}")

        async def probe() -> None:  # another task, ready meanwhile (say, /healthz)
            await asyncio.sleep(0)
            order.append("probe")

        tasks = [asyncio.create_task(stream(i)) for i in range(12)]
        tasks.append(asyncio.create_task(probe()))
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    assert sorted(order) == sorted([f"s{i}" for i in range(12)] + ["probe"])
    assert order.index("probe") < 8  # not after all twelve
    assert [o for o in order if o != "probe"] == [f"s{i}" for i in range(12)]  # in order of asking


def test_a_delta_client_that_reconnects_with_the_current_resources_costs_no_pass_over_them(monkeypatch) -> None:
    current = snapshot()
    passes = []
    changes = DeltaStream._changes

    def counted(self, type_url, ts, snapshot):
        passes.append(type_url)
        return changes(self, type_url, ts, snapshot)

    monkeypatch.setattr(DeltaStream, "_changes", counted)
    stream = DeltaStream(StreamInfo(1, "envoy-1", "g", "delta"), ProxyRegistry(), lambda: current)
    runs = {n: current.resources(ENDPOINT)[n].version for n in NAMES}
    assert stream.on_request(discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=NAMES, initial_resource_versions=runs)) == []
    assert passes == []
    # One it does not run is still found and sent.
    stale = DeltaStream(StreamInfo(2, "envoy-2", "g", "delta"), ProxyRegistry(), lambda: current)
    [response] = stale.on_request(discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=NAMES, initial_resource_versions={**runs, "c3": "old"}))
    assert [r.name for r in response.resources] == ["c3"] and passes == [ENDPOINT]


def test_sotw_streams_behind_by_different_changes_are_each_sent_what_they_lack() -> None:
    """A shared response is the same only for streams that had the same version: one stream
    behind by one change and one behind by two get different endpoint sets (a response made for
    the first would leave the second without one)."""
    def marked(marks: dict[str, int]) -> Snapshot:
        return Snapshot.from_messages({
            CLUSTER: {n: cluster_pb2.Cluster(name=n) for n in NAMES},
            ENDPOINT: {n: endpoint_pb2.ClusterLoadAssignment(
                cluster_name=n, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(priority=marks.get(n, 0))])
                for n in NAMES},
        })

    registry, current = ProxyRegistry(), {"snapshot": marked({})}
    streams = []
    for stream_id in (1, 2):
        info = StreamInfo(stream_id, f"envoy-{stream_id}", "g", "sotw")
        registry.on_stream_open(info)
        stream = SotwStream(info, registry, lambda: current["snapshot"])
        for type_url, names in ((CLUSTER, []), (ENDPOINT, NAMES)):
            response = stream.on_request(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names))[0]
            stream.on_request(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                                             version_info=response.version_info,
                                                             response_nonce=response.nonce))
        streams.append(stream)
    ahead, behind = streams
    current["snapshot"] = marked({"c1": 1})
    [response] = ahead.on_change()
    ahead.on_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=NAMES,
                                                    version_info=response.version_info, response_nonce=response.nonce))
    current["snapshot"] = marked({"c1": 1, "c2": 1})

    def carried(stream: SotwStream) -> tuple[str, set[str]]:
        [response] = stream.on_change()
        names = set()
        for packed in response.resources:
            assignment = endpoint_pb2.ClusterLoadAssignment()
            packed.Unpack(assignment)
            names.add(assignment.cluster_name)
        return response.version_info, names

    version_ahead, names_ahead = carried(ahead)
    version_behind, names_behind = carried(behind)
    assert names_ahead == {"c2"}
    assert names_behind == {"c1", "c2"}
    assert version_ahead == version_behind  # (both now have the whole subscription's version)
