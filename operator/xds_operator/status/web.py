"""The HTTP side: probes for Kubernetes and what the control plane knows, as JSON for people.

/healthz  the process is alive and its event loop answers
/readyz   a first config is built and the ADS server listens (and the sources are ready: for
          Kubernetes, the initial listing of every watched kind is in); else 503 and why
/proxies  connected Envoys: node, cluster, protocol, ACKed versions, last NACK
/status   every Route and Backend with its conditions and proxy counts, as Kubernetes would show;
          and under "problems" (only when there are any) what the sources cannot load now, such as
          an unreadable or broken file, each with its file, line, column, severity and message
/metrics  Prometheus text format: proxies, builds, xDS responses, ACKs and NACKs, objects by state

JSON answers end with a newline and are indented on request (`?pretty`, `?pretty=true`) or when
the client is curl or wget, as the Kubernetes API server does; `?pretty=false` turns that off.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Callable

from aiohttp import web

from ..addresses import parse_address
from ..controlplane.controller import Controller
from ..api.conditions import ACCEPTED
from ..translate.resources import PUSH_ORDER, SHORT_NAMES
from .debug import add_debug_routes
from .report import proxy_groups, reports
from ..sources.findings import Finding
from ..xds.proxies import ProxyRegistry


def make_app(controller: Controller, registry: ProxyRegistry,
             not_ready: Callable[[], str | None]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def proxies(request: web.Request) -> web.Response:
        return json_response(request, registry.to_list())

    async def status(request: web.Request) -> web.Response:
        result = controller.result
        body = {}
        if result is not None:
            groups = proxy_groups(registry, controller.cache)
            for key, item in reports(result, groups).items():
                body[str(key)] = item.to_status()
        if problems := source_problems(controller):
            body["problems"] = [p.to_dict() for p in problems]
        return json_response(request, body)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render_metrics(controller, registry), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz),
                    web.get("/proxies", proxies), web.get("/status", status), web.get("/metrics", metrics)])
    add_debug_routes(app, controller, registry)
    return app


def json_response(request: web.Request, body: object) -> web.Response:
    pretty = request.query.get("pretty")
    if pretty is None:
        indent = request.headers.get("User-Agent", "").lower().startswith(("curl/", "wget/"))
    else:
        indent = pretty.lower() not in ("false", "0", "no")
    text = json.dumps(body, indent=2 if indent else None)
    return web.Response(text=text + "\n", content_type="application/json")


def render_metrics(controller: Controller, registry: ProxyRegistry) -> str:
    """Prometheus text exposition (version 0.0.4), written out by hand: a handful of series."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP xds_operator_{name} {help_}")
        lines.append(f"# TYPE xds_operator_{name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"xds_operator_{name}{{{label_text}}} {value}" if label_text else f"xds_operator_{name} {value}")

    by_protocol = Counter(p.protocol for p in registry.proxies.values())
    metric("connected_proxies", "gauge", "Envoys connected over ADS.",
           [({"protocol": p}, by_protocol.get(p, 0)) for p in ("sotw", "delta")])
    metric("nacking_proxies", "gauge", "Connected Envoys whose last response of some type was a NACK.",
           [({}, sum(1 for p in registry.proxies.values() if p.nacks))])
    for name, counter, help_ in (("xds_responses_total", registry.responses, "xDS responses sent."),
                                 ("xds_acks_total", registry.acks, "ACKs received."),
                                 ("xds_nacks_total", registry.nacks, "NACKs received.")):
        metric(name, "counter", help_, [({"type": SHORT_NAMES[t]}, counter.get(t, 0)) for t in PUSH_ORDER])
    metric("builds_total", "counter", "Config builds (each one a debounced batch of changes).",
           [({}, controller.builds)])
    metric("last_build_seconds", "gauge", "Duration of the last build, translation and snapshot.",
           [({}, round(controller.last_build_seconds, 6))])
    by_severity = Counter(p.severity.value for p in source_problems(controller))
    metric("source_problems", "gauge", "What the sources cannot load now (unreadable or broken files, duplicates).",
           [({"severity": s}, by_severity.get(s, 0)) for s in ("error", "warning")])
    states: Counter[tuple[str, str]] = Counter()
    if controller.result is not None:
        for key, status in controller.result.statuses.items():
            accepted = status.condition(ACCEPTED)
            states[(key.kind, "true" if accepted and accepted.status else "false")] += 1
    metric("objects", "gauge", "Routes and Backends, by whether their spec is accepted.",
           [({"kind": kind, "accepted": ok}, states.get((kind, ok), 0))
            for kind in ("Route", "Backend") for ok in ("true", "false")])
    return "\n".join(lines) + "\n"


def source_problems(controller: Controller) -> list[Finding]:
    return [p for problems in controller.state.problems.values() for p in problems]


async def start_http(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    parsed = parse_address(address, default_host="0.0.0.0")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, parsed.host, parsed.port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
    return runner, bound
