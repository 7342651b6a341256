"""Finding which of the objects that changed in a rejected resource are to blame.

Adaptive group testing by halving: the suspects are the contributors that changed since the
version the proxies last ACKed. A set known to hold a culprit is split, and its first half is
served new (the rest held at their last ACKed version): a NACK means the culprit is in that
half (and the other half is still unknown), an ACK clears it and puts the culprit in the other
half. The sets not known to hold one are tried together, once no set known to hold one is left.
One culprit among n suspects costs about log2(n) + 1 trials, k culprits about k*(log2(n) + 1). Pure logic: whoever serves the trials reports the outcomes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

K = TypeVar("K")


class CulpritSearch(Generic[K]):
    def __init__(self, suspects: Iterable[K]) -> None:
        """`suspects` in a stable order (halves are taken in that order)."""
        self.culprits: list[K] = []
        self.cleared: set[K] = set()
        self.trials = 0  # trials whose outcome came in
        self.trial: frozenset[K] = frozenset()  # the suspects served new now; empty when done
        # Sets still to look at, the next one last, each with whether it is known to hold a culprit.
        self._pending: list[tuple[tuple[K, ...], bool]] = [(tuple(suspects), True)]
        self._if_passed: list[tuple[tuple[K, ...], bool]] = []
        self._if_failed: list[tuple[tuple[K, ...], bool]] = []
        self._next()

    @property
    def done(self) -> bool:
        return not self.trial

    def passed(self) -> None:
        """The proxies ACKed the resource with `trial` served new."""
        self.trials += 1
        self.cleared |= self.trial
        self._pending.extend(self._if_passed)
        self._next()

    def failed(self) -> None:
        """A proxy rejected the resource with `trial` served new."""
        self.trials += 1
        self._pending.extend(self._if_failed)
        self._next()

    def _next(self) -> None:
        self.trial = frozenset()
        while self._pending:
            suspects, guilty = self._pending.pop()
            if not suspects:
                continue
            if guilty and len(suspects) == 1:
                self.culprits.append(suspects[0])
                continue
            if guilty:
                first, second = suspects[:len(suspects) // 2], suspects[len(suspects) // 2:]
                self.trial = frozenset(first)
                self._if_passed = [(second, True)]
                self._if_failed = [(second, False), (first, True)]  # the first half is looked at first
            else:  # every set not known to hold a culprit is tried at once: they are often all clean
                for other in [p for p in self._pending if not p[1]]:
                    suspects += other[0]
                self._pending = [p for p in self._pending if p[1]]
                self.trial = frozenset(suspects)
                self._if_passed = []
                self._if_failed = [(suspects, True)]
            return
