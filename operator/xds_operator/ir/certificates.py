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
    """A Secret that cannot be used; the message says why (without the Secret's name). `validity`:
    its certificates', when it is their time that makes it unusable (not valid yet)."""

    def __init__(self, message: str, validity: tuple[Validity, ...] = ()) -> None:
        super().__init__(message)
        self.validity = validity


@dataclass(frozen=True)
class Validity:
    """When one certificate of a Secret is valid, and what to call it in a message."""

    what: str
    not_before: datetime.datetime
    not_after: datetime.datetime


@dataclass(frozen=True)
class KeyPair:
    """A checked certificate chain (leaf first) and its private key, PEM as the Secret holds them."""

    chain: bytes
    key: bytes
    names: tuple[str, ...]  # the leaf's DNS names (subjectAltName, else the common name)
    not_after: datetime.datetime
    validity: tuple[Validity, ...] = ()


@dataclass(frozen=True)
class CaBundle:
    pem: bytes
    not_after: datetime.datetime  # the earliest expiry in the bundle (of the certificates valid now)
    validity: tuple[Validity, ...] = ()


class Recheck:
    """The earliest instant after `now` at which a check made at `now` may come out otherwise: a
    certificate becoming valid, expiring, or coming within EXPIRY_WARNING of its expiry. The build
    is made again then (controlplane/controller.py), so that an expiry while nothing else changes
    still takes the certificate out of Envoy and a warning still appears."""

    def __init__(self, now: datetime.datetime) -> None:
        self.now = now
        self.at: datetime.datetime | None = None

    def note(self, validity: tuple[Validity, ...]) -> None:
        for v in validity:
            for instant in (v.not_before, v.not_after - EXPIRY_WARNING, v.not_after):
                if instant > self.now and (self.at is None or instant < self.at):
                    self.at = instant


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidSecret(f"{what} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidSecret(f"{what} does not parse as PEM certificates ({exc})") from None


def _validity(cert: x509.Certificate, what: str) -> Validity:
    return Validity(what, cert.not_valid_before_utc, cert.not_valid_after_utc)


def _check_validity(validity: tuple[Validity, ...], v: Validity, now: datetime.datetime) -> None:
    if v.not_before > now:
        raise InvalidSecret(f"{v.what} is not valid before {v.not_before:%Y-%m-%d %H:%M:%S} UTC", validity)
    if v.not_after <= now:
        raise InvalidSecret(f"{v.what} expired on {v.not_after:%Y-%m-%d %H:%M:%S} UTC", validity)


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


def key_pair(chain_pem: bytes, key_pem: bytes, now: datetime.datetime) -> KeyPair:
    """The checked key pair of a kubernetes.io/tls Secret, or InvalidSecret: the PEM parses, the
    key is the leaf's, each certificate is signed by the next (the chain is in order), and every
    one is valid at `now`."""
    pair = _parsed_key_pair(chain_pem, key_pem)
    for v in pair.validity:
        _check_validity(pair.validity, v, now)
    return pair


@lru_cache(maxsize=4096)
def _parsed_key_pair(chain_pem: bytes, key_pem: bytes) -> KeyPair:
    """All checks but the time's, which are cheap and made at every build: parsing is cached."""
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
    validity = tuple(_validity(cert, f"certificate {i + 1} of {CERT_KEY} ({cert.subject.rfc4514_string()})")
                     for i, cert in enumerate(chain))
    return KeyPair(chain_pem, key_pem, dns_names(leaf), min(v.not_after for v in validity), validity)


def ca_bundle(pem: bytes, now: datetime.datetime) -> CaBundle:
    """The CA certificates of a ca.crt, or InvalidSecret: the PEM parses and one at least is valid at `now`."""
    validity = _parsed_ca_bundle(pem)
    valid = [v for v in validity if v.not_before <= now < v.not_after]
    if not valid:
        _check_validity(validity, validity[0], now)
    return CaBundle(pem, min(v.not_after for v in valid), validity)


@lru_cache(maxsize=4096)
def _parsed_ca_bundle(pem: bytes) -> tuple[Validity, ...]:
    return tuple(_validity(cert, f"the CA certificate in {CA_KEY} ({cert.subject.rfc4514_string()})")
                 for cert in _certificates(pem, CA_KEY))


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
    if left <= EXPIRY_WARNING:  # from the instant Recheck notes on
        return f"expires in {left.days} days, on {not_after:%Y-%m-%d %H:%M:%S} UTC"
    return None


def now_utc() -> datetime.datetime:
    """The time certificates are checked against (to the microsecond: only parsing is cached)."""
    return datetime.datetime.now(datetime.UTC)
