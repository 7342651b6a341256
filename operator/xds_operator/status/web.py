"""The HTTP side: probes for Kubernetes and what the control plane knows, as JSON for people.

/healthz  the process is alive and its event loop answers
/readyz   a first config is built and the ADS server listens (and the sources are ready: for
          Kubernetes, the initial listing of every watched kind is in); else 503 and why
/proxies  connected Envoys: node, cluster, protocol, ACKed versions, last NACK
/status   every Route and Backend with its conditions and proxy counts, as Kubernetes would show;
          and under "problems" (only when there are any) what the sources cannot load now, such as
          an unreadable or broken file, each with its file, line, column, severity and message
/metrics  Prometheus text format (status/metrics.py): proxies, builds, xDS responses, ACKs and NACKs,
          objects by state, and the time a change takes to be ACKed by every proxy of a group

JSON answers end with a newline and are indented on request (`?pretty`, `?pretty=true`) or when
the client is curl or wget, as the Kubernetes API server does; `?pretty=false` turns that off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..addresses import parse_address
from ..xds.proxies import ProxyRegistry
from .debug import Served, add_debug_routes
from .metrics import Built, source_problems
from .report import proxy_groups
from .status_page import StatusPage


class Controller(Served, Built, Protocol):
    """What the endpoints read of the controller (controlplane.controller.Controller, a layer above)."""


def make_app(controller: Controller, registry: ProxyRegistry, not_ready: Callable[[], str | None],
             metrics_registry: CollectorRegistry,
             extra_json: Mapping[str, Callable[[], object]] | None = None) -> web.Application:
    page = StatusPage()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def proxies(request: web.Request) -> web.Response:
        # Copies of the books on the loop, the JSON in a thread: with many proxies and resources
        # it is megabytes (filter with ?node= or ?cluster=).
        proxies = registry.frozen(node=request.query.get("node"), group=request.query.get("cluster"))
        text = await asyncio.to_thread(lambda: json_text([p.to_dict() for p in proxies], pretty(request)))
        return web.Response(text=text, content_type="application/json")

    async def status(request: web.Request) -> web.Response:
        # On the loop only references to what is there now (tables and snapshots are never
        # changed in place); the reports and their JSON in a thread: at 20,000 objects, after a
        # change, hundreds of milliseconds of CPU.
        await controller.cache.settled()  # a newly connected group's proxies count, as ever
        result = controller.result
        groups = proxy_groups(registry, controller.cache, copy=True) if result is not None else {}
        refused = registry.refused_objects  # (replaced whole on change)
        problems = [p.to_dict() for p in source_problems(controller)]
        indent = pretty(request)
        text = await asyncio.to_thread(page.document, result, groups, refused, problems, indent=indent)
        return web.Response(text=text, content_type="application/json")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics_registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz),
                    web.get("/proxies", proxies), web.get("/status", status), web.get("/metrics", metrics)])
    add_debug_routes(app, controller, registry)
    for path, provider in (extra_json or {}).items():  # e.g. /replica from the Kubernetes side
        async def extra(request: web.Request, _provider: Callable[[], object] = provider) -> web.Response:
            return json_response(request, _provider())
        app.router.add_get(path, extra)
    return app


def pretty(request: web.Request) -> bool:
    asked = request.query.get("pretty")
    if asked is None:
        return request.headers.get("User-Agent", "").lower().startswith(("curl/", "wget/"))
    return asked.lower() not in ("false", "0", "no")


def json_response(request: web.Request, body: object) -> web.Response:
    return web.Response(text=json_text(body, pretty(request)), content_type="application/json")


def json_text(body: object, indent: bool) -> str:
    return json.dumps(body, indent=2 if indent else None) + "\n"


async def start_http(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    parsed = parse_address(address, default_host="0.0.0.0")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, parsed.host, parsed.port)
    await site.start()
    bound: int = runner.addresses[0][1]  # the real port when 0 was asked for
    return runner, bound
