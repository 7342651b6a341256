"""`xds-operator demo` as users run it: httpbin, the control plane and a real Envoy, then Ctrl-C.

The demo starts Envoy and httpbin (gunicorn) in sessions of their own, so "its children are
gone" is checked on the sessions of the processes it started (and on its own), found while it
runs. Every process of a test run carries a marker in its environment, which the cleanup uses
to kill whatever is left, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from xds_operator.dev.processes import free_port

from .realprocs import eventually, http_get

MARKER_VAR = "XDS_OPERATOR_DEMO_TEST"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 15


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def live_in_sessions(sessions: set[int]) -> list[tuple[int, str]]:
    """Live (not zombie) processes in any of `sessions`."""
    found = []
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[2] in sessions and st[0] != "Z":
            found.append((pid, _cmdline(pid)))
    return found


def marked_processes(marker: str) -> list[int]:
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for pid in _pids():
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


class Demo:
    def __init__(self, tmp: Path, *, delta: bool = False) -> None:
        self.ports = {name: free_port() for name in ("listener", "httpbin", "xds", "http", "admin")}
        self.marker = uuid.uuid4().hex
        self.stdout_path, self.stderr_path = tmp / "demo.out", tmp / "demo.err"
        command = [sys.executable, "-m", "xds_operator.cli", "demo"]
        for name, port in self.ports.items():
            command += [f"--{name}-port", str(port)]
        if delta:
            command.append("--delta")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True,
                                         env={**os.environ, MARKER_VAR: self.marker, "PYTHONUNBUFFERED": "1"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['listener']}"

    def output(self) -> str:
        return self.stdout_path.read_text()

    def logs(self) -> str:
        return f"--- stdout\n{self.output()}\n--- stderr\n{self.stderr_path.read_text()[-4000:]}"

    async def wait_ready(self) -> tuple[int, dict, bytes]:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited with {self.proc.returncode}\n{self.logs()}")
            answer = http_get(f"{self.url}/headers")
            return answer if answer[0] == 200 and "Edit " in self.output() else None

        return await eventually(check, timeout=STARTUP_TIMEOUT, interval=0.1, what="the demo serving")

    @property
    def workdir(self) -> Path | None:
        """Where the demo keeps its config and logs (it says so once it serves)."""
        match = re.search(r"files in (\S+)\)", self.output())
        return Path(match.group(1)) if match else None

    def children(self) -> list[tuple[int, str]]:
        return [(pid, _cmdline(pid)) for pid in _pids() if (st := _stat(pid)) and st[1] == self.proc.pid]

    def cleanup(self) -> None:
        """Kills everything this demo started, whatever state it is in."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in marked_processes(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if (workdir := self.workdir) is not None and workdir.name.startswith("xds-operator-demo-"):
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def demo_factory(tmp_path):
    demos: list[Demo] = []

    def start(**kwargs) -> Demo:
        demos.append(Demo(tmp_path, **kwargs))
        return demos[-1]

    yield start
    for demo in demos:
        demo.cleanup()
    for demo in demos:
        assert marked_processes(demo.marker) == [], "processes left behind (killed)"


ROUTE_HEADER = """\
    timeout: 10s
    responseHeaders:
      set: [{name: x-demo, value: edited}]
"""


async def test_demo_serves_follows_edits_and_stops_cleanly(demo_factory) -> None:
    demo = demo_factory()
    status, headers, body = await demo.wait_ready()
    assert status == 200
    assert headers["server"] == "envoy"
    assert "x-envoy-upstream-service-time" in headers
    assert "headers" in json.loads(body)  # httpbin's answer

    # What the demo prints: where its files are, how to reach it, what to edit.
    out = demo.output()
    match = re.search(r"Edit (\S+) and the change is live", out)
    assert match, out
    config = Path(match.group(1))
    assert config.is_file() and config.parent == demo.workdir
    assert f"curl -v http://127.0.0.1:{demo.ports['listener']}/headers" in out
    assert f"http://127.0.0.1:{demo.ports['http']}/proxies" in out
    assert f"http://127.0.0.1:{demo.ports['http']}/status" in out

    # The processes it started: one Envoy and one httpbin (gunicorn master with its workers).
    children = demo.children()
    envoys = [pid for pid, cmd in children if "envoy" in cmd and "gunicorn" not in cmd]
    httpbins = [pid for pid, cmd in children if "gunicorn" in cmd and "httpbin:app" in cmd]
    assert len(envoys) == 1 and len(httpbins) == 1, children
    sessions = {demo.proc.pid} | {_stat(pid)[2] for pid, _ in children}
    assert len(live_in_sessions(sessions)) >= 4  # the demo, Envoy, gunicorn and at least one worker
    assert {pid for pid, _ in live_in_sessions(sessions)} <= set(marked_processes(demo.marker))  # cleanup sees all

    # Edit the config: Envoy follows.
    text = config.read_text()
    assert text.count("    timeout: 10s\n") == 1
    config.write_text(text.replace("    timeout: 10s\n", ROUTE_HEADER))

    def edited():
        status, headers, _ = http_get(f"{demo.url}/headers")
        return status == 200 and headers.get("x-demo") == "edited"

    await eventually(edited, timeout=15, what="the edited response header through Envoy")
    _, proxies_body = http_get(f"http://127.0.0.1:{demo.ports['http']}/proxies")[0::2]
    [proxy] = json.loads(proxies_body)
    assert proxy["node"] == "demo-envoy" and proxy["protocol"] == "sotw" and proxy["nacks"] == {}

    # Ctrl-C (SIGTERM here): exit 0 and nothing left behind.
    started = time.monotonic()
    demo.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(demo.proc.wait, STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"demo still running {STOP_TIMEOUT}s after SIGTERM\n{demo.logs()}")
    assert code == 0, demo.logs()
    assert time.monotonic() - started < STOP_TIMEOUT
    assert "Traceback" not in demo.stderr_path.read_text(), demo.logs()
    assert live_in_sessions(sessions) == []
    assert marked_processes(demo.marker) == []
    for name, port in demo.ports.items():
        assert refuses(port), f"{name} port {port} still answers after the demo stopped"
    assert demo.workdir is not None and (demo.workdir / "envoy.log").exists()


async def test_demo_with_delta_xds(demo_factory) -> None:
    demo = demo_factory(delta=True)
    status, headers, _ = await demo.wait_ready()
    assert status == 200 and headers["server"] == "envoy"
    assert "x-envoy-upstream-service-time" in headers
    _, _, body = http_get(f"http://127.0.0.1:{demo.ports['http']}/proxies")
    [proxy] = json.loads(body)
    assert proxy["protocol"] == "delta" and proxy["nacks"] == {}

    demo.proc.send_signal(signal.SIGINT)  # Ctrl-C proper
    assert await asyncio.to_thread(demo.proc.wait, STOP_TIMEOUT) == 0, demo.logs()
    assert marked_processes(demo.marker) == []
