"""The /status document, made in a thread and remade only as far as something changed.

At 20,000 objects the document is 10 MB of JSON: writing it whole for every request cost more
than computing the reports. So each object's JSON is kept with the report it was written from
and written again only when its report differs; and a request that finds the very inputs of
the last one (the same build, snapshots, proxies' ACK states and refusals) gets the same text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from ..api.objects import ObjectKey
from ..collector import collector_paused
from ..ir.builder import BuildResult, ObjectStatus
from ..xds.proxies import ProxyState
from ..xds.snapshot import Snapshot
from .report import Classes, Tally, classes_of, report_of, tally


class StatusPage:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # one request's document at a time (each in its own thread)
        # Per object: the build's status and the tally its JSON was written from, key JSON, status JSON.
        self._members: dict[ObjectKey, tuple[ObjectStatus, Tally, str, str]] = {}
        self._last: tuple[tuple[Any, ...], str] | None = None  # inputs (held: their ids stay valid), text

    def document(self, result: BuildResult | None, groups: dict[str, tuple[Snapshot, list[ProxyState]]],
                 refused: Mapping[str, Mapping[ObjectKey, str]], problems: list[dict[str, Any]], *,
                 indent: bool) -> str:
        """json.dumps({str(key): report.to_status(), ..., "problems": problems}) and a newline;
        indented (by 2) with `indent`."""
        with self._lock, collector_paused():  # many small objects on a large heap, as in builds
            classes = classes_of(groups)
            # Held with the text, so that the ids in the ACK states stay valid.
            inputs = (result, refused, json.dumps(problems), indent,
                      tuple((g, s, tuple((c.state, c.nodes) for c in cs)) for g, (s, cs) in sorted(classes.items())),
                      [c.proxy for _, cs in classes.values() for c in cs])
            if self._last is not None and _same(self._last[0], inputs):
                return self._last[1]
            parts = [] if result is None else self._objects(result, classes, refused, indent)
            if problems:
                parts.append(_member("problems", problems, indent))
            text = _object(parts, indent)
            self._last = (inputs, text)
            return text

    def _objects(self, result: BuildResult, classes: Classes, refused: Mapping[str, Mapping[ObjectKey, str]],
                 indent: bool) -> list[str]:
        """Each object's member; written again only if its status or tally changed."""
        members = self._members
        parts = []
        for key in sorted(result.statuses):
            status, counted = result.statuses[key], tally(key, result, classes, refused)
            kept = members.get(key)
            if kept is None or kept[0] is not status or kept[1] != counted:
                kept = members[key] = (status, counted, json.dumps(str(key)),
                                       json.dumps(report_of(status, counted).to_status()))
            parts.append(kept[2] + ": " + (_indented(kept[3]) if indent else kept[3]))
        if len(members) > len(result.statuses):
            for gone in members.keys() - result.statuses.keys():
                del members[gone]
        return parts


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Inputs compared by identity where they are immutable objects (build, snapshots, refusals)."""
    (result_a, refused_a, problems_a, indent_a, groups_a, _), (result_b, refused_b, problems_b, indent_b, groups_b, _) = a, b
    return (result_a is result_b and refused_a is refused_b and problems_a == problems_b and indent_a == indent_b
            and len(groups_a) == len(groups_b)
            and all(ga == gb and sa is sb and ca == cb for (ga, sa, ca), (gb, sb, cb) in zip(groups_a, groups_b, strict=True)))


def _indented(compact: str) -> str:
    """A member's value as json.dumps(..., indent=2) writes it one level in."""
    return json.dumps(json.loads(compact), indent=2).replace("\n", "\n  ")


def _member(key: str, value: object, indent: bool) -> str:
    return json.dumps(key) + ": " + (json.dumps(value, indent=2).replace("\n", "\n  ") if indent else json.dumps(value))


def _object(parts: list[str], indent: bool) -> str:
    if indent:  # (a JSON string holds no raw newline: only the layout's are indented)
        return "{\n" + ",\n".join("  " + p for p in parts) + "\n}\n" if parts else "{}\n"
    return "{" + ", ".join(parts) + "}\n"
