"""Checking the certificates of Secrets before anything is sent to Envoy (with `cryptography`).

Envoy rejects a whole SDS update for one key that does not match its certificate, or for PEM it
cannot parse; here such a Secret is refused with a reason instead, and only what uses it is left
out. What Envoy would accept but is likely wrong (a certificate about to expire, names that do
not cover a Route's hostnames) is a warning.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

TLS_SECRET_TYPE = "kubernetes.io/tls"
CERT_KEY, PRIVATE_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
EXPIRY_WARNING = datetime.timedelta(days=14)


class InvalidSecret(Exception):
    """A Secret that cannot be used; the message says why (without the Secret's name)."""


@dataclass(frozen=True)
class KeyPair:
    """A checked certificate chain (leaf first) and its private key, PEM as the Secret holds them."""

    chain: bytes
    key: bytes
    names: tuple[str, ...]  # the leaf's DNS names (subjectAltName, else the common name)
    not_after: datetime.datetime


@dataclass(frozen=True)
class CaBundle:
    pem: bytes
    not_after: datetime.datetime  # the earliest expiry in the bundle


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidSecret(f"{what} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidSecret(f"{what} does not parse as PEM certificates ({exc})") from None


def _check_validity(cert: x509.Certificate, what: str, now: datetime.datetime) -> None:
    if cert.not_valid_before_utc > now:
        raise InvalidSecret(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    if cert.not_valid_after_utc <= now:
        raise InvalidSecret(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_bytes(key: object) -> bytes:
    data: bytes = key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return tuple(str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))


@lru_cache(maxsize=4096)
def key_pair(chain_pem: bytes, key_pem: bytes, now: datetime.datetime) -> KeyPair:
    """The checked key pair of a kubernetes.io/tls Secret, or InvalidSecret: the PEM parses, the
    key is the leaf's, each certificate is signed by the next (the chain is in order), and every
    one is valid at `now`."""
    chain = _certificates(chain_pem, CERT_KEY)
    if b"-----BEGIN" not in key_pem:
        raise InvalidSecret(f"{PRIVATE_KEY} holds no PEM private key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSecret(f"{PRIVATE_KEY} does not parse as an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                            ed448.Ed448PrivateKey)):
        raise InvalidSecret(f"{PRIVATE_KEY} is a {type(key).__name__}, not an RSA, ECDSA or EdDSA key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise InvalidSecret(f"{PRIVATE_KEY} is an RSA key of {key.key_size} bits; Envoy needs at least 2048")
    leaf = chain[0]
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise InvalidSecret(f"{PRIVATE_KEY} does not match the certificate in {CERT_KEY}")
    for i, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        if not _signed_by(cert, issuer):
            raise InvalidSecret(f"{CERT_KEY} is not in order: certificate {i + 1} ({cert.subject.rfc4514_string()}) "
                                f"is not signed by certificate {i + 2} ({issuer.subject.rfc4514_string()})")
    for i, cert in enumerate(chain):
        _check_validity(cert, f"certificate {i + 1} of {CERT_KEY} ({cert.subject.rfc4514_string()})", now)
    not_after = min(c.not_valid_after_utc for c in chain)
    return KeyPair(chain_pem, key_pem, dns_names(leaf), not_after)


@lru_cache(maxsize=4096)
def ca_bundle(pem: bytes, now: datetime.datetime) -> CaBundle:
    certs = _certificates(pem, CA_KEY)
    valid = [c for c in certs if c.not_valid_before_utc <= now < c.not_valid_after_utc]
    if not valid:
        _check_validity(certs[0], f"the CA certificate in {CA_KEY} ({certs[0].subject.rfc4514_string()})", now)
    return CaBundle(pem, min(c.not_valid_after_utc for c in valid))


def covers(names: tuple[str, ...], hostname: str) -> bool:
    """Whether a certificate for `names` is valid for `hostname` (RFC 6125: a wildcard stands for
    exactly one left-most label; a wildcard hostname needs a wildcard name)."""
    for name in names:
        if name == hostname:
            return True
        if name.startswith("*.") and not hostname.startswith("*."):
            head, _, rest = hostname.partition(".")
            if head and rest == name[2:]:
                return True
    return False


def expiry_warning(not_after: datetime.datetime, now: datetime.datetime) -> str | None:
    left = not_after - now
    if left < EXPIRY_WARNING:
        return f"expires in {left.days} days, on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    return None


def now_utc() -> datetime.datetime:
    """The time certificates are checked against, to the minute (so the checks' cache works)."""
    return datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
