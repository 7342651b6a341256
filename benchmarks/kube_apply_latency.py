"""Time from a Route change applied to the Kubernetes API to (a) the change being visible through
a real Envoy and (b) the Route's status reading Programmed=True for that generation.

Runs the operator in-process (kopf) against a real control plane started as the tests start it
(tests/kubecluster.py: etcd, kube-apiserver, kube-controller-manager; binaries from
KUBEBUILDER_ASSETS or tools/kube/build.sh), with httpbin and a real Envoy on free loopback ports.
Each apply is a merge patch of the Route's spec over HTTPS, as `kubectl apply` sends it.

    uv run python benchmarks/kube_apply_latency.py [--applies 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (its MonkeyPatch, for the tests' operator helper)

from tests.kubecluster import KubeCluster, find_assets  # noqa: E402
from tests.kubeops import KubeTestAPI, install_crds, running_operator  # noqa: E402
from tests.realprocs import Envoy, Httpbin, eventually, http_get  # noqa: E402
from xds_operator.dev.processes import free_port  # noqa: E402


def route_spec(port: int, marker: str) -> dict:
    return {"port": port, "rules": [{"backends": [{"name": "httpbin"}],
                                     "responseHeaders": {"set": [{"name": "x-apply", "value": marker}]}}]}


def programmed_generation(obj: dict | None) -> int | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == "Programmed" and c["status"] == "True":
            return c.get("observedGeneration")
    return None


async def main(applies: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xds-kube-bench-"))
    (tmp / "kube").mkdir()
    cluster = KubeCluster(find_assets(), tmp / "kube").start()
    httpbin = Httpbin(tmp)
    port = free_port()
    visible, programmed = [], []
    try:
        install_crds(cluster)
        async with KubeTestAPI(cluster, "kube-apply-latency") as kube:
            with pytest.MonkeyPatch.context() as env:
                async with running_operator(kube, env, initial_quiet=0.05) as operator:
                    await kube.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Backend",
                                       "metadata": {"name": "httpbin"},
                                       "spec": {"endpoints": [{"address": "127.0.0.1", "port": httpbin.port}]}})
                    await kube.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route",
                                       "metadata": {"name": "bench"}, "spec": route_spec(port, "0")})
                    envoy = await Envoy(tmp, operator.plane.xds_port).start()
                    url = f"http://127.0.0.1:{port}/get"
                    try:
                        await eventually(lambda: _header(url) == "0", timeout=30, what="first config through Envoy")
                        for i in range(1, applies + 1):
                            started = time.perf_counter()
                            patched = await kube.patch("routes", "bench", {"spec": route_spec(port, str(i))})
                            generation = patched["metadata"]["generation"]
                            seen_at = done_at = None
                            while seen_at is None or done_at is None:
                                now = time.perf_counter()
                                if now - started > 10:
                                    raise TimeoutError(f"apply {i}: not visible/programmed after 10 s")
                                if seen_at is None and await asyncio.to_thread(_header, url) == str(i):
                                    seen_at = time.perf_counter()
                                if done_at is None and programmed_generation(
                                        await kube.get("routes", "bench")) == generation:
                                    done_at = time.perf_counter()
                                await asyncio.sleep(0.002)
                            visible.append((seen_at - started) * 1000)
                            programmed.append((done_at - started) * 1000)
                            await asyncio.sleep(0.2)
                    finally:
                        await envoy.stop()
    finally:
        httpbin.stop()
        cluster.stop()
    print(f"Route applied (API write) -> ... over {applies} applies, real kube-apiserver + in-process operator "
          f"+ real Envoy:")
    for name, samples in (("visible through Envoy", visible), ("status Programmed=True", programmed)):
        print(f"  {name:24s} median {statistics.median(samples):5.0f} ms   max {max(samples):5.0f} ms")


def _header(url: str) -> str | None:
    try:
        return http_get(url)[1].get("x-apply")
    except OSError:
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--applies", type=int, default=20)
    asyncio.run(main(parser.parse_args().applies))
