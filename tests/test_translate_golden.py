"""Golden tests of build + translate (Envoy Gateway style), and proof that a real Envoy accepts the output.

Each `tests/golden/<case>.in.yaml` is a multi-document input: Routes and Backends (plus, optionally,
Kubernetes Services and EndpointSlices for `service` backends). A leading comment
`# proxyGroups: edge, internal` names the proxy groups (Envoy node.cluster) whose config is rendered;
without it the group is "default". From it the test renders

- `<case>.ir.yaml`: the status of every object and, per group, the IR (`ir.to_data(config_for(group))`);
- `<case>.out.yaml`: per group, the Envoy resources of each type as
  `MessageToDict(..., preserving_proto_field_name=True)`, sorted by name;

and compares them with the files. `pytest --update-golden` rewrites the files instead; a missing file is
a failure, never silently created.

Then every case's resources are put into a static Envoy bootstrap (listeners with their route
configuration inline instead of RDS, EDS clusters turned STATIC with their load assignment inline) and
checked with `envoy --mode validate`: the translator's output must be what a real Envoy accepts.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.dev.processes import envoy_binary
from xds_operator.ir.builder import Builder, BuildResult
from xds_operator.ir.ir import to_data
from xds_operator.sources.kubernetes import trimmed_secret
from xds_operator.sources.state import StateStore
from xds_operator.translate import translate
from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET, VIRTUAL_HOST
from xds_operator.xds.snapshot import Snapshot, vhds_namespace

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name[: -len(".in.yaml")] for p in GOLDEN.glob("*.in.yaml"))
TYPE_NAMES = {t: t.rsplit(".", 1)[1] for t in PUSH_ORDER}  # Cluster, ClusterLoadAssignment, Listener, ...
_GROUPS = re.compile(r"^#\s*proxyGroups?:\s*(.+)$", re.MULTILINE)
HCM_NAME = "envoy.filters.network.http_connection_manager"
# Cases also rendered as delta proxies get them (VHDS): <case>.vhds.out.yaml, the route types only.
VHDS_CASES = ("tls", "two_ports", "virtual_hosts")


# -- rendering ---------------------------------------------------------------------------------

def load_case(text: str) -> tuple[StateStore, list[str]]:
    """The state an input file describes, and the proxy groups to render."""
    state = StateStore()
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        if doc.get("apiVersion") == API_VERSION:
            state.put(UserObject.from_manifest(doc))
        elif kind == "Service":
            state.put_service(namespace, meta["name"], doc)
        elif kind == "EndpointSlice":
            state.put_endpoint_slice(namespace, meta["name"], doc)
        elif kind == "Secret":
            state.put_secret(namespace, meta["name"], trimmed_secret(doc))
        else:
            raise ValueError(f"unexpected document in a golden input: {kind!r}")
    found = _GROUPS.search(text)
    groups = [g.strip() for g in found.group(1).split(",")] if found else ["default"]
    return state, groups


def statuses_data(result: BuildResult) -> dict:
    out = {}
    for key, status in sorted(result.statuses.items()):
        entry = {"generation": status.generation,
                 "conditions": [c.to_dict(status.generation) for c in status.conditions]}
        if status.errors:
            entry["errors"] = [str(e) for e in status.errors]
        out[str(key)] = entry
    return out


def resources_data(resources: dict[str, dict[str, Message]]) -> dict:
    return {
        # (through JSON: MessageToDict gives OrderedDicts for Any fields, which safe_dump refuses)
        TYPE_NAMES[t]: [json.loads(json.dumps(json_format.MessageToDict(resources[t][name],
                                                                        preserving_proto_field_name=True)))
                        for name in sorted(resources[t])]
        for t in PUSH_ORDER
        if t not in (SECRET, VIRTUAL_HOST) or resources[t]  # (no Secret section without TLS; VHDS: delta only)
    }


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True, default_flow_style=False)


def render(text: str) -> tuple[str, str, dict[str, dict[str, dict[str, Message]]]]:
    """(ir.yaml text, out.yaml text, the resources of each group) for an input file's text."""
    state, groups = load_case(text)
    result = Builder().build(state)
    configs = {g: result.config_for(g) for g in groups}
    resources = {g: translate(c) for g, c in configs.items()}
    ir_text = dump({"statuses": statuses_data(result), "groups": {g: to_data(c) for g, c in configs.items()}})
    out_text = dump({g: resources_data(r) for g, r in resources.items()})
    return ir_text, out_text, resources


