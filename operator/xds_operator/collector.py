"""The cyclic garbage collector around bulk work.

A build or a file scan at 10,000 objects allocates millions of objects, almost none of them
garbage, onto a heap of millions more: each allocation burst triggers full collections that
traverse all of it, and those cost 40% of a first build and most of a one-document re-read of
a 20,000-document file. Paused, the garbage of that work is freed by reference counting as
usual; only cycles wait for the next collection after the pause.

What a bulk pause leaves alive (a first build: IR, messages and snapshots, ~800,000 objects at
10,000 Routes) is long-lived; examined by every later full collection, it made each of them
hold the event loop ~0.4 s. So after a pause that left many new objects, the heap is frozen
(`gc.freeze`): collections skip what is alive then. A frozen object that later joins a garbage
cycle (a stream that was open at the freeze and closes) keeps that cycle until the heap is
thawed by `collect_frozen()` (one full collection, which freezes again what survives it): after
many streams have closed of which some were open at a freeze (xds/server.py), and at a bulk
pause at least THAW_AFTER seconds after the last thaw. What can wait for a thaw is bounded by
what was alive at the freezes since.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Net new tracked objects over a pause from which the heap is frozen (a one-Route change at
# 10,000 Routes leaves a few hundred; a first build at 1,000 Routes about 80,000).
FREEZE_AFTER = 20_000
THAW_AFTER = 600.0

_pause_lock = threading.RLock()  # (reentrant: a finalizer run by a collection may pause too)
_pauses = 0
_enabled_before = False
_freeze_requested = False
_thaw_requested = False
_thawed_at = time.monotonic()
_freezes = 0


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pauses collection (process-wide) until the last of overlapping pauses ends. With `freeze`,
    what the pauses leave alive is frozen at that end, if it is a lot."""
    global _pauses, _enabled_before, _freeze_requested, _thaw_requested
    with _pause_lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
        _freeze_requested |= freeze
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0:
                # (while collection is off, generation 0's count is what was allocated and not freed)
                bulk = _freeze_requested and _enabled_before and gc.get_count()[0] >= FREEZE_AFTER
                if gc.get_freeze_count() and (_thaw_requested or
                                              (bulk and time.monotonic() - _thawed_at >= THAW_AFTER)):
                    _collect_frozen()
                elif bulk:
                    _freeze()
                _freeze_requested = _thaw_requested = False
                if _enabled_before:
                    gc.enable()


def collect_frozen() -> bool:
    """Thaws the heap, collects it whole (one full pause), and freezes what survives; while a
    pause is on (a build in another thread), at its end instead (False): a collection in the
    middle of a build would freeze half of it."""
    global _thaw_requested
    with _pause_lock:
        if _pauses:
            _thaw_requested = True
            return False
        _collect_frozen()
        return True


def freezes() -> int:
    """How many times the heap was frozen: what was alive at an earlier count may be frozen."""
    return _freezes


def _collect_frozen() -> None:
    global _thawed_at
    if not gc.get_freeze_count():
        return
    _thawed_at = time.monotonic()
    gc.unfreeze()
    gc.collect()
    _freeze()


def _freeze() -> None:
    global _freezes
    _freezes += 1
    gc.freeze()
