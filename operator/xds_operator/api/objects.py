"""Kubernetes-shaped objects as the sources hand them to the state store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API_GROUP = "xds-operator.dev"
VERSION = "v1alpha1"  # the one version served (and stored)
API_VERSION = f"{API_GROUP}/{VERSION}"
KINDS = ("Backend", "Route")


def joined(*parts: object) -> str:
    """Parts joined with "/", each with "%" written as %25 and "/" as %2F first, so that different
    parts never make the same text: namespace "a/b" and name "c" give a%2Fb/c, namespace "a" and
    name "b/c" give a/b%2Fc. Kubernetes names and namespaces contain neither character (and
    validation refuses them in files too), so theirs read as the plain namespace/name. Used for
    Envoy names (ir.cluster_name, ir.route_entry_name) and for an object key as text (/status,
    logs, validate), so an object with a bad name is still reported under a key of its own."""
    return "/".join(str(part).replace("%", "%25").replace("/", "%2F") for part in parts)


@dataclass(frozen=True)
class ObjectKey:
    """Identity of a user object: kind, namespace, name."""

    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        # Keys are looked up in dicts many times per build: hash once, not once per lookup.
        object.__setattr__(self, "_hash", hash((self.kind, self.namespace, self.name)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined, no-any-return]

    def __str__(self) -> str:
        return joined(self.kind, self.namespace, self.name)

    def __lt__(self, other: ObjectKey) -> bool:
        # Ordered as text: a file can give a name that is not a string (name: 123), which validation
        # refuses, but which must not make sorting the keys of every object raise.
        return self.sort_key() < other.sort_key()

    def sort_key(self) -> tuple[str, str, str, str]:
        """The order of __lt__, as a key for sorted(): far cheaper than comparing keys."""
        return str(self.kind), str(self.namespace), str(self.name), type(self.name).__name__


@dataclass(frozen=True, slots=True)
class UserObject:
    """One Route or Backend as written by the user (spec not yet validated)."""

    key: ObjectKey
    spec: Any
    generation: int = 1
    # Where it came from, for log lines and the validate command (file:line, or "kubernetes").
    origin: str = ""
    # Kubernetes uid, for Events about the object (empty for files).
    uid: str = field(default="", compare=False)

    @classmethod
    def from_manifest(cls, doc: dict[str, Any], *, default_namespace: str = "default", origin: str = "") -> UserObject:
        meta = doc.get("metadata") or {}
        key = ObjectKey(doc.get("kind", ""), meta.get("namespace") or default_namespace, meta.get("name", ""))
        return cls(
            key=key,
            spec=doc.get("spec"),
            generation=int(meta.get("generation") or 1),
            origin=origin,
            uid=meta.get("uid") or "",
        )
