"""proxy-status, explain, config-dump and diff as users run them: the CLI in a subprocess against
a real `xds-operator serve` (or an in-process ControlPlane, to force a NACK) and a real Envoy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import free_port
from xds_operator.translate import TranslateOptions

from .realprocs import Envoy, ServeProcess, eventually, http_get
from .sabotage import translate_route_with_a_bad_regex

REPO = Path(__file__).resolve().parent.parent
TYPES = ("CDS", "EDS", "LDS", "RDS")

CONFIG = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: httpbin, namespace: demo}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {httpbin_port}}}]
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: httpbin, namespace: demo}}
spec:
  port: {listener_port}
  rules:
  - matches: [{{path: {{type: Prefix, value: /}}}}]
    backends: [{{name: httpbin}}]
    timeout: {timeout}
  - matches: [{{path: {{type: Exact, value: /old}}}}]
    redirect: {{path: /get, statusCode: 301}}
"""


async def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess, without blocking the event loop (which may run the server)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "xds_operator.cli", *args, cwd=REPO,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def admin_dump(envoy: Envoy) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
    """Envoy's dynamic resources by type and name: (version_info, resource without "@type")."""
    _, _, body = http_get(f"{envoy.admin_url}/config_dump?include_eds")
    found: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {t: {} for t in TYPES}

    def add(type_: str, version: str, resource: dict[str, Any], name_field: str = "name") -> None:
        resource = {k: v for k, v in resource.items() if k != "@type"}
        found[type_][resource[name_field]] = (version, resource)

    for config in json.loads(body)["configs"]:
        for item in config.get("dynamic_active_clusters", []):
            add("CDS", item["version_info"], item["cluster"])
        for item in config.get("dynamic_endpoint_configs", []):
            add("EDS", item.get("version_info", ""), item["endpoint_config"], "cluster_name")
        for item in config.get("dynamic_listeners", []):
            if "active_state" in item:
                add("LDS", item["active_state"]["version_info"], item["active_state"]["listener"])
        for item in config.get("dynamic_route_configs", []):
            add("RDS", item["version_info"], item["route_config"])
    return found


def contained(ours: Any, theirs: Any) -> bool:
    """Every field of `ours` is in `theirs` with the same value (Envoy's dump of endpoints adds
    the defaults it applied: health status, weights, overprovisioning factor)."""
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(k in theirs and contained(v, theirs[k]) for k, v in ours.items())
    if isinstance(ours, list):
        return isinstance(theirs, list) and len(ours) == len(theirs) and all(map(contained, ours, theirs))
    return ours == theirs



class Stack:
    """`xds-operator serve` on a config directory and one Envoy."""

    def __init__(self, tmp: Path, httpbin_port: int, api_type: str = "GRPC") -> None:
        self.tmp = tmp
        self.httpbin_port = httpbin_port
        self.listener_port = free_port()
        self.config_dir = tmp / "config"
        self.config_dir.mkdir()
        self.write(self.config_dir, timeout="15s")
        self.server = ServeProcess(tmp, self.config_dir)
        self.envoy = Envoy(tmp, self.server.xds_port, api_type=api_type, node_cluster="default")
        self.url = f"http://127.0.0.1:{self.server.http_port}"

    def write(self, directory: Path, *, timeout: str) -> Path:
        directory.mkdir(exist_ok=True)
        path = directory / "httpbin.yaml"
        path.write_text(CONFIG.format(httpbin_port=self.httpbin_port, listener_port=self.listener_port,
                                      timeout=timeout))
        return path

    async def proxy_status(self) -> list[dict[str, Any]]:
        rc, out, err = await cli("proxy-status", "--server", self.url, "-o", "json")
        assert rc == 0, err
        return json.loads(out)


async def start_stack(tmp: Path, httpbin_port: int, api_type: str = "GRPC") -> Stack:
    stack = Stack(tmp, httpbin_port, api_type)
    await stack.server.start()
    await stack.envoy.start()
    await eventually(lambda: http_get(f"http://127.0.0.1:{stack.listener_port}/get")[0] == 200,
                     what="traffic through Envoy")
    return stack


@pytest.fixture
async def stack(tmp_path, httpbin):
    stack = await start_stack(tmp_path, httpbin.port)
    yield stack
    await stack.envoy.stop()
    await stack.server.stop()


