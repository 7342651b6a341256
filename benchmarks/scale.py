"""How the build, translation, snapshot and status passes scale with the number of objects.

N Backends with static endpoints and N Routes (one hostname each, all on one port), then:
a full build, a rebuild after one Route changes (what a typical edit costs), and a status pass
with P connected proxies; and the bytes one proxy is sent for a one-Route change and for a
one-Backend endpoint change, through the real ADS state machines (SotW and delta, in-process). Prints wall and CPU time per stage (compare CPU time: the machine is shared) and, at 10,000,
the issue-10 targets beside them.

Then the same objects served by a control plane in this process (ADS and HTTP on loopback), with
P proxies of one group on its books (their ACKs given to the proxy registry as streams give
them): GET /status, and how long the event loop is held up (a 5 ms ticker on it, and /healthz
polled from another process) during the first build, a full rebuild and while a new group's first
proxy connects (a gRPC client playing Envoy, in another process), whose snapshot is made then.

    uv run python benchmarks/scale.py [--objects 10000] [--proxies 10] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import fanout  # (its import puts the repository on sys.path too)
from envoy.service.discovery.v3 import discovery_pb2

from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.controlplane.app import ControlPlane
from xds_operator.controlplane.controller import build_snapshots, make_snapshot
from xds_operator.ir.builder import Builder, BuildResult
from xds_operator.sources.state import StateStore
from xds_operator.status.report import proxy_groups, reports
from xds_operator.translate import TranslateOptions
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, VIRTUAL_HOST
from xds_operator.xds.cache import SnapshotCache
from xds_operator.xds.callbacks import NoCallbacks, StreamInfo
from xds_operator.xds.delta import DeltaStream
from xds_operator.xds.proxies import ProxyRegistry
from xds_operator.xds.snapshot import ResourceMemo, Snapshot
from xds_operator.xds.sotw import SotwStream

T = TypeVar("T")


def objects(n: int, marker: str = "a") -> list[UserObject]:
    out = []
    for i in range(n):
        out.append(UserObject(ObjectKey("Backend", "bench", f"svc-{i}"),
                               {"endpoints": [{"address": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "port": 8080}]}))
        out.append(UserObject(ObjectKey("Route", "bench", f"route-{i}"), {
            "hostnames": [f"svc-{i}.example.com"],
            "rules": [{"matches": [{"path": {"type": "Prefix", "value": f"/api/{i}"}}],
                       "backends": [{"name": f"svc-{i}"}],
                       "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]}))
    return out


def timed(label: str, fn: Callable[[], T], target: float | None = None) -> T:
    """Runs fn, prints its wall and CPU time (CPU: the machine is shared) and the target, if any."""
    started, cpu_started = time.perf_counter(), time.process_time()
    value = fn()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    line = f"  {label:58s} {wall * 1000:9.1f} ms wall {cpu * 1000:9.1f} ms CPU"
    if target is not None:
        line += f"   target <= {target * 1000:.0f} ms: {'met' if cpu <= target else 'NOT met'} (CPU)"
    print(line)
    return value


class ScriptedEnvoy:
    """One proxy's stream (the server's state machine, no gRPC), driven as Envoy drives it: the
    initial subscriptions, every response ACKed. Counts the bytes of the responses it is sent."""

    def __init__(self, snapshot: Snapshot, delta: bool) -> None:
        self.current = snapshot
        self.delta = delta
        kind = DeltaStream if delta else SotwStream
        self.stream = kind(StreamInfo(1, "envoy-1", "g", kind.protocol), NoCallbacks(), lambda: self.current)
        self.names: dict[str, list[str]] = {}
        self.received = 0

    def _request(self, type_url: str, nonce: str = "", version: str = "", subscribe: bool = False):
        if self.delta:
            names = self.names[type_url] if subscribe else []
            return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names,
                                                       response_nonce=nonce)
        return discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=self.names[type_url],
                                              version_info=version, response_nonce=nonce)

    def _settle(self, responses: list) -> None:
        while responses:
            response = responses.pop(0)
            self.received += response.ByteSize()
            version = "" if self.delta else response.version_info
            responses += self.stream.on_request(self._request(response.type_url, response.nonce, version))

    def sync(self) -> None:
        snapshot = self.current.for_protocol(self.stream.protocol)
        self.names = {CLUSTER: [], ENDPOINT: sorted(snapshot.resources(ENDPOINT)), LISTENER: [],
                      ROUTE: sorted(snapshot.resources(ROUTE)), VIRTUAL_HOST: []}
        types = (CLUSTER, ENDPOINT, LISTENER, ROUTE) + ((VIRTUAL_HOST,) if self.delta else ())
        for type_url in types:
            self._settle(self.stream.on_request(self._request(type_url, subscribe=True)))

    def change(self, snapshot: Snapshot) -> int:
        """Bytes sent to this proxy for the change to `snapshot`."""
        before, self.current = self.received, snapshot
        self._settle(self.stream.on_change())
        return self.received - before


def push_sizes(snapshots: list[Snapshot], what: list[str]) -> None:
    """Bytes per proxy for each change from one snapshot to the next, SotW and delta."""
    for delta in (False, True):
        envoy = ScriptedEnvoy(snapshots[0], delta)
        envoy.sync()
        sizes = [envoy.change(s) for s in snapshots[1:]]
        label = "delta (VHDS)" if delta else "SotW"
        print(f"  bytes per proxy, {label:12s} initial sync {envoy.received - sum(sizes):>12,}; " +
              "; ".join(f"{w} {b:,}" for w, b in zip(what, sizes, strict=True)) +
              ("   target <= 4 KiB for a one-Route change: " + ("met" if sizes[0] <= 4096 else "NOT met")
               if delta else ""))


def main(n: int, proxies: int) -> None:
    state = StateStore()
    for obj in objects(n):
        state.put(obj)
    builder = Builder()
    options = TranslateOptions()
    memo = ResourceMemo()
    print(f"{n} Backends + {n} Routes, {proxies} proxies:")
    def build() -> tuple[BuildResult, Snapshot]:  # as the controller does it
        built, snapshots = build_snapshots(builder, memo, state, ["g"], options)
        return built, snapshots["g"]

    result, snapshot = timed("first build + translate + hash", build, target=1.0 if n >= 10_000 else None)
    # (VirtualHost: the VHDS resources delta proxies get; SotW proxies get them inside RouteConfiguration)
    sizes = {t.rsplit(".", 1)[-1]: sum(r.packed.ByteSize() for r in snapshot.for_protocol("delta" if t == VIRTUAL_HOST else "sotw")
                                       .resources(t).values()) for t in PUSH_ORDER}
    print("  serialized bytes by type:", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))

    changed = next(o for o in objects(1, marker="b") if o.key.kind == "Route")
    state.put(UserObject(ObjectKey("Route", "bench", "route-0"), changed.spec))
    result, changed_snapshot = timed("one Route changed: build + translate + hash", build,
                                     target=0.020 if n >= 10_000 else None)
    assert changed_snapshot.version != snapshot.version
    state.put(UserObject(ObjectKey("Backend", "bench", "svc-1"), {"endpoints": [{"address": "10.9.9.9", "port": 8080}]}))
    result, backend_snapshot = timed("one Backend's endpoints changed: build + translate + hash", build)
    assert backend_snapshot.version != changed_snapshot.version
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  {'peak RSS':58s} {peak:9.0f} MiB" + ("   target <= 250 MiB: " + ("met" if peak <= 250 else "NOT met")
                                                 if n >= 10_000 else ""))
    # (after the RSS figure: the simulated proxies hold what they were sent)
    push_sizes([snapshot, changed_snapshot, backend_snapshot], ["one Route changed", "one Backend's endpoints"])

    cache = SnapshotCache()
    cache.publish(lambda group: make_snapshot(result, group, options), {"g": snapshot})
    cache.get("g")  # as in the server: a connected group's snapshot is already made
    registry = ProxyRegistry()
    before = _rss_mib()
    ack_everything(registry, proxies, "g", snapshot)
    print(f"  {f'ACK tables of {proxies} proxies, every resource ACKed (RSS)':58s} {_rss_mib() - before:+9.0f} MiB")
    groups = timed("status pass: take the proxies' tables (on the event loop)",
                   lambda: proxy_groups(registry, cache, copy=True))
    timed(f"status pass: Programmed for {2 * n} objects (in a thread)", lambda: reports(result, groups))


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def ack_everything(registry: ProxyRegistry, proxies: int, group: str, snapshot: Snapshot) -> None:
    """P proxies of `group` (connected now if they are not) that run `snapshot`, as their streams would report it."""
    for i in range(proxies):
        stream = StreamInfo(10_000_000 + i, f"envoy-{i}", group, "sotw")
        if stream.stream_id not in registry.proxies:
            registry.on_stream_open(stream)
        for type_url in PUSH_ORDER:
            acked = {name: r.version for name, r in snapshot.resources(type_url).items()}
            registry.on_ack(stream, type_url, acked, (), acked)


class LoopLag:
    """A ticker on the event loop: the most a 5 ms sleep overran is how long the loop was held up."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - started - 0.005)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def stop(self) -> None:
        self._task.cancel()


