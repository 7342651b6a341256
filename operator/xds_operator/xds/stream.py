"""What the two ADS protocols (sotw.py, delta.py) share: ordering, nonces, NACK isolation.

Plain logic without grpc: a stream takes requests and snapshot changes and returns the
responses to send, and tells its callbacks what happened. The rules, from envoy's
api-docs/xds_protocol:
- every response has a fresh nonce; a request echoing it ACKs (no error_detail) or NACKs it;
- a version is never sent twice on a stream: not when unchanged, not after a NACK;
- one response per type in flight; in the order CDS, EDS, LDS, RDS, with listeners and
  routes waiting for the ACKs of clusters and endpoints (make-before-break); clusters that
  the new routes no longer use are removed only once the listeners and routes that used them
  have been replaced.

NACK isolation: Envoy rejects a whole response when one resource in it is bad (it decodes and
validates all of them before applying any, and stops at the first watch that fails). So when a
response of several resources that may travel apart is NACKed, its resources are sent again in
halves, each half in its own response, until the NACK names exactly one: that one is rejected
(not resent until it changes) and everything else is applied. Nothing changes while no NACK
comes: one response per type carries everything due, so a change costs no more round trips.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from ..translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET, VIRTUAL_HOST
from .callbacks import StreamCallbacks, StreamInfo
from .snapshot import Snapshot

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], Snapshot | None]

# What each type waits for (besides the ACK of its own last response) before it is sent: the
# certificates (SDS) a cluster or listener uses go first, so a rotated or new certificate is in
# place before what names it changes.
_WAITS_FOR: dict[str, tuple[str, ...]] = {SECRET: (), CLUSTER: (SECRET,), ENDPOINT: (),
                                          LISTENER: (SECRET, CLUSTER, ENDPOINT), ROUTE: (CLUSTER, ENDPOINT),
                                          VIRTUAL_HOST: (CLUSTER, ENDPOINT)}


class TypeState(Protocol):
    nonce: str | None  # nonce of the response awaiting ACK/NACK
    last_nonce: str  # the newest nonce sent, to recognise stale requests
    pending_report: bool  # a reconnecting client's report waits to be checked against a snapshot


S = TypeVar("S", bound=TypeState)
R = TypeVar("R", bound=Message)


def split_in_halves(names: Iterable[str]) -> list[frozenset[str]]:
    """The names of a NACKed response, in the two groups to send next (first half first)."""
    ordered = sorted(names)
    middle = len(ordered) // 2
    return [frozenset(ordered[:middle]), frozenset(ordered[middle:])]


class StreamBase(Generic[S, R]):
    protocol = ""

    def __init__(self, info: StreamInfo, callbacks: StreamCallbacks, snapshot: SnapshotSource) -> None:
        self.info = info
        self.callbacks = callbacks
        self._snapshot = snapshot
        self.types: dict[str, S] = {}
        self._nonces = itertools.count(1)

    def on_change(self) -> list[R]:
        """The snapshot changed."""
        return self.reconcile()

    def _supported(self, type_url: str) -> bool:
        if type_url in PUSH_ORDER:
            return True
        log.warning("%s asked for unsupported type %s", self.info.node_id, type_url)
        return False

    def _nonce(self, ts: S) -> str:
        ts.nonce = ts.last_nonce = f"{self.info.stream_id}-{next(self._nonces)}"
        return ts.nonce

    def reconcile(self) -> list[R]:
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
            if ts.pending_report:
                self._adopt(type_url, ts, snapshot)
                ts.pending_report = False
        responses = []
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is None or state.nonce is not None:
                continue
            if any(self.types[t].nonce is not None for t in _WAITS_FOR[type_url] if t in self.types):
                continue
            response = self._response(type_url, state, snapshot)
            if response is not None:
                responses.append(response)
        return responses

    def _routing_converged(self, snapshot: Snapshot) -> bool:
        """Whether listeners and routes are at the snapshot, so unused clusters may go. A
        rejected route configuration is not: Envoy still runs the old one, and its clusters."""
        return all(self._converged(t, self.types[t], snapshot)
                   for t in (LISTENER, ROUTE, VIRTUAL_HOST) if t in self.types)

    @staticmethod
    def _nack_message(code: int, message: str) -> str:
        return message or f"code {code}"

    def _adopt(self, type_url: str, ts: S, snapshot: Snapshot) -> None:
        """Takes what a reconnecting client reported it runs as ACKed, as far as it is current."""
        raise NotImplementedError

    def _response(self, type_url: str, ts: S, snapshot: Snapshot) -> R | None:
        raise NotImplementedError

    def _converged(self, type_url: str, ts: S, snapshot: Snapshot) -> bool:
        raise NotImplementedError