def all_synced(proxies: list[dict[str, Any]]) -> bool:
    return len(proxies) == 1 and all(proxies[0]["types"][t]["state"] == "SYNCED" for t in TYPES)


# -- proxy-status -------------------------------------------------------------------------------

async def test_proxy_status_shows_envoy_synced_then_stale_while_it_cannot_answer(stack):
    proxies = await eventually(lambda: all_synced(p := stack.server.get_json("/debug/proxy-status")) and p,
                               what="Envoy synced")
    # The versions are the ones Envoy itself reports running (SotW: the response's version_info).
    envoy = admin_dump(stack.envoy)
    for t in ("CDS", "LDS", "RDS"):
        assert {v for v, _ in envoy[t].values()} == {proxies[0]["types"][t]["version"]}, t

    rc, out, err = await cli("proxy-status", "--server", stack.url)
    assert rc == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NODE", "GROUP", "PROTOCOL", "CONNECTED", "SINCE", *TYPES]
    cells = row.split()
    assert cells[:3] == ["envoy-1", "default", "sotw"]
    assert cells[4:] == [x for t in TYPES for x in ("SYNCED", proxies[0]["types"][t]["version"][:8])]

    # Envoy frozen (SIGSTOP) cannot ACK a change: it runs the old routes, the server has new ones.
    old_rds = proxies[0]["types"]["RDS"]["version"]
    os.kill(stack.envoy.process.proc.pid, signal.SIGSTOP)
    try:
        stack.write(stack.config_dir, timeout="5s")
        proxies = await eventually(lambda: (p := stack.server.get_json("/debug/proxy-status"))
                                   and p[0]["types"]["RDS"]["state"] == "STALE" and p, what="RDS stale")
        rds = proxies[0]["types"]["RDS"]
        assert rds["version"] == old_rds and rds["expected"] != old_rds
        assert {proxies[0]["types"][t]["state"] for t in ("CDS", "EDS", "LDS")} == {"SYNCED"}
        rc, out, _ = await cli("proxy-status", "--server", stack.url, "--node", "envoy-1")
        assert f"STALE {old_rds[:8]}" in out.splitlines()[1]
    finally:
        os.kill(stack.envoy.process.proc.pid, signal.SIGCONT)
    proxies = await eventually(lambda: all_synced(p := stack.server.get_json("/debug/proxy-status")) and p,
                               what="Envoy synced again")
    assert proxies[0]["types"]["RDS"]["version"] == rds["expected"]


async def test_proxy_status_filters_and_formats(stack):
    await eventually(lambda: all_synced(stack.server.get_json("/debug/proxy-status")), what="Envoy synced")
    rc, out, _ = await cli("proxy-status", "--server", stack.url, "--group", "other")
    assert (rc, out) == (0, "no connected proxies\n")
    rc, out, _ = await cli("proxy-status", "--server", stack.url, "--node", "envoy-1", "-o", "yaml")
    assert rc == 0 and [p["node"] for p in yaml.safe_load(out)] == ["envoy-1"]
    rc, out, err = await cli("proxy-status", "--server", f"127.0.0.1:{free_port()}")
    assert rc == 2 and out == "" and err.startswith("error: cannot reach the server at http://127.0.0.1:")
    assert len(err.splitlines()) == 1
    # The endpoints say what is wrong with a request, as JSON.
    status, _, body = http_get(f"{stack.url}/debug/config_dump?group=default&node=envoy-1")
    assert (status, json.loads(body)) == (400, {"error": "give exactly one of group= or node="})


@pytest.mark.parametrize("command", ["proxy-status", "explain", "config-dump", "diff"])
async def test_help(command: str) -> None:
    rc, out, err = await cli(command, "--help")
    assert rc == 0, err
    assert out.startswith(f"usage: xds-operator {command}")
    rc, out, _ = await cli("--help")
    assert command in out


# -- NACKED, with an in-process server whose translator is sabotaged -----------------------------

def manifest(kind: str, name: str, spec: dict[str, Any]) -> UserObject:
    return UserObject.from_manifest({"apiVersion": API_VERSION, "kind": kind,
                                     "metadata": {"name": name, "namespace": "demo"}, "spec": spec})


