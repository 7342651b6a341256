"""What ADS over mTLS costs: per handshake, per stream, and a new stream end to end.

- `ReloadingTls.changed()` runs at every TLS handshake (grpc's certificate fetcher): with the
  files unchanged it only stats them;
- `peer_group.refusal()` runs on each stream's first request (parses the peer's certificate);
- a new channel + stream until the first CDS response, plaintext and mTLS, against an in-process
  ControlPlane (a full TLS 1.3 handshake with client certificates each time).

Wall and CPU time (time.process_time, of this process: client and server both run here).

    uv run python benchmarks/xds_tls.py [--calls 20000] [--streams 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.xds_client import AdsClient  # noqa: E402
from tests.xds_pki import XdsPki  # noqa: E402

from xds_operator.api.objects import API_VERSION, UserObject  # noqa: E402
from xds_operator.controlplane.app import ControlPlane  # noqa: E402
from xds_operator.translate.resources import CLUSTER  # noqa: E402
from xds_operator.xds.channel_tls import ReloadingTls  # noqa: E402
from xds_operator.xds.peer_group import refusal  # noqa: E402


def per_call(what: str, call: Callable[[], object], calls: int) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{what:<44} {wall / calls * 1e6:8.1f} us wall {cpu / calls * 1e6:8.1f} us CPU  ({calls} calls)")


async def stream_setup(pki: XdsPki, streams: int, mtls: bool) -> None:
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address=None, debounce=0.01,
                         xds_tls=pki.files() if mtls else None)
    plane.state.put(UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "a", "namespace": "b"},
        "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9001}]}}))
    await plane.start()
    await asyncio.wait_for(plane.controller.wait_built(), 10)
    assert plane.xds_port is not None
    client = pki.client("edge")
    times: list[float] = []
    cpu = time.process_time()
    try:
        for _ in range(streams):
            started = time.perf_counter()
            ads = AdsClient(plane.xds_port, cluster="edge",
                            channel=pki.channel(plane.xds_port, client) if mtls else None)
            ads.send(CLUSTER)
            await ads.expect(CLUSTER, timeout=10)
            times.append(time.perf_counter() - started)
            await ads.close()
            if mtls:
                await ads.channel.close()
    finally:
        await plane.stop()
    cpu = time.process_time() - cpu
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{'new stream -> first CDS response, ' + ('mTLS' if mtls else 'plaintext'):<44} "
          f"median {statistics.median(times) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms wall "
          f"{cpu / streams * 1000:6.2f} ms CPU each  ({streams} streams)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a quick run at the smallest size")
    args = parser.parse_args()
    calls, streams = (200, 5) if args.smoke else (args.calls, args.streams)
    with tempfile.TemporaryDirectory() as folder:
        pki = XdsPki(Path(folder))
        tls = ReloadingTls(pki.files())
        per_call("certificate fetch per handshake, unchanged", tls.changed, calls)
        pem = pki.client("edge").cert_pem
        per_call("group check per stream", lambda: refusal("edge", pem), calls)
        asyncio.run(stream_setup(pki, streams, mtls=False))
        asyncio.run(stream_setup(pki, streams, mtls=True))


if __name__ == "__main__":
    main()
