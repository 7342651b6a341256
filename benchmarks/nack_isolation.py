"""NACK isolation at scale: one endpoint set that every client rejects, among N.

Starts `xds-operator serve` (its own process) on N Backends + N Routes, connects P gRPC clients
that behave like Envoy, except that each NACKs every EDS response carrying the endpoints of
Backend svc-0 (as Envoy rejects a whole response for one bad resource). Prints how long until
every client has all the other endpoint sets, and how many EDS responses and resources that
took (without a NACK: one response of N).

    uv run python benchmarks/nack_isolation.py [--objects 5000] [--proxies 50] [--delta]
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

from benchmarks.fanout import write  # noqa: E402
from tests.xds_client import AdsClient, resource_names  # noqa: E402
from xds_operator.dev.processes import Process, free_port, wait_http  # noqa: E402
from xds_operator.translate.resources import CLUSTER, ENDPOINT  # noqa: E402

BAD = "bench/svc-0"


async def isolate(client: AdsClient, delta: bool) -> tuple[float, int, int]:
    """(seconds from the EDS request until every good endpoint set is ACKed, EDS responses, resources)."""
    if delta:
        client.send_delta(CLUSTER)
    else:
        client.send(CLUSTER)
    cds = await client.expect(CLUSTER, timeout=120)
    names = resource_names(cds)
    good = set(names) - {BAD}
    started = time.perf_counter()
    if delta:
        client.send_delta(ENDPOINT, subscribe=names)
    else:
        client.send(ENDPOINT, names)
    client.ack(cds)
    applied: set[str] = set()
    responses = resources = 0
    while not good <= applied:
        eds = await client.expect(ENDPOINT, timeout=120)
        got = resource_names(eds)
        responses += 1
        resources += len(got)
        if BAD in got:
            client.nack(eds, f"{BAD}: rejected by this benchmark")
        else:
            applied.update(got)
            client.ack(eds)
    return time.perf_counter() - started, responses, resources


async def main(n: int, proxies: int, delta: bool) -> None:
    config = Path(tempfile.mkdtemp(prefix="xds-nack-")) / "config"
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
        await wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=300, process=server)
        clients = [AdsClient(xds_port, node_id=f"envoy-{i}", delta=delta) for i in range(proxies)]
        results = await asyncio.gather(*(isolate(c, delta) for c in clients))
        seconds = [r[0] for r in results]
        print(f"{n} endpoint sets, one rejected by every client, {proxies} {'delta' if delta else 'SotW'} clients:")
        print(f"  all {n - 1} good ones ACKed at every client   median {statistics.median(seconds) * 1000:6.0f} ms"
              f"   last {max(seconds) * 1000:6.0f} ms")
        print(f"  EDS responses per client                   {statistics.median(r[1] for r in results):6.0f}"
              f"   (1 without a NACK)")
        print(f"  endpoint sets received per client          {statistics.median(r[2] for r in results):6.0f}"
              f"   ({n} without a NACK)")
    finally:
        for client in clients:
            await client.close()
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--delta", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.objects, args.proxies, args.delta))
