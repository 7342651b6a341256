"""How the build, translation, snapshot and status passes scale with the number of objects.

N Backends with static endpoints and N Routes (one hostname each, all on one port), then:
a full build, a rebuild after one Route changes (what a typical edit costs), and a status pass
with P connected proxies. Prints seconds per stage.

    uv run python benchmarks/scale.py [--objects 10000] [--proxies 10]
"""

from __future__ import annotations

import argparse
import time

from xds_operator.ir.builder import Builder
from xds_operator.xds.cache import SnapshotCache
from xds_operator.xds.snapshot import ResourceMemo
from xds_operator.controlplane.controller import make_snapshot
from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.translate.resources import PUSH_ORDER
from xds_operator.sources.state import StateStore
from xds_operator.status.report import proxy_groups, reports
from xds_operator.translate import TranslateOptions
from xds_operator.xds.callbacks import StreamInfo
from xds_operator.xds.proxies import ProxyRegistry


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


def timed(label: str, fn):
    started = time.perf_counter()
    value = fn()
    print(f"  {label:46s} {time.perf_counter() - started:7.3f} s")
    return value


def main(n: int, proxies: int) -> None:
    state = StateStore()
    for obj in objects(n):
        state.put(obj)
    builder = Builder()
    options = TranslateOptions()
    memo = ResourceMemo()
    print(f"{n} Backends + {n} Routes, {proxies} proxies:")
    result = timed("build (validate + IR), first", lambda: builder.build(state))
    snapshot = timed("translate + snapshot (hash every resource), first",
                     lambda: make_snapshot(result, "g", options, memo))
    memo.rotate()
    sizes = {t.rsplit(".", 1)[-1]: sum(r.packed.ByteSize() for r in snapshot.resources(t).values()) for t in PUSH_ORDER}
    print("  serialized bytes by type:", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))

    changed = next(o for o in objects(1, marker="b") if o.key.kind == "Route")
    state.put(UserObject(ObjectKey("Route", "bench", "route-0"), changed.spec))
    result = timed("build after one Route changed", lambda: builder.build(state))
    timed("translate + snapshot after one Route changed", lambda: make_snapshot(result, "g", options, memo))

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
    args = parser.parse_args()
    main(args.objects, args.proxies)
