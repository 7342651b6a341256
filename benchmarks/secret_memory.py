"""What 5,000 unrelated Secrets (Opaque, 10 KiB each, as Helm keeps its releases) cost the operator.

Runs `xds-operator run --standalone` (cluster-wide, as deployed) against a real control plane started
as the tests start it (tests/kubecluster.py), and reads the operator process's resident memory
(VmRSS): at rest with no Secrets; after the 5,000 are created while it watches; and when it starts
with the 5,000 already there (the initial LIST). Only kubernetes.io/tls Secrets and those with a
ca.crt are kept (sources/kubernetes.kept_secret), so the bar is under 20 MiB either way.

    uv run python benchmarks/secret_memory.py [--secrets 5000] [--size 10240]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kubecluster import KubeCluster, find_assets  # noqa: E402
from tests.kubeops import KubeTestAPI, install_crds  # noqa: E402
from tests.realprocs import eventually, http_get  # noqa: E402

from xds_operator.dev.processes import Process, free_port  # noqa: E402

MIB = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def started_operator(tmp: Path, kubeconfig: Path, name: str) -> Process:
    http_port = free_port()
    command = [sys.executable, "-m", "xds_operator.cli", "run", "--standalone", "--log-level", "WARNING",
               "--xds-address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{http_port}"]
    process = await Process(f"xds-operator run ({name})", command, log_path=tmp / f"{name}.log",
                            env={"KUBECONFIG": str(kubeconfig)}).start()
    await eventually(lambda: http_get(f"http://127.0.0.1:{http_port}/readyz")[0] == 200, timeout=60, what="readyz")
    return process


async def settled_rss(process: Process, seconds: float = 5.0) -> int:
    """The largest of a few samples once the process has had time to take in what it was sent."""
    await asyncio.sleep(seconds)
    samples = []
    for _ in range(5):
        samples.append(rss(process.proc.pid))
        await asyncio.sleep(0.2)
    return max(samples)


async def main(count: int, size: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="xds-secret-bench-"))
    (tmp / "kube").mkdir()
    cluster = KubeCluster(find_assets(), tmp / "kube").start()
    try:
        install_crds(cluster)
        async with KubeTestAPI(cluster, "secret-memory") as kube:
            payload = base64.b64encode(os.urandom(size * 3 // 4)).decode()  # `size` bytes of base64 text
            operator = await started_operator(tmp, kube.kubeconfig, "empty")
            at_rest = await settled_rss(operator)
            started = time.monotonic()
            limit = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                async with limit:
                    await kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                       "metadata": {"name": f"sh.helm.release.v1.app{i}.v1"},
                                       "data": {"release": payload}})
            await asyncio.gather(*(create(i) for i in range(count)))
            created_in = time.monotonic() - started
            watched = await settled_rss(operator)
            await operator.stop()
            restarted = await started_operator(tmp, kube.kubeconfig, "restarted")
            listed = await settled_rss(restarted)
            await restarted.stop()
            fresh_baseline = at_rest
    finally:
        cluster.stop()
    print(f"{count} Opaque Secrets of {size} bytes ({count * size / MIB:.0f} MiB in the API; created in "
          f"{created_in:.0f} s), `xds-operator run` resident memory (VmRSS):")
    print(f"  at rest, no Secrets:                 {at_rest / MIB:6.1f} MiB")
    print(f"  after they were created (watch):     {watched / MIB:6.1f} MiB  (+{(watched - at_rest) / MIB:.1f} MiB)")
    print(f"  started with them there (LIST):      {listed / MIB:6.1f} MiB  (+{(listed - fresh_baseline) / MIB:.1f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secrets", type=int, default=5000)
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    asyncio.run(main(args.secrets, args.size))
