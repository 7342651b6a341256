"""Peak memory of `xds-operator serve` itself: N Backends + N Routes from files, one real Envoy.

Writes N files (one Backend and one Route each, as benchmarks/fanout.py), starts `xds-operator
serve --config <dir>` (its own process) and a real Envoy connected to it, waits until Envoy is
initialized (every cluster, endpoint set, listener and route configuration received), then edits
one Route file and waits until Envoy has ACKed the new route configuration. Prints the server's
peak RSS (VmHWM in /proc/<pid>/status, the high-water mark of its whole life) and RSS (VmRSS)
after each step, and its CPU time, against the issue-10 target (peak RSS <= 250 MiB at 10,000 +
10,000).

    uv run python benchmarks/serve_memory.py [--objects 10000] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout import write  # noqa: E402
from tests.realprocs import Envoy, eventually, http_get  # noqa: E402

from xds_operator.dev.processes import Process, free_port, wait_http  # noqa: E402

TARGET_MIB = 250


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {name: int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]
            for name in ("VmHWM", "VmRSS")}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rds_updates(envoy: Envoy) -> int:
    """Route configurations Envoy accepted (only these stats: at 10,000 clusters all of them are
    a million lines)."""
    _, _, body = http_get(f"{envoy.admin_url}/stats?filter=rds\\..*\\.update_success$", timeout=30)
    return sum(int(m) for m in re.findall(rb": (\d+)$", body, re.M))


async def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xds-serve-memory-"))
    config = tmp / "config"
    config.mkdir()
    for i in range(n):
        write(config, i)
    xds_port, http_port = free_port(), free_port()
    serve = Process("xds-operator serve", [
        sys.executable, "-m", "xds_operator.cli", "--log-level", "WARNING", "serve", "--config", str(config),
        "--xds-address", f"127.0.0.1:{xds_port}", "--http-address", f"127.0.0.1:{http_port}",
        "--listener-address", "127.0.0.1"], log_path=tmp / "serve.log")
    envoy = Envoy(tmp, xds_port, node_cluster="bench")
    try:
        started = time.perf_counter()
        await serve.start()
        assert serve.proc is not None
        pid = serve.proc.pid
        await wait_http(f"http://127.0.0.1:{http_port}/readyz", process=serve, timeout=300)
        ready = time.perf_counter() - started
        await envoy.process.start()
        # Initialized: every cluster, endpoint set, listener and route configuration received.
        await wait_http(f"{envoy.admin_url}/ready", process=envoy.process, timeout=600)
        synced = time.perf_counter() - started
        rows = [(f"ready after {ready:.1f} s, Envoy initialized after {synced:.1f} s", memory_mib(pid),
                 cpu_seconds(pid))]

        before = rds_updates(envoy)
        write(config, 0, marker="b")
        await eventually(lambda: rds_updates(envoy) > before, timeout=60, what="the edited route at Envoy")
        rows.append(("one Route edited, ACKed by Envoy", memory_mib(pid), cpu_seconds(pid)))
        _, _, body = http_get(f"http://127.0.0.1:{http_port}/metrics")
        builds = re.search(r"^xds_operator_builds_total (\S+)", body.decode(), re.M)

        print(f"xds-operator serve, {n} Backends + {n} Routes in {n} files, one real Envoy "
              f"({builds.group(1) if builds else '?'} builds):")
        for label, memory, cpu in rows:
            line = (f"  {label:58s} peak RSS {memory['VmHWM']:6.0f} MiB   RSS {memory['VmRSS']:6.0f} MiB   "
                    f"CPU {cpu:5.1f} s")
            if n >= 10_000:
                line += f"   target peak <= {TARGET_MIB} MiB: {'met' if memory['VmHWM'] <= TARGET_MIB else 'NOT met'}"
            print(line)
    finally:
        await envoy.stop()
        await serve.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="100 + 100 objects: that it runs (CI)")
    args = parser.parse_args()
    asyncio.run(main(100 if args.smoke else args.objects))
