"""Listener: one per port, an HTTP connection manager whose routes come over ADS (RDS).

A port with TLS Routes gets one filter chain per SNI hostname, each terminating TLS with its own
certificate (SDS) and its own route configuration; plain Routes on the same port share the
plain chain, told apart by the TLS inspector (transport_protocol raw_buffer). A TLS client whose
SNI names none of the port's hostnames matches no chain, and Envoy closes the connection."""

from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from ..ir.ir import DownstreamTlsIR
from .common import ads_config_source, pack
from .tls import downstream_socket

# (SNI hostname, route configuration name, TLS settings) of each TLS chain.
TlsChain = tuple[str, str, DownstreamTlsIR]

HCM = hcm_pb2.HttpConnectionManager


def _manager(stat_prefix: str, route_config: str) -> listener_components_pb2.Filter:
    manager = HCM(
        stat_prefix=stat_prefix,
        codec_type=HCM.AUTO,
        rds=hcm_pb2.Rds(route_config_name=route_config, config_source=ads_config_source()),
        # Hostnames match without the port a client may put in Host.
        strip_any_host_port=True,
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))],
    )
    return listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                          typed_config=pack(manager))


@lru_cache(maxsize=4096)
def translate_listener(name: str, port: int, bind_address: str, tls_chains: tuple[TlsChain, ...] = (),
                       plain: bool = True) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=bind_address, port_value=port)),
    )
    if not tls_chains:
        listener.filter_chains.append(listener_components_pb2.FilterChain(filters=[_manager(name, name)]))
        return listener
    listener.listener_filters.append(listener_components_pb2.ListenerFilter(
        name="envoy.filters.listener.tls_inspector", typed_config=pack(tls_inspector_pb2.TlsInspector())))
    if plain:
        listener.filter_chains.append(listener_components_pb2.FilterChain(
            name="plain",
            filter_chain_match=listener_components_pb2.FilterChainMatch(transport_protocol="raw_buffer"),
            filters=[_manager(name, name)]))
    for hostname, route_config, tls in tls_chains:
        listener.filter_chains.append(listener_components_pb2.FilterChain(
            name=hostname,
            filter_chain_match=listener_components_pb2.FilterChainMatch(server_names=[hostname],
                                                                        transport_protocol="tls"),
            transport_socket=downstream_socket(tls),
            filters=[_manager(f"https-{port}", route_config)]))
    return listener
