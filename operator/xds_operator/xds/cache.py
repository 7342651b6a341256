"""Per-proxy-group snapshots and change notification (after go-control-plane's SnapshotCache).

Proxy groups are Envoy `node.cluster` values. They are open-ended (any Envoy may connect with
a new one), so the cache keeps a factory from the latest build and makes a group's snapshot
when the group's first proxy connects: in a thread, as at 10,000 Routes that takes most of a
second, which the event loop serving every other stream cannot spare. Until it is made the
group's streams have nothing to send (they wait, as before a first build); its watchers hear
when it is there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .snapshot import Snapshot

log = logging.getLogger(__name__)

SnapshotFactory = Callable[[str], Snapshot]
Watcher = Callable[[], None]


class SnapshotCache:
    def __init__(self) -> None:
        self._factory: SnapshotFactory | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._making: dict[str, asyncio.Task[None]] = {}  # group -> its snapshot being made off the loop

    @property
    def ready(self) -> bool:
        """True once a first config has been built: until then there is nothing to serve."""
        return self._factory is not None

    def groups(self) -> set[str]:
        """Groups with a connected proxy: the ones a rebuild makes snapshots for ahead of time.
        (A watcher set is removed when it empties, so every key here has watchers.)"""
        return set(self._watchers)

    def made(self, group: str) -> Snapshot | None:
        """The group's snapshot if it is made; never makes one (what the event loop calls)."""
        return self._snapshots.get(group)

    def get(self, group: str) -> Snapshot | None:
        """The group's snapshot, made here and now if need be (tools and tests: on the event
        loop, use made(), and watch() the group to have it made)."""
        snapshot = self._snapshots.get(group)
        if snapshot is None and self._factory is not None:
            snapshot = self._snapshots[group] = self._factory(group)
        return snapshot

    async def settled(self) -> None:
        """Waits until the snapshots being made for newly connected groups are made, so that
        what is read next (the status pass) counts their proxies as it always did."""
        while self._making:
            await asyncio.wait(list(self._making.values()))

    def publish(self, factory: SnapshotFactory, snapshots: dict[str, Snapshot]) -> None:
        """Installs a new build: `snapshots` are precomputed for the known groups (off the event
        loop); a group watched since they were chosen keeps its last snapshot while its new one
        is made off the loop. Watchers hear of groups whose version changed."""
        self._factory = factory
        old = self._snapshots
        self._snapshots = {g: s for g, s in snapshots.items() if g in self._watchers}
        for group in self._watchers.keys() - self._snapshots.keys():
            if (kept := old.get(group)) is not None:
                self._snapshots[group] = kept
            self._make(group)  # (a making from the last build's factory is superseded)
        for group, snapshot in self._snapshots.items():
            before = old.get(group)
            if before is None or before.version != snapshot.version:
                self._notify(group, snapshot)

    def watch(self, group: str, watcher: Watcher) -> None:
        self._watchers.setdefault(group, set()).add(watcher)
        if group not in self._snapshots and group not in self._making:
            self._make(group)

    def unwatch(self, group: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(group)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[group]
                self._snapshots.pop(group, None)

    def close(self) -> None:
        """Stops making snapshots (the server is stopping)."""
        for task in self._making.values():
            task.cancel()
        self._making.clear()

    def _make(self, group: str) -> None:
        factory = self._factory
        if factory is None:
            return  # the first build makes it
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop to keep free
            self._install(group, factory, factory(group))
            return
        if (earlier := self._making.get(group)) is not None:
            earlier.cancel()
        self._making[group] = task = asyncio.create_task(self._make_off_loop(group, factory),
                                                         name=f"snapshot of group {group!r}")

        def finished(done: asyncio.Task[None]) -> None:
            if self._making.get(group) is done:
                del self._making[group]
        task.add_done_callback(finished)

    async def _make_off_loop(self, group: str, factory: SnapshotFactory) -> None:
        try:
            snapshot = await asyncio.to_thread(factory, group)
        except Exception:
            log.exception("making the snapshot of group %r failed", group)
            return
        self._install(group, factory, snapshot)

    def _install(self, group: str, factory: SnapshotFactory, snapshot: Snapshot) -> None:
        if factory is not self._factory or group not in self._watchers:
            return  # superseded by a newer build (which makes its own), or nobody is left to serve
        before = self._snapshots.get(group)
        self._snapshots[group] = snapshot
        if before is None or before.version != snapshot.version:
            self._notify(group, snapshot)

    def _notify(self, group: str, snapshot: Snapshot) -> None:
        log.debug("group %r: snapshot %s", group, snapshot.version)
        for watcher in list(self._watchers.get(group, ())):
            watcher()
