"""Validation of Route and Backend specs: everything Envoy would reject is caught here.

A spec that passes `validate` translates into configuration that Envoy accepts; that is the
promise which keeps user input from ever causing a NACK. The specs' schemas (route_spec.py,
backend_spec.py) say what is checked; the same declarations make the CRDs (crd.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import model
from .backend_spec import BACKEND_SPEC
from .fields import DNS_1123_LABEL, DNS_NAME, FieldError, Fields
from .objects import UserObject
from .route_spec import ROUTE_SPEC
from .schema import Refused, read_root

_READ_ROUTE = ROUTE_SPEC.reader()
_READ_BACKEND = BACKEND_SPEC.reader()
# Valid input is read by these first, without paths or messages (schema.Node.fast_reader); what
# they refuse is read again by the readers above, which say what is wrong and where.
_FAST_READERS = {"Route": ROUTE_SPEC.fast_reader(), "Backend": BACKEND_SPEC.fast_reader()}


def validate(obj: UserObject) -> tuple[model.RouteSpec | model.BackendSpec | None, list[FieldError]]:
    """The validated spec of a Route or Backend, or None with the reasons."""
    key = obj.key
    fast = _FAST_READERS.get(key.kind)
    if fast is not None and obj.spec is not None and _valid_name(key.namespace, 63, DNS_1123_LABEL.fullmatch) \
            and _valid_name(key.name, 253, DNS_NAME.fullmatch):
        try:
            return fast(obj.spec), []
        except Refused:
            pass
    fields = Fields()
    # Kubernetes' own rules, which files must meet too: Envoy names are made of these two, and
    # one object must never answer for another (see objects.joined).
    fields.namespace(obj.key.namespace, "metadata.namespace")
    fields.object_name(obj.key.name, "metadata.name")
    spec: Any
    if obj.key.kind == "Route":
        spec = read_root(_READ_ROUTE, fields, obj.spec, "spec")
    elif obj.key.kind == "Backend":
        spec = read_root(_READ_BACKEND, fields, obj.spec, "spec")
    else:
        fields.error("kind", f"{obj.key.kind!r} is not Route or Backend")
        spec = None
    if fields.errors:
        return None, fields.errors
    return spec, []




def _valid_name(value: object, max_len: int, fullmatch: Callable[[str], object]) -> bool:
    """What Fields.namespace and Fields.object_name accept (their patterns are ASCII)."""
    return type(value) is str and 0 < len(value) <= max_len and fullmatch(value) is not None
