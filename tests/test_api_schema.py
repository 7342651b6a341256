"""The API declared once (api/schema.py, route_spec.py, backend_spec.py): crds/ is what the
declarations make, and what is still said twice inside one declaration agrees.

One source leaves two kinds of pairs that can disagree, both checked here: a pattern is one text
that Python's `re` (the model) and RE2 (the API server) both read, and a cross-field constraint is
a CEL rule beside its Python check.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import celpy
import pytest
import re2

from xds_operator.api import crd
from xds_operator.api.backend_spec import BACKEND_SPEC
from xds_operator.api.durations import DURATION_PATTERN, format_duration_ms, parse_duration_ms
from xds_operator.api.fields import PATH, Fields
from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.api.route_spec import HOSTNAME, ROUTE_SPEC, read_hostname
from xds_operator.api.schema import Duration, IntOrString, List, Node, Object, Rule, String
from xds_operator.api.validation import validate

ROOT = Path(__file__).resolve().parents[1]


def nodes(node: Node, path: str = "spec") -> Iterator[tuple[str, Node]]:
    """Every node of a declaration, variants and the parts of int-or-string included."""
    yield path, node
    if isinstance(node, Object):
        for name, child in node.properties.items():
            yield from nodes(child, f"{path}.{name}")
        for variant in node.variants:
            for name, child in variant.properties.items():
                yield from nodes(child, f"{path}.{name}<{'|'.join(variant.when)}>")
    elif isinstance(node, List):
        yield from nodes(node.items, f"{path}[]")
    elif isinstance(node, IntOrString):
        yield from nodes(node.integer, f"{path}<integer>")
        yield from nodes(node.string, f"{path}<string>")


ALL_NODES = [(kind, path, node) for kind, spec in (("Route", ROUTE_SPEC), ("Backend", BACKEND_SPEC))
             for path, node in nodes(spec)]


# -- crds/ is generated ----------------------------------------------------------------------


def test_crds_are_what_the_declarations_make() -> None:
    """CI's check that crds/ is current (`uv run python -m xds_operator.api.crd` rewrites it)."""
    result = subprocess.run([sys.executable, "-m", "xds_operator.api.crd", "--check"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for name, text in crd.files().items():
        assert (ROOT / "crds" / name).read_text(encoding="utf-8") == text, f"crds/{name} is not current"


def test_the_generator_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd.main(["--check", str(tmp_path)]) == 1
    assert "not current: routes.xds-operator.dev.yaml, backends.xds-operator.dev.yaml" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert crd.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backends.xds-operator.dev.yaml",
                                                          "routes.xds-operator.dev.yaml"]
    assert crd.main(["--check", str(tmp_path)]) == 0
    routes = tmp_path / "routes.xds-operator.dev.yaml"
    routes.write_text(routes.read_text().replace("maxItems: 128", "maxItems: 129"))
    assert crd.main(["--check", str(tmp_path)]) == 1
    assert crd.main([str(tmp_path)]) == 0 and crd.main(["--check", str(tmp_path)]) == 0


def test_every_node_is_described() -> None:
    """kubectl explain shows each field's description (the parts of a variant or of an
    int-or-string add checks to a described field, and have none of their own)."""
    for kind, path, node in ALL_NODES:
        if "<" not in path:
            assert node.description, f"{kind} {path}"


# -- one pattern, two regex engines ------------------------------------------------------------


def _patterns() -> dict[str, str]:
    """Each pattern once, under the first field that has it."""
    found = {DURATION_PATTERN: "durations"}
    for kind, path, node in ALL_NODES:
        if isinstance(node, String) and node.pattern is not None:
            found.setdefault(node.pattern.pattern, f"{kind} {path}")
    return {where: pattern for pattern, where in found.items()}


PATTERNS = _patterns()


def _samples() -> list[str]:
    chars = [chr(c) for c in range(0x3001) if not 0xD800 <= c <= 0xDFFF] + ["\U0001f600", "\u2028", "\u3000"]
    texts = ["", "a", "/", "*", "*.a", "a.b", "5s", "1m30s", "100000s", "/a\n", "a\n", "5s\n", "\n"]
    for c in chars:
        texts += [c, f"a{c}b", f"/a{c}b", f"a.{c}.b", f"*.{c}", f"1{c}s"]
    return texts


@pytest.mark.parametrize("where", sorted(PATTERNS))
def test_python_and_re2_read_a_pattern_alike(where: str) -> None:
    """The model checks with `re` and fullmatch what the API server checks with RE2 and search."""
    python, go = re.compile(PATTERNS[where]), re2.compile(PATTERNS[where])
    assert PATTERNS[where].startswith("^") and PATTERNS[where].endswith("$")
    disagree = [text for text in _samples() if bool(python.fullmatch(text)) != bool(go.search(text))]
    assert disagree == []


def test_python_and_re2_read_the_path_pattern_alike_on_every_code_point() -> None:
    """Paths (health checks, rewrites, redirects, path matches) beyond the samples' range."""
    python, go = re.compile(PATH.pattern), re2.compile(PATH.pattern)
    texts = (f"/a{chr(c)}b" for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    disagree = [hex(ord(t[2])) for t in texts if bool(python.fullmatch(t)) != bool(go.search(t))]
    assert disagree == []
    # The same pattern wherever a path is written.
    with_path = {(kind, path) for kind, path, node in ALL_NODES
                 if isinstance(node, String) and node.pattern is not None and node.pattern.pattern == PATH.pattern}
    assert with_path == {("Route", "spec.rules[].matches[].path.value<Prefix|Exact>"),
                         ("Route", "spec.rules[].rewrite.pathPrefix"), ("Route", "spec.rules[].redirect.path"),
                         ("Backend", "spec.healthCheck.path")}


def test_the_hostname_reader_takes_what_the_hostname_pattern_takes() -> None:
    """Hostnames are read by hand (the message names the DNS name after "*."): the same verdicts."""
    pattern = re2.compile(HOSTNAME.pattern)
    texts = [t for t in _samples() if len(t) < 10] + ["*", "*.", "**", "*.*", "a.*", "*." + "a" * 251,
                                                       "*." + "a" * 252, "a" * 253, "a" * 254]
    max_length = ROUTE_SPEC.properties["hostnames"].items.max_length
    disagree = [t for t in texts if (read_hostname(Fields(), t, "h") is not None)
                != (bool(pattern.search(t)) and len(t) <= max_length)]
    assert disagree == []


# -- durations ---------------------------------------------------------------------------------


def test_duration_rules_state_the_models_bounds() -> None:
    durations = [node for _, _, node in ALL_NODES if isinstance(node, Duration)]
    assert len(durations) == 7
    for node in durations:
        (rule,) = node.rules
        for ms in ([node.minimum_ms] if node.minimum_ms else []) + [node.maximum_ms]:
            text = format_duration_ms(ms)
            assert f"duration('{text}')" in rule.cel and parse_duration_ms(text) == ms
    assert [format_duration_ms(ms) for ms in (1, 999, 1000, 90_000, 3_600_000, 86_400_000)] == \
        ["1ms", "999ms", "1s", "90s", "1h", "24h"]


DURATIONS = ["0s", "0ms", "1ms", "999ms", "1s", "59m", "60m", "1h", "1h0m1ms", "3600s", "3601s", "1440m", "1441m",
             "24h", "24h1ms", "86400s", "86400001ms", "99999h", "1h1h", "5m5ms", "10ms5m", "1h2m3s4ms", "00000s",
             "1h2m3s4ms5ms", "100000s", "1.5s", "1d", "1us", "-1s", "+1s", "1", "s", "", "1H", " 1s", "1s ", "5s\n"]


def test_a_duration_the_crd_admits_is_one_the_model_reads() -> None:
    """The pattern, maxLength and the guarded CEL range rule against Fields.duration."""
    for _, path, node in ALL_NODES:
        if not isinstance(node, Duration):
            continue
        schema, (rule,) = node.openapi(), node.rules
        for text in DURATIONS:
            admitted = len(text) <= schema["maxLength"] and bool(re2.search(schema["pattern"], text)) \
                and cel_holds(rule.cel, text)
            assert admitted == (node.reader()(Fields(), text, path) is not None), (path, text)


# -- CEL rules beside their Python checks -------------------------------------------------------


def _lower_ascii(text: Any) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(text)))


