"""The CRDs in crds/ against the operator's model (operator/xds_operator/api/validation.py).

The model is the contract: a Route or Backend the API server admits must be one the operator
accepts, and the other way round. The API server's side is a real kube-apiserver (the session's,
tests/kubecluster.py) serving these CRDs, asked with dry-run creates under strict field
validation (kubectl's default): its own structural pruning and defaulting, its openAPIV3Schema
checks (Go's regexp), list types, and its compiled CEL rules.

What is checked:
- the CRD files: strict Kubernetes validation, structural schemas, a description on every field,
  printer columns that point at real fields, CEL rules that reference real fields and stay far
  below the API server's cost limits; and that the server took them as they are (which checks
  the defaults and compiles the rules);
- every example (examples/, the demo config) is admitted by the CRD and accepted by the model,
  and defaulting by the API server does not change what the model makes of it;
- invalid samples are rejected by both, each naming the expected field;
- agreement with the real API server: probes derived from the CRD (bounds, enums, list sizes,
  string lengths, required fields, types, defaults) and sample values get the same verdict from
  both. (Field names and patterns come from the one declaration: tests/test_api_schema.py.)
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from xds_operator.api import validation
from xds_operator.api.objects import API_GROUP, API_VERSION, VERSION, UserObject
from xds_operator.dev.demo import DemoPorts, demo_config

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples"
DEMO_TEMPLATE = ROOT / "operator" / "xds_operator" / "dev" / "demo-config.yaml.tmpl"
KUBERNETES_VERSION = kubernetes_validate.latest_version()
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
    demo = demo_config(DemoPorts(httpbin=18080))
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
        yield from schema_nodes(child, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], (*path, ITEMS))


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
                yield from locations(item, rest, (*prefix, i))
    elif isinstance(value, dict) and step in value:
        yield from locations(value[step], rest, (*prefix, step))


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


# -- the API server: a real one (tests/kubecluster.py), asked with dry-run creates ------------


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')
_DUPLICATE_FIELD = re.compile(r'duplicate field "([^"]+)"')
_QUOTED_PATH = re.compile(r'"((?:spec|status|metadata)[^"]*)" must validate')


class AdmissionServer:
    """What kube-apiserver makes of a create (dry run, strict field validation as kubectl's
    default): the object as it would store it (pruned, defaulted) and the errors it answers."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self._answers: dict[str, tuple[dict, list[Problem]]] = {}

    @staticmethod
    def _key(doc: dict) -> str:
        return json.dumps(doc, sort_keys=True, default=str)

    def admit(self, doc: dict) -> tuple[dict, list[Problem]]:
        key = self._key(doc)
        if key not in self._answers:
            self._answers[key] = self._ask(doc)
        answer, problems = self._answers[key]
        return copy.deepcopy(answer), list(problems)

    def warm(self, docs: list[dict]) -> None:
        """Asks for many documents at once (the answers are cached)."""
        todo = {self._key(d): d for d in docs if self._key(d) not in self._answers}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for key, answer in zip(todo, pool.map(self._ask, todo.values()), strict=False):
                self._answers[key] = answer

    def admit_status(self, doc: dict) -> list[Problem]:
        """The problems the server finds in `doc`'s status written through the status subresource."""
        plural = {"Route": "routes", "Backend": "backends"}[doc["kind"]]
        base = f"/apis/{API_VERSION}/namespaces/{self.namespace}/{plural}"
        body = copy.deepcopy(doc)
        body["metadata"] = {"name": f"status-{plural}", "namespace": self.namespace}
        status_part = body.pop("status")
        created, answer = self.cluster.request("POST", base, body)
        assert created == 201, answer
        try:
            status, answer = self.cluster.request(
                "PATCH", f"{base}/{body['metadata']['name']}/status?dryRun=All&fieldValidation=Strict",
                {"status": status_part}, content_type="application/merge-patch+json")
            return [] if status == 200 else self.problems(status, answer)
        finally:
            self.cluster.request("DELETE", f"{base}/{body['metadata']['name']}")

    def _ask(self, doc: dict) -> tuple[dict, list[Problem]]:
        body = copy.deepcopy(doc)
        body.setdefault("metadata", {})["namespace"] = self.namespace
        plural = {"Route": "routes", "Backend": "backends"}[doc["kind"]]
        status, answer = self.cluster.request(
            "POST", f"/apis/{API_VERSION}/namespaces/{self.namespace}/{plural}?dryRun=All&fieldValidation=Strict",
            body)
        if status == 201:
            answer["metadata"]["namespace"] = (doc.get("metadata") or {}).get("namespace")
            return answer, []
        return {}, self.problems(status, answer)

    @staticmethod
    def problems(status: int, answer: dict) -> list[Problem]:
        message = answer.get("message", "")
        causes = (answer.get("details") or {}).get("causes") or []
        found = []
        for cause in causes:
            field, text = cause.get("field", ""), cause.get("message", "")
            if field in ("", "<nil>"):  # an anyOf, or rules left unchecked: the path is in the message
                named = _QUOTED_PATH.search(text)
                if named is None:
                    continue
                field = named.group(1)
            found.append(Problem(field, text))
        # Strict field validation answers 400 with the unknown (or duplicated) fields in the message.
        found += [Problem(f, "field not declared in schema") for f in _UNKNOWN_FIELD.findall(message)]
        found += [Problem(f, "duplicate field") for f in _DUPLICATE_FIELD.findall(message)]
        if not found:
            found = [Problem("", f"{status}: {message}")]
        return found


