"""ACK tables (resource name -> ACKed version, one per proxy and type) shared between proxies.

A thousand proxies of a group ACK the same resources. Kept as a table each, that is a thousand
copies in memory, and a status pass has to copy every one (the loop changes them in place) and
compute a verdict per object and proxy. Here equal tables are one object, and a table never
changes once made (an ACK makes a new one): a reader takes a reference instead of a copy, and
proxies with the same ACK state are found by identity (status/report.py gives them one verdict).

Making them costs what keeping them did: a SotW ACK carries the whole table, which is compared
with the group's last few tables (no copy when one is equal); a delta ACK carries a change,
which is looked up among the group's last few changes (the proxies of a group get the same
ones, from the same tables), so only the first proxy to ACK a change copies the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

Table = Mapping[str, str]
EMPTY: Table = MappingProxyType({})

_RECENT = 2  # tables kept per group and type, to share (few: an obsolete one is memory held)
_CHANGES = 2  # changes (old table + ACKed update -> new table) kept per group and type

Slot = tuple[str, str]  # (proxy group, type URL)
_Change = tuple[Table, frozenset[tuple[str, str]], tuple[str, ...], Table]  # old, updated, removed, new


class AckTables:
    def __init__(self) -> None:
        self._recent: dict[Slot, list[Table]] = {}
        self._changes: dict[Slot, list[_Change]] = {}
        # The shared resources a recent table was made from (kept alive here, so identity holds).
        self._origins: dict[Slot, list[tuple[object, Table]]] = {}

    def replaced(self, slot: Slot, state: Mapping[str, str]) -> Table:
        """The table of a whole ACKed state (SotW): an equal one made before, or a new one.
        A state that is a view over resources the streams of a group share (sotw.py's, with
        `.resources`) is found by that mapping's identity first: comparing a thousand names
        through a view costs more than the copy (about 0.2 ms per ACK)."""
        if not state:
            return EMPTY
        origin = getattr(state, "resources", None)
        if origin is not None:
            for source, table in self._origins.get(slot, ()):
                if source is origin:
                    return table
        for table in self._recent.get(slot, ()):
            if table == state:
                break
        else:
            table = self._keep(slot, MappingProxyType(dict(state)))
        if origin is not None:
            origins = self._origins.setdefault(slot, [])
            origins.insert(0, (origin, table))
            del origins[_RECENT:]
        return table

    def updated(self, slot: Slot, table: Table, resources: Mapping[str, str], removed: Iterable[str]) -> Table:
        """`table` with ACKed `resources` (name -> version) set and `removed` names deleted (delta)."""
        gone = tuple(removed)
        if not resources and not any(name in table for name in gone):
            return table
        update = frozenset(resources.items())
        changes = self._changes.setdefault(slot, [])
        for old, set_, deleted, new in changes:
            if old is table and set_ == update and deleted == gone:
                return new
        made = dict(table)
        made.update(update)
        for name in gone:
            made.pop(name, None)
        new = self._shared(slot, made)
        changes.insert(0, (table, update, gone, new))
        del changes[_CHANGES:]
        return new

    def forget(self, group: str) -> None:
        """The group has no proxy left."""
        for slots in (self._recent, self._changes, self._origins):
            for slot in [s for s in slots if s[0] == group]:
                del slots[slot]

    def _shared(self, slot: Slot, made: dict[str, str]) -> Table:
        if not made:
            return EMPTY
        for table in self._recent.get(slot, ()):
            if table == made:
                return table
        return self._keep(slot, MappingProxyType(made))

    def _keep(self, slot: Slot, table: Table) -> Table:
        recent = self._recent.setdefault(slot, [])
        recent.insert(0, table)
        del recent[_RECENT:]
        return table
