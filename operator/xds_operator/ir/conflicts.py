"""TLS Routes that list the same SNI hostname on a port with different TLS settings.

One SNI filter chain has one TLS setting, the first Route's by namespace/name. A later Route with
the same settings joins that chain (its rules are merged); one with other settings is left out of
it, so that its rules never serve under a certificate or client validation they were not written
for, and gets Accepted=False, reason HostnameConflict, naming the Route and what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..api.conditions import ACCEPTED, HOSTNAME_CONFLICT, Condition
from ..api.objects import joined

if TYPE_CHECKING:
    from .builder import BuiltRoute, ObjectStatus

_TLS_FIELDS = {"certificate_secret": "spec.tls.certificateRef", "ca_secret": "spec.tls.clientValidation",
               "min_version": "spec.tls.minVersion", "alpn": "spec.tls.alpn"}


@dataclass(frozen=True)
class Conflict:
    index: int  # in spec.hostnames
    hostname: str
    winner: BuiltRoute
    fields: tuple[str, ...]  # the spec.tls fields that differ


def _groups_overlap(a: BuiltRoute, b: BuiltRoute) -> bool:
    return not a.proxies or not b.proxies or not set(a.proxies).isdisjoint(b.proxies)


def tls_hostname_conflicts(routes: list[BuiltRoute]) -> dict[int, tuple[BuiltRoute, list[Conflict]]]:
    """The TLS Routes (by index in `routes`, which are in key order) that list a TLS hostname of
    their port that an earlier Route, on a proxy group they share, terminates with other settings."""
    placed: dict[tuple[int, str], list[BuiltRoute]] = {}
    conflicts: dict[int, tuple[BuiltRoute, list[Conflict]]] = {}
    for index, route in enumerate(routes):
        tls = route.tls
        if tls is None or route.left_out or not route.entries:
            continue
        for position, hostname in enumerate(route.hostnames):
            earlier = placed.setdefault((route.port, hostname), [])
            winner = next((w for w in earlier if _groups_overlap(w, route) and w.tls != tls), None)
            if winner is None:
                earlier.append(route)
                continue
            fields = tuple(path for name, path in _TLS_FIELDS.items()
                           if getattr(winner.tls, name) != getattr(tls, name))
            conflicts.setdefault(index, (route, []))[1].append(Conflict(position, hostname, winner, fields))
    return conflicts


def without_hostnames(route: BuiltRoute, conflicts: list[Conflict]) -> BuiltRoute:
    lost = {c.hostname for c in conflicts}
    remaining = tuple(h for h in route.hostnames if h not in lost)
    if not remaining:
        return dataclasses.replace(route, left_out=True)
    return dataclasses.replace(route, hostnames=remaining)


def conflicted(status: ObjectStatus, conflicts: list[Conflict]) -> ObjectStatus:
    """Accepted=False, HostnameConflict, saying for each hostname which Route has it and what differs."""
    parts = [f"spec.hostnames[{c.index}]: {c.hostname} is a TLS hostname of Route {joined(c.winner.key.namespace, c.winner.key.name)} "
             f"on port {c.winner.port} too, with other TLS settings ({', '.join(c.fields)} differ"
             f"{'s' if len(c.fields) == 1 else ''}): that Route, first by namespace/name, serves it and this "
             "Route's rules for it are left out" for c in conflicts]
    message = "; ".join(parts)
    accepted = status.condition(ACCEPTED)
    if accepted is not None and not accepted.status:  # already invalid (serving the last valid spec)
        replacement = dataclasses.replace(accepted, message=f"{accepted.message}; {message}")
    else:
        replacement = Condition(ACCEPTED, False, HOSTNAME_CONFLICT, message)
    return dataclasses.replace(status, conditions=tuple(replacement if c.type == ACCEPTED else c
                                                        for c in status.conditions))
