"""The `xds-operator` command as users run it: validate, bootstrap, and every subcommand's --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.realprocs import ServeProcess, eventually, http_get
from xds_operator.dev.processes import envoy_binary

REPO = Path(__file__).resolve().parent.parent
# A regular file that nobody, root included, may read (a write-only sysctl): an unreadable file.
WRITE_ONLY = Path("/proc/sys/vm/compact_memory")
API = "xds-operator.dev/v1alpha1"


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
kind: ConfigMap
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
        f"{path}:20:1: note: skipped: v1 ConfigMap is not read by xds-operator",
        "0 objects checked, 4 errors, 0 warnings"]

    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: not-ours}\n")
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
kind: ConfigMap
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
        f"{bad}:32:1: note: skipped: v1 ConfigMap is not read by xds-operator",
        f"{broken}:3:7: error: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at "
        "line 2, column 7)",
        # The duplicate is reported once, naming the definition in effect, and is not what gets
        # checked (the server keeps the first definition): no `port: 0` problem.
        f"{dup}:2:1: error: Backend/t/good is already defined in {bad}:1:1, which is used; this definition is "
        "ignored",
        # 5 objects in bad.yaml (the ConfigMap is not one); the duplicate is not checked
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
        assert 'xds_operator_source_problems{severity="error"} 0' in problems()[1]

        broken = config / "broken.yaml"
        broken.write_text("apiVersion: v1\nkind: [\n")
        found, metrics = await eventually(lambda: (p := problems())[0] and p, what="the broken file in /status")
        assert found == [{"severity": "error", "file": str(broken), "line": 3, "column": 1,
                          "message": "invalid YAML: did not find expected node content (while parsing a flow node "
                                     "at line 3, column 1)"}]
        assert 'xds_operator_source_problems{severity="error"} 1' in metrics

        good.unlink()  # the rest of the directory keeps being applied
        await eventually(lambda: "Backend/t/b" not in server.get_json("/status"), what="the deletion")
        broken.unlink()
        await eventually(lambda: "problems" not in server.get_json("/status"), what="the problem gone")
        assert "Traceback" not in server.log_path.read_text()
    finally:
        await server.stop()
