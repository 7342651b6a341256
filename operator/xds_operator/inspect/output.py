"""Rendering for the inspection commands: YAML, JSON and aligned text tables."""

from __future__ import annotations

import json
from typing import Any

import yaml


def to_yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120))


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def render(data: Any, output: str) -> str:
    return to_json(data) if output == "json" else to_yaml(data)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in [header, *rows]]
    return "\n".join(lines) + "\n"
