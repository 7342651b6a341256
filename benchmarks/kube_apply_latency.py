"""Time from a Route change applied to the Kubernetes API to (a) the change being visible through
a real Envoy and (b) the Route's status reading Programmed=True for that generation.

Runs the operator in-process (kopf) against a real control plane started as the tests start it
(tests/kubecluster.py: etcd, kube-apiserver, kube-controller-manager; binaries from
KUBEBUILDER_ASSETS or tools/kube/build.sh), with httpbin and a real Envoy on free loopback ports.
Each apply is a merge patch of the Route's spec over HTTPS, as `kubectl apply` sends it. R Routes
in all: the applied one and R-1 others on the same listener (other hostnames).

Prints the median, p99 and max of both, against the issue-10 target for (a): p99 <= 100 ms.

    uv run python benchmarks/kube_apply_latency.py [--applies 100] [--routes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
from tests.realprocs import Envoy, eventually, http_get, running_httpbin  # noqa: E402

from xds_operator.dev.processes import free_port  # noqa: E402


def route_spec(port: int, marker: str) -> dict:
    return {"port": port, "rules": [{"backends": [{"name": "httpbin"}],
                                     "responseHeaders": {"set": [{"name": "x-apply", "value": marker}]}}]}


def programmed_generation(obj: dict | None) -> int | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == "Programmed" and c["status"] == "True":
            return c.get("observedGeneration")
    return None


async def main(applies: int, routes: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xds-kube-bench-"))
    (tmp / "kube").mkdir()
    cluster = KubeCluster(find_assets(), tmp / "kube").start()
    port = free_port()
    visible: list[float] = []
    programmed: list[float] = []
    try:
        install_crds(cluster)
        async with running_httpbin(tmp) as httpbin, KubeTestAPI(cluster, "kube-apply-latency") as kube:
            with pytest.MonkeyPatch.context() as env:
                async with running_operator(kube, env, initial_quiet=0.05) as operator:
                    await kube.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Backend",
                                       "metadata": {"name": "httpbin"},
                                       "spec": {"endpoints": [{"address": "127.0.0.1", "port": httpbin.port}]}})
                    await kube.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route",
                                       "metadata": {"name": "bench"}, "spec": route_spec(port, "0")})
                    for i in range(routes - 1):
                        await kube.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route",
                                           "metadata": {"name": f"other-{i}"},
                                           "spec": {**route_spec(port, "0"), "hostnames": [f"other-{i}.example.com"]}})
                    envoy = await Envoy(tmp, operator.plane.xds_port).start()
                    url = f"http://127.0.0.1:{port}/get"
                    try:
                        await eventually(lambda: _header(url) == "0", timeout=30, what="first config through Envoy")
                        # Every Route's first status written (1,000 of them take a while): from here
                        # on, an apply's status is the only one to write.
                        await _all_programmed(kube, routes, timeout=600)
                        for i in range(1, applies + 1):
                            started = time.perf_counter()
                            patched = await kube.patch("routes", "bench", {"spec": route_spec(port, str(i))})
                            generation = patched["metadata"]["generation"]
                            seen_at = done_at = None
                            while seen_at is None or done_at is None:
                                now = time.perf_counter()
                                if now - started > 30:
                                    raise TimeoutError(f"apply {i}: {'not visible' if seen_at is None else 'visible'}"
                                                       f", {'not programmed' if done_at is None else 'programmed'} "
                                                       "after 30 s")
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
        cluster.stop()
    print(f"Route applied (API write) -> ... over {applies} applies, {routes} Routes, real kube-apiserver + "
          f"in-process operator + real Envoy:")
    for name, samples in (("visible through Envoy", visible), ("status Programmed=True", programmed)):
        target = (f"   target p99 <= 100 ms: {'met' if p99(samples) <= 100 else 'NOT met'}"
                  if samples is visible and routes >= 1000 else "")
        print(f"  {name:24s} median {statistics.median(samples):5.0f} ms   p99 {p99(samples):5.0f} ms   "
              f"max {max(samples):5.0f} ms{target}")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def _all_programmed(kube: KubeTestAPI, routes: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await kube.list("routes")
        if len(listed) == routes and all(programmed_generation(r) is not None for r in listed):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"not every Route Programmed after {timeout} s")


def _header(url: str) -> str | None:
    try:
        return http_get(url)[1].get("x-apply")
    except OSError:
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--applies", type=int, default=100)
    parser.add_argument("--routes", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.applies, args.routes))