def render_vhds(text: str) -> tuple[str, dict[str, dict[str, dict[str, Message]]]]:
    """(vhds.out.yaml text, the resources of each group) as delta proxies get them."""
    state, groups = load_case(text)
    result = Builder().build(state)
    resources = {g: translate(result.config_for(g), vhds=True) for g in groups}
    route_types = {g: {k: v for k, v in resources_data(r).items() if k in (TYPE_NAMES[ROUTE], TYPE_NAMES[VIRTUAL_HOST])}
                   for g, r in resources.items()}
    return dump(route_types), resources


def merged_vhds(resources: dict[str, dict[str, Message]]) -> dict[str, dict[str, Message]]:
    """What Envoy makes of VHDS (router/route_config_update_receiver_impl.cc): each route
    configuration with its virtual hosts put in, for a static bootstrap (which cannot use VHDS)."""
    routes: dict[str, Message] = {}
    for name, config in resources[ROUTE].items():
        if not config.HasField("vhds"):  # (an SNI chain's: its one virtual host inline)
            routes[name] = config
            continue
        merged = type(config)()
        merged.CopyFrom(config)
        merged.ClearField("vhds")
        merged.virtual_hosts.extend(vh for n, vh in sorted(resources[VIRTUAL_HOST].items()) if vhds_namespace(n) == name)
        routes[name] = merged
    assert all(vhds_namespace(n) in routes for n in resources[VIRTUAL_HOST]), "virtual hosts of no route configuration"
    return {**resources, ROUTE: routes, VIRTUAL_HOST: {}}


# -- Envoy validation ----------------------------------------------------------------------------

def static_bootstrap(resources: dict[str, dict[str, Message]]) -> bootstrap_pb2.Bootstrap:
    """The resources of one proxy group as a bootstrap Envoy can load without a control plane."""
    bootstrap = bootstrap_pb2.Bootstrap()
    routes = resources[ROUTE]
    for name in sorted(resources[LISTENER]):
        listener = bootstrap.static_resources.listeners.add()
        listener.CopyFrom(resources[LISTENER][name])
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.name != HCM_NAME:
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                assert f.typed_config.Unpack(hcm)
                assert hcm.HasField("rds"), "the translator's listeners get their routes over RDS"
                route_name = hcm.rds.route_config_name
                assert route_name in routes, f"listener {name} names a missing route configuration {route_name}"
                hcm.route_config.CopyFrom(routes[route_name])  # a oneof: replaces rds
                f.typed_config.Pack(hcm)
        for chain in listener.filter_chains:
            if chain.HasField("transport_socket"):
                _static_sds(chain.transport_socket, tls_pb2.DownstreamTlsContext(), resources[SECRET])
    for name in sorted(resources[SECRET]):
        bootstrap.static_resources.secrets.add().CopyFrom(resources[SECRET][name])
    endpoints = resources[ENDPOINT]
    for name in sorted(resources[CLUSTER]):
        cluster = bootstrap.static_resources.clusters.add()
        cluster.CopyFrom(resources[CLUSTER][name])
        if cluster.HasField("transport_socket"):
            _static_sds(cluster.transport_socket, tls_pb2.UpstreamTlsContext(), resources[SECRET])
        if cluster.type == cluster_pb2.Cluster.EDS:
            eds_name = cluster.eds_cluster_config.service_name or name
            assert eds_name in endpoints, f"EDS cluster {name} has no load assignment"
            cluster.ClearField("eds_cluster_config")
            cluster.type = cluster_pb2.Cluster.STATIC
            cluster.load_assignment.CopyFrom(endpoints[eds_name])
    assert set(endpoints) <= set(resources[CLUSTER]), "load assignments without a cluster"
    return bootstrap


