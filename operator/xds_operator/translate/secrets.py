"""SDS Secrets: a certificate with its key, or a CA bundle to validate peers with."""

from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from ..ir.ir import SecretIR


@lru_cache(maxsize=65536)
def translate_secret(ir: SecretIR) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=ir.name)
    if ir.trusted_ca:
        secret.validation_context.CopyFrom(common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=ir.trusted_ca)))
    else:
        secret.tls_certificate.CopyFrom(common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=ir.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=ir.private_key)))
    return secret
