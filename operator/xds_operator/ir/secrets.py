"""Resolving a Route's or Backend's Secret (and ConfigMap) references into checked SDS secrets (ir.SecretIR)."""

from __future__ import annotations

from ..api.objects import ObjectKey, joined
from ..sources.state import StateStore
from .certificates import (
    CA_KEY,
    CERT_KEY,
    PRIVATE_KEY,
    TLS_SECRET_TYPE,
    InvalidSecret,
    KeyPair,
    Recheck,
    ca_bundle,
    expiry_warning,
    key_pair,
)
from .ir import SecretIR, ca_secret_name, config_map_ca_name, tls_secret_name


class UnusableSecret(Exception):
    """A Secret reference that cannot be used; the message names the Secret and the problem."""


def _data(state: StateStore, namespace: str, name: str) -> tuple[str, dict[str, bytes]]:
    secret = state.secrets.get((namespace, name))
    if secret is None:
        raise UnusableSecret(f"Secret {joined(namespace, name)} not found")
    return secret.get("type") or "Opaque", secret.get("data") or {}


def tls_secret(state: StateStore, namespace: str, name: str,
               recheck: Recheck) -> tuple[SecretIR, KeyPair, list[str]]:
    """The certificate and key of a kubernetes.io/tls Secret, checked at recheck.now (which
    notes when the outcome changes); with warnings."""
    type_, data = _data(state, namespace, name)
    where = f"Secret {joined(namespace, name)}"
    if type_ != TLS_SECRET_TYPE:
        raise UnusableSecret(f"{where} is of type {type_}, not {TLS_SECRET_TYPE}")
    missing = [k for k in (CERT_KEY, PRIVATE_KEY) if not data.get(k)]
    if missing:
        raise UnusableSecret(f"{where} has no {' and no '.join(missing)}")
    try:
        pair = key_pair(data[CERT_KEY], data[PRIVATE_KEY], recheck.now)
    except InvalidSecret as exc:
        recheck.note(exc.validity)
        raise UnusableSecret(f"{where}: {exc}") from None
    recheck.note(pair.validity)
    warnings = []
    if (expiring := expiry_warning(pair.not_after, recheck.now)) is not None:
        warnings.append(f"the certificate of {where} {expiring}")
    secret = SecretIR(tls_secret_name(namespace, name), ObjectKey("Secret", namespace, name),
                      certificate_chain=_text(data[CERT_KEY]), private_key=_text(data[PRIVATE_KEY]))
    return secret, pair, warnings


def ca_secret(state: StateStore, namespace: str, name: str, recheck: Recheck) -> tuple[SecretIR, list[str]]:
    """A Secret's ca.crt as a validation context, checked; with warnings."""
    _, data = _data(state, namespace, name)
    return _ca(ObjectKey("Secret", namespace, name), ca_secret_name(namespace, name), data, recheck)


def ca_config_map(state: StateStore, namespace: str, name: str, recheck: Recheck) -> tuple[SecretIR, list[str]]:
    """A ConfigMap's ca.crt as a validation context, checked as a Secret's is; with warnings."""
    config_map = state.config_maps.get((namespace, name))
    if config_map is None:
        raise UnusableSecret(f"ConfigMap {joined(namespace, name)} not found")
    return _ca(ObjectKey("ConfigMap", namespace, name), config_map_ca_name(namespace, name),
               config_map.get("data") or {}, recheck)


def _ca(source: ObjectKey, sds_name: str, data: dict[str, bytes], recheck: Recheck) -> tuple[SecretIR, list[str]]:
    where = f"{source.kind} {joined(source.namespace, source.name)}"
    if not data.get(CA_KEY):
        raise UnusableSecret(f"{where} has no {CA_KEY}")
    try:
        bundle = ca_bundle(data[CA_KEY], recheck.now)
    except InvalidSecret as exc:
        recheck.note(exc.validity)
        raise UnusableSecret(f"{where}: {exc}") from None
    recheck.note(bundle.validity)
    warnings = []
    if (expiring := expiry_warning(bundle.not_after, recheck.now)) is not None:
        warnings.append(f"a CA certificate of {where} {expiring}")
    return SecretIR(sds_name, source, trusted_ca=_text(data[CA_KEY])), warnings


def _text(pem: bytes) -> str:
    # PEM that `cryptography` parsed is ASCII armour; anything around it is kept as it was.
    return pem.decode("utf-8", errors="replace")
