"""The xDS protocol state of one ADS stream, state-of-the-world and incremental (delta).

Plain logic without grpc: a stream takes requests and snapshot changes and returns the
responses to send. The rules, from envoy's api-docs/xds_protocol:
- every response has a fresh nonce; a request echoing it ACKs (no error_detail) or NACKs it;
- SotW requests with a stale nonce are ignored;
- a version is never sent twice on a stream: not when unchanged, not after a NACK;
- one response per type in flight; in the order CDS, EDS, LDS, RDS, with listeners and
  routes waiting for the ACKs of clusters and endpoints (make-before-break); clusters that
  the new routes no longer use are removed only once the listeners and routes that used them
  have been replaced.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable

from envoy.service.discovery.v3 import discovery_pb2

from .snapshot import WILDCARD, Snapshot, VersionedResource, version_of
from ..translate.resources import CLUSTER, ENDPOINT, FULL_STATE_TYPES, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from .proxies import ProxyRegistry, ProxyState

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Snapshot | None]

# What each type waits for (besides the ACK of its own last response) before it is sent.
_WAITS_FOR = {CLUSTER: (), ENDPOINT: (), LISTENER: (CLUSTER, ENDPOINT), ROUTE: (CLUSTER, ENDPOINT)}


@dataclass
class _TypeState:
    names: frozenset[str] | None = WILDCARD  # the subscription (SotW) or explicit names (delta)
    nonce: str | None = None  # nonce of the response awaiting ACK/NACK
    last_nonce: str = ""  # the newest nonce sent, to recognise stale requests
    # SotW: the version and resources of the last response (or the version the client said it had)
    sent_version: str = ""
    sent: dict[str, VersionedResource] = field(default_factory=dict)
    # Delta: the version of each resource the client has, as far as this server knows
    client: dict[str, str] = field(default_factory=dict)
    wildcard: bool = False
    in_flight: dict[str, str] = field(default_factory=dict)
    in_flight_removed: list[str] = field(default_factory=list)
    # What a reconnecting client said it runs, to be checked against the first snapshot
    # (which may not exist yet when the request arrives, right after a restart).
    reported: dict[str, str] | str | None = None


class _Stream:
    protocol = ""

    def __init__(self, registry: ProxyRegistry, proxy: ProxyState, snapshot: SnapshotSource) -> None:
        self.registry = registry
        self.proxy = proxy
        self._snapshot = snapshot
        self.types: dict[str, _TypeState] = {}
        self._nonces = itertools.count(1)

    def on_change(self) -> list:
        """The snapshot changed."""
        return self.reconcile()

    def _supported(self, type_url: str) -> bool:
        if type_url in PUSH_ORDER:
            return True
        log.warning("%s asked for unsupported type %s", self.proxy.node_id, type_url)
        return False

    def _nonce(self, ts: _TypeState) -> str:
        ts.nonce = ts.last_nonce = f"{self.proxy.stream_id}-{next(self._nonces)}"
        return ts.nonce

    def reconcile(self) -> list:
        """The responses due now, in push order. A type waits while its own last response is
        unanswered; listeners and routes also wait while clusters or endpoints are in flight,
        so traffic moves only to clusters Envoy has. Endpoints and route configurations wait
        for nothing else: Envoy asks for them only once it has the clusters and listeners that
        name them, and it holds its CDS ACK until the endpoints of new clusters arrive, so
        gating EDS on that ACK would stall until Envoy's initial fetch timeout."""
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        for type_url, ts in self.types.items():
            if ts.reported is not None:
                self._adopt(type_url, ts, snapshot)
                ts.reported = None
        responses = []
        for type_url in PUSH_ORDER:
            ts = self.types.get(type_url)
            if ts is None or ts.nonce is not None:
                continue
            if any(self.types[t].nonce is not None for t in _WAITS_FOR[type_url] if t in self.types):
                continue
            response = self._response(type_url, ts, snapshot)
            if response is not None:
                responses.append(response)
        return responses

    def _adopt(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def _routing_converged(self, snapshot: Snapshot) -> bool:
        """Whether listeners and routes are at the snapshot, so unused clusters may go."""
        return all(self._converged(t, self.types[t], snapshot) for t in (LISTENER, ROUTE) if t in self.types)

    def _nack_message(self, request) -> str:
        return request.error_detail.message or f"code {request.error_detail.code}"

    def _response(self, type_url: str, ts: _TypeState, snapshot: Snapshot):
        raise NotImplementedError

    def _converged(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> bool:
        raise NotImplementedError


class SotwStream(_Stream):
    protocol = "sotw"

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        type_url = request.type_url
        if not self._supported(type_url):
            return []
        ts = self.types.get(type_url)
        first = ts is None
        if first:
            ts = self.types[type_url] = _TypeState()
            # A reconnecting Envoy names the version it runs; versions are content hashes, so
            # if that is the current one there is nothing to send.
            ts.sent_version = request.version_info
        if request.response_nonce:
            if request.response_nonce != ts.last_nonce:
                log.debug("%s: stale nonce %s for %s ignored", self.proxy.node_id, request.response_nonce,
                          SHORT_NAMES[type_url])
                return []
            if ts.nonce is not None:
                self._settle(type_url, ts, request)
        names = frozenset(request.resource_names)
        if (type_url in FULL_STATE_TYPES and not names) or "*" in names:
            names = WILDCARD
        if not first and names is not WILDCARD and names != ts.names:
            # The client forgets what it unsubscribed from (Envoy drops a removed cluster's
            # endpoints), so a name subscribed again must be sent again, changed or not.
            ts.sent = {n: r for n, r in ts.sent.items() if n in names}
            ts.sent_version = version_of(ts.sent.values())
        ts.names = names
        if not request.response_nonce and request.version_info:
            ts.reported = request.version_info
        if names is not WILDCARD and not names:
            ts.nonce = None  # unsubscribed from everything: no ACK will come for what is in flight
        return self.reconcile()

    def _settle(self, type_url: str, ts: _TypeState, request) -> None:
        versions = {n: r.version for n, r in ts.sent.items()}
        if request.HasField("error_detail"):
            message = self._nack_message(request)
            log.error("%s (%s) NACKed %s version %s: %s", self.proxy.node_id, self.proxy.group,
                      SHORT_NAMES[type_url], ts.sent_version, message)
            self.registry.nacked(self.proxy, type_url, ts.sent_version, message, versions)
        else:
            self.registry.acked(self.proxy, type_url, versions, replace=True)
        ts.nonce = None

    def _adopt(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> None:
        """A reconnecting client that runs the current version has, in effect, ACKed it."""
        if snapshot.version_for(type_url, ts.names) == ts.reported:
            current = snapshot.select(type_url, ts.names)
            ts.sent = current
            self.registry.acked(self.proxy, type_url, {n: r.version for n, r in current.items()}, replace=True)

    def _converged(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> bool:
        return ts.nonce is None and ts.sent_version == snapshot.version_for(type_url, ts.names)

    def _response(self, type_url, ts, snapshot):
        if snapshot.version_for(type_url, ts.names) == ts.sent_version:
            return None  # the client has exactly the snapshot's resources (so nothing stale either)
        keep_stale = type_url == CLUSTER and not self._routing_converged(snapshot)
        resources = snapshot.select(type_url, ts.names)
        if keep_stale:
            for name, stale in ts.sent.items():
                resources.setdefault(name, stale)
        version = version_of(resources.values()) if keep_stale else snapshot.version_for(type_url, ts.names)
        if version == ts.sent_version:
            return None
        if type_url not in FULL_STATE_TYPES and ts.sent and all(
                n in ts.sent and ts.sent[n].version == r.version for n, r in resources.items()):
            # Only names gone: for endpoints and route configurations a SotW response cannot
            # remove anything (absence means "unchanged"), so there is nothing worth sending.
            return None
        ts.sent_version, ts.sent = version, resources
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[resources[n].packed for n in sorted(resources)],
            type_url=type_url,
            nonce=self._nonce(ts),
        )


class DeltaStream(_Stream):
    protocol = "delta"

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        type_url = request.type_url
        if not self._supported(type_url):
            return []
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = _TypeState(names=frozenset())
            ts.client.update(request.initial_resource_versions)
            ts.reported = dict(request.initial_resource_versions) or None
            # An empty first request for listeners or clusters is the legacy wildcard.
            ts.wildcard = type_url in FULL_STATE_TYPES and not request.resource_names_subscribe
        names = set(ts.names)
        for name in request.resource_names_subscribe:
            if name == "*":
                ts.wildcard = True
            else:
                names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                ts.wildcard = False
            else:
                names.discard(name)
                # Forget it, so that a later subscription sends it again.
                ts.client.pop(name, None)
        ts.names = frozenset(names)
        # Unlike SotW, a delta request with an old nonce still carries subscription changes
        # (applied above); only the ACK/NACK part belongs to the response in flight.
        if request.response_nonce and request.response_nonce == ts.nonce:
            self._settle(type_url, ts, request)
        return self.reconcile()

    def _adopt(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> None:
        """A reconnecting client's resources that are current count as ACKed."""
        current = snapshot.resources(type_url)
        same = {n: v for n, v in ts.reported.items() if n in current and current[n].version == v}
        if same:
            self.registry.acked(self.proxy, type_url, same, replace=False)

    def _settle(self, type_url: str, ts: _TypeState, request) -> None:
        if request.HasField("error_detail"):
            message = self._nack_message(request)
            log.error("%s (%s) NACKed %s: %s", self.proxy.node_id, self.proxy.group, SHORT_NAMES[type_url], message)
            # The client keeps its old resources, but what it rejected is recorded as sent, so
            # the same versions are not sent again until the config changes.
            self.registry.nacked(self.proxy, type_url, "", message, ts.in_flight)
        else:
            self.registry.acked(self.proxy, type_url, ts.in_flight, replace=False)
            self.registry.removed(self.proxy, type_url, ts.in_flight_removed)
        ts.nonce = None

    def _changes(self, type_url: str, ts: _TypeState, snapshot: Snapshot):
        desired = snapshot.select(type_url, WILDCARD if ts.wildcard else ts.names)
        updates = {n: r for n, r in desired.items() if ts.client.get(n) != r.version}
        removed = [n for n in ts.client if n not in desired and (ts.wildcard or n in ts.names)]
        return updates, removed

    def _converged(self, type_url: str, ts: _TypeState, snapshot: Snapshot) -> bool:
        updates, removed = self._changes(type_url, ts, snapshot)
        return ts.nonce is None and not updates and not removed

    def _response(self, type_url, ts, snapshot):
        updates, removed = self._changes(type_url, ts, snapshot)
        # Stale clusters and their endpoints go only after the routes that used them (make-before-break).
        if type_url in (CLUSTER, ENDPOINT) and removed and not self._routing_converged(snapshot):
            removed = []
        if not updates and not removed:
            return None
        for name, resource in updates.items():
            ts.client[name] = resource.version
        for name in removed:
            del ts.client[name]
        ts.in_flight = {n: r.version for n, r in updates.items()}
        ts.in_flight_removed = sorted(removed)
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=snapshot.version,
            resources=[discovery_pb2.Resource(name=n, version=updates[n].version, resource=updates[n].packed)
                       for n in sorted(updates)],
            type_url=type_url,
            removed_resources=sorted(removed),
            nonce=self._nonce(ts),
        )
