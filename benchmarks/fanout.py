"""Fan-out: one edit, many proxies, a large config; and how responsive the server stays.

Starts `xds-operator serve` (its own process) on N Backends + N Routes, connects P gRPC clients
that behave like Envoy (state of the world: CDS, EDS, LDS, RDS, every response ACKed), then
edits one Route file and times until every client has received the new route configuration.
Meanwhile it polls the server's /healthz to measure how long its event loop is held up.

    uv run python benchmarks/fanout.py [--objects 5000] [--proxies 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realprocs import http_get  # noqa: E402
from tests.xds_client import AdsClient, resource_names  # noqa: E402

from xds_operator.dev.processes import Process, free_port, wait_http  # noqa: E402
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE  # noqa: E402

DOC = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: svc-{i}, namespace: bench}}
spec:
  endpoints: [{{address: 10.{a}.{b}.{c}, port: 8080}}]
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: route-{i}, namespace: bench}}
spec:
  hostnames: [svc-{i}.example.com]
  rules:
  - matches: [{{path: {{type: Prefix, value: /api}}}}]
    backends: [{{name: svc-{i}}}]
    responseHeaders: {{set: [{{name: x-marker, value: "{marker}"}}]}}
"""


def write(config: Path, i: int, marker: str = "a") -> None:
    (config / f"svc-{i}.yaml").write_text(DOC.format(i=i, a=i // 65536, b=i // 256 % 256, c=i % 256, marker=marker))


async def sync(client: AdsClient) -> None:
    client.send(CLUSTER)
    cds = await client.expect(CLUSTER, timeout=60)
    client.send(ENDPOINT, resource_names(cds))
    client.ack(cds)
    client.ack(await client.expect(ENDPOINT, timeout=60))
    client.send(LISTENER)
    lds = await client.expect(LISTENER, timeout=60)
    client.send(ROUTE, resource_names(lds))
    client.ack(lds)
    client.ack(await client.expect(ROUTE, timeout=60))


class HealthProbe(threading.Thread):
    """Polls /healthz from a thread; the slowest answer is how long the server's loop was busy."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            http_get(self.url, timeout=30)
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)


async def main(n: int, proxies: int) -> None:
    config = Path(tempfile.mkdtemp(prefix="xds-fanout-")) / "config"
    config.mkdir()
    for i in range(n):
        write(config, i)
    xds_port, http_port = free_port(), free_port()
    server = Process("serve", [sys.executable, "-m", "xds_operator.cli", "--log-level", "WARNING", "serve",
                               "--config", str(config), "--xds-address", f"127.0.0.1:{xds_port}",
                               "--http-address", f"127.0.0.1:{http_port}"], log_path=config.parent / "serve.log")
    clients: list[AdsClient] = []
    try:
        await server.start()
        started = time.perf_counter()
        await wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=300, process=server)
        print(f"{n} Backends + {n} Routes in {n} files, {proxies} SotW clients:")
        print(f"  server start -> ready (first build)        {time.perf_counter() - started:7.2f} s")
        clients = [AdsClient(xds_port, node_id=f"envoy-{i}") for i in range(proxies)]
        started = time.perf_counter()
        await asyncio.gather(*(sync(c) for c in clients))
        print(f"  {proxies} clients fully synced (4 types, ACKed)    {time.perf_counter() - started:7.2f} s")

        probe = HealthProbe(f"http://127.0.0.1:{http_port}/healthz")
        probe.start()
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        write(config, 0, marker="b")
        arrivals = []

        async def wait_route(client: AdsClient) -> None:
            response = await client.expect(ROUTE, timeout=120)
            arrivals.append(time.perf_counter() - started)
            client.ack(response)

        await asyncio.gather(*(wait_route(c) for c in clients))
        await asyncio.sleep(0.3)
        probe.stop.set()
        probe.join()
        print(f"  one file edited -> RDS at every client     median {statistics.median(arrivals) * 1000:6.0f} ms"
              f"   last {max(arrivals) * 1000:6.0f} ms  (includes the 100 ms file poll)")
        print(f"  /healthz during the rebuild and push      median {statistics.median(probe.samples):6.1f} ms"
              f"   max {max(probe.samples):6.1f} ms")
    finally:
        for client in clients:
            await client.close()
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--proxies", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.objects, args.proxies))
