"""The SotW and delta state machines alone, without grpc: request sequence -> responses.

Each case is a table of steps; a step is something the client does (or a new snapshot) and the
responses the stream must answer with, as (type, resource names[, removed names]). The gRPC
protocol tests (test_ads_protocol.py) check the same rules through a real server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_operator.xds.callbacks import NoCallbacks, StreamInfo
from xds_operator.xds.delta import DeltaStream
from xds_operator.xds.snapshot import Snapshot
from xds_operator.xds.sotw import SotwStream

TYPES = {"SDS": SECRET, "CDS": CLUSTER, "EDS": ENDPOINT, "LDS": LISTENER, "RDS": ROUTE}
SHORT = {v: k for k, v in TYPES.items()}


def _message(short: str, name: str, variant: int):
    if short == "SDS":
        return secret_pb2.Secret(name=name, generic_secret=secret_pb2.GenericSecret(
            secret={"inline_string": f"v{variant}"}))
    if short == "CDS":
        return cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=variant))
    if short == "EDS":
        assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
        assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = variant
        return assignment
    if short == "LDS":
        listener = listener_pb2.Listener(name=name)
        listener.address.socket_address.port_value = variant
        return listener
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[route_components_pb2.VirtualHost(
        name=f"v{variant}", domains=["*"])])


def snap(**types: dict[str, int]) -> Snapshot:
    """snap(CDS={"a": 1}, EDS={"a": 1}): resources by name, the number a content variant."""
    return Snapshot.from_messages({TYPES[t]: {n: _message(t, n, v) for n, v in rs.items()} for t, rs in types.items()})


BASE = snap(CDS={"a": 1, "b": 1}, EDS={"a": 1, "b": 1}, LDS={"l1": 1, "l2": 1}, RDS={"l1": 1, "l2": 1})
RDS4 = snap(RDS={"r1": 1, "r2": 1, "r3": 1, "r4": 1})


# -- steps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Req:
    """A request. SotW: `names` is the subscription and the last response's nonce is echoed
    (an ACK, or a NACK with `nack`); `fresh` sends no nonce and reports `version` (a
    reconnect). Delta: `names` subscribes, `drop` unsubscribes, `initial` = initial_resource_versions."""
    type: str
    names: tuple[str, ...] = ()
    fresh: bool = False
    version: str = ""
    nack: str | None = None
    drop: tuple[str, ...] = ()
    initial: dict[str, str] = field(default_factory=dict)
    nonce: str | None = None  # an explicit nonce (for stale ones)


@dataclass(frozen=True)
class Change:
    snapshot: Snapshot


Expected = list[tuple]


class Recorder(NoCallbacks):
    def __init__(self) -> None:
        self.rejected: dict[str, dict[str, str]] = {}
        self.acked: dict[str, dict[str, str]] = {}
        self.nacks = 0

    def on_ack(self, stream, type_url, resources, removed, state) -> None:
        current = self.acked.setdefault(SHORT[type_url], {})
        if state is not None:
            current.clear()
            current.update(state)
        current.update(resources)
        for name in removed:
            current.pop(name, None)

    def on_nack(self, stream, type_url, version, message, resources) -> None:
        self.nacks += 1

    def on_rejected(self, stream, type_url, resources, message) -> None:
        self.rejected.setdefault(SHORT[type_url], {}).update(resources)


class Driver:
    def __init__(self, delta: bool, snapshot: Snapshot | None) -> None:
        self.delta = delta
        self.snapshot = snapshot
        self.callbacks = Recorder()
        stream_class = DeltaStream if delta else SotwStream
        self.stream = stream_class(StreamInfo(7, "node", "group", stream_class.protocol), self.callbacks,
                                   lambda: self.snapshot)
        self.last: dict[str, object] = {}
        self.accepted: dict[str, str] = {}

    def step(self, step: Req | Change) -> list[tuple]:
        if isinstance(step, Change):
            self.snapshot = step.snapshot
            responses = self.stream.on_change()
        else:
            responses = self.stream.on_request(self._request(step))
        for response in responses:
            self.last[SHORT[response.type_url]] = response
        return [self._describe(r) for r in responses]

    def _request(self, step: Req):
        type_url = TYPES[step.type]
        last = self.last.get(step.type)
        nonce = step.nonce if step.nonce is not None else ("" if step.fresh or last is None else last.nonce)
        error = status_pb2.Status(code=3, message=step.nack) if step.nack is not None else None
        if self.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=step.names, resource_names_unsubscribe=step.drop,
                response_nonce=nonce, initial_resource_versions=step.initial)
        else:
            if last is not None and nonce == last.nonce and step.nack is None:
                self.accepted[step.type] = last.version_info
            version = step.version if step.fresh else self.accepted.get(step.type, "")
            request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=step.names,
                                                     version_info=version, response_nonce=nonce)
        if error is not None:
            request.error_detail.CopyFrom(error)
        return request

    def _describe(self, response) -> tuple:
        names = sorted(r.name for r in response.resources) if self.delta else \
            sorted(_name(r) for r in response.resources)
        if self.delta and response.removed_resources:
            return (SHORT[response.type_url], names, sorted(response.removed_resources))
        return (SHORT[response.type_url], names)


def _name(packed) -> str:
    for message_class in (cluster_pb2.Cluster, listener_pb2.Listener, route_pb2.RouteConfiguration,
                          secret_pb2.Secret):
        if packed.type_url.endswith(message_class.DESCRIPTOR.full_name):
            message = message_class()
            packed.Unpack(message)
            return message.name
    message = endpoint_pb2.ClusterLoadAssignment()
    packed.Unpack(message)
    return message.cluster_name


def run(delta: bool, steps: list[tuple[Req | Change, Expected]], snapshot: Snapshot | None = BASE) -> Driver:
    driver = Driver(delta, snapshot)
    for number, (step, expected) in enumerate(steps):
        assert driver.step(step) == expected, f"step {number}: {step}"
    return driver


# == State of the world =======================================================================

SOTW_CASES = {
    "initial sync in push order, each type waiting for what it must": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("LDS"), []),  # listeners wait for the clusters' ACK
        (Req("EDS", ("a", "b")), [("EDS", ["a", "b"])]),  # endpoints wait for nothing
        (Req("CDS"), []),  # the ACK...
        (Req("EDS", ("a", "b")), [("LDS", ["l1", "l2"])]),  # ...and the endpoints' ACK release listeners
        (Req("RDS", ("l1", "l2")), [("RDS", ["l1", "l2"])]),
        (Req("LDS"), []),
        (Req("RDS", ("l1", "l2")), []),
    ],
    "an ACK, a repeated ACK and a stale nonce send nothing": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("CDS"), []),
        (Req("CDS"), []),
        (Req("CDS", nonce="old", nack="late"), []),
    ],
    "a NACKed cluster set is not resent, not even on request, until the config changes": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("CDS", nack="bad cluster"), []),
        (Req("CDS"), []),
        (Change(snap(CDS={"a": 1, "b": 2})), [("CDS", ["a", "b"])]),
    ],
    "a NACK of several endpoint sets is narrowed down; the others are applied": [
        (Req("EDS", ("a", "b")), [("EDS", ["a", "b"])]),
        (Req("EDS", ("a", "b"), nack="bad"), [("EDS", ["a"])]),  # first half alone
        (Req("EDS", ("a", "b")), [("EDS", ["b"])]),  # ACKed: the second half
        (Req("EDS", ("a", "b"), nack="bad"), []),  # b alone is rejected, not resent
        (Req("EDS", ("a", "b")), []),
        (Change(snap(EDS={"a": 2, "b": 1})), [("EDS", ["a"])]),  # a changes: b's rejected version stays out
        (Req("EDS", ("a", "b")), []),
        (Change(snap(EDS={"a": 2, "b": 3})), [("EDS", ["b"])]),  # a new b is tried again (a is current)
    ],
    "two bad route configurations among four are both found": (RDS4, [
        (Req("RDS", ("r1", "r2", "r3", "r4")), [("RDS", ["r1", "r2", "r3", "r4"])]),
        (Req("RDS", ("r1", "r2", "r3", "r4"), nack="bad"), [("RDS", ["r1", "r2"])]),
        (Req("RDS", ("r1", "r2", "r3", "r4"), nack="bad"), [("RDS", ["r1"])]),
        (Req("RDS", ("r1", "r2", "r3", "r4")), [("RDS", ["r2"])]),
        (Req("RDS", ("r1", "r2", "r3", "r4"), nack="bad"), [("RDS", ["r3", "r4"])]),  # r2 rejected
        (Req("RDS", ("r1", "r2", "r3", "r4"), nack="bad"), [("RDS", ["r3"])]),
        (Req("RDS", ("r1", "r2", "r3", "r4"), nack="bad"), [("RDS", ["r4"])]),  # r3 rejected
        (Req("RDS", ("r1", "r2", "r3", "r4")), []),
    ]),
    "a dropped name gets nothing; subscribed again, it is sent again": [
        (Req("EDS", ("a", "b")), [("EDS", ["a", "b"])]),
        (Req("EDS", ("a", "b")), []),
        (Req("EDS", ("a",)), []),
        (Req("EDS", ("a", "b")), [("EDS", ["b"])]),  # (a is current: left out, as unchanged)
    ],
    "a reconnect naming the current versions is sent nothing": [
        (Req("CDS", fresh=True, version=BASE.versions[CLUSTER]), []),
        (Req("EDS", ("a", "b"), fresh=True, version=BASE.versions[ENDPOINT]), []),
        (Req("LDS", fresh=True, version="0000000000000000"), [("LDS", ["l1", "l2"])]),
    ],
    "a push after a recognised reconnect carries only what changed": [
        (Req("EDS", ("a", "b"), fresh=True, version=BASE.versions[ENDPOINT]), []),
        (Change(snap(EDS={"a": 1, "b": 5})), [("EDS", ["b"])]),  # (left out: unchanged, not removed)
    ],
    "a push carries only the endpoint sets that changed, with the version of them all": [
        (Req("EDS", ("a", "b")), [("EDS", ["a", "b"])]),
        (Req("EDS", ("a", "b")), []),
        (Change(snap(EDS={"a": 1, "b": 5})), [("EDS", ["b"])]),
        (Req("EDS", ("a", "b")), []),
    ],
}

# A client that had a, b and c, dropped c (its cluster went) and so still reports {a, b, c}.
_OLD = snap(EDS={"a": 1, "b": 1, "c": 1}, RDS={"l1": 1, "l2": 1})
SOTW_RESTART_CASES = {
    "dropped names: nothing is resent": (
        snap(EDS={"a": 1, "b": 1}),
        [(Req("EDS", ("a", "b"), fresh=True, version=_OLD.versions[ENDPOINT]), [])]),
    "dropped names, then a change: only the changed one is pushed": (
        snap(EDS={"a": 1, "b": 1}),
        [(Req("EDS", ("a", "b"), fresh=True, version=_OLD.versions[ENDPOINT]), []),
         (Change(snap(EDS={"a": 2, "b": 1})), [("EDS", ["a"])])]),
    "dropped names and one change: only the changed one is sent": (
        snap(EDS={"a": 1, "b": 2}),
        [(Req("EDS", ("a", "b"), fresh=True, version=_OLD.versions[ENDPOINT]), [("EDS", ["b"])]),
         (Req("EDS", ("a", "b")), [])]),
    "a claim of a current resource the client does not subscribe to: everything is sent": (
        snap(EDS={"a": 1, "b": 1, "c": 1}),
        [(Req("EDS", ("a", "b"), fresh=True, version=_OLD.versions[ENDPOINT]), [("EDS", ["a", "b"])])]),
    "a route configuration dropped with its listener: nothing is resent": (
        snap(RDS={"l1": 1}),
        [(Req("RDS", ("l1",), fresh=True, version=_OLD.versions[ROUTE]), [])]),
    "an unknown version: everything is sent": (
        snap(EDS={"a": 1, "b": 1}),
        [(Req("EDS", ("a", "b"), fresh=True, version="something else"), [("EDS", ["a", "b"])])]),
}


@pytest.mark.parametrize("case", SOTW_CASES)
def test_sotw(case):
    case = SOTW_CASES[case]
    snapshot, steps = case if isinstance(case, tuple) else (BASE, case)
    run(False, steps, snapshot)


@pytest.mark.parametrize("case", SOTW_RESTART_CASES)
def test_sotw_restart(case):
    snapshot, steps = SOTW_RESTART_CASES[case]
    run(False, steps, snapshot)


def test_sotw_rejections_and_acks_reach_the_callbacks():
    driver = run(False, SOTW_CASES["two bad route configurations among four are both found"][1], RDS4)
    versions = {n: r.version for n, r in driver.snapshot.resources(ROUTE).items()}
    assert driver.callbacks.rejected == {"RDS": {"r2": versions["r2"], "r3": versions["r3"]}}
    assert driver.callbacks.acked["RDS"] == {"r1": versions["r1"], "r4": versions["r4"]}
    assert driver.callbacks.nacks == 5


def test_sotw_a_nacked_cluster_set_is_rejected_whole():
    driver = run(False, SOTW_CASES["a NACKed cluster set is not resent, not even on request, until the config changes"][:2])
    assert set(driver.callbacks.rejected["CDS"]) == {"a", "b"}


def test_sotw_restart_with_dropped_names_counts_as_acked():
    snapshot, steps = SOTW_RESTART_CASES["dropped names: nothing is resent"]
    driver = run(False, steps, snapshot)
    assert driver.callbacks.acked["EDS"] == {n: r.version for n, r in snapshot.resources(ENDPOINT).items()}


def test_sotw_a_report_before_the_first_snapshot_is_checked_once_there_is_one():
    driver = Driver(False, None)
    assert driver.step(Req("CDS", fresh=True, version=BASE.versions[CLUSTER])) == []
    assert driver.step(Change(BASE)) == []
    assert driver.callbacks.acked["CDS"] == {n: r.version for n, r in BASE.resources(CLUSTER).items()}


# == Delta ==================================================================================

DELTA_CASES = {
    "wildcard, then only what changed": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("CDS"), []),
        (Change(snap(CDS={"a": 1, "b": 2}, EDS={"a": 1, "b": 1})), [("CDS", ["b"])]),
    ],
    "an empty wildcard is answered once (Envoy's initialization waits for it), explicit names are not": [
        (Change(snap(EDS={"a": 1})), []),
        (Req("CDS"), [("CDS", [])]),
        (Req("CDS"), []),
        (Req("LDS"), [("LDS", [])]),
        (Req("LDS"), []),
        (Req("EDS", ("b",)), []),
        (Change(snap(CDS={"a": 1}, EDS={"a": 1})), [("CDS", ["a"])]),
    ],
    "explicit names; an unsubscribed name is forgotten and sent again when asked for": [
        (Req("EDS", ("a",)), [("EDS", ["a"])]),
        (Req("EDS", ("b",)), [("EDS", ["b"])]),
        (Req("EDS", drop=("a",)), []),
        (Req("EDS", ("a",)), [("EDS", ["a"])]),
    ],
    "a NACK of several clusters is narrowed down, for full-state types too": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("CDS", nack="bad"), [("CDS", ["a"])]),
        (Req("CDS", nack="bad"), [("CDS", ["b"])]),  # a is rejected
        (Req("CDS"), []),
        (Change(snap(CDS={"a": 1, "b": 2})), [("CDS", ["b"])]),  # a's rejected version stays out
        (Req("CDS"), []),
        (Change(snap(CDS={"a": 3, "b": 2})), [("CDS", ["a"])]),
    ],
    "a removal waits for the routes (make-before-break), then goes": [
        (Req("CDS"), [("CDS", ["a", "b"])]),
        (Req("CDS"), []),
        (Req("LDS"), [("LDS", ["l1", "l2"])]),
        (Req("LDS"), []),
        (Req("RDS", ("l1", "l2")), [("RDS", ["l1", "l2"])]),
        (Change(snap(CDS={"a": 1}, LDS={"l1": 1, "l2": 1}, RDS={"l1": 2, "l2": 1})), []),  # RDS in flight
        (Req("RDS"), [("RDS", ["l1"])]),
        (Req("RDS"), [("CDS", [], ["b"])]),
        (Req("CDS"), []),
    ],
}


@pytest.mark.parametrize("case", DELTA_CASES)
def test_delta(case):
    run(True, DELTA_CASES[case])


def test_delta_initial_resource_versions_send_only_what_differs():
    old = snap(CDS={"a": 1, "b": 1, "gone": 1})
    known = {n: r.version for n, r in old.resources(CLUSTER).items()}
    driver = run(True, [(Req("CDS", initial=known), [])], None)
    current = snap(CDS={"a": 1, "b": 2})
    assert driver.step(Change(current)) == [("CDS", ["b"], ["gone"])]
    assert driver.callbacks.acked["CDS"] == {"a": known["a"]}  # counted as ACKed on arrival
    assert driver.step(Req("CDS")) == []
    assert driver.callbacks.acked["CDS"] == {n: r.version for n, r in current.resources(CLUSTER).items()}


def test_delta_a_single_rejected_resource_reaches_the_callbacks_once():
    driver = run(True, DELTA_CASES["a NACK of several clusters is narrowed down, for full-state types too"][:4])
    assert driver.callbacks.rejected == {"CDS": {"a": BASE.resources(CLUSTER)["a"].version}}
    assert driver.callbacks.acked["CDS"] == {"b": BASE.resources(CLUSTER)["b"].version}


# == SDS: certificates before what uses them ===================================================

TLS = snap(SDS={"tls/a": 1}, CDS={"a": 1}, EDS={"a": 1}, LDS={"l1": 1}, RDS={"l1": 1})


def _synced(delta: bool) -> Driver:
    """A client with TLS's secrets, clusters, endpoints, listeners and routes ACKed."""
    return run(delta, [
        (Req("CDS"), [("CDS", ["a"])]),
        (Req("LDS"), []),
        (Req("EDS", ("a",)), [("EDS", ["a"])]),
        (Req("CDS"), []),
        (Req("EDS", ("a",)), [("LDS", ["l1"])]),
        (Req("SDS", ("tls/a",)), [("SDS", ["tls/a"])]),  # the listener names it: the client asks
        (Req("RDS", ("l1",)), [("RDS", ["l1"])]),
        (Req("LDS"), []),
        (Req("SDS", ("tls/a",)), []),
        (Req("RDS", ("l1",)), []),
    ], TLS)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_rotated_secret_goes_before_the_listener_that_changes_with_it(delta: bool) -> None:
    driver = _synced(delta)
    rotated = snap(SDS={"tls/a": 2}, CDS={"a": 1}, EDS={"a": 1}, LDS={"l1": 2}, RDS={"l1": 1})
    assert driver.step(Change(rotated)) == [("SDS", ["tls/a"])]  # the listener waits for its ACK
    assert driver.step(Req("SDS", ("tls/a",))) == [("LDS", ["l1"])]


def test_delta_removes_a_secret_only_after_the_listeners_that_used_it() -> None:
    driver = _synced(True)
    gone = snap(CDS={"a": 1}, EDS={"a": 1}, LDS={"l1": 2}, RDS={"l1": 1})
    assert driver.step(Change(gone)) == [("LDS", ["l1"])]  # the secret stays while l1 may name it
    assert driver.step(Req("LDS")) == [("SDS", [], ["tls/a"])]
