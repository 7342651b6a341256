"""Kubernetes watch events -> the state store. Plain functions, called by the kopf handlers."""

from __future__ import annotations

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


def apply_service_event(state: StateStore, event_type: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    manifest = None if event_type == "DELETED" else trimmed_service(body)
    state.put_service(meta.get("namespace", ""), meta.get("name", ""), manifest)


def apply_endpoint_slice_event(state: StateStore, event_type: str, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    manifest = None if event_type == "DELETED" else trimmed_endpoint_slice(body)
    state.put_endpoint_slice(meta.get("namespace", ""), meta.get("name", ""), manifest)
