"""argparse registration of the inspection commands; each runs in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from .client import DEFAULT_SERVER, CommandError

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _guarded(run: Callable[[], Handler]) -> Handler:
    """Imports the command when it runs. Any failure is one line and exit status 2, a bug
    included: for `diff`, exit 1 means "changes", so a crash must not end with it."""
    def handler(args: argparse.Namespace) -> int:
        try:
            return run()(args)
        except CommandError as exc:
            print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # YAML errors span lines
        except Exception as exc:
            log.debug("%s failed", args.command, exc_info=True)
            print(f"error: internal error ({type(exc).__name__}: {exc}); --log-level DEBUG shows where",
                  file=sys.stderr)
        return 2
    return handler


def _proxy_status() -> Handler:
    from .proxy_status import run
    return run


def _explain() -> Handler:
    from .explain import run
    return run


def _config_dump() -> Handler:
    from .config_dump import run
    return run


def _diff() -> Handler:
    from .diff import run
    return run


def add_commands(sub: Any) -> None:
    """Adds proxy-status, explain, config-dump and diff to the `xds-operator` subcommands."""
    def server_option(s: argparse.ArgumentParser) -> None:
        s.add_argument("--server", default=DEFAULT_SERVER,
                       help=f"the control plane's HTTP address (default {DEFAULT_SERVER})")

    s = sub.add_parser("proxy-status", help="connected proxies and, per xDS type, whether they run the current config")
    server_option(s)
    s.add_argument("--group", help="only proxies of this group (Envoy node.cluster)")
    s.add_argument("--node", help="only the proxy with this node id")
    s.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    s.set_defaults(func=_guarded(_proxy_status))

    s = sub.add_parser("explain", help="what a Route or Backend became for each proxy group, and who runs it")
    s.add_argument("object", metavar="KIND/NAMESPACE/NAME", help="e.g. Route/demo/httpbin or backend/demo/httpbin")
    server_option(s)
    s.add_argument("-o", "--output", choices=("text", "yaml", "json"), default="text",
                   help="text (default), or the Envoy resources and proxy states as YAML or JSON")
    s.set_defaults(func=_guarded(_explain))

    s = sub.add_parser("config-dump", help="every Envoy resource the server would send a proxy or group now")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", help="a connected proxy's node id")
    target.add_argument("--group", help="a proxy group (Envoy node.cluster), connected or not")
    server_option(s)
    s.add_argument("--protocol", choices=("sotw", "delta"), default="sotw",
                   help="with --group: as sent over this xDS protocol (delta: virtual hosts over VHDS); "
                        "a --node gets its own")
    s.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    s.set_defaults(func=_guarded(_config_dump))

    s = sub.add_parser("diff", help="the xDS change applying these files would make, per proxy group; "
                                    "exit 0 no change, 1 changes, 2 errors")
    s.add_argument("paths", nargs="+", metavar="PATH", help="Route/Backend YAML files or directories")
    against = s.add_mutually_exclusive_group()
    against.add_argument("--server", help=f"compare with this running server (the default, at {DEFAULT_SERVER}); "
                                          "the files are applied over its objects")
    against.add_argument("--against", nargs="+", metavar="PATH",
                         help="compare offline with another set of files (the whole config before the change)")
    s.set_defaults(func=_guarded(_diff))
