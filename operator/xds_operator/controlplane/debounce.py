"""Debouncing, for the loops that turn bursts of changes into one pass (the controller's
rebuilds, the status writer's writes)."""

from __future__ import annotations

import asyncio


async def settle(changed: asyncio.Event, quiet: float, max_delay: float) -> None:
    """Returns after `quiet` seconds in which `changed` was not set, or `max_delay` seconds after
    the call, whichever comes first; `changed` is clear on return (what set it is taken in)."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    while True:
        changed.clear()
        remaining = max_delay - (loop.time() - first)
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(changed.wait(), timeout=min(quiet, remaining))
        except TimeoutError:
            break
    changed.clear()
