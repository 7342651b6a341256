"""The `xds-operator` command: serve, validate, demo, bootstrap (and run, for Kubernetes)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .bootstrap import BootstrapParams, render_bootstrap
from .inspect import add_commands as add_inspection_commands


def _serve(args: argparse.Namespace) -> int:
    from .controlplane.app import ControlPlane
    from .sources.files import FileSource
    from .translate import TranslateOptions

    config = Path(args.config)
    if not config.exists():
        print(f"xds-operator serve: error: --config {config}: no such file or directory", file=sys.stderr)
        return 2

    async def main() -> None:
        plane = ControlPlane(xds_address=args.xds_address, http_address=args.http_address,
                             options=TranslateOptions(listener_address=args.listener_address))
        source = FileSource(config, plane.state, interval=args.poll_interval)
        source.scan()
        await plane.start()
        plane.add_task(source.run(), "file-source")
        await _until_signalled()
        await plane.stop()

    asyncio.run(main())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .api.conditions import ACCEPTED
    from .ir.builder import Builder
    from .sources.files import FileSource
    from .sources.findings import Severity
    from .sources.state import StateStore

    # The server's own file source, run once: what it would serve is what gets judged. Its log
    # would say each problem a second time: everything is printed below, once, at its place.
    state = StateStore()
    source = FileSource([Path(p) for p in args.paths], state, keep_positions=True)
    quiet = [logging.getLogger(name) for name in ("xds_operator.sources", "xds_operator.ir")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)
        source.scan()
        result = Builder().build(state)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    findings = source.findings()
    unresolved = Severity.ERROR if args.strict else Severity.WARNING
    definitions = source.definitions()
    for definition in definitions:
        key = definition.obj.key
        status = result.statuses.get(key)
        if status is None:
            continue  # a Service or EndpointSlice
        for error in status.errors:
            findings.append(definition.finding(error.path, f"{key}: {error}"))
        for condition in status.conditions:
            if condition.status or condition.type == ACCEPTED:
                continue
            # Unresolved references: the Backend or Service may well exist where this is applied.
            for part in condition.message.split("; "):
                field_path, colon, _ = part.partition(": ")
                if not colon or " " in field_path or not field_path.startswith("spec"):
                    field_path = "spec.service" if key.kind == "Backend" else "spec"
                findings.append(definition.finding(
                    field_path, f"{key}: {part} ({condition.type}={condition.reason})", unresolved))
    findings.sort(key=lambda f: f.sort_key())
    for finding in findings:
        print(finding)
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    print(f"{_count(len(definitions), 'object')} checked, {_count(errors, 'error')}, {_count(warnings, 'warning')}")
    return 1 if errors else 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _demo(args: argparse.Namespace) -> int:
    from .dev.demo import DemoPorts, run_demo

    ports = DemoPorts(listener=args.listener_port, httpbin=args.httpbin_port, xds=args.xds_port,
                      http=args.http_port, admin=args.admin_port)
    asyncio.run(run_demo(ports, api_type="DELTA_GRPC" if args.delta else "GRPC"))
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    host, _, port = args.xds_address.rpartition(":")
    sys.stdout.write(render_bootstrap(BootstrapParams(
        node_id=args.node_id, node_cluster=args.node_cluster, xds_host=host, xds_port=int(port),
        admin_address=args.admin_address, admin_port=args.admin_port,
        api_type="DELTA_GRPC" if args.delta else "GRPC")))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .kube.operator import run_operator

    return run_operator(args)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xds-operator", description="An Envoy xDS control plane.")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    def server_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--xds-address", default="0.0.0.0:18000", help="ADS gRPC address (default 0.0.0.0:18000)")
        s.add_argument("--http-address", default="0.0.0.0:18001",
                       help="address of /healthz, /readyz, /proxies, /status (default 0.0.0.0:18001)")
        s.add_argument("--listener-address", default="0.0.0.0", help="where Envoy listeners bind (default 0.0.0.0)")

    s = sub.add_parser("serve", help="serve Routes and Backends from YAML files (reloaded on change)")
    s.add_argument("--config", required=True, help="a YAML file or a directory of them")
    s.add_argument("--poll-interval", type=float, default=0.1, help="seconds between checks for changed files (default 0.1)")
    server_args(s)
    s.set_defaults(func=_serve)

    s = sub.add_parser(
        "validate", help="check Route/Backend YAML as the server would; exit 1 on any error",
        description="Loads the files as `serve --config` would (the first definition of an object wins) and "
                    "checks every Route and Backend. Prints each problem as file:line:column: severity: message "
                    "and exits 1 if there is an error. A reference to a Backend or Service not in the files is "
                    "a warning (the object may exist where the files are applied), an error with --strict; "
                    "v1 Services and discovery.k8s.io/v1 EndpointSlices in the files resolve them. Documents "
                    "of other kinds are skipped with a note.")
    s.add_argument("paths", nargs="+", help="files or directories")
    s.add_argument("--strict", action="store_true", help="unresolved references are errors, not warnings")
    s.set_defaults(func=_validate)

    s = sub.add_parser("demo", help="run httpbin, the control plane and a real Envoy locally")
    s.add_argument("--listener-port", type=int, default=15001)
    s.add_argument("--httpbin-port", type=int, default=8080)
    s.add_argument("--xds-port", type=int, default=18000)
    s.add_argument("--http-port", type=int, default=18001)
    s.add_argument("--admin-port", type=int, default=9901)
    s.add_argument("--delta", action="store_true", help="Envoy uses incremental (delta) xDS")
    s.set_defaults(func=_demo)

    s = sub.add_parser("bootstrap", help="print an Envoy bootstrap that points at this control plane")
    s.add_argument("--node-id", default="envoy-1")
    s.add_argument("--node-cluster", default="default", help="Envoy node.cluster: the proxy group (Route.spec.proxies)")
    s.add_argument("--xds-address", default="127.0.0.1:18000")
    s.add_argument("--admin-address", default="127.0.0.1")
    s.add_argument("--admin-port", type=int, default=9901)
    s.add_argument("--delta", action="store_true", help="use incremental (delta) xDS")
    s.set_defaults(func=_bootstrap)

    s = sub.add_parser("run", help="run as a Kubernetes operator (kopf) with the ADS server in one process")
    s.add_argument("--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: the whole cluster")
    s.add_argument("--standalone", action="store_true", help="no peering with other operator instances")
    server_args(s)
    s.set_defaults(func=_run)
    add_inspection_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