async def test_proxy_status_and_explain_show_a_nack(tmp_path, httpbin, monkeypatch):
    good_port, nack_port = free_port(), free_port()
    plane = ControlPlane(xds_address="127.0.0.1:0", http_address="127.0.0.1:0", debounce=0.01,
                         options=TranslateOptions(listener_address="127.0.0.1"))
    plane.state.put(manifest("Backend", "httpbin", {"endpoints": [{"address": "127.0.0.1", "port": httpbin.port}]}))
    plane.state.put(manifest("Route", "good", {"port": good_port, "rules": [{"backends": [{"name": "httpbin"}]}]}))
    # What is shown here is a NACK that stays: Route-level isolation would hold "nack-me" back
    # (controlplane/isolation.py, tested in test_route_isolation*.py) and so end the NACK.
    plane.controller.isolation = None
    await plane.start()
    envoy = Envoy(tmp_path, plane.xds_port)  # group "test"
    url = f"http://127.0.0.1:{plane.http_port}"
    try:
        await envoy.start()
        await eventually(lambda: http_get(f"http://127.0.0.1:{good_port}/get")[0] == 200, what="traffic")
        translate_route_with_a_bad_regex(monkeypatch, "nack-me")
        plane.state.put(manifest("Route", "nack-me", {"port": nack_port, "rules": [{"backends": [{"name": "httpbin"}]}]}))

        async def rds_state() -> str:
            rc, out, _ = await cli("proxy-status", "--server", url, "-o", "json")
            return json.loads(out)[0]["types"]["RDS"]["state"] if rc == 0 else ""

        for _ in range(200):
            if await rds_state() == "NACKED":
                break
            await asyncio.sleep(0.05)
        rc, out, err = await cli("proxy-status", "--server", url)
        assert rc == 0, err
        lines = out.splitlines()
        assert "NACKED" in lines[1].split()[-2], out  # RDS, the last column pair
        assert lines[3] == "last NACK:"
        assert lines[4].startswith("  envoy-1 RDS version ") and "unclosed" in lines[4]

        rc, out, err = await cli("explain", "route/demo/nack-me", "--server", url)
        assert rc == 0, err
        assert "Programmed=False Rejected: rejected by Envoy: envoy-1: " in out
        assert "  proxy envoy-1 (sotw): NACKED: " in out and "unclosed" in out.split("proxy envoy-1")[1]
        # A SotW NACK rejects the whole response, so Route "good" (whose routes it carried too)
        # shows what /status says of it: one verdict, from status/report.py, for both.
        rc, out, err = await cli("explain", "route/demo/good", "--server", url)
        assert rc == 0, err
        _, _, body = await asyncio.to_thread(http_get, f"{url}/status")  # the server runs on this loop
        programmed = next(c for c in json.loads(body)["Route/demo/good"]["conditions"] if c["type"] == "Programmed")
        assert f"  Programmed={programmed['status']} {programmed['reason']}: {programmed['message']}\n" in out
    finally:
        await envoy.stop()
        await plane.stop()


# -- explain and config-dump ---------------------------------------------------------------------

async def test_explain_route_and_backend(stack):
    await eventually(lambda: all_synced(stack.server.get_json("/debug/proxy-status")), what="Envoy synced")
    rc, out, err = await cli("explain", "Route/demo/httpbin", "--server", stack.url)
    assert rc == 0, err
    port = stack.listener_port
    assert out.splitlines()[:4] == [
        "Route/demo/httpbin (generation 1)",
        "  Accepted=True Accepted: spec is valid",
        "  ResolvedRefs=True ResolvedRefs: all references resolved",
        "  Programmed=True Programmed: 1/1 proxies ACKed it",
    ]
    body = out.split("\n\n", 1)[1].splitlines()
    assert body[0].startswith("proxy group default (snapshot ")
    assert body[1:] == [
        f"  listener http-{port} on 127.0.0.1:{port}",
        f"    filter chain 0: envoy.filters.network.http_connection_manager, routes from RDS http-{port}",
        f"  route configuration http-{port}",
        "    virtual host * (domains *): 2 of its 2 routes, in precedence order",
        "      1. demo/httpbin/1/0  path /old  -> redirect MOVED_PERMANENTLY: path /get",  # exact paths first
        "      2. demo/httpbin/0/0  prefix /  -> cluster demo/httpbin (timeout 15s)",
        "  cluster demo/httpbin: EDS, ROUND_ROBIN, connect timeout 5s",
        f"    endpoints: 127.0.0.1:{stack.httpbin_port}",
        "  proxy envoy-1 (sotw): ACKED",
    ]
    rc, out, err = await cli("explain", "backend/demo/httpbin", "--server", stack.url)
    assert rc == 0, err
    assert f"  used by route 2 demo/httpbin/0/0 of virtual host * in route configuration http-{port}\n" in out
    assert "  proxy envoy-1 (sotw): ACKED\n" in out

    # The YAML form carries the Envoy resources: the same Envoy runs.
    rc, out, err = await cli("explain", "Route/demo/httpbin", "--server", stack.url, "-o", "yaml")
    assert rc == 0, err
    group = yaml.safe_load(out)["groups"][0]
    envoy = admin_dump(stack.envoy)
    assert group["resources"]["LDS"][0]["resource"] == envoy["LDS"][f"http-{port}"][1]
    assert group["resources"]["RDS"][0]["resource"] == envoy["RDS"][f"http-{port}"][1]
    assert group["resources"]["CDS"][0]["resource"] == envoy["CDS"]["demo/httpbin"][1]

    for bad in ("Route/demo", "Service/demo/httpbin", "Route/demo/missing"):
        rc, out, err = await cli("explain", bad, "--server", stack.url)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (bad, err)


