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

from xds_operator.cli import parser
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import Process, envoy_binary, envoy_command, free_port

from .realprocs import ServeProcess, eventually, http_get, uv_binary

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
