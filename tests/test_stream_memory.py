"""Memory given back after many streams close (issue 10: RSS back after a reconnect storm).

A storm of 1,000 closed streams leaves hundreds of MiB free in glibc's heap, in small blocks it
keeps, and the cycles of streams that were open when the heap was last frozen (collector.py);
once streams stop closing, the ADS server collects the frozen heap and trims the C heap
(xds/server.py). Real grpc server and clients.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import Callable

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from xds_operator import collector
from xds_operator.collector import FREEZE_AFTER, collector_paused
from xds_operator.translate.resources import CLUSTER
from xds_operator.xds import server

from .test_ads_protocol import connect, default_objects, make_plane  # noqa: F401  (fixtures)

TRIMMED = "heap after closed streams"


async def open_and_close(plane, connect, count: int, *, while_open: Callable[[], None] = lambda: None) -> None:  # noqa: F811
    clients = [connect(plane, node_id=f"envoy-{i}") for i in range(count)]
    for client in clients:
        client.send(CLUSTER)
    await asyncio.gather(*(client.expect(CLUSTER) for client in clients))
    while_open()
    await asyncio.gather(*(client.close() for client in clients))


async def trimmed(caplog) -> str:
    for _ in range(int((server.TRIM_DELAY + 3) / 0.05)):
        if TRIMMED in caplog.text:
            return next(r.getMessage() for r in caplog.records if TRIMMED in r.getMessage())
        await asyncio.sleep(0.05)
    raise AssertionError("no trim")


async def test_the_heap_is_trimmed_once_many_streams_have_closed(make_plane, connect, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG, logger=server.__name__)
    plane = await make_plane(*default_objects())
    await open_and_close(plane, connect, server.TRIM_AFTER_CLOSES - 1)
    await asyncio.sleep(server.TRIM_DELAY + 0.5)
    assert TRIMMED not in caplog.text  # a few proxies leaving cost nothing
    await open_and_close(plane, connect, 1)
    assert "nothing frozen while they were open" in await trimmed(caplog)


async def test_a_stream_open_at_a_freeze_has_the_frozen_heap_collected_however_few_close(
        make_plane, connect, caplog, monkeypatch) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG, logger=server.__name__)
    monkeypatch.setattr(server, "FROZEN_CLOSE_DELAY", 0.5)
    plane = await make_plane(*default_objects())
    await open_and_close(plane, connect, 1, while_open=bulk_work)
    assert "frozen heap collected in" in await trimmed(caplog)


def bulk_work() -> None:
    """What a large build leaves alive: the heap is frozen (collector.py)."""
    bulk_work.kept = None  # type: ignore[attr-defined]  # (freed before: frees in the pause count against it)
    with collector_paused(freeze=True):
        bulk_work.kept = [[i] for i in range(FREEZE_AFTER + 1000)]  # type: ignore[attr-defined]


async def test_streams_open_at_a_freeze_have_the_frozen_heap_collected_once_they_close(
        make_plane, connect, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG, logger=server.__name__)
    plane = await make_plane(*default_objects())
    frozen = collector.freezes()
    await open_and_close(plane, connect, server.TRIM_AFTER_CLOSES, while_open=bulk_work)
    assert collector.freezes() > frozen
    assert "frozen heap collected in" in await trimmed(caplog)


@pytest.mark.parametrize("delta", [False, True])
async def test_an_idle_stream_holds_neither_its_last_response_nor_its_last_request(
        make_plane, connect, delta) -> None:  # noqa: F811
    """Each response is a stream's own copy (a thousand resources after a sync): held by the
    server while the stream idles, that was hundreds of KiB per proxy. These clients run in this
    process and keep their newest response and request each; the server must keep none."""
    plane = await make_plane(*default_objects())
    clients = [connect(plane, node_id=f"envoy-{i}", delta=delta) for i in range(20)]
    for client in clients:
        client.send_delta(CLUSTER) if delta else client.send(CLUSTER)
    for client in clients:
        client.ack(await client.expect(CLUSTER))
    await asyncio.sleep(0.5)  # the ACKs are in
    gc.collect()
    kinds = ((discovery_pb2.DeltaDiscoveryResponse, discovery_pb2.DeltaDiscoveryRequest) if delta else
             (discovery_pb2.DiscoveryResponse, discovery_pb2.DiscoveryRequest))
    alive = Counter(type(o) for o in gc.get_objects() if isinstance(o, kinds))
    shared = 5  # the responses a snapshot keeps for all streams, one per type at most
    assert alive[kinds[0]] <= len(clients) + shared, alive
    assert alive[kinds[1]] <= len(clients), alive
