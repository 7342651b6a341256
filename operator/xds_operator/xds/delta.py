"""The incremental (delta) ADS protocol on one stream (grpc-free; see stream.py for the rules).

Every resource travels on its own in delta, whatever its type, so a NACK of several resources
is narrowed down to one (stream.py) for listeners and clusters too. A reconnecting client names
the version of each resource it has (initial_resource_versions): only the others are sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from ..translate.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, SECRET, SHORT_NAMES
from .snapshot import WILDCARD, Snapshot, VersionedResource
from .stream import StreamBase, split_in_halves

log = logging.getLogger(__name__)

_UNKNOWN = ""  # the version of a resource whose state on the client is not known (never a real one)


@dataclass
class DeltaTypeState:
    names: frozenset[str] = frozenset()  # explicitly subscribed names
    wildcard: bool = False
    nonce: str | None = None
    last_nonce: str = ""
    pending_report: bool = False
    reported: dict[str, str] = field(default_factory=dict)  # initial_resource_versions
    reported_current_in: Snapshot | None = None  # the snapshot at which all of `reported` was current
    # The version of each resource the client has, as far as this server knows, counting what
    # is in flight as received.
    client: dict[str, str] = field(default_factory=dict)
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


class DeltaStream(StreamBase[DeltaTypeState, discovery_pb2.DeltaDiscoveryResponse]):
    protocol = "delta"

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
            # (The snapshot's own strings where the client has its resources: a request's are
            # new ones, a copy per stream.)
            current = snapshot.resources(type_url) if snapshot is not None else {}
            stale = False
            for name, version in request.initial_resource_versions.items():
                known = current.get(name)
                if known is not None and known.version == version:
                    ts.client[known.name] = known.version
                else:
                    ts.client[name] = version
                    stale = True
            ts.reported = dict(ts.client)
            ts.pending_report = bool(ts.reported)
            ts.reported_current_in = snapshot if not stale else None
            # An empty first request for listeners or clusters is the legacy wildcard.
            ts.wildcard = type_url in FULL_STATE_TYPES and not subscribe
        if subscribe or unsubscribe:
            names = set(ts.names)
            added = frozenset(subscribe)
            if "*" in added:
                ts.wildcard = True
                added = added - {"*"}
            names |= added
            for name in unsubscribe:
                if name == "*":
                    ts.wildcard = False
                else:
                    names.discard(name)
                    # Forget it, so that a later subscription sends it again.
                    ts.client.pop(name, None)
                    ts.rejected.pop(name, None)
            if names != ts.names:
                ts.names = frozenset(names) if snapshot is None else snapshot.shared_names(type_url, frozenset(names))
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
        for name in carried:
            if name in ts.client:
                ts.client[name] = _UNKNOWN
        for name in removed:
            ts.client[name] = _UNKNOWN
        if carried:
            ts.suspects[:0] = split_in_halves(carried)

    @staticmethod
    def _restore(ts: DeltaTypeState, before: dict[str, str | None]) -> None:
        for name, version in before.items():
            if version is None:
                ts.client.pop(name, None)
            else:
                ts.client[name] = version

    def _changes(self, type_url: str, ts: DeltaTypeState,
                 snapshot: Snapshot) -> tuple[dict[str, VersionedResource], list[str]]:
        desired = snapshot.selection(type_url, WILDCARD if ts.wildcard else ts.names)
        updates = {n: r for n, r in desired.items()
                   if ts.client.get(n) != r.version and ts.rejected.get(n) != r.version}
        removed = [n for n in ts.client if n not in desired and (ts.wildcard or n in ts.names)]
        return updates, removed

    @staticmethod
    def _lacking(type_url: str, ts: DeltaTypeState, snapshot: Snapshot,
                 names: frozenset[str]) -> dict[str, VersionedResource]:
        """Of `names`, the subscribed resources the client lacks (and did not reject)."""
        available = snapshot.resources(type_url)
        lacking = {}
        for name in names:
            resource = available.get(name)
            if resource is not None and (ts.wildcard or name in ts.names) and \
                    ts.client.get(name) != resource.version and ts.rejected.get(name) != resource.version:
                lacking[name] = resource
        return lacking

    def _converged(self, type_url: str, ts: DeltaTypeState, snapshot: Snapshot) -> bool:
        if ts.nonce is not None:
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
            if ts.nothing_due_at == snapshot.versions[type_url]:
                return None
            updates, removed = self._changes(type_url, ts, snapshot)
            if not updates and not removed:
                ts.nothing_due_at = snapshot.versions[type_url]
                return None
            # Stale clusters, their endpoints and certificates go only after the listeners and
            # routes that used them (make-before-break): a secret still referenced is never removed.
            if type_url in (SECRET, CLUSTER, ENDPOINT) and removed and not self._routing_converged(snapshot):
                removed, everything_due = [], False
        if not updates and not removed:
            return None
        ts.nothing_due_at = snapshot.versions[type_url] if everything_due and not ts.suspects else None
        ts.before_flight = {n: ts.client.get(n) for n in [*updates, *removed]}
        for name, resource in updates.items():
            ts.client[name] = resource.version
        for name in removed:
            del ts.client[name]
        ts.in_flight = {n: r.version for n, r in updates.items()}
        ts.in_flight_removed = sorted(removed)
        self.callbacks.on_response(self.info, type_url, ts.in_flight, ts.in_flight_removed)
        # The streams of a group are sent the same changes: made once per snapshot (by the
        # resources' identity, which the snapshot keeps alive), copied with a nonce each.
        key = (type_url, frozenset(map(id, updates.values())), tuple(ts.in_flight_removed))
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
