"""Certificates made in the tests with `cryptography`: a CA, and leaves it signs, as PEM."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


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


def make_ca(common_name: str = "test CA", *, not_before: datetime.datetime = NOW - DAY,
            not_after: datetime.datetime = NOW + 3650 * DAY, issuer: Issued | None = None) -> Issued:
    """A self-signed CA, or an intermediate one signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = issuer.cert.subject if issuer is not None else _name(common_name)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(issuer.key if issuer is not None else key, hashes.SHA256()))
    return Issued(cert, key)


def make_leaf(ca: Issued, *names: str, not_before: datetime.datetime = NOW - DAY,
              not_after: datetime.datetime = NOW + 365 * DAY, client: bool = False,
              uris: Sequence[str] = (), ips: Sequence[str] = ()) -> Issued:
    """A leaf signed by `ca` for DNS `names` (and URI and IP address SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(names[0] if names else "client"))
               .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def tls_secret(name: str, leaf: Issued, *, namespace: str = "default", chain: bytes = b"",
               ca: bytes | None = None) -> dict:
    """A kubernetes.io/tls Secret manifest (base64 data, as the API returns it)."""
    data = {"tls.crt": leaf.cert_pem + chain, "tls.key": leaf.key_pem}
    if ca is not None:
        data["ca.crt"] = ca
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def ca_secret(name: str, ca: Issued, *, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": namespace},
            "stringData": {"ca.crt": ca.cert_pem.decode()}}


def ca_config_map(name: str, ca: Issued, *, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": ca.cert_pem.decode()}}
