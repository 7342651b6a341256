"""The fast readers (schema.Node.fast_reader) against the full ones, on the examples' Routes and
Backends and on thousands of mutations of them: where the full reader finds no error, the fast
one returns the very same spec; where it finds any, the fast one refuses (and validate() then
reports what the full reader says). The messages themselves are test_validation.py's business.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xds_operator.api.backend_spec import BACKEND_SPEC
from xds_operator.api.fields import Fields
from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.api.route_spec import ROUTE_SPEC
from xds_operator.api.schema import Refused, read_root
from xds_operator.api.validation import validate

ROOT = Path(__file__).parent.parent
SPECS = {"Route": ROUTE_SPEC, "Backend": BACKEND_SPEC}
FULL = {kind: spec.reader() for kind, spec in SPECS.items()}
FAST = {kind: spec.fast_reader() for kind, spec in SPECS.items()}

# What a leaf is replaced with: wrong types, empties, bounds, text Envoy counts in bytes, lone
# surrogates, names of other fields' choices.
LEAVES: list[Any] = [None, "", "x", "X", 0, -1, 1, 302, 65536, 2**63, True, 1.5, [], {}, "€" * 3000, "\ud800",
                     "*", "*.a.b", "/", "/a b", "a/b", "Exact", "RegularExpression", "Prefix", "(", "a{1000}",
                     "10.0.0.1", "01.2.3.4", "fe80::1%eth0", "::ffff:1.2.3.4", "host", "Host", "5xx", "1.3",
                     "h2", "500ms", "25h", "0s", "%" * 9000, "a\nb", "a" * 300]


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("deploy/**/*.yaml")]):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") in SPECS]
    assert len(docs) >= 10, "the examples hold Routes and Backends"
    return docs


def mutations(spec: Any) -> Iterator[Any]:
    """The spec with one change each: every leaf replaced, every key dropped, an unknown key
    added, every list's first item repeated and a null appended."""
    def at(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        yield path
        if isinstance(node, dict):
            for key, child in node.items():
                yield from at(child, (*path, key))
        elif isinstance(node, list):
            for i, child in enumerate(node):
                yield from at(child, (*path, i))

    def changed(path: tuple[Any, ...], change: Any) -> Any:
        out = copy.deepcopy(spec)
        parent = out
        for part in path[:-1]:
            parent = parent[part]
        change(parent, path[-1])
        return out

    for path in at(spec, ()):
        if not path:
            continue
        for leaf in LEAVES:
            yield changed(path, lambda parent, key, leaf=leaf: parent.__setitem__(key, leaf))
        yield changed(path, lambda parent, key: parent.pop(key))  # a key dropped, or a list item
        node = spec
        for part in path:
            node = node[part]
        if isinstance(node, dict):
            yield changed(path, lambda parent, key: parent[key].__setitem__("unknownField", 1))
        if isinstance(node, list) and node:
            yield changed(path, lambda parent, key: parent[key].append(copy.deepcopy(parent[key][0])))
            yield changed(path, lambda parent, key: parent[key].append(None))


def agree(kind: str, spec: Any) -> None:
    f = Fields()
    full = read_root(FULL[kind], f, spec, "spec")
    try:
        fast = FAST[kind](spec)
    except Refused:
        assert f.errors, f"the fast reader refused a valid {kind}: {spec!r}"
        return
    assert not f.errors, f"the fast reader accepted an invalid {kind} ({f.errors[0]}): {spec!r}"
    assert fast == full


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_fast_and_full_readers_agree_on_an_example_and_its_mutations(doc: dict[str, Any]) -> None:
    agree(doc["kind"], doc["spec"])
    cases = 0
    for spec in mutations(doc["spec"]):
        agree(doc["kind"], spec)
        cases += 1
    assert cases > 50


def test_validate_reports_the_full_readers_errors_for_what_the_fast_one_refuses() -> None:
    obj = UserObject(ObjectKey("Route", "t", "r"), {"rules": [{"backends": [{"name": "b", "weight": True}]}]})
    spec, errors = validate(obj)
    assert spec is None and [str(e) for e in errors] == ["spec.rules[0].backends[0].weight: must be an integer, "
                                                         "not a boolean"]
    for namespace, name in (("", "r"), ("T", "r"), ("t", ""), ("t", "R"), ("t", 5), ("a" * 64, "r")):
        spec, errors = validate(UserObject(ObjectKey("Backend", namespace, name),  # type: ignore[arg-type]
                                           {"dns": {"hostname": "a.b", "port": 80}}))
        assert spec is None and errors and errors[0].path.startswith("metadata."), (namespace, name)
