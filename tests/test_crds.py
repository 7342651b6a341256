"""The CRDs in crds/ against the operator's model (operator/xds_operator/model/validation.py).

The model is the contract: a Route or Backend the API server admits must be one the operator
accepts, and the other way round. Without a cluster, the API server's side is emulated here as
closely as it matters: nulls pruned and defaults applied as structural defaulting does, the
openAPIV3Schema checked with RE2 patterns (Go's regexp, where `$` is the end of the text), list
types (set, map) enforced, unknown fields rejected (kubectl's strict field validation), and every
x-kubernetes-validations rule evaluated with cel-python, `self` bound to its node (no oldSelf),
with the Kubernetes CEL functions the rules use (isIP, lowerAscii) implemented below.

What is checked:
- the CRD files: strict Kubernetes validation, structural schemas, a description on every field,
  valid defaults, printer columns that point at real fields, CEL rules that compile, reference
  real fields and stay far below the API server's cost limits;
- every example (examples/, the demo config) is admitted by the CRD and accepted by the model,
  and defaulting by the API server does not change what the model makes of it;
- invalid samples are rejected by both, each naming the expected field;
- agreement: the model's field names at every level (recorded from its own `Fields.mapping`
  calls) are exactly the CRD's properties, and probes derived from the CRD (bounds, enums, list
  sizes, string lengths, required fields, types, defaults) get the same verdict from both.
"""

from __future__ import annotations

import ast
import copy
import functools
import ipaddress
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import re2
import yaml

from xds_operator.api import fields as model_fields
from xds_operator.api import validation
from xds_operator.api.objects import UserObject

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples"
DEMO_TEMPLATE = ROOT / "operator" / "xds_operator" / "dev" / "demo-config.yaml.tmpl"
KUBERNETES_VERSION = kubernetes_validate.latest_version()
GROUP = "xds-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = ("Route", "Backend")

# The API server's limits for CRD validation rules (apiextensions-apiserver): the estimated cost
# of one rule times how many times it can run per object, and the sum over the whole schema.
PER_RULE_COST_LIMIT = 10_000_000
PER_CRD_COST_LIMIT = 100_000_000

# Short names of built-in resources (kubectl api-resources), which a CRD must not take.
BUILTIN_SHORT_NAMES = {
    "cm", "cs", "csr", "crd", "crds", "ds", "deploy", "ep", "eps", "ev", "hpa", "ing", "ingclass", "limits",
    "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts", "svc",
    "vac", "ipa",
}


# -- loading ---------------------------------------------------------------------------------


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_files() -> list[Path]:
    return sorted(p for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml")


def load_crds() -> dict[str, dict]:
    crds = {}
    for path in crd_files():
        for doc in load_yaml_docs(path):
            if doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


CRD = load_crds()


def version_of(crd: dict) -> dict:
    return next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)


def schema_of(kind: str) -> dict:
    return version_of(CRD[kind])["schema"]["openAPIV3Schema"]


def example_documents() -> list[tuple[str, dict]]:
    """Every Route and Backend in examples/ and the demo config (rendered as the demo does)."""
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for i, doc in enumerate(load_yaml_docs(path)):
            if doc.get("kind") in KINDS:  # (examples/tls.yaml has the Secrets its objects name)
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    demo = Template(DEMO_TEMPLATE.read_text()).substitute(httpbin_port=18080, listener_port=15001)
    for i, doc in enumerate(d for d in yaml.safe_load_all(demo) if d):
        docs.append((f"{DEMO_TEMPLATE.relative_to(ROOT)}#{i}", doc))
    return docs


# Backends by Service, which examples/ leaves out (in file mode no Service would resolve).
SERVICE_BACKENDS = [
    {"apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "by-name", "namespace": "t"},
     "spec": {"service": {"name": "httpbin", "port": "http"}}},
    {"apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "by-number", "namespace": "t"},
     "spec": {"service": {"name": "httpbin", "port": 8080}, "protocol": "HTTP2"}},
]


@functools.lru_cache(maxsize=1)
def base_documents() -> tuple[dict, ...]:
    """Valid documents that together use every field: the starting points of the probes (never
    modified: the probes change copies)."""
    return tuple([doc for _, doc in example_documents()] + SERVICE_BACKENDS)


# -- paths -----------------------------------------------------------------------------------

ITEMS = "[]"  # a schema path step into an array's items


def format_path(steps) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        elif step == ITEMS:
            out += ITEMS
        else:
            out += f".{step}" if out else str(step)
    return out


def schema_nodes(node: dict, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """Every schema node reachable through properties and items (not through anyOf and co)."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from schema_nodes(child, path + (name,))
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], path + (ITEMS,))


def spec_nodes(kind: str) -> Iterator[tuple[tuple, dict]]:
    root = schema_of(kind)
    yield from schema_nodes(root["properties"]["spec"], ("spec",))


def node_at(kind: str, path: tuple) -> dict:
    node = schema_of(kind)
    for step in path:
        node = node["items"] if step == ITEMS else node["properties"][step]
    return node


def locations(value: Any, path: tuple, prefix: tuple = ()) -> Iterator[tuple]:
    """Concrete paths (keys and indices) in a document where the schema path exists."""
    if not path:
        yield prefix
        return
    step, rest = path[0], path[1:]
    if step == ITEMS:
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from locations(item, rest, prefix + (i,))
    elif isinstance(value, dict) and step in value:
        yield from locations(value[step], rest, prefix + (step,))


def get_at(doc: Any, where: tuple) -> Any:
    for step in where:
        doc = doc[step]
    return doc


def set_at(doc: dict, where: tuple, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    parent = get_at(doc, where[:-1])
    parent[where[-1]] = value
    return doc


def delete_at(doc: dict, where: tuple) -> dict:
    doc = copy.deepcopy(doc)
    del get_at(doc, where[:-1])[where[-1]]
    return doc


# -- the API server, emulated ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def to_json_schema(node: dict) -> dict:
    """A structural OpenAPI schema as JSON Schema (draft 7) with the API server's semantics."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(child) for child in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description", "default", "format", "example",
                                                         "externalDocs", "title"):
            continue
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("x-kubernetes-list-type") == "map":
        out["x-list-map-keys"] = node["x-kubernetes-list-map-keys"]
    # Strict field validation (kubectl's default): unknown fields are errors, not pruned silently.
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _re2_pattern(validator, pattern, instance, schema):
    # Go's regexp is RE2, and so is google-re2: `$` is the end of the text, \s is ASCII only.
    if validator.is_type(instance, "string") and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} should match {pattern!r}")


def _list_map_keys(validator, keys, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    seen = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"Duplicate value: { {k: item.get(k) for k in keys} }")
            seen.add(key)


KubeValidator = jsonschema.validators.extend(jsonschema.Draft7Validator,
                                             {"pattern": _re2_pattern, "x-list-map-keys": _list_map_keys})


