"""Listener: one per port, an HTTP connection manager whose routes come over ADS (RDS)."""

from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from .common import ads_config_source, pack

HCM = hcm_pb2.HttpConnectionManager


@lru_cache(maxsize=4096)
def translate_listener(name: str, port: int, bind_address: str) -> listener_pb2.Listener:
    manager = HCM(
        stat_prefix=name,
        codec_type=HCM.AUTO,
        rds=hcm_pb2.Rds(route_config_name=name, config_source=ads_config_source()),
        # Hostnames match without the port a client may put in Host.
        strip_any_host_port=True,
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=bind_address, port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=pack(manager))])],
    )
