"""The `xds-operator` command as users run it: validate, bootstrap, and every subcommand's --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xds_operator.dev.processes import envoy_binary

REPO = Path(__file__).resolve().parent.parent
API = "xds-operator.dev/v1alpha1"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xds_operator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


# -- validate --------------------------------------------------------------------------------

@pytest.mark.parametrize("paths", [["examples"], ["deploy/compose/config"], ["examples/httpbin.yaml"]])
def test_validate_accepts_the_shipped_configs(paths: list[str]) -> None:
    result = cli("validate", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    count = int(lines[0].split()[0])
    assert count >= 2
    assert lines[0] == f"{count} objects checked, 0 problems"


def test_validate_counts_objects_across_paths() -> None:
    counts = [int(cli("validate", p).stdout.split()[0]) for p in ("examples", "deploy/compose/config")]
    result = cli("validate", "examples", "deploy/compose/config")
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == f"{sum(counts)} objects checked, 0 problems"


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
    out = result.stdout
    lines = out.splitlines()

    assert f"{bad}:7: Route/t/badregex: spec.rules[0].matches[0].path.value: invalid regular expression" in out
    assert f"{bad}:16: Route/t/lowport: spec.port: 80 is out of range [1024, 65535]" in lines
    dangling = [line for line in lines if line.startswith(f"{bad}:24: Route/t/dangling: ")]
    assert len(dangling) == 1
    assert "ResolvedRefs=BackendNotFound" in dangling[0]
    assert "spec.rules[0].backends[0]: Backend t/missing not found" in dangling[0]
    assert f"{broken}: unreadable: " in out
    assert f"{dup}:2: Backend/t/good is also defined at {bad}:1" in lines
    assert f"warning: {bad}:32: skipped: kind 'ConfigMap'" in out

    # The duplicate is not what gets checked (the server keeps the first definition), the good
    # objects have no problems, and no problem is reported twice.
    assert "port: 0" not in out and "spec.endpoints" not in out
    assert "Route/t/fine" not in out and f"{bad}:1: Backend/t/good" not in out
    problems = [line for line in lines if line.startswith(str(config))]
    assert len(problems) == len(set(problems)) == 5
    # 6 objects in bad.yaml (the ConfigMap is not one) + the duplicate
    assert lines[-1] == "6 objects checked, 5 problems"


def test_validate_missing_path(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope'}: no such file or directory" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 objects checked, 1 problems"


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
