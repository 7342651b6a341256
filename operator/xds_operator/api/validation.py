"""Validation of Route and Backend specs: everything Envoy would reject is caught here.

A spec that passes `validate` translates into configuration that Envoy accepts; that is the
promise which keeps user input from ever causing a NACK. The specs' schemas (route_spec.py,
backend_spec.py) say what is checked; the same declarations make the CRDs (crd.py).
"""

from __future__ import annotations

from typing import Any

from . import model
from .backend_spec import BACKEND_SPEC
from .fields import FieldError, Fields
from .objects import UserObject
from .route_spec import ROUTE_SPEC
from .schema import read_root

_READ_ROUTE = ROUTE_SPEC.reader()
_READ_BACKEND = BACKEND_SPEC.reader()


def validate(obj: UserObject) -> tuple[model.RouteSpec | model.BackendSpec | None, list[FieldError]]:
    """The validated spec of a Route or Backend, or None with the reasons."""
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


