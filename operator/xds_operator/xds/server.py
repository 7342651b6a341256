"""The Aggregated Discovery Service over grpc.aio: one coroutine per stream, no thread pool.

Each stream is driven by one queue of events (requests from Envoy, snapshot changes), so the
protocol state in sotw.py / delta.py is only ever touched by one coroutine. This is the one
module of xds/ that knows grpc.

Over TLS (channel_tls.py) grpc asks for the certificate at every handshake, so rotated files reach
new connections and open streams stay up; with a client CA every proxy must present a certificate
naming its node.cluster (peer_group.py), checked on each stream's first request.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..collector import collect_frozen, freezes
from ..translate.resources import SHORT_NAMES
from .cache import SnapshotCache
from .callbacks import StreamCallbacks, StreamInfo
from .channel_tls import ReloadingTls, TlsMaterial
from .delta import DeltaStream
from .peer_group import refusal
from .sotw import SotwStream

log = logging.getLogger(__name__)

Request: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
Response: TypeAlias = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse
StreamClass: TypeAlias = type[SotwStream] | type[DeltaStream]

_CHANGED = object()
_CLOSED = object()

# Stream events handled per event loop iteration. One costs up to ~2 ms (a reconnecting SotW
# client's request for 1,000 endpoint sets), so the loop polls its sockets (/healthz, ACKs)
# every ~10-20 ms during a push to 1,000 streams or a reconnect storm, not once at the end.
TURNS_PER_ITERATION = 8


# After this many streams closed, once none has closed for TRIM_DELAY seconds, the C heap's free
# memory goes back to the system (glibc malloc_trim, in a thread: it holds no GIL), and the frozen
# heap is collected (collector.py) if one of them was open at a freeze; a stream open at a freeze
# that closes has that done FROZEN_CLOSE_DELAY seconds later at most, however few close. A
# reconnect storm of 1,000 streams frees hundreds of MiB in small blocks that glibc otherwise
# keeps (benchmarks/streams.py: 30-40 MiB of RSS returned after each storm and after all left).
TRIM_AFTER_CLOSES = 50
TRIM_DELAY = 1.0
FROZEN_CLOSE_DELAY = 60.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


_malloc_trim = _find_malloc_trim()


class Turns:
    """Turns to handle an event, `per_iteration` per loop iteration, in order of asking. A
    snapshot change wakes every stream of a group at once, and asyncio runs everything ready
    before it polls again: without turns, /healthz waits for the whole push."""

    def __init__(self, per_iteration: int = TURNS_PER_ITERATION) -> None:
        self.per_iteration = per_iteration
        self._given = 0  # since the last refill
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._refill_due = False

    async def take(self) -> None:
        if self._given < self.per_iteration and not self._waiting:
            self._given += 1
            self._schedule_refill()
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self._schedule_refill()
        await turn

    def _schedule_refill(self) -> None:
        if not self._refill_due:
            self._refill_due = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        """Once per loop iteration while there is work: the next turns (their tasks run in the next iteration)."""
        self._refill_due = False
        self._given = 0
        while self._waiting and self._given < self.per_iteration:
            turn = self._waiting.popleft()
            if not turn.done():  # (not cancelled: its stream closed)
                turn.set_result(None)
                self._given += 1
        if self._waiting or self._given:
            self._schedule_refill()


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]  # no stubs
    def __init__(self, cache: SnapshotCache, callbacks: StreamCallbacks, *, check_peer_group: bool = False) -> None:
        self.cache = cache
        self.callbacks = callbacks
        self.check_peer_group = check_peer_group  # client certificates are required: bind them to groups
        self._stream_ids = itertools.count(1)
        self._turns = Turns()
        self._closed_since_trim = 0
        self._frozen_closes = 0
        self._trim_timer: asyncio.TimerHandle | None = None
        self._trimming: asyncio.Task[None] | None = None

    # Coroutine handlers (grpc.aio's reader-writer form) rather than async generators: grpc's loop
    # over a generator keeps the last response it wrote, a stream's own copy (after a delta sync,
    # a thousand virtual hosts), for as long as the stream then stays idle.
    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
                                        context: grpc.aio.ServicerContext[Request, Response]) -> None:
        await self._serve(request_iterator, context, SotwStream)

    async def DeltaAggregatedResources(self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
                                       context: grpc.aio.ServicerContext[Request, Response]) -> None:
        await self._serve(request_iterator, context, DeltaStream)

    async def _serve(self, request_iterator: AsyncIterator[Request],
                     context: grpc.aio.ServicerContext[Request, Response], stream_class: StreamClass) -> None:
        freezes_at_open = freezes()
        events: asyncio.Queue[object] = asyncio.Queue()
        change_queued = False

        def on_change() -> None:
            nonlocal change_queued
            if not change_queued:  # one pending change event is enough: the stream reads the newest snapshot
                change_queued = True
                events.put_nowait(_CHANGED)

        async def pump() -> None:
            try:
                # context.read(), not the request iterator, whose generator keeps the last request
                # (a reconnect's last one names a thousand versions) while it waits for the next.
                while (request := await context.read()) is not grpc.aio.EOF:
                    events.put_nowait(request)
                    del request
            except (asyncio.CancelledError, grpc.RpcError, grpc.aio.BaseError):  # (ended, aborted, server stopped)
                pass
            finally:
                events.put_nowait(_CLOSED)

        reader = asyncio.create_task(pump())
        first = await events.get()
        await self._turns.take()
        if not isinstance(first, (discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)):
            reader.cancel()
            return
        # Only strings are kept of the first request: a upb submessage (its node) keeps the whole
        # request alive, and a reconnecting delta client's carries thousands of versions.
        node_id, group = first.node.id, first.node.cluster
        if self.check_peer_group and (reason := refusal(group, _peer_certificate(context))) is not None:
            reader.cancel()
            log.warning("proxy %s (cluster %r) refused over %s: %s", node_id, group, stream_class.protocol, reason)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"node.cluster {group!r} refused: {reason}")
        info = StreamInfo(next(self._stream_ids), node_id, group, stream_class.protocol)
        self.callbacks.on_stream_open(info)
        stream = stream_class(info, self.callbacks, lambda: self.cache.made(group))
        self.cache.watch(group, on_change)
        log.info("proxy %s (cluster %r) connected over %s", node_id, group, stream_class.protocol)
        try:
            event: object = first
            del first
            while event is not _CLOSED:
                responses: list[Response]
                if event is _CHANGED:
                    change_queued = False
                    responses = list(stream.on_change())
                else:
                    assert isinstance(event, (discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest))
                    log.debug("%s <- %s nonce=%r%s", node_id, SHORT_NAMES.get(event.type_url, event.type_url),
                              event.response_nonce, " NACK" if event.HasField("error_detail") else "")
                    responses = list(stream.on_request(event))
                # Nothing of this event is held while the stream waits for the next: the request
                # and the responses (each its own copy) are let go once written.
                event = None
                while responses:
                    response = responses.pop(0)
                    log.debug("%s -> %s nonce=%r, %d resources", node_id, SHORT_NAMES[response.type_url],
                              response.nonce, len(response.resources))
                    await context.write(response)
                    del response
                event = await events.get()
                await self._turns.take()
        finally:
            reader.cancel()
            self.cache.unwatch(group, on_change)
            self.callbacks.on_stream_closed(info)
            log.info("proxy %s (cluster %r) disconnected", node_id, group)
            self._stream_closed(frozen=freezes() != freezes_at_open)

    def _stream_closed(self, *, frozen: bool) -> None:
        self._closed_since_trim += 1
        self._frozen_closes += frozen  # (its cycles may go through what a freeze kept)
        if self._closed_since_trim >= TRIM_AFTER_CLOSES:
            if self._trim_timer is not None:
                self._trim_timer.cancel()
            self._trim_timer = asyncio.get_running_loop().call_later(TRIM_DELAY, self._trim)
        elif frozen and self._trim_timer is None:
            # Fewer closes than that: what they may have left waits FROZEN_CLOSE_DELAY at most.
            self._trim_timer = asyncio.get_running_loop().call_later(FROZEN_CLOSE_DELAY, self._trim)

    def _trim(self) -> None:
        self._trim_timer = None
        if self._trimming is None or self._trimming.done():
            self._closed_since_trim = 0
            self._trimming = asyncio.create_task(self._trim_heap(collect=self._frozen_closes > 0))
            self._frozen_closes = 0

    @staticmethod
    async def _trim_heap(*, collect: bool) -> None:
        started = time.perf_counter()
        # The closed streams' cycles through what was frozen while they were open.
        done = collect_frozen() if collect else None
        collected = time.perf_counter()
        if _malloc_trim is not None:
            await asyncio.to_thread(_malloc_trim, 0)
        outcome = {None: "nothing frozen while they were open", False: "frozen heap collected at the build's end",
                   True: f"frozen heap collected in {(collected - started) * 1000:.1f} ms"}[done]
        log.debug("heap after closed streams: %s, malloc_trim %.1f ms", outcome,
                  (time.perf_counter() - collected) * 1000)


def _peer_certificate(context: grpc.aio.ServicerContext[Request, Response]) -> bytes | None:
    certificates = context.auth_context().get("x509_pem_cert")
    return next(iter(certificates), None) if certificates else None


def _certificate_configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.chain)],
                                                     root_certificates=material.client_ca)


def server_credentials(tls: ReloadingTls) -> grpc.ServerCredentials:
    """TLS whose certificate (and client CA) grpc fetches anew at each handshake: `tls.changed()`
    only stats the files unless they changed."""
    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            material = tls.changed()
        except Exception:  # raised into grpc's C core it would fail the handshake, not say why
            log.exception("reloading the xDS TLS files failed; still serving the previous certificate")
            return None
        return _certificate_configuration(material) if material is not None else None

    return grpc.dynamic_ssl_server_credentials(_certificate_configuration(tls.current), fetch,
                                               require_client_authentication=tls.files.requires_client_certificates)


async def start_server(address: str, cache: SnapshotCache, callbacks: StreamCallbacks,
                       tls: ReloadingTls | None = None) -> tuple[grpc.aio.Server, int]:
    """Starts the ADS server on `address` ("host:port", port 0 for a free one); returns it and its port.
    With `tls`, ADS is served over TLS only, and with its client CA, to certificates naming the group."""
    server = grpc.aio.server(options=[
        # Envoy keeps one long-lived stream per proxy; keepalives find dead peers.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ])
    service = AggregatedDiscoveryService(cache, callbacks,
                                         check_peer_group=tls is not None and tls.files.requires_client_certificates)
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(service, server)
    port = server.add_secure_port(address, server_credentials(tls)) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
