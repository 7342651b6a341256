"""Delta proxies get their virtual hosts over VHDS: a one-Route change sends that virtual host
alone, to delta proxies, while SotW proxies of the same group go on getting whole route
configurations. A scripted client plays Envoy against the real ADS server (as in
test_ads_protocol.py); tests/test_vhds_envoy.py does the same with a real Envoy."""

from __future__ import annotations

from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.status.report import proxy_groups, reports
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST

from .test_ads_protocol import NS, SILENCE, backend, change, connect, key, make_plane, sync_delta, sync_sotw, until
from .xds_client import resource_names, unpack

__all__ = ["connect", "make_plane"]  # (fixtures)

HOSTS = 50


def host_route(i: int, *, marker: str = "v1", port: int = 10080) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": f"r{i}", "namespace": NS},
        "spec": {"port": port, "hostnames": [f"h{i}.example"],
                 "rules": [{"backends": [{"name": "a"}],
                            "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]},
    })


def objects() -> list[UserObject]:
    return [backend("a"), *(host_route(i) for i in range(HOSTS))]


def programmed(plane, name: str) -> str:
    result = plane.controller.result
    status = reports(result, proxy_groups(plane.registry, plane.cache), plane.registry.refused_objects)[key("Route", name)]
    condition = next(c for c in status.conditions if c.type == "Programmed")
    return f"{condition.status}/{condition.reason}"


async def test_a_one_route_change_sends_only_its_virtual_host(make_plane, connect):
    plane = await make_plane(*objects())
    delta, sotw = connect(plane, delta=True, node_id="delta-1"), connect(plane, node_id="sotw-1")
    got = await sync_delta(delta)
    await sync_sotw(sotw)
    # The delta proxy's route configuration names VHDS and holds no virtual host; each virtual
    # host is a resource of its own.
    [shell] = unpack(got[ROUTE])
    assert shell.name == "http-10080" and not shell.virtual_hosts and shell.vhds.config_source.HasField("ads")
    assert sorted(resource_names(got[VIRTUAL_HOST])) == sorted(f"http-10080/h{i}.example" for i in range(HOSTS))
    await until(lambda: programmed(plane, "r7") == "True/Programmed", "r7 programmed")

    await change(plane, host_route(7, marker="v2"))
    update = await delta.expect(VIRTUAL_HOST)
    assert resource_names(update) == ["http-10080/h7.example"] and not update.removed_resources
    [vhost] = unpack(update)
    assert vhost.domains == ["h7.example"]
    assert vhost.routes[0].response_headers_to_add[0].header.value == "v2"
    # Programmed means the virtual host is ACKed by every proxy the Route targets.
    assert programmed(plane, "r7") == "False/Pending"
    whole = await sotw.expect(ROUTE)  # SotW: the route configuration, whole, as before
    sotw.ack(whole)
    assert programmed(plane, "r7") == "False/Pending"
    delta.ack(update)
    await until(lambda: programmed(plane, "r7") == "True/Programmed", "r7 programmed again")
    await delta.expect_silence(SILENCE)  # nothing else: no listener, route configuration or cluster
    # The measure of it: what one proxy is sent for a one-Route change.
    assert [len(r.resources) for r in (update, whole)] == [1, 1]
    assert update.ByteSize() < 400 and whole.ByteSize() > 10 * update.ByteSize(), (update.ByteSize(), whole.ByteSize())


async def test_a_removed_route_goes_by_removed_resources_and_a_new_port_after_its_route_configuration(make_plane,
                                                                                                       connect):
    plane = await make_plane(*objects())
    delta = connect(plane, delta=True)
    await sync_delta(delta)

    await change(plane, key("Route", "r3"))
    removal = await delta.expect(VIRTUAL_HOST)
    assert list(removal.resources) == [] and list(removal.removed_resources) == ["http-10080/h3.example"]
    delta.ack(removal)
    await delta.expect_silence(SILENCE)

    # A Route on a new port: a new listener and route configuration. Its virtual host goes only
    # once the route configuration is ACKed (Envoy makes the VHDS watch while applying it, and
    # drops virtual hosts of a route configuration it does not have).
    await change(plane, host_route(100, port=10090))
    lds = await delta.expect(LISTENER)
    assert resource_names(lds) == ["http-10090"]
    delta.send_delta(ROUTE, subscribe=["http-10090"])
    delta.ack(lds)
    rds = await delta.expect(ROUTE)
    assert resource_names(rds) == ["http-10090"]
    await delta.expect_silence(SILENCE)
    delta.ack(rds)
    vhds = await delta.expect(VIRTUAL_HOST)
    assert resource_names(vhds) == ["http-10090/h100.example"]
    delta.ack(vhds)
    await delta.expect_silence(SILENCE)
    assert plane.registry.proxies and all(t in proxy.acked for proxy in plane.registry.proxies.values()
                                          for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, VIRTUAL_HOST))


async def test_a_rejected_virtual_host_does_not_hold_back_the_others(make_plane, connect):
    plane = await make_plane(*objects())
    delta = connect(plane, delta=True)
    await sync_delta(delta)
    await change(plane, *(host_route(i, marker="v2") for i in (1, 2, 3, 4)))
    update = await delta.expect(VIRTUAL_HOST)
    assert sorted(resource_names(update)) == [f"http-10080/h{i}.example" for i in (1, 2, 3, 4)]
    # Envoy refuses the whole response when one virtual host is bad: halves go again until the
    # NACK names one, and everything else is applied.
    delta.nack(update, "h3 is bad")
    while True:
        response = await delta.expect(VIRTUAL_HOST)
        if "http-10080/h3.example" in resource_names(response):
            delta.nack(response, "h3 is bad")
            if len(response.resources) == 1:
                break
        else:
            delta.ack(response)
    last_half = await delta.expect(VIRTUAL_HOST)
    assert resource_names(last_half) == ["http-10080/h4.example"]
    delta.ack(last_half)
    # Then the Route to blame within the refused virtual host is looked for (isolation.py): r3,
    # alone in it, is held at the version this proxy last ACKed, which comes back.
    held = await delta.expect(VIRTUAL_HOST)
    [h3] = unpack(held)
    assert h3.name == "http-10080/h3.example"
    assert h3.routes[0].response_headers_to_add[0].header.value == "v1"
    delta.ack(held)
    await delta.expect_silence(SILENCE)
    proxy = next(iter(plane.registry.proxies.values()))
    current = plane.cache.get("default").for_protocol("delta").resources(VIRTUAL_HOST)
    assert all(proxy.acked[VIRTUAL_HOST][n] == current[n].version for n in current)
    assert programmed(plane, "r3").startswith("False/Rejected")
    assert [programmed(plane, f"r{i}") for i in (1, 2, 4)] == ["True/Programmed"] * 3
    assert plane.registry.isolations == 1 and plane.registry.culprits == 1
