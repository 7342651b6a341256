"""The ADS server against a scripted client that plays Envoy: the xDS protocol rules, SotW and delta.

Each test starts a real ControlPlane (grpc.aio server on port 0, the real controller and cache),
puts Routes and Backends into its state store and talks to it over grpc, one request at a time.
"""

from __future__ import annotations

import asyncio

import pytest

from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject
from xds_operator.controlplane.app import ControlPlane
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST

from .xds_client import AdsClient, resource_names, unpack

NS = "t"
SILENCE = 0.5  # how long "no response" is watched for


# -- objects -------------------------------------------------------------------------------

def backend(name: str, port: int = 9001, *, connect_timeout: str = "1s") -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": name, "namespace": NS},
        "spec": {"endpoints": [{"address": "127.0.0.1", "port": port}], "connectTimeout": connect_timeout},
    })


def route(name: str, to: str, *, port: int = 10080, proxies: list[str] | None = None) -> UserObject:
    spec = {"port": port, "rules": [{"matches": [{"path": {"type": "Prefix", "value": "/"}}],
                                      "backends": [{"name": to}]}]}
    if proxies is not None:
        spec["proxies"] = proxies
    return UserObject.from_manifest({"apiVersion": API_VERSION, "kind": "Route",
                                     "metadata": {"name": name, "namespace": NS}, "spec": spec})


def key(kind: str, name: str) -> ObjectKey:
    return ObjectKey(kind, NS, name)


def default_objects() -> list[UserObject]:
    """Two backends, each behind its own listener: clusters t/a t/b, listeners http-10080 http-10081."""
    return [backend("a", 9001), backend("b", 9002), route("r", "a", port=10080), route("s", "b", port=10081)]


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture
async def make_plane():
    planes: list[ControlPlane] = []

    async def make(*objects: UserObject, first_build_after: float = 0.0) -> ControlPlane:
        plane = ControlPlane(xds_address="127.0.0.1:0", http_address=None, debounce=0.01)
        planes.append(plane)
        for obj in objects:
            plane.state.put(obj)
        await plane.start(initial_quiet=first_build_after, initial_max_delay=first_build_after)
        if not first_build_after:
            await asyncio.wait_for(plane.controller.wait_built(), 5)
        return plane

    yield make
    for plane in planes:
        await plane.stop()


@pytest.fixture
async def plane(make_plane) -> ControlPlane:
    return await make_plane(*default_objects())


