"""The HTTP side: probes for Kubernetes and what the control plane knows, as JSON for people.

/healthz  the process is alive and its event loop answers
/readyz   a first config is built and the ADS server listens
/proxies  connected Envoys: node, cluster, protocol, ACKed versions, last NACK
/status   every Route and Backend with its conditions and proxy counts, as Kubernetes would show
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from .controller import Controller
from .status import proxy_groups, reports
from .xds.proxies import ProxyRegistry


def make_app(controller: Controller, registry: ProxyRegistry, ready: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: no config built yet\n")

    async def proxies(_: web.Request) -> web.Response:
        return web.json_response(registry.to_list())

    async def status(_: web.Request) -> web.Response:
        result = controller.result
        body = {}
        if result is not None:
            groups = proxy_groups(registry, controller.cache)
            for key, item in reports(result, groups).items():
                body[str(key)] = item.to_status()
        return web.json_response(body)

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz),
                    web.get("/proxies", proxies), web.get("/status", status)])
    return app


async def start_http(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
    return runner, bound
