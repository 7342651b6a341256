"""The benchmarks run at their smallest size and print their figures (CI's smoke test).

No timing is asserted here: speed is what the benchmarks print at full size (README, Measured).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"

# Each benchmark's --smoke run and a line it must print (the figure and, where it has one, the target).
SMOKE = {
    "scale.py": [r"first build \+ translate \+ hash +[\d.]+ ms wall +[\d.]+ ms CPU",
                 r"one Route changed: build \+ translate \+ hash +[\d.]+ ms wall +[\d.]+ ms CPU",
                 r"peak RSS +\d+ MiB",
                 r"GET /status \(200 objects, 2 proxies\), first +[\d.]+ ms wall +[\d.]+ ms CPU",
                 r"full rebuild .* -> published +[\d.]+ ms; loop held up <= +[\d.]+ ms, slowest /healthz +[\d.]+ ms",
                 r"new group's first proxy: .* +[\d.]+ ms; loop held up <= +[\d.]+ ms, slowest /healthz +[\d.]+ ms"],
    "inspect_scale.py": [r"proxy-status: 2 proxies compared with the snapshot +[\d.]+ ms wall",
                         r"GET /debug/state .* slowest /healthz meanwhile +[\d.]+ ms"],
    "file_scan.py": [r"scan after one file edited +[\d.]+ ms",
                     r"one Route edited -> snapshot +[\d.]+ ms"],
    # `serve` and 10 simulated ADS streams (SotW, then delta): 2 changes, 2 reconnect storms.
    "streams.py": [r"10 SotW streams", r"10 delta streams", r"initial sync of 10 streams +[\d.]+ s wall, server CPU +[\d.]+ s",
                   r"one Route changed -> ACKed by all: median \d+ ms",
                   r"reconnect storm -> synced: first [\d.]+ s, later [\d.]+ s",
                   r"/healthz max +[\d.]+ ms +p99 +[\d.]+ ms",
                   r"RSS after every client left \d+ MiB", r"RSS per stream -?\d+ KiB"],
    # A real Envoy, httpbin and `serve`, 3 edits at 10 Routes.
    "edit_latency.py": [r"median \d+ ms +p99 \d+ ms +max \d+ ms"],
    "xds_tls.py": [r"certificate fetch per handshake, unchanged +[\d.]+ us wall +[\d.]+ us CPU",
                   r"first CDS response, mTLS +median +[\d.]+ ms"],
    # 100 plain and 10 TLS Routes: a Secret rotated and a TLS Route edited, both incremental.
    "tls_changes.py": [r"one Secret rotated +[\d.]+ ms wall .* ms CPU  incremental",
                       r"one TLS Route's rule edited +[\d.]+ ms wall .* ms CPU  incremental"],
    # `serve` on 100 files and a real Envoy: the server's peak RSS after start and after an edit.
    "serve_memory.py": [r"Envoy initialized after [\d.]+ s +peak RSS +\d+ MiB +RSS +\d+ MiB +CPU +[\d.]+ s",
                        r"one Route edited, ACKed by Envoy +peak RSS +\d+ MiB"],
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke_run_prints_its_figures(script: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for pattern in SMOKE[script]:
        assert re.search(pattern, proc.stdout), f"{script} --smoke printed no {pattern!r}:\n{proc.stdout}"
