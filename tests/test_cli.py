"""The `xds-operator` command as users run it: validate, bootstrap, and every subcommand's --help."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from xds_operator.api.objects import API_VERSION
from xds_operator.cli import parser
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import Process, envoy_binary, envoy_command, free_port

from .realprocs import ServeProcess, eventually, http_get, uv_binary

REPO = Path(__file__).resolve().parent.parent
# A regular file that nobody, root included, may read (a write-only sysctl): an unreadable file.
WRITE_ONLY = Path("/proc/sys/vm/compact_memory")
API = API_VERSION


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xds_operator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


# -- validate --------------------------------------------------------------------------------

def summary(result: subprocess.CompletedProcess) -> str:
    return result.stdout.splitlines()[-1]


@pytest.mark.parametrize("paths", [["examples"], ["deploy/compose/config"], ["examples/httpbin.yaml"],
                                   ["deploy/example"]])
def test_validate_accepts_the_shipped_configs(paths: list[str]) -> None:
    result = cli("validate", "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    *notes, last = result.stdout.splitlines()
    assert all(": note: skipped: " in line for line in notes), notes  # deploy/example's Deployment...
    count = int(last.split()[0])
    assert count >= 2
    assert last == f"{count} objects checked, 0 errors, 0 warnings"


def test_validate_counts_objects_across_paths() -> None:
    counts = [int(summary(cli("validate", p)).split()[0]) for p in ("examples", "deploy/compose/config")]
    result = cli("validate", "examples", "deploy/compose/config")
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == f"{sum(counts)} objects checked, 0 errors, 0 warnings"


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The API"):]
    return section[section.index("```yaml\n") + len("```yaml\n"):section.index("```\n", section.index("```yaml"))]


SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def test_validate_unresolved_references_are_warnings_unless_strict(tmp_path: Path) -> None:
    """The README's own API example points its Backend at a Service that lives in the cluster."""
    example = tmp_path / "example.yaml"
    example.write_text(readme_api_example())
    result = cli("validate", str(example))
    assert result.returncode == 0, result.stdout + result.stderr
    # At the line of the field, the Backend's `service:` (line 5 of the example).
    assert result.stdout.splitlines() == [
        f"{example}:5:3: warning: Backend/demo/httpbin: Service demo/httpbin not found (ResolvedRefs=ServiceNotFound)",
        f"{example}:26:45: warning: Route/demo/httpbin: spec.rules[0].backends[1]: Backend demo/httpbin-canary "
        "not found or not accepted (ResolvedRefs=BackendNotFound)",
        f"{example}:32:14: warning: Route/demo/httpbin: spec.rules[0].mirror.backend: Backend demo/shadow not found "
        "or not accepted (ResolvedRefs=BackendNotFound)",
        "2 objects checked, 0 errors, 3 warnings"]

    strict = cli("validate", "--strict", str(example))
    assert strict.returncode == 1
    assert summary(strict) == "2 objects checked, 3 errors, 0 warnings"
    assert f"{example}:5:3: error: Backend/demo/httpbin: Service demo/httpbin not found" in strict.stdout

    # A Service in the files resolves the reference (and is checked as one of the objects).
    (tmp_path / "service.yaml").write_text(SERVICE)
    resolved = cli("validate", "--strict", str(tmp_path))
    assert "Service demo/httpbin" not in resolved.stdout
    assert summary(resolved) == "3 objects checked, 2 errors, 0 warnings"


def test_validate_warns_where_an_https_redirect_is_left_out() -> None:
    """Conflicted=True is a warning at spec.tls.httpRedirect (its False, the normal state, is no finding)."""
    case = REPO / "tests" / "golden" / "https_redirect.in.yaml"
    result = cli("validate", "--strict", str(case))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{case}:26:5: warning: Route/web/api: no HTTPS redirect for taken.example.com on port 8080 (plain Route "
        "web/plain serves it), in the proxy groups they share",
        f"{case}:50:5: warning: Route/web/shop-too: no HTTPS redirect for shop.example.com on port 8000 (Route "
        "web/shop redirects it to another place), in the proxy groups they share",
        "8 objects checked, 0 errors, 2 warnings"]


