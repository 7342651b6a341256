"""The API server goes away for 15 s and comes back on the same etcd: Envoy keeps serving the
whole time, and the operator resumes its watches, also when they answer 410 Gone (etcd compacted
while it was away), converges to what changed meanwhile and loses no status."""

from __future__ import annotations

import asyncio
import time

import pytest

from xds_operator.dev.processes import free_port

from .kubeops import condition, has_condition, host_address, running_operator
from .realprocs import Envoy, Httpbin, eventually, http_get
from .test_kube_e2e import APP, ROUTE, in_namespace

OUTAGE = 15.0


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory):
    server = Httpbin(tmp_path_factory.mktemp("httpbin"), host=host_address())
    yield server
    server.stop()


def header(port: int, name: str = "x-phase") -> str | None:
    try:
        return http_get(f"http://127.0.0.1:{port}/get", timeout=2)[1].get(name)
    except OSError:
        return None


def route_with_header(name: str, port: int, phase: str) -> dict:
    return {"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route", "metadata": {"name": name},
            "spec": {"port": port, "proxies": ["httpbin"],
                     "rules": [{"backends": [{"name": "httpbin"}],
                                "responseHeaders": {"set": [{"name": "x-phase", "value": phase}]}}]}}


async def test_api_server_outage_with_compaction(kube, kubectl, monkeypatch, tmp_path, httpbin):
    cluster, ns = kube.cluster, kube.namespace
    web, old, new = free_port(), free_port(), free_port()
    app = tmp_path / "app.yaml"
    app.write_text(in_namespace(APP.format(httpbin_host=httpbin.host, httpbin_port=httpbin.port,
                                           listener_port=free_port()), ns))
    await kubectl("apply", "-f", str(app))
    await kube.create(route_with_header("web", web, "before"))
    await kube.create(route_with_header("old", old, "old"))
    async with running_operator(kube, monkeypatch, resync_interval=1.0) as operator:
        envoy = await Envoy(tmp_path, operator.plane.xds_port, node_cluster="httpbin").start()
        try:
            await eventually(lambda: header(web) == "before" and header(old) == "old", timeout=30,
                             what="both routes through Envoy")
            before = await kube.wait_for("routes", "web", condition=has_condition("Programmed", "True", generation=1))
            await kube.wait_for("routes", "old", condition=has_condition("Programmed", "True"))
            seen = max(int(v) for v in operator.versions.values())

            failures: list[str] = []
            polling = True

            async def keep_asking() -> None:
                while polling:
                    answer = await asyncio.to_thread(header, web)
                    if answer not in ("before", "after"):
                        failures.append(f"{time.monotonic():.1f}: {answer}")
                    await asyncio.sleep(0.25)

            poller = asyncio.create_task(keep_asking())
            started = time.monotonic()
            cluster.stop_apiserver()
            # Meanwhile: etcd moves on and is compacted past everything the operator has seen, so
            # its watches cannot resume (410 Gone); and Route "old" goes away behind its back (as
            # through another API server replica), so no watch will ever report it deleted.
            for i in range(5):
                cluster.etcd_put("/xds-test/tick", str(i))
            assert cluster.etcd_delete(f"/registry/xds-operator.dev/routes/{ns}/old") == 1
            compacted = cluster.compact_etcd()
            assert compacted > seen
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
            await asyncio.to_thread(cluster.start_apiserver)

            # The status written before the outage is still there.
            after_restart = await kube.get("routes", "web")
            assert condition(after_restart, "Programmed") == condition(before, "Programmed")
            # Changes right after the restart, likely before the operator has reconnected.
            await kube.patch("routes", "web", {"spec": route_with_header("web", web, "after")["spec"]})
            await kube.create(route_with_header("new", new, "new"))

            await eventually(lambda: header(web) == "after" and header(new) == "new" and header(old) is None,
                             timeout=60, what="Envoy converged to the changes")
            await kube.wait_for("routes", "web", condition=has_condition("Programmed", "True", generation=2),
                                timeout=30)
            await kube.wait_for("routes", "new", condition=has_condition("Programmed", "True", generation=1),
                                timeout=30)
            assert all(k.name != "old" for k in operator.plane.state.objects)
            polling = False
            await poller
            assert not failures, failures  # Envoy served the whole time
        finally:
            await envoy.stop()
