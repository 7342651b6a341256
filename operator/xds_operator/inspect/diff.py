"""`xds-operator diff PATH...`: the xDS change applying these files would cause, per proxy group.

Against a running server (--server), the files are applied over the objects it holds, as
`kubectl apply` would, and compared with what it sends now. Against other files (--against),
each set is the whole config, built and translated as `serve` would: usable offline, in CI.
Exit status 0 when nothing changes, 1 when something does, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.conditions import ACCEPTED
from ..api.objects import ObjectKey, UserObject
from ..controlplane.controller import make_snapshot
from ..ir.builder import Builder, BuildResult
from ..sources.files import FileSource
from ..sources.findings import Severity
from ..sources.state import StateStore
from ..status.inspection import snapshot_dump, target_groups
from ..translate import TranslateOptions
from ..translate.resources import SHORT_NAMES
from .client import DEFAULT_SERVER, CommandError, ServerClient
from .output import to_yaml

# group -> type (CDS, EDS, LDS, RDS) -> resource name -> resource as a dict
Config = dict[str, dict[str, dict[str, Any]]]
TYPES = tuple(SHORT_NAMES.values())


@dataclass
class Side:
    """One side of a diff: its objects built, and the config of each proxy group."""

    result: BuildResult
    options: TranslateOptions
    configs: Config = field(default_factory=dict)

    def config(self, group: str) -> dict[str, dict[str, Any]]:
        if group not in self.configs:
            dump = snapshot_dump(group, make_snapshot(self.result, group, self.options))
            self.configs[group] = _by_name(dump)
        return self.configs[group]


def run(args: argparse.Namespace) -> int:
    logging.getLogger("xds_operator.ir").setLevel(logging.CRITICAL)  # problems are reported below, once
    files = _load(args.paths)
    if args.against is not None:
        before = Side(_build(_load(args.against)), TranslateOptions())
        after = Side(_build(files), TranslateOptions())
        groups = sorted(set(target_groups(before.result)) | set(target_groups(after.result)))
    else:
        client = ServerClient(args.server or DEFAULT_SERVER)
        state, options = _server_state(client)
        before_result = _build(state, checked=set())
        applied = set(files.objects)
        for key, status in before_result.statuses.items():
            accepted = status.condition(ACCEPTED)
            if accepted is not None and not accepted.status and key not in applied:
                print(f"note: {key} is invalid on the server (it may serve an earlier generation): "
                      "this diff counts it as not served", file=sys.stderr)
        for obj in files.objects.values():
            state.put(obj)
        for (namespace, name), manifest in files.services.items():
            state.put_service(namespace, name, manifest)
        for (namespace, name), manifest in files.endpoint_slices.items():
            state.put_endpoint_slice(namespace, name, manifest)
        for (namespace, name), manifest in files.secrets.items():
            state.put_secret(namespace, name, manifest)
        for (namespace, name), manifest in files.config_maps.items():
            state.put_config_map(namespace, name, manifest)
        after = Side(_build(state, checked=applied), options)
        connected = {p["group"] for p in client.get("/debug/proxy-status")}
        groups = sorted(set(target_groups(before_result, connected)) | set(target_groups(after.result)))
        before = Side(before_result, options,
                      {g: _by_name(client.get("/debug/config_dump", group=g)) for g in groups})
    totals: Counter[str] = Counter()
    changed: dict[str, list[str]] = {}  # the same changes in several groups are shown once
    for group in groups:
        text, counts = diff_group(before.config(group), after.config(group))
        if counts:
            changed.setdefault(text, []).append(group)
        totals.update(counts)
    for text, same in changed.items():
        print(f"proxy group{'s' if len(same) > 1 else ''} {', '.join(same)}:")
        sys.stdout.write(text)
    changed_groups = sum(len(same) for same in changed.values())
    names = ", ".join(groups)
    if not totals:
        print(f"no change in proxy group{'s' if len(groups) > 1 else ''} {names}")
        return 0
    print(f"{totals['added']} added, {totals['removed']} removed, {totals['changed']} changed"
          f" in {changed_groups} of {len(groups)} proxy groups ({names})")
    return 1


def _load(paths: list[str]) -> StateStore:
    """The objects of `paths` as `serve` would load them (the file source, run once). Its errors
    are errors of the command; warnings and notes are printed and the diff goes on."""
    state = StateStore()
    source = FileSource([Path(p) for p in paths], state)
    quiet = logging.getLogger("xds_operator.sources")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # every finding is reported below, once
    try:
        source.scan()
    finally:
        quiet.setLevel(level)
    findings = source.findings()
    for finding in findings:
        if finding.severity is not Severity.ERROR:
            print(finding, file=sys.stderr)
    problems = [str(f) for f in findings if f.severity is Severity.ERROR]
    if problems:
        raise CommandError("; ".join(problems))
    return state


def _build(state: StateStore, checked: set[ObjectKey] | None = None) -> BuildResult:
    """Builds as the server does. A spec of the `checked` objects (default: all) that the
    server would refuse is an error: the diff would not show what applying it does."""
    result = Builder().build(state)
    problems = []
    for key, status in sorted(result.statuses.items()):
        accepted = status.condition(ACCEPTED)
        if accepted is not None and not accepted.status and (checked is None or key in checked):
            problems.append(f"{state.objects[key].origin or key}: {key}: {accepted.message}")
    if problems:
        raise CommandError("invalid, the server would refuse it: " + "; ".join(problems))
    return result


def _server_state(client: ServerClient) -> tuple[StateStore, TranslateOptions]:
    body = client.get("/debug/state")
    state = StateStore()
    for doc in body["objects"]:
        state.put(UserObject.from_manifest(doc, origin=f"{client.url}"))
    for item in body["services"]:
        state.services[(item["namespace"], item["name"])] = item["manifest"]
    for item in body["endpointSlices"]:
        state.endpoint_slices[(item["namespace"], item["name"])] = item["manifest"]
    return state, TranslateOptions(listener_address=body["options"]["listenerAddress"])


def _by_name(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # (A dump lists VHDS only where there are virtual hosts on their own: delta renderings.)
    return {t: {r["name"]: r["resource"] for r in dump["types"].get(t, {"resources": []})["resources"]} for t in TYPES}


# -- the diff itself ------------------------------------------------------------------------

def diff_group(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> tuple[str, Counter[str]]:
    """The text of one group's changes, and the number of resources added, removed and changed."""
    lines: list[str] = []
    counts: Counter[str] = Counter()
    for t in TYPES:
        old, new = before.get(t, {}), after.get(t, {})
        for name in sorted(old.keys() | new.keys()):
            if name not in old:
                counts["added"] += 1
                lines.append(f"  + {t} {name} (added)")
                lines += ["      + " + line for line in to_yaml(new[name]).splitlines()]
            elif name not in new:
                counts["removed"] += 1
                lines.append(f"  - {t} {name} (removed)")
                lines += ["      - " + line for line in to_yaml(old[name]).splitlines()]
            elif old[name] != new[name]:
                counts["changed"] += 1
                lines.append(f"  ~ {t} {name} (changed)")
                lines += ["      " + line for line in field_changes(old[name], new[name])]
    return "".join(line + "\n" for line in lines), counts


