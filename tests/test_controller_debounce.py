"""When the controller builds: a lone change at once (leading edge), bursts coalesced.

A real Controller, StateStore and SnapshotCache (and, for files, a real FileSource watching a
real directory); no build is faked. What is asserted is how many builds a pattern of changes
makes and what they contain, never how long they took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject
from xds_operator.controlplane.controller import Controller
from xds_operator.sources.files import FileSource
from xds_operator.sources.state import StateStore
from xds_operator.xds.cache import SnapshotCache


def backend(i: int) -> UserObject:
    return UserObject(ObjectKey("Backend", "t", f"b-{i}"),
                      {"endpoints": [{"address": f"10.0.{i // 256 % 256}.{i % 256}", "port": 8080}]})


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[Controller]:
    task = asyncio.create_task(controller.run())
    try:
        await asyncio.wait_for(controller.wait_built(), 10)
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def built_with(controller: Controller, count: int, timeout: float = 30) -> None:
    """Until a build has taken in `count` objects."""
    for _ in range(int(timeout / 0.01)):
        if controller.result is not None and len(controller.result.statuses) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no build with {count} objects after {timeout} s")


async def test_a_change_after_quiet_is_built_at_once_not_after_the_debounce() -> None:
    state = StateStore()
    async with running(Controller(state, SnapshotCache(), debounce=0.01, max_delay=0.01)) as controller:
        assert controller.builds == 1
        # A debounce of a minute from here: a trailing-edge debounce would build this change after 60 s.
        controller.debounce = controller.max_delay = 60
        await asyncio.sleep(0.05)
        state.put(backend(1))
        await asyncio.wait_for(built_with(controller, 1), 10)
        assert controller.builds == 2


async def test_changes_arriving_one_by_one_are_coalesced_like_a_kopf_listing() -> None:
    """5,000 puts, each in its own pass of the event loop (as kopf's handlers put them): the first
    is built at once, all the rest in one build once they stop (not one build each)."""
    state = StateStore()
    async with running(Controller(state, SnapshotCache(), debounce=0.2, max_delay=60)) as controller:
        for i in range(5000):
            state.put(backend(i))
            await asyncio.sleep(0)
        await built_with(controller, 5000)
        await asyncio.sleep(0.5)  # nothing left to build
        assert controller.builds <= 3  # the first build, the leading edge, the rest


async def test_changes_during_a_build_wait_for_quiet_after_it() -> None:
    """A change while a build runs is not a leading edge: it waits for the debounce after it, so
    a stream of changes during long builds does not make a build per build."""
    state = StateStore()
    for i in range(5000):
        state.put(backend(i))
    async with running(Controller(state, SnapshotCache(), debounce=0.2, max_delay=60)) as controller:
        state.put(backend(5000))  # leading edge: a full build of 5,001 objects starts
        await asyncio.sleep(0)
        for i in range(5001, 5100):
            await asyncio.sleep(0.01)  # all within the debounce of the one before
            state.put(backend(i))
        await built_with(controller, 5100)
        await asyncio.sleep(0.5)
        assert controller.builds <= 3


def write_backends(config: Path, count: int) -> None:
    for i in range(count):
        (config / f"b-{i}.yaml").write_text(
            f"apiVersion: {API_VERSION}\nkind: Backend\nmetadata: {{name: b-{i}, namespace: t}}\n"
            f"spec: {{endpoints: [{{address: 10.0.{i // 256}.{i % 256}, port: 8080}}]}}\n")


async def test_thousands_of_files_written_at_once_make_few_builds(tmp_path: Path) -> None:
    """The file source, watching: another process writes 5,000 files (a checkout, a copy). They
    come in scan after scan, often more than `debounce` apart (each scan lists the growing
    directory and reads what is new): a leading edge for every change after `debounce` of quiet
    made a build per scan (24 to 28 here, under load; 11 to 15 with the old trailing debounce).
    The quiet spell needed doubles with each build of the burst (50, 100, 200, 400, 800 ms...):
    once it is longer than the gaps between scans, the rest is one build."""
    files = 5000
    config = tmp_path / "config"
    config.mkdir()
    state = StateStore()
    source = FileSource(config, state)
    async with running(Controller(state, SnapshotCache(), debounce=0.05, max_delay=5)) as controller:
        watching = asyncio.create_task(source.run())
        try:
            staged = tmp_path / "staged"
            staged.mkdir()
            write_backends(staged, files)
            await asyncio.sleep(0.2)  # the watch is in place
            # Another process writes them all (a checkout, a copy), as fast as it can.
            copy = await asyncio.create_subprocess_exec("cp", "-r", f"{staged}/.", str(config))
            assert await copy.wait() == 0
            await built_with(controller, files, timeout=60)
            await asyncio.sleep(0.5)
            # The first build, the leading edge, one per doubling of the quiet spell until it
            # outlasts the gaps between scans, and the last: 5 to 8 here under a load of 6 on
            # 2 cores (where one scan of the growing directory can take a second).
            assert controller.builds <= 10, controller.builds
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
