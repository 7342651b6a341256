"""What every connected Envoy has ACKed or NACKed: the rest of the program reads it from here
(the status writer for `Programmed`, the HTTP endpoint /proxies for people)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ..translate.resources import SHORT_NAMES


@dataclass
class Nack:
    version: str
    message: str
    resources: dict[str, str]  # name -> version of what was rejected
    at: float


@dataclass
class ProxyState:
    stream_id: int
    node_id: str
    group: str  # Envoy node.cluster
    protocol: str  # "sotw" or "delta"
    connected_since: float = field(default_factory=time.time)
    # type URL -> resource name -> the version this proxy ACKed
    acked: dict[str, dict[str, str]] = field(default_factory=dict)
    # type URL -> the last NACK, cleared by the next ACK of that type
    nacks: dict[str, Nack] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "node": self.node_id,
            "cluster": self.group,
            "protocol": self.protocol,
            "connectedSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_since)),
            "acked": {SHORT_NAMES[t]: dict(sorted(v.items())) for t, v in sorted(self.acked.items())},
            "nacks": {SHORT_NAMES[t]: {"version": n.version, "message": n.message, "resources": sorted(n.resources)}
                      for t, n in sorted(self.nacks.items())},
        }


class ProxyRegistry:
    """Connected proxies by stream. Listeners are called after every connect, ACK, NACK and disconnect."""

    def __init__(self) -> None:
        self.proxies: dict[int, ProxyState] = {}
        self._next_id = 0
        self._listeners: list[Callable[[], None]] = []
        # Totals since start, by type URL (for /metrics).
        self.responses: Counter[str] = Counter()
        self.acks: Counter[str] = Counter()
        self.nacks: Counter[str] = Counter()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def connect(self, node_id: str, group: str, protocol: str) -> ProxyState:
        self._next_id += 1
        state = self.proxies[self._next_id] = ProxyState(self._next_id, node_id, group, protocol)
        self._changed()
        return state

    def disconnect(self, proxy: ProxyState) -> None:
        if self.proxies.pop(proxy.stream_id, None) is not None:
            self._changed()

    def acked(self, proxy: ProxyState, type_url: str, resources: dict[str, str], *, replace: bool) -> None:
        """`resources` were ACKed; with `replace` they are the whole state of the type (SotW)."""
        self.acks[type_url] += 1
        current = proxy.acked.setdefault(type_url, {})
        if replace:
            current.clear()
        current.update(resources)
        proxy.nacks.pop(type_url, None)
        self._changed()

    def removed(self, proxy: ProxyState, type_url: str, names: list[str]) -> None:
        for name in names:
            proxy.acked.get(type_url, {}).pop(name, None)

    def nacked(self, proxy: ProxyState, type_url: str, version: str, message: str, resources: dict[str, str]) -> None:
        self.nacks[type_url] += 1
        proxy.nacks[type_url] = Nack(version, message, dict(resources), time.time())
        self._changed()

    def to_list(self) -> list[dict]:
        return [p.to_dict() for p in sorted(self.proxies.values(), key=lambda p: (p.group, p.node_id, p.stream_id))]
