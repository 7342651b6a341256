"""Envoy bootstrap files, all rendered from the one template next to this module."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

import yaml

TEMPLATE = Path(__file__).with_name("envoy-bootstrap.yaml.tmpl")


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str = "envoy-1"
    node_cluster: str = "demo"
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    api_type: str = "GRPC"  # GRPC (state of the world) or DELTA_GRPC (incremental)


def render_bootstrap(params: BootstrapParams) -> str:
    if params.api_type not in ("GRPC", "DELTA_GRPC"):
        raise ValueError(f"api_type must be GRPC or DELTA_GRPC, not {params.api_type!r}")
    values = {name: _yaml_scalar(value) if isinstance(value, str) else value
              for name, value in asdict(params).items()}
    return Template(TEMPLATE.read_text()).substitute(values)


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _yaml_scalar(value: str) -> str:
    """`value` as a YAML string: plain when that reads back as the same string, else quoted.

    An IPv6 address (`::1`), a node id with a colon or `#`, or one that YAML would read as a
    number or boolean, is written as a JSON string (valid YAML), so the file means what was asked.
    """
    if _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)
