"""deploy/ (what `kubectl apply -k deploy/` applies) and crds/, checked without a cluster.

`kubectl kustomize deploy/` renders the manifests exactly as `kubectl apply -k` would send them.
Every built-in document is validated strictly against the Kubernetes OpenAPI schemas
(kubernetes-validate; unknown fields are errors), every CRD file too, and the example's Routes and
Backends against the CRDs' own schemas and the operator's model. Then what a cluster would only
show at run time: the operator's pod hardening and probes, RBAC limited to exactly what the
operator uses, the sidecar's bootstrap being the template's rendering that a real Envoy accepts,
and the names and ports that must agree across objects (and with kind-config.yaml).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from xds_operator import cli
from xds_operator.api.objects import ObjectKey
from xds_operator.bootstrap import BootstrapParams, render_bootstrap
from xds_operator.dev.processes import envoy_binary
from xds_operator.ir.builder import Builder
from xds_operator.sources.kubernetes import (
    apply_endpoint_slice_event,
    apply_object_event,
    apply_service_event,
    trimmed_secret,
)
from xds_operator.sources.state import StateStore

from .kubecluster import binary, find_assets

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CRDS = ROOT / "crds"
KUBERNETES_VERSION = kubernetes_validate.latest_version()  # the newest schemas the validator ships
API_GROUP = "xds-operator.dev"
OPERATOR_NS = "xds-operator"
DEMO_NS = "demo"

# The sidecar bootstrap: the template with the in-cluster address of the operator's Service.
SIDECAR_PARAMS = BootstrapParams(node_id="httpbin", node_cluster="httpbin",
                                 xds_host="xds-operator.xds-operator.svc.cluster.local", xds_port=18000,
                                 admin_address="127.0.0.1", admin_port=9901)

# Everything the operator may do, as (API group, resource, verb). Nothing else is granted.
ALLOWED_RBAC = (
    {(API_GROUP, r, v) for r in ("routes", "backends") for v in ("get", "list", "watch", "patch")}
    | {(API_GROUP, r, v) for r in ("routes/status", "backends/status") for v in ("get", "patch", "update")}
    | {("", "services", v) for v in ("get", "list", "watch")}
    | {("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")}
    | {("", "secrets", v) for v in ("get", "list", "watch")}
    | {("", "configmaps", "get")}  # a Backend's CA bundle, by name: never listed or watched
    | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    | {("", "namespaces", v) for v in ("list", "watch")}
    | {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
)


def kubectl() -> str:
    """The kubectl of the tests' Kubernetes release (tests/kubecluster.py: KUBEBUILDER_ASSETS, or built)."""
    return binary(find_assets(), "kubectl")


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs
    return docs


def find(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def one(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} found"
    return found[0]


def crd_files() -> list[Path]:
    return sorted(p for p in CRDS.rglob("*") if p.suffix in (".yaml", ".yml"))


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def port_number(c: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def envoy_validate(bootstrap: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap), *args],
                          capture_output=True, text=True, timeout=60, check=False)


# -- schemas ------------------------------------------------------------------------------------