SERVER: AdmissionServer | None = None


@pytest.fixture(scope="module")
def server(kube_cluster):
    """The real API server, for the tests that ask it; every sample asked at once, up front."""
    global SERVER
    namespace = "crd-agreement"
    kube_cluster.request("POST", "/api/v1/namespaces",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    SERVER = AdmissionServer(kube_cluster, namespace)
    SERVER.warm([d for _, d in EXAMPLES_AND_DEMO] + [d for _, d, _ in INVALID + EDGE_CASES]
                + [p[1] for p in PROBES] + [value_document(*v[:1], *v[2:]) for v in VALUES])
    yield SERVER
    SERVER = None
    kube_cluster.request("DELETE", f"/api/v1/namespaces/{namespace}")


def admit(doc: dict) -> tuple[dict, list[Problem]]:
    """What the API server makes of a create: the defaulted object and its validation errors."""
    assert SERVER is not None, "the test needs the `server` fixture"
    return SERVER.admit(doc)


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
    assert crd["metadata"]["name"] == f"{plural}.{API_GROUP}"
    assert spec["group"] == API_GROUP and spec["scope"] == "Namespaced"
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
def test_status_schema_takes_what_the_operator_writes(kind: str, server) -> None:
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
    assert server.admit_status(doc) == []
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
def test_the_server_took_these_schemas_defaults_and_rules(kind: str, kube_cluster) -> None:
    """The API server refuses a CRD whose defaults (defaulted themselves) fail the schema or the
    rules, whose CEL rules do not compile or exceed the cost budget, or whose schema is not
    structural: the CRDs it serves (installed from crds/ by the session) are exactly these files."""
    crd = CRD[kind]
    status, served = kube_cluster.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                                 f"{crd['metadata']['name']}")
    assert status == 200
    conditions = {c["type"]: c["status"] for c in served["status"]["conditions"]}
    assert conditions["Established"] == "True" and "NonStructuralSchema" not in conditions
    assert version_of(served)["schema"] == version_of(crd)["schema"]
    assert any("default" in node for _, node in schema_nodes(schema_of(kind)))


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


def test_cel_rules_name_real_fields() -> None:
    rules = list(all_rules())
    assert len(rules) >= 15
    for kind, path, node, rule in rules:
        where = f"{kind} {format_path(path)}: {rule['rule']}"
        # That they compile, the API server checked when it took the CRDs (the test above).
        assert rule.get("message"), where
        assert "oldSelf" not in rule["rule"], where  # no transition rules: they would need ratcheting
        for chain in _SELF_FIELDS.findall(rule["rule"]):
            steps = chain.lstrip(".").split(".")
            # A trailing step may be a method (self.name.lowerAscii()); fields come first.
            fields = [s for s in steps if s not in ("isIP", "lowerAscii", "matches", "exists", "all", "size")]
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
    totals: dict[str, float] = dict.fromkeys(KINDS, 0)
    for kind, path, node, rule in all_rules():
        cost = estimated_rule_cost(node, rule["rule"]) * cardinality(kind, path)
        assert cost <= PER_RULE_COST_LIMIT / 2, (kind, format_path(path), rule["rule"], cost)
        totals[kind] += cost
    for kind, total in totals.items():
        assert total <= PER_CRD_COST_LIMIT / 4, (kind, total)


