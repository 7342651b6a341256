"""1,000 ADS streams against the real server: change -> ACKed by all, reconnect storms, RSS.

`xds-operator serve` (its own process: the file source, the grpc.aio ADS server, aiohttp
/healthz) on N Backends + N Routes (one pair per file), and P ADS streams played by client
worker processes (`--workers`, default 1: one asyncio loop of grpc.aio streams each, one channel
and TCP connection per stream, as Envoys have). A client behaves like Envoy: CDS, then EDS for
the clusters' names, then LDS and RDS for the listener's route configuration, every response
ACKed; a reconnecting client names what it runs (SotW version_info, delta
initial_resource_versions), as Envoy does. This process only coordinates, polls /healthz every
10 ms from a thread and reads the server's RSS (/proc); it is idle while the others work.

Printed:
- the initial sync of all streams (the time until each stream has ACKed all four types);
- a one-Route change (one file rewritten), `--changes` times: until the last client has ACKed the
  new route configuration (from the write), and the server's own figure for the same thing
  (xds_operator_convergence_seconds: from the change noticed to the last ACK counted); their
  difference is how late the server counts ACKs;
- `--storms` reconnect storms (every stream drops and reconnects at once): until the server has
  counted every stream's four types (delta: five, with VHDS) as ACKed (xds_operator_xds_acks in /metrics), and what it
  sent (nothing is due: the clients run the current versions);
- /healthz max and p99 in each phase; the server's RSS before and after each storm and after
  every client has left, and RSS per stream.

    uv run python benchmarks/streams.py [--routes 1000] [--streams 1000] [--delta] [--changes 5] [--storms 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fanout import write  # noqa: E402
from tests.realprocs import http_get  # noqa: E402

from xds_operator.dev.processes import Process, free_port, wait_http  # noqa: E402

# -- the clients (worker processes) ---------------------------------------------------------


def worker_main(port: int, first: int, count: int, delta: bool) -> None:
    """A client worker: `count` streams; commands on stdin, one JSON answer per line on stdout."""
    asyncio.run(_Worker(port, first, count, delta).serve())


class _Worker:
    def __init__(self, port: int, first: int, count: int, delta: bool) -> None:
        from benchmarks.ads_clients import Swarm  # (grpc only in the workers)
        self.swarm = Swarm(port, range(first, first + count), delta)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = json.loads(line)["cmd"]
            answer = await getattr(self.swarm, command)()
            print(json.dumps({**answer, "cpu": time.process_time()}), flush=True)
            if command == "leave":
                return


class Workers:
    """The client worker processes, driven by line commands; reaped by PID."""

    def __init__(self, port: int, streams: int, workers: int, delta: bool) -> None:
        self.port, self.streams, self.count, self.delta = port, streams, workers, delta
        self.procs: list[asyncio.subprocess.Process] = []
        self.cpu = 0.0  # CPU seconds of the workers, as of their last answers

    async def start(self) -> None:
        share = -(-self.streams // self.count)
        for w in range(self.count):
            first = w * share
            n = min(share, self.streams - first)
            self.procs.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", str(self.port), str(first), str(n),
                *(["--delta"] if self.delta else []),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))

    async def command(self, cmd: str) -> list[dict]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"client worker {proc.pid} died (exit {await proc.wait()})")
            answers.append(json.loads(line))
        self.cpu = sum(a["cpu"] for a in answers)
        return answers

    async def cpu_since(self, before: float) -> float:
        await self.command("cpu")
        return self.cpu - before

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


# -- measuring the server ---------------------------------------------------------------------


class HealthProbe(threading.Thread):
    """Polls /healthz every 10 ms from a thread; samples are (monotonic time, milliseconds)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            http_get(self.url, timeout=30)
            self.samples.append((started, (time.monotonic() - started) * 1000))
            time.sleep(0.01)

    def between(self, start: float, end: float) -> list[float]:
        return [ms for at, ms in self.samples if start <= at <= end]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def scrape(port: int) -> str:
    return http_get(f"http://127.0.0.1:{port}/metrics", timeout=30)[2].decode()


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of `name` whose labels contain `labels`."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


