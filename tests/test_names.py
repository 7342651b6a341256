"""Names and namespaces are checked as Kubernetes checks them, and Envoy names made of them never collide.

Issue 6: Backend `b/c` in namespace `a` and Backend `c` in namespace `a/b` both became cluster
`a/b/c`, and a Route in namespace `a` pointing at `b/c` was answered by the other namespace's
Backend. Now both Backends are refused (Accepted=False, each under its own key), and the names are
built injectively, so even without validation the two could not share a cluster.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject, joined
from xds_operator.api.validation import validate
from xds_operator.ir.builder import Builder
from xds_operator.ir.ir import cluster_name, route_entry_name
from xds_operator.sources.state import StateStore

EP = {"endpoints": [{"address": "10.0.0.1", "port": 80}]}
NAME_RULE = ("a lower-case DNS-1123 subdomain, as Kubernetes requires of names (letters a-z, digits, '-' and '.', "
             "starting and ending with a letter or digit)")
NAMESPACE_RULE = ("a lower-case DNS-1123 label, as Kubernetes requires of namespaces (letters a-z, digits and '-', "
                  "starting and ending with a letter or digit)")


def backend(namespace, name) -> UserObject:
    return UserObject(ObjectKey("Backend", namespace, name), EP)


def errors(obj: UserObject) -> list[str]:
    spec, found = validate(obj)
    assert (spec is None) == bool(found)
    return [str(e) for e in found]


@pytest.mark.parametrize("namespace, name", [
    ("a", "b"), ("0", "0"), ("default", "web-1.v2"), ("a" * 63, "b" * 253), ("a-b", "a.b.c"),
    ("9ns", "9name"), ("n", ".".join(["a" * 63] * 3) + "." + "a" * 61),
])
def test_kubernetes_names_are_accepted(namespace: str, name: str) -> None:
    assert errors(backend(namespace, name)) == []


@pytest.mark.parametrize("name, message", [
    ("b/c", f"'b/c' is not {NAME_RULE}"),
    ("B", f"'B' is not {NAME_RULE}"),
    ("a_b", f"'a_b' is not {NAME_RULE}"),
    ("-a", f"'-a' is not {NAME_RULE}"),
    ("a.", f"'a.' is not {NAME_RULE}"),
    ("a..b", f"'a..b' is not {NAME_RULE}"),
    ("a%2Fb", f"'a%2Fb' is not {NAME_RULE}"),
    ("é", f"'é' is not {NAME_RULE}"),
    ("a\n", f"'a\\n' is not {NAME_RULE}"),
    ("a" * 254, "is 254 characters long; at most 253 are allowed"),
    ("", "is required"),
    (123, "must be a string, not an integer"),
])
def test_bad_names_are_refused(name, message: str) -> None:
    assert errors(backend("ns", name)) == [f"metadata.name: {message}"]
    assert errors(UserObject(ObjectKey("Route", "ns", name), {"rules": [{"backends": [{"name": "b"}]}]})) == \
        [f"metadata.name: {message}"]


@pytest.mark.parametrize("namespace, message", [
    ("a/b", f"'a/b' is not {NAMESPACE_RULE}"),
    ("a.b", f"'a.b' is not {NAMESPACE_RULE}"),  # a label: no dots, unlike names
    ("A", f"'A' is not {NAMESPACE_RULE}"),
    ("a-", f"'a-' is not {NAMESPACE_RULE}"),
    ("a" * 64, "is 64 characters long; at most 63 are allowed"),
    ("", "must not be empty"),
    (7, "must be a string, not an integer"),
])
def test_bad_namespaces_are_refused(namespace, message: str) -> None:
    assert errors(backend(namespace, "b")) == [f"metadata.namespace: {message}"]


def test_joined_names_are_injective() -> None:
    """Every pair of short strings over the characters that matter gives a distinct name."""
    alphabet = "a/%2F"
    words = ["".join(p) for n in range(4) for p in itertools.product(alphabet, repeat=n)]
    seen: dict[str, tuple[str, str]] = {}
    for pair in itertools.product(words, repeat=2):
        name = joined(*pair)
        assert seen.setdefault(name, pair) == pair, (name, seen[name], pair)
    assert joined("a", "b") == "a/b"  # Kubernetes names read as they are
    assert (cluster_name(ObjectKey("Backend", "a", "b/c")), cluster_name(ObjectKey("Backend", "a/b", "c"))) == \
        ("a/b%2Fc", "a%2Fb/c")
    assert route_entry_name(ObjectKey("Route", "a/b", "c"), 0, 1) != \
        route_entry_name(ObjectKey("Route", "a", "b/c"), 0, 1)
    assert str(ObjectKey("Backend", "a", "b/c")) != str(ObjectKey("Backend", "a/b", "c"))


COLLISION = f"""\
apiVersion: {API_VERSION}
kind: Backend
metadata: {{name: b/c, namespace: a}}
spec: {{endpoints: [{{address: 10.0.0.1, port: 80}}]}}
---
apiVersion: {API_VERSION}
kind: Backend
metadata: {{name: c, namespace: a/b}}
spec: {{endpoints: [{{address: 10.0.0.2, port: 80}}]}}
---
apiVersion: {API_VERSION}
kind: Route
metadata: {{name: r, namespace: a}}
spec:
  port: 15001
  rules: [{{backends: [{{name: b/c}}]}}]
