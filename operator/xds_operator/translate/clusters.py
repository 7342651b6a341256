"""Cluster (one per Backend) and ClusterLoadAssignment (one per EDS cluster)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from ..ir.ir import ClusterIR, Endpoint
from .common import ads_config_source, duration, pack
from .tls import upstream_socket

Cluster = cluster_pb2.Cluster
_LB = {
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "RANDOM": Cluster.RANDOM,
    "RING_HASH": Cluster.RING_HASH,
    "MAGLEV": Cluster.MAGLEV,
}
_U32 = wrappers_pb2.UInt32Value


@lru_cache(maxsize=65536)
def translate_cluster(ir: ClusterIR) -> cluster_pb2.Cluster:
    cluster = Cluster(name=ir.name, connect_timeout=duration(ir.connect_timeout_ms), lb_policy=_LB[ir.load_balancer])
    if ir.discovery == "STRICT_DNS":
        assert ir.dns is not None  # the builder makes a STRICT_DNS cluster only of a dns target
        cluster.type = Cluster.STRICT_DNS
        cluster.dns_lookup_family = Cluster.V4_PREFERRED
        cluster.load_assignment.CopyFrom(_load_assignment(ir.name, (Endpoint(ir.dns.hostname, ir.dns.port),)))
    else:
        # Endpoints travel separately (EDS), so an endpoint change never rebuilds the cluster.
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    if ir.protocol == "HTTP2":
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
        cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
            pack(options))
    if ir.tls is not None:
        cluster.transport_socket.CopyFrom(upstream_socket(ir.tls))
    if (hc := ir.health_check) is not None:
        cluster.health_checks.append(health_check_pb2.HealthCheck(
            timeout=duration(hc.timeout_ms),
            interval=duration(hc.interval_ms),
            healthy_threshold=_U32(value=hc.healthy_threshold),
            unhealthy_threshold=_U32(value=hc.unhealthy_threshold),
            http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path=hc.path),
        ))
    if (cb := ir.circuit_breaker) is not None:
        limits = {f.name: _U32(value=v) for f in dataclasses.fields(cb) if (v := getattr(cb, f.name)) is not None}
        cluster.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(
            thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(**limits)]))
    if (od := ir.outlier_detection) is not None:
        cluster.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=_U32(value=od.consecutive_5xx),
            interval=duration(od.interval_ms),
            base_ejection_time=duration(od.base_ejection_time_ms),
            max_ejection_percent=_U32(value=od.max_ejection_percent),
        ))
    return cluster


@lru_cache(maxsize=65536)
def translate_load_assignment(ir: ClusterIR) -> endpoint_pb2.ClusterLoadAssignment:
    return _load_assignment(ir.name, ir.endpoints)


def _load_assignment(name: str, endpoints: tuple[Endpoint, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                    address=e.address, port_value=e.port))))
            for e in endpoints
        ])] if endpoints else [],
    )