def field_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Changed fields as `~ path: old -> new`, `+ path: value`, `- path: value`. Lists of
    named items (virtual hosts, routes, weighted clusters) are matched by name, and a change
    of their order (route precedence) is a change of its own."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in [*old, *(k for k in new if k not in old)]:
            p = f"{path}.{k}" if path else k
            if k not in old:
                out += _entry("+", p, new[k])
            elif k not in new:
                out += _entry("-", p, old[k])
            else:
                out += field_changes(old[k], new[k], p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        old_names, new_names = _names(old), _names(new)
        if old_names is not None and new_names is not None:
            by_old, by_new = dict(zip(old_names, old, strict=False)), dict(zip(new_names, new, strict=False))
            out = []
            for name in [*new_names, *(n for n in old_names if n not in by_new)]:
                p = f"{path}[{json.dumps(name)}]"
                if name not in by_old:
                    out += _entry("+", p, by_new[name])
                elif name not in by_new:
                    out += _entry("-", p, by_old[name])
                else:
                    out += field_changes(by_old[name], by_new[name], p)
            kept_old = [n for n in old_names if n in by_new]
            kept_new = [n for n in new_names if n in by_old]
            if kept_old != kept_new:
                out.append(f"~ {path} order: {_show(kept_old)} -> {_show(kept_new)}")
            return out
        out = []
        for i in range(max(len(old), len(new))):
            p = f"{path}[{i}]"
            if i >= len(old):
                out += _entry("+", p, new[i])
            elif i >= len(new):
                out += _entry("-", p, old[i])
            else:
                out += field_changes(old[i], new[i], p)
        return out
    return [] if old == new else [f"~ {path}: {_show(old)} -> {_show(new)}"]


def _names(items: list[Any]) -> list[str] | None:
    names = [i.get("name") if isinstance(i, dict) else None for i in items]
    if all(isinstance(n, str) for n in names) and len(set(names)) == len(names):
        return names  # type: ignore[return-value]
    return None


def _entry(sign: str, path: str, value: Any) -> list[str]:
    """`+ path: value` (or `-`); a structure too long for one line follows as YAML, each line marked."""
    shown = _show(value)
    if len(shown) <= 80 or not isinstance(value, (dict, list)):
        return [f"{sign} {path}: {shown}"]
    return [f"{sign} {path}:", *(f"{sign}   {line}" for line in to_yaml(value).splitlines())]


def _show(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))
