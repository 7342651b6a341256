"""`xds-operator explain KIND/NAMESPACE/NAME`: what one object became, per proxy group."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .client import CommandError, ServerClient
from .output import render
from .summary import cluster_line, endpoints_line, listener_lines, route_line

_KINDS = {"route": "Route", "routes": "Route", "backend": "Backend", "backends": "Backend"}


def parse_object(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts) or parts[0].lower() not in _KINDS:
        raise CommandError(f"{text!r}: expected KIND/NAMESPACE/NAME, KIND Route or Backend (e.g. Route/demo/httpbin)")
    return _KINDS[parts[0].lower()], parts[1], parts[2]


def run(args: argparse.Namespace) -> int:
    kind, namespace, name = parse_object(args.object)
    body = ServerClient(args.server).get("/debug/explain", kind=kind, namespace=namespace, name=name)
    sys.stdout.write(render(body, args.output) if args.output != "text" else format_text(body))
    return 0


def format_text(body: dict[str, Any]) -> str:
    lines = [f"{body['object']} (generation {body['observedGeneration']})"]
    for c in body["conditions"]:
        lines.append(f"  {c['type']}={c['status']} {c['reason']}: {c['message']}")
    if not body["groups"]:
        lines.append("")
        lines.append("not sent to any proxy group")
    # Groups in which the object became the same resources (the usual case: Routes for every
    # proxy) are one section.
    sections: dict[str, list[dict[str, Any]]] = {}
    for group in body["groups"]:
        became = json.dumps([group["resources"], group.get("precedence"), group.get("usedBy")], sort_keys=True)
        sections.setdefault(became, []).append(group)
    for same in sections.values():
        group = {**same[0], "proxies": [p for g in same for p in g["proxies"]]}
        snapshots = sorted({g["snapshot"] for g in same})
        lines.append("")
        lines.append(f"proxy group{'s' if len(same) > 1 else ''} {', '.join(g['group'] for g in same)}"
                     f" (snapshot{'s' if len(snapshots) > 1 else ''} {', '.join(snapshots)})")
        resources = group["resources"]
        for listener in resources["LDS"]:
            lines += ["  " + line for line in listener_lines(listener["resource"])]
        for config in resources["RDS"]:
            lines.append(f"  route configuration {config['name']}")
            places = {p["virtualHost"]: p for p in group.get("precedence", [])}
            for vhost in config["resource"].get("virtual_hosts", []):
                place = places[vhost["name"]]
                lines.append(f"    virtual host {vhost['name']} (domains {', '.join(vhost.get('domains', []))}):"
                             f" {len(place['positions'])} of its {place['total']} routes, in precedence order")
                for position, route in zip(place["positions"], vhost.get("routes", []), strict=False):
                    lines.append(f"      {position}. {route_line(route)}")
        endpoints = {e["name"]: e["resource"] for e in resources["EDS"]}
        for cluster in resources["CDS"]:
            lines.append(f"  {cluster_line(cluster['resource'])}")
            assignment = endpoints.get(cluster["name"], cluster["resource"].get("load_assignment"))
            if assignment is not None:
                lines.append(f"    {endpoints_line(assignment)}")
        for use in group.get("usedBy", []):
            lines.append(f"  used by route {use['position']} {use['route']} of virtual host {use['virtualHost']}"
                         f" in route configuration {use['routeConfiguration']}")
        if "usedBy" in group and not group["usedBy"]:
            lines.append("  used by no route")
        if not group["proxies"]:
            lines.append("  proxies: none connected")
        for proxy in group["proxies"]:
            message = f": {proxy['message']}" if proxy["message"] else ""
            lines.append(f"  proxy {proxy['node']} ({proxy['protocol']}): {proxy['state']}{message}")
    return "\n".join(lines) + "\n"