def test_validate_misspelt_kinds_and_versions_of_this_api_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "kinds.yaml"
    path.write_text(f"""\
apiVersion: {API}
kind: Rout
metadata: {{name: typo, namespace: t}}
---
apiVersion: xds-operator.dev/v1alpha2
kind: Route
metadata: {{name: future, namespace: t}}
---
kind: Backend
metadata: {{name: no-version, namespace: t}}
---
apiVersion: xds-operater.dev/v1alpha1
kind: Route
metadata: {{name: group-typo, namespace: t}}
---
apiVersion: route.openshift.io/v1
kind: Route
metadata: {{name: openshift}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: not-ours}}
""")
    result = cli("validate", str(path))
    assert result.returncode == 1, result.stdout
    assert result.stdout.splitlines() == [
        f"{path}:2:7: error: kind 'Rout' is not a kind of {API} (one of: Backend, Route); did you mean Route?",
        f"{path}:5:13: error: apiVersion 'xds-operator.dev/v1alpha2' is not served; xds-operator.dev's version "
        "is v1alpha1",
        f"{path}:9:1: error: apiVersion is required ({API})",
        f"{path}:12:13: error: apiVersion 'xds-operater.dev/v1alpha1': Route is in {API}",
        f"{path}:16:1: note: skipped: route.openshift.io/v1 Route is not read by xds-operator",
        f"{path}:20:1: note: skipped: v1 ServiceAccount is not read by xds-operator",
        "0 objects checked, 4 errors, 0 warnings"]

    path.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: not-ours}\n")
    result = cli("validate", str(path))
    assert result.returncode == 0
    assert summary(result) == "0 objects checked, 0 errors, 0 warnings"


BAD = f"""\
apiVersion: {API}
kind: Backend
metadata: {{name: good, namespace: t}}
spec:
  endpoints: [{{address: 127.0.0.1, port: 8080}}]
---
apiVersion: {API}
kind: Route
metadata: {{name: badregex, namespace: t}}
spec:
  port: 15001
  rules:
  - matches: [{{path: {{type: RegularExpression, value: "(unclosed"}}}}]
    backends: [{{name: good}}]
---
apiVersion: {API}
kind: Route
metadata: {{name: lowport, namespace: t}}
spec:
  port: 80
  rules:
  - backends: [{{name: good}}]
---
apiVersion: {API}
kind: Route
metadata: {{name: dangling, namespace: t}}
spec:
  port: 15002
  rules:
  - backends: [{{name: missing}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: not-ours}}
---
apiVersion: {API}
kind: Route
metadata: {{name: fine, namespace: t}}
spec:
  port: 15003
  rules:
  - backends: [{{name: good}}]
"""

DUPLICATE = f"""\
# the same Backend as bad.yaml's first document, but broken: the first definition is the one checked
apiVersion: {API}
kind: Backend
metadata: {{name: good, namespace: t}}
spec:
  endpoints: [{{address: 127.0.0.1, port: 0}}]
"""


def test_validate_reports_every_problem_with_its_place(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "sub").mkdir(parents=True)
    bad, dup, broken = config / "bad.yaml", config / "sub" / "dup.yaml", config / "broken.yaml"
    bad.write_text(BAD)
    dup.write_text(DUPLICATE)
    broken.write_text("apiVersion: v1\nkind: [unclosed\n  name: x\n")

    result = cli("validate", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    # Each problem once, at the line and column of its field, in file order; RE2 prints nothing
    # of its own to the terminal.
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{bad}:13:48: error: Route/t/badregex: spec.rules[0].matches[0].path.value: invalid regular expression "
        "(RE2 syntax): missing ): (unclosed",
        f"{bad}:20:3: error: Route/t/lowport: spec.port: 80 is out of range [1024, 65535]",
        f"{bad}:30:5: warning: Route/t/dangling: spec.rules[0]: left out, no backend to send to "
        "(ResolvedRefs=BackendNotFound)",
        f"{bad}:30:16: warning: Route/t/dangling: spec.rules[0].backends[0]: Backend t/missing not found or not "
        "accepted (ResolvedRefs=BackendNotFound)",
        f"{bad}:32:1: note: skipped: v1 ServiceAccount is not read by xds-operator",
        f"{broken}:3:7: error: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at "
        "line 2, column 7)",
        # The duplicate is reported once, naming the definition in effect, and is not what gets
        # checked (the server keeps the first definition): no `port: 0` problem.
        f"{dup}:2:1: error: Backend/t/good is already defined in {bad}:1:1, which is used; this definition is "
        "ignored",
        # 5 objects in bad.yaml (the ServiceAccount is not one); the duplicate is not checked
        "5 objects checked, 4 errors, 2 warnings"]