"""


def test_the_issues_collision_is_impossible() -> None:
    state = StateStore()
    for doc in yaml.safe_load_all(COLLISION):
        state.put(UserObject.from_manifest(doc))
    result = Builder().build(state)

    first, second = ObjectKey("Backend", "a", "b/c"), ObjectKey("Backend", "a/b", "c")
    route = ObjectKey("Route", "a", "r")
    assert set(result.statuses) == {first, second, route}  # each under its own key ...
    assert len({str(k) for k in result.statuses}) == 3     # ... also as text (/status, logs)
    for key, message in ((first, f"metadata.name: 'b/c' is not {NAME_RULE}"),
                         (second, f"metadata.namespace: 'a/b' is not {NAMESPACE_RULE}")):
        accepted = result.statuses[key].condition("Accepted")
        assert (accepted.status, accepted.reason, accepted.message) == (False, "Invalid", message)
    # Nothing serves as a/b/c, and the Route finds no Backend instead of the other namespace's.
    assert result.clusters == {}
    refs = result.statuses[route].condition("ResolvedRefs")
    assert (refs.status, refs.reason) == (False, "BackendNotFound")
    assert refs.message == ("spec.rules[0].backends[0]: Backend a/b%2Fc not found or not accepted; "
                            "spec.rules[0]: left out, no backend to send to")
    config = result.config_for("default")
    assert config.clusters == () and [ln.virtual_hosts for ln in config.listeners] == [()]


def test_validate_reports_both_names(tmp_path: Path) -> None:
    path = tmp_path / "collision.yaml"
    path.write_text(COLLISION)
    proc = subprocess.run([sys.executable, "-m", "xds_operator.cli", "validate", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"metadata.name: 'b/c' is not {NAME_RULE}" in proc.stdout
    assert f"metadata.namespace: 'a/b' is not {NAMESPACE_RULE}" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_name_that_is_not_a_string_is_refused_without_stopping_the_build() -> None:
    """`name: 123` in a file is an integer: sorting it among the other keys raised, so no build ran."""
    from xds_operator.status.report import reports

    state = StateStore()
    for name in (123, "b", "a"):
        state.put(UserObject.from_manifest({"apiVersion": API_VERSION, "kind": "Backend", "spec": EP,
                                            "metadata": {"name": name, "namespace": "ns"}}))
    result = Builder().build(state)
    assert sorted(result.clusters) == ["ns/a", "ns/b"]
    accepted = result.statuses[ObjectKey("Backend", "ns", 123)].condition("Accepted")
    assert (accepted.status, accepted.message) == (False, "metadata.name: must be a string, not an integer")
    assert [str(k) for k in reports(result, {})] == ["Backend/ns/123", "Backend/ns/a", "Backend/ns/b"]
