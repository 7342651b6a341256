"""Many ADS clients in one asyncio loop, lean enough that a process plays a thousand Envoys.

Each client is one grpc.aio stream over its own channel and TCP connection (a local subchannel
pool: grpc would otherwise share one connection between channels to the same address), and
behaves like Envoy: CDS (wildcard), then EDS for the clusters' names, then LDS (wildcard) and
RDS for the route configurations the listeners name (delta: then VHDS); every response ACKed, the subscription
changed with the ACK where the names changed. Resource names are read from the first response
of each version and shared by every client (tests/xds_client.py unpacks every response, which a
thousand clients cannot afford). A client that reconnects (`storm`) names what it runs: SotW
version_info per type, delta initial_resource_versions, as Envoy does on a new stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST

SOTW_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Delta proxies get the virtual hosts over VHDS: Envoy asks for them (naming nothing) once it
# holds a route configuration that names VHDS, and a one-Route change is a VHDS update.
DELTA_TYPES = (*SOTW_TYPES, VIRTUAL_HOST)
_HCM = "envoy.filters.network.http_connection_manager"


def _route_names(listener: listener_pb2.Listener) -> set[str]:
    names = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.name == _HCM:
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.rds.route_config_name:
                    names.add(hcm.rds.route_config_name)
    return names


class Swarm:
    """The clients of one worker process, and the names they share."""

    def __init__(self, port: int, ids: Iterable[int], delta: bool) -> None:
        self.target = f"127.0.0.1:{port}"
        self.delta = delta
        self.clients = [Client(self, i) for i in ids]
        self._cluster_names: dict[str, tuple[str, ...]] = {}  # SotW CDS version -> cluster names
        self._listener_routes: dict[tuple[str, str], set[str]] = {}  # (version or name+version) -> route names
        self.synced = asyncio.Event()
        self.routes_acked = asyncio.Event()
        self.armed = False
        self.responses = 0

    def cluster_names(self, response: discovery_pb2.DiscoveryResponse) -> tuple[str, ...]:
        names = self._cluster_names.get(response.version_info)
        if names is None:
            cluster = cluster_pb2.Cluster()
            names = []
            for any_ in response.resources:
                any_.Unpack(cluster)
                names.append(cluster.name)
            names = self._cluster_names[response.version_info] = tuple(sorted(names))
        return names

    def route_names(self, key: tuple[str, str], listeners: Iterable[bytes]) -> set[str]:
        names = self._listener_routes.get(key)
        if names is None:
            names = set()
            for data in listeners:
                listener = listener_pb2.Listener()
                listener.ParseFromString(data)
                names |= _route_names(listener)
            self._listener_routes[key] = names
        return names

    def check(self) -> None:
        if all(c.synced for c in self.clients):
            self.synced.set()
        if self.armed and all(c.route_acked_at is not None for c in self.clients):
            self.routes_acked.set()

    # -- commands (benchmarks/streams.py) -----------------------------------------------------

    async def sync(self) -> dict:
        self.synced.clear()
        for client in self.clients:
            client.open(resume=False)
        await self.synced.wait()
        return {"synced_at": max(c.synced_at for c in self.clients)}

    async def arm(self) -> dict:
        for client in self.clients:
            client.route_acked_at = None
        self.routes_acked.clear()
        self.armed = True
        return {}

    async def changed(self) -> dict:
        await self.routes_acked.wait()
        self.armed = False
        return {"last_ack_at": max(c.route_acked_at for c in self.clients)}

    async def storm(self) -> dict:
        await asyncio.gather(*(c.close() for c in self.clients))
        before = self.responses
        for client in self.clients:
            client.open(resume=True)
        return {"responses_before": before}

    async def cpu(self) -> dict:
        return {}

    async def leave(self) -> dict:
        await asyncio.gather(*(c.close() for c in self.clients))
        return {"responses": self.responses}


class Client:
    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        self.node = base_pb2.Node(id=f"envoy-{index}", cluster="default")
        self.channel: grpc.aio.Channel | None = None
        self.call: grpc.aio.StreamStreamCall | None = None
        self.task: asyncio.Task[None] | None = None
        self.synced = False
        self.synced_at = 0.0
        self.route_acked_at: float | None = None
        # What the client runs, per type: SotW names / version / nonce; delta name -> version.
        self.names: dict[str, tuple[str, ...]] = {}
        self.version: dict[str, str] = {}
        self.nonce: dict[str, str] = {}
        self.types = DELTA_TYPES if swarm.delta else SOTW_TYPES
        self.have: dict[str, dict[str, str]] = {t: {} for t in self.types}
        self.subscribed: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        self.listener_routes: dict[str, set[str]] = {}
        self.acked: set[str] = set()
        self.asked_listeners = False
        self.asked_virtual_hosts = False
        self._first = True

    def open(self, *, resume: bool) -> None:
        self.channel = grpc.aio.insecure_channel(self.swarm.target, options=[
            ("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = (stub.DeltaAggregatedResources if self.swarm.delta else stub.StreamAggregatedResources)()
        self._first = True
        self.nonce = {}
        self.task = asyncio.create_task(self._run(resume))

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.channel is not None:
            await self.channel.close()
        self.channel = self.call = self.task = None

    async def _run(self, resume: bool) -> None:
        assert self.call is not None
        if resume:
            for type_url in self.types:
                if self.swarm.delta:
                    await self._delta(type_url, subscribe=self.subscribed.get(type_url, ()),
                                      initial=self.have[type_url])
                else:
                    await self._sotw(type_url)
        elif self.swarm.delta:
            await self._delta(CLUSTER)
        else:
            await self._sotw(CLUSTER)
        while (response := await self.call.read()) is not grpc.aio.EOF:
            self.swarm.responses += 1
            if self.swarm.delta:
                await self._on_delta(response)
            else:
                await self._on_sotw(response)
            self.acked.add(response.type_url)
            if not self.synced and len(self.acked) == len(self.types):
                self.synced, self.synced_at = True, time.monotonic()
            if response.type_url == self.types[-1] and self.swarm.armed:  # (a Route's change)
                self.route_acked_at = time.monotonic()
            self.swarm.check()

    async def _write(self, request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest) -> None:
        if self._first:  # Envoy sends its node on the first request of a stream only
            request.node.CopyFrom(self.node)
            self._first = False
        assert self.call is not None
        await self.call.write(request)

    # -- state of the world ---------------------------------------------------------------

    async def _sotw(self, type_url: str) -> None:
        await self._write(discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=self.names.get(type_url, ()),
            version_info=self.version.get(type_url, ""), response_nonce=self.nonce.get(type_url, "")))

    async def _on_sotw(self, response: discovery_pb2.DiscoveryResponse) -> None:
        type_url = response.type_url
        self.nonce[type_url] = response.nonce
        if type_url == CLUSTER:
            names = self.swarm.cluster_names(response)
            if names != self.names.get(ENDPOINT):
                self.names[ENDPOINT] = names
                await self._sotw(ENDPOINT)
        elif type_url == LISTENER:
            names = tuple(sorted(self.swarm.route_names(("sotw", response.version_info),
                                                        (a.value for a in response.resources))))
            if names != self.names.get(ROUTE):
                self.names[ROUTE] = names
                await self._sotw(ROUTE)
        self.version[type_url] = response.version_info
        await self._sotw(type_url)  # the ACK
        if type_url == ENDPOINT and LISTENER not in self.version:
            self.version[LISTENER] = ""
            await self._sotw(LISTENER)  # (Envoy asks for listeners once its clusters are warm)

    # -- delta ------------------------------------------------------------------------------

    async def _delta(self, type_url: str, subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (),
                     nonce: str = "", initial: dict[str, str] | None = None) -> None:
        await self._write(discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=sorted(subscribe),
            resource_names_unsubscribe=sorted(unsubscribe), response_nonce=nonce,
            initial_resource_versions=initial or {}))

    async def _on_delta(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        type_url = response.type_url
        have = self.have[type_url]
        for resource in response.resources:
            have[resource.name] = resource.version
        for name in response.removed_resources:
            have.pop(name, None)
        wants: tuple[str, set[str]] | None = None
        if type_url == CLUSTER:
            wants = (ENDPOINT, set(have))
        elif type_url == LISTENER:
            for resource in response.resources:
                self.listener_routes[resource.name] = self.swarm.route_names(
                    (resource.name, resource.version), (resource.resource.value,))
            for name in response.removed_resources:
                self.listener_routes.pop(name, None)
            wants = (ROUTE, set().union(*self.listener_routes.values()))
        if wants is not None:
            wanted_type, names = wants
            old = self.subscribed[wanted_type]
            if names != old:
                self.subscribed[wanted_type] = names
                await self._delta(wanted_type, subscribe=names - old, unsubscribe=old - names)
        await self._delta(type_url, nonce=response.nonce)  # the ACK
        if type_url == ROUTE and not self.asked_virtual_hosts:
            self.asked_virtual_hosts = True
            await self._delta(VIRTUAL_HOST)  # (Envoy's one VHDS request, once it holds a route configuration)
        if type_url == ENDPOINT and not self.asked_listeners:
            self.asked_listeners = True
            await self._delta(LISTENER)  # (Envoy asks for listeners once its clusters are warm)