_CEL = celpy.Environment()


@functools.cache
def cel_program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule), functions={"lowerAscii": _lower_ascii})


def cel_holds(rule: str, value: Any) -> bool:
    result = cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    assert isinstance(result, celpy.celtypes.BoolType), (rule, value, result)
    return bool(result)


def _with_defaults(node: Object, value: dict[str, Any]) -> dict[str, Any]:
    """What CEL sees: the object as the API server stored it, its fields' defaults filled in."""
    defaults = {k: n.default for k, n in node.properties.items() if k not in value and n.has_default}
    return {**defaults, **value}


_RULE = ROUTE_SPEC.properties["rules"].items
_RETRIES = _RULE.properties["retries"]
_BACKENDS = _RULE.properties["backends"]
_HEADER_MODIFIERS = [_RULE.properties[where] for where in ("requestHeaders", "responseHeaders")]


def _rule_samples() -> Iterator[tuple[str, Rule, Any, Any]]:
    """(where, rule, what CEL sees, what the Python check sees) for every rule with a check."""
    present = {"backends": [{"name": "b"}], "redirect": {}, "directResponse": {"status": 200}, "timeout": "1s",
               "retries": {}, "rewrite": {}, "mirror": {"backend": "m"}}
    for keep in product((False, True), repeat=len(present)):
        value = {k: v for k, v, on in zip(present, present.values(), keep, strict=False) if on}
        for rule in _RULE.rules:
            yield "rule", rule, _with_defaults(_RULE, value), value
    targets = {"service": {"name": "s", "port": 80}, "endpoints": [{"address": "10.0.0.1", "port": 80}],
               "dns": {"hostname": "a", "port": 80}}
    for keep in product((False, True), repeat=3):
        value = {k: v for k, v, on in zip(targets, targets.values(), keep, strict=False) if on}
        for rule in BACKEND_SPEC.rules:
            yield "backend", rule, _with_defaults(BACKEND_SPEC, value), value
    for codes, retry_on in product([None, [], [503]], [None, [], ["5xx"], ["retriable-status-codes", "5xx"]]):
        value = {k: v for k, v in (("statusCodes", codes), ("retryOn", retry_on)) if v is not None}
        for rule in _RETRIES.rules:
            yield "retries", rule, _with_defaults(_RETRIES, value), value
    for name, modifier in product(("host", "Host", "HOST", "x-host", "hosts", "x"), _HEADER_MODIFIERS):
        for rule in modifier.properties["set"].items.rules:  # (add shares the node)
            yield "header", rule, {"name": name, "value": "v"}, {"name": name, "value": "v"}
        for rule in modifier.properties["remove"].items.rules:
            yield "remove", rule, name, name.lower()  # the Python check sees the name read, in lower case
    tls = {"certificateRef": {"name": "c"}}
    for hostnames, with_tls in product([None, [], ["*"], ["a.example"], ["*.example"], ["a.example", "*"]],
                                       (False, True)):
        value = {"rules": [{"directResponse": {"status": 200}}]}
        value |= {"hostnames": hostnames} if hostnames is not None else {}
        value |= {"tls": tls} if with_tls else {}
        for rule in ROUTE_SPEC.rules:
            yield "route", rule, _with_defaults(ROUTE_SPEC, value), value
    for weights in ([0], [1], [0, 0], [0, 2], [None], [None, 0]):
        refs = [{"name": f"b{i}", **({} if w is None else {"weight": w})} for i, w in enumerate(weights)]
        read = _BACKENDS.reader()(Fields(), refs, "backends")
        for rule in _BACKENDS.rules:
            yield "backends", rule, refs, read


