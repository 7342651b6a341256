"""`xds-operator demo`: httpbin, this control plane and a real Envoy, all on this machine."""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..controlplane.app import ControlPlane
from ..bootstrap import BootstrapParams, render_bootstrap
from .processes import Process, envoy_command, httpbin_command, wait_http
from ..sources.files import FileSource
from ..translate import TranslateOptions

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("demo-config.yaml.tmpl")


@dataclass
class DemoPorts:
    listener: int = 15001
    httpbin: int = 8080
    xds: int = 18000
    http: int = 18001
    admin: int = 9901


async def run_demo(ports: DemoPorts, *, api_type: str = "GRPC", workdir: Path | None = None) -> None:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="xds-operator-demo-"))
    config = workdir / "config.yaml"
    config.write_text(Template(DEMO_CONFIG.read_text()).substitute(
        httpbin_port=ports.httpbin, listener_port=ports.listener))
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(BootstrapParams(
        node_id="demo-envoy", node_cluster="demo", xds_port=ports.xds, admin_port=ports.admin, api_type=api_type)))

    plane = ControlPlane(xds_address=f"127.0.0.1:{ports.xds}", http_address=f"127.0.0.1:{ports.http}",
                         options=TranslateOptions(listener_address="127.0.0.1"))
    source = FileSource(config, plane.state)
    httpbin = Process("httpbin", httpbin_command(ports.httpbin), log_path=workdir / "httpbin.log")
    envoy = Process("envoy", envoy_command(bootstrap), log_path=workdir / "envoy.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await httpbin.start()
        source.scan()
        await plane.start()
        plane.add_task(source.run(), "file-source")
        await envoy.start()
        await wait_http(f"http://127.0.0.1:{ports.httpbin}/get", process=httpbin)
        await wait_http(f"http://127.0.0.1:{ports.listener}/headers", process=envoy)
        print(f"""
xds-operator demo is running (files in {workdir}):
  curl -v http://127.0.0.1:{ports.listener}/headers     httpbin through Envoy
  curl http://127.0.0.1:{ports.http}/proxies           connected Envoys and what they ACKed
  curl http://127.0.0.1:{ports.http}/status            Routes and Backends with their conditions
  Edit {config} and the change is live in Envoy.
Ctrl-C stops httpbin, Envoy and the control plane.
""", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await envoy.stop()
        await plane.stop()
        await httpbin.stop()
        log.info("demo stopped")
