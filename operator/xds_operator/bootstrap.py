"""Envoy bootstrap files, all rendered from the one template next to this module."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

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
    return Template(TEMPLATE.read_text()).substitute(asdict(params))