RULE_SAMPLES = list(_rule_samples())
RULES = {id(rule): (where, rule) for where, rule, _, _ in RULE_SAMPLES}


@pytest.mark.parametrize("key", list(RULES), ids=[f"{w}: {r.message}" for w, r in RULES.values()])
def test_cel_rule_and_python_check_agree(key: int) -> None:
    _, rule = RULES[key]
    assert rule.check is not None
    samples = [(cel, python) for _, r, cel, python in RULE_SAMPLES if r is rule]
    disagree = [cel for cel, python in samples if cel_holds(rule.cel, cel) != (rule.check(python) is None)]
    assert disagree == []
    assert {cel_holds(rule.cel, cel) for cel, _ in samples} == {True, False}  # the samples try both ways


def test_every_rule_with_a_check_is_sampled() -> None:
    checked = {id(rule) for _, _, node in ALL_NODES for rule in node.rules if rule.check is not None}
    assert checked == set(RULES)


# -- what changed with one source ---------------------------------------------------------------


def _errors(spec: dict[str, Any]) -> list[tuple[str, str]]:
    _, errors = validate(UserObject(ObjectKey("Route", "ns", "r"), spec))
    return [(e.path, e.message) for e in errors]


@pytest.mark.parametrize("backends,error", [
    ("web", ("spec.rules[0].backends", "must be a list, not a string")),
    ([{"weight": 1}], ("spec.rules[0].backends[0].name", "is required")),
    ([{"name": "a"}] * 65, ("spec.rules[0].backends", "has 65 items; at most 64 are allowed")),
])
def test_backends_that_are_there_but_unusable_get_one_error(backends: Any, error: tuple[str, str]) -> None:
    """minItems counts the items written, as the API server does: a list that is there but bad
    is no longer also told that it "must name at least one backend"."""
    assert _errors({"rules": [{"backends": backends}]}) == [error]
    assert _errors({"rules": [{"backends": []}]}) == [("spec.rules[0].backends", "must name at least one backend")]
