"""A NACK stays with the resource Envoy rejected: a freshly started real Envoy, one bad route
configuration and one bad endpoint set among good ones, in SotW and in delta.

Validation keeps user input from making Envoy NACK, so the bad resources are made in a
test-only way that production cannot reach: this test's in-process control plane has the
translator monkeypatched for one Route and one Backend.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from xds_operator import translate as translation
from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import free_port
from xds_operator.translate import TranslateOptions

from .realprocs import Envoy, eventually, http_get
from .sabotage import translate_route_with_a_bad_regex

NS = "nack-iso"



def backend(name: str, port: int) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": name, "namespace": NS},
        "spec": {"endpoints": [{"address": "127.0.0.1", "port": port}]}})


def route(name: str, port: int, to: str) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": name, "namespace": NS},
        "spec": {"port": port, "rules": [{"matches": [{"path": {"type": "Prefix", "value": "/"}}],
                                          "backends": [{"name": to}]}]}})


def sabotage(monkeypatch, *, route_name: str, backend_name: str) -> None:
    """Route `route_name` gets a regex RE2 refuses; Backend `backend_name` an endpoint port
    past 65535 (a proto constraint): each makes Envoy reject the one resource it is in."""
    real_assignment = translation.translate_load_assignment
    translate_route_with_a_bad_regex(monkeypatch, route_name)

    def bad_assignment(cluster):
        translated = real_assignment(cluster)
        if cluster.name != f"{NS}/{backend_name}":
            return translated
        broken = type(translated)()
        broken.CopyFrom(translated)
        broken.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value = 70000
        return broken

    monkeypatch.setattr(translation, "translate_load_assignment", bad_assignment)


def serves_nothing(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/get")[0] != 200
    except OSError:  # (no listener)
        return True


def programmed(status: dict, key: str) -> dict:
    return next(c for c in status[key]["conditions"] if c["type"] == "Programmed")


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_one_rejected_resource_leaves_the_others_working(api_type, monkeypatch, tmp_path, httpbin):
    good_ports = [free_port(), free_port()]
    bad_port, bad_backend_port = free_port(), free_port()
    sabotage(monkeypatch, route_name="rejected-route", backend_name="rejected-backend")
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0", debounce=0.01,
                         options=TranslateOptions(listener_address="127.0.0.1"))
    for obj in (backend("web", httpbin.port), backend("rejected-backend", httpbin.port),
                route("first", good_ports[0], "web"), route("rejected-route", bad_port, "web"),
                route("second", good_ports[1], "web"), route("to-rejected-backend", bad_backend_port,
                                                             "rejected-backend")):
        plane.state.put(obj)
    await plane.start()
    envoy = None
    try:
        await asyncio.wait_for(plane.controller.wait_built(), 5)
        envoy = await Envoy(tmp_path, plane.xds_port, api_type=api_type, node_id="fresh").start()
        # Every good port serves, well before Envoy's 15 s initial fetch timeout would have let
        # its listeners warm without routes.
        for port in good_ports:
            await eventually(lambda port=port: http_get(f"http://127.0.0.1:{port}/get")[0] == 200, timeout=10,
                             what=f"traffic on good port {port}")

        def status() -> dict:
            return json.loads(http_get(f"http://127.0.0.1:{plane.http_port}/status")[2])

        def settled() -> dict | None:
            now = status()
            keys = [f"Route/{NS}/{n}" for n in ("first", "second", "to-rejected-backend")] + [f"Backend/{NS}/web"]
            done = all(programmed(now, k)["status"] == "True" for k in keys) and all(
                programmed(now, k)["reason"] == "Rejected"
                for k in (f"Route/{NS}/rejected-route", f"Backend/{NS}/rejected-backend"))
            return now if done else None

        now = await eventually(settled, timeout=10, what="statuses settled")
        rejected_route = programmed(now, f"Route/{NS}/rejected-route")
        assert rejected_route["status"] == "False"
        assert rejected_route["message"].startswith("rejected by Envoy: fresh: ") and "unclosed" in rejected_route["message"]
        assert now[f"Route/{NS}/rejected-route"]["proxies"] == {"total": 1, "synced": 0, "nacked": 1}
        rejected_backend = programmed(now, f"Backend/{NS}/rejected-backend")
        assert rejected_backend["message"].startswith("rejected by Envoy: fresh: ")
        assert "PortValue" in rejected_backend["message"] and "65535" in rejected_backend["message"]
        for key in (f"Route/{NS}/first", f"Route/{NS}/second", f"Backend/{NS}/web"):
            assert now[key]["proxies"] == {"total": 1, "synced": 1, "nacked": 0}, key

        # Each NACK was narrowed down to exactly the one bad resource.
        proxies = json.loads((await asyncio.to_thread(http_get, f"http://127.0.0.1:{plane.http_port}/proxies"))[2])
        # (Then the bad port's one Route is held back, which removes its route configuration:
        # delta says so, which clears the rejection; SotW cannot remove it and keeps it.)
        rejected = {t: sorted(rs) for t, rs in proxies[0]["rejected"].items()}
        assert rejected.pop("EDS") == [f"{NS}/rejected-backend"]
        assert rejected == ({"RDS": [f"http-{bad_port}"]} if api_type == "GRPC" else {})

        # Envoy applied every route configuration and endpoint set but the two bad ones.
        stats = envoy.stats()
        for port in good_ports:
            assert stats[f"http.http-{port}.rds.http-{port}.update_success"] >= 1
        if api_type == "GRPC":
            assert stats.get(f"http.http-{bad_port}.rds.http-{bad_port}.update_success", 0) == 0
        else:
            # Delta: the route configuration names VHDS and is applied; its virtual host is what
            # Envoy refused. Then the configuration's removal counts as an update too.
            assert stats[f"http.http-{bad_port}.rds.http-{bad_port}.update_success"] == 2
            assert stats[f"http.http-{bad_port}.rds.vhds.http-{bad_port}.update_rejected"] >= 1
        assert stats[f"cluster.{NS}/web.update_success"] >= 1
        assert stats.get(f"cluster.{NS}/rejected-backend.update_success", 0) == 0
        assert stats[f"cluster.{NS}/web.membership_total"] == 1
        # The port whose route configuration was rejected serves nothing (its one Route is held
        # back, so its listener goes too: controlplane/isolation.py); the rest keep working.
        for _ in range(5):
            for port in good_ports:
                assert http_get(f"http://127.0.0.1:{port}/get")[0] == 200
        assert serves_nothing(bad_port)
    finally:
        if envoy is not None:
            await envoy.stop()
        await plane.stop()
