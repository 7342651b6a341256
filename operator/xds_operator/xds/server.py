"""The Aggregated Discovery Service over grpc.aio: one coroutine per stream, no thread pool.

Each stream is driven by one queue of events (requests from Envoy, snapshot changes), so the
protocol state in streams.py is only ever touched by one coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc

from envoy.service.discovery.v3 import ads_pb2_grpc

from .cache import SnapshotCache
from ..translate.resources import SHORT_NAMES
from .proxies import ProxyRegistry
from .streams import DeltaStream, SotwStream

log = logging.getLogger(__name__)

_CHANGED = object()
_CLOSED = object()


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cache: SnapshotCache, registry: ProxyRegistry) -> None:
        self.cache = cache
        self.registry = registry

    # grpc.aio recognises streaming handlers by being async generator functions.
    async def StreamAggregatedResources(self, request_iterator, context) -> AsyncIterator:
        async for response in self._serve(request_iterator, context, SotwStream):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context) -> AsyncIterator:
        async for response in self._serve(request_iterator, context, DeltaStream):
            yield response

    async def _serve(self, request_iterator, context, stream_class):
        events: asyncio.Queue = asyncio.Queue()
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
        if first is _CLOSED or first is _CHANGED:
            reader.cancel()
            return
        node = first.node
        group = node.cluster
        proxy = self.registry.connect(node.id, group, stream_class.protocol)
        stream = stream_class(self.registry, proxy, lambda: self.cache.get(group))
        self.cache.watch(group, on_change)
        log.info("proxy %s (cluster %r) connected over %s", node.id, group, stream_class.protocol)
        try:
            event = first
            while event is not _CLOSED:
                if event is _CHANGED:
                    change_queued = False
                    responses = stream.on_change()
                else:
                    log.debug("%s <- %s nonce=%r%s", node.id, SHORT_NAMES.get(event.type_url, event.type_url),
                              event.response_nonce, " NACK" if event.HasField("error_detail") else "")
                    responses = stream.on_request(event)
                for response in responses:
                    self.registry.responses[response.type_url] += 1
                    log.debug("%s -> %s nonce=%r, %d resources", node.id, SHORT_NAMES[response.type_url],
                              response.nonce, len(response.resources))
                    yield response
                event = await events.get()
        finally:
            reader.cancel()
            self.cache.unwatch(group, on_change)
            self.registry.disconnect(proxy)
            log.info("proxy %s (cluster %r) disconnected", node.id, group)


async def start_server(address: str, cache: SnapshotCache, registry: ProxyRegistry) -> tuple[grpc.aio.Server, int]:
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
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscoveryService(cache, registry), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
