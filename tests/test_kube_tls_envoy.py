"""TLS on the Kubernetes path end to end: a kubernetes.io/tls Secret in a real kube-apiserver, the
operator (kube/secrets.py's filtered watch), and a real Envoy terminating TLS with it. Prints the
time from a Secret update (the API write) to a new handshake with SNI seeing the new certificate:
`uv run pytest tests/test_kube_tls_envoy.py -s`."""

from __future__ import annotations

import asyncio
import statistics
import time

from xds_operator.dev.processes import free_port

from .kubeops import has_condition, route, running_operator
from .realprocs import Envoy, eventually
from .test_tls_envoy import TlsConnection, client_context, der, handshake
from .tlscerts import make_ca, make_leaf, tls_secret

HOST = "shop.example.test"
ROTATIONS = 5


async def test_secret_update_reaches_new_handshakes_without_draining(kube, monkeypatch, tmp_path):
    ca = make_ca()
    port = free_port()
    first = make_leaf(ca, HOST)
    context = client_context(ca)
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(tls_secret("shop", first, namespace=kube.namespace))
        await kube.create(route("shop", port=port, hostnames=[HOST], tls={"certificateRef": {"name": "shop"}},
                                rules=[{"directResponse": {"status": 200, "body": "shop"}}]))
        envoy = await Envoy(tmp_path, operator.plane.xds_port).start()
        try:
            assert await eventually(lambda: handshake(port, HOST, context) == (der(first), 200, b"shop"),
                                    timeout=30, what="the first certificate served")
            await kube.wait_for("routes", "shop", condition=has_condition("Programmed", "True"))
            open_conn = await asyncio.to_thread(TlsConnection, port, HOST, context)
            modified = envoy.stats().get("listener_manager.listener_modified", 0)
            samples = []
            for _ in range(ROTATIONS):
                rotated = make_leaf(ca, HOST)
                started = time.perf_counter()
                await kube.patch("secrets", "shop", {"data": tls_secret("shop", rotated)["data"]})
                while (await asyncio.to_thread(handshake, port, HOST, context))[0] != der(rotated):
                    assert time.perf_counter() - started < 15, "the rotated certificate was not served within 15 s"
                    await asyncio.sleep(0.005)
                samples.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.2)
            print(f"\nSecret update (API write) -> new certificate in a new handshake, {ROTATIONS} rotations, "
                  f"real kube-apiserver + in-process operator + real Envoy: median {statistics.median(samples):.0f} ms, "
                  f"max {max(samples):.0f} ms")
            # The open connection kept its session and still works; no listener changed (nothing drained).
            assert open_conn.peer_der == der(first)
            assert await asyncio.to_thread(open_conn.get) == (200, b"shop")
            open_conn.close()
            assert envoy.stats().get("listener_manager.listener_modified", 0) == modified
            rejected = {k: v for k, v in envoy.update_counters().items() if k.endswith("update_rejected") and v}
            assert rejected == {}
        finally:
            await envoy.stop()
