"""`xds-operator config-dump`: every resource the server would send a proxy (or group) now."""

from __future__ import annotations

import argparse
import sys

from .client import ServerClient
from .output import render


def run(args: argparse.Namespace) -> int:
    query = {"node": args.node} if args.node is not None else {"group": args.group, "protocol": args.protocol}
    sys.stdout.write(render(ServerClient(args.server).get("/debug/config_dump", **query), args.output))
    return 0
