"""Transport sockets: TLS termination on a listener's SNI chains, TLS origination to clusters.
Certificates are always SDS references (over ADS), never inline: rotating one is an SDS update
that neither drains a listener nor rebuilds a cluster."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from ..ir.ir import DownstreamTlsIR, UpstreamTlsIR
from .common import ads_config_source, pack

TLS_SOCKET = "envoy.transport_sockets.tls"
_VERSIONS = {"1.2": common_pb2.TlsParameters.TLSv1_2, "1.3": common_pb2.TlsParameters.TLSv1_3}
_SAN = common_pb2.SubjectAltNameMatcher


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def downstream_socket(tls: DownstreamTlsIR) -> base_pb2.TransportSocket:
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=_VERSIONS[tls.min_version],
                                            tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3),
        tls_certificate_sds_secret_configs=[sds(tls.certificate_secret)],
        alpn_protocols=list(tls.alpn),
    )
    if tls.ca_secret is not None:
        common.validation_context_sds_secret_config.CopyFrom(sds(tls.ca_secret))
    # (Built last: the constructor copies `common`.)
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if tls.ca_secret is not None:
        context.require_client_certificate.CopyFrom(wrappers_pb2.BoolValue(value=True))
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))


def upstream_socket(tls: UpstreamTlsIR) -> base_pb2.TransportSocket:
    common = tls_pb2.CommonTlsContext(alpn_protocols=list(tls.alpn))
    if tls.client_secret is not None:
        common.tls_certificate_sds_secret_configs.append(sds(tls.client_secret))
    checks = common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[
        _SAN(san_type=_SAN.DNS, matcher=string_pb2.StringMatcher(exact=name)) for name in tls.subject_alt_names])
    if tls.ca_secret is not None:
        common.combined_validation_context.CopyFrom(tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=checks, validation_context_sds_secret_config=sds(tls.ca_secret)))
    else:
        checks.system_root_certs.SetInParent()
        common.validation_context.CopyFrom(checks)
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if tls.sni:
        context.sni = tls.sni
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(context))
