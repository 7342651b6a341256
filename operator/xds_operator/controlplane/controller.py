"""The controller: state changes -> debounced rebuild (off the event loop) -> snapshot cache.

A change to an idle controller is built at once (leading edge): a single edit waits for nothing.
Idle: no build running, and no change for longer than the quiet spell it would wait for (and at
least `idle` seconds). Other changes are a burst (a `kubectl apply` of many objects, a kopf
listing, thousands of files written at once, an editor writing a file in pieces) and are
coalesced: the build waits for that quiet spell, but never more than `max_delay` after the first
change it takes in. The spell starts at `debounce` and doubles with each build of a burst (up to
`max_delay`), so that a burst which trickles in (scan after scan of a directory being filled)
makes a few builds, not one per trickle; it is back at `debounce` once the changes stop for
twice as long as the idle spell.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterable

from ..collector import collector_paused
from ..ir.builder import Builder, BuildResult
from ..sources.state import StateStore
from ..translate import TranslateOptions
from ..xds.cache import SnapshotCache
from ..xds.snapshot import ResourceMemo, Snapshot
from .debounce import settle
from .isolation import RouteIsolation

log = logging.getLogger(__name__)

_RECHECK_SLACK = 0.05  # seconds after a certificate instant that its build runs


def make_snapshot(result: BuildResult, group: str, options: TranslateOptions,
                  memo: ResourceMemo | None = None, isolation: RouteIsolation | None = None) -> Snapshot:
    config = result.config_for(group)
    plan = None
    if isolation is not None:
        # Routes a proxy of the group refused are held at their last ACKed version (isolation.py).
        plan = isolation.plan(result, group)
        config = plan.config
    snapshot = Snapshot.from_config(config, options, memo)
    snapshot.check_consistent()
    if isolation is not None and plan is not None:
        isolation.served(group, plan, snapshot)
    return snapshot


def build_snapshots(builder: Builder, memo: ResourceMemo, state: StateStore, groups: Iterable[str],
                    options: TranslateOptions, isolation: RouteIsolation | None = None
                    ) -> tuple[BuildResult, dict[str, Snapshot]]:
    """One build and the snapshots of the given groups, with the cyclic collector paused (a first
    build at 10,000 objects spent about 40% of its time in full collections)."""
    with collector_paused(freeze=True):
        result = builder.build(state)
        snapshots = {group: make_snapshot(result, group, options, memo, isolation) for group in groups}
        memo.rotate()
    return result, snapshots


class Controller:
    def __init__(self, state: StateStore, cache: SnapshotCache, options: TranslateOptions = TranslateOptions(),
                 *, debounce: float = 0.05, max_delay: float = 0.5, idle: float = 0.2) -> None:
        self.state = state
        self.cache = cache
        self.options = options
        self.debounce = debounce
        self.max_delay = max_delay
        self.idle = max(idle, debounce)
        self.builder = Builder()
        self.memo = ResourceMemo()
        # Builds and the snapshots of newly connected groups (xds/cache.py) run in threads; they
        # share the memo and the isolation's plans, so one at a time.
        self._translating = threading.Lock()
        self.result: BuildResult | None = None
        # Object-level NACK isolation, when wired (app.py).
        self.isolation: RouteIsolation | None = None
        self.builds = 0
        self.last_build_seconds = 0.0
        # time.monotonic() of the first change the last build took in (of the start, for the first).
        self.last_change_at = time.monotonic()
        self._changed_since: float | None = None  # of the first change not yet built
        self._last_change: float | None = None  # time.monotonic() of the latest change, built or not
        self._building = False
        # Whether the first change not yet built came to an idle controller: built at once.
        self._leading = False
        self._quiet = debounce  # the quiet spell the next coalesced build waits for
        # Called on the event loop after each build is published (the status writer listens here).
        self.on_build: list[Callable[[BuildResult], None]] = []
        self._dirty = asyncio.Event()
        self._built = asyncio.Event()
        # A build again when a certificate's check may come out otherwise (BuildResult.recheck_at).
        self._recheck: asyncio.TimerHandle | None = None
        self.recheck_at: datetime.datetime | None = None
        state.subscribe(self._on_change)

    def _on_change(self) -> None:
        now = time.monotonic()
        if self._changed_since is None:
            self._changed_since = now
            gap = None if self._last_change is None else now - self._last_change
            idle = max(self.idle, self._quiet)
            if gap is None or gap >= 2 * idle:
                self._quiet = self.debounce  # the burst is over
            self._leading = (gap is None or gap >= idle) and not self._building
        self._last_change = now
        self._dirty.set()

    async def run(self, *, initial_quiet: float = 0.0, initial_max_delay: float = 0.0) -> None:
        """Builds once, then whenever the state changes; runs until cancelled.

        The first build can wait for `initial_quiet` seconds without changes (at most
        `initial_max_delay`): a source that lists everything at start-up (Kubernetes) then
        gets its whole state into the first config, instead of proxies briefly losing routes.
        """
        self._dirty.set()
        try:
            await settle(self._dirty, max(initial_quiet, self.debounce), max(initial_max_delay, self.max_delay))
            await self.rebuild()
            while True:
                await self._dirty.wait()
                if self._leading:
                    # Built at once; what else this pass of the event loop changes comes along.
                    await asyncio.sleep(0)
                    self._dirty.clear()
                else:
                    await settle(self._dirty, self._quiet, self.max_delay)
                    self._quiet = min(2 * self._quiet, self.max_delay)
                await self.rebuild()
        finally:
            if self._recheck is not None:
                self._recheck.cancel()

    async def rebuild(self) -> None:
        changed_at = self._changed_since if self._changed_since is not None else time.monotonic()
        self._changed_since = None  # what changes from here on is the next build's
        state = self._frozen_state()
        groups = self.cache.groups()
        started = time.perf_counter()
        self._building = True
        try:
            result, snapshots = await asyncio.to_thread(self._build, state, groups)
        except Exception:
            # A bug, never user input (that becomes conditions): keep serving the last config.
            log.exception("rebuild failed; the previous config stays in place")
            self._changed_since = min(changed_at, self._changed_since or changed_at)
            return
        finally:
            self._building = False
        self.last_change_at = changed_at
        self.result = result
        self.builds += 1
        self.last_build_seconds = time.perf_counter() - started
        self.cache.publish(lambda group: self._group_snapshot(result, group), snapshots)
        log.info("build %d: %d objects, %d proxy groups, %.1f ms", self.builds, len(state.objects), len(groups),
                 (time.perf_counter() - started) * 1000)
        self._arm_recheck(result.recheck_at)
        for callback in self.on_build:
            callback(result)
        self._built.set()

    def _arm_recheck(self, at: datetime.datetime | None) -> None:
        """One timer for the next certificate instant, not a poll: a certificate that expires (or
        comes within 14 days of it, or becomes valid) while nothing changes is checked again then."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self.recheck_at = at
        if at is None:
            return
        # After the instant (the wall clock and the loop's may differ by a little): the build's
        # check then sees the certificate on the other side of it.
        delay = max((at - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0) + _RECHECK_SLACK
        self._recheck = asyncio.get_running_loop().call_later(delay, self.rebuild_soon)

    def _build(self, state: StateStore, groups: set[str]) -> tuple[BuildResult, dict[str, Snapshot]]:
        with self._translating:
            return build_snapshots(self.builder, self.memo, state, groups, self.options, self.isolation)

    def _group_snapshot(self, result: BuildResult, group: str) -> Snapshot:
        """A group first seen after the build (its first proxy connected): made in a thread by the cache."""
        with self._translating, collector_paused(freeze=True):
            return make_snapshot(result, group, self.options, self.memo, self.isolation)

    def _frozen_state(self) -> StateStore:
        """A copy for the build thread: sources keep changing the live store on the loop."""
        frozen = StateStore()
        frozen.objects = dict(self.state.objects)
        frozen.services = dict(self.state.services)
        frozen.endpoint_slices = dict(self.state.endpoint_slices)
        frozen.secrets = dict(self.state.secrets)
        frozen.config_maps = dict(self.state.config_maps)
        return frozen

    def rebuild_soon(self) -> None:
        """Something besides the state changes what is served (NACK isolation): build again."""
        self._on_change()

    async def wait_built(self) -> None:
        await self._built.wait()