def test_explain_shows_a_tls_routes_redirects_on_the_plain_port() -> None:
    """The redirect's listener and virtual hosts are the TLS Route's too, in each group where it has them."""
    from xds_operator.api.objects import ObjectKey
    from xds_operator.inspect.explain import format_text
    from xds_operator.ir.builder import Builder
    from xds_operator.status.inspection import explain
    from xds_operator.xds.snapshot import Snapshot

    from .test_translate_golden import GOLDEN, load_case

    state, groups = load_case((GOLDEN / "https_redirect.in.yaml").read_text())
    result = Builder().build(state)
    key = ObjectKey("Route", "web", "api")
    body = explain(key, result, {g: Snapshot.from_config(result.config_for(g), TranslateOptions()) for g in groups},
                   {})
    redirects = {group["group"]: [p["virtualHost"] for p in group["precedence"]
                                  if p["virtualHost"] in ("api.example.com", "taken.example.com")]
                 for group in body["groups"]}
    # Each group: the two SNI hostnames, then the redirects on 8080 (taken.example.com is plain web/plain's in edge).
    assert redirects == {"edge": ["api.example.com", "taken.example.com", "api.example.com"],
                         "internal": ["api.example.com", "taken.example.com", "api.example.com", "taken.example.com"]}
    assert [[ln["name"] for ln in group["resources"]["LDS"]] for group in body["groups"]] == [
        ["http-9443", "http-8080"]] * 2
    text = format_text({**body, "observedGeneration": 1, "conditions": []})
    assert "1. web/api/https-redirect  prefix /  -> redirect PERMANENT_REDIRECT: scheme https, port 9443" in text


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_config_dump_is_what_envoy_got(tmp_path, httpbin, api_type):
    stack = await start_stack(tmp_path, httpbin.port, api_type)
    try:
        await eventually(lambda: all_synced(stack.server.get_json("/debug/proxy-status")), what="Envoy synced")
        rc, out, err = await cli("config-dump", "--node", "envoy-1", "--server", stack.url)
        assert rc == 0, err
        dump = yaml.safe_load(out)
        protocol = "delta" if api_type == "DELTA_GRPC" else "sotw"
        rc, by_group, _ = await cli("config-dump", "--group", "default", "--protocol", protocol, "--server", stack.url,
                                    "-o", "json")
        assert json.loads(by_group) == dump
        envoy = admin_dump(stack.envoy)
        if api_type == "DELTA_GRPC":
            # Envoy shows a route configuration with the virtual hosts VHDS brought put in (by
            # name), each named as its resource.
            vhosts = sorted(dump["types"]["VHDS"]["resources"], key=lambda r: r["name"])
            assert vhosts and all(r["resource"]["name"] == r["name"] for r in vhosts)
            for config in dump["types"]["RDS"]["resources"]:
                if "vhds" in config["resource"]:
                    config["resource"]["virtual_hosts"] = [r["resource"] for r in vhosts
                                                           if r["name"].startswith(config["name"] + "/")]
        for t in TYPES:
            ours = {r["name"]: r for r in dump["types"][t]["resources"]}
            assert ours.keys() == envoy[t].keys(), t
            for name, resource in ours.items():
                version, theirs = envoy[t][name]
                if t == "EDS":
                    assert contained(resource["resource"], theirs), name
                else:
                    assert resource["resource"] == theirs, name
                    # SotW: the type's version; delta: each resource's own, but a route configuration
                    # over VHDS shows the system_version_info of the last VHDS update: the snapshot's.
                    if api_type == "GRPC":
                        assert version == dump["types"][t]["version"]
                    elif "vhds" in resource["resource"]:
                        assert version == dump["version"]
                    else:
                        assert version == resource["version"]
        rc, out, err = await cli("config-dump", "--node", "nobody", "--server", stack.url)
        assert (rc, out, err) == (2, "", f"error: {stack.url}: no proxy with node id 'nobody' is connected\n")
    finally:
        await stack.envoy.stop()
        await stack.server.stop()


