"""An immutable set of Envoy resources with content-hash versions.

Versions are hashes of the serialized resources, so the same config has the same version in
every process: a restarted server recognises what a reconnecting Envoy already runs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress
from operator import is_not
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from .. import translate as translation  # its functions looked up at call time (tests patch them there)
from ..ir.ir import ClusterIR, ListenerIR, ProxyConfigIR, VirtualHostIR
from ..translate import TranslateOptions
from ..translate.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, LISTENER, PUSH_ORDER, ROUTE, SECRET, VIRTUAL_HOST
from ..translate.routes import (
    named_virtual_host,
    route_configuration_bytes,
    vhds_name,
    vhds_route_configuration,
    virtual_host_body,
    virtual_host_record,
)

_MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster, ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration, SECRET: secret_pb2.Secret,
    VIRTUAL_HOST: route_components_pb2.VirtualHost,
}

WILDCARD = None  # a subscription to every resource of a type
PROTOCOLS = ("sotw", "delta")  # what Snapshot.for_protocol takes (StreamInfo.protocol)
_RESPONSES_KEPT = 64  # per snapshot (Snapshot.keep_response)

# The version of a set of endpoint sets or route configurations lists a digest per resource,
# so a SotW client's version says which resources it has (see SotwStream._adopt).
_DIGEST_CHARS = 8  # 6 bytes of blake2b, base64url


@dataclass(frozen=True)
class VersionedResource:
    name: str
    version: str
    packed: any_pb2.Any  # packed once here, then shared by every stream that sends it
    # The message it was serialized from; None for one assembled from serialized pieces
    # (route configurations), which `message` parses when something inspects it.
    built: Message | None = field(default=None, compare=False, repr=False)

    @cached_property
    def message(self) -> Message:
        if self.built is not None:
            return self.built
        parsed = _MESSAGE_TYPES[self.packed.type_url]()
        parsed.ParseFromString(self.packed.value)
        return parsed

    @cached_property
    def digest(self) -> str:
        """Of name and version: one entry of the version of a set of them (version_of). Made
        when first needed (endpoint sets and route configurations only)."""
        return _pair_digest(self.name, self.version)


def vhds_namespace(name: str) -> str:
    """The route configuration a VHDS resource name belongs to (Envoy's namespace matching)."""
    return name.rpartition("/")[0]


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
    return VersionedResource(name, _digest(data), packed, message)


def versioned_bytes(type_url: str, name: str, data: bytes) -> VersionedResource:
    """Like versioned(), for a resource already serialized (deterministically)."""
    return VersionedResource(name, _digest(data), any_pb2.Any(type_url=type_url, value=data))


# Clusters and endpoint sets by name, and the version of each of the two sets.
_ClusterSet = tuple[Mapping[str, VersionedResource], Mapping[str, VersionedResource], str, str]


@dataclass(frozen=True)
class RouteTable:
    """A plain route configuration whole (SotW), and its virtual hosts as VHDS resources (delta)."""

    whole: VersionedResource
    virtual_hosts: Mapping[str, VersionedResource]


class ResourceMemo:
    """Reuses the versioned (serialized, hashed) form of what this or the previous build made.

    The Builder hands over the very same IR objects for unchanged objects (ClusterIR,
    VirtualHostIR, even the same tuple of clusters), so reuse is found by identity: after a
    one-object change only what changed is translated, serialized and hashed again. Entries hold
    the object they were made from and are checked with `is`, so a recycled id never matches.
    """

    def __init__(self) -> None:
        self._previous: dict[tuple[object, ...], tuple[object, Any]] = {}
        self._current: dict[tuple[object, ...], tuple[object, Any]] = {}
        # The last cluster list made (for every group: groups usually share most clusters).
        self._last_clusters: tuple[tuple[ClusterIR, ...], _ClusterSet] | None = None

    def _get(self, key: tuple[object, ...], source: object) -> Any:
        hit = self._current.get(key) or self._previous.get(key)
        if hit is None or hit[0] is not source:
            return None
        self._current[key] = hit
        return hit[1]

    def _put(self, key: tuple[object, ...], source: object, value: Any) -> Any:
        self._current[key] = (source, value)
        return value

    def versioned(self, type_url: str, name: str, message: Message) -> VersionedResource:
        key = (id(message), type_url, name)
        found: VersionedResource | None = self._get(key, message)
        return found if found is not None else self._put(key, message, versioned(type_url, name, message))

    def cluster_set(self, clusters: tuple[ClusterIR, ...]) -> _ClusterSet:
        """The clusters and endpoint sets of a cluster list, with their versions. The same tuple
        as last time is answered whole; another one reuses the translations of the ClusterIR
        objects the last one had (one Backend changed: one cluster translated again)."""
        last = self._last_clusters
        if last is not None and last[0] is clusters:
            return last[1]
        reusable: dict[str, tuple[ClusterIR, VersionedResource, VersionedResource | None]] = {}
        if last is not None:
            old_clusters, old_endpoints = last[1][0], last[1][1]
            reusable = {c.name: (c, old_clusters[c.name], old_endpoints.get(c.name)) for c in last[0]}
        made_clusters: dict[str, VersionedResource] = {}
        made_endpoints: dict[str, VersionedResource] = {}
        for c in clusters:
            old = reusable.get(c.name)
            if old is not None and old[0] is c:
                made_clusters[c.name] = old[1]
                if old[2] is not None:
                    made_endpoints[c.name] = old[2]
                continue
            made_clusters[c.name] = versioned(CLUSTER, c.name, translation.translate_cluster(c))
            if c.discovery == "EDS":
                made_endpoints[c.name] = versioned(ENDPOINT, c.name, translation.translate_load_assignment(c))
        made = (MappingProxyType(made_clusters), MappingProxyType(made_endpoints),
                version_of(CLUSTER, made_clusters.values()), version_of(ENDPOINT, made_endpoints.values()))
        self._last_clusters = (clusters, made)
        return made

    def route_table(self, listener: ListenerIR) -> RouteTable:
        """The plain route configuration of a listener and its virtual hosts as VHDS resources.
        The previous table of the same name lends the pieces of the virtual hosts that are the
        same objects as before, found by a pairwise identity check in C (map/compress), so a
        one-Route change serializes and hashes one virtual host."""
        key = ("routes", listener.name)
        earlier = self._current.get(key) or self._previous.get(key)
        vhs = listener.virtual_hosts
        if earlier is not None and earlier[0] is vhs:
            self._current[key] = earlier
            return earlier[1][1]  # type: ignore[no-any-return]
        # Per virtual host, in order: its RouteConfiguration.virtual_hosts element (SotW), and
        # by VHDS name its resource (delta).
        records: list[bytes]
        vhds: dict[str, VersionedResource]
        if earlier is not None and len(earlier[0]) == len(vhs):  # type: ignore[arg-type]
            old_vhs, (old_records, old_table) = earlier
            records, vhds = list(old_records), dict(old_table.virtual_hosts)
            changed = list(compress(range(len(vhs)), map(is_not, old_vhs, vhs)))  # type: ignore[call-overload]
            for i in changed:  # (all old names out first: a name may move to another position)
                del vhds[vhds_name(listener.name, old_vhs[i])]  # type: ignore[index]
            for i in changed:
                records[i], resource = self._pieces(listener.name, vhs[i])
                vhds[resource.name] = resource
        else:
            known: dict[int, tuple[bytes, VersionedResource]] = {}
            if earlier is not None:
                old_vhs, (old_records, old_table) = earlier
                known = {id(vh): (record, old_table.virtual_hosts[vhds_name(listener.name, vh)])
                         for vh, record in zip(old_vhs, old_records, strict=True)}  # type: ignore[call-overload]
            pieces = [known.get(id(vh)) or self._pieces(listener.name, vh) for vh in vhs]
            records = [record for record, _ in pieces]
            vhds = {resource.name: resource for _, resource in pieces}
        table = RouteTable(versioned_bytes(ROUTE, listener.name, route_configuration_bytes(listener.name, records)),
                           MappingProxyType(vhds))
        # The old tuple stays referenced until this entry is replaced, so its ids stay valid.
        self._put(key, vhs, (records, table))
        return table

    @staticmethod
    def _pieces(route_config: str, vh: VirtualHostIR) -> tuple[bytes, VersionedResource]:
        """A virtual host's RouteConfiguration.virtual_hosts element and its VHDS resource:
        serialized once, named twice."""
        body = virtual_host_body(vh)
        name = vhds_name(route_config, vh)
        return (virtual_host_record(named_virtual_host(vh.name, body)),
                versioned_bytes(VIRTUAL_HOST, name, named_virtual_host(name, body)))

    def rotate(self) -> None:
        """Called after each build: what the build did not use is forgotten."""
        self._previous, self._current = self._current, {}


def _read_only(resources: Mapping[str, VersionedResource]) -> Mapping[str, VersionedResource]:
    """A read-only view; one already read-only is shared, not copied (snapshots share them)."""
    return resources if isinstance(resources, MappingProxyType) else MappingProxyType(dict(resources))


class InconsistentSnapshot(ValueError):
    pass


class Snapshot:
    def __init__(self, resources: Mapping[str, Mapping[str, VersionedResource]],
                 known_versions: Mapping[str, str] = MappingProxyType({})) -> None:
        """`known_versions`: version_of() of some of the types' resources, already computed."""
        self._resources = MappingProxyType({t: _read_only(resources.get(t, {})) for t in PUSH_ORDER})
        self.versions = MappingProxyType({t: known_versions.get(t) or version_of(t, rs.values())
                                          for t, rs in self._resources.items()})
        self._clusters_consistent = False
        # One version for the whole snapshot, for logs and delta's system_version_info.
        self.version = _digest("".join(self.versions[t] for t in PUSH_ORDER).encode())
        # Versions of named subscriptions: many proxies of a group ask for the same names.
        self._subscription_versions: dict[tuple[str, frozenset[str]], str] = {}
        # Subscriptions and their resources, one object each however many streams hold them.
        self._subscriptions: dict[tuple[str, frozenset[str]], frozenset[str]] = {}
        self._selections: dict[tuple[str, frozenset[str]], Mapping[str, VersionedResource]] = {}
        self._digests: dict[str, frozenset[str]] = {}
        self._delta: Snapshot | None = None  # for_protocol("delta")
        self._vhds_selections: dict[frozenset[str], Mapping[str, VersionedResource]] = {}
        # changes_since(): id(earlier) -> (earlier, changed, gone); `earlier` kept so its id stays its own
        self._changes_since: dict[int, tuple[Mapping[str, VersionedResource], frozenset[str], frozenset[str]]] = {}
        # Responses made from this snapshot (without their nonces), copied by every stream that
        # sends the same (sotw.py, delta.py), by what determines their content.
        self.responses: dict[tuple[object, ...], Message] = {}
        self._version_maps: dict[str, Mapping[str, str]] = {}
        # Delta: (response key, the client table before) -> (that table, the table after).
        self._client_tables: dict[tuple[object, int], tuple[Mapping[str, str], Mapping[str, str]]] = {}

    def version_map(self, type_url: str) -> Mapping[str, str]:
        """Name -> version of every resource of the type (read-only), made once: a reconnecting
        delta client's initial_resource_versions are compared with it whole (in C) before name
        by name, and the streams that have all of it share it as their table."""
        found = self._version_maps.get(type_url)
        if found is None:
            found = self._version_maps[type_url] = MappingProxyType(
                {n: r.version for n, r in self.resources(type_url).items()})
        return found

    def client_table_after(self, key: tuple[object, ...], before: Mapping[str, str],
                           make: Callable[[Mapping[str, str]], Mapping[str, str]]) -> Mapping[str, str]:
        """Delta: what a client has once sent the response `key` names, from what it had: made
        once for all the streams of a group that had the same table (`before` kept, so that its
        identity stays its own), up to a few per snapshot."""
        found = self._client_tables.get((key, id(before)))
        if found is not None and found[0] is before:
            return found[1]
        after = make(before)
        if len(self._client_tables) < _RESPONSES_KEPT:
            self._client_tables[(key, id(before))] = (before, after)
        return after

    @classmethod
    def from_messages(cls, messages: Mapping[str, Mapping[str, Message]],
                      memo: ResourceMemo | None = None) -> Snapshot:
        make = memo.versioned if memo is not None else versioned
        return cls({t: {n: make(t, n, m) for n, m in ms.items()} for t, ms in messages.items()})

    @classmethod
    def from_config(cls, config: ProxyConfigIR, options: TranslateOptions,
                    memo: ResourceMemo | None = None) -> Snapshot:
        """The snapshot of translate(config, options), made from the memo's pieces where it can:
        a route configuration is assembled from its virtual hosts' serialized bytes, and a
        cluster list seen before (the same tuple of the same ClusterIR objects) brings back its
        clusters, endpoint sets and their versions whole."""
        memo = memo if memo is not None else ResourceMemo()
        address = options.listener_address
        cluster_set = memo.cluster_set(config.clusters)
        # As translate(): a plain route configuration where a listener has plain Routes, one per
        # SNI hostname of its TLS Routes (each a single virtual host, translated whole).
        tables = {ln.name: memo.route_table(ln) for ln in config.listeners if ln.sources}
        tls_routes = {h.route_config: memo.versioned(ROUTE, h.route_config,
                                                     translation.translate_tls_route_configuration(h))
                      for ln in config.listeners for h in ln.tls_hosts}
        snapshot = cls({
            SECRET: {s.name: memo.versioned(SECRET, s.name, translation.translate_secret(s)) for s in config.secrets},
            CLUSTER: cluster_set[0],
            ENDPOINT: cluster_set[1],
            LISTENER: {ln.name: memo.versioned(
                LISTENER, ln.name, translation.translate_listener(
                    ln.name, ln.port, address, tuple((h.hostname, h.route_config, h.tls) for h in ln.tls_hosts),
                    bool(ln.sources)))
                       for ln in config.listeners},
            ROUTE: {**{name: t.whole for name, t in tables.items()}, **tls_routes},
        }, known_versions={CLUSTER: cluster_set[2], ENDPOINT: cluster_set[3]})
        # Made from the very clusters they fill: every EDS cluster has its endpoint set. A TLS
        # cluster's secrets are still checked (check_consistent).
        snapshot._clusters_consistent = not any(c.tls is not None for c in config.clusters)
        snapshot._delta = snapshot._vhds_view(tables, tls_routes, memo)
        return snapshot

    def _vhds_view(self, tables: Mapping[str, RouteTable], tls_routes: Mapping[str, VersionedResource],
                   memo: ResourceMemo) -> Snapshot:
        """What delta proxies are sent: the same, but plain route configurations that point to
        VHDS, and their virtual hosts as resources of their own."""
        if len(tables) == 1:
            virtual_hosts = next(iter(tables.values())).virtual_hosts  # (shared, not copied)
        else:
            virtual_hosts = {n: r for t in tables.values() for n, r in t.virtual_hosts.items()}
        routes = {name: memo.versioned(ROUTE, name, vhds_route_configuration(name)) for name in tables}
        routes.update(tls_routes)
        # The virtual hosts are exactly those of the whole plain route configurations, renamed:
        # their versions name the set (delta compares resource by resource; this is a marker).
        marker = _digest("".join(f"{n}\0{t.whole.version}\n" for n, t in sorted(tables.items())).encode())
        view = Snapshot({**self._resources, ROUTE: routes, VIRTUAL_HOST: virtual_hosts},
                        known_versions={**self.versions, ROUTE: "", VIRTUAL_HOST: marker if tables else ""})
        view._clusters_consistent = self._clusters_consistent
        view.version = self.version  # (the same config: one version in logs and system_version_info)
        return view

    def for_protocol(self, protocol: str) -> Snapshot:
        """What a proxy speaking `protocol` ("sotw" or "delta") is sent: delta proxies get their
        virtual hosts over VHDS (a snapshot made from messages has no such view: the same)."""
        if protocol == "delta" and self._delta is not None:
            return self._delta
        return self

    def resources(self, type_url: str) -> Mapping[str, VersionedResource]:
        return self._resources.get(type_url, MappingProxyType({}))

    def select(self, type_url: str, names: frozenset[str] | None) -> dict[str, VersionedResource]:
        """The resources of a subscription: all of them (wildcard) or the named ones that exist."""
        available = self.resources(type_url)
        if names is WILDCARD:
            return dict(available)
        if type_url == VIRTUAL_HOST:
            return dict(self._virtual_hosts_in(names))
        return {n: available[n] for n in names if n in available}

    def changes_since(self, earlier: Mapping[str, VersionedResource]) -> tuple[frozenset[str], frozenset[str]]:
        """VHDS: the virtual hosts new or changed since `earlier` (the VIRTUAL_HOST resources of
        another snapshot), and those gone. Unchanged ones are the very same objects (the memo
        reuses them), so this is one identity pass, made once per snapshot for all streams."""
        current = self.resources(VIRTUAL_HOST)
        if current is earlier:
            return frozenset(), frozenset()
        cached = self._changes_since.get(id(earlier))
        if cached is None or cached[0] is not earlier:
            changed = frozenset(n for n, r in current.items() if earlier.get(n) is not r)
            cached = self._changes_since[id(earlier)] = (earlier, changed, frozenset(earlier.keys() - current.keys()))
        return cached[1], cached[2]

    def _virtual_hosts_in(self, names: frozenset[str]) -> Mapping[str, VersionedResource]:
        """VHDS subscriptions name route configurations (every virtual host of each) or single
        virtual hosts; the proxies of a group ask alike, so the answer is kept per snapshot."""
        found = self._vhds_selections.get(names)
        if found is None:
            available = self.resources(VIRTUAL_HOST)
            found = {n: r for n, r in available.items() if n in names or vhds_namespace(n) in names}
            self._vhds_selections[names] = found
        return found

    def selection(self, type_url: str, names: frozenset[str] | None) -> Mapping[str, VersionedResource]:
        """select() as a read-only mapping made once per snapshot and subscription: the streams
        of a group keep it as what they sent, instead of a copy each."""
        if names is WILDCARD:
            return self.resources(type_url)
        key = (type_url, names)
        found = self._selections.get(key)
        if found is None:
            found = self._selections[key] = MappingProxyType(self.select(type_url, names))
        return found

    def keep_response(self, key: tuple[object, ...], response: Message) -> None:
        """Keeps a response for the other streams, up to a few (streams that each lack something
        else, after a reconnect, would otherwise keep a copy each of what they were sent)."""
        if len(self.responses) < _RESPONSES_KEPT:
            self.responses[key] = response

    def shared_names(self, type_url: str, names: frozenset[str]) -> frozenset[str]:
        """An equal set of names, the same object for every stream that subscribes to them (a
        request's names are new strings: a thousand streams would each keep a copy)."""
        return self._subscriptions.setdefault((type_url, names), names)

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
        for name, resource in () if self._clusters_consistent else self.resources(CLUSTER).items():
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