def test_validate_places_yaml_errors_and_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"""\
apiVersion: {API}
kind: Backend
metadata: {{name: twice, namespace: t}}
spec:
  endpoints: [{{address: 127.0.0.1, port: 8080}}]
  connectTimeout: 1s
  connectTimeout: 2s
""")
    result = cli("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:7:3: error: Backend/t/twice: mapping key 'connectTimeout' already defined at line 6",
        "0 objects checked, 1 error, 0 warnings"]

    path.write_text("apiVersion: v1\nkind: Service\n  metadata: x\n")
    result = cli("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == f"{path}:3:11: error: invalid YAML: mapping values are not allowed in this context"


MALFORMED = {
    # valid YAML that the schema cannot build: yaml turns it into a date, or fails on it
    "an unquoted impossible date in an annotation": (
        "metadata: {name: x, namespace: t, annotations: {released: 2025-02-30}}",
        "4:59: error: Backend/t/x: metadata.annotations.released must be a string, not a date ('2025-02-30') "
        '(quote it: released: "2025-02-30")'),
    "an unquoted date in an annotation": (
        "metadata: {name: x, namespace: t, annotations: {released: 2025-02-28}}",
        "4:59: error: Backend/t/x: metadata.annotations.released must be a string, not a date ('2025-02-28') "
        '(quote it: released: "2025-02-28")'),
    "a float that is not one": (
        "metadata: {name: x, namespace: t}\nspec: {connectTimeout: !!float abc}",
        "5:24: error: Backend/t/x: 'abc' cannot be read as a YAML float: could not convert string to float: 'abc'"),
    "a generation that is not a number": (
        "metadata: {name: x, namespace: t, generation: abc}",
        "4:47: error: Backend/t/x: metadata.generation must be an integer, not a string ('abc')"),
    "labels as a list": (
        "metadata: {name: x, namespace: t, labels: [a]}",
        "4:43: error: Backend/t/x: metadata.labels must be a map of strings, not a list"),
    "an impossible date in the spec": (
        "metadata: {name: x, namespace: t}\nspec: {connectTimeout: 2025-13-01}",
        "5:24: error: Backend/t/x: '2025-13-01' cannot be read as a YAML timestamp: month must be in 1..12"),
    "a tag nobody knows": (
        "metadata: {name: x, namespace: t}\nspec: !secret {}",
        "5:7: error: Backend/t/x: could not determine a constructor for the tag '!secret'"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_validate_malformed_documents_are_errors_at_their_place(tmp_path: Path, case: str) -> None:
    document, expected = MALFORMED[case]
    path = tmp_path / "bad.yaml"
    path.write_text(f"# {case}\napiVersion: {API}\nkind: Backend\n{document}\n---\n"
                    f"apiVersion: {API}\nkind: Backend\nmetadata: {{name: after, namespace: t}}\n"
                    "spec: {endpoints: [{address: 127.0.0.1, port: 80}]}\n")
    result = cli("validate", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr == ""
    assert result.stdout.splitlines() == [f"{path}:{expected}", "1 object checked, 1 error, 0 warnings"]


def test_validate_binary_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"apiVersion: v1\nkind: \xff\xfe\x00\x01\n")
    (tmp_path / "nul.yaml").write_bytes(b"apiVersion: v1\n\x00kind: x\n")
    unreadable = tmp_path / "unreadable.yaml"
    unreadable.symlink_to(WRITE_ONLY)  # a regular file that even root cannot read
    result = cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'binary.yaml'}:2:7: error: not UTF-8 text (byte 0xff); is it a YAML file?",
        f"{tmp_path / 'nul.yaml'}:2:1: error: invalid YAML: character U+0000 is not allowed (control characters are "
        "not allowed)",
        f"{unreadable}: error: cannot be read: Permission denied",
        "0 objects checked, 3 errors, 0 warnings"]


def test_validate_missing_path(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{tmp_path / 'nope'}: error: no such file or directory",
                                          "0 objects checked, 1 error, 0 warnings"]


# -- bootstrap -------------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_bootstrap_renders_a_bootstrap_envoy_accepts(tmp_path: Path, delta: bool) -> None:
    args = ["bootstrap", "--node-cluster", "web", "--xds-address", "10.0.0.1:18000"] + (["--delta"] if delta else [])
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["node"]["cluster"] == "web"
    assert doc["node"]["id"] == "envoy-1"
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == ("DELTA_GRPC" if delta else "GRPC")
    address = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"]
    assert address == {"address": "10.0.0.1", "port_value": 18000}

    path = tmp_path / "envoy.yaml"
    path.write_text(result.stdout)
    check = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration" in (check.stdout + check.stderr) and "OK" in (check.stdout + check.stderr)


# -- issue 9 (helper h5): addresses, busy ports, options and help, JSON answers ---------------

def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The run failed with `code` and said why in one line (its last on stderr), no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize("address, reason", [
    ("xds-operator", "no port"), ("18000", "a port alone: write HOST:18000"), ("[::1]", "no port"),
    ("[::1", "missing ']'"),
    ("::1:18000", "brackets"), ("host:http", "not a number"), ("host:0", "out of range"),
    ("host:70000", "out of range"), (":18000", "no host"), ("[fe80::zz]:18000", "not a valid IPv6"),
])
def test_bootstrap_rejects_a_malformed_xds_address(address: str, reason: str) -> None:
    one_line_error(cli("bootstrap", "--xds-address", address), 2, "--xds-address", reason)


def test_bootstrap_with_an_ipv6_xds_address_is_yaml_envoy_accepts(tmp_path: Path) -> None:
    result = cli("bootstrap", "--xds-address", "[::1]:18000", "--admin-address", "[::1]")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    address = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"]["socket_address"]
    assert address == {"address": "::1", "port_value": 18000}
    assert doc["admin"]["address"]["socket_address"]["address"] == "::1"
    path = tmp_path / "envoy.yaml"
    path.write_text(result.stdout)
    check = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("node_id", ["web: canary", "true", "#1", "12"])
def test_bootstrap_node_names_stay_strings(node_id: str) -> None:
    """Names YAML would read as a mapping, a comment, a boolean or a number are quoted."""
    result = cli("bootstrap", "--node-id", node_id, "--node-cluster", node_id)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["node"] == {"id": node_id, "cluster": node_id}


async def test_envoy_reaches_a_control_plane_on_ipv6_loopback(tmp_path: Path) -> None:
    """`bootstrap --xds-address [::1]:PORT`, a real Envoy, a control plane listening on [::1]."""
    plane = ControlPlane(xds_address="[::1]:0", http_address=None, debounce=0.01)
    await plane.start()
    envoy = None
    try:
        result = cli("bootstrap", "--xds-address", f"[::1]:{plane.xds_port}", "--admin-port", str(free_port()),
                     "--node-id", "v6")
        assert result.returncode == 0, result.stderr
        bootstrap = tmp_path / "envoy.yaml"
        bootstrap.write_text(result.stdout)
        envoy = await Process("envoy", envoy_command(bootstrap), log_path=tmp_path / "envoy.log").start()
        await eventually(lambda: any(p.node_id == "v6" for p in plane.registry.proxies.values()),
                         timeout=30, what="Envoy connected over IPv6")
    finally:
        if envoy is not None:
            await envoy.stop()
        await plane.stop()


def test_log_level_is_accepted_before_and_after_the_command() -> None:
    assert cli("bootstrap", "--log-level", "DEBUG").returncode == 0
    assert cli("--log-level", "debug", "bootstrap").returncode == 0
    assert parser().parse_args(["--log-level", "ERROR", "bootstrap"]).log_level == "ERROR"
    assert parser().parse_args(["--log-level", "ERROR", "bootstrap", "--log-level", "debug"]).log_level == "DEBUG"
    assert parser().parse_args(["serve", "--config", "x", "--log-level", "warning"]).log_level == "WARNING"


def test_an_unknown_log_level_is_a_usage_error() -> None:
    one_line_error(cli("--log-level", "LOUD", "bootstrap"), 2, "--log-level", "'LOUD'", "DEBUG")
    one_line_error(cli("serve", "--config", "examples", "--log-level", "verbose"), 2, "--log-level")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", ["serve", "validate", "demo", "bootstrap", "run"])
def test_every_option_has_help_and_its_default(name: str) -> None:
    command = subcommands()[name]
    assert command.description and len(command.description) > 20, f"{name} has no description"
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest} has no help"
        if action.default not in (None, [], argparse.SUPPRESS) and not action.required:
            assert "default" in action.help, f"{name} {action.dest}: help does not say its default"
    text = cli(name, "--help").stdout
    for action in command._actions:
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
            assert f"(default {action.default})" in " ".join(text.split()), (name, action.dest, text)