# -- diff ----------------------------------------------------------------------------------------

async def test_diff_against_the_server(stack):
    edited = stack.write(stack.tmp / "edited", timeout="5s")
    rc, out, err = await cli("diff", str(edited), "--server", stack.url)
    assert rc == 1, err
    assert out.splitlines() == [
        "proxy group default:",
        f"  ~ RDS http-{stack.listener_port} (changed)",
        '      ~ virtual_hosts["*"].routes["demo/httpbin/0/0"].route.timeout: "15s" -> "5s"',
        "0 added, 0 removed, 1 changed in 1 of 1 proxy groups (default)",
    ]
    rc, out, err = await cli("diff", str(stack.config_dir), "--server", stack.url)
    assert (rc, out) == (0, "no change in proxy group default\n"), err
    # Applied, the edit is what the server sends: no diff left.
    stack.write(stack.config_dir, timeout="5s")
    await eventually(lambda: stack.server.get_json("/status")["Route/demo/httpbin"]["proxies"]["synced"] == 1
                     and "5s" in json.dumps(stack.server.get_json("/debug/config_dump?group=default")),
                     what="edit applied")
    rc, out, _ = await cli("diff", str(edited), "--server", stack.url)
    assert rc == 0, out
    rc, out, err = await cli("diff", str(edited), "--server", f"127.0.0.1:{free_port()}")
    assert rc == 2 and out == "" and len(err.splitlines()) == 1


ROUTES = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {name: app, namespace: t}
spec:
  endpoints: [{address: 127.0.0.1, port: 8080}]
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {name: app, namespace: t}
spec:
  port: 15001
  rules:
  - matches: [{path: {type: Prefix, value: /api}}]
    backends: [{name: app}]
  - matches: [{path: {type: Prefix, value: /}}]
    directResponse: {status: 404}
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(text)
    return directory


async def test_diff_offline_exit_codes_and_field_changes(tmp_path):
    before = write(tmp_path / "before", ROUTES)
    rc, out, err = await cli("diff", str(before), "--against", str(before))
    assert (rc, out, err) == (0, "no change in proxy group default\n", "")

    # An edited Route: one field of one resource.
    after = write(tmp_path / "after", ROUTES.replace("value: /api", "value: /v2"))
    rc, out, err = await cli("diff", str(after), "--against", str(before))
    assert rc == 1, err
    assert out.splitlines() == [
        "proxy group default:",
        "  ~ RDS http-15001 (changed)",
        '      ~ virtual_hosts["*"].routes["t/app/0/0"].match.path_separated_prefix: "/api" -> "/v2"',
        "0 added, 0 removed, 1 changed in 1 of 1 proxy groups (default)",
    ]

    # A new Route for group "edge" only: that group gets a listener and its routes; default nothing.
    edge = ROUTES + """\
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {name: edge, namespace: t}
spec:
  port: 15002
  proxies: [edge]
  rules:
  - backends: [{name: app}]
"""
    rc, out, err = await cli("diff", str(write(tmp_path / "edge", edge)), "--against", str(before))
    assert rc == 1, err
    lines = out.splitlines()
    assert lines[0] == "proxy group edge:"
    assert [line for line in lines if line.startswith("  ") and not line.startswith("   ")] == [
        "  + LDS http-15002 (added)", "  + RDS http-15002 (added)"]
    assert "      + name: http-15002" in lines and "      +     port_value: 15002" in lines
    assert lines[-1] == "2 added, 0 removed, 0 changed in 1 of 2 proxy groups (default, edge)"

    # The rules swapped: entries are named by rule index, so each name now has the other's match
    # and action, and precedence (longer prefix first) puts them in the other order.
    rules = ROUTES.split("  rules:\n")
    first, second = rules[1][:rules[1].index("  - matches: [{path: {type: Prefix, value: /}}]")], \
        rules[1][rules[1].index("  - matches: [{path: {type: Prefix, value: /}}]"):]
    rc, out, _ = await cli("diff", str(write(tmp_path / "swapped", rules[0] + "  rules:\n" + second + first)),
                           "--against", str(before))
    assert rc == 1
    assert '      ~ virtual_hosts["*"].routes order: ["t/app/0/0", "t/app/1/0"] -> ["t/app/1/0", "t/app/0/0"]' \
        in out.splitlines(), out

    # Errors: one line each, exit 2.
    invalid = write(tmp_path / "invalid", ROUTES.replace("value: /api", "value: api"))
    for args in ((str(tmp_path / "missing"), "--against", str(before)),
                 (str(invalid), "--against", str(before)),
                 (str(write(tmp_path / "garbage", "kind: Route\nspec: [unclosed\n")), "--against", str(before))):
        rc, out, err = await cli("diff", *args)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (args, err)
    assert "spec.rules[0].matches[0].path.value" in (await cli("diff", str(invalid), "--against", str(before)))[2]


