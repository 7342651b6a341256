"""The state-of-the-world ADS protocol on one stream (grpc-free; see stream.py for the rules).

Listeners and clusters travel whole in every response (absence means deletion), so a NACK of
them rejects the whole set: validation is what protects them. Endpoint sets and route
configurations are subscribed to by name and a response may carry any of them (absence means
"unchanged"), so a NACK of several is narrowed down to one (stream.py) and the rest applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from ..translate.resources import CLUSTER, FULL_STATE_TYPES, SHORT_NAMES
from .snapshot import WILDCARD, Snapshot, VersionedResource, digests_in, version_of
from .stream import StreamBase, split_in_halves

log = logging.getLogger(__name__)


class _Versions(Mapping[str, str]):
    """name -> version of resources, as a view: callbacks that only count pay nothing for it,
    and one over what a stream sent (never changed in place) may be kept as it is."""

    def __init__(self, resources: Mapping[str, VersionedResource]) -> None:
        self.resources = resources  # (often a snapshot's selection: the registry's ACK tables find equal ones by it)

    def __getitem__(self, name: str) -> str:
        return self.resources[name].version

    def __iter__(self) -> Iterator[str]:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)

    def items(self) -> Iterator[tuple[str, str]]:  # type: ignore[override]  # (a fast path for dict.update)
        return ((n, r.version) for n, r in self.resources.items())


def _versions(resources: Mapping[str, VersionedResource]) -> Mapping[str, str]:
    return _Versions(resources)


def _merged(sent: Mapping[str, VersionedResource],
            carried: Mapping[str, VersionedResource]) -> Mapping[str, VersionedResource]:
    """What the client has after it ACKed `carried`: `carried` itself (often the snapshot's
    shared selection) when it covers everything sent."""
    return carried if sent.keys() <= carried.keys() else {**sent, **carried}


@dataclass
class SotwTypeState:
    names: frozenset[str] | None = WILDCARD  # the subscription
    nonce: str | None = None
    last_nonce: str = ""
    pending_report: bool = False
    # The version a reconnecting client said it runs (its first request, before any response).
    reported: str = ""
    # What the client has (once the response in flight is ACKed), and its version (for endpoint
    # sets and route configurations always version_of(sent): equal to the snapshot's, nothing is due).
    # Replaced, never changed in place: it is often the snapshot's selection, shared by the
    # streams of a group, and the proxy registry keeps a view of it.
    sent_version: str = ""
    sent: Mapping[str, VersionedResource] = field(default_factory=dict)
    # Endpoint sets and route configurations only:
    in_flight: Mapping[str, VersionedResource] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # name -> version Envoy refused
    suspects: list[frozenset[str]] = field(default_factory=list)  # NACK isolation, next group first
    # The snapshot's version of the subscription, for the snapshot it was taken from: the
    # snapshot caches it too, but finding it there compares the names.
    subscription_version: tuple[Snapshot, str] | None = None


class SotwStream(StreamBase[SotwTypeState, discovery_pb2.DiscoveryResponse]):
    protocol = "sotw"

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        type_url = request.type_url
        if not self._supported(type_url):
            return []
        self.callbacks.on_request(self.info, type_url)
        ts = self.types.get(type_url)
        first = ts is None
        if ts is None:
            ts = self.types[type_url] = SotwTypeState()
        if request.response_nonce:
            if request.response_nonce != ts.last_nonce:
                log.debug("%s: stale nonce %s for %s ignored", self.info.node_id, request.response_nonce,
                          SHORT_NAMES[type_url])
                return []
            if ts.nonce is not None:
                self._settle(type_url, ts, request)
        names: frozenset[str] | None = frozenset(request.resource_names)
        if (type_url in FULL_STATE_TYPES and not names) or (names is not None and "*" in names):
            names = WILDCARD
        elif names == ts.names:
            names = ts.names  # (an ACK repeats the names: the new copy is dropped)
        elif (snapshot := self._snapshot()) is not None and names is not None:
            names = snapshot.shared_names(type_url, names)
        if not first and names is not WILDCARD and names != ts.names:
            # The client forgets what it unsubscribed from (Envoy drops a removed cluster's
            # endpoints), so a name subscribed again must be sent again, changed or not.
            ts.sent = {n: r for n, r in ts.sent.items() if n in names}
            ts.rejected = {n: v for n, v in ts.rejected.items() if n in names}
            ts.sent_version = version_of(type_url, ts.sent.values())
        if names != ts.names:
            ts.subscription_version = None
        ts.names = names
        if not request.response_nonce and request.version_info:
            # A reconnecting Envoy names the version it runs; versions are content hashes, so
            # what it has can be recognised once there is a snapshot (maybe not yet, right
            # after a restart).
            ts.reported = request.version_info
            ts.pending_report = True
            if type_url in FULL_STATE_TYPES:
                ts.sent_version = request.version_info
        if names is not WILDCARD and not names:
            ts.nonce = None  # unsubscribed from everything: no ACK will come for what is in flight
            ts.in_flight = {}
        return self.reconcile()

    def _settle(self, type_url: str, ts: SotwTypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        ts.nonce = None
        whole = type_url in FULL_STATE_TYPES
        # (What was unsubscribed from while in flight is not the client's any more.)
        if whole or ts.names is WILDCARD or ts.in_flight.keys() <= ts.names:
            carried = ts.sent if whole else ts.in_flight
        else:
            carried = {n: r for n, r in ts.in_flight.items() if n in ts.names}
        unsubscribed_in_flight = not whole and len(carried) < len(ts.in_flight)
        ts.in_flight = {}
        if not request.HasField("error_detail"):
            if not whole:
                ts.sent = _merged(ts.sent, carried)
                if unsubscribed_in_flight:
                    ts.sent_version = version_of(type_url, ts.sent.values())
            self.callbacks.on_ack(self.info, type_url, _versions(carried), (), _versions(ts.sent))
            return
        message = self._nack_message(request.error_detail.code, request.error_detail.message)
        log.error("%s (%s) NACKed %s version %.16s (%d resources): %s", self.info.node_id, self.info.group,
                  SHORT_NAMES[type_url], ts.sent_version, len(carried), message)
        self.callbacks.on_nack(self.info, type_url, ts.sent_version, message, _versions(carried))
        if whole:
            # sent_version stays the rejected version, so it is not sent again until the config changes.
            self.callbacks.on_rejected(self.info, type_url, _versions(carried), message)
            return
        if len(carried) == 1:
            ts.rejected.update(_versions(carried))
            self.callbacks.on_rejected(self.info, type_url, _versions(carried), message)
        else:
            # Envoy may have applied some of them before the one that failed: all are unknown now.
            ts.sent = {n: r for n, r in ts.sent.items() if n not in carried}
            ts.suspects[:0] = split_in_halves(carried)
        ts.sent_version = version_of(type_url, ts.sent.values())  # what the client surely has

    def _adopt(self, type_url: str, ts: SotwTypeState, snapshot: Snapshot) -> None:
        """A reconnecting client that runs the current version has, in effect, ACKed it. For
        endpoint sets and route configurations the version lists what the client has resource
        by resource, so also a client that dropped names since (no response tells it a new
        version then) is sent only what changed. One that claims a current resource it does not
        subscribe to is in no state this server leads to, and is sent everything."""
        current = snapshot.selection(type_url, ts.names)
        if self._subscription_version(type_url, ts, snapshot) == ts.reported:
            ts.sent, ts.sent_version = current, ts.reported
        elif type_url in FULL_STATE_TYPES:
            return
        else:
            claimed = digests_in(ts.reported)
            has = {n: r for n, r in current.items() if r.digest in claimed}
            unexplained = claimed - {r.digest for r in has.values()}
            if not has or unexplained & snapshot.digests(type_url):
                return
            ts.sent = has
            ts.sent_version = version_of(type_url, has.values())
        self.callbacks.on_ack(self.info, type_url, _versions(ts.sent), (), _versions(ts.sent))

    @staticmethod
    def _subscription_version(type_url: str, ts: SotwTypeState, snapshot: Snapshot) -> str:
        cached = ts.subscription_version
        if cached is None or cached[0] is not snapshot:
            cached = ts.subscription_version = (snapshot, snapshot.version_for(type_url, ts.names))
        return cached[1]

    def _due(self, type_url: str, ts: SotwTypeState, snapshot: Snapshot
             ) -> tuple[Mapping[str, VersionedResource], Mapping[str, VersionedResource], bool]:
        """Endpoint sets / route configurations: (all to be sent, those the client lacks, whether
        that is the whole subscription), leaving out the versions the client rejected."""
        desired = snapshot.selection(type_url, ts.names)
        wanted = {n: r for n, r in desired.items() if ts.rejected.get(n) != r.version} if ts.rejected else desired
        if not ts.sent:
            return wanted, wanted, len(wanted) == len(desired)
        missing = {n: r for n, r in wanted.items() if n not in ts.sent or ts.sent[n].version != r.version}
        return wanted, missing, len(wanted) == len(desired)

    def _lacking(self, type_url: str, ts: SotwTypeState, snapshot: Snapshot,
                 names: frozenset[str]) -> dict[str, VersionedResource]:
        """Of `names`, the subscribed resources the client lacks (and did not reject)."""
        available = snapshot.resources(type_url)
        lacking = {}
        for name in names:
            resource = available.get(name)
            if resource is None or (ts.names is not WILDCARD and name not in ts.names):
                continue
            if ts.rejected.get(name) != resource.version and (
                    name not in ts.sent or ts.sent[name].version != resource.version):
                lacking[name] = resource
        return lacking

    def _converged(self, type_url: str, ts: SotwTypeState, snapshot: Snapshot) -> bool:
        if ts.nonce is not None:
            return False
        if ts.sent_version == self._subscription_version(type_url, ts, snapshot):
            return True
        if type_url in FULL_STATE_TYPES:
            return False
        _, missing, whole = self._due(type_url, ts, snapshot)
        return not missing and whole

    def _response(self, type_url: str, ts: SotwTypeState,
                  snapshot: Snapshot) -> discovery_pb2.DiscoveryResponse | None:
        if type_url in FULL_STATE_TYPES:
            return self._whole_response(type_url, ts, snapshot)
        carried: Mapping[str, VersionedResource] = {}
        while ts.suspects and not carried:
            # (looking at the group only: isolation costs O(resources) in all, not per step)
            carried = self._lacking(type_url, ts, snapshot, ts.suspects.pop(0))
        if carried:
            ts.in_flight = carried
            ts.sent_version = version_of(type_url, {**ts.sent, **carried}.values())
            return self._send(type_url, ts, ts.sent_version, carried)
        if ts.sent_version == self._subscription_version(type_url, ts, snapshot):
            # (sent_version is always the version of `sent`, so this is the quick "nothing due")
            return None
        wanted, missing, whole = self._due(type_url, ts, snapshot)
        if not missing:
            return None
        # Only what the client lacks: an endpoint set or route configuration left out of a SotW
        # response is unchanged, not removed (xds_protocol; Envoy updates only the watches of
        # the resources a response carries), so a one-Backend change sends one endpoint set.
        carried = missing
        ts.in_flight = carried
        if whole and ts.sent.keys() <= wanted.keys():
            version = self._subscription_version(type_url, ts, snapshot)  # the whole subscription: cached per snapshot
            # What is carried is what `version` has and the version the client had lacks: the
            # same on every stream that had that version.
            base, ts.sent_version = ts.sent_version, version
            return self._send(type_url, ts, version, carried, snapshot, base)
        version = version_of(type_url, {**ts.sent, **carried}.values())
        ts.sent_version = version
        return self._send(type_url, ts, version, carried)

    def _whole_response(self, type_url: str, ts: SotwTypeState,
                        snapshot: Snapshot) -> discovery_pb2.DiscoveryResponse | None:
        if self._subscription_version(type_url, ts, snapshot) == ts.sent_version:
            return None  # the client has exactly the snapshot's resources (so nothing stale either)
        keep_stale = type_url == CLUSTER and not self._routing_converged(snapshot)
        resources = snapshot.selection(type_url, ts.names)
        if keep_stale:
            resources = {**ts.sent, **resources}
        version = version_of(type_url, resources.values()) if keep_stale else self._subscription_version(type_url, ts, snapshot)
        if version == ts.sent_version:
            return None
        ts.sent_version, ts.sent = version, resources
        return self._send(type_url, ts, version, resources, snapshot)

    def _send(self, type_url: str, ts: SotwTypeState, version: str, resources: Mapping[str, VersionedResource],
              shared_in: Snapshot | None = None, base: str | None = None) -> discovery_pb2.DiscoveryResponse:
        """The response; `shared_in`: `resources` are what `version` names (with `base`, what it
        names beyond what version `base` has), so the response is the same on every stream but
        for its nonce, and is made once, in that snapshot (a copy of a made response costs a
        tenth of making one from a thousand resources)."""
        self.callbacks.on_response(self.info, type_url, _versions(resources), ())
        key = (type_url, version, base)
        made = None if shared_in is None else shared_in.responses.get(key)
        if made is None:
            made = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url,
                                                   resources=[resources[n].packed for n in sorted(resources)])
            if shared_in is not None:
                shared_in.keep_response(key, made)
        response = discovery_pb2.DiscoveryResponse()
        response.CopyFrom(made)
        response.nonce = self._nonce(ts)
        return response