@pytest.fixture
async def connect(make_plane):
    """connect(plane, node_id=..., cluster=..., delta=...) -> AdsClient, closed after the test
    (before the planes stop: this fixture depends on make_plane)."""
    clients: list[AdsClient] = []

    def open_client(plane: ControlPlane, **kwargs) -> AdsClient:
        client = AdsClient(plane.xds_port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    await asyncio.gather(*(c.close() for c in clients))


async def change(plane: ControlPlane, *edits) -> None:
    """Applies edits (UserObject to put, ObjectKey to delete) at once and waits for the rebuild."""
    builds = plane.controller.builds
    for edit in edits:
        if isinstance(edit, ObjectKey):
            plane.state.delete(edit)
        else:
            plane.state.put(edit)
    for _ in range(500):
        if plane.controller.builds > builds:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no rebuild after the change")


def proxy_of(plane: ControlPlane, node_id: str = "envoy-1"):
    """The newest registry entry (stream) of a node."""
    streams = [p for p in plane.registry.proxies.values() if p.node_id == node_id]
    assert streams, f"{node_id} is not connected"
    return max(streams, key=lambda p: p.stream_id)


async def until(condition, what: str, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def versions(plane: ControlPlane, type_url: str, group: str = "default") -> dict[str, str]:
    return {n: r.version for n, r in plane.cache.get(group).resources(type_url).items()}


async def sync_sotw(client: AdsClient) -> dict:
    """The initial exchange as Envoy does it, every response ACKed: CDS, EDS for the clusters
    (requested before the CDS ACK, as Envoy's paused EDS does), LDS, RDS for the listeners."""
    got = {}
    client.send(CLUSTER)
    got[CLUSTER] = await client.expect(CLUSTER)
    client.send(ENDPOINT, resource_names(got[CLUSTER]))
    client.ack(got[CLUSTER])
    got[ENDPOINT] = await client.expect(ENDPOINT)
    client.ack(got[ENDPOINT])
    client.send(LISTENER)
    got[LISTENER] = await client.expect(LISTENER)
    client.send(ROUTE, resource_names(got[LISTENER]))  # a listener and its routes share the name
    client.ack(got[LISTENER])
    got[ROUTE] = await client.expect(ROUTE)
    client.ack(got[ROUTE])
    return got


async def sync_delta(client: AdsClient) -> dict:
    got = {}
    client.send_delta(CLUSTER)
    got[CLUSTER] = await client.expect(CLUSTER)
    client.send_delta(ENDPOINT, subscribe=resource_names(got[CLUSTER]))
    client.ack(got[CLUSTER])
    got[ENDPOINT] = await client.expect(ENDPOINT)
    client.ack(got[ENDPOINT])
    client.send_delta(LISTENER)
    got[LISTENER] = await client.expect(LISTENER)
    client.send_delta(ROUTE, subscribe=resource_names(got[LISTENER]))
    client.ack(got[LISTENER])
    got[ROUTE] = await client.expect(ROUTE)
    # As Envoy: the route configurations name VHDS, whose one request names nothing.
    client.send_delta(VIRTUAL_HOST)
    client.ack(got[ROUTE])
    got[VIRTUAL_HOST] = await client.expect(VIRTUAL_HOST)
    client.ack(got[VIRTUAL_HOST])
    return got


# == State of the world ======================================================================

async def test_sotw_initial_wildcard_requests(plane, connect):
    client = connect(plane)
    snapshot = plane.cache.get("default")
    client.send(CLUSTER)
    client.send(LISTENER)
    cds = await client.expect(CLUSTER)
    assert cds.version_info and cds.version_info == snapshot.versions[CLUSTER]
    assert resource_names(cds) == ["t/a", "t/b"]
    await client.expect_silence(0.2)  # LDS waits for the CDS ACK
    client.ack(cds)
    lds = await client.expect(LISTENER)
    assert lds.version_info == snapshot.versions[LISTENER]
    assert resource_names(lds) == ["http-10080", "http-10081"]
    client.send(ROUTE, ["http-10080", "http-10081"])
    client.ack(lds)
    rds = await client.expect(ROUTE)
    assert rds.version_info == snapshot.versions[ROUTE]
    assert resource_names(rds) == ["http-10080", "http-10081"]
    client.ack(rds)
    client.send(ENDPOINT, ["t/a", "t/b"])
    eds = await client.expect(ENDPOINT)
    assert eds.version_info == snapshot.versions[ENDPOINT]
    assert resource_names(eds) == ["t/a", "t/b"]
    nonces = [r.nonce for r in (cds, lds, rds, eds)]
    assert all(nonces) and len(set(nonces)) == 4
    # A push after a change gets yet another nonce.
    client.ack(eds)
    await change(plane, backend("a", 9100))
    pushed = await client.expect(ENDPOINT)
    assert pushed.nonce not in nonces and pushed.version_info not in ("", eds.version_info)


async def test_sotw_ack_means_silence(plane, connect):
    client = connect(plane)
    got = await sync_sotw(client)
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert proxy.acked[type_url] == versions(plane, type_url), type_url
        assert got[type_url].version_info == plane.cache.get("default").versions[type_url]
    assert proxy.nacks == {}
    # Repeating the ACK (Envoy does, e.g. with the same subscription) still sends nothing.
    client.ack(got[ROUTE])
    await client.expect_silence(0.2)


async def test_sotw_nack_is_not_resent_until_config_changes(plane, connect):
    client = connect(plane)
    client.send(CLUSTER)
    cds = await client.expect(CLUSTER)
    client.nack(cds, "cluster t/a: bad things")
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    nack = proxy.nacks[CLUSTER]
    assert nack.message == "cluster t/a: bad things"
    assert nack.version == cds.version_info
    assert set(nack.resources) == {"t/a", "t/b"}
    assert CLUSTER not in proxy.acked or proxy.acked[CLUSTER] == {}
    # Asking again (a new request, same nonce) does not bring the rejected version back either.
    client.send(CLUSTER, version="", nonce=cds.nonce)
    await client.expect_silence(0.2)

    await change(plane, route("r", "b", port=10080))
    fixed = await client.expect(CLUSTER)
    assert fixed.version_info not in (cds.version_info, "")
    assert resource_names(fixed) == ["t/b"]
    assert fixed.nonce != cds.nonce
    client.ack(fixed)
    await until(lambda: CLUSTER not in proxy.nacks, "the NACK to clear")
    assert proxy.acked[CLUSTER] == versions(plane, CLUSTER)
    await client.expect_silence(0.2)


async def test_sotw_stale_nonces_are_ignored(plane, connect):
    client = connect(plane)
    client.send(CLUSTER)
    first = await client.expect(CLUSTER)
    client.ack(first)
    await until(lambda: proxy_of(plane).acked.get(CLUSTER), "the first ACK")
    acked_first = dict(proxy_of(plane).acked[CLUSTER])

    await change(plane, backend("a", 9001, connect_timeout="2s"))
    second = await client.expect(CLUSTER)
    assert second.version_info != first.version_info
    # Requests carrying the older nonce (an ACK, a NACK, a re-request) or one never sent are stale.
    client.send(CLUSTER, version=first.version_info, nonce=first.nonce)
    client.send(CLUSTER, version=first.version_info, nonce=first.nonce, error="late complaint")
    client.send(CLUSTER, version="", nonce="no-such-nonce")
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    assert proxy.nacks == {}
    assert proxy.acked[CLUSTER] == acked_first  # `second` is still awaiting its ACK

    client.ack(second)
    await until(lambda: proxy.acked[CLUSTER] == versions(plane, CLUSTER), "the second ACK")
    await client.expect_silence(0.2)
    # The real ACK settled the response: the next change is pushed.
    await change(plane, backend("a", 9001, connect_timeout="3s"))
    third = await client.expect(CLUSTER)
    assert len({first.nonce, second.nonce, third.nonce}) == 3


async def test_sotw_reconnect_with_known_versions(plane, connect):
    first = connect(plane)
    got = await sync_sotw(first)
    await first.close()
    await until(lambda: not plane.registry.proxies, "the closed stream to leave the registry")

    again = connect(plane)  # the same node on a new stream: versions, no nonces
    again.send(CLUSTER, version=got[CLUSTER].version_info)
    again.send(ENDPOINT, ["t/a", "t/b"], version=got[ENDPOINT].version_info)
    again.send(LISTENER, version=got[LISTENER].version_info)
    again.send(ROUTE, ["http-10080", "http-10081"], version=got[ROUTE].version_info)
    await again.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert proxy.acked[type_url] == versions(plane, type_url), type_url

    # The stream is live: a change is pushed on it.
    await change(plane, backend("b", 9200))
    eds = await again.expect(ENDPOINT)
    assert eds.version_info != got[ENDPOINT].version_info

    # A client with an old version (or another subscription) gets the current config.
    stale = connect(plane, node_id="envoy-2")
    stale.send(CLUSTER, version="0000000000000000")
    stale.send(ENDPOINT, ["t/a"], version=eds.version_info)  # the version of a different name set
    cds = await stale.expect(CLUSTER)
    assert cds.version_info == got[CLUSTER].version_info
    stale.ack(cds)
    only_a = await stale.expect(ENDPOINT)
    assert resource_names(only_a) == ["t/a"]


async def test_sotw_proxy_groups_get_their_own_config(make_plane, connect):
    plane = await make_plane(backend("a"), backend("b", 9002), route("r", "a", port=10080, proxies=["a"]),
                             route("s", "b", port=10081))
    in_a = connect(plane, node_id="envoy-a", cluster="a")
    in_b = connect(plane, node_id="envoy-b", cluster="b")
    got_a, got_b = await asyncio.gather(sync_sotw(in_a), sync_sotw(in_b))
    assert resource_names(got_a[CLUSTER]) == ["t/a", "t/b"]
    assert resource_names(got_a[LISTENER]) == ["http-10080", "http-10081"]
    assert resource_names(got_a[ROUTE]) == ["http-10080", "http-10081"]
    assert resource_names(got_b[CLUSTER]) == ["t/b"]
    assert resource_names(got_b[ENDPOINT]) == ["t/b"]
    assert resource_names(got_b[LISTENER]) == ["http-10081"]
    assert resource_names(got_b[ROUTE]) == ["http-10081"]
    entries_b = [r.name for vh in unpack(got_b[ROUTE])[0].virtual_hosts for r in vh.routes]
    assert entries_b == ["t/s/0/0"]
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert got_a[type_url].version_info != got_b[type_url].version_info
    assert proxy_of(plane, "envoy-a").group == "a" and proxy_of(plane, "envoy-b").group == "b"

    # Taking the Route off group a changes a's config only.
    await change(plane, route("r", "a", port=10080, proxies=["c"]))
    # (CDS is unchanged for now: t/a stays until a's listeners and routes have moved on; no EDS
    # response either, as one without t/a would not remove it in SotW.)
    assert resource_names(await in_a.expect(LISTENER)) == ["http-10081"]
    await in_b.expect_silence(SILENCE)


async def test_sotw_make_before_break(make_plane, connect):
    plane = await make_plane(backend("a"), route("r", "a", port=10080))
    client = connect(plane)
    got = await sync_sotw(client)
    assert resource_names(got[CLUSTER]) == ["t/a"]

    # One change: a new backend c, the route moves to it (and to a new port), backend a goes.
    await change(plane, backend("c", 9003), route("r", "c", port=10082), key("Backend", "a"))

    cds = await client.expect(CLUSTER)
    assert resource_names(cds) == ["t/a", "t/c"]  # the old cluster stays while routes still use it
    await client.expect_silence(0.3)  # nothing else before the CDS ACK
    # As Envoy does: ask for the new cluster's endpoints, and ACK the clusters only once they came.
    client.resubscribe(ENDPOINT, ["t/a", "t/c"])
    eds = await client.expect(ENDPOINT)
    assert resource_names(eds) == ["t/c"]  # (SotW EDS: leaving t/a out does not remove it)
    await client.expect_silence(0.3)  # listeners and routes wait for the clusters' ACK...
    client.ack(cds)
    await client.expect_silence(0.3)  # ...and for the endpoints' ACK
    client.ack(eds)

    lds = await client.expect(LISTENER)
    assert resource_names(lds) == ["http-10082"]
    await client.expect_silence(0.3)
    client.resubscribe(ROUTE, ["http-10082"])
    client.ack(lds)

    rds = await client.expect(ROUTE)
    assert resource_names(rds) == ["http-10082"]
    assert unpack(rds)[0].virtual_hosts[0].routes[0].route.cluster == "t/c"
    await client.expect_silence(0.3)  # t/a goes only once the new routes are ACKed
    client.ack(rds)

    final = await client.expect(CLUSTER)
    assert resource_names(final) == ["t/c"]
    assert final.version_info == plane.cache.get("default").versions[CLUSTER]
    client.resubscribe(ENDPOINT, ["t/c"])
    client.ack(final)
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert proxy.acked[type_url] == versions(plane, type_url), type_url


async def test_sotw_resubscribed_name_is_sent_again(plane, connect):
    """Envoy drops a cluster (and its EDS name), then gets it back unchanged: the endpoints must
    be sent again, though their version never changed, or the new cluster waits for them forever."""
    client = connect(plane)
    await sync_sotw(client)
    client.resubscribe(ENDPOINT, ["t/a"])  # cluster t/b removed on Envoy's side
    await client.expect_silence(SILENCE)  # nothing to send for a name dropped
    client.resubscribe(ENDPOINT, ["t/a", "t/b"])  # and added again
    eds = await client.expect(ENDPOINT)
    assert "t/b" in resource_names(eds)
    client.ack(eds)
    await client.expect_silence(SILENCE)


async def test_sotw_endpoint_change_sends_only_eds(plane, connect):
    client = connect(plane)
    got = await sync_sotw(client)
    await change(plane, backend("a", 9100))
    eds = await client.expect(ENDPOINT)
    assert eds.version_info != got[ENDPOINT].version_info
    # Only the endpoint set that changed (one left out of an EDS response is unchanged), with the
    # version of the whole subscription.
    assert eds.version_info == plane.cache.get("default").versions[ENDPOINT]
    assert resource_names(eds) == ["t/a"]
    ports = {m.cluster_name: m.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
             for m in unpack(eds)}
    assert ports == {"t/a": 9100}
    client.ack(eds)
    await client.expect_silence(SILENCE)  # clusters, listeners and routes did not change
    assert plane.cache.get("default").versions[CLUSTER] == got[CLUSTER].version_info


async def test_sotw_versions_survive_a_server_restart(make_plane, connect):
    first_plane = await make_plane(*default_objects())
    client = connect(first_plane)
    got = await sync_sotw(client)
    await client.close()
    await first_plane.stop()

    second_plane = await make_plane(*reversed(default_objects()))
    assert second_plane.xds_port != 0
    reconnected = connect(second_plane)
    reconnected.send(CLUSTER, version=got[CLUSTER].version_info)
    reconnected.send(ENDPOINT, ["t/a", "t/b"], version=got[ENDPOINT].version_info)
    reconnected.send(LISTENER, version=got[LISTENER].version_info)
    reconnected.send(ROUTE, ["http-10080", "http-10081"], version=got[ROUTE].version_info)
    await reconnected.expect_silence(SILENCE)

    fresh = await sync_sotw(connect(second_plane, node_id="envoy-2"))
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert fresh[type_url].version_info == got[type_url].version_info, type_url


async def test_reconnect_before_the_first_build_counts_as_acked(make_plane, connect):
    """Right after a restart Envoy may reconnect before any config is built: its reported
    versions are checked once the first snapshot exists, and count as ACKed if current."""
    first_plane = await make_plane(*default_objects())
    got = await sync_sotw(connect(first_plane))
    first_delta = connect(first_plane, node_id="envoy-d", delta=True)
    delta_got = await sync_delta(first_delta)
    await first_plane.stop()

    plane = await make_plane(*default_objects(), first_build_after=0.5)
    sotw, delta = connect(plane), connect(plane, node_id="envoy-d", delta=True)
    sotw.send(CLUSTER, version=got[CLUSTER].version_info)
    sotw.send(LISTENER, version=got[LISTENER].version_info)
    delta.send_delta(CLUSTER, initial_versions={r.name: r.version for r in delta_got[CLUSTER].resources})
    await until(lambda: len(plane.registry.proxies) == 2, "both connected")
    assert not plane.cache.ready  # no config yet
    assert all(not p.acked for p in plane.registry.proxies.values())
    await asyncio.wait_for(plane.controller.wait_built(), 5)
    await sotw.expect_silence(SILENCE)
    await delta.expect_silence(0.1)
    assert proxy_of(plane).acked[CLUSTER] == versions(plane, CLUSTER)
    assert proxy_of(plane).acked[LISTENER] == versions(plane, LISTENER)
    assert proxy_of(plane, "envoy-d").acked[CLUSTER] == versions(plane, CLUSTER)


async def test_sotw_many_concurrent_streams(plane, connect):
    clients = [connect(plane, node_id=f"envoy-{i}") for i in range(200)]
    for client in clients:
        client.send(CLUSTER)
    responses = await asyncio.gather(*(c.expect(CLUSTER, timeout=10) for c in clients))
    assert {r.version_info for r in responses} == {plane.cache.get("default").versions[CLUSTER]}
    assert len({r.nonce for r in responses}) == 200
    assert len(plane.registry.proxies) == 200
    for client, response in zip(clients, responses, strict=False):
        client.ack(response)
    await change(plane, backend("a", 9001, connect_timeout="2s"))
    pushed = await asyncio.gather(*(c.expect(CLUSTER, timeout=10) for c in clients))
    assert {r.version_info for r in pushed} == {plane.cache.get("default").versions[CLUSTER]}


# == Delta ===================================================================================

async def test_delta_wildcard_subscriptions(plane, connect):
    client = connect(plane, delta=True)
    snapshot = plane.cache.get("default")
    client.send_delta(CLUSTER)
    client.send_delta(LISTENER)
    cds = await client.expect(CLUSTER)
    assert [(r.name, r.version) for r in cds.resources] == sorted(versions(plane, CLUSTER).items())
    assert resource_names(cds) == ["t/a", "t/b"]
    assert list(cds.removed_resources) == []
    assert cds.system_version_info == snapshot.version and cds.nonce
    client.ack(cds)
    lds = await client.expect(LISTENER)
    assert [(r.name, r.version) for r in lds.resources] == sorted(versions(plane, LISTENER).items())
    assert lds.nonce and lds.nonce != cds.nonce
    client.ack(lds)
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    assert proxy.protocol == "delta"
    assert proxy.acked[CLUSTER] == versions(plane, CLUSTER)
    assert proxy.acked[LISTENER] == versions(plane, LISTENER)

    # A change sends only what changed.
    await change(plane, backend("b", 9002, connect_timeout="2s"))
    update = await client.expect(CLUSTER)
    assert resource_names(update) == ["t/b"] and list(update.removed_resources) == []
    assert update.resources[0].version == versions(plane, CLUSTER)["t/b"]


async def test_delta_explicit_subscribe_and_unsubscribe(plane, connect):
    client = connect(plane, delta=True)
    client.send_delta(ENDPOINT, subscribe=["t/a"])
    eds = await client.expect(ENDPOINT)
    assert resource_names(eds) == ["t/a"]
    client.send_delta(ENDPOINT, subscribe=["t/b"], nonce=eds.nonce)  # ACK and subscribe more
    eds = await client.expect(ENDPOINT)
    assert resource_names(eds) == ["t/b"]  # t/a is not sent again
    client.ack(eds)
    await client.expect_silence(0.2)

    client.send_delta(ENDPOINT, unsubscribe=["t/a"], nonce=eds.nonce)
    await client.expect_silence(0.2)  # nothing to send for an unsubscription
    await change(plane, backend("a", 9100))
    await client.expect_silence(0.3)  # t/a changed, but nobody here asked for it
    client.send_delta(ENDPOINT, subscribe=["t/a"], nonce=eds.nonce)
    again = await client.expect(ENDPOINT)
    assert resource_names(again) == ["t/a"]
    assert again.resources[0].version == versions(plane, ENDPOINT)["t/a"]
    assert unpack(again)[0].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9100
    client.ack(again)

    # One response in flight per type; a request with an old nonce still changes the subscription.
    client.send_delta(ROUTE, subscribe=["http-10080"])
    first = await client.expect(ROUTE)
    assert resource_names(first) == ["http-10080"]
    client.send_delta(ROUTE, subscribe=["http-10081"], unsubscribe=["http-10080"], nonce="an-old-nonce")
    await client.expect_silence(0.2)  # `first` is not ACKed yet
    client.ack(first)
    rds = await client.expect(ROUTE)
    assert resource_names(rds) == ["http-10081"]
    client.ack(rds)
    client.send_delta(ROUTE, unsubscribe=["http-10081"], nonce=rds.nonce)
    await client.expect_silence(0.2)
    client.send_delta(ROUTE, subscribe=["http-10081"], nonce=rds.nonce)
    assert resource_names(await client.expect(ROUTE)) == ["http-10081"]


async def test_delta_deleted_backend_is_removed_after_routes_moved(plane, connect):
    client = connect(plane, delta=True)
    await sync_delta(client)

    # Route r moves from a to a new backend c; backend a is deleted.
    await change(plane, backend("c", 9003), route("r", "c", port=10080), key("Backend", "a"))
    cds = await client.expect(CLUSTER)
    assert resource_names(cds) == ["t/c"]
    assert list(cds.removed_resources) == []  # t/a is still in use by the routes Envoy runs
    client.send_delta(ENDPOINT, subscribe=["t/c"])
    client.ack(cds)
    eds = await client.expect(ENDPOINT)
    assert resource_names(eds) == ["t/c"]
    assert list(eds.removed_resources) == []  # nor are its endpoints taken away yet
    client.ack(eds)
    vhds = await client.expect(VIRTUAL_HOST)  # the listeners and route configurations did not change
    assert resource_names(vhds) == ["http-10080/*"]
    assert list(vhds.removed_resources) == []
    await client.expect_silence(0.3)
    client.ack(vhds)

    removal = await client.expect(CLUSTER)
    assert list(removal.resources) == []
    assert list(removal.removed_resources) == ["t/a"]
    endpoints_removal = await client.expect(ENDPOINT)  # the cluster's endpoints go with it
    assert list(endpoints_removal.resources) == []
    assert list(endpoints_removal.removed_resources) == ["t/a"]
    client.send_delta(ENDPOINT, unsubscribe=["t/a"])  # Envoy drops the EDS watch of a removed cluster
    client.ack(removal)
    client.ack(endpoints_removal)
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    assert proxy.acked[CLUSTER] == versions(plane, CLUSTER)
    assert sorted(proxy.acked[CLUSTER]) == ["t/b", "t/c"]


async def test_delta_initial_resource_versions(plane, connect):
    first = connect(plane, delta=True)
    first.send_delta(CLUSTER)
    cds = await first.expect(CLUSTER)
    first.ack(cds)
    known = {r.name: r.version for r in cds.resources}
    eds_versions = versions(plane, ENDPOINT)
    await first.close()

    await change(plane, backend("b", 9002, connect_timeout="2s"))  # t/b's cluster changes, t/a's does not
    current = versions(plane, CLUSTER)
    assert current["t/a"] == known["t/a"] and current["t/b"] != known["t/b"]

    again = connect(plane, delta=True)
    again.send_delta(CLUSTER, initial_versions={**known, "t/gone": "0123456789abcdef"})
    again.send_delta(ENDPOINT, subscribe=["t/a", "t/b"], initial_versions=eds_versions)
    resync = await again.expect(CLUSTER)
    assert [(r.name, r.version) for r in resync.resources] == [("t/b", current["t/b"])]
    assert list(resync.removed_resources) == ["t/gone"]
    again.ack(resync)
    await again.expect_silence(SILENCE)  # the endpoints the client named are current
    proxy = proxy_of(plane)
    assert proxy.acked[CLUSTER] == current
    assert proxy.acked[ENDPOINT] == eds_versions


async def test_delta_nack_is_not_resent_until_config_changes(plane, connect):
    client = connect(plane, delta=True)
    client.send_delta(CLUSTER)
    cds = await client.expect(CLUSTER)
    client.ack(cds)
    await change(plane, backend("a", 9001, connect_timeout="2s"))
    rejected = await client.expect(CLUSTER)
    assert resource_names(rejected) == ["t/a"]
    client.nack(rejected, "t/a: no good")
    await client.expect_silence(SILENCE)
    proxy = proxy_of(plane)
    assert proxy.nacks[CLUSTER].message == "t/a: no good"
    assert proxy.nacks[CLUSTER].resources == {"t/a": rejected.resources[0].version}
    assert proxy.acked[CLUSTER]["t/a"] == cds.resources[0].version  # still the old one

    await change(plane, backend("b", 9002, connect_timeout="2s"))
    update = await client.expect(CLUSTER)
    assert resource_names(update) == ["t/b"]  # the rejected t/a is not sent again
    client.ack(update)
    await until(lambda: CLUSTER not in proxy.nacks, "the NACK to clear")
    await change(plane, backend("a", 9001, connect_timeout="3s"))
    fixed = await client.expect(CLUSTER)
    assert [(r.name, r.version) for r in fixed.resources] == [("t/a", versions(plane, CLUSTER)["t/a"])]
