"""Kubernetes watch events -> the state store. Plain functions, called by the kopf handlers."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Mapping
from typing import Any

from ..api.objects import ObjectKey, UserObject
from .state import StateStore


def apply_object_event(state: StateStore, statuses: dict[ObjectKey, dict[str, Any]], event_type: str, body: Mapping[str, Any]) -> None:
    """A Route or Backend was listed, added, modified or deleted. `statuses` keeps the status the
    object has in the API, so that the status writer writes only what differs."""
    # A deep copy: the build reads it from another thread, long after kopf is done with `body`.
    obj = UserObject.from_manifest(copy.deepcopy(dict(body)), origin="kubernetes")
    if event_type == "DELETED" or (body.get("metadata") or {}).get("deletionTimestamp"):
        state.delete(obj.key)
        statuses.pop(obj.key, None)
        return
    statuses[obj.key] = dict(body.get("status") or {})
    state.put(obj)


def trimmed_service(body: Mapping[str, Any]) -> dict[str, Any]:
    """Only what endpoint resolution reads, so watching every Service stays cheap."""
    return {"spec": {"ports": [dict(p) for p in (body.get("spec") or {}).get("ports") or []]}}


def trimmed_endpoint_slice(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": dict((body.get("metadata") or {}).get("labels") or {})},
        "addressType": body.get("addressType"),
        "ports": [dict(p) for p in body.get("ports") or []],
        "endpoints": [{"addresses": list(e.get("addresses") or []), "conditions": dict(e.get("conditions") or {})}
                      for e in body.get("endpoints") or []],
    }


class InvalidSecretData(ValueError):
    """A Secret's data (or a ConfigMap's binaryData) value that is not base64 (the API server
    refuses it; a file may have it)."""


def trimmed_secret(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret's type and data, decoded: `data` is base64, `stringData` plain text that wins
    over a `data` key of the same name (as the API server merges them on write)."""
    data: dict[str, bytes] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value or ""), validate=True)
        except binascii.Error:
            raise InvalidSecretData(f"data.{key} is not base64") from None
    for key, value in (body.get("stringData") or {}).items():
        data[str(key)] = str(value or "").encode()
    return {"type": body.get("type") or "Opaque", "data": data}


# What the operator reads of a Secret; the rest (and every unrelated Secret: clusters hold thousands
# of Helm release Secrets) is never kept.
SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")
TLS_SECRET_TYPE = "kubernetes.io/tls"


def kept_secret(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A watched Secret as the state store keeps it: kubernetes.io/tls ones and those with a
    ca.crt (the only other kind a Route or Backend can use), with just those keys; None for
    every other Secret."""
    data = body.get("data") or {}
    type_ = body.get("type") or "Opaque"
    if type_ != TLS_SECRET_TYPE and "ca.crt" not in data:
        return None
    try:
        return trimmed_secret({"type": type_, "data": {k: data[k] for k in SECRET_KEYS if k in data}})
    except InvalidSecretData:
        return None  # the API server stores only base64: not reached


CONFIG_MAP_CA_KEY = "ca.crt"


def trimmed_config_map(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ConfigMap's CA bundle, its only key the operator reads: `data` holds text, `binaryData`
    base64 (the API server refuses a key in both; here `data` wins)."""
    data: dict[str, bytes] = {}
    binary = (body.get("binaryData") or {}).get(CONFIG_MAP_CA_KEY)
    if binary is not None:
        try:
            data[CONFIG_MAP_CA_KEY] = base64.b64decode(str(binary), validate=True)
        except binascii.Error:
            raise InvalidSecretData(f"binaryData.{CONFIG_MAP_CA_KEY} is not base64") from None
    text = (body.get("data") or {}).get(CONFIG_MAP_CA_KEY)
    if text is not None:
        data[CONFIG_MAP_CA_KEY] = str(text).encode()
    return {"data": data}


def apply_service_event(state: StateStore, event_type: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    manifest = None if event_type == "DELETED" else trimmed_service(body)
    state.put_service(meta.get("namespace", ""), meta.get("name", ""), manifest)


def apply_endpoint_slice_event(state: StateStore, event_type: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    manifest = None if event_type == "DELETED" else trimmed_endpoint_slice(body)
    state.put_endpoint_slice(meta.get("namespace", ""), meta.get("name", ""), manifest)