# -- examples --------------------------------------------------------------------------------

EXAMPLES_AND_DEMO = example_documents()


def test_examples_exist() -> None:
    kinds = [doc["kind"] for _, doc in EXAMPLES_AND_DEMO]
    assert kinds.count("Route") >= 5 and kinds.count("Backend") >= 8


@pytest.mark.parametrize("origin,doc", EXAMPLES_AND_DEMO, ids=[o for o, _ in EXAMPLES_AND_DEMO])
def test_example_is_admitted_and_accepted(origin: str, doc: dict, server) -> None:
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


# Where the real server names the enclosing object, not the field: a header or query value is one
# branch of an anyOf (Exact or RegularExpression), and the server reports the anyOf failing at
# the item (and that the other branch's type does not match), not which value broke the branch.
SERVER_NAMES = {
    "header-value-with-newline": "spec.rules[0].matches[0].headers[0]",
    "query-value-with-cr": "spec.rules[0].matches[0].queryParams[0]",
}


@pytest.mark.parametrize("doc,field,server_field", [(d, f, SERVER_NAMES.get(i, f)) for i, d, f in INVALID],
                         ids=[i for i, _, _ in INVALID])
def test_invalid_sample_is_rejected_by_both(doc: dict, field: str, server_field: str, server) -> None:
    _, problems = admit(doc)
    assert mentions(problems, server_field), f"CRD: {[str(p) for p in problems]}"
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
def test_edge_cases_are_rejected_by_both(doc: dict, field: str, server) -> None:
    _, problems = admit(doc)
    assert mentions(problems, field), [str(p) for p in problems]
    _, errors = model(doc)
    assert mentions(errors, field), [str(e) for e in errors]


def test_left_to_the_operator(server) -> None:
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


def _all_locations(kind: str, path: tuple, *, parent: bool = False) -> Iterator[tuple[dict, tuple]]:
    for doc in base_documents():
        if doc["kind"] != kind:
            continue
        for where in locations(doc, path[:-1] if parent else path):
            yield doc, where + ((path[-1],) if parent else ())


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
def test_crd_and_model_agree_on_probe(doc: dict, field: str, must_reject: bool, server) -> None:
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
HOSTNAMES = [*DNS_NAMES, "*", "*.", "**", "*.*", "a.*", "*.example.com", "*." + "a" * 251, "*." + "a" * 252]


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


def value_document(kind: str, path: tuple, value: Any) -> dict:
    found = _first_location(kind, path)
    assert found is not None
    doc, where = found
    return set_at(doc, where, value)


@pytest.mark.parametrize("kind,path,value", [v[:1] + v[2:] for v in VALUES],
                         ids=[f"{k} {n}={v!r}" for k, n, _, v in VALUES])
def test_crd_and_model_agree_on_value(kind: str, path: tuple, value: Any, server) -> None:
    """Durations (format and range), Service ports and DNS names, value by value."""
    problems, errors = _verdicts(value_document(kind, path, value))
    assert bool(problems) == bool(errors), ([str(p) for p in problems], [str(e) for e in errors])


DEFAULTED = [(kind, path) for kind in KINDS for path, node in spec_nodes(kind) if "default" in node]


@pytest.mark.parametrize("kind,path", DEFAULTED, ids=[f"{k} {format_path(p)}" for k, p in DEFAULTED])
def test_crd_default_is_the_models_default(kind: str, path: tuple, server) -> None:
    """Leave the field out of an example: the model must make the same of the document whether
    or not the API server filled in the CRD's default. (The first example the server still admits
    without the field: the server returns no defaulted object for one it refuses, e.g. statusCodes
    whose retryOn, defaulted, lacks retriable-status-codes; there the model must refuse it too.)"""
    tried = []
    for doc, where in _all_locations(kind, path, parent=True):
        if where[-1] in get_at(doc, where[:-1]):
            doc = delete_at(doc, where)
        defaulted, problems = admit(doc)
        spec, errors = model(doc)
        assert bool(problems) == bool(errors), ([str(p) for p in problems], [str(e) for e in errors])
        tried.append(doc)
        if problems:
            continue
        assert get_at(defaulted, where) == node_at(kind, path)["default"]
        assert model(defaulted) == (spec, errors)
        return
    assert tried, "in no example"
    pytest.fail(f"the server refused every example without {format_path(path)}")
