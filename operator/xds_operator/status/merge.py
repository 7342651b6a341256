"""Programmed across replicas: one replica's own reports plus what the other replicas' proxies did.

Every replica serves xDS to the proxies connected to it and knows only their ACKs and NACKs; each
publishes a compact tally per object (see kube/ack_share.py) and the leader adds them to its own
before it writes the status. A tally made for another generation of the object than the one the
leader reports counts its proxies, but none as synced (that replica has not caught up, or the leader
has not): Programmed says Pending until both agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..api.conditions import PROGRAMMED
from ..api.objects import ObjectKey
from .report import ObjectReport, ProxyCounts, programmed_condition

MAX_NACK_MESSAGES = 5  # per object and replica: the status message stays readable
MAX_NACK_CHARS = 300


@dataclass(frozen=True)
class Tally:
    """What one replica's proxies did with one object."""

    generation: int
    total: int
    synced: int
    nacked: int
    nacks: tuple[str, ...] = ()

    def to_json(self) -> list[object]:
        return [self.generation, self.total, self.synced, self.nacked, list(self.nacks)]

    @classmethod
    def from_json(cls, value: list[object]) -> Tally:
        generation, total, synced, nacked, nacks = value
        return cls(int(str(generation)), int(str(total)), int(str(synced)), int(str(nacked)),
                   tuple(str(n) for n in nacks) if isinstance(nacks, list) else ())


def tallies(reports: Mapping[ObjectKey, ObjectReport]) -> dict[ObjectKey, Tally]:
    """One replica's reports as tallies: only the objects some of its proxies are sent."""
    return {key: Tally(r.generation, r.proxies.total, r.proxies.synced, r.proxies.nacked,
                       tuple(n[:MAX_NACK_CHARS] for n in r.nacks[:MAX_NACK_MESSAGES]))
            for key, r in reports.items() if r.served and r.proxies.total}


def merge(local: Mapping[ObjectKey, ObjectReport], remote: Iterable[Mapping[ObjectKey, Tally]]
          ) -> dict[ObjectKey, ObjectReport]:
    """The local reports with the other replicas' tallies added to their proxy counts and Programmed."""
    others = list(remote)
    merged: dict[ObjectKey, ObjectReport] = {}
    for key, report in local.items():
        found = [t for records in others if (t := records.get(key)) is not None]
        if not report.served or not found:
            merged[key] = report
            continue
        total, synced, nacked = report.proxies.total, report.proxies.synced, report.proxies.nacked
        nacks = list(report.nacks)
        for tally in found:
            total += tally.total
            if tally.generation == report.generation:
                synced += tally.synced
                nacked += tally.nacked
                nacks.extend(tally.nacks)
        counts = ProxyCounts(total, synced, nacked)
        conditions = tuple(c for c in report.conditions if c.type != PROGRAMMED)
        merged[key] = dataclasses.replace(report, proxies=counts, nacks=tuple(sorted(nacks)),
                                          conditions=(*conditions, programmed_condition(counts, tuple(sorted(nacks)))))
    return merged