def _static_sds(socket, context, secrets: dict[str, Message]) -> None:
    """SDS references over ADS become references to the bootstrap's static secrets (a name alone)."""
    assert socket.typed_config.Unpack(context)
    common = context.common_tls_context
    if isinstance(context, tls_pb2.DownstreamTlsContext) and context.require_client_certificate.value:
        # Without a validation context, Envoy would take any client certificate, or none.
        assert common.HasField("validation_context_sds_secret_config"), "client validation without a CA"
    configs = list(common.tls_certificate_sds_secret_configs)
    for field in ("validation_context_sds_secret_config",):
        if common.HasField(field):
            configs.append(getattr(common, field))
    if common.HasField("combined_validation_context"):
        configs.append(common.combined_validation_context.validation_context_sds_secret_config)
    assert (not common.tls_certificates and not common.HasField("validation_context")) or \
        common.validation_context.HasField("system_root_certs"), "certificates travel over SDS, never inline"
    for config in configs:
        assert config.sds_config.HasField("ads"), "secrets come over ADS"
        assert config.name in secrets, f"SDS secret {config.name} is missing"
        config.ClearField("sds_config")
    socket.typed_config.Pack(context)


def envoy_validate(bootstrap: bootstrap_pb2.Bootstrap, path: Path) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on the bootstrap, written as binary protobuf (what xDS would carry)."""
    path.write_bytes(bootstrap.SerializeToString(deterministic=True))
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                           "--log-level", "error"], capture_output=True, text=True, timeout=60)


def assert_envoy_accepts(resources_by_group: dict[str, dict[str, dict[str, Message]]], tmp_path: Path) -> None:
    def run(group):
        bootstrap = static_bootstrap(resources_by_group[group])
        return group, bootstrap, envoy_validate(bootstrap, tmp_path / f"{group}.pb")

    with ThreadPoolExecutor(max_workers=4) as pool:
        for group, bootstrap, proc in pool.map(run, sorted(resources_by_group)):
            assert proc.returncode == 0, (
                f"Envoy rejected the config of group {group!r} (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                f"bootstrap:\n{json_format.MessageToJson(bootstrap, preserving_proto_field_name=True)}")


# -- tests ---------------------------------------------------------------------------------------

def _compare(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"golden file {path.name} is missing: run pytest with --update-golden to create it, then review it")
    expected = path.read_text()
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"{path.name} (golden)", f"{path.name} (current)"))
        pytest.fail(f"{path.name} differs from the current output (rerun with --update-golden if intended):\n{diff}")


def test_golden_cases_exist():
    assert len(CASES) >= 8, f"golden inputs are missing from {GOLDEN}"
    expected = {f"{c}{suffix}" for c in CASES for suffix in (".in.yaml", ".ir.yaml", ".out.yaml")}
    expected |= {f"{c}.vhds.out.yaml" for c in VHDS_CASES}
    stray = {p.name for p in GOLDEN.glob("*.yaml")} - expected
    assert not stray, f"golden files without an input: {sorted(stray)}"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool):
    ir_text, out_text, _ = render((GOLDEN / f"{case}.in.yaml").read_text())
    _compare(GOLDEN / f"{case}.ir.yaml", ir_text, update_golden)
    _compare(GOLDEN / f"{case}.out.yaml", out_text, update_golden)
    # The output is deterministic: rendering again gives the same text.
    again = render((GOLDEN / f"{case}.in.yaml").read_text())
    assert again[:2] == (ir_text, out_text)


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_golden_output(case: str, tmp_path: Path):
    _, _, resources = render((GOLDEN / f"{case}.in.yaml").read_text())
    assert all(r[LISTENER] and r[CLUSTER] for r in resources.values())
    for by_type in resources.values():
        Snapshot.from_messages(by_type).check_consistent()  # what the server checks before serving it
    assert_envoy_accepts(resources, tmp_path)


@pytest.mark.parametrize("case", VHDS_CASES)
def test_golden_vhds(case: str, update_golden: bool, tmp_path: Path):
    """Delta proxies: route configurations that name VHDS, and every virtual host on its own,
    named "<route configuration>/<domain>"; the SotW rendering (above) is unchanged."""
    text = (GOLDEN / f"{case}.in.yaml").read_text()
    out_text, resources = render_vhds(text)
    _compare(GOLDEN / f"{case}.vhds.out.yaml", out_text, update_golden)
    _, _, sotw = render(text)
    for group, by_type in resources.items():
        assert {t: m for t, m in by_type.items() if t not in (ROUTE, VIRTUAL_HOST)} == \
            {t: m for t, m in sotw[group].items() if t not in (ROUTE, VIRTUAL_HOST)}
        Snapshot.from_messages(by_type).check_consistent()
        # The virtual hosts put back are the SotW route configurations', but for their names.
        for name, config in merged_vhds(by_type)[ROUTE].items():
            expected = sotw[group][ROUTE][name]
            if not by_type[ROUTE][name].HasField("vhds"):
                assert config == expected
                continue
            assert [vh.name for vh in config.virtual_hosts] == \
                sorted(f"{name}/{vh.name}" for vh in expected.virtual_hosts)
            assert sorted((tuple(vh.domains), vh.routes) for vh in config.virtual_hosts) == \
                sorted((tuple(vh.domains), vh.routes) for vh in expected.virtual_hosts)
    assert_envoy_accepts({g: merged_vhds(r) for g, r in resources.items()}, tmp_path)


# -- Envoy's limits are validation's limits --------------------------------------------------------

LIMITS = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {name: b, namespace: ns}
spec:
  endpoints: [{address: 10.0.0.1, port: 80}]
  healthCheck: {path: /healthz}
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {name: r, namespace: ns}
spec:
  port: 1024
  rules:
  - matches: [{path: {type: RegularExpression, value: "a{96}"}}]  # RE2 program size 100: the largest allowed
    backends: [{name: b}]
    rewrite: {pathPrefix: /x}
    responseHeaders: {set: [{name: x-a, value: "1"}]}
  - directResponse: {status: 200, body: BODY}
"""