# Polls /healthz every 10 ms until its stdin closes, then prints the slowest answer (ms). A process
# of its own: a thread here would wait for the GIL before it starts its clock, and miss the stalls.
_POLLER = """
import sys, threading, time, urllib.request
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
slowest = 0.0
while True:  # (one answer at least)
    started = time.perf_counter()
    urllib.request.urlopen(sys.argv[1], timeout=60).read()
    slowest = max(slowest, time.perf_counter() - started)
    if done.is_set():
        break
    time.sleep(0.01)
print(slowest * 1000)
"""


class HealthProbe:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str) -> HealthProbe:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", _POLLER, url, stdin=asyncio.subprocess.PIPE,
                                                       stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(0.2)  # (its interpreter starting)
        return cls(process)

    async def slowest(self) -> float:
        out, _ = await self.process.communicate(b"")
        return float(out)


async def stall_line(label: str, lag: LoopLag, probe: HealthProbe, seconds: float) -> None:
    healthz = await probe.slowest()
    worst = lag.take() * 1000
    print(f"  {label:58s} {seconds * 1000:9.1f} ms; loop held up <= {worst:6.1f} ms, slowest /healthz {healthz:6.1f} ms"
          f"   target <= 50 ms: {'met' if max(worst, healthz) <= 50 else 'NOT met'}")


