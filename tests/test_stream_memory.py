"""Memory given back after many streams close (issue 10: RSS back after a reconnect storm).

A storm of 1,000 closed streams leaves hundreds of MiB free in glibc's heap, in small blocks it
keeps; the ADS server trims the heap once streams stop closing (xds/server.py). Real grpc server
and clients.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from xds_operator.translate.resources import CLUSTER
from xds_operator.xds import server

from .test_ads_protocol import connect, default_objects, make_plane  # noqa: F401  (fixtures)

TRIMMED = "malloc_trim after closed streams"

pytestmark = pytest.mark.skipif(server._malloc_trim is None, reason="the C library is not glibc: no malloc_trim")


async def open_and_close(plane, connect, count: int) -> None:  # noqa: F811
    clients = [connect(plane, node_id=f"envoy-{i}") for i in range(count)]
    for client in clients:
        client.send(CLUSTER)
    await asyncio.gather(*(client.expect(CLUSTER) for client in clients))
    await asyncio.gather(*(client.close() for client in clients))


async def test_the_heap_is_trimmed_once_many_streams_have_closed(make_plane, connect, caplog) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG, logger=server.__name__)
    plane = await make_plane(*default_objects())
    await open_and_close(plane, connect, server.TRIM_AFTER_CLOSES - 1)
    await asyncio.sleep(server.TRIM_DELAY + 0.5)
    assert TRIMMED not in caplog.text  # a few proxies leaving cost nothing
    await open_and_close(plane, connect, 1)
    for _ in range(int((server.TRIM_DELAY + 3) / 0.05)):
        if TRIMMED in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert TRIMMED in caplog.text