def apply_defaults(value: Any, schema: dict) -> Any:
    """Structural defaulting: nulls of non-nullable fields pruned (or defaulted), then defaults
    of absent fields, recursively (also inside defaulted values), as the API server does."""
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        out = {}
        for key, item in value.items():
            if item is None and key in props and not props[key].get("nullable"):
                continue
            out[key] = item
        for key, prop in props.items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
        return {key: apply_defaults(item, props[key]) if key in props else item for key, item in out.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _schema_problems(error: jsonschema.ValidationError) -> Iterator[Problem]:
    path = format_path(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"'(.+)' is a required property", error.message)
        yield Problem(format_path(list(error.absolute_path) + [missing.group(1)]), "Required value")
    elif error.validator == "additionalProperties":
        for name in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
            yield Problem(format_path(list(error.absolute_path) + [name]), "field not declared in schema")
    elif error.validator == "anyOf" and error.validator_value and "type" not in error.validator_value[0]:
        # The anyOf here all branch on a `type` discriminator: report what is wrong with the
        # value, not that the discriminator has another value.
        found = False
        for sub in error.context:
            if sub.validator in ("enum", "required") and list(sub.absolute_path)[-1:] == ["type"] \
                    or sub.validator == "required" and "'type'" in sub.message:
                continue
            found = True
            yield from _schema_problems(sub)
        if not found:
            yield Problem(path, "must validate at least one schema (anyOf)")
    else:
        yield Problem(path, f"{error.validator}: {error.message}")


# -- CEL, with the Kubernetes functions the rules use -----------------------------------------


def _is_ip(text) -> celpy.celtypes.BoolType:
    """k8s.io/apiserver/pkg/cel/library/ip.go isIP: netip.ParseAddr, no zone, no IPv4-mapped IPv6."""
    text = str(text)
    if "%" in text:
        return celpy.celtypes.BoolType(False)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(not (address.version == 6 and address.ipv4_mapped is not None))


def _lower_ascii(text) -> celpy.celtypes.StringType:
    """cel-go ext strings lowerAscii: only ASCII letters change."""
    return celpy.celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(text)))


CEL_FUNCTIONS = {"isIP": _is_ip, "lowerAscii": _lower_ascii}
_CEL_ENV = celpy.Environment()
_CEL_PROGRAMS: dict[str, Any] = {}


def cel_program(rule: str):
    if rule not in _CEL_PROGRAMS:
        _CEL_PROGRAMS[rule] = _CEL_ENV.program(_CEL_ENV.compile(rule), functions=CEL_FUNCTIONS)
    return _CEL_PROGRAMS[rule]


def cel_holds(rule: str, value: Any) -> bool:
    try:
        result = cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def cel_problems(value: Any, schema: dict, path: str) -> Iterator[Problem]:
    if value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        if not cel_holds(rule["rule"], value):
            yield Problem(path + rule.get("fieldPath", ""), rule["message"])
    if isinstance(value, dict):
        for key, item in value.items():
            if key in (schema.get("properties") or {}):
                yield from cel_problems(item, schema["properties"][key], f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from cel_problems(item, schema["items"], f"{path}[{i}]")


def admit(doc: dict) -> tuple[dict, list[Problem]]:
    """What the API server makes of a create: the defaulted object and its validation errors."""
    root = schema_of(doc["kind"])
    obj = apply_defaults(copy.deepcopy(doc), root)
    errors = sorted(KubeValidator(to_json_schema(root)).iter_errors(obj), key=lambda e: list(e.absolute_path))
    problems = [p for e in errors for p in _schema_problems(e)]
    # Type errors block the CEL rules (apiextensions-apiserver hasBlockingErr); others do not.
    if not any(e.validator == "type" for e in errors):
        problems += list(cel_problems(obj, root, ""))
    return obj, problems


# -- the model -------------------------------------------------------------------------------


def model(doc: dict):
    spec, errors = validation.validate(UserObject.from_manifest(doc))
    return spec, [Problem(e.path, e.message) for e in errors]


def mentions(problems: list[Problem], path: str) -> bool:
    return any(p.path == path or p.path.startswith(path + ".") or p.path.startswith(path + "[")
               for p in problems)


# -- the CRD files ---------------------------------------------------------------------------


def test_crd_files_validate_strictly_and_are_listed_by_the_kustomization() -> None:
    files = crd_files()
    assert len(files) == 2
    for path in files:
        docs = load_yaml_docs(path)
        assert len(docs) == 1, path
        kubernetes_validate.validate(docs[0], KUBERNETES_VERSION, strict=True)
        crd = docs[0]
        assert path.name == crd["metadata"]["name"] + ".yaml"
    kustomization = load_yaml_docs(CRDS / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in files)
    assert sorted(CRD) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_names_scope_and_version(kind: str) -> None:
    crd = CRD[kind]
    spec = crd["spec"]
    plural = kind.lower() + "s"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind and spec["names"]["plural"] == plural
    assert spec["names"]["singular"] == kind.lower() and spec["names"]["listKind"] == kind + "List"
    assert not set(spec["names"]["shortNames"]) & BUILTIN_SHORT_NAMES
    assert [v["name"] for v in spec["versions"]] == [VERSION]
    version = version_of(crd)
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    root = version["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"]
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}


