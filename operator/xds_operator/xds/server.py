"""The Aggregated Discovery Service over grpc.aio: one coroutine per stream, no thread pool.

Each stream is driven by one queue of events (requests from Envoy, snapshot changes), so the
protocol state in sotw.py / delta.py is only ever touched by one coroutine. This is the one
module of xds/ that knows grpc.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..translate.resources import SHORT_NAMES
from .cache import SnapshotCache
from .callbacks import StreamCallbacks, StreamInfo
from .delta import DeltaStream
from .sotw import SotwStream

log = logging.getLogger(__name__)

Request: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
Response: TypeAlias = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse
StreamClass: TypeAlias = type[SotwStream] | type[DeltaStream]

_CHANGED = object()
_CLOSED = object()


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]  # no stubs
    def __init__(self, cache: SnapshotCache, callbacks: StreamCallbacks) -> None:
        self.cache = cache
        self.callbacks = callbacks
        self._stream_ids = itertools.count(1)

    # grpc.aio recognises streaming handlers by being async generator functions.
    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
                                        context: grpc.aio.ServicerContext[Request, Response]) -> AsyncIterator[Response]:
        async for response in self._serve(request_iterator, SotwStream):
            yield response

    async def DeltaAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
                                       context: grpc.aio.ServicerContext[Request, Response]) -> AsyncIterator[Response]:
        async for response in self._serve(request_iterator, DeltaStream):
            yield response

    async def _serve(self, request_iterator: AsyncIterator[Request], stream_class: StreamClass
                     ) -> AsyncIterator[Response]:
        events: asyncio.Queue[object] = asyncio.Queue()
        change_queued = False

        def on_change() -> None:
            nonlocal change_queued
            if not change_queued:  # one pending change event is enough: the stream reads the newest snapshot
                change_queued = True
                events.put_nowait(_CHANGED)

        async def pump() -> None:
            try:
                async for request in request_iterator:
                    events.put_nowait(request)
            except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
                pass
            finally:
                events.put_nowait(_CLOSED)

        reader = asyncio.create_task(pump())
        first = await events.get()
        if not isinstance(first, (discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)):
            reader.cancel()
            return
        node = first.node
        group = node.cluster
        info = StreamInfo(next(self._stream_ids), node.id, group, stream_class.protocol)
        self.callbacks.on_stream_open(info)
        stream = stream_class(info, self.callbacks, lambda: self.cache.made(group))
        self.cache.watch(group, on_change)
        log.info("proxy %s (cluster %r) connected over %s", node.id, group, stream_class.protocol)
        try:
            event: object = first
            while event is not _CLOSED:
                responses: list[Response]
                if event is _CHANGED:
                    change_queued = False
                    responses = list(stream.on_change())
                else:
                    assert isinstance(event, (discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest))
                    log.debug("%s <- %s nonce=%r%s", node.id, SHORT_NAMES.get(event.type_url, event.type_url),
                              event.response_nonce, " NACK" if event.HasField("error_detail") else "")
                    responses = list(stream.on_request(event))
                for response in responses:
                    log.debug("%s -> %s nonce=%r, %d resources", node.id, SHORT_NAMES[response.type_url],
                              response.nonce, len(response.resources))
                    yield response
                event = await events.get()
        finally:
            reader.cancel()
            self.cache.unwatch(group, on_change)
            self.callbacks.on_stream_closed(info)
            log.info("proxy %s (cluster %r) disconnected", node.id, group)


async def start_server(address: str, cache: SnapshotCache, callbacks: StreamCallbacks) -> tuple[grpc.aio.Server, int]:
    """Starts the ADS server on `address` ("host:port", port 0 for a free one); returns it and its port."""
    server = grpc.aio.server(options=[
        # Envoy keeps one long-lived stream per proxy; keepalives find dead peers.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscoveryService(cache, callbacks), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
