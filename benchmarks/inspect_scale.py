"""What the inspection commands cost on a large config: the server-side work behind
config-dump, proxy-status and explain, and an offline diff, with N Backends and N Routes
(the objects of benchmarks/scale.py: one hostname each, all on one port). Prints seconds.

The server computes these in a thread (status/debug.py); the last lines show what the event loop
that serves the ADS streams sees meanwhile: the slowest /healthz answer during each request.

    uv run python benchmarks/inspect_scale.py [--objects 10000] [--proxies 50] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import time

import aiohttp
from scale import ack_everything, objects, timed

from xds_operator.api.objects import ObjectKey
from xds_operator.controlplane.app import ControlPlane
from xds_operator.controlplane.controller import make_snapshot
from xds_operator.inspect.diff import _by_name, diff_group
from xds_operator.ir.builder import Builder
from xds_operator.sources.state import StateStore
from xds_operator.status.inspection import explain, proxy_status, snapshot_dump
from xds_operator.translate import TranslateOptions
from xds_operator.xds.proxies import ProxyRegistry


def main(n: int, proxies: int) -> None:
    state = StateStore()
    for obj in objects(n):
        state.put(obj)
    result = Builder().build(state)
    snapshot = make_snapshot(result, "g", TranslateOptions())
    print(f"{n} Backends + {n} Routes, {proxies} synced proxies:")
    dump = timed("config-dump: every resource as a dict", lambda: snapshot_dump("g", snapshot))
    registry = ProxyRegistry()
    ack_everything(registry, proxies, "g", snapshot)
    states = timed(f"proxy-status: {proxies} proxies compared with the snapshot",
                   lambda: [proxy_status(p, snapshot) for p in registry.proxies.values()])
    assert all(t["state"] == "SYNCED" for s in states for t in s["types"].values())
    key = ObjectKey("Route", "bench", f"route-{n // 2}")
    timed("explain: one Route", lambda: explain(key, result, {"g": snapshot}, {"g": list(registry.proxies.values())}))

    changed = StateStore()
    for obj in objects(n):
        changed.put(obj)
    edited = changed.objects[key]
    spec = {**edited.spec, "rules": [{**edited.spec["rules"][0], "timeout": "3s"}]}
    changed.put(dataclasses.replace(edited, spec=spec))

    def offline_diff() -> int:
        after = make_snapshot(Builder().build(changed), "g", TranslateOptions())
        _, counts = diff_group(_by_name(dump), _by_name(snapshot_dump("g", after)))
        return sum(counts.values())

    assert timed("diff: build + translate + dump + compare one side", offline_diff) == 1


def run(n: int, proxies: int) -> None:
    main(n, proxies)
    gc.collect()  # the server below gets a heap of its own size: full collections scale with it
    asyncio.run(loop_latency(n))


async def loop_latency(n: int) -> None:
    """The event loop during the requests of the commands: the slowest /healthz answer."""
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0")
    for obj in objects(n):
        plane.state.put(obj)
    plane.cache.watch("watched", lambda: None)  # as a connected proxy of group "watched" would
    await plane.start()
    await plane.controller.wait_built()
    base = f"http://127.0.0.1:{plane.http_port}"
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/debug/config_dump?group=watched", "/debug/config_dump?group=unwatched",
                         "/debug/explain?kind=Route&namespace=bench&name=route-1",
                         "/debug/state"):
                request = asyncio.create_task(_read(session, base + path))
                slowest = 0.0
                started = time.perf_counter()
                while not request.done():
                    t = time.perf_counter()
                    await _read(session, base + "/healthz")
                    slowest = max(slowest, time.perf_counter() - t)
                    await asyncio.sleep(0.01)
                size = len(await request)
                print(f"  GET {path[:40]:40s} {time.perf_counter() - started:6.2f} s, {size / 1e6:5.1f} MB;"
                      f" slowest /healthz meanwhile {slowest * 1000:6.1f} ms")
    finally:
        await plane.stop()


async def _read(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        return await response.read()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="100 objects, 2 proxies: that it runs (CI)")
    args = parser.parse_args()
    run(*((100, 2) if args.smoke else (args.objects, args.proxies)))
