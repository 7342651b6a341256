"""Throwaway certificates made with `cryptography`: a CA and the leaves it signs.

The demo makes a CA at start and a certificate it signs for its HTTPS hostname; the CA's key is
never written anywhere, so nothing else can be signed with it. The tests make theirs here too.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any demo, short enough that a leaked copy is soon worthless.
DEMO_VALIDITY = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, *, not_before: datetime.datetime, not_after: datetime.datetime,
            issuer: Issued | None = None, path_length: int | None = None) -> Issued:
    """A self-signed CA, or an intermediate one signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = issuer.cert.subject if issuer is not None else _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer.key if issuer is not None else key, hashes.SHA256()))
    return Issued(cert, key)


def make_leaf(ca: Issued, *names: str, not_before: datetime.datetime, not_after: datetime.datetime,
              client: bool = False, uris: Sequence[str] = (), ips: Sequence[str] = ()) -> Issued:
    """A leaf signed by `ca` for DNS `names` (and URI and IP address SANs), for a server or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(names[0] if names else "client"))
               .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class DemoCertificates:
    ca_pem: str
    certificate_pem: str  # for the hostname (and 127.0.0.1), signed by the CA
    key_pem: str


def make_demo_certificates(hostname: str) -> DemoCertificates:
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - CLOCK_SKEW, now + DEMO_VALIDITY
    ca = make_ca("xds-operator demo CA (throwaway)", path_length=0, not_before=not_before, not_after=not_after)
    leaf = make_leaf(ca, hostname, ips=["127.0.0.1"], not_before=not_before, not_after=not_after)
    return DemoCertificates(ca_pem=ca.cert_pem.decode(), certificate_pem=leaf.cert_pem.decode(),
                            key_pem=leaf.key_pem.decode())


def tls_secret_manifest(name: str, namespace: str, certificates: DemoCertificates) -> str:
    """A kubernetes.io/tls Secret (stringData), as the file source and kubectl read it."""

    def block(pem: str) -> str:
        return "".join(f"    {line}\n" for line in pem.strip().splitlines())

    return (f"# The demo's throwaway certificate for its HTTPS listener, made at start and signed by the CA in\n"
            f"# ca.crt beside this file (whose key was not kept).\n"
            f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
            f"type: kubernetes.io/tls\nstringData:\n"
            f"  tls.crt: |\n{block(certificates.certificate_pem)}  tls.key: |\n{block(certificates.key_pem)}")