def test_short_names_are_unique_across_the_crds() -> None:
    names = [n for crd in CRD.values() for n in crd["spec"]["names"]["shortNames"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("kind", KINDS)
def test_status_schema_takes_what_the_operator_writes(kind: str) -> None:
    """The status writer's patch (status.py, kube/status_writer.py) fits the status schema."""
    status = {
        "observedGeneration": 3,
        "conditions": [
            {"type": t, "status": s, "reason": "Reason", "message": "x" * 50_000, "observedGeneration": 3,
             "lastTransitionTime": "2025-01-02T03:04:05Z"}
            for t, s in (("Accepted", "True"), ("ResolvedRefs", "False"), ("Programmed", "Unknown"))
        ],
        "proxies": {"total": 3, "synced": 2, "nacked": 1},
    }
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", "namespace": "t"},
           "spec": next(d["spec"] for d in base_documents() if d["kind"] == kind), "status": status}
    _, problems = admit(doc)
    assert problems == []
    schema = schema_of(kind)["properties"]["status"]
    condition = schema["properties"]["conditions"]["items"]
    assert set(condition["properties"]) == {"type", "status", "reason", "message", "observedGeneration",
                                            "lastTransitionTime"}
    assert set(schema["properties"]["proxies"]["properties"]) == {"total", "synced", "nacked"}
    assert all(p["type"] == "integer" for p in schema["properties"]["proxies"]["properties"].values())


_JSONPATH_CONDITION = re.compile(r'^\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.status$')


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns(kind: str) -> None:
    columns = version_of(CRD[kind])["additionalPrinterColumns"]
    default = [(c["name"], c["jsonPath"]) for c in columns if not c.get("priority")]
    assert default == [
        ("Accepted", '.status.conditions[?(@.type=="Accepted")].status'),
        ("Programmed", '.status.conditions[?(@.type=="Programmed")].status'),
        ("Synced", ".status.proxies.synced"),
        ("Proxies", ".status.proxies.total"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    for column in columns:
        if column["name"] != "Age":
            assert column.get("description"), column
        json_path = column["jsonPath"]
        if (m := _JSONPATH_CONDITION.match(json_path)):
            assert m.group(1) in ("Accepted", "ResolvedRefs", "Programmed")
            node_at(kind, ("status", "conditions", ITEMS, "status"))
        elif json_path != ".metadata.creationTimestamp":
            node = node_at(kind, tuple(json_path.lstrip(".").split(".")))
            expected = {"integer": "integer", "string": "string", "array": "string"}[node["type"]]
            assert column["type"] == expected, column


def test_kustomize_renders_the_crds_unchanged() -> None:
    """The path patterns carry Unicode line separators (U+2028, U+2029) that YAML emitters
    write as line breaks: what `kubectl apply -k` sends must still be the same schema."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(CRDS)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    rendered = {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}
    assert rendered == CRD


# -- structural schemas ----------------------------------------------------------------------

# What a structural schema may say (apiextensions.k8s.io/v1 JSONSchemaProps, minus what
# structural schemas forbid: $ref, definitions, uniqueItems: true, patternProperties...).
ALLOWED_KEYWORDS = {
    "type", "format", "description", "title", "properties", "required", "items", "enum", "default",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "minProperties", "maxProperties", "additionalProperties", "anyOf",
    "allOf", "oneOf", "not", "nullable", "example", "externalDocs",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-validations",
}
# Not allowed inside anyOf, allOf, oneOf or not (besides the int-or-string pattern).
FORBIDDEN_IN_JUNCTORS = {"description", "title", "type", "default", "additionalProperties", "nullable",
                         "x-kubernetes-validations", "x-kubernetes-embedded-resource", "x-kubernetes-list-type",
                         "x-kubernetes-list-map-keys",
                         "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"}
SCALAR_TYPES = {"string", "integer", "number", "boolean"}


def _structural_violations(node: dict, path: str, *, in_junctor: bool = False,
                           outside: dict | None = None) -> Iterator[str]:
    for key in node:
        if key not in ALLOWED_KEYWORDS:
            yield f"{path}: unknown keyword {key}"
    if node.get("uniqueItems"):
        yield f"{path}: uniqueItems is forbidden (use x-kubernetes-list-type: set)"
    if in_junctor:
        for key in FORBIDDEN_IN_JUNCTORS & set(node):
            yield f"{path}: {key} is forbidden inside anyOf/allOf/oneOf/not"
        # Every field named inside a junctor must also be specified outside it.
        for name, child in (node.get("properties") or {}).items():
            if name not in ((outside or {}).get("properties") or {}):
                yield f"{path}.{name}: specified only inside a junctor"
            else:
                yield from _structural_violations(child, f"{path}.{name}", in_junctor=True,
                                                  outside=outside["properties"][name])
        return
    int_or_string = node.get("x-kubernetes-int-or-string")
    if not (node.get("type") or int_or_string or node.get("x-kubernetes-preserve-unknown-fields")):
        yield f"{path}: no type"
    if not node.get("description") and not path.endswith(".metadata"):
        yield f"{path}: no description"
    if int_or_string and ("type" in node or node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]):
        yield f"{path}: int-or-string needs anyOf [integer, string] and no type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties are mutually exclusive"
    if node.get("type") == "array":
        if not isinstance(node.get("items"), dict):
            yield f"{path}: an array needs items"
        if "maxItems" not in node:
            yield f"{path}: no maxItems (CEL cost and request size)"
        list_type = node.get("x-kubernetes-list-type")
        items = node.get("items") or {}
        if list_type == "set" and items.get("type") not in SCALAR_TYPES:
            yield f"{path}: a set lists scalars"
        if list_type == "map":
            for key in node.get("x-kubernetes-list-map-keys") or ["<none>"]:
                prop = (items.get("properties") or {}).get(key)
                if prop is None or prop.get("type") not in SCALAR_TYPES:
                    yield f"{path}: map key {key} must be a scalar property"
                elif key not in items.get("required", []) and "default" not in prop:
                    yield f"{path}: map key {key} must be required or defaulted"
    for key in node.get("required") or []:
        if key not in (node.get("properties") or {}):
            yield f"{path}: required {key} is not a property"
    for name, child in (node.get("properties") or {}).items():
        yield from _structural_violations(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _structural_violations(node["items"], f"{path}[]")
    for junctor in ("anyOf", "allOf", "oneOf"):
        if int_or_string and junctor == "anyOf":
            continue
        for i, branch in enumerate(node.get(junctor) or []):
            yield from _structural_violations(branch, f"{path}.{junctor}[{i}]", in_junctor=True, outside=node)
    if isinstance(node.get("not"), dict):
        yield from _structural_violations(node["not"], f"{path}.not", in_junctor=True, outside=node)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural_and_described(kind: str) -> None:
    root = schema_of(kind)
    assert list(_structural_violations(root, kind)) == []
    # metadata: only its type. The API server refuses anything else there, even a description
    # (apiextensions-apiserver schema/validation.go); kubectl explain shows ObjectMeta's own.
    assert root["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_are_valid(kind: str) -> None:
    """The API server refuses a CRD whose defaults (defaulted themselves) fail the schema or the rules."""
    checked = 0
    for path, node in schema_nodes(schema_of(kind)):
        if "default" not in node:
            continue
        value = apply_defaults(copy.deepcopy(node["default"]), node)
        errors = list(KubeValidator(to_json_schema(node)).iter_errors(value))
        assert errors == [], (path, [e.message for e in errors])
        assert list(cel_problems(value, node, format_path(path))) == []
        checked += 1
    assert checked


# -- CEL rules -------------------------------------------------------------------------------


def all_rules() -> Iterator[tuple[str, tuple, dict, dict]]:
    for kind in KINDS:
        for path, node in schema_nodes(schema_of(kind)):
            for rule in node.get("x-kubernetes-validations") or []:
                yield kind, path, node, rule


def _resolve(node: dict, steps: list[str]) -> dict | None:
    for step in steps:
        node = (node.get("properties") or {}).get(step)
        if node is None:
            return None
    return node


_SELF_FIELDS = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_cel_rules_compile_and_name_real_fields() -> None:
    rules = list(all_rules())
    assert len(rules) >= 15
    for kind, path, node, rule in rules:
        where = f"{kind} {format_path(path)}: {rule['rule']}"
        cel_program(rule["rule"])
        assert rule.get("message"), where
        assert "oldSelf" not in rule["rule"], where  # no transition rules: they would need ratcheting
        for chain in _SELF_FIELDS.findall(rule["rule"]):
            steps = chain.lstrip(".").split(".")
            # A trailing step may be a method (self.name.lowerAscii()); fields come first.
            fields = [s for s in steps if s not in CEL_FUNCTIONS and s not in ("matches", "exists", "all", "size")]
            assert _resolve(node, fields) is not None, f"{where}: {chain} is not in the schema"
        if "fieldPath" in rule:
            assert _resolve(node, rule["fieldPath"].lstrip(".").split(".")) is not None, where


_CALL_ON_SELF = re.compile(r"\b(self(?:\.[A-Za-z_]\w*)*)\.(matches|lowerAscii|exists|all|exists_one|filter|map)\(")
_FUNC_OF_SELF = re.compile(r"\b(bytes|isIP|size|duration)\((self(?:\.[A-Za-z_]\w*)*)\)")
_REGEX_ARG = re.compile(r"\.matches\('([^']*)'\)")


def _size_estimate(node: dict | None) -> int:
    """apiserver/pkg/cel/common/schemas.go: a string's size is 4 bytes per maxLength character."""
    if node is None:
        return 3 * 1024 * 1024
    if node.get("type") == "array":
        return node["maxItems"]
    if "maxLength" in node:
        return node["maxLength"] * 4
    if "enum" in node:
        return max(len(str(v)) for v in node["enum"])
    return 3 * 1024 * 1024  # unbounded: the request size


def estimated_rule_cost(node: dict, rule: str) -> float:
    """A conservative estimate of cel-go's static cost (checker/cost.go) for the calls our rules
    make: regex matches cost string size x regex length / 40, string traversals a tenth of the
    size, list macros their list size times the body."""
    cost = 10.0 + rule.count("has(") + rule.count("&&") + rule.count("||")
    regexes = _REGEX_ARG.findall(rule)
    for target, call in _CALL_ON_SELF.findall(rule):
        size = _size_estimate(_resolve(node, target.split(".")[1:]))
        if call == "matches":
            cost += math.ceil((size + 1) * 0.1) * math.ceil(len(regexes.pop(0)) * 0.25)
        elif call == "lowerAscii":
            cost += math.ceil(size * 0.1)
        else:
            cost += size * 10
    for func, target in _FUNC_OF_SELF.findall(rule):
        if func in ("bytes", "isIP"):
            cost += math.ceil(_size_estimate(_resolve(node, target.split(".")[1:])) * 0.1)
    return cost


def cardinality(kind: str, path: tuple) -> int:
    """How many times a rule at `path` can run for one object: the product of the enclosing lists' maxItems."""
    count, node = 1, schema_of(kind)
    for step in path:
        if step == ITEMS:
            count *= node["maxItems"]
            node = node["items"]
        else:
            node = node["properties"][step]
    return count


def test_cel_rules_stay_far_below_the_api_servers_cost_limits() -> None:
    totals: dict[str, float] = {kind: 0 for kind in KINDS}
    for kind, path, node, rule in all_rules():
        cost = estimated_rule_cost(node, rule["rule"]) * cardinality(kind, path)
        assert cost <= PER_RULE_COST_LIMIT / 2, (kind, format_path(path), rule["rule"], cost)
        totals[kind] += cost
    for kind, total in totals.items():
        assert total <= PER_CRD_COST_LIMIT / 4, (kind, total)


def test_cel_functions_behave_as_in_kubernetes() -> None:
    assert cel_holds("isIP(self)", "10.0.0.1") and cel_holds("isIP(self)", "fd00::1")
    for bad in ("10.0.0.256", "010.0.0.1", "fe80::1%eth0", "::ffff:10.0.0.1", "example.com", ""):
        assert not cel_holds("isIP(self)", bad), bad
    assert cel_holds("self.lowerAscii() == 'host'", "HoSt")
    assert cel_holds("self.lowerAscii() == 'ä'", "ä")
    assert cel_holds("size(bytes(self)) == 2", "é")
    assert cel_holds("duration(self) == duration('90s')", "1m30s")
    assert not cel_holds("self.matches('^a$')", "a\n")  # RE2: $ is the end of the text


# -- examples --------------------------------------------------------------------------------

EXAMPLES_AND_DEMO = example_documents()


def test_examples_exist() -> None:
    kinds = [doc["kind"] for _, doc in EXAMPLES_AND_DEMO]
    assert kinds.count("Route") >= 5 and kinds.count("Backend") >= 8


@pytest.mark.parametrize("origin,doc", EXAMPLES_AND_DEMO, ids=[o for o, _ in EXAMPLES_AND_DEMO])
def test_example_is_admitted_and_accepted(origin: str, doc: dict) -> None:
    assert doc["apiVersion"] == API_VERSION and doc["kind"] in KINDS
    assert doc["metadata"].get("namespace"), "examples name their namespace"
    defaulted, problems = admit(doc)
    assert problems == [], [str(p) for p in problems]
    spec, errors = model(doc)
    assert errors == [], [str(e) for e in errors]
    # The operator sees the object as the API server stored it, defaults filled in: it must
    # make the same of it.
    assert model(defaulted) == (spec, [])


def test_examples_validate_cleanly_with_the_operator() -> None:
    """`xds-operator validate examples/`: valid, and every Backend a Route names is there. (In a
    subprocess: the command configures logging for its process.)"""
    result = subprocess.run([sys.executable, "-m", "xds_operator.cli", "validate", "--strict", str(EXAMPLES)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith(" objects checked, 0 errors, 0 warnings\n")  # --strict: a missing Backend errs


def test_examples_use_every_field() -> None:
    """Every field of both CRDs appears in some example (or in SERVICE_BACKENDS), so the probes
    below have a valid document to start from for each."""
    docs = base_documents()
    for kind in KINDS:
        for path, _ in spec_nodes(kind):
            assert any(next(locations(d, path), None) is not None for d in docs if d["kind"] == kind), \
                f"{kind} {format_path(path)} is in no example"


# -- invalid samples: rejected by both, naming the same field --------------------------------


def route(*rules: dict, **spec: Any) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Route", "metadata": {"name": "r", "namespace": "t"},
            "spec": {**spec, "rules": list(rules)} if rules else spec}


def backend(**spec: Any) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "b", "namespace": "t"},
            "spec": spec}


def fwd(**rule: Any) -> dict:
    return {"backends": [{"name": "web"}], **rule}


def match(**m: Any) -> dict:
    return fwd(matches=[m])


EP = [{"address": "10.0.0.1", "port": 80}]

INVALID = [
    # Backend: targets
    ("backend-no-target", backend(), "spec"),
    ("backend-two-targets", backend(endpoints=EP, dns={"hostname": "a.example", "port": 80}), "spec"),
    ("backend-no-spec", {"apiVersion": API_VERSION, "kind": "Backend", "metadata": {"name": "b"}}, "spec"),
    ("backend-unknown-field", backend(endpoints=EP, timeout="1s"), "spec.timeout"),
    ("endpoints-empty", backend(endpoints=[]), "spec.endpoints"),
    ("endpoint-not-ip", backend(endpoints=[{"address": "example.com", "port": 80}]), "spec.endpoints[0].address"),
    ("endpoint-bad-ipv4", backend(endpoints=[{"address": "10.0.0.256", "port": 80}]), "spec.endpoints[0].address"),
    ("endpoint-no-port", backend(endpoints=[{"address": "10.0.0.1"}]), "spec.endpoints[0].port"),
    ("endpoint-port-0", backend(endpoints=[{"address": "10.0.0.1", "port": 0}]), "spec.endpoints[0].port"),
    ("service-upper-case", backend(service={"name": "Web", "port": 80}), "spec.service.name"),
    ("service-port-name-digits", backend(service={"name": "web", "port": "8080"}), "spec.service.port"),
    ("service-port-too-big", backend(service={"name": "web", "port": 70000}), "spec.service.port"),
    ("service-port-bool", backend(service={"name": "web", "port": True}), "spec.service.port"),
    ("service-no-port", backend(service={"name": "web"}), "spec.service.port"),
    ("dns-underscore", backend(dns={"hostname": "a_b.example", "port": 80}), "spec.dns.hostname"),
    ("dns-trailing-dot", backend(dns={"hostname": "a.example.", "port": 80}), "spec.dns.hostname"),
    ("protocol-lower-case", backend(endpoints=EP, protocol="http2"), "spec.protocol"),
    ("load-balancer-unknown", backend(endpoints=EP, loadBalancer="WEIGHTED"), "spec.loadBalancer"),
    # Backend: durations and bounds
    ("connect-timeout-zero", backend(endpoints=EP, connectTimeout="0s"), "spec.connectTimeout"),
    ("connect-timeout-over-1h", backend(endpoints=EP, connectTimeout="1h1s"), "spec.connectTimeout"),
    ("connect-timeout-go-syntax", backend(endpoints=EP, connectTimeout="1.5s"), "spec.connectTimeout"),
    ("connect-timeout-days", backend(endpoints=EP, connectTimeout="1d"), "spec.connectTimeout"),
    ("connect-timeout-number", backend(endpoints=EP, connectTimeout=5), "spec.connectTimeout"),
    ("health-check-relative-path", backend(endpoints=EP, healthCheck={"path": "healthz"}), "spec.healthCheck.path"),
    ("health-check-path-query", backend(endpoints=EP, healthCheck={"path": "/h?x=1"}), "spec.healthCheck.path"),
    ("health-check-path-nbsp", backend(endpoints=EP, healthCheck={"path": "/h\u00a0x"}), "spec.healthCheck.path"),
    ("health-check-interval-25h", backend(endpoints=EP, healthCheck={"interval": "25h"}),
     "spec.healthCheck.interval"),
    ("health-check-threshold-0", backend(endpoints=EP, healthCheck={"healthyThreshold": 0}),
     "spec.healthCheck.healthyThreshold"),
    ("circuit-breaker-0", backend(endpoints=EP, circuitBreaker={"maxRequests": 0}),
     "spec.circuitBreaker.maxRequests"),
    ("circuit-breaker-2^31", backend(endpoints=EP, circuitBreaker={"maxRetries": 2**31}),
     "spec.circuitBreaker.maxRetries"),
    ("outlier-percent-101", backend(endpoints=EP, outlierDetection={"maxEjectionPercent": 101}),
     "spec.outlierDetection.maxEjectionPercent"),
    ("outlier-ejection-0s", backend(endpoints=EP, outlierDetection={"baseEjectionTime": "0ms"}),
     "spec.outlierDetection.baseEjectionTime"),
    # Route: spec
    ("route-no-rules", route(), "spec.rules"),
    ("route-port-privileged", route(fwd(), port=80), "spec.port"),
    ("route-port-string", route(fwd(), port="8080"), "spec.port"),
    ("hostname-upper-case", route(fwd(), hostnames=["Example.com"]), "spec.hostnames[0]"),
    ("hostname-inner-wildcard", route(fwd(), hostnames=["a.*.example.com"]), "spec.hostnames[0]"),
    ("hostname-with-port", route(fwd(), hostnames=["example.com:8080"]), "spec.hostnames[0]"),
    ("hostname-twice", route(fwd(), hostnames=["example.com", "example.com"]), "spec.hostnames"),
    ("proxy-empty", route(fwd(), proxies=[""]), "spec.proxies[0]"),
    ("rule-unknown-field", route(fwd(weight=1)), "spec.rules[0].weight"),
    # Route: rule actions
    ("rule-no-action", route({"matches": [{"path": {"value": "/"}}]}), "spec.rules[0]"),
    ("rule-two-actions", route(fwd(redirect={"scheme": "https"})), "spec.rules[0]"),
    ("rule-backends-and-direct", route(fwd(directResponse={"status": 200})), "spec.rules[0]"),
    ("timeout-without-backends", route({"redirect": {"scheme": "https"}, "timeout": "1s"}), "spec.rules[0].timeout"),
    ("retries-without-backends", route({"directResponse": {"status": 200}, "retries": {}}),
     "spec.rules[0].retries"),
    ("rewrite-without-backends", route({"redirect": {"path": "/x"}, "rewrite": {"pathPrefix": "/"}}),
     "spec.rules[0].rewrite"),
    ("mirror-without-backends", route({"directResponse": {"status": 204}, "mirror": {"backend": "m"}}),
     "spec.rules[0].mirror"),
    ("backends-empty", route({"backends": []}), "spec.rules[0].backends"),
    ("backends-all-weights-zero", route({"backends": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}),
     "spec.rules[0].backends"),
    ("backend-named-twice", route({"backends": [{"name": "a"}, {"name": "a", "weight": 2}]}),
     "spec.rules[0].backends"),
    ("backend-ref-no-name", route({"backends": [{"weight": 1}]}), "spec.rules[0].backends[0].name"),
    ("backend-ref-negative-weight", route({"backends": [{"name": "a", "weight": -1}]}),
     "spec.rules[0].backends[0].weight"),
    ("timeout-negative", route(fwd(timeout="-1s")), "spec.rules[0].timeout"),
    ("timeout-over-24h", route(fwd(timeout="24h1ms")), "spec.rules[0].timeout"),
    ("timeout-five-parts", route(fwd(timeout="1h1m1s1ms1ms")), "spec.rules[0].timeout"),
    ("timeout-six-digits", route(fwd(timeout="100000ms")), "spec.rules[0].timeout"),
    # Route: matches
    ("path-without-value", route(match(path={"type": "Prefix"})), "spec.rules[0].matches[0].path.value"),
    ("path-relative", route(match(path={"value": "api"})), "spec.rules[0].matches[0].path.value"),
    ("path-exact-with-query", route(match(path={"type": "Exact", "value": "/a?b"})),
     "spec.rules[0].matches[0].path.value"),
    ("path-with-space", route(match(path={"value": "/a b"})), "spec.rules[0].matches[0].path.value"),
    ("path-with-line-separator", route(match(path={"value": "/a\u2028b"})), "spec.rules[0].matches[0].path.value"),
    ("path-with-nul", route(match(path={"value": "/a\x00"})), "spec.rules[0].matches[0].path.value"),
    ("path-regex-empty", route(match(path={"type": "RegularExpression", "value": ""})),
     "spec.rules[0].matches[0].path.value"),
    ("path-type-unknown", route(match(path={"type": "PathPrefix", "value": "/"})),
     "spec.rules[0].matches[0].path.type"),
    ("header-without-value", route(match(headers=[{"name": "x-a"}])), "spec.rules[0].matches[0].headers[0].value"),
    ("header-without-name", route(match(headers=[{"value": "a"}])), "spec.rules[0].matches[0].headers[0].name"),
    ("header-name-with-colon", route(match(headers=[{"name": ":authority", "value": "a"}])),
     "spec.rules[0].matches[0].headers[0].name"),
    ("header-name-with-space", route(match(headers=[{"name": "x a", "value": "a"}])),
     "spec.rules[0].matches[0].headers[0].name"),
    ("header-value-with-newline", route(match(headers=[{"name": "x-a", "value": "a\nb"}])),
     "spec.rules[0].matches[0].headers[0].value"),
    ("header-regex-empty", route(match(headers=[{"name": "x-a", "value": "", "type": "RegularExpression"}])),
     "spec.rules[0].matches[0].headers[0].value"),
    ("header-regex-too-long", route(match(headers=[{"name": "x-a", "value": "a" * 1025,
                                                    "type": "RegularExpression"}])),
     "spec.rules[0].matches[0].headers[0].value"),
    ("header-match-type-prefix", route(match(headers=[{"name": "x-a", "value": "a", "type": "Prefix"}])),
     "spec.rules[0].matches[0].headers[0].type"),
    ("query-without-value", route(match(queryParams=[{"name": "q"}])),
     "spec.rules[0].matches[0].queryParams[0].value"),
    ("query-name-empty", route(match(queryParams=[{"name": "", "value": "1"}])),
     "spec.rules[0].matches[0].queryParams[0].name"),
    ("query-value-with-cr", route(match(queryParams=[{"name": "q", "value": "a\rb"}])),
     "spec.rules[0].matches[0].queryParams[0].value"),
    ("method-lower-case", route(match(method="get")), "spec.rules[0].matches[0].method"),
    ("match-unknown-field", route(match(host="a")), "spec.rules[0].matches[0].host"),
    ("too-many-headers", route(match(headers=[{"name": f"x-{i}", "value": "1"} for i in range(33)])),
     "spec.rules[0].matches[0].headers"),
    # Route: retries, rewrite, headers
    ("retries-11-attempts", route(fwd(retries={"attempts": 11})), "spec.rules[0].retries.attempts"),
    ("retry-on-unknown", route(fwd(retries={"retryOn": ["5xx", "timeout"]})), "spec.rules[0].retries.retryOn[1]"),
    ("status-codes-without-retriable", route(fwd(retries={"statusCodes": [503]})),
     "spec.rules[0].retries.statusCodes"),
    ("status-codes-retry-on-other", route(fwd(retries={"retryOn": ["5xx"], "statusCodes": [503]})),
     "spec.rules[0].retries.statusCodes"),
    ("status-code-600", route(fwd(retries={"retryOn": ["retriable-status-codes"], "statusCodes": [600]})),
     "spec.rules[0].retries.statusCodes[0]"),
    ("per-try-timeout-zero", route(fwd(retries={"perTryTimeout": "0s"})), "spec.rules[0].retries.perTryTimeout"),
    ("rewrite-relative-prefix", route(fwd(rewrite={"pathPrefix": "api"})), "spec.rules[0].rewrite.pathPrefix"),
    ("rewrite-hostname-upper", route(fwd(rewrite={"hostname": "API.internal"})), "spec.rules[0].rewrite.hostname"),
    ("set-host-header", route(fwd(requestHeaders={"set": [{"name": "Host", "value": "a"}]})),
     "spec.rules[0].requestHeaders.set[0].name"),
    ("add-host-header-response", route(fwd(responseHeaders={"add": [{"name": "host", "value": "a"}]})),
     "spec.rules[0].responseHeaders.add[0].name"),
    ("remove-host-header", route(fwd(requestHeaders={"remove": ["HOST"]})), "spec.rules[0].requestHeaders.remove[0]"),
    ("remove-pseudo-header", route(fwd(requestHeaders={"remove": [":path"]})),
     "spec.rules[0].requestHeaders.remove[0]"),
    ("set-header-value-with-lf", route(fwd(requestHeaders={"set": [{"name": "x-a", "value": "a\nb"}]})),
     "spec.rules[0].requestHeaders.set[0].value"),
    ("set-header-without-value", route(fwd(responseHeaders={"set": [{"name": "x-a"}]})),
     "spec.rules[0].responseHeaders.set[0].value"),
    ("set-header-value-too-long", route(fwd(responseHeaders={"set": [{"name": "x-a", "value": "a" * 8193}]})),
     "spec.rules[0].responseHeaders.set[0].value"),
    # Route: redirect, direct response, mirror
    ("redirect-scheme-ftp", route({"redirect": {"scheme": "ftp"}}), "spec.rules[0].redirect.scheme"),
    ("redirect-code-200", route({"redirect": {"statusCode": 200}}), "spec.rules[0].redirect.statusCode"),
    ("redirect-code-string", route({"redirect": {"statusCode": "301"}}), "spec.rules[0].redirect.statusCode"),
    ("redirect-relative-path", route({"redirect": {"path": "new"}}), "spec.rules[0].redirect.path"),
    ("redirect-port-0", route({"redirect": {"port": 0}}), "spec.rules[0].redirect.port"),
    ("redirect-hostname-wildcard", route({"redirect": {"hostname": "*.example.com"}}),
     "spec.rules[0].redirect.hostname"),
    ("direct-response-no-status", route({"directResponse": {"body": "x"}}), "spec.rules[0].directResponse.status"),
    ("direct-response-199", route({"directResponse": {"status": 199}}), "spec.rules[0].directResponse.status"),
    ("direct-response-body-4097-bytes", route({"directResponse": {"status": 200, "body": "é" * 2049}}),
     "spec.rules[0].directResponse.body"),
    ("direct-response-body-4097-chars", route({"directResponse": {"status": 200, "body": "a" * 4097}}),
     "spec.rules[0].directResponse.body"),
    ("mirror-without-backend", route(fwd(mirror={"percent": 10})), "spec.rules[0].mirror.backend"),
    ("mirror-percent-101", route(fwd(mirror={"backend": "m", "percent": 101})), "spec.rules[0].mirror.percent"),
]


@pytest.mark.parametrize("doc,field", [(d, f) for _, d, f in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_sample_is_rejected_by_both(doc: dict, field: str) -> None:
    _, problems = admit(doc)
    assert mentions(problems, field), f"CRD: {[str(p) for p in problems]}"
    _, errors = model(doc)
    assert mentions(errors, field), f"model: {[str(e) for e in errors]}"


# Values a Python `re` pattern ending in `$` would let through (a final newline), and IPv6 forms
# that Python's ipaddress accepts but Kubernetes' isIP() refuses: both sides reject them.
EDGE_CASES = [
    ("path-trailing-newline", route(match(path={"value": "/api\n"})), "spec.rules[0].matches[0].path.value"),
    ("rewrite-trailing-newline", route(fwd(rewrite={"pathPrefix": "/api\n"})), "spec.rules[0].rewrite.pathPrefix"),
    ("hostname-trailing-newline", route(fwd(), hostnames=["example.com\n"]), "spec.hostnames[0]"),
    ("timeout-trailing-newline", route(fwd(timeout="5s\n")), "spec.rules[0].timeout"),
    ("header-name-trailing-newline", route(fwd(requestHeaders={"set": [{"name": "x-a\n", "value": "b"}]})),
     "spec.rules[0].requestHeaders.set[0].name"),
    ("service-name-trailing-newline", backend(service={"name": "web\n", "port": 80}), "spec.service.name"),
    ("endpoint-ipv6-zone", backend(endpoints=[{"address": "fe80::1%eth0", "port": 80}]), "spec.endpoints[0].address"),
    ("endpoint-ipv4-mapped", backend(endpoints=[{"address": "::ffff:10.0.0.1", "port": 80}]),
     "spec.endpoints[0].address"),
    ("no-rules", route(rules=[]), "spec.rules"),
]


@pytest.mark.parametrize("doc,field", [(d, f) for _, d, f in EDGE_CASES], ids=[i for i, _, _ in EDGE_CASES])
def test_edge_cases_are_rejected_by_both(doc: dict, field: str) -> None:
    _, problems = admit(doc)
    assert mentions(problems, field), [str(p) for p in problems]
    _, errors = model(doc)
    assert mentions(errors, field), [str(e) for e in errors]


def test_left_to_the_operator() -> None:
    """What no schema can check is the operator's job, reported in the Accepted condition."""
    for regex in ("(", "a{1001}", "(a|b)" * 40):
        doc = route(match(path={"type": "RegularExpression", "value": "/" + regex}))
        assert admit(doc)[1] == []
        assert mentions(model(doc)[1], "spec.rules[0].matches[0].path.value"), regex
    # 5,462 characters (maxLength is 8,192) but 16,386 bytes: more than Envoy's 16,384.
    doc = route(fwd(responseHeaders={"set": [{"name": "x-a", "value": "€" * 5462}]}))
    assert admit(doc)[1] == []
    assert mentions(model(doc)[1], "spec.rules[0].responseHeaders.set[0].value")


# -- agreement with the model ----------------------------------------------------------------


def sample_value(schema: dict) -> Any:
    """A value with every field of the schema (not necessarily valid)."""
    if schema.get("x-kubernetes-int-or-string"):
        return 80
    kind = schema.get("type")
    if kind == "object":
        return {name: sample_value(child) for name, child in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample_value(schema["items"])]
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "integer":
        return schema.get("minimum", 1)
    return "x"


def _mapping_call_lines() -> set[int]:
    tree = ast.parse(Path(validation.__file__).read_text())
    return {node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "mapping"}


def model_field_names(kind: str) -> tuple[dict[str, set[str]], set[int]]:
    """The field names the model accepts at each path, recorded from its own Fields.mapping
    calls while it reads a document that has every field, and the source lines of those calls."""
    recorded: dict[str, set[str]] = {}
    lines: set[int] = set()
    original = model_fields.Fields.mapping
    source = Path(validation.__file__).resolve()

    def recording(self, value, path, allowed):
        allowed = set(allowed)
        caller = sys._getframe(1)
        if Path(caller.f_code.co_filename).resolve() == source:
            lines.add(caller.f_lineno)
        key = re.sub(r"\[\d+\]", "", path)
        assert recorded.setdefault(key, allowed) == allowed, f"{key}: two different field sets"
        return original(self, value, path, allowed)

    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", "namespace": "t"},
           "spec": sample_value(schema_of(kind)["properties"]["spec"])}
    model_fields.Fields.mapping = recording
    try:
        validation.validate(UserObject.from_manifest(doc))
    finally:
        model_fields.Fields.mapping = original
    return recorded, lines


def crd_field_names(kind: str) -> dict[str, set[str]]:
    return {".".join(s for s in path if s != ITEMS): set(node["properties"])
            for path, node in spec_nodes(kind) if node.get("type") == "object"}


def test_field_names_agree_with_the_model() -> None:
    all_lines: set[int] = set()
    for kind in KINDS:
        recorded, lines = model_field_names(kind)
        all_lines |= lines
        assert crd_field_names(kind) == recorded, kind
    # Every mapping the model reads was reached: no object of the model is missing from the CRD.
    assert all_lines == _mapping_call_lines()


def _first_location(kind: str, path: tuple, *, parent: bool = False) -> tuple[dict, tuple] | None:
    """The first base document (and where in it) that has the field, or with `parent` its parent
    object; None if none has (test_examples_use_every_field reports that)."""
    for doc in base_documents():
        if doc["kind"] != kind:
            continue
        where = next(locations(doc, path[:-1] if parent else path), None)
        if where is not None:
            return doc, where + ((path[-1],) if parent else ())
    return None


def _verdicts(doc: dict) -> tuple[list[Problem], list[Problem]]:
    return admit(doc)[1], model(doc)[1]


def probes(kind: str) -> Iterator[tuple[str, dict, str, bool]]:
    """(what, document, field, must_reject) for each bound, enum, list size, length, type and
    required field of the CRD, applied to a valid example that has the field. must_reject
    False means only that the CRD and the model must agree."""
    for path, node in spec_nodes(kind):
        if path == ("spec",):
            continue
        found = _first_location(kind, path)
        if found is None:
            continue
        doc, where = found
        field = format_path(where)
        value = get_at(doc, where)
        name = format_path(path)
        # The wrong type.
        wrong = {"object": [], "array": {}, "string": 5, "integer": "1"}.get(node.get("type"), True)
        yield f"{name}: type", set_at(doc, where, wrong), field, True
        if "minimum" in node:
            yield f"{name}: minimum - 1", set_at(doc, where, node["minimum"] - 1), field, True
            yield f"{name}: minimum", set_at(doc, where, node["minimum"]), field, False
        if "maximum" in node:
            yield f"{name}: maximum + 1", set_at(doc, where, node["maximum"] + 1), field, True
            yield f"{name}: maximum", set_at(doc, where, node["maximum"]), field, False
        if "enum" in node:
            for choice in node["enum"]:
                yield f"{name}: {choice}", set_at(doc, where, choice), field, False
            bogus = 999 if node.get("type") == "integer" else "Bogus"
            yield f"{name}: not in enum", set_at(doc, where, bogus), field, True
        if "maxItems" in node and value:
            yield f"{name}: maxItems + 1", set_at(doc, where, value[:1] * (node["maxItems"] + 1)), field, True
            yield f"{name}: maxItems", set_at(doc, where, value[:1] * node["maxItems"]), field, False
        if node.get("minItems"):
            yield f"{name}: minItems - 1", set_at(doc, where, value[:node["minItems"] - 1]), field, True
        if "maxLength" in node and isinstance(value, str):
            longer = value + "a" * (node["maxLength"] + 1 - len(value))
            yield f"{name}: maxLength + 1", set_at(doc, where, longer), field, True
            # At the limit both must agree, except for a regular expression: whether one that long
            # fits Envoy's program-size limit is the operator's call (test_left_to_the_operator).
            parent = get_at(doc, where[:-1])
            if not (isinstance(parent, dict) and parent.get("type") == "RegularExpression"):
                yield f"{name}: maxLength", set_at(doc, where, longer[:-1]), field, False
        if node.get("minLength") and isinstance(value, str):
            yield f"{name}: minLength - 1", set_at(doc, where, value[:node["minLength"] - 1]), field, True
        if path[-1] == ITEMS:
            continue
        if path[-1] in (node_at(kind, path[:-1]).get("required") or []):
            yield f"{name}: missing", delete_at(doc, where), field, True
        else:
            yield f"{name}: left out", delete_at(doc, where), field, False


PROBES = [p for kind in KINDS for p in probes(kind)]


@pytest.mark.parametrize("doc,field,must_reject", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_crd_and_model_agree_on_probe(doc: dict, field: str, must_reject: bool) -> None:
    problems, errors = _verdicts(doc)
    crd, ours = [str(p) for p in problems], [str(e) for e in errors]
    if must_reject:
        assert mentions(problems, field), f"CRD admits it: {crd}"
        assert mentions(errors, field), f"model accepts it: {ours}"
    else:
        assert bool(problems) == bool(errors), f"CRD: {crd}; model: {ours}"


DURATIONS = ["0s", "0ms", "1ms", "999ms", "1s", "59m", "60m", "1h", "1h0m1ms", "3600s", "3601s", "1440m", "1441m",
             "24h", "24h1ms", "86400s", "86400001ms", "99999h", "1h1h", "5m5ms", "10ms5m", "1h2m3s4ms", "00000s",
             "1h2m3s4ms5ms", "100000s", "1.5s", "1d", "1us", "-1s", "+1s", "1", "s", "", "1H", " 1s", "1s "]
SERVICE_PORTS = [0, 1, 65535, 65536, -1, "http", "h", "http-2", "HTTP", "1http", "http-", "-http", "h" * 63, "h" * 64,
                 "", True, 80.5, None]
DNS_NAMES = ["a", "a.b", "a-b.c", "0a.b", "a.0", "-a", "a-", "a..b", ".a", "a.", "A", "a_b", "*.a", "a" * 253,
             "a" * 254, "é.example"]
HOSTNAMES = DNS_NAMES + ["*", "*.", "**", "*.*", "a.*", "*.example.com", "*." + "a" * 251, "*." + "a" * 252]


def value_samples() -> Iterator[tuple[str, str, tuple, Any]]:
    for kind in KINDS:
        for path, node in spec_nodes(kind):
            name = format_path(path)
            if node.get("pattern") == "^([0-9]{1,5}(h|m|s|ms)){1,4}$":
                yield from ((kind, name, path, v) for v in DURATIONS)
            elif node.get("x-kubernetes-int-or-string"):
                yield from ((kind, name, path, v) for v in SERVICE_PORTS)
            elif path[-1] in ("hostname",):
                yield from ((kind, name, path, v) for v in DNS_NAMES)
            elif path[-2:] == ("hostnames", ITEMS):
                yield from ((kind, name, path, v) for v in HOSTNAMES)


VALUES = list(value_samples())


@pytest.mark.parametrize("kind,path,value", [v[:1] + v[2:] for v in VALUES],
                         ids=[f"{k} {n}={v!r}" for k, n, _, v in VALUES])
def test_crd_and_model_agree_on_value(kind: str, path: tuple, value: Any) -> None:
    """Durations (format and range), Service ports and DNS names, value by value."""
    found = _first_location(kind, path)
    assert found is not None
    doc, where = found
    problems, errors = _verdicts(set_at(doc, where, value))
    assert bool(problems) == bool(errors), ([str(p) for p in problems], [str(e) for e in errors])


DEFAULTED = [(kind, path) for kind in KINDS for path, node in spec_nodes(kind) if "default" in node]


@pytest.mark.parametrize("kind,path", DEFAULTED, ids=[f"{k} {format_path(p)}" for k, p in DEFAULTED])
def test_crd_default_is_the_models_default(kind: str, path: tuple) -> None:
    """Leave the field out of an example: the model must make the same of the document whether
    or not the API server filled in the CRD's default."""
    found = _first_location(kind, path, parent=True)
    assert found is not None, "in no example"
    doc, where = found
    if where[-1] in get_at(doc, where[:-1]):
        doc = delete_at(doc, where)
    defaulted, problems = admit(doc)
    assert get_at(defaulted, where) == node_at(kind, path)["default"]
    spec, errors = model(doc)
    assert bool(problems) == bool(errors), ([str(p) for p in problems], [str(e) for e in errors])
    assert model(defaulted) == (spec, errors)


# -- the patterns, character by character ----------------------------------------------------


def _pattern(kind: str, path: tuple) -> str:
    return node_at(kind, path)["pattern"]


def _code_points(limit: int = sys.maxunicode) -> Iterator[str]:
    return (chr(c) for c in range(limit + 1) if not 0xD800 <= c <= 0xDFFF)


def test_path_pattern_agrees_with_the_model_on_every_character() -> None:
    crd = re2.compile(_pattern("Backend", ("spec", "healthCheck", "path")))
    model_path = validation._PATH
    disagree = [hex(ord(c)) for c in _code_points() if bool(crd.search(f"/a{c}b")) != bool(model_path.match(f"/a{c}b"))]
    assert disagree == []
    # The same pattern wherever a path is written.
    assert {_pattern("Route", p) for p in [("spec", "rules", ITEMS, "rewrite", "pathPrefix"),
                                           ("spec", "rules", ITEMS, "redirect", "path")]} == {crd.pattern}
    path_branch = node_at("Route", ("spec", "rules", ITEMS, "matches", ITEMS, "path"))["anyOf"][1]
    assert path_branch["properties"]["value"]["pattern"] == crd.pattern


def test_name_and_value_patterns_agree_with_the_model_on_every_character() -> None:
    m = ("spec", "rules", ITEMS, "matches", ITEMS)
    header_name = re2.compile(_pattern("Route", m + ("headers", ITEMS, "name")))
    header_value = re2.compile(node_at("Route", m + ("headers", ITEMS))["anyOf"][1]["properties"]["value"]["pattern"])
    set_value = re2.compile(_pattern("Route", ("spec", "rules", ITEMS, "requestHeaders", "set", ITEMS, "value")))
    dns_name = re2.compile(_pattern("Backend", ("spec", "dns", "hostname")))
    dns_label = re2.compile(_pattern("Backend", ("spec", "service", "name")))
    hostname = re2.compile(_pattern("Route", ("spec", "hostnames", ITEMS)))
    fields = model_fields.Fields()
    for c in _code_points(0x3000):
        assert bool(header_name.search(f"a{c}b")) == bool(model_fields._HEADER_NAME.fullmatch(f"a{c}b")), hex(ord(c))
        valid = fields.header_value(f"a{c}b", "v") is not None
        assert bool(header_value.search(f"a{c}b")) == bool(set_value.search(f"a{c}b")) == valid, hex(ord(c))
        for text in (f"a{c}b", f"{c}a", f"a{c}", f"a.{c}.b"):
            assert bool(dns_name.search(text)) == bool(model_fields._DNS_NAME.fullmatch(text)), repr(text)
            assert bool(dns_label.search(text)) == bool(model_fields._DNS_LABEL.fullmatch(text)), repr(text)
            for host in (text, "*." + text):
                ok = validation._hostname(model_fields.Fields())(host, "h") is not None
                assert bool(hostname.search(host)) == ok, repr(host)
    assert hostname.search("*") and not hostname.search("*.") and not hostname.search("**.a")
    assert fields.errors  # the loop did reach rejected values