# A proxy of a new group, in a process of its own (its work is not the server loop's): says
# "ready" once started, connects when its stdin gets a line, says "got" at its first CDS response.
_NEWCOMER = f"""
import asyncio, sys
sys.path.insert(0, {str(fanout.ROOT)!r})
from tests.xds_client import AdsClient
async def main():
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    client = AdsClient(int(sys.argv[1]), node_id="newcomer", cluster="new-group")
    client.send({CLUSTER!r})
    await client.expect({CLUSTER!r}, timeout=120)
    print("got", flush=True)
    await client.close()
asyncio.run(main())
"""


async def newcomer_connects(port: int, lag: LoopLag) -> float:
    """Seconds from a new group's proxy connecting to its first response (the loop's lag from then on)."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", _NEWCOMER, str(port),
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    lag.take()
    started = time.perf_counter()
    process.stdin.write(b"go\n")
    assert await process.stdout.readline() == b"got\n"
    took = time.perf_counter() - started
    await process.wait()
    return took


async def served(n: int, proxies: int) -> None:
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0")
    for obj in objects(n):
        plane.state.put(obj)
    plane.cache.watch("g", lambda: None)  # the group of the proxies below, connected from the start
    lag = LoopLag()
    print(f"served, {2 * n} objects, {proxies} proxies of one group:")
    try:
        started = time.perf_counter()
        await plane.start()
        healthz = f"http://127.0.0.1:{plane.http_port}/healthz"
        probe = await HealthProbe.start(healthz)  # (the build goes on meanwhile)
        await plane.controller.wait_built()
        await stall_line("start and first build", lag, probe, time.perf_counter() - started)

        snapshot = plane.cache.get("g")  # (made by the first build)
        assert snapshot is not None
        ack_everything(plane.registry, proxies, "g", snapshot)
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{plane.http_port}/status"

            async def get_status() -> tuple[float, float]:
                started, cpu_started = time.perf_counter(), time.process_time()
                async with session.get(url) as response:
                    text = await response.read()
                took = time.perf_counter() - started, time.process_time() - cpu_started
                body = json.loads(text)
                assert len(body) == 2 * n
                assert all(c["status"] == "True" for s in body.values() for c in s["conditions"]
                           if c["type"] == "Programmed")
                return took

            first = await get_status()
            again = [await get_status() for _ in range(4)]
            changed_route = next(o for o in objects(1, marker="edited") if o.key.kind == "Route")
            builds = plane.controller.builds
            plane.state.put(changed_route)
            while plane.controller.builds == builds:
                await asyncio.sleep(0.005)
            edited = plane.cache.get("g")
            assert edited is not None and edited is not snapshot
            ack_everything(plane.registry, proxies, "g", edited)
            after_edit = await get_status()
            for label, (wall, cpu) in ((f"GET /status ({2 * n} objects, {proxies} proxies), first", first),
                                       ("GET /status, again (nothing changed), median of 4",
                                        (statistics.median(t[0] for t in again), statistics.median(t[1] for t in again))),
                                       ("GET /status after one Route changed, built and ACKed by all", after_edit)):
                print(f"  {label:58s} {wall * 1000:9.1f} ms wall {cpu * 1000:9.1f} ms CPU"
                      f"   target <= 100 ms: {'met' if cpu <= 0.1 else 'NOT met'} (CPU)")

        builds = plane.controller.builds
        changed = await asyncio.to_thread(objects, n, "full")  # every Route changes
        probe = await HealthProbe.start(healthz)
        lag.take()
        started = time.perf_counter()
        for i in range(0, len(changed), 200):  # as a source hands them over, a few at a time
            for obj in changed[i:i + 200]:
                plane.state.put(obj)
            await asyncio.sleep(0)
        while plane.controller.builds == builds:
            await asyncio.sleep(0.005)
        await stall_line("full rebuild (every Route changed) -> published", lag, probe, time.perf_counter() - started)

        probe = await HealthProbe.start(healthz)
        took = await newcomer_connects(plane.xds_port or 0, lag)
        await stall_line("new group's first proxy: connect -> first CDS response", lag, probe, took)
    finally:
        lag.stop()
        await plane.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="100 objects, 2 proxies: that it runs (CI)")
    args = parser.parse_args()
    n, p = (100, 2) if args.smoke else (args.objects, args.proxies)
    main(n, p)
    asyncio.run(served(n, p))
