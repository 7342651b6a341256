"""When to read the objects Routes and Backends reference by GET (kube/secrets.py, kube/configmaps.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..sources.state import StateStore

CHECK_EVERY = 0.2  # seconds between looks at the state's revision


async def read_passes(state: StateStore, refresh: float) -> AsyncIterator[bool]:
    """Yields for a reading pass: when the state changed (its revision, looked at every 0.2 s), so
    that a new reference is read soon, and every `refresh` seconds; True for the periodic pass, in
    which everything referenced is read again (a change to it is served within `refresh`)."""
    known_revision, last_full = -1, 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(CHECK_EVERY)
        full = loop.time() - last_full >= refresh
        if state.revision == known_revision and not full:
            continue
        known_revision = state.revision
        yield full
        if full:
            last_full = loop.time()  # (after the pass, as before: the next one `refresh` after it ended)