def test_demo_help_names_each_port_and_its_default() -> None:
    text = " ".join(cli("demo", "--help").stdout.split())
    for option, default in (("--listener-port", 15001), ("--httpbin-port", 8080), ("--xds-port", 18000),
                            ("--http-port", 18001), ("--admin-port", 9901)):
        assert re.search(rf"{option} PORT [^-]+\(default {default}\)", text), text


@pytest.mark.parametrize("command", ["serve", "run", "demo"])
def test_help_lists_every_http_endpoint(command: str) -> None:
    text = " ".join(cli(command, "--help").stdout.split())
    assert "/healthz, /readyz, /proxies, /status and /metrics" in text, text


def test_dockerfile_names_every_http_endpoint() -> None:
    [comment] = [line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("# 18000")]
    for path in ("/healthz", "/readyz", "/proxies", "/status", "/metrics"):
        assert path in comment, comment


def listening(*, reuse_port: bool) -> socket.socket:
    """A socket listening on a free loopback port; with SO_REUSEPORT as another gRPC server would be."""
    sock = socket.socket()
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
@pytest.mark.parametrize("option", ["--xds-address", "--http-address"])
@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_busy_server_port_is_one_line_naming_the_option(command: str, option: str, reuse_port: bool) -> None:
    other = "--http-address" if option == "--xds-address" else "--xds-address"
    args = ["--config", "examples"] if command == "serve" else ["--standalone"]
    with listening(reuse_port=reuse_port) as busy:
        port = busy.getsockname()[1]
        result = cli(command, *args, option, f"127.0.0.1:{port}", other, f"127.0.0.1:{free_port()}", timeout=20)
    one_line_error(result, 1, f"port {port}", "already in use", option)