def _limits_bootstrap(body: str) -> bootstrap_pb2.Bootstrap:
    text = LIMITS.replace("BODY", body)
    state, _ = load_case(text)
    result = Builder().build(state)
    assert all(s.condition("Accepted").status for s in result.statuses.values())
    return static_bootstrap(translate(result.config_for("default")))


def test_envoy_accepts_the_limits(tmp_path: Path):
    bootstrap = _limits_bootstrap("é" * 2048)  # 4096 bytes: the largest body allowed
    proc = envoy_validate(bootstrap, tmp_path / "limits.pb")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _edit_route(bootstrap: bootstrap_pb2.Bootstrap, edit) -> None:
    f = bootstrap.static_resources.listeners[0].filter_chains[0].filters[0]
    hcm = hcm_pb2.HttpConnectionManager()
    f.typed_config.Unpack(hcm)
    edit(hcm.route_config.virtual_hosts[0].routes)
    f.typed_config.Pack(hcm)


def _regex_route(routes):
    return next(r for r in routes if r.match.HasField("safe_regex"))


def _direct_route(routes):
    return next(r for r in routes if r.HasField("direct_response"))


def _redirect_with_code(route, code: int) -> None:
    route.redirect.response_code = code  # (replaces the direct response: a oneof)


# What validation refuses, done to the translated config behind validation's back: Envoy refuses it
# too (so the rules are needed), and for the reason validation gives.
REJECTED = {
    "regex program size 101": (lambda rs: setattr(_regex_route(rs).match.safe_regex, "regex", "a{97}"),
                               "RE2 program size of 101 > max program size of 100"),
    "regex lookahead": (lambda rs: setattr(_regex_route(rs).match.safe_regex, "regex", "(?=x)"),
                        "invalid perl operator: (?="),
    "regex backreference": (lambda rs: setattr(_regex_route(rs).match.safe_regex, "regex", "(a)\\1"),
                            "invalid escape sequence: \\1"),
    "direct response body of 4097 bytes": (lambda rs: setattr(_direct_route(rs).direct_response.body, "inline_string",
                                                              "é" * 2048 + "x"), "4096"),
    "response header Host set": (lambda rs: setattr(_regex_route(rs).response_headers_to_add[0].header, "key", "host"),
                                 "host headers may not be modified"),
    "response header Host removed": (lambda rs: _regex_route(rs).response_headers_to_remove.append("host"),
                                     "host headers may not be removed"),
    "request header :path set": (lambda rs: _regex_route(rs).request_headers_to_add.add(
        header={"key": ":path", "value": "/"}), "headers may not be modified"),
    "NUL in prefix rewrite": (lambda rs: setattr(_regex_route(rs).route, "prefix_rewrite", "/x\x00"), "PrefixRewrite"),
    "LF in header value": (lambda rs: setattr(_regex_route(rs).response_headers_to_add[0].header, "value", "a\nb"),
                           "Value"),
    "redirect code 200": (lambda rs: _redirect_with_code(_direct_route(rs), 200), "ResponseCode"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_envoy_refuses_what_validation_refuses(name: str, tmp_path: Path):
    edit, reason = REJECTED[name]
    bootstrap = _limits_bootstrap("ok")
    _edit_route(bootstrap, edit)
    proc = envoy_validate(bootstrap, tmp_path / "refused.pb")
    assert proc.returncode != 0, f"Envoy accepted {name}"
    assert reason in proc.stdout + proc.stderr


def test_envoy_refuses_a_health_check_path_with_control_characters(tmp_path: Path):
    bootstrap = _limits_bootstrap("ok")
    bootstrap.static_resources.clusters[0].health_checks[0].http_health_check.path = "/healthz\x01"
    proc = envoy_validate(bootstrap, tmp_path / "refused.pb")
    assert proc.returncode != 0 and "Path" in proc.stdout + proc.stderr


# -- whatever passes validation, Envoy accepts ------------------------------------------------------

GROUPS = ("default", "edge", "internal")


@pytest.mark.parametrize("seed", range(3))
def test_envoy_accepts_whatever_validation_accepts(seed: int, tmp_path: Path):
    """Hundreds of random (mostly valid) Routes and Backends with edge values in every field: what the
    Builder accepts, translated, must be accepted by Envoy. One Envoy run per proxy group."""
    from .test_validation import random_objects

    state = StateStore()
    for obj in random_objects(seed, 400, junk_rate=0):
        state.objects[obj.key] = obj
    result = Builder().build(state)
    accepted_routes = [k for k, s in result.statuses.items() if k.kind == "Route" and s.condition("Accepted").status]
    assert len(accepted_routes) > 100
    resources = {g: translate(result.config_for(g)) for g in GROUPS}
    assert sum(len(vh.routes) for rc in resources["edge"][ROUTE].values() for vh in rc.virtual_hosts) > 300
    try:
        assert_envoy_accepts(resources, tmp_path)
    except AssertionError:
        # Find the Route that Envoy refuses, for a readable failure.
        for key in accepted_routes:
            alone = StateStore()
            alone.objects = {k: o for k, o in state.objects.items() if k.kind == "Backend" or k == key}
            config = translate(Builder().build(alone).config_for("edge"))
            proc = envoy_validate(static_bootstrap(config), tmp_path / "alone.pb")
            if proc.returncode != 0:
                pytest.fail(f"Envoy refuses {key}, whose spec passed validation:\n{state.objects[key].spec!r}\n"
                            f"{proc.stdout}{proc.stderr}")
        raise
