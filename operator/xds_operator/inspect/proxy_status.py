"""`xds-operator proxy-status`: connected proxies and whether each runs its group's current config."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .client import ServerClient
from .output import render, table

TYPES = ("CDS", "EDS", "LDS", "RDS")


def run(args: argparse.Namespace) -> int:
    proxies: list[dict[str, Any]] = ServerClient(args.server).get("/debug/proxy-status")
    proxies = [p for p in proxies if (args.group is None or p["group"] == args.group)
               and (args.node is None or p["node"] == args.node)]
    if args.output != "table":
        sys.stdout.write(render(proxies, args.output))
        return 0
    sys.stdout.write(format_table(proxies))
    return 0


def format_table(proxies: list[dict[str, Any]]) -> str:
    if not proxies:
        return "no connected proxies\n"
    # Delta proxies' virtual hosts travel on their own (VHDS): a column when one has them.
    types = (*TYPES, "VHDS") if any("VHDS" in p["types"] for p in proxies) else TYPES
    rows = [[p["node"], p["group"], p["protocol"], p["connectedSince"],
             *(f"{p['types'][t]['state']} {p['types'][t]['version'][:8]}" if t in p["types"] else "-"
               for t in types)] for p in proxies]
    text = table(["NODE", "GROUP", "PROTOCOL", "CONNECTED SINCE", *types], rows)
    nacks = [(p["node"], t, p["types"][t]) for p in proxies for t in types
             if t in p["types"] and p["types"][t]["state"] == "NACKED"]
    if nacks:
        text += "\nlast NACK:\n" + "".join(f"  {node} {t} version {s['version'][:8]}: {s['message']}\n"
                                           for node, t, s in nacks)
    return text
