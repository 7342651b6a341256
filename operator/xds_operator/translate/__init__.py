"""IR -> Envoy protobuf resources. Pure functions: no I/O, no kopf, no grpc."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from ..ir.ir import ProxyConfigIR
from .clusters import translate_cluster, translate_load_assignment
from .listeners import translate_listener
from .resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST
from .routes import (
    translate_route_configuration,
    translate_tls_route_configuration,
    translate_vhds_virtual_host,
    vhds_name,
    vhds_route_configuration,
)
from .secrets import translate_secret

# The translators are looked up here at call time (translate(), Snapshot.from_config), so that
# tests can replace one for a run.
__all__ = ["TranslateOptions", "translate", "translate_cluster", "translate_listener", "translate_load_assignment",
           "translate_route_configuration", "translate_secret", "translate_tls_route_configuration"]


@dataclass(frozen=True)
class TranslateOptions:
    # Where Envoy's listeners bind; the tests keep everything on loopback.
    listener_address: str = "0.0.0.0"


def translate(config: ProxyConfigIR, options: TranslateOptions = TranslateOptions(),  # noqa: B008 (frozen)
              *, vhds: bool = False) -> dict[str, dict[str, Message]]:
    """Every resource of a proxy group's config, by type URL and resource name. With `vhds`, as
    delta proxies get it: plain route configurations name VHDS, and their virtual hosts are
    resources of their own."""
    plain = [ln for ln in config.listeners if ln.sources]
    if vhds:
        routes: dict[str, Message] = {ln.name: vhds_route_configuration(ln.name) for ln in plain}
        virtual_hosts: dict[str, Message] = {vhds_name(ln.name, vh): translate_vhds_virtual_host(ln.name, vh)
                                             for ln in plain for vh in ln.virtual_hosts}
    else:
        routes, virtual_hosts = {ln.name: translate_route_configuration(ln) for ln in plain}, {}
    routes.update((h.route_config, translate_tls_route_configuration(h)) for ln in config.listeners
                  for h in ln.tls_hosts)
    return {
        SECRET: {s.name: translate_secret(s) for s in config.secrets},
        CLUSTER: {c.name: translate_cluster(c) for c in config.clusters},
        ENDPOINT: {c.name: translate_load_assignment(c) for c in config.clusters if c.discovery == "EDS"},
        LISTENER: {ln.name: translate_listener(ln.name, ln.port, options.listener_address,
                                               tuple((h.hostname, h.route_config, h.tls) for h in ln.tls_hosts),
                                               bool(ln.sources))
                   for ln in config.listeners},
        ROUTE: routes,
        VIRTUAL_HOST: virtual_hosts,
    }
