"""The controller: state changes -> debounced rebuild (off the event loop) -> snapshot cache.

A burst of changes (a `kubectl apply` of many objects, an editor writing a file in pieces)
becomes one rebuild: it waits for `debounce` seconds of quiet, but never more than
`max_delay` after the first change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..ir.builder import Builder, BuildResult
from ..xds.cache import SnapshotCache
from ..xds.snapshot import ResourceMemo, Snapshot
from ..sources.state import StateStore
from ..translate import TranslateOptions, translate

log = logging.getLogger(__name__)


def make_snapshot(result: BuildResult, group: str, options: TranslateOptions,
                  memo: ResourceMemo | None = None) -> Snapshot:
    snapshot = Snapshot.from_messages(translate(result.config_for(group), options), memo)
    snapshot.check_consistent()
    return snapshot


class Controller:
    def __init__(self, state: StateStore, cache: SnapshotCache, options: TranslateOptions = TranslateOptions(),
                 *, debounce: float = 0.05, max_delay: float = 0.5) -> None:
        self.state = state
        self.cache = cache
        self.options = options
        self.debounce = debounce
        self.max_delay = max_delay
        self.builder = Builder()
        self.memo = ResourceMemo()
        self.result: BuildResult | None = None
        self.builds = 0
        self.last_build_seconds = 0.0
        # Called on the event loop after each build is published (the status writer listens here).
        self.on_build: list[Callable[[BuildResult], None]] = []
        self._dirty = asyncio.Event()
        self._built = asyncio.Event()
        state.subscribe(self._dirty.set)

    async def run(self, *, initial_quiet: float = 0.0, initial_max_delay: float = 0.0) -> None:
        """Builds once, then whenever the state changes; runs until cancelled.

        The first build can wait for `initial_quiet` seconds without changes (at most
        `initial_max_delay`): a source that lists everything at start-up (Kubernetes) then
        gets its whole state into the first config, instead of proxies briefly losing routes.
        """
        self._dirty.set()
        await self._settle(max(initial_quiet, self.debounce), max(initial_max_delay, self.max_delay))
        await self.rebuild()
        while True:
            await self._dirty.wait()
            await self._settle(self.debounce, self.max_delay)
            await self.rebuild()

    async def _settle(self, quiet: float, max_delay: float) -> None:
        """Returns after `quiet` seconds without changes, or `max_delay` after it was called."""
        loop = asyncio.get_running_loop()
        first = loop.time()
        while True:
            self._dirty.clear()
            remaining = max_delay - (loop.time() - first)
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=min(quiet, remaining))
            except TimeoutError:
                break
        self._dirty.clear()

    async def rebuild(self) -> None:
        state = self._frozen_state()
        groups = self.cache.groups()
        started = time.perf_counter()
        try:
            result, snapshots = await asyncio.to_thread(self._build, state, groups)
        except Exception:
            # A bug, never user input (that becomes conditions): keep serving the last config.
            log.exception("rebuild failed; the previous config stays in place")
            return
        self.result = result
        self.builds += 1
        self.last_build_seconds = time.perf_counter() - started
        self.cache.publish(lambda group: make_snapshot(result, group, self.options, self.memo), snapshots)
        log.info("build %d: %d objects, %d proxy groups, %.1f ms", self.builds, len(state.objects), len(groups),
                 (time.perf_counter() - started) * 1000)
        for callback in self.on_build:
            callback(result)
        self._built.set()

    def _build(self, state: StateStore, groups: set[str]) -> tuple[BuildResult, dict[str, Snapshot]]:
        result = self.builder.build(state)
        snapshots = {group: make_snapshot(result, group, self.options, self.memo) for group in groups}
        self.memo.rotate()
        return result, snapshots

    def _frozen_state(self) -> StateStore:
        """A copy for the build thread: sources keep changing the live store on the loop."""
        frozen = StateStore()
        frozen.objects = dict(self.state.objects)
        frozen.services = dict(self.state.services)
        frozen.endpoint_slices = dict(self.state.endpoint_slices)
        frozen.secrets = dict(self.state.secrets)
        frozen.revision = self.state.revision
        return frozen

    async def wait_built(self) -> None:
        await self._built.wait()
