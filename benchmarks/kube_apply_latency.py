"""Time from a Route change applied to the Kubernetes API to (a) the change being visible through
a real Envoy and (b) the Route's status reading Programmed=True for that generation.

Runs the operator in-process against the test suite's Kubernetes API emulator (kmock), with
httpbin and a real Envoy on free loopback ports. Each apply is a merge patch of the Route's
spec over HTTP, as `kubectl apply` sends it.

    uv run python benchmarks/kube_apply_latency.py [--applies 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kopf  # noqa: E402

from tests.kubeapi import KubeAPI  # noqa: E402
from tests.realprocs import Envoy, Httpbin, eventually, http_get  # noqa: E402
from xds_operator.kube.operator import Operator, OperatorConfig, register  # noqa: E402
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
    httpbin = Httpbin(tmp)
    port = free_port()
    visible, programmed = [], []
    try:
        async with KubeAPI() as api:
            os.environ["KUBECONFIG"] = str(api.kubeconfig)
            await api.kubectl("apply", "-k", str(ROOT / "crds"))
            operator = Operator(OperatorConfig(xds_address="127.0.0.1:0", http_address="127.0.0.1:0",
                                               listener_address="127.0.0.1", initial_quiet=0.05))
            registry = kopf.OperatorRegistry()
            register(registry, operator)
            async with api.operator(registry):
                await api.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Backend",
                                  "metadata": {"name": "httpbin", "namespace": "default"},
                                  "spec": {"endpoints": [{"address": "127.0.0.1", "port": httpbin.port}]}})
                await api.create({"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route",
                                  "metadata": {"name": "bench", "namespace": "default"},
                                  "spec": route_spec(port, "0")})
                envoy = await Envoy(tmp, operator.plane.xds_port).start()
                url = f"http://127.0.0.1:{port}/get"
                try:
                    await eventually(lambda: _header(url) == "0", timeout=30, what="first config through Envoy")
                    for i in range(1, applies + 1):
                        started = time.perf_counter()
                        patched = await api.patch("routes", "bench", {"spec": route_spec(port, str(i))}, "default")
                        generation = patched["metadata"]["generation"]
                        seen_at = done_at = None
                        while seen_at is None or done_at is None:
                            now = time.perf_counter()
                            if now - started > 10:
                                raise TimeoutError(f"apply {i}: not visible/programmed after 10 s")
                            if seen_at is None and await asyncio.to_thread(_header, url) == str(i):
                                seen_at = time.perf_counter()
                            if done_at is None and programmed_generation(api.get("routes", "bench", "default")) \
                                    == generation:
                                done_at = time.perf_counter()
                            await asyncio.sleep(0.002)
                        visible.append((seen_at - started) * 1000)
                        programmed.append((done_at - started) * 1000)
                        await asyncio.sleep(0.2)
                finally:
                    await envoy.stop()
    finally:
        httpbin.stop()
    print(f"Route applied (API write) -> ... over {applies} applies, emulator + in-process operator + real Envoy:")
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
