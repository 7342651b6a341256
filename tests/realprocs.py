"""Real processes for end-to-end tests: httpbin, Envoy, the `xds-operator serve` CLI.

Everything binds to 127.0.0.1 on free ports, and everything started is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from xds_operator.bootstrap import BootstrapParams, XdsClientTls, render_bootstrap
from xds_operator.dev.processes import Process, envoy_command, free_port, httpbin_command, wait_http


def uv_binary() -> str:
    """The uv running these tests (`uv run` sets $UV), or the one on PATH: for tests of `uv run ...` itself."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "this test runs `uv run xds-operator ...`: run the tests with `uv run pytest`"
    return found


def http_get(url: str, *, timeout: float = 3.0, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body); HTTP errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


async def eventually(check, *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Polls `check()` (sync, in a thread) until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(check)
            if last:
                return last
        except OSError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


@dataclass(frozen=True)
class Httpbin:
    """Where a running httpbin listens."""

    host: str
    port: int


@contextlib.asynccontextmanager
async def running_httpbin(tmp: Path, host: str = "127.0.0.1") -> AsyncIterator[Httpbin]:
    """httpbin under gunicorn (a dev.processes.Process: its group reaped however the test ends)."""
    port = free_port()
    process = Process("httpbin", httpbin_command(port, host), log_path=tmp / "httpbin.log")
    await process.start()
    try:
        await wait_http(f"http://{host}:{port}/get", process=process)
        yield Httpbin(host, port)
    finally:
        await process.stop()


class Envoy:
    """A real Envoy whose bootstrap points at an xDS server on 127.0.0.1:`xds_port`."""

    def __init__(self, tmp: Path, xds_port: int, *, api_type: str = "GRPC", node_cluster: str = "test",
                 node_id: str = "envoy-1", xds_tls: XdsClientTls | None = None) -> None:
        self.admin_port = free_port()
        self.bootstrap = tmp / f"envoy-{node_id}.yaml"
        self.bootstrap.write_text(render_bootstrap(BootstrapParams(
            node_id=node_id, node_cluster=node_cluster, xds_port=xds_port, admin_port=self.admin_port,
            api_type=api_type, xds_tls=xds_tls)))
        self.process = Process(f"envoy {node_id}", envoy_command(self.bootstrap, log_level="info"),
                               log_path=tmp / f"envoy-{node_id}.log")

    async def start(self, *, wait_ready: bool = True) -> Envoy:
        """Starts Envoy and waits until it is ready (its first config is in), or with `wait_ready`
        False only until its admin interface answers (for an Envoy that is to get no config)."""
        await self.process.start()
        await wait_http(f"{self.admin_url}/{'ready' if wait_ready else 'server_info'}", process=self.process,
                        timeout=30)
        return self

    async def stop(self) -> None:
        await self.process.stop()

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self) -> dict[str, int]:
        _, _, body = http_get(f"{self.admin_url}/stats?format=json")
        return {s["name"]: s.get("value", 0) for s in json.loads(body)["stats"] if "value" in s}

    def update_counters(self) -> dict[str, int]:
        """Envoy's counts of accepted and rejected xDS updates, by subscription."""
        return {k: v for k, v in self.stats().items() if k.endswith((".update_success", ".update_rejected"))}


class ServeProcess:
    """`xds-operator serve` as users run it, on fixed ports chosen once so it can be restarted."""

    def __init__(self, tmp: Path, config: Path, *, args: Sequence[str] = ()) -> None:
        self.xds_port = free_port()
        self.http_port = free_port()
        self.config = config
        self.args = list(args)  # more options of `serve`
        self.log_path = tmp / "serve.log"
        self.process: Process | None = None

    async def start(self) -> ServeProcess:
        command = [sys.executable, "-m", "xds_operator.cli", "serve", "--config", str(self.config),
                   "--xds-address", f"127.0.0.1:{self.xds_port}", "--http-address", f"127.0.0.1:{self.http_port}",
                   "--listener-address", "127.0.0.1", *self.args]
        self.process = await Process("xds-operator serve", command, log_path=self.log_path).start()
        await wait_http(f"http://127.0.0.1:{self.http_port}/readyz", process=self.process)
        return self

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()

    def get_json(self, path: str):
        _, _, body = http_get(f"http://127.0.0.1:{self.http_port}{path}")
        return json.loads(body)
