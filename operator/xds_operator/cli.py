"""The `xds-operator` command: serve, validate, demo, bootstrap (and run, for Kubernetes)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .addresses import Address, UsageError, check_free, parse_address
from .bootstrap import BootstrapParams, XdsClientTls, render_bootstrap
from .cli_args import (
    LOG_LEVELS,
    client_address,
    host_name,
    listener_ip,
    listener_port,
    log_level,
    node_name,
    port_number,
    positive_seconds,
    server_address,
)
from .inspect import add_commands as add_inspection_commands
from .stop_signals import StopSignals, catch_early, ignore_stop_signals

if TYPE_CHECKING:
    from .xds.channel_tls import XdsTlsFiles

HTTP_ENDPOINTS = "/healthz, /readyz, /proxies, /status and /metrics"


def xds_tls_files(args: argparse.Namespace) -> XdsTlsFiles | None:
    """serve's and run's --xds-tls-cert/--xds-tls-key/--xds-client-ca, checked: the files are
    read and verified here, so a bad one is one line before anything starts (UsageError)."""
    from .xds.channel_tls import ReloadingTls, TlsFilesError, XdsTlsFiles

    if args.xds_tls_cert is None and args.xds_tls_key is None:
        if args.xds_client_ca is not None:
            raise UsageError("--xds-client-ca needs --xds-tls-cert and --xds-tls-key (the server's own certificate)")
        return None
    if args.xds_tls_cert is None or args.xds_tls_key is None:
        raise UsageError("--xds-tls-cert and --xds-tls-key go together: give both, or neither for plaintext ADS")
    files = XdsTlsFiles(Path(args.xds_tls_cert), Path(args.xds_tls_key),
                        Path(args.xds_client_ca) if args.xds_client_ca is not None else None)
    try:
        ReloadingTls(files)
    except TlsFilesError as exc:
        raise UsageError(str(exc)) from None
    return files


def _serve(args: argparse.Namespace) -> int:
    from .controlplane.app import ControlPlane
    from .sources.files import FileSource
    from .translate import TranslateOptions

    config = Path(args.config)
    if not config.exists():
        print(f"xds-operator serve: error: --config {config}: no such file or directory", file=sys.stderr)
        return 2
    xds_tls = xds_tls_files(args)

    async def main() -> None:
        plane = ControlPlane(xds_address=args.xds_address, http_address=args.http_address,
                             options=TranslateOptions(listener_address=args.listener_address), xds_tls=xds_tls)
        source = FileSource(config, plane.state, interval=args.poll_interval)
        source.scan()
        await plane.start()
        plane.add_task(source.run(), "file-source")
        await _until_signalled()
        await plane.stop()

    asyncio.run(main())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .api.conditions import ACCEPTED, CONFLICTED, HOSTNAME_CONFLICT
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
        for logger, level in zip(quiet, levels, strict=False):
            logger.setLevel(level)
    findings = source.findings()
    unresolved = Severity.ERROR if args.strict else Severity.WARNING
    definitions = source.definitions()
    for definition in definitions:
        key = definition.obj.key
        status = result.statuses.get(key)
        if status is None:
            continue  # a Service, EndpointSlice or Secret
        for error in status.errors:
            findings.append(definition.finding(error.path, f"{key}: {error}"))
        for warning in status.warnings:
            field_path, _, message = warning.partition(": ")
            findings.append(definition.finding(field_path, f"{key}: {message}", Severity.WARNING))
        for condition in status.conditions:
            # Accepted=False for an invalid spec: its errors are above, each at its field.
            # (Conflicted is False when all is well; a redirect's conflict is among the warnings.)
            if (condition.status or condition.type == CONFLICTED
                    or (condition.type == ACCEPTED and condition.reason != HOSTNAME_CONFLICT)):
                continue
            # A Secret that is there but unusable, or a TLS hostname another Route has, is an
            # error wherever it is applied.
            invalid = condition.reason in ("InvalidCertificateRef", HOSTNAME_CONFLICT)
            # Unresolved references: the Backend or Service may well exist where this is applied.
            for part in condition.message.split("; "):
                field_path, colon, _ = part.partition(": ")
                if not colon or " " in field_path or not field_path.startswith("spec"):
                    field_path = "spec.service" if key.kind == "Backend" else "spec"
                severity = Severity.ERROR if invalid and not part.endswith(" not found") else unresolved
                findings.append(definition.finding(
                    field_path, f"{key}: {part} ({condition.type}={condition.reason})", severity))
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
    from .dev.demo import DemoPorts, check_demo_ports, require_dev_dependencies, run_demo

    require_dev_dependencies()
    ports = DemoPorts(listener=args.listener_port, https=args.https_port, httpbin=args.httpbin_port,
                      xds=args.xds_port, http=args.http_port, admin=args.admin_port)
    check_demo_ports(ports)
    api_type = "DELTA_GRPC" if args.delta else "GRPC"
    return asyncio.run(run_demo(ports, api_type=api_type, keep_files=args.keep_files))


def _bootstrap(args: argparse.Namespace) -> int:
    xds: Address = args.xds_address
    sys.stdout.write(render_bootstrap(BootstrapParams(
        node_id=args.node_id, node_cluster=args.node_cluster, xds_host=xds.host, xds_port=xds.port,
        admin_address=args.admin_address, admin_port=args.admin_port,
        api_type="DELTA_GRPC" if args.delta else "GRPC", xds_tls=_bootstrap_tls(args, xds))))
    return 0


def _bootstrap_tls(args: argparse.Namespace, xds: Address) -> XdsClientTls | None:
    if args.xds_tls_ca is None:
        if args.xds_client_cert or args.xds_client_key or args.xds_server_name:
            raise UsageError("--xds-client-cert, --xds-client-key and --xds-server-name need --xds-tls-ca "
                             "(the CA Envoy verifies the server with)")
        return None
    if (args.xds_client_cert is None) != (args.xds_client_key is None):
        raise UsageError("--xds-client-cert and --xds-client-key go together: give both, or neither")
    return XdsClientTls(ca=args.xds_tls_ca, server_name=args.xds_server_name or xds.host,
                        client_cert=args.xds_client_cert, client_key=args.xds_client_key)


def _run(args: argparse.Namespace) -> int:
    from .kube.operator import run_operator

    # Before kopf starts: a busy port is one line here, not an error inside kopf's startup handler.
    check_free(args.xds_address, "the ADS port; choose another with --xds-address")
    check_free(args.http_address, "the HTTP port; choose another with --http-address")
    return run_operator(args, xds_tls_files(args))


async def _until_signalled() -> None:
    await StopSignals().wait()  # later ones are ignored: they must not interrupt the shutdown


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xds-operator", description="An Envoy xDS control plane.")
    p.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version('xds-operator')}")
    p.add_argument("--log-level", type=log_level, default="INFO", metavar="LEVEL",
                   help=f"{', '.join(LOG_LEVELS)} (default %(default)s); also accepted after the command")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, description: str = "") -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_, description=description or help_[0].upper() + help_[1:] + ".")
        # SUPPRESS: given here it overrides the one before the command; not given, that one stays.
        s.add_argument("--log-level", type=log_level, default=argparse.SUPPRESS, metavar="LEVEL",
                       help=f"{', '.join(LOG_LEVELS)} (default INFO)")
        return s

    def server_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--xds-address", type=server_address, default="0.0.0.0:18000", metavar="HOST:PORT",
                       help="ADS gRPC address, HOST:PORT or [IPv6]:PORT (default %(default)s)")
        s.add_argument("--http-address", type=server_address, default="0.0.0.0:18001", metavar="HOST:PORT",
                       help=f"address of {HTTP_ENDPOINTS} (default %(default)s)")
        s.add_argument("--listener-address", type=listener_ip, default="0.0.0.0", metavar="IP",
                       help="the IP address Envoy listeners bind (default %(default)s)")
        tls = s.add_argument_group(
            "ADS over TLS", "Serve ADS over TLS; with --xds-client-ca, only to proxies whose client certificate that "
            "CA signed and whose URI SAN spiffe://<trust domain>/xds-group/<node.cluster> names the group they ask "
            "for. The files are re-read when they change (new connections get the new ones, open streams stay).")
        tls.add_argument("--xds-tls-cert", metavar="FILE",
                         help="the server's PEM certificate chain, leaf first (default: plaintext ADS)")
        tls.add_argument("--xds-tls-key", metavar="FILE", help="the PEM private key of --xds-tls-cert")
        tls.add_argument("--xds-client-ca", metavar="FILE",
                         help="PEM CA certificates of the proxies' client certificates: given, every proxy needs one "
                              "(default: no client certificates)")

    s = command("serve", "serve Routes and Backends from YAML files (reloaded on change)")
    s.add_argument("--config", required=True, help="a YAML file or a directory of them")
    s.add_argument("--poll-interval", type=positive_seconds, default=0.1, metavar="SECONDS",
                   help="seconds between checks for changed files (default %(default)s)")
    server_args(s)
    s.set_defaults(func=_serve)

    s = command("validate", "check Route/Backend YAML as the server would; exit 1 on any error",
                "Loads the files as `serve --config` would (the first definition of an object wins) and "
                "checks every Route and Backend, without starting anything. Prints each problem as "
                "file:line:column: severity: message and exits 1 if there is an error. A reference to a "
                "Backend or Service not in the files is a warning (the object may exist where the files are "
                "applied), an error with --strict; v1 Services and discovery.k8s.io/v1 EndpointSlices in "
                "the files resolve them. Documents of other kinds are skipped with a note.")
    s.add_argument("paths", nargs="+", help="files or directories")
    s.add_argument("--strict", action="store_true",
                   help="unresolved references are errors, not warnings (default: warnings)")
    s.set_defaults(func=_validate)

    s = command("demo", "run httpbin, the control plane and a real Envoy locally",
                "Run httpbin, the control plane and a real Envoy on this machine (127.0.0.1). "
                "Ctrl-C (or SIGTERM) stops all three and exits 0. Needs the dev dependency group "
                "(`uv run` installs it).")
    s.add_argument("--listener-port", type=listener_port, default=15001, metavar="PORT",
                   help="Envoy's listener: send requests here (default %(default)s)")
    s.add_argument("--https-port", type=listener_port, default=15443, metavar="PORT",
                   help="Envoy's HTTPS listener, for https://localhost:PORT (default %(default)s)")
    s.add_argument("--httpbin-port", type=port_number, default=8080, metavar="PORT",
                   help="httpbin, the upstream Envoy routes to (default %(default)s)")
    s.add_argument("--xds-port", type=port_number, default=18000, metavar="PORT",
                   help="the control plane's ADS gRPC server (default %(default)s)")
    s.add_argument("--http-port", type=port_number, default=18001, metavar="PORT",
                   help=f"the control plane's {HTTP_ENDPOINTS} (default %(default)s)")
    s.add_argument("--admin-port", type=port_number, default=9901, metavar="PORT",
                   help="Envoy's admin interface (default %(default)s)")
    s.add_argument("--delta", action="store_true",
                   help="Envoy uses incremental (delta) xDS (default: state of the world)")
    s.add_argument("--keep-files", action="store_true",
                   help="keep the config and log folder after exit (default: removed, unless the demo failed)")
    s.set_defaults(func=_demo)

    s = command("bootstrap", "print an Envoy bootstrap that points at this control plane")
    s.add_argument("--node-id", type=node_name, default="envoy-1", metavar="ID",
                   help="Envoy node.id: this proxy's name (default %(default)s)")
    s.add_argument("--node-cluster", type=node_name, default="default", metavar="NAME",
                   help="Envoy node.cluster: the proxy group (Route.spec.proxies) (default %(default)s)")
    s.add_argument("--xds-address", type=client_address, default=parse_address("127.0.0.1:18000"), metavar="HOST:PORT",
                   help="where Envoy reaches the control plane's ADS server, HOST:PORT or [IPv6]:PORT "
                        "(default %(default)s)")
    s.add_argument("--admin-address", type=host_name, default="127.0.0.1", metavar="HOST",
                   help="where Envoy's admin interface listens (default %(default)s)")
    s.add_argument("--admin-port", type=port_number, default=9901, metavar="PORT",
                   help="Envoy's admin port (default %(default)s)")
    s.add_argument("--delta", action="store_true", help="use incremental (delta) xDS (default: state of the world)")
    tls = s.add_argument_group(
        "ADS over TLS", "Paths as Envoy will see them (read by Envoy at start, not by this command). The client "
        "certificate's URI SAN spiffe://<trust domain>/xds-group/<node.cluster> must name --node-cluster when the "
        "server has --xds-client-ca.")
    tls.add_argument("--xds-tls-ca", metavar="FILE",
                     help="PEM CA that signed the server's certificate: Envoy connects over TLS and verifies it "
                          "(default: plaintext)")
    tls.add_argument("--xds-server-name", type=host_name, metavar="NAME",
                     help="the DNS name or IP address the server's certificate must carry; a DNS name is also sent "
                          "as SNI (default: the host of --xds-address)")
    tls.add_argument("--xds-client-cert", metavar="FILE", help="Envoy's PEM client certificate chain (needs --xds-tls-ca)")
    tls.add_argument("--xds-client-key", metavar="FILE", help="the PEM private key of --xds-client-cert")
    s.set_defaults(func=_bootstrap)

    s = command("run", "run as a Kubernetes operator (kopf) with the ADS server in one process")
    s.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="watch only this namespace (repeatable) (default: the whole cluster)")
    s.add_argument("--standalone", action="store_true",
                   help="no peering with other operator instances (default: peering on)")
    s.add_argument("--leader-elect", action="store_true",
                   help="several replicas: elect a leader with a Lease, only it writes statuses and Events, "
                        "and every replica shares its proxies' ACKs (default: off, for a single replica)")
    s.add_argument("--leader-election-namespace", metavar="NS",
                   help="namespace of the Leases, the operator's own (default: $POD_NAMESPACE, else default)")
    s.add_argument("--leader-lease-name", type=node_name, default="xds-operator", metavar="NAME",
                   help="the leader's Lease; each replica's ACK record is NAME-<identity> (default %(default)s)")
    s.add_argument("--leader-lease-duration", type=positive_seconds, default=15.0, metavar="SECONDS",
                   help="a follower takes over a Lease not renewed for this long; also how long a replica's "
                        "ACK record counts after its last heartbeat (default %(default)s)")
    s.add_argument("--leader-renew-deadline", type=positive_seconds, default=10.0, metavar="SECONDS",
                   help="the leader stops writing when it could not renew for this long (default %(default)s)")
    s.add_argument("--leader-retry-period", type=positive_seconds, default=2.0, metavar="SECONDS",
                   help="how often candidates try and the leader renews (default %(default)s)")
    server_args(s)
    s.set_defaults(func=_run)
    add_inspection_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("serve", "demo"):  # `run` leaves signals to kopf
        catch_early()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"xds-operator {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before a command installed its own handlers: no traceback
        ignore_stop_signals()  # nor from the copy `uv run` forwards while the interpreter exits
        return 130


if __name__ == "__main__":
    sys.exit(main())
