"""Per-proxy-group snapshots and change notification (after go-control-plane's SnapshotCache).

Proxy groups are Envoy `node.cluster` values. They are open-ended (any Envoy may connect with
a new one), so the cache keeps a factory from the latest build and makes a group's snapshot
the first time a proxy of that group asks.
"""

from __future__ import annotations

import logging
from typing import Callable

from .snapshot import Snapshot

log = logging.getLogger(__name__)

SnapshotFactory = Callable[[str], Snapshot]
Watcher = Callable[[], None]


class SnapshotCache:
    def __init__(self) -> None:
        self._factory: SnapshotFactory | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    @property
    def ready(self) -> bool:
        """True once a first config has been built: until then there is nothing to serve."""
        return self._factory is not None

    def groups(self) -> set[str]:
        """Groups with a connected proxy: the ones a rebuild makes snapshots for ahead of time.
        (A watcher set is removed when it empties, so every key here has watchers.)"""
        return set(self._watchers)

    def get(self, group: str) -> Snapshot | None:
        snapshot = self._snapshots.get(group)
        if snapshot is None and self._factory is not None:
            snapshot = self._snapshots[group] = self._factory(group)
        return snapshot

    def publish(self, factory: SnapshotFactory, snapshots: dict[str, Snapshot]) -> None:
        """Installs a new build: `snapshots` are precomputed for the known groups (off the event
        loop); other groups are made on demand. Watchers hear of groups whose version changed."""
        self._factory = factory
        old = self._snapshots
        self._snapshots = {g: s for g, s in snapshots.items() if g in self._watchers}
        for group, watchers in self._watchers.items():
            before, after = old.get(group), self.get(group)
            if after is not None and (before is None or before.version != after.version):
                log.debug("group %r: snapshot %s", group, after.version)
                for watcher in list(watchers):
                    watcher()

    def watch(self, group: str, watcher: Watcher) -> None:
        self._watchers.setdefault(group, set()).add(watcher)

    def unwatch(self, group: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(group)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[group]
                self._snapshots.pop(group, None)
