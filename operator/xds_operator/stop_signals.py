"""SIGINT and SIGTERM as one request to stop, for the long-running commands (serve, demo).

The signal usually comes more than once: a terminal, `timeout` or a CI job signals the whole
process group, and `uv run` forwards what it gets to its child as well (SIGINT 200 ms later).
So the first one asks the command to stop, and from then on both are ignored, by the kernel
(SIG_IGN): during the shutdown, which is bounded anyway (children get SIGKILL after a few
seconds), and during the interpreter's exit, where Python puts its own handlers back to the
default and a late SIGINT would kill the process (`uv run` then exits 130) or, earlier, raise
KeyboardInterrupt with children still to reap. asyncio's `loop.add_signal_handler` would also
restore the defaults when the loop closes. For a process's main command only, hence.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_early: signal.Signals | None = None


def ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def catch_early() -> None:
    """From a command's first line: a stop signal before its StopSignals exists is remembered.

    So Ctrl-C while it imports and starts up stops it as cleanly as later, once started.
    """
    def remember(signum: int, _: FrameType | None) -> None:
        global _early
        ignore_stop_signals()
        _early = signal.Signals(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, remember)


class StopSignals:
    """Installed on creation (in the event loop's thread, the main one); `wait()` for the first signal."""

    def __init__(self, what: str = "stopping") -> None:
        self.what = what
        self.received: signal.Signals | None = None
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if _early is not None:
            self.received = _early
            self._loop.call_soon(self._on_loop)
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    async def wait(self) -> signal.Signals:
        await self._event.wait()
        assert self.received is not None
        return self.received

    def _handle(self, signum: int, _: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, perhaps inside the loop's own code: hand over.
        ignore_stop_signals()
        self.received = signal.Signals(signum)
        try:
            self._loop.call_soon_threadsafe(self._on_loop)
        except RuntimeError:  # the loop is closed: the command is done, the process is exiting
            pass

    def _on_loop(self) -> None:
        assert self.received is not None
        log.info("%s: %s", self.received.name, self.what)
        self._event.set()