CONVERGENCE = "xds_operator_convergence_seconds"


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's CPU seconds, those of its main thread: the event loop)."""
    def of(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return of(f"/proc/{pid}/stat"), of(f"/proc/{pid}/task/{pid}/stat")


def cpu_since(pid: int, before: tuple[float, float]) -> tuple[float, float]:
    now = cpu_seconds(pid)
    return now[0] - before[0], now[1] - before[1]


class Report:
    def __init__(self, probe: HealthProbe, server_pid: int) -> None:
        self.probe, self.pid = probe, server_pid

    def phase(self, label: str, started: float, ended: float, cpu: tuple[float, float], clients_cpu: float,
              extra: str = "") -> None:
        """`cpu`: the server's CPU seconds in the phase (all threads, the event loop's)."""
        health = self.probe.between(started, ended)
        print(f"  {label:<34} {ended - started:6.2f} s wall, server CPU {cpu[0]:5.2f} s (loop {cpu[1]:5.2f} s), "
              f"clients CPU {clients_cpu:5.2f} s  "
              f"/healthz max {max(health, default=0):6.1f} ms  p99 {p99(health):6.1f} ms  (n={len(health)}){extra}",
              flush=True)


async def wait_metric(port: int, check, timeout: float = 120.0) -> float:
    """Polls /metrics (every 50 ms: a scrape costs the server ~2 ms at 1,000 streams) until
    check(text); the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(scrape, port)
        if check(text):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError("the server's metrics never got there")


async def main(routes: int, streams: int, workers: int, delta: bool, changes: int, storms: int,
               profile: str | None) -> None:
    config = Path(tempfile.mkdtemp(prefix="xds-streams-")) / "config"
    config.mkdir()
    for i in range(routes):
        write(config, i)
    xds_port, http_port = free_port(), free_port()
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    server = Process("serve", [sys.executable, *profiler, "-m", "xds_operator.cli", "--log-level", "WARNING", "serve",
                               "--config", str(config), "--xds-address", f"127.0.0.1:{xds_port}",
                               "--http-address", f"127.0.0.1:{http_port}"], log_path=config.parent / "serve.log")
    clients = Workers(xds_port, streams, workers, delta)
    probe = HealthProbe(f"http://127.0.0.1:{http_port}/healthz")
    protocol = "delta" if delta else "sotw"
    try:
        await server.start()
        assert server.proc is not None
        pid = server.proc.pid
        await wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=300, process=server)
        report = Report(probe, pid)
        probe.start()
        await clients.start()
        await asyncio.sleep(1.0)
        idle_rss = rss_mib(pid)
        print(f"{routes} Backends + {routes} Routes, {streams} {'delta' if delta else 'SotW'} streams "
              f"from {workers} client process(es); server pid {pid}, RSS {idle_rss:.0f} MiB before clients "
              f"(figures on a shared 2-core machine: compare CPU beside wall)", flush=True)

        cpu, clients_cpu, started = cpu_seconds(pid), clients.cpu, time.monotonic()
        await clients.command("sync")
        report.phase(f"initial sync of {streams} streams", started, time.monotonic(), cpu_since(pid, cpu),
                     clients.cpu - clients_cpu)
        await asyncio.sleep(1.0)
        synced_rss = rss_mib(pid)
        print(f"  RSS {synced_rss:.0f} MiB synced: {(synced_rss - idle_rss) * 1024 / streams:.0f} KiB per stream")

        acked, counted = [], []
        for k in range(changes):
            before = scrape(http_port)
            await clients.command("arm")
            cpu, clients_cpu, started = cpu_seconds(pid), clients.cpu, time.monotonic()
            write(config, 0, marker=f"change-{k}")
            answers = await clients.command("changed")
            last_ack = max(a["last_ack_at"] for a in answers)
            ended, cpu = time.monotonic(), cpu_since(pid, cpu)
            counted_before = metric(before, f"{CONVERGENCE}_count")
            # (the server's books: its last ACKs may still be in flight)
            await wait_metric(http_port, lambda text, counted=counted_before: metric(text, f"{CONVERGENCE}_count") > counted)
            after = scrape(http_port)
            observed = metric(after, f"{CONVERGENCE}_count") - counted_before
            convergence = metric(after, f"{CONVERGENCE}_sum") - metric(before, f"{CONVERGENCE}_sum")
            acked.append(last_ack - started)
            counted.append(convergence / observed if observed else float("nan"))
            report.phase(f"change {k + 1}: ACKed by all (clients)", started, ended, cpu, clients.cpu - clients_cpu,
                         f"   server: ACKed by all {counted[-1] * 1000:.0f} ms after the change")
            await asyncio.sleep(0.5)
        if changes:
            print(f"  one Route changed -> ACKed by all: median {statistics.median(acked) * 1000:.0f} ms (last ACK "
                  f"sent by a client, from the file write); server's convergence median "
                  f"{statistics.median(counted) * 1000:.0f} ms (from the change noticed to the last ACK counted)")

        storm_times = []
        types = 5 if protocol == "delta" else 4  # (delta: VHDS too)
        for s in range(storms):
            rss_before = rss_mib(pid)
            before = scrape(http_port)
            acks_before = metric(before, "xds_operator_xds_acks_total")
            responses_before = metric(before, "xds_operator_xds_responses_total")
            cpu, clients_cpu, started = cpu_seconds(pid), clients.cpu, time.monotonic()
            await clients.command("storm")

            def synced(text: str, acks_before: float = acks_before) -> bool:
                return (metric(text, "xds_operator_connected_proxies", f'protocol="{protocol}"') == streams
                        and metric(text, "xds_operator_xds_acks_total") >= acks_before + types * streams)

            ended = await wait_metric(http_port, synced)
            cpu = cpu_since(pid, cpu)
            storm_times.append(ended - started)
            await asyncio.sleep(1.0)
            after = scrape(http_port)
            sent = metric(after, "xds_operator_xds_responses_total") - responses_before
            report.phase(f"storm {s + 1}: {streams} reconnected, synced", started, ended, cpu,
                         await clients.cpu_since(clients_cpu),
                         f"   responses sent {sent:.0f}; RSS {rss_before:.0f} -> {rss_mib(pid):.0f} MiB")
        if storms:
            print(f"  reconnect storm -> synced: first {storm_times[0]:.2f} s, later "
                  f"{', '.join(f'{t:.2f}' for t in storm_times[1:]) or '-'} s")

        cpu, clients_cpu, started = cpu_seconds(pid), clients.cpu, time.monotonic()
        await clients.command("leave")
        ended = await wait_metric(http_port, lambda text: metric(text, "xds_operator_connected_proxies") == 0)
        report.phase("every client left", started, ended, cpu_since(pid, cpu), clients.cpu - clients_cpu)
        await asyncio.sleep(2.0)
        left_rss = rss_mib(pid)
        print(f"  RSS after every client left {left_rss:.0f} MiB (before clients {idle_rss:.0f} MiB, "
              f"{(left_rss - idle_rss) / idle_rss * 100:+.0f}%)")
        print(f"  RSS per stream {(synced_rss - idle_rss) * 1024 / streams:.0f} KiB")
    finally:
        probe.stop.set()
        await clients.stop()
        await server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "--delta" in sys.argv)
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="client processes")
    parser.add_argument("--delta", action="store_true")
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--storms", type=int, default=3)
    parser.add_argument("--profile-server", metavar="PATH", help="run the server under cProfile, its stats to PATH")
    parser.add_argument("--smoke", action="store_true", help="10 Routes, 10 streams, 2 changes, 2 storms, SotW and delta")
    args = parser.parse_args()
    if args.smoke:
        args.routes, args.streams, args.changes, args.storms = 10, 10, 2, 2
    for delta in (False, True) if args.smoke else (args.delta,):
        asyncio.run(main(args.routes, args.streams, args.workers, delta, args.changes, args.storms,
                         args.profile_server))