def test_serve_rejects_an_address_without_a_port() -> None:
    one_line_error(cli("serve", "--config", "examples", "--http-address", "127.0.0.1"), 2, "--http-address",
                   "no port")


async def test_proxies_and_status_end_with_a_newline_and_pretty_print_on_request(tmp_path: Path) -> None:
    server = await ServeProcess(tmp_path, REPO / "examples").start()
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        for path in ("/proxies", "/status"):
            _, headers, compact = http_get(base + path)
            assert headers["content-type"].startswith("application/json")
            assert compact.endswith(b"\n") and compact.count(b"\n") == 1, compact[:200]
            _, _, pretty = http_get(base + path + "?pretty")
            assert pretty.endswith(b"\n") and json.loads(pretty) == json.loads(compact)
            if path == "/status":
                assert pretty.count(b"\n") > 10 and b'\n  "' in pretty, pretty[:200]
            _, _, by_curl = http_get(base + path, headers={"User-Agent": "curl/8.5.0"})
            assert by_curl == pretty
            _, _, not_pretty = http_get(base + path + "?pretty=false", headers={"User-Agent": "curl/8.5.0"})
            assert not_pretty == compact
    finally:
        await server.stop()


@pytest.mark.parametrize("args, reason", [
    (["serve", "--config", "examples", "--poll-interval", "0"], "--poll-interval: '0': give a number of seconds"),
    (["serve", "--config", "examples", "--poll-interval", "nan"], "--poll-interval: 'nan'"),
    (["serve", "--config", "examples", "--listener-address", "localhost"], "--listener-address: 'localhost' does not"),
    (["run", "--listener-address", "10.0.0"], "--listener-address: '10.0.0' does not"),
    (["bootstrap", "--node-id", ""], "--node-id: must not be empty"),
    (["bootstrap", "--node-cluster", " "], "--node-cluster: must not be empty"),
    (["bootstrap", "--admin-port", "99999"], "--admin-port: port 99999 is out of range"),
], ids=["poll-0", "poll-nan", "listener-name", "listener-bad-ip", "node-id", "node-cluster", "admin-port"])
def test_values_that_would_break_later_are_refused_at_once(args: list[str], reason: str) -> None:
    """A poll interval of 0 spins; Envoy NACKs a listener on a name and refuses ADS without a node id."""
    one_line_error(cli(*args), 2, reason)


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "xds-operator 0.1.0"
    as_module = subprocess.run([sys.executable, "-m", "xds_operator", "--version"], capture_output=True, text=True,
                               timeout=60)
    assert as_module.returncode == 0 and as_module.stdout == result.stdout


