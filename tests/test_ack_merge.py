"""Programmed across replicas: the leader's own reports merged with the other replicas' tallies
(status/merge.py), and the compact record they travel in (kube/ack_share.py)."""

from __future__ import annotations

import pytest

from xds_operator.api.conditions import ACCEPTED, PROGRAMMED, Condition
from xds_operator.api.objects import ObjectKey
from xds_operator.kube.ack_share import decode, encode, record_name
from xds_operator.kube.leader import LeaderTimings
from xds_operator.status.merge import Tally, merge, tallies
from xds_operator.status.report import ObjectReport, ProxyCounts, programmed_condition

WEB = ObjectKey("Route", "demo", "web")
API = ObjectKey("Backend", "demo", "api")


def local(key: ObjectKey = WEB, total: int = 1, synced: int = 1, nacks: tuple[str, ...] = (), generation: int = 3,
          served: bool = True) -> ObjectReport:
    counts = ProxyCounts(total, synced, len(nacks))
    programmed = programmed_condition(counts, nacks) if served else Condition(PROGRAMMED, False, "NotServed", "x")
    return ObjectReport(generation, (Condition(ACCEPTED, True, "Accepted"), programmed), counts, nacks, served)


def programmed(report: ObjectReport) -> Condition:
    return next(c for c in report.conditions if c.type == PROGRAMMED)


def test_other_replicas_proxies_are_counted() -> None:
    merged = merge({WEB: local()}, [{WEB: Tally(3, 2, 2, 0)}, {WEB: Tally(3, 1, 0, 0)}])[WEB]
    assert merged.proxies == ProxyCounts(4, 3, 0)
    assert programmed(merged) == Condition(PROGRAMMED, False, "Pending", "3/4 proxies ACKed it")
    assert [c.type for c in merged.conditions] == [ACCEPTED, PROGRAMMED]  # the others kept, in order


def test_all_synced_everywhere_is_programmed() -> None:
    merged = merge({WEB: local(total=0, synced=0)}, [{WEB: Tally(3, 2, 2, 0)}])[WEB]
    assert programmed(merged) == Condition(PROGRAMMED, True, "Programmed", "2/2 proxies ACKed it")
    # Without the other replica, the leader would have said NoProxies.
    assert programmed(local(total=0, synced=0)).reason == "NoProxies"


def test_a_nack_on_another_replica_is_rejected_with_its_message() -> None:
    merged = merge({WEB: local()}, [{WEB: Tally(3, 1, 0, 1, ("envoy-9: bad regex",))}])[WEB]
    assert merged.proxies == ProxyCounts(2, 1, 1)
    assert programmed(merged) == Condition(PROGRAMMED, False, "Rejected", "rejected by Envoy: envoy-9: bad regex")


def test_a_tally_of_another_generation_counts_proxies_as_not_synced() -> None:
    merged = merge({WEB: local(generation=4)}, [{WEB: Tally(3, 1, 1, 0)}, {WEB: Tally(3, 1, 0, 1, ("old",))}])[WEB]
    assert merged.proxies == ProxyCounts(3, 1, 0)
    assert programmed(merged).reason == "Pending"


def test_objects_not_served_and_objects_without_tallies_are_left_alone() -> None:
    not_served = local(API, total=0, synced=0, served=False)
    reports = {WEB: local(), API: not_served}
    assert merge(reports, [{API: Tally(3, 5, 5, 0)}]) == reports
    assert merge(reports, []) == reports


def test_a_record_holds_only_objects_with_proxies_and_reads_back() -> None:
    reports = {WEB: local(total=2, synced=1, nacks=("envoy-1: " + "x" * 1000,)),
               API: local(API, total=0, synced=0, served=False)}
    record = tallies(reports)
    assert set(record) == {WEB}
    assert len(record[WEB].nacks[0]) == 300  # a long message is cut
    text = encode(record)
    assert decode(text) == record
    assert text.startswith('{"Route/demo/web":[3,2,1,1,')


def test_record_names_are_valid_object_names() -> None:
    assert record_name("xds-operator", "xds-operator-7d4b9-x2_17") == "xds-operator-xds-operator-7d4b9-x2-17"
    assert record_name("xds-operator", "Host.Example_1") == "xds-operator-host.example-1"
    assert len(record_name("xds-operator", "a" * 400)) == 253


@pytest.mark.parametrize("timings", [(15, 10, 10), (10, 10, 2), (15, 20, 2), (15, 10, 0)])
def test_leader_timings_must_be_ordered(timings: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="retry period"):
        LeaderTimings(*timings)


def test_run_refuses_disordered_timings_in_one_line(capsys: pytest.CaptureFixture[str], caplog) -> None:
    from xds_operator import cli

    code = cli.main(["run", "--leader-elect", "--leader-lease-duration", "5", "--leader-renew-deadline", "8",
                     "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"])
    assert code == 1
    assert [r.getMessage() for r in caplog.records] == [
        "leader election timings need retry period (2s) < renew deadline (8s) < lease duration (5s)"]
