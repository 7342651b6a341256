"""/metrics' convergence histogram against the scripted ADS client (tests/xds_client.py): a
change is timed once, per proxy group, when the last proxy of the group ACKs it."""

from __future__ import annotations

from xds_operator.controlplane.app import ControlPlane
from xds_operator.translate.resources import ENDPOINT

from .test_ads_protocol import backend, change, connect, default_objects, make_plane, sync_delta, sync_sotw

__all__ = ["connect", "make_plane"]  # fixtures


def observed(plane: ControlPlane, group: str) -> float:
    """How many changes of `group` were timed."""
    value = plane.metrics.registry.get_sample_value("xds_operator_convergence_seconds_count", {"group": group})
    return value or 0.0


async def test_a_change_is_timed_when_every_proxy_of_its_group_acked_it(make_plane, connect):
    plane = await make_plane(*default_objects())
    first, second = connect(plane, node_id="envoy-1"), connect(plane, node_id="envoy-2")
    other = connect(plane, node_id="envoy-3", cluster="other", delta=True)
    await sync_sotw(first)
    await sync_sotw(second)
    await sync_delta(other)
    assert observed(plane, "default") == observed(plane, "other") == 0  # connecting is not a change

    await change(plane, backend("a", 9100))  # endpoints only: an EDS response to each proxy
    eds = [await client.expect(ENDPOINT) for client in (first, second, other)]
    first.ack(eds[0])
    await first.expect_silence(0.3)
    assert observed(plane, "default") == 0  # envoy-2 has not ACKed yet
    second.ack(eds[1])
    await second.expect_silence(0.3)
    assert observed(plane, "default") == 1
    other.nack(eds[2], "refused")
    await other.expect_silence(0.3)
    assert observed(plane, "other") == 0  # a NACK is not convergence

    await change(plane, backend("a", 9200))
    eds = [await client.expect(ENDPOINT) for client in (first, second, other)]
    for client, response in zip((first, second, other), eds, strict=True):
        client.ack(response)
        await client.expect_silence(0.3)
    assert observed(plane, "default") == 2
    assert observed(plane, "other") == 1  # from the first change on: the NACKed one is part of it
    seconds = plane.metrics.registry.get_sample_value("xds_operator_convergence_seconds_sum", {"group": "other"})
    assert seconds is not None and seconds > 0.3  # it waited out the NACK and the silences


async def test_a_group_whose_waited_for_proxy_leaves_converges_on_the_others(make_plane, connect):
    plane = await make_plane(*default_objects())
    stays, leaves = connect(plane, node_id="envoy-1"), connect(plane, node_id="envoy-2")
    await sync_sotw(stays)
    await sync_sotw(leaves)
    await change(plane, backend("b", 9300))
    stays.ack(await stays.expect(ENDPOINT))
    await leaves.expect(ENDPOINT)
    await stays.expect_silence(0.3)
    assert observed(plane, "default") == 0
    await leaves.close()
    await stays.expect_silence(0.3)
    assert observed(plane, "default") == 1