SERVE_ROUNDS = 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("when", ["serving", "starting"])
def test_serve_stops_cleanly_on_a_signal_to_uv_runs_group(sig: signal.Signals, when: str, tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the group and `uv run` forwards one more: exit 0, no traceback."""
    for round_ in range(SERVE_ROUNDS):
        http_port = free_port()
        err = tmp_path / f"serve{round_}.err"
        with open(err, "wb") as stderr:
            proc = subprocess.Popen([uv_binary(), "run", "--no-sync", "xds-operator", "serve", "--config", "examples",
                                     "--xds-address", f"127.0.0.1:{free_port()}",
                                     "--http-address", f"127.0.0.1:{http_port}"],
                                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                    env={**os.environ, "UV_PROJECT_ENVIRONMENT": sys.prefix})
        try:
            if when == "serving":
                deadline = time.monotonic() + 30
                while not _answers(f"http://127.0.0.1:{http_port}/readyz"):
                    assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                    time.sleep(0.05)
            else:  # while Python imports and the server starts
                time.sleep(0.3 + 0.2 * round_)
            os.killpg(proc.pid, sig)
            code = proc.wait(15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        text = err.read_text()
        # Stopped on request: 0. Killed by the signal, quietly, if it came before Python had
        # imported the program (the Unix way; `uv run` reports 128 + the signal).
        assert code == 0 or (when == "starting" and code == 128 + sig and "xds_operator" not in text), text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=1)[0] == 200
    except OSError:
        return False


# -- help ------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [[], ["serve"], ["validate"], ["demo"], ["bootstrap"], ["run"]],
                         ids=lambda c: c[0] if c else "top")
def test_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: xds-operator {command[0] if command else ''}".rstrip())
    if not command:
        for sub in ("serve", "validate", "demo", "bootstrap", "run"):
            assert sub in result.stdout


def test_no_subcommand_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "usage: xds-operator" in result.stderr


# -- serve -----------------------------------------------------------------------------------

def test_serve_refuses_a_config_that_does_not_exist(tmp_path: Path) -> None:
    result = cli("serve", "--config", str(tmp_path / "nonexistent"), "--xds-address", "127.0.0.1:0",
                 "--http-address", "127.0.0.1:0", timeout=30)
    assert result.returncode == 2
    assert result.stderr == f"xds-operator serve: error: --config {tmp_path / 'nonexistent'}: no such file or directory\n"


AGREE_FIRST = f"""\
apiVersion: {API}
kind: Backend
metadata: {{name: twice-here, namespace: t}}
spec: {{endpoints: [{{address: 127.0.0.1, port: 8080}}]}}
---
apiVersion: {API}
kind: Route
metadata: {{name: twice-across, namespace: t}}
spec: {{port: 80, rules: [{{backends: [{{name: twice-here}}]}}]}}
---
apiVersion: {API}
kind: Backend
metadata: {{name: twice-here, namespace: t}}
spec: {{endpoints: [{{address: 127.0.0.1, port: 0}}]}}
"""

AGREE_SECOND = f"""\
apiVersion: {API}
kind: Route
metadata: {{name: twice-across, namespace: t}}
spec: {{port: 15001, rules: [{{backends: [{{name: twice-here}}]}}]}}
"""


async def test_validate_and_the_server_agree_on_the_same_files(tmp_path: Path) -> None:
    """Duplicates within one file and across files: both judge the first definition, report each
    ignored one once at the same place with the same words, and the server shows them in /status."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "1.yaml").write_text(AGREE_FIRST)  # Backend valid first, broken second
    (config / "2.yaml").write_text(AGREE_SECOND)  # Route broken in 1.yaml (port 80), valid here
    result = cli("validate", str(config))
    assert result.returncode == 1
    first, second = config / "1.yaml", config / "2.yaml"
    duplicates = [
        f"{first}:11:1: error: Backend/t/twice-here is already defined in {first}:1:1, which is used; this "
        "definition is ignored",
        f"{second}:1:1: error: Route/t/twice-across is already defined in {first}:6:1, which is used; this "
        "definition is ignored"]
    assert result.stdout.splitlines() == [
        f"{first}:9:8: error: Route/t/twice-across: spec.port: 80 is out of range [1024, 65535]",
        duplicates[0], duplicates[1], "2 objects checked, 3 errors, 0 warnings"]

    server = ServeProcess(tmp_path, config)
    await server.start()
    try:
        status = server.get_json("/status")
        assert status["Backend/t/twice-here"]["conditions"][0]["status"] == "True"
        accepted = status["Route/t/twice-across"]["conditions"][0]
        assert (accepted["status"], accepted["message"]) == ("False", "spec.port: 80 is out of range [1024, 65535]")
        assert [f"{p['file']}:{p['line']}:{p['column']}: {p['severity']}: {p['message']}"
                for p in status["problems"]] == duplicates
        log = server.log_path.read_text()
        for line in duplicates:
            assert log.count(line) == 1, log
    finally:
        await server.stop()


async def test_status_and_metrics_show_a_file_that_cannot_be_loaded(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    good = config / "good.yaml"
    good.write_text(f"apiVersion: {API}\nkind: Backend\nmetadata: {{name: b, namespace: t}}\n"
                    "spec: {endpoints: [{address: 127.0.0.1, port: 8080}]}\n")
    server = ServeProcess(tmp_path, config)
    await server.start()
    try:
        def problems() -> tuple[list, str]:
            _, _, metrics = http_get(f"http://127.0.0.1:{server.http_port}/metrics")
            return server.get_json("/status").get("problems", []), metrics.decode()

        assert problems() == ([], problems()[1])
        assert 'xds_operator_source_problems{severity="error"} 0.0\n' in problems()[1]

        broken = config / "broken.yaml"
        broken.write_text("apiVersion: v1\nkind: [\n")
        found, metrics = await eventually(lambda: (p := problems())[0] and p, what="the broken file in /status")
        assert found == [{"severity": "error", "file": str(broken), "line": 3, "column": 1,
                          "message": "invalid YAML: did not find expected node content (while parsing a flow node "
                                     "at line 3, column 1)"}]
        assert 'xds_operator_source_problems{severity="error"} 1.0\n' in metrics

        good.unlink()  # the rest of the directory keeps being applied
        await eventually(lambda: "Backend/t/b" not in server.get_json("/status"), what="the deletion")
        broken.unlink()
        await eventually(lambda: "problems" not in server.get_json("/status"), what="the problem gone")
        assert "Traceback" not in server.log_path.read_text()
    finally:
        await server.stop()