def test_what_is_rendered(rendered: list[dict]) -> None:
    kinds = sorted((d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in rendered)
    names = {(k, n) for k, _, n in kinds}
    for expected in [("CustomResourceDefinition", f"routes.{API_GROUP}"),
                     ("CustomResourceDefinition", f"backends.{API_GROUP}"),
                     ("Namespace", OPERATOR_NS), ("Namespace", DEMO_NS),
                     ("ServiceAccount", "xds-operator"), ("ClusterRole", "xds-operator"),
                     ("ClusterRoleBinding", "xds-operator"), ("Deployment", "xds-operator"),
                     ("Service", "xds-operator"), ("Deployment", "httpbin"), ("Service", "httpbin"),
                     ("Service", "httpbin-envoy"), ("Backend", "httpbin"), ("Route", "httpbin"),
                     ("Route", "httpbin-https"), ("Secret", "httpbin-tls")]:
        assert expected in names, expected
    # Every namespaced object names its namespace, one of the two this installs.
    for d in rendered:
        if d["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"].get("namespace") in (OPERATOR_NS, DEMO_NS), d["metadata"]


def test_builtin_documents_validate_strictly(rendered: list[dict]) -> None:
    checked = 0
    for doc in rendered:
        if doc["apiVersion"].startswith(API_GROUP + "/"):
            continue  # custom resources: checked against the CRDs below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 12


def test_crd_files_validate_strictly() -> None:
    files = crd_files()
    assert files, "crds/ is empty"
    crds = 0
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") == "Kustomization":
                for resource in doc.get("resources", []):  # what deploy/ includes as ../crds
                    assert (path.parent / resource).exists(), f"{path}: {resource}"
                continue
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            crds += doc["kind"] == "CustomResourceDefinition"
    assert crds >= 2


def undeclared_fields(value: object, schema: dict, path: str) -> list[str]:
    """Fields the API server would prune (silently drop) from a custom resource: not in its schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                out += undeclared_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += undeclared_fields(item, extra, f"{path}.{key}")
            elif properties is not None or extra is False:
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += undeclared_fields(item, schema["items"], f"{path}[{i}]")
    return out


def test_custom_resources_match_their_crds(rendered: list[dict]) -> None:
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in find(rendered, "CustomResourceDefinition")}
    checked = 0
    for doc in rendered:
        group, _, version = doc["apiVersion"].partition("/")
        if group != API_GROUP:
            continue
        crd = crds[(group, doc["kind"])]
        assert crd["spec"]["scope"] == "Namespaced" and doc["metadata"].get("namespace")
        served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
        assert version in served, f"{doc['kind']}: {version} is not served"
        schema = served[version]["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        jsonschema.Draft7Validator(schema).validate(body)
        assert undeclared_fields(body, schema, doc["kind"]) == []
        checked += 1
    assert checked == 3


def test_example_routes_and_backends_build_cleanly(rendered: list[dict]) -> None:
    """The example as the operator ingests it (its kopf handlers' functions): the Route and
    Backend, the Service they name and the EndpointSlice Kubernetes would make for a ready pod."""
    state = StateStore()
    statuses: dict = {}
    for doc in rendered:
        if doc["apiVersion"].startswith(API_GROUP + "/"):
            apply_object_event(state, statuses, "ADDED", doc)
        elif doc["kind"] == "Service":
            apply_service_event(state, "ADDED", doc)
        elif doc["kind"] == "Secret":  # as kube/secrets.py keeps it
            state.put_secret(doc["metadata"]["namespace"], doc["metadata"]["name"], trimmed_secret(doc))
    service = one(rendered, "Service", "httpbin", DEMO_NS)
    port = service["spec"]["ports"][0]
    httpbin = container(one(rendered, "Deployment", "httpbin", DEMO_NS)["spec"]["template"]["spec"], "httpbin")
    apply_endpoint_slice_event(state, "ADDED", {
        "metadata": {"name": "httpbin-abcde", "namespace": DEMO_NS,
                     "labels": {"kubernetes.io/service-name": "httpbin"}},
        "addressType": "IPv4",
        "ports": [{"name": port["name"], "port": port_number(httpbin, port["targetPort"]), "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": True}}]})
    result = Builder().build(state)
    for kind, name in (("Route", "httpbin"), ("Backend", "httpbin"), ("Route", "httpbin-https")):
        status = result.statuses[ObjectKey(kind, DEMO_NS, name)]
        assert status.errors == () and status.warnings == ()  # the example certificate covers its hostname
        for condition in status.conditions:  # (Conflicted is abnormal-true)
            assert condition.status is (condition.type != "Conflicted"), f"{kind} {name}: {condition}"
    # The sidecars' proxy group gets the listeners on the Routes' ports, with httpbin's pod behind them,
    # the HTTPS one's certificate, and localhost redirected to HTTPS on the plain port.
    route, https = one(rendered, "Route", "httpbin", DEMO_NS), one(rendered, "Route", "httpbin-https", DEMO_NS)
    config = result.config_for(SIDECAR_PARAMS.node_cluster)
    assert [listener.port for listener in config.listeners] == [route["spec"]["port"], https["spec"]["port"]]
    assert [(e.address, e.port) for c in config.clusters for e in c.endpoints] == [("10.244.0.7", 8080)]
    assert [s.name for s in config.secrets] == [f"tls/{DEMO_NS}/httpbin-tls"]
    plain, tls = config.listeners
    assert [h.hostname for h in tls.tls_hosts] == ["localhost"]
    assert {vh.name: vh.routes[0].action.redirect is not None for vh in plain.virtual_hosts} == {
        "localhost": True, "*": False}


def test_example_routes_and_backends_pass_xds_operator_validate(capsys: pytest.CaptureFixture[str]) -> None:
    # Alone, routes.yaml refers to a Service and a Secret that are not in the files: warnings, not
    # errors (they exist where the example is applied). Everything else is clean.
    routes = DEPLOY / "example" / "routes.yaml"
    assert cli.main(["validate", str(routes)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{routes}:8:3: warning: Backend/demo/httpbin: Service demo/httpbin not found "
                     "(ResolvedRefs=ServiceNotFound)",
                     f"{routes}:40:5: warning: Route/demo/httpbin-https: spec.tls.certificateRef: Secret "
                     "demo/httpbin-tls not found (ResolvedRefs=InvalidCertificateRef)",
                     "3 objects checked, 0 errors, 2 warnings"]
    # With the example's own Service (httpbin.yaml) and Secret (tls-secret.yaml) the references
    # resolve: clean, even with --strict.
    assert cli.main(["validate", "--strict", str(DEPLOY / "example")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "6 objects checked, 0 errors, 0 warnings"


# -- the operator -------------------------------------------------------------------------------


def assert_hardened(pod_spec: dict, name: str) -> None:
    """The "restricted" Pod Security Standard, plus a read-only root filesystem and limits."""
    pod = pod_spec.get("securityContext", {})
    for c in pod_spec["containers"] + pod_spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"{name}/{c['name']}"
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        uid = sc.get("runAsUser", pod.get("runAsUser"))
        assert isinstance(uid, int) and uid > 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not sc.get("capabilities", {}).get("add"), where
        assert not sc.get("privileged"), where
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}: {kind}"
        assert c["image"].rpartition(":")[2] not in ("", "latest"), where
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")


def test_operator_deployment(rendered: list[dict]) -> None:
    deployment = one(rendered, "Deployment", "xds-operator", OPERATOR_NS)
    spec = deployment["spec"]
    # Several replicas, one elected leader writing status (issue 12): an update never lowers them.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    assert_hardened(pod, "xds-operator")
    c = container(pod, "operator")
    assert c["image"] == "xds-operator:dev" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["run", "--standalone", "--leader-elect"]
    assert "command" not in c  # the image's ENTRYPOINT, xds-operator
    args = cli.parser().parse_args(c["args"])
    assert args.command == "run" and args.standalone and args.namespace == []  # cluster-wide
    assert args.leader_elect
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    labels = spec["selector"]["matchLabels"]
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"] == labels
    [anti] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-xds": 18000, "http": 18001}
    assert args.xds_address.endswith(":18000") and args.http_address.endswith(":18001")
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == 18001
    # The numeric UID the image's USER also names.
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["serviceAccountName"] == "xds-operator"
    assert set(spec["selector"]["matchLabels"].items()) <= set(spec["template"]["metadata"]["labels"].items())


def test_operator_disruption_budget(rendered: list[dict]) -> None:
    budget = one(rendered, "PodDisruptionBudget", "xds-operator", OPERATOR_NS)
    deployment = one(rendered, "Deployment", "xds-operator", OPERATOR_NS)
    assert budget["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_operator_service(rendered: list[dict]) -> None:
    service = one(rendered, "Service", "xds-operator", OPERATOR_NS)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc-xds", "http"}
    assert ports["grpc-xds"]["port"] == 18000 and ports["grpc-xds"]["appProtocol"] == "grpc"
    assert ports["http"]["port"] == 18001
    pod = one(rendered, "Deployment", "xds-operator", OPERATOR_NS)["spec"]["template"]
    assert set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    c = container(pod["spec"], "operator")
    for p in ports.values():
        assert port_number(c, p["targetPort"]) == p["port"]


def test_rbac_is_least_privilege(rendered: list[dict]) -> None:
    # Leases only in the operator's own namespace: the leader's and one per replica's ACK record.
    leases = one(rendered, "Role", "xds-operator-leases", OPERATOR_NS)
    assert leases["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                "verbs": ["get", "list", "create", "update", "delete"]}]
    lease_binding = one(rendered, "RoleBinding", "xds-operator-leases", OPERATOR_NS)
    assert lease_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                        "name": "xds-operator-leases"}
    assert lease_binding["subjects"] == [{"kind": "ServiceAccount", "name": "xds-operator", "namespace": OPERATOR_NS}]
    assert len(find(rendered, "Role")) == len(find(rendered, "RoleBinding")) == 1
    role = one(rendered, "ClusterRole")
    granted = set()
    for rule in role["rules"]:
        assert not rule.get("nonResourceURLs") and not rule.get("resourceNames"), rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == ALLOWED_RBAC, f"beyond: {granted - ALLOWED_RBAC}, missing: {ALLOWED_RBAC - granted}"
    assert "aggregationRule" not in role
    binding = one(rendered, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    account = one(rendered, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    deployment = one(rendered, "Deployment", "xds-operator", OPERATOR_NS)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["namespace"] == OPERATOR_NS


def test_namespaces_enforce_restricted_pod_security(rendered: list[dict]) -> None:
    for ns in (OPERATOR_NS, DEMO_NS):
        labels = one(rendered, "Namespace", ns)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- the example: httpbin with an Envoy sidecar ------------------------------------------------


@pytest.fixture(scope="module")
def sidecar_bootstrap(rendered: list[dict]) -> tuple[dict, str]:
    pod = one(rendered, "Deployment", "httpbin", DEMO_NS)["spec"]["template"]["spec"]
    envoy = container(pod, "envoy")
    (mount,) = envoy["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(rendered, "ConfigMap", volume["configMap"]["name"], DEMO_NS)
    config_path = envoy["args"][envoy["args"].index("-c") + 1]
    directory, _, key = config_path.rpartition("/")
    assert directory == mount["mountPath"] and mount.get("readOnly") is True
    return envoy, config_map["data"][key]


def test_sidecar_bootstrap_is_the_templates_rendering(sidecar_bootstrap: tuple[dict, str]) -> None:
    _, text = sidecar_bootstrap
    assert text == render_bootstrap(SIDECAR_PARAMS), "stale: run `uv run python deploy/render.py`"
    assert (DEPLOY / "example" / "envoy-bootstrap.yaml").read_text() == text


def test_sidecar_reaches_the_operators_service(rendered: list[dict], sidecar_bootstrap: tuple[dict, str]) -> None:
    _, text = sidecar_bootstrap
    bootstrap = yaml.safe_load(text)
    cluster = bootstrap["static_resources"]["clusters"][0]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = one(rendered, "Service", "xds-operator", OPERATOR_NS)
    assert address["address"] == f"{service['metadata']['name']}.{OPERATOR_NS}.svc.cluster.local"
    assert address["port_value"] == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc-xds")
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"  # admin stays in the pod


def test_sidecar_identity(rendered: list[dict], sidecar_bootstrap: tuple[dict, str]) -> None:
    envoy, text = sidecar_bootstrap
    args = envoy["args"]
    # node.id: the pod's name through the downward API; node.cluster: the app, as in the bootstrap.
    assert args[args.index("--service-node") + 1] == "$(POD_NAME)"
    env = {e["name"]: e for e in envoy["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    node_cluster = yaml.safe_load(text)["node"]["cluster"]
    assert args[args.index("--service-cluster") + 1] == node_cluster == "httpbin"
    route = one(rendered, "Route", "httpbin", DEMO_NS)
    assert route["spec"].get("proxies", [node_cluster]) == [node_cluster]
    assert "--disable-hot-restart" in args
    assert envoy["command"] == ["envoy"]


def test_sidecar_bootstrap_passes_envoy_validate(sidecar_bootstrap: tuple[dict, str], tmp_path: Path) -> None:
    envoy, text = sidecar_bootstrap
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    # The sidecar's own command line (its -c replaced), with the downward-API variable filled in.
    args = [a.replace("$(POD_NAME)", "httpbin-5d9c7b8f4-x2x7q") for a in envoy["args"]]
    at = args.index("-c")
    del args[at:at + 2]
    result = envoy_validate(path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_example_pods_are_hardened_and_pinned(rendered: list[dict], sidecar_bootstrap: tuple[dict, str]) -> None:
    pod = one(rendered, "Deployment", "httpbin", DEMO_NS)["spec"]["template"]["spec"]
    assert_hardened(pod, "httpbin")
    assert pod.get("automountServiceAccountToken") is False  # neither container talks to the API
    envoy, _ = sidecar_bootstrap
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # One Envoy version everywhere: compose's, the sidecar's and the binary the tests validate with.
    assert envoy["image"] == compose["services"]["envoy"]["image"]
    assert container(pod, "httpbin")["image"] == compose["services"]["httpbin"]["image"]


def test_ports_agree_from_route_to_host(rendered: list[dict]) -> None:
    route = one(rendered, "Route", "httpbin", DEMO_NS)
    listener_port = route["spec"]["port"]
    deployment = one(rendered, "Deployment", "httpbin", DEMO_NS)
    pod = deployment["spec"]["template"]
    envoy, httpbin = container(pod["spec"], "envoy"), container(pod["spec"], "httpbin")
    assert port_number(envoy, "proxy") == listener_port
    assert port_number(envoy, envoy["readinessProbe"]["tcpSocket"]["port"]) == listener_port
    # The Backend's Service port leads to httpbin's container port.
    backend = one(rendered, "Backend", "httpbin", DEMO_NS)
    service = one(rendered, "Service", backend["spec"]["service"]["name"], DEMO_NS)
    service_port = next(p for p in service["spec"]["ports"] if p["port"] == backend["spec"]["service"]["port"])
    assert port_number(httpbin, service_port["targetPort"]) == 8080
    assert {e["name"]: e["value"] for e in httpbin.get("env", [])}.get("PORT") == "8080"
    for svc in (service, one(rendered, "Service", "httpbin-envoy", DEMO_NS)):
        assert set(svc["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    # The NodePorts lead to Envoy's listeners (plain and HTTPS), and kind publishes each on the
    # host's port of the same number.
    https_port = one(rendered, "Route", "httpbin-https", DEMO_NS)["spec"]["port"]
    node_port = one(rendered, "Service", "httpbin-envoy", DEMO_NS)
    assert node_port["spec"]["type"] == "NodePort"
    ports = node_port["spec"]["ports"]
    assert [port_number(envoy, port["targetPort"]) for port in ports] == [listener_port, https_port]
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4" and kind["kind"] == "Cluster"
    (node,) = kind["nodes"]
    assert node["role"] == "control-plane"
    for port, host_port in zip(ports, (15001, 15443), strict=True):
        assert port["port"] == host_port
        assert {"containerPort": port["nodePort"], "hostPort": host_port, "listenAddress": "127.0.0.1",
                "protocol": "TCP"} in node["extraPortMappings"]


def test_readme_commands_match_the_files() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for command in ("kind create cluster --config kind-config.yaml", "docker build -t xds-operator:dev .",
                    "kind load docker-image xds-operator:dev", "kubectl apply -k crds/", "kubectl apply -k deploy/",
                    "kubectl -n demo get routes,backends", "curl -sv http://127.0.0.1:15001/headers",
                    "curl --cacert deploy/example/ca.crt https://localhost:15443/headers",
                    "kubectl -n demo create secret tls httpbin-tls",
                    f"crd/routes.{API_GROUP} crd/backends.{API_GROUP}"):
        assert command in readme, command
    assert (ROOT / "crds" / "kustomization.yaml").is_file()
