"""Route-level NACK isolation with a real Envoy: how long, and how many RDS round trips, until
the Route(s) to blame are found among N Routes of one port that all changed at once.

An in-process control plane (as in tests/test_route_isolation_envoy.py, the translator is
sabotaged here: a route whose path starts with /broken gets a regex RE2 refuses), one Envoy.
For each N, every Route changes in one build, k of them to a /broken path; timed from the
change to the moment the culprits are known and the other N-k changes are ACKed.

    uv run python benchmarks/route_isolation.py [--routes 10 100 1000] [--delta]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realprocs import Envoy  # noqa: E402
from tests.sabotage import route_translator_with_a_bad_regex  # noqa: E402

from xds_operator.api.objects import API_VERSION, UserObject  # noqa: E402
from xds_operator.controlplane.app import ControlPlane  # noqa: E402
from xds_operator.dev.processes import free_port  # noqa: E402
from xds_operator.translate import TranslateOptions  # noqa: E402
from xds_operator.translate import routes as route_translation  # noqa: E402
from xds_operator.translate.resources import ROUTE  # noqa: E402

NS = "bench"


def _sabotage() -> None:
    """Routes whose path starts with /broken are translated so that Envoy refuses them."""
    route_translation.translate_route = route_translator_with_a_bad_regex(  # type: ignore[assignment]
        lambda entry: entry.match.path.value.startswith("/broken"))


def _route(name: str, port: int, path: str, generation: int) -> UserObject:
    return UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"port": port, "rules": [{"matches": [{"path": {"type": "Prefix", "value": path}}],
                                          "backends": [{"name": "web"}]}]}})


async def _until(check, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("isolation did not finish")
        await asyncio.sleep(0.005)


async def measure(n: int, culprits: int, api_type: str, tmp: Path) -> tuple[float, int]:
    port = free_port()
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address=None, debounce=0.01,
                         options=TranslateOptions(listener_address="127.0.0.1"))
    plane.state.put(UserObject.from_manifest({
        "apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "web", "namespace": NS},
        "spec": {"endpoints": [{"address": "127.0.0.1", "port": 9}]}}))
    for i in range(n):
        plane.state.put(_route(f"r{i}", port, f"/r{i}", 1))
    await plane.start()
    envoy = Envoy(tmp, plane.xds_port, api_type=api_type, node_id=f"n{n}-{culprits}")
    try:
        await plane.controller.wait_built()
        await envoy.start()
        registry = plane.registry
        await _until(lambda: any(p.acked.get(ROUTE) for p in registry.proxies.values()))
        responses = registry.responses[ROUTE]
        bad = {round(i * n / culprits) for i in range(culprits)}
        started = time.perf_counter()
        for i in range(n):
            plane.state.put(_route(f"r{i}", port, f"/broken{i}" if i in bad else f"/new{i}", 2))

        def done() -> bool:
            if registry.culprits < culprits or plane.controller.isolation is None \
                    or plane.controller.isolation.searching():
                return False
            snapshot = plane.cache.get("test")
            resource = None if snapshot is None else snapshot.resources(ROUTE).get(f"http-{port}")
            return resource is not None and all(p.acked.get(ROUTE, {}).get(resource.name) == resource.version
                                                for p in registry.proxies.values())

        await _until(done)
        return time.perf_counter() - started, registry.responses[ROUTE] - responses
    finally:
        await envoy.stop()
        await plane.stop()


async def main() -> None:
    logging.getLogger("xds_operator").setLevel(logging.CRITICAL)  # (each trial NACK is logged)
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--delta", action="store_true")
    args = parser.parse_args()
    _sabotage()
    api_type = "DELTA_GRPC" if args.delta else "GRPC"
    print(f"{api_type}: every Route of one port changed at once, k of them refused by Envoy")
    print(f"{'routes':>7} {'culprits':>8} {'seconds':>8} {'RDS responses':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.routes:
            for k in (1, 2):
                seconds, responses = await measure(n, k, api_type, Path(tmp))
                print(f"{n:>7} {k:>8} {seconds:>8.2f} {responses:>14}")


if __name__ == "__main__":
    asyncio.run(main())