# -- against `run`: the Kubernetes operator, where Backends resolve Services -------------------

async def test_commands_against_the_kubernetes_operator(kube, kubectl, monkeypatch, tmp_path, httpbin_on_host):
    from .kubeops import running_operator
    from .test_kube_e2e import APP, in_namespace

    httpbin = httpbin_on_host
    namespace = kube.namespace
    listener_port = free_port()
    app = tmp_path / "app.yaml"
    app.write_text(in_namespace(APP.format(httpbin_host=httpbin.host, httpbin_port=httpbin.port,
                                           listener_port=listener_port), namespace))
    async with running_operator(kube, monkeypatch) as operator:
        await kubectl("apply", "-f", str(app))
        assert operator.plane is not None
        envoy = Envoy(tmp_path, operator.plane.xds_port, node_cluster="httpbin", node_id="httpbin-7d4b9")
        await envoy.start()
        url = f"127.0.0.1:{operator.plane.http_port}"
        try:
            await eventually(lambda: http_get(f"http://127.0.0.1:{listener_port}/get")[0] == 200, what="traffic")

            async def synced() -> bool:
                rc, out, _ = await cli("proxy-status", "--server", url, "-o", "json")
                return rc == 0 and all_synced(json.loads(out))

            for _ in range(100):
                if await synced():
                    break
                await asyncio.sleep(0.1)
            rc, out, err = await cli("proxy-status", "--server", url)
            assert rc == 0 and out.splitlines()[1].split()[:3] == ["httpbin-7d4b9", "httpbin", "sotw"], err
            assert out.splitlines()[1].split()[4::2] == ["SYNCED"] * 4, out

            # The Backend's endpoints come from the EndpointSlice of its Service.
            rc, out, err = await cli("explain", f"Backend/{namespace}/httpbin", "--server", url)
            assert rc == 0, err
            assert f"    endpoints: {httpbin.host}:{httpbin.port}\n" in out and "  proxy httpbin-7d4b9 (sotw): ACKED\n" in out

            # The applied manifests diff to nothing: the server's Services and EndpointSlices
            # are part of the comparison, so the Backend resolves to the same endpoints.
            rc, out, err = await cli("diff", str(app), "--server", url)
            assert (rc, out) == (0, "no change in proxy groups default, httpbin\n"), out
            edited = tmp_path / "edited.yaml"
            edited.write_text(app.read_text().replace("  - backends: [{name: httpbin}]",
                                                      "  - backends: [{name: httpbin}]\n    timeout: 3s"))
            rc, out, err = await cli("diff", str(edited), "--server", url)
            assert rc == 1, err
            assert out.splitlines() == [
                "proxy group httpbin:",
                f"  ~ RDS http-{listener_port} (changed)",
                f'      + virtual_hosts["*"].routes["{namespace}/httpbin/0/0"].route.timeout: "3s"',
                "0 added, 0 removed, 1 changed in 1 of 2 proxy groups (default, httpbin)",
            ]
        finally:
            await envoy.stop()
