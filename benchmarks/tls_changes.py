"""The build after a TLS change at scale: one kubernetes.io/tls Secret rotated, and one TLS Route's
rule edited, beside many plain Routes and TLS Routes (each with its own Secret). Times the build
and the group config (Builder.build + config_for), which take the incremental path for both.

    uv run python benchmarks/tls_changes.py [--plain 10000] [--tls 100] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tlscerts import make_ca, make_leaf, tls_secret  # noqa: E402

from xds_operator.api.objects import ObjectKey, UserObject  # noqa: E402
from xds_operator.ir.builder import Builder  # noqa: E402
from xds_operator.sources.kubernetes import trimmed_secret  # noqa: E402
from xds_operator.sources.state import StateStore  # noqa: E402

CHANGES = 10


def tls_route(i: int, marker: str = "a") -> UserObject:
    return UserObject(ObjectKey("Route", "ns", f"tls{i}"), {
        "port": 8443, "hostnames": [f"t{i}.example.com"], "tls": {"certificateRef": {"name": f"cert{i}"}},
        "rules": [{"backends": [{"name": "web"}], "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]})


def timed(builder: Builder, state: StateStore, change) -> tuple[list[float], list[float], bool]:
    wall, cpu, incremental = [], [], True
    for n in range(CHANGES):
        change(n)
        started, started_cpu = time.perf_counter(), time.process_time()
        result = builder.build(state)
        result.config_for("default")
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        incremental &= result.changed_routes is not None
    return wall, cpu, incremental


def main(plain: int, tls: int) -> None:
    ca = make_ca()
    state = StateStore()
    state.put(UserObject(ObjectKey("Backend", "ns", "web"), {"endpoints": [{"address": "10.0.0.1", "port": 80}]}))
    for i in range(plain):
        state.put(UserObject(ObjectKey("Route", "ns", f"r{i}"), {
            "hostnames": [f"h{i}.example.com"],
            "rules": [{"matches": [{"path": {"type": "Prefix", "value": f"/p{i}"}}], "backends": [{"name": "web"}]}]}))
    for i in range(tls):
        state.put_secret("ns", f"cert{i}", trimmed_secret(tls_secret(f"cert{i}", make_leaf(ca, f"t{i}.example.com"),
                                                                     namespace="ns")))
        state.put(tls_route(i))
    builder = Builder()
    builder.build(state).config_for("default")
    rotated = [trimmed_secret(tls_secret("cert0", make_leaf(ca, "t0.example.com"), namespace="ns"))
               for _ in range(CHANGES)]
    print(f"{plain:,} plain Routes, {tls:,} TLS Routes; median (max) of {CHANGES} changes, "
          "Builder.build + config_for (machine shared: CPU time beside wall time):")
    for what, change in (("one Secret rotated", lambda n: state.put_secret("ns", "cert0", rotated[n])),
                         ("one TLS Route's rule edited", lambda n: state.put(tls_route(0, f"m{n}")))):
        wall, cpu, incremental = timed(builder, state, change)
        print(f"  {what:28s} {statistics.median(wall):7.1f} ms wall ({max(wall):.1f})  "
              f"{statistics.median(cpu):7.1f} ms CPU  {'incremental' if incremental else 'full build'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain", type=int, default=10_000)
    parser.add_argument("--tls", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="100 plain and 10 TLS Routes")
    args = parser.parse_args()
    main(100, 10) if args.smoke else main(args.plain, args.tls)
