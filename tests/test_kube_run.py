"""`xds-operator run` as a user meets it: no credentials, no reachable cluster, and /readyz, which
says ready only once the initial listing of every watched kind is in the state."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from xds_operator.dev.processes import Process, free_port
from xds_operator.kube import operator as operator_module

from .kubeops import backend, running_operator
from .realprocs import eventually, http_get


def run_command(http_port: int) -> list[str]:
    return [sys.executable, "-m", "xds_operator.cli", "run", "--standalone",
            "--xds-address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{http_port}"]


def test_run_without_credentials_is_one_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    result = subprocess.run(run_command(free_port()), capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "no Kubernetes credentials: set KUBECONFIG" in lines[0], lines
    assert "Traceback" not in result.stderr


async def test_run_with_no_reachable_cluster_says_so_once_is_not_ready_and_stops_fast(tmp_path):
    closed = free_port()  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{closed}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    http_port = free_port()
    log = tmp_path / "operator.log"
    process = await Process("xds-operator run", run_command(http_port), log_path=log,
                            env={"KUBECONFIG": str(kubeconfig)}).start()
    try:
        answers: list[tuple[int, str]] = []

        def says_why() -> bool:
            status, _, body = http_get(f"http://127.0.0.1:{http_port}/readyz")
            answers.append((status, body.decode()))
            return f"cannot reach the Kubernetes API at https://127.0.0.1:{closed}" in body.decode()

        await eventually(says_why, what="/readyz saying why")
        assert {status for status, _ in answers} == {503}, answers
        await asyncio.sleep(5)  # several of kopf's retries and of the readiness checks
        assert http_get(f"http://127.0.0.1:{http_port}/readyz")[0] == 503
        text = log.read_text()
        assert text.count("cannot reach the Kubernetes API") == 1, text
        assert "Traceback" not in text and "Request attempt" not in text, text
        started = time.monotonic()
        os.kill(process.proc.pid, signal.SIGTERM)
        await asyncio.wait_for(process.proc.wait(), 10)
        stopped_in = time.monotonic() - started
    finally:
        await process.stop()
    assert stopped_in < 3, f"stopping took {stopped_in:.1f}s"
    assert "Traceback" not in log.read_text()


async def test_readyz_waits_for_the_initial_listing_of_every_kind(kube, monkeypatch):
    """Objects that exist before the operator starts, handed over slowly: /readyz must not say ready
    before all of them are in the state store (it used to once the first build was done)."""
    count = 30
    for i in range(count):
        await kube.create(backend(f"b{i}", endpoints=[{"address": "10.0.0.1", "port": 80}]))
    real_apply = operator_module.apply_object_event

    def slow_apply(*args, **kwargs):
        time.sleep(0.05)  # kopf runs sync handlers in threads: this delays only the handover
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(operator_module, "apply_object_event", slow_apply)
    samples: list[tuple[int, int]] = []
    async with running_operator(kube, monkeypatch, initial_quiet=0.01, initial_max_delay=0.1) as operator:
        url = f"http://127.0.0.1:{operator.plane.http_port}/readyz"
        async with asyncio.timeout(30):
            while True:
                objects = len(operator.plane.state.objects)
                status = (await asyncio.to_thread(http_get, url))[0]
                samples.append((status, objects))
                if status == 200:
                    break
                await asyncio.sleep(0.02)
        assert any(status == 503 for status, _ in samples), samples  # it did wait
        assert len(operator.plane.state.objects) == count
        assert operator.readiness.listed == {"routes", "backends", "services", "endpointslices"}
