"""What every connected Envoy has ACKed or NACKed: the rest of the program reads it from here
(the status writer for `Programmed`, the HTTP endpoint /proxies for people)."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..api.objects import ObjectKey
from ..translate.resources import SHORT_NAMES
from .ack_tables import EMPTY, AckTables
from .callbacks import NoCallbacks, StreamCallbacks, StreamInfo


@dataclass
class Nack:
    version: str
    message: str
    resources: dict[str, str]  # name -> version of what was rejected
    at: float


@dataclass
class Rejection:
    version: str  # the version of the resource Envoy refused
    message: str
    at: float


@dataclass
class ProxyState:
    stream_id: int
    node_id: str
    group: str  # Envoy node.cluster
    protocol: str  # "sotw" or "delta"
    connected_since: float = field(default_factory=time.time)
    # The tables below are never changed once stored, only replaced (a reader may keep one
    # without a copy); equal ACK tables are shared between proxies (ack_tables.py).
    # type URL -> resource name -> the version this proxy ACKed
    acked: dict[str, Mapping[str, str]] = field(default_factory=dict)
    # type URL -> the last NACK, cleared by the next ACK of that type
    nacks: dict[str, Nack] = field(default_factory=dict)
    # type URL -> resource name -> the version it refused (not sent again), cleared by an ACK of it
    rejected: dict[str, Mapping[str, Rejection]] = field(default_factory=dict)

    def frozen(self) -> ProxyState:
        """A copy another thread may read while the books go on (the tables are never changed in place)."""
        return dataclasses.replace(self, acked=dict(self.acked), nacks=dict(self.nacks), rejected=dict(self.rejected))

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node_id,
            "cluster": self.group,
            "protocol": self.protocol,
            "connectedSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_since)),
            "acked": {SHORT_NAMES[t]: dict(sorted(v.items())) for t, v in sorted(self.acked.items())},
            "nacks": {SHORT_NAMES[t]: {"version": n.version, "message": n.message, "resources": sorted(n.resources)}
                      for t, n in sorted(self.nacks.items())},
            "rejected": {SHORT_NAMES[t]: {name: {"version": r.version, "message": r.message}
                                          for name, r in sorted(rs.items())}
                         for t, rs in sorted(self.rejected.items()) if rs},
        }


class ProxyRegistry(NoCallbacks):
    """Connected proxies by stream: the stream callbacks that keep the books. Listeners are
    called after every connect, ACK, NACK, rejection and disconnect."""

    def __init__(self) -> None:
        self.proxies: dict[int, ProxyState] = {}
        self._listeners: list[Callable[[], None]] = []
        # Totals since start, by type URL (for /metrics).
        self.responses: Counter[str] = Counter()
        self.acks: Counter[str] = Counter()
        self.nacks: Counter[str] = Counter()
        # Told of every stream event after the books are kept (object-level NACK isolation).
        self.observers: list[StreamCallbacks] = []
        # Kept by controlplane/isolation.py: objects held back from a proxy group because its
        # proxies refused a resource made from them (group -> object -> "node: Envoy's message"),
        # replaced whole on change; and totals of searches for them and culprits found.
        self.refused_objects: dict[str, dict[ObjectKey, str]] = {}
        self.isolations = 0
        self.culprits = 0
        self._tables = AckTables()
        self._group_sizes: Counter[str] = Counter()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def on_stream_open(self, stream: StreamInfo) -> None:
        self.proxies[stream.stream_id] = ProxyState(stream.stream_id, stream.node_id, stream.group, stream.protocol)
        self._group_sizes[stream.group] += 1
        self._changed()

    def on_stream_closed(self, stream: StreamInfo) -> None:
        if self.proxies.pop(stream.stream_id, None) is not None:
            self._group_sizes[stream.group] -= 1
            if not self._group_sizes[stream.group]:
                del self._group_sizes[stream.group]
                self._tables.forget(stream.group)
            for observer in self.observers:
                observer.on_stream_closed(stream)
            self._changed()

    def on_response(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
                    removed: Sequence[str]) -> None:
        self.responses[type_url] += 1

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        proxy = self.proxies.get(stream.stream_id)
        if proxy is None:
            return
        self.acks[type_url] += 1
        slot = (stream.group, type_url)
        if state is not None:  # (which includes `resources`)
            table = self._tables.updated(slot, self._tables.replaced(slot, state), {}, removed)
        elif not removed and not proxy.acked.get(type_url):
            # A first ACK (or a reconnecting client's current resources): the whole table, found
            # among the group's by comparison instead of as a change.
            table = self._tables.replaced(slot, resources)
        else:
            table = self._tables.updated(slot, proxy.acked.get(type_url, EMPTY), resources, removed)
        proxy.acked[type_url] = table
        rejected = proxy.rejected.get(type_url)
        if rejected and any(name in rejected for name in (*resources, *removed)):
            cleared = {*resources, *removed}
            proxy.rejected[type_url] = {n: r for n, r in rejected.items() if n not in cleared}
        proxy.nacks.pop(type_url, None)
        for observer in self.observers:
            observer.on_ack(stream, type_url, resources, removed, state)
        self._changed()

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, message: str,
                resources: Mapping[str, str]) -> None:
        proxy = self.proxies.get(stream.stream_id)
        if proxy is None:
            return
        self.nacks[type_url] += 1
        proxy.nacks[type_url] = Nack(version, message, dict(resources), time.time())
        self._changed()

    def on_rejected(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str], message: str) -> None:
        proxy = self.proxies.get(stream.stream_id)
        if proxy is None:
            return
        now = time.time()
        proxy.rejected[type_url] = {**proxy.rejected.get(type_url, {}),
                                    **{name: Rejection(version, message, now) for name, version in resources.items()}}
        for observer in self.observers:
            observer.on_rejected(stream, type_url, resources, message)
        self._changed()

    def frozen(self, *, node: str | None = None, group: str | None = None) -> list[ProxyState]:
        """The connected proxies (of one node id, of one group), as copies to read in another thread."""
        return [p.frozen() for p in sorted(self.proxies.values(), key=lambda p: (p.group, p.node_id, p.stream_id))
                if (node is None or p.node_id == node) and (group is None or p.group == group)]
