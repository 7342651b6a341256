"""A scriptable ADS client for protocol tests: it plays Envoy one request at a time.

Requests go through an asyncio.Queue-fed iterator, responses are read by a background task
into another queue, so a test can `send`, `recv(timeout)` and `expect_silence(seconds)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST

MESSAGES = {CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
            LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration,
            VIRTUAL_HOST: route_components_pb2.VirtualHost}

_END = object()


class AdsClient:
    """One ADS stream (SotW or delta) over its own channel, as one Envoy would open it."""

    def __init__(self, port: int, *, node_id: str = "envoy-1", cluster: str = "default", delta: bool = False,
                 channel: grpc.aio.Channel | None = None) -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.delta = delta
        self._own_channel = channel is None
        self.channel = channel or grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._requests: asyncio.Queue = asyncio.Queue()
        self._responses: asyncio.Queue = asyncio.Queue()
        self._first = True
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.call = method(self._iterate())
        self._reader = asyncio.create_task(self._read())
        # SotW: the subscribed names per type, so that an ACK repeats them as Envoy does.
        self.names: dict[str, tuple[str, ...]] = {}
        # Nonce and version of the newest response per type, and what the client runs (ACKed).
        self.last: dict[str, discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse] = {}
        self.accepted_version: dict[str, str] = {}

    async def _iterate(self):
        while True:
            request = await self._requests.get()
            if request is _END:
                return
            yield request

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.last[response.type_url] = response
                self._responses.put_nowait(response)
        except BaseException as exc:
            self._responses.put_nowait(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self._responses.put_nowait(EOFError("stream ended"))

    def _with_node(self, request):
        if self._first:  # Envoy sends its node only on the first request of a stream
            request.node.CopyFrom(self.node)
            self._first = False
        return request

    # -- sending -------------------------------------------------------------------------

    def send(self, type_url: str, names: Iterable[str] = (), version: str = "", nonce: str = "",
             error: str | None = None) -> None:
        """A SotW DiscoveryRequest."""
        assert not self.delta
        names = tuple(names)
        self.names[type_url] = names
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names, version_info=version,
                                                 response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))  # INVALID_ARGUMENT
        self._requests.put_nowait(self._with_node(request))

    def send_delta(self, type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (),
                   nonce: str = "", error: str | None = None,
                   initial_versions: dict[str, str] | None = None) -> None:
        """A DeltaDiscoveryRequest."""
        assert self.delta
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
            initial_resource_versions=initial_versions or {})
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put_nowait(self._with_node(request))

    def ack(self, response, names: Iterable[str] | None = None) -> None:
        """ACKs `response` (optionally changing the subscription at the same time, as Envoy does)."""
        if self.delta:
            self.send_delta(response.type_url, subscribe=names or (), nonce=response.nonce)
            return
        self.accepted_version[response.type_url] = response.version_info
        self.send(response.type_url, self.names.get(response.type_url, ()) if names is None else names,
                  version=response.version_info, nonce=response.nonce)

    def nack(self, response, message: str) -> None:
        """Rejects `response`: the version stays the last accepted one."""
        if self.delta:
            self.send_delta(response.type_url, nonce=response.nonce, error=message)
            return
        self.send(response.type_url, self.names.get(response.type_url, ()),
                  version=self.accepted_version.get(response.type_url, ""), nonce=response.nonce, error=message)

    def resubscribe(self, type_url: str, names: Iterable[str]) -> None:
        """SotW: a new subscription for a type, carrying the newest nonce and accepted version."""
        last = self.last.get(type_url)
        self.send(type_url, names, version=self.accepted_version.get(type_url, ""),
                  nonce=last.nonce if last is not None else "")

    # -- receiving -----------------------------------------------------------------------

    async def recv(self, timeout: float = 3.0):
        try:
            item = await asyncio.wait_for(self._responses.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no response within {timeout}s") from None
        if isinstance(item, BaseException):
            raise AssertionError(f"stream failed: {item!r}") from item
        return item

    async def expect(self, type_url: str, timeout: float = 3.0):
        response = await self.recv(timeout)
        assert response.type_url == type_url, f"expected {type_url}, got {response.type_url}"
        return response

    async def expect_silence(self, seconds: float = 0.5) -> None:
        try:
            item = await asyncio.wait_for(self._responses.get(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no response, got {_describe(item)}")

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        self._requests.put_nowait(_END)
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._own_channel:
            await self.channel.close()


def _describe(item) -> str:
    if isinstance(item, BaseException):
        return repr(item)
    names = [r.name for r in item.resources] if hasattr(item, "removed_resources") else None
    return f"{item.type_url} nonce={item.nonce} names={names}"


def unpack(response) -> list:
    """The resource messages of a SotW or delta response, in order."""
    packed = [r.resource for r in response.resources] if hasattr(response, "removed_resources") \
        else list(response.resources)
    messages = []
    for any_ in packed:
        message = MESSAGES[response.type_url]()
        assert any_.Unpack(message), f"{any_.type_url} is not {response.type_url}"
        messages.append(message)
    return messages


def resource_names(response) -> list[str]:
    """Names of the resources in a SotW or delta response, in order (from the messages themselves)."""
    return [m.cluster_name if response.type_url == ENDPOINT else m.name for m in unpack(response)]
