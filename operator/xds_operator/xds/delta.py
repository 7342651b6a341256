"""The incremental (delta) ADS protocol on one stream (grpc-free; see stream.py for the rules).

Every resource travels on its own in delta, whatever its type, so a NACK of several resources
is narrowed down to one (stream.py) for listeners and clusters too. A reconnecting client names
the version of each resource it has (initial_resource_versions): only the others are sent.

Delta proxies get their plain virtual hosts over VHDS (Snapshot.for_protocol). Envoy matches a
VirtualHost resource "<route configuration>/<domain>" to the route configuration before the last
"/" (namespace matching, envoy source/common/router/vhds.cc), and so its VHDS request names
nothing: once, on the stream's first VHDS subscription, however many route configurations come
later. That request is taken as "the virtual hosts of every route configuration I hold": those of
a route configuration are pushed once the client ACKed it (Envoy made its VHDS watch while it
applied it; virtual hosts sent earlier would find no watch and be dropped), and then as they
change, so no request waits for one on demand; a one-Route change sends one virtual host.
Names subscribed explicitly (Envoy's on-demand requests, "<route configuration>/<Host>") are
served when such a virtual host exists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2

from ..translate.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, ROUTE, SECRET, SHORT_NAMES, VIRTUAL_HOST
from .callbacks import StreamCallbacks, StreamInfo
from .snapshot import WILDCARD, Snapshot, VersionedResource, vhds_namespace
from .stream import SnapshotSource, StreamBase, split_in_halves

log = logging.getLogger(__name__)

_NOTHING: Mapping[str, str] = MappingProxyType({})
_UNKNOWN = ""  # the version of a resource whose state on the client is not known (never a real one)


@dataclass
class DeltaTypeState:
    names: frozenset[str] = frozenset()  # explicitly subscribed names
    wildcard: bool = False
    nonce: str | None = None
    last_nonce: str = ""
    pending_report: bool = False
    reported: Mapping[str, str] = field(default_factory=dict)  # initial_resource_versions
    reported_current_in: Snapshot | None = None  # the snapshot at which all of `reported` was current
    # The version of each resource the client has, as far as this server knows, counting what
    # is in flight as received. Never changed in place, only replaced: the streams of a group
    # that were sent the same share one table (a thousand proxies, one table of a thousand names).
    client: Mapping[str, str] = field(default_factory=lambda: _NOTHING)
    in_flight: dict[str, str] = field(default_factory=dict)
    in_flight_removed: list[str] = field(default_factory=list)
    before_flight: dict[str, str | None] = field(default_factory=dict)  # client versions before it
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version Envoy refused
    suspects: list[frozenset[str]] = field(default_factory=list)  # NACK isolation, next group first
    # The type's snapshot version at which nothing was due (also after a response that carried
    # everything due); a request that changes the subscription or NACKs forgets it, as does a
    # response that left something due. (A change elsewhere, or an ACK, then costs this type one
    # comparison, not a pass over everything.)
    nothing_due_at: str | None = None
    # A wildcard subscription of listeners or clusters is answered once even when empty: Envoy's
    # initialization waits for that first response (until its initial fetch timeout, 15 s).
    owes_first_answer: bool = False
    # Virtual hosts: the snapshot's VHDS resources and the selection the client was last brought
    # in line with, so that the next change is compared over what changed since (one diff per
    # snapshot, shared by the streams), not over every virtual host of the group.
    in_sync_with: tuple[Mapping[str, VersionedResource], frozenset[str]] | None = None


def _reported(request: discovery_pb2.DeltaDiscoveryRequest, type_url: str,
              snapshot: Snapshot | None) -> tuple[Mapping[str, str], bool]:
    """What a reconnecting client says it has (initial_resource_versions), and whether any of it
    is not current. The snapshot's own strings where they are: a request's are new ones, a copy
    per stream. A reconnect storm brings a thousand of these per type: the common cases (all
    of the type, or a part, all current) are settled by dict comparisons, not name by name."""
    initial = request.initial_resource_versions
    if not initial:
        return _NOTHING, False
    reported = {name: initial[name] for name in list(initial)}  # (a upb map, read once)
    if snapshot is None:
        return reported, True
    versions = snapshot.version_map(type_url)
    if reported == versions:
        return versions, False  # (read-only, shared by every stream that has all of it)
    current = snapshot.resources(type_url)
    if reported.items() <= versions.items():
        return {current[name].name: versions[name] for name in reported}, False
    client, stale = {}, False
    for name, version in reported.items():
        known = current.get(name)
        if known is not None and known.version == version:
            client[known.name] = known.version
        else:
            client[name] = version
            stale = True
    return client, stale


def _changed(table: Mapping[str, str], versions: Mapping[str, str], removed: Iterable[str]) -> Mapping[str, str]:
    """A new table: `table` with `versions` set and `removed` gone (tables are never changed in place)."""
    made = dict(table)
    made.update(versions)
    for name in removed:
        made.pop(name, None)
    return MappingProxyType(made)


def _subscribed(type_url: str, ts: DeltaTypeState, name: str) -> bool:
    if ts.wildcard or name in ts.names:
        return True
    return type_url == VIRTUAL_HOST and vhds_namespace(name) in ts.names


def _wanted(type_url: str, ts: DeltaTypeState, name: str, held: frozenset[str]) -> bool:
    """Whether the client is to have `name`; `held`: the route configurations it ACKed."""
    if type_url == VIRTUAL_HOST and ts.wildcard and name not in ts.names:
        return vhds_namespace(name) in held
    return _subscribed(type_url, ts, name)


class DeltaStream(StreamBase[DeltaTypeState, discovery_pb2.DeltaDiscoveryResponse]):
    protocol = "delta"

    def __init__(self, info: StreamInfo, callbacks: StreamCallbacks, snapshot: SnapshotSource) -> None:
        protocol = self.protocol  # (not `self`: a stream must not be a cycle, or closed ones wait for the collector)

        def delta_view() -> Snapshot | None:
            found = snapshot()
            return None if found is None else found.for_protocol(protocol)
        super().__init__(info, callbacks, delta_view)

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        type_url = request.type_url
        if not self._supported(type_url):
            return []
        self.callbacks.on_request(self.info, type_url)
        ts = self.types.get(type_url)
        snapshot = self._snapshot()
        subscribe, unsubscribe = request.resource_names_subscribe, request.resource_names_unsubscribe
        first = ts is None
        if ts is not None:
            if subscribe or unsubscribe or request.HasField("error_detail"):
                ts.nothing_due_at = None
        else:
            ts = self.types[type_url] = DeltaTypeState()
            ts.client, stale = _reported(request, type_url, snapshot)
            ts.reported = ts.client
            ts.pending_report = bool(ts.reported)
            ts.reported_current_in = snapshot if not stale else None
            # An empty first request for listeners or clusters is the legacy wildcard; for
            # virtual hosts, Envoy's only request (see above).
            ts.wildcard = (type_url in FULL_STATE_TYPES or type_url == VIRTUAL_HOST) and not subscribe
            ts.owes_first_answer = type_url in FULL_STATE_TYPES and not ts.client
        if subscribe or unsubscribe:
            added = frozenset(list(subscribe))  # (a upb list is read faster whole)
            if "*" in added:
                ts.wildcard = True
                added = added - {"*"}
            names = ts.names | added
            if unsubscribe:
                remaining = set(names)
                forgotten: list[str] = []
                for name in unsubscribe:
                    if name == "*":
                        ts.wildcard = False
                    else:
                        remaining.discard(name)
                        # Forget it, so that a later subscription sends it again (a VHDS route
                        # configuration name: all its virtual hosts).
                        forgotten += [name] if type_url != VIRTUAL_HOST else \
                            [n for n in ts.client if n == name or vhds_namespace(n) == name]
                for name in forgotten:
                    ts.rejected.pop(name, None)
                if any(name in ts.client for name in forgotten):
                    ts.client = _changed(ts.client, {}, forgotten)
                names = frozenset(remaining)
            if names != ts.names:
                ts.names = names if snapshot is None else snapshot.shared_names(type_url, names)
        if first and snapshot is not None and ts.reported_current_in is snapshot:
            # A reconnecting client that runs exactly what it subscribes to: nothing is due, and
            # no pass over its resources is needed to find that out.
            desired = snapshot.selection(type_url, WILDCARD if ts.wildcard else ts.names)
            if len(desired) == len(ts.client) and (ts.wildcard or ts.client.keys() <= ts.names):
                ts.nothing_due_at = snapshot.versions[type_url]
        # Unlike SotW, a delta request with an old nonce still carries subscription changes
        # (applied above); only the ACK/NACK part belongs to the response in flight.
        if request.response_nonce and request.response_nonce == ts.nonce:
            self._settle(type_url, ts, request)
        if type_url == ROUTE and (vhds := self.types.get(VIRTUAL_HOST)) is not None:
            vhds.nothing_due_at = None  # the route configurations it holds, whose virtual hosts it gets, may differ
        return self.reconcile()

    def _adopt(self, type_url: str, ts: DeltaTypeState, snapshot: Snapshot) -> None:
        """A reconnecting client's resources that are current count as ACKed."""
        if ts.reported_current_in is snapshot:
            same = ts.reported  # (compared when it came)
        else:
            current = snapshot.resources(type_url)
            same = {n: v for n, v in ts.reported.items() if n in current and current[n].version == v}
        ts.reported, ts.reported_current_in = {}, None  # (done with)
        if same:
            self.callbacks.on_ack(self.info, type_url, same, (), None)

    def _settle(self, type_url: str, ts: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        ts.nonce = None
        carried, removed, before = ts.in_flight, ts.in_flight_removed, ts.before_flight
        ts.in_flight, ts.in_flight_removed, ts.before_flight = {}, [], {}
        if not request.HasField("error_detail"):
            self.callbacks.on_ack(self.info, type_url, carried, removed, None)
            return
        ts.in_sync_with = None
        message = self._nack_message(request.error_detail.code, request.error_detail.message)
        log.error("%s (%s) NACKed %s (%d resources, %d removals): %s", self.info.node_id, self.info.group,
                  SHORT_NAMES[type_url], len(carried), len(removed), message)
        self.callbacks.on_nack(self.info, type_url, "", message, carried)
        if len(carried) == 1 and not removed:
            # The client keeps its old resource; the rejected version is not sent again until
            # the config changes.
            ts.rejected.update(carried)
            self._restore(ts, before)
            self.callbacks.on_rejected(self.info, type_url, carried, message)
            return
        # Several: Envoy may have applied some before the one that failed, so all are unknown
        # now and go again, in halves (removals after them).
        unknown = {name: _UNKNOWN for name in carried if name in ts.client}
        unknown.update((name, _UNKNOWN) for name in removed)
        ts.client = _changed(ts.client, unknown, ())
        if carried:
            ts.suspects[:0] = split_in_halves(carried)

    @staticmethod
    def _restore(ts: DeltaTypeState, before: dict[str, str | None]) -> None:
        ts.client = _changed(ts.client, {n: v for n, v in before.items() if v is not None},
                             [n for n, v in before.items() if v is None])

    def _changes(self, type_url: str, ts: DeltaTypeState,
                 snapshot: Snapshot) -> tuple[dict[str, VersionedResource], list[str]]:
        if type_url == VIRTUAL_HOST:
            return self._virtual_host_changes(ts, snapshot)
        return self._diff(type_url, ts, snapshot.selection(type_url, WILDCARD if ts.wildcard else ts.names))

    @staticmethod
    def _diff(type_url: str, ts: DeltaTypeState,
              desired: Mapping[str, VersionedResource]) -> tuple[dict[str, VersionedResource], list[str]]:
        """What the client lacks of `desired`, and what it has (or rejected) that left it: rejected
        resources are said removed too, so that the rejection is settled by the ACK (removing
        what Envoy does not have is a no-op)."""
        updates = {n: r for n, r in desired.items()
                   if ts.client.get(n) != r.version and ts.rejected.get(n) != r.version}
        removed = [n for n in ts.client if n not in desired and _subscribed(type_url, ts, n)]
        removed += [n for n in ts.rejected if n not in desired and n not in ts.client and _subscribed(type_url, ts, n)]
        return updates, removed

    def _virtual_host_changes(self, ts: DeltaTypeState,
                              snapshot: Snapshot) -> tuple[dict[str, VersionedResource], list[str]]:
        names = self._virtual_host_selection(ts)
        current = snapshot.resources(VIRTUAL_HOST)
        base = ts.in_sync_with
        if base is not None and base[1] == names:
            changed, gone = snapshot.changes_since(base[0])
            due = (n for n in changed if n in names or vhds_namespace(n) in names)
            updates = {n: current[n] for n in due
                       if ts.client.get(n) != current[n].version and ts.rejected.get(n) != current[n].version}
            removed = [n for n in gone if n in ts.client or n in ts.rejected]
            return updates, removed
        return self._diff(VIRTUAL_HOST, ts, snapshot.select(VIRTUAL_HOST, names))

    def _virtual_host_selection(self, ts: DeltaTypeState) -> frozenset[str]:
        """The names a client's VHDS subscription selects by (virtual hosts or route configurations)."""
        return ts.names | self._route_configurations_held() if ts.wildcard else ts.names

    def _routing_converged(self, snapshot: Snapshot) -> bool:
        # Route configurations that name VHDS route nothing until their virtual hosts come.
        if ROUTE in self.types and VIRTUAL_HOST not in self.types and snapshot.resources(VIRTUAL_HOST):
            return False
        return super()._routing_converged(snapshot)

    def _route_configurations_held(self) -> frozenset[str]:
        """The route configurations the client has ACKed (VHDS wildcard: their virtual hosts)."""
        routes = self.types.get(ROUTE)
        if routes is None:
            return frozenset()
        return frozenset(n for n in routes.client
                         if n not in routes.in_flight or routes.before_flight.get(n) is not None)

    def _lacking(self, type_url: str, ts: DeltaTypeState, snapshot: Snapshot,
                 names: frozenset[str]) -> dict[str, VersionedResource]:
        """Of `names`, the subscribed resources the client lacks (and did not reject)."""
        available = snapshot.resources(type_url)
        held = self._route_configurations_held() if type_url == VIRTUAL_HOST else frozenset()
        lacking = {}
        for name in names:
            resource = available.get(name)
            if resource is not None and _wanted(type_url, ts, name, held) and \
                    ts.client.get(name) != resource.version and ts.rejected.get(name) != resource.version:
                lacking[name] = resource
        return lacking

    def _converged(self, type_url: str, ts: DeltaTypeState, snapshot: Snapshot) -> bool:
        if ts.nonce is not None or ts.owes_first_answer:
            return False
        available = snapshot.resources(type_url)
        if any(n in available and available[n].version == v for n, v in ts.rejected.items()):
            return False
        if ts.nothing_due_at == snapshot.versions[type_url]:
            return True
        updates, removed = self._changes(type_url, ts, snapshot)
        return not updates and not removed

    def _response(self, type_url: str, ts: DeltaTypeState,
                  snapshot: Snapshot) -> discovery_pb2.DeltaDiscoveryResponse | None:
        updates: dict[str, VersionedResource] = {}
        removed: list[str] = []
        while ts.suspects and not updates:
            # (looking at the group only: isolation costs O(resources) in all, not per step)
            updates = self._lacking(type_url, ts, snapshot, ts.suspects.pop(0))
        everything_due = not updates  # (else a suspect group: more may be due)
        if not updates:
            if ts.nothing_due_at == snapshot.versions[type_url] and not ts.owes_first_answer:
                return None
            updates, removed = self._changes(type_url, ts, snapshot)
            if type_url == VIRTUAL_HOST:  # once these are sent, the client is in line with the snapshot
                ts.in_sync_with = (snapshot.resources(type_url), self._virtual_host_selection(ts))
            if not updates and not removed:
                ts.nothing_due_at = snapshot.versions[type_url]
                if not ts.owes_first_answer:
                    return None
            # Stale clusters, their endpoints and certificates go only after the listeners and
            # routes that used them (make-before-break): a secret still referenced is never removed.
            if type_url in (SECRET, CLUSTER, ENDPOINT) and removed and not self._routing_converged(snapshot):
                removed, everything_due = [], False
        if not updates and not removed and not ts.owes_first_answer:
            return None
        ts.owes_first_answer = False
        ts.nothing_due_at = snapshot.versions[type_url] if everything_due and not ts.suspects else None
        ts.before_flight = {n: ts.client.get(n) for n in [*updates, *removed]}
        for name in removed:
            ts.rejected.pop(name, None)
        ts.in_flight = {n: r.version for n, r in updates.items()}
        ts.in_flight_removed = sorted(removed)
        # The streams of a group are sent the same changes: made once per snapshot (by the
        # resources' identity, which the snapshot keeps alive), copied with a nonce each; and
        # streams that had the same table before have the same one after.
        key = (type_url, frozenset((n, id(r)) for n, r in updates.items()), tuple(ts.in_flight_removed))
        ts.client = snapshot.client_table_after(key, ts.client, lambda before: _changed(before, ts.in_flight, removed))
        self.callbacks.on_response(self.info, type_url, ts.in_flight, ts.in_flight_removed)
        made = snapshot.responses.get(key)
        if made is None:
            made = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=snapshot.version,
                resources=[discovery_pb2.Resource(name=n, version=updates[n].version, resource=updates[n].packed)
                           for n in sorted(updates)],
                type_url=type_url,
                removed_resources=ts.in_flight_removed)
            snapshot.keep_response(key, made)
        response = discovery_pb2.DeltaDiscoveryResponse()
        response.CopyFrom(made)
        response.nonce = self._nonce(ts)
        return response
