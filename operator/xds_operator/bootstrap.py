"""Envoy bootstrap files, all rendered from the one template next to this module."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template

import yaml

TEMPLATE = Path(__file__).with_name("envoy-bootstrap.yaml.tmpl")


@dataclass(frozen=True)
class XdsClientTls:
    """How Envoy reaches an ADS server over TLS: paths as Envoy sees them, read by Envoy at start."""

    ca: str  # the PEM CA that signed the server's certificate
    server_name: str  # a DNS name (also sent as SNI) or IP address the server's certificate carries
    client_cert: str | None = None  # Envoy's client certificate chain, for a server with --xds-client-ca
    client_key: str | None = None


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str = "envoy-1"
    node_cluster: str = "demo"
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    api_type: str = "GRPC"  # GRPC (state of the world) or DELTA_GRPC (incremental)
    xds_tls: XdsClientTls | None = None  # None: plaintext gRPC


def render_bootstrap(params: BootstrapParams) -> str:
    if params.api_type not in ("GRPC", "DELTA_GRPC"):
        raise ValueError(f"api_type must be GRPC or DELTA_GRPC, not {params.api_type!r}")
    values: dict[str, object] = {}
    for field in fields(params):
        value = getattr(params, field.name)
        values[field.name] = _yaml_scalar(value) if isinstance(value, str) else value
    values["xds_transport_socket"] = _transport_socket(params.xds_tls) if params.xds_tls is not None else ""
    return Template(TEMPLATE.read_text()).substitute(values)


def _transport_socket(tls: XdsClientTls) -> str:
    """The xds-operator cluster's `transport_socket`: lines of the cluster, each after a newline, as
    the template puts ${xds_transport_socket} at the end of the cluster's last line (so a plaintext
    rendering, with it empty, has no blank line and the committed ones stay as they are)."""
    if (tls.client_cert is None) != (tls.client_key is None):
        raise ValueError("client_cert and client_key go together")
    try:
        ipaddress.ip_address(tls.server_name)
        san_type, sni = "IP_ADDRESS", None  # SNI carries host names only (RFC 6066)
    except ValueError:
        san_type, sni = "DNS", tls.server_name
    q = json.dumps  # a JSON string is a YAML string, whatever the path holds
    lines = ["transport_socket:",
             "  name: envoy.transport_sockets.tls",
             "  typed_config:",
             '    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext']
    if sni is not None:
        lines.append(f"    sni: {q(sni)}")
    lines += ["    common_tls_context:",
              "      alpn_protocols: [h2]  # gRPC servers refuse TLS without it"]
    if tls.client_cert is not None and tls.client_key is not None:
        lines += ["      tls_certificates:",
                  f"      - certificate_chain: {{filename: {q(tls.client_cert)}}}",
                  f"        private_key: {{filename: {q(tls.client_key)}}}"]
    lines += ["      validation_context:",
              f"        trusted_ca: {{filename: {q(tls.ca)}}}",
              "        match_typed_subject_alt_names:",
              f"        - san_type: {san_type}",
              f"          matcher: {{exact: {q(tls.server_name)}}}"]
    return "".join(f"\n    {line}" for line in lines)


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _yaml_scalar(value: str) -> str:
    """`value` as a YAML string: plain when that reads back as the same string, else quoted.

    An IPv6 address (`::1`), a node id with a colon or `#`, or one that YAML would read as a
    number or boolean, is written as a JSON string (valid YAML), so the file means what was asked.
    """
    if _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)
