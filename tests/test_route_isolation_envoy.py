"""A refused route configuration is traced back to the Route(s) in it: real Envoys (two of one
group), Routes sharing one port, in SotW and delta.

As in test_nack_isolation_envoy.py, the bad input is made in a test-only way production cannot
reach: this process's translator turns any route whose path starts with /broken into a regex
RE2 refuses, so Envoy rejects the whole route configuration of the port it is on.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import free_port
from xds_operator.translate import TranslateOptions
from xds_operator.translate import routes as route_translation

from .realprocs import Envoy, eventually, http_get
from .sabotage import route_translator_with_a_bad_regex
from .test_nack_isolation_envoy import backend, programmed

NS = "nack-iso"


def route(name: str, port: int, path: str, generation: int) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route",
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"port": port, "rules": [{"matches": [{"path": {"type": "Prefix", "value": path}}],
                                          "backends": [{"name": "web"}]}]}})


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_the_route_to_blame_is_found_and_held_back(api_type, monkeypatch, tmp_path, httpbin):
    port = free_port()
    # Routes whose path starts with /broken are translated so that Envoy refuses them.
    monkeypatch.setattr(route_translation, "translate_route",
                        route_translator_with_a_bad_regex(lambda entry: entry.match.path.value.startswith("/broken")))
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0", debounce=0.01,
                         options=TranslateOptions(listener_address="127.0.0.1"))
    generations: dict[str, int] = {}

    def put(name: str, path: str) -> None:
        generations[name] = generations.get(name, 0) + 1
        plane.state.put(route(name, port, path, generations[name]))

    plane.state.put(backend("web", httpbin.port))
    put("good", "/get")
    put("bad1", "/headers")
    put("bad2", "/ip")
    await plane.start()
    envoys: list[Envoy] = []
    try:
        await asyncio.wait_for(plane.controller.wait_built(), 5)
        # Two proxies of one group, on the same listener port (Envoy binds with SO_REUSEPORT).
        for node in ("one", "two"):
            envoys.append(await Envoy(tmp_path, plane.xds_port, api_type=api_type, node_id=node).start())

        def serves(path: str) -> bool:
            return http_get(f"http://127.0.0.1:{port}{path}")[0] == 200

        def status() -> dict:
            return json.loads(http_get(f"http://127.0.0.1:{plane.http_port}/status")[2])

        def metrics() -> dict[str, float]:
            text = http_get(f"http://127.0.0.1:{plane.http_port}/metrics")[2].decode()
            return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                    if line.startswith("xds_operator_route_")}

        def settled(rejected: set[str]) -> dict | None:
            now = status()
            reasons = {name: programmed(now, f"Route/{NS}/{name}")["reason"] for name in ("good", "bad1", "bad2")}
            want = {name: "Rejected" if name in rejected else "Programmed" for name in reasons}
            return now if reasons == want else None

        for path in ("/get", "/headers", "/ip"):
            await eventually(lambda path=path: serves(path), timeout=10, what=f"{path} served")
        await eventually(lambda: settled(set()), timeout=10, what="all Programmed")

        # One good change and one sabotaged, in one build: the good one reaches Envoy, the
        # sabotaged one is held at its last ACKed version (/headers still works) and is the
        # only one Rejected.
        put("good", "/anything/one")
        put("bad1", "/broken1")
        await eventually(lambda: serves("/anything/one"), timeout=10, what="the good change served")
        now = await eventually(lambda: settled({"bad1"}), timeout=10, what="only bad1 Rejected")
        message = programmed(now, f"Route/{NS}/bad1")["message"]
        assert message.startswith("rejected by Envoy: ") and "unclosed" in message
        assert now[f"Route/{NS}/good"]["proxies"] == {"total": 2, "synced": 2, "nacked": 0}
        assert serves("/headers") and serves("/ip") and not serves("/broken1")
        assert await asyncio.to_thread(metrics) == {"xds_operator_route_isolations_total": 1, "xds_operator_route_culprits_total": 1}

        # The culprit fixed: served again, Programmed.
        put("bad1", "/anything/fixed1")
        await eventually(lambda: serves("/anything/fixed1"), timeout=10, what="the fixed Route served")
        await eventually(lambda: settled(set()), timeout=10, what="all Programmed again")

        # Two culprits at once, with a good change: both found, the good change served.
        put("good", "/anything/two")
        put("bad1", "/broken1-again")
        put("bad2", "/broken2")
        await eventually(lambda: serves("/anything/two"), timeout=10, what="the second good change served")
        now = await eventually(lambda: settled({"bad1", "bad2"}), timeout=10, what="bad1 and bad2 Rejected")
        for name in ("bad1", "bad2"):
            assert "unclosed" in programmed(now, f"Route/{NS}/{name}")["message"]
        assert serves("/anything/fixed1") and serves("/ip")  # (their last ACKed versions)
        assert not serves("/get") and not serves("/anything/one")  # (the good Route's old paths are gone)
        assert await asyncio.to_thread(metrics) == {"xds_operator_route_isolations_total": 2, "xds_operator_route_culprits_total": 3}
        # Both Envoys run the same, good, route configuration (delta: its virtual hosts over VHDS).
        subscription = f"rds.http-{port}" if api_type == "GRPC" else f"rds.vhds.http-{port}"
        for envoy in envoys:
            assert envoy.stats()[f"http.http-{port}.{subscription}.update_rejected"] >= 2
        versions = {envoy.stats()[f"http.http-{port}.{subscription}.version_text"] for envoy in envoys}
        assert len(versions) == 1
    finally:
        for envoy in envoys:
            await envoy.stop()
        await plane.stop()


# -- the per-SNI route configurations (https-<port>/<hostname>) -------------------------------------

SHARED, OTHER = "shared.example.test", "other.example.test"


def tls_route(name: str, port: int, host: str, path: str, generation: int) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route",
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"port": port, "hostnames": [host], "tls": {"certificateRef": {"name": "cert"}},
                 "rules": [{"matches": [{"path": {"type": "Prefix", "value": path}}],
                            "directResponse": {"status": 200, "body": name}}]}})


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_the_tls_route_to_blame_is_found_in_its_sni_route_configuration(api_type, monkeypatch, tmp_path):
    """Two TLS Routes share one SNI hostname (one route configuration, https-<port>/<hostname>);
    a third has a hostname of its own. A good and a sabotaged change in one build: the good one
    is served, the sabotaged Route is held at its last ACKed version and is the one Rejected."""
    from xds_operator.sources.kubernetes import trimmed_secret

    from .test_tls_envoy import TlsConnection, client_context
    from .tlscerts import make_ca, make_leaf, tls_secret

    port = free_port()
    monkeypatch.setattr(route_translation, "translate_route",
                        route_translator_with_a_bad_regex(lambda entry: entry.match.path.value.startswith("/broken")))
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0", debounce=0.01,
                         options=TranslateOptions(listener_address="127.0.0.1"))
    ca = make_ca()
    context = client_context(ca)
    plane.state.put_secret(NS, "cert", trimmed_secret(tls_secret("cert", make_leaf(ca, SHARED, OTHER))))
    generations: dict[str, int] = {}
    hosts = {"good": SHARED, "bad": SHARED, "elsewhere": OTHER}

    def put(name: str, path: str) -> None:
        generations[name] = generations.get(name, 0) + 1
        plane.state.put(tls_route(name, port, hosts[name], path, generations[name]))

    put("good", "/good")
    put("bad", "/bad")
    put("elsewhere", "/elsewhere")
    await plane.start()
    envoy = None
    try:
        await asyncio.wait_for(plane.controller.wait_built(), 5)
        envoy = await Envoy(tmp_path, plane.xds_port, api_type=api_type).start()

        def serves(host: str, path: str) -> bool:
            conn = TlsConnection(port, host, context)
            try:
                return conn.get(path)[0] == 200
            finally:
                conn.close()

        def status() -> dict:
            return json.loads(http_get(f"http://127.0.0.1:{plane.http_port}/status")[2])

        def settled(rejected: set[str]) -> dict | None:
            now = status()
            reasons = {name: programmed(now, f"Route/{NS}/{name}")["reason"] for name in hosts}
            return now if reasons == {n: "Rejected" if n in rejected else "Programmed" for n in reasons} else None

        for name, path in (("good", "/good"), ("bad", "/bad"), ("elsewhere", "/elsewhere")):
            await eventually(lambda name=name, path=path: serves(hosts[name], path), timeout=10, what=f"{path} served")
        await eventually(lambda: settled(set()), timeout=10, what="all Programmed")

        put("good", "/good-new")
        put("bad", "/broken")
        await eventually(lambda: serves(SHARED, "/good-new"), timeout=10, what="the good change served")
        now = await eventually(lambda: settled({"bad"}), timeout=10, what="only bad Rejected")
        message = programmed(now, f"Route/{NS}/bad")["message"]
        assert message.startswith("rejected by Envoy: ") and "unclosed" in message
        assert serves(SHARED, "/bad") and not serves(SHARED, "/broken")  # its last ACKed version
        assert serves(OTHER, "/elsewhere")
        # Envoy refused the SNI hostname's route configuration (the sabotage was real).
        assert envoy.stats()[f"http.https-{port}.rds.https-{port}/{SHARED}.update_rejected"] >= 1

        # The culprit fixed: served again, Programmed.
        put("bad", "/bad-fixed")
        await eventually(lambda: serves(SHARED, "/bad-fixed"), timeout=10, what="the fixed Route served")
        await eventually(lambda: settled(set()), timeout=10, what="all Programmed again")
    finally:
        if envoy is not None:
            await envoy.stop()
        await plane.stop()
