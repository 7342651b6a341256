"""How the build, translation, snapshot and status passes scale with the number of objects.

N Backends with static endpoints and N Routes (one hostname each, all on one port), then:
a full build, a rebuild after one Route changes (what a typical edit costs), and a status pass
with P connected proxies; and the bytes one proxy is sent for a one-Route change and for a
one-Backend endpoint change, through the real ADS state machines (SotW and delta, in-process). Prints wall and CPU time per stage (compare CPU time: the machine is shared) and, at 10,000,
the issue-10 targets beside them.

    uv run python benchmarks/scale.py [--objects 10000] [--proxies 10] [--smoke]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import TypeVar

from envoy.service.discovery.v3 import discovery_pb2

from xds_operator.api.objects import ObjectKey, UserObject
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
    for i in range(proxies):
        stream = StreamInfo(i, f"envoy-{i}", "g", "sotw")
        registry.on_stream_open(stream)
        for type_url in PUSH_ORDER:
            acked = {name: r.version for name, r in snapshot.resources(type_url).items()}
            registry.on_ack(stream, type_url, acked, (), acked)
    groups = timed("status pass: copy proxy tables (on the event loop)",
                   lambda: proxy_groups(registry, cache, copy=True))
    timed(f"status pass: Programmed for {2 * n} objects (in a thread)", lambda: reports(result, groups))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="100 objects, 2 proxies: that it runs (CI)")
    args = parser.parse_args()
    main(100 if args.smoke else args.objects, 2 if args.smoke else args.proxies)
