"""The demo's throwaway certificates: a CA made at start, and a certificate it signs for the
demo's HTTPS hostname. The CA's key is never written anywhere: nothing else can be signed with it."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any demo, short enough that a leaked copy is soon worthless.
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class DemoCertificates:
    ca_pem: str
    certificate_pem: str  # for the hostname (and 127.0.0.1), signed by the CA
    key_pem: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_demo_certificates(hostname: str) -> DemoCertificates:
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(minutes=5), now + VALIDITY  # a little clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("xds-operator demo CA (throwaway)")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (x509.CertificateBuilder().subject_name(_name(hostname)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return DemoCertificates(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
        certificate_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode())


def tls_secret_manifest(name: str, namespace: str, certificates: DemoCertificates) -> str:
    """A kubernetes.io/tls Secret (stringData), as the file source and kubectl read it."""

    def block(pem: str) -> str:
        return "".join(f"    {line}\n" for line in pem.strip().splitlines())

    return (f"# The demo's throwaway certificate for its HTTPS listener, made at start and signed by the CA in\n"
            f"# ca.crt beside this file (whose key was not kept).\n"
            f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
            f"type: kubernetes.io/tls\nstringData:\n"
            f"  tls.crt: |\n{block(certificates.certificate_pem)}  tls.key: |\n{block(certificates.key_pem)}")
