"""An immutable set of Envoy resources with content-hash versions.

Versions are hashes of the serialized resources, so the same config has the same version in
every process: a restarted server recognises what a reconnecting Envoy already runs.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from google.protobuf import any_pb2
from google.protobuf.message import Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from ..translate.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, LISTENER, PUSH_ORDER, ROUTE, SECRET

WILDCARD = None  # a subscription to every resource of a type

# The version of a set of endpoint sets or route configurations lists a digest per resource,
# so a SotW client's version says which resources it has (see SotwStream._adopt).
_DIGEST_CHARS = 8  # 6 bytes of blake2b, base64url


@dataclass(frozen=True)
class VersionedResource:
    name: str
    version: str
    message: Message
    packed: any_pb2.Any  # packed once here, then shared by every stream that sends it

    @cached_property
    def digest(self) -> str:
        """Of name and version: one entry of the version of a set of them (version_of). Made
        when first needed (endpoint sets and route configurations only)."""
        return _pair_digest(self.name, self.version)


def _pair_digest(name: str, version: str) -> str:
    data = hashlib.blake2b(f"{name}\0{version}".encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(data).decode()


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def version_of(type_url: str, resources: Iterable[VersionedResource]) -> str:
    """The version of a set of resources: changes whenever any member or the membership does.

    Listeners and clusters always travel whole, so one hash names their set. Endpoint sets and
    route configurations are subscribed to by name, and a SotW client that drops names gets no
    response (nothing can be removed that way), so it goes on reporting the version of a larger
    set: their version is the list of the members' digests, from which a restarted server can
    still tell which of the resources it would send the client already has. It costs 8 bytes per
    resource in each request, which carries every subscribed name anyway."""
    if type_url not in FULL_STATE_TYPES:
        return "".join(r.digest for r in sorted(resources, key=lambda r: r.name))  # digests are cached
    return version_of_pairs(type_url, {r.name: r.version for r in resources})


def version_of_pairs(type_url: str, versions: Mapping[str, str]) -> str:
    """version_of for resources known only by name and version (what a proxy ACKed)."""
    if type_url not in FULL_STATE_TYPES:
        return "".join(_pair_digest(name, versions[name]) for name in sorted(versions))
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(versions):
        h.update(f"{name}\0{versions[name]}\n".encode())
    return h.hexdigest()


def digests_in(version: str) -> frozenset[str]:
    """The resource digests listed in a version of endpoint sets or route configurations."""
    if len(version) % _DIGEST_CHARS:
        return frozenset()
    return frozenset(version[i:i + _DIGEST_CHARS] for i in range(0, len(version), _DIGEST_CHARS))


def versioned(type_url: str, name: str, message: Message) -> VersionedResource:
    data = message.SerializeToString(deterministic=True)
    packed = any_pb2.Any(type_url=type_url, value=data)
    return VersionedResource(name, _digest(data), message, packed)


class ResourceMemo:
    """Reuses the versioned form of a message seen in this or the previous build.

    The translators are memoised and return the very same message object for unchanged IR,
    so after a one-object change only the changed resources are serialized and hashed again.
    Entries are keyed by object identity and checked with `is`, so a recycled id never matches.
    """

    def __init__(self) -> None:
        self._previous: dict[tuple[int, str, str], tuple[Message, VersionedResource]] = {}
        self._current: dict[tuple[int, str, str], tuple[Message, VersionedResource]] = {}

    def versioned(self, type_url: str, name: str, message: Message) -> VersionedResource:
        key = (id(message), type_url, name)
        hit = self._current.get(key) or self._previous.get(key)
        if hit is None or hit[0] is not message:
            hit = (message, versioned(type_url, name, message))
        self._current[key] = hit
        return hit[1]

    def rotate(self) -> None:
        """Called after each build: what the build did not use is forgotten."""
        self._previous, self._current = self._current, {}


class InconsistentSnapshot(ValueError):
    pass


class Snapshot:
    def __init__(self, resources: Mapping[str, Mapping[str, VersionedResource]]):
        self._resources = MappingProxyType({t: MappingProxyType(dict(resources.get(t, {}))) for t in PUSH_ORDER})
        self.versions = MappingProxyType({t: version_of(t, rs.values()) for t, rs in self._resources.items()})
        # One version for the whole snapshot, for logs and delta's system_version_info.
        self.version = _digest("".join(self.versions[t] for t in PUSH_ORDER).encode())
        # Versions of named subscriptions: many proxies of a group ask for the same names.
        self._subscription_versions: dict[tuple[str, frozenset[str]], str] = {}
        self._digests: dict[str, frozenset[str]] = {}

    @classmethod
    def from_messages(cls, messages: Mapping[str, Mapping[str, Message]],
                      memo: ResourceMemo | None = None) -> "Snapshot":
        make = memo.versioned if memo is not None else versioned
        return cls({t: {n: make(t, n, m) for n, m in ms.items()} for t, ms in messages.items()})

    def resources(self, type_url: str) -> Mapping[str, VersionedResource]:
        return self._resources.get(type_url, MappingProxyType({}))

    def select(self, type_url: str, names: frozenset[str] | None) -> dict[str, VersionedResource]:
        """The resources of a subscription: all of them (wildcard) or the named ones that exist."""
        available = self.resources(type_url)
        if names is WILDCARD:
            return dict(available)
        return {n: available[n] for n in names if n in available}

    def version_for(self, type_url: str, names: frozenset[str] | None) -> str:
        """The version of a subscription; for a wildcard, the precomputed one of the type."""
        if names is WILDCARD:
            return self.versions[type_url]
        key = (type_url, names)
        version = self._subscription_versions.get(key)
        if version is None:
            version = self._subscription_versions[key] = version_of(type_url, self.select(type_url, names).values())
        return version

    def digests(self, type_url: str) -> frozenset[str]:
        """The digests of every resource of a type (made once per snapshot)."""
        found = self._digests.get(type_url)
        if found is None:
            found = self._digests[type_url] = frozenset(r.digest for r in self.resources(type_url).values())
        return found

    def check_consistent(self) -> None:
        """Every route configuration a listener names, and every EDS cluster's endpoints, exist
        (go-control-plane's Consistent()): Envoy would otherwise wait on them forever."""
        missing = []
        for name, resource in self.resources(LISTENER).items():
            listener = resource.message
            assert isinstance(listener, listener_pb2.Listener)
            for chain in listener.filter_chains:
                if chain.HasField("transport_socket"):
                    missing.extend(self._missing_secrets(f"listener {name}", chain.transport_socket,
                                                         tls_pb2.DownstreamTlsContext()))
                for f in chain.filters:
                    if f.name == "envoy.filters.network.http_connection_manager":
                        hcm = hcm_pb2.HttpConnectionManager()
                        f.typed_config.Unpack(hcm)
                        rds = hcm.rds.route_config_name
                        if rds and rds not in self.resources(ROUTE):
                            missing.append(f"listener {name} names route configuration {rds}, which is missing")
        for name, resource in self.resources(CLUSTER).items():
            cluster = resource.message
            assert isinstance(cluster, cluster_pb2.Cluster)
            if cluster.HasField("transport_socket"):
                missing.extend(self._missing_secrets(f"cluster {name}", cluster.transport_socket,
                                                     tls_pb2.UpstreamTlsContext()))
            if cluster.HasField("eds_cluster_config"):
                eds_name = cluster.eds_cluster_config.service_name or name
                if eds_name not in self.resources(ENDPOINT):
                    missing.append(f"EDS cluster {name} has no load assignment {eds_name}")
        if missing:
            raise InconsistentSnapshot("; ".join(missing))

    def _missing_secrets(self, what: str, socket: Any, context: Any) -> list[str]:
        """The SDS secrets a TLS transport socket names that the snapshot lacks: Envoy would keep
        the listener or cluster warming."""
        socket.typed_config.Unpack(context)
        common = context.common_tls_context
        names = [c.name for c in common.tls_certificate_sds_secret_configs]
        if common.HasField("validation_context_sds_secret_config"):
            names.append(common.validation_context_sds_secret_config.name)
        if common.HasField("combined_validation_context"):
            names.append(common.combined_validation_context.validation_context_sds_secret_config.name)
        return [f"{what} names secret {n}, which is missing" for n in names if n not in self.resources(SECRET)]
