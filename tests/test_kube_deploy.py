"""crds/ and deploy/ as a real API server takes them: `kubectl apply -k` (client- and server-side),
`kubectl explain` showing the schema's descriptions, `kubectl get` showing the printer columns
filled from the status the operator writes."""

from __future__ import annotations

import asyncio
import json

from .kubeops import CRDS, ROOT, backend, has_condition, route, run_kubectl, running_operator

DEPLOY = ROOT / "deploy"


async def test_kubectl_apply_k_crds_is_accepted(kube):
    # Structural schemas, CEL rules within the cost budget: the server would refuse the CRDs otherwise.
    result = await kube.kubectl("apply", "-k", str(CRDS), "--server-side", "--force-conflicts")
    assert "routes.xds-operator.dev serverside-applied" in result.stdout
    for name in ("routes.xds-operator.dev", "backends.xds-operator.dev"):
        crd = json.loads((await kube.kubectl("get", "crd", name, "-o", "json")).stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
        assert conditions.get("NonStructuralSchema") is None


async def test_kubectl_explain_shows_the_descriptions(kube):
    explained = (await kube.kubectl("explain", "routes.spec.rules")).stdout
    assert "The routing rules, 1 to 128 (required)" in explained
    assert "matches" in explained and "backends" in explained
    backend_service = (await kube.kubectl("explain", "backends.spec.service")).stdout
    assert "FIELDS:" in backend_service and "port" in backend_service
    redirect = (await kube.kubectl("explain", "routes.spec.tls.httpRedirect")).stdout
    assert "Redirect plain HTTP to HTTPS" in redirect and "statusCode" in redirect and "Conflicted=True" in redirect


async def test_kubectl_get_shows_printer_columns_from_real_status(kube, monkeypatch):
    async with running_operator(kube, monkeypatch):
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube.create(route("web", port=15001, rules=[{"backends": [{"name": "web"}]}]))
        await kube.wait_for("routes", "web", condition=has_condition("Programmed", "False", "NoProxies"))
        await kube.wait_for("backends", "web", condition=has_condition("Programmed", "False"))
        table = (await kube.kubectl("get", "routes,backends", "-o", "wide")).stdout.splitlines()
    routes_header = table[0].split()
    assert routes_header[:5] == ["NAME", "ACCEPTED", "PROGRAMMED", "SYNCED", "PROXIES"], table
    assert "PORT" in routes_header and "RESOLVEDREFS" in routes_header
    web_route = next(line.split() for line in table if line.startswith("route.xds-operator.dev/web"))
    assert web_route[1:5] == ["True", "False", "0", "0"], table
    assert "15001" in web_route
    web_backend = next(line.split() for line in table if line.startswith("backend.xds-operator.dev/web"))
    assert web_backend[1:5] == ["True", "False", "0", "0"], table


async def test_kubectl_apply_k_deploy_is_accepted_client_and_server_side(kube, monkeypatch):
    """Everything of deploy/ (the operator, its RBAC, the example app) is accepted; the Deployments
    exist though no pod runs here (no kubelet, no scheduler)."""
    # As the README says it: no namespace flag, the objects name their own.
    applied = await asyncio.to_thread(run_kubectl, kube.cluster, "apply", "-k", str(DEPLOY))
    assert "deployment.apps/xds-operator" in applied.stdout
    server_side = await asyncio.to_thread(run_kubectl, kube.cluster, "apply", "-k", str(DEPLOY), "--server-side",
                                          "--force-conflicts")
    assert "deployment.apps/xds-operator serverside-applied" in server_side.stdout
    dry = await asyncio.to_thread(run_kubectl, kube.cluster, "apply", "-k", str(DEPLOY), "--server-side",
                                  "--dry-run=server", "--force-conflicts")
    assert "serverside-applied (server dry run)" in dry.stdout
    for namespace, name in (("xds-operator", "xds-operator"), ("demo", "httpbin")):
        deployment = json.loads((await kube.kubectl("get", "deployment", name, "-n", namespace,
                                                    "-o", "json")).stdout)
        assert deployment["metadata"]["generation"] >= 1
        assert deployment["spec"]["template"]["spec"]["containers"]
    assert (await kube.get("routes", "httpbin", "demo")) is not None
    secret = json.loads((await kube.kubectl("get", "secret", "httpbin-tls", "-n", "demo", "-o", "json")).stdout)
    assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"tls.crt", "tls.key"}
    # The operator, reading Secrets from the API, resolves the example's HTTPS Route and its redirect.
    async with running_operator(kube, monkeypatch, namespaces=("demo",)):
        https = await kube.wait_for("routes", "httpbin-https", "demo",
                                    condition=has_condition("ResolvedRefs", "True", "ResolvedRefs"))
        await kube.wait_for("routes", "httpbin-https", "demo", condition=has_condition("Conflicted", "False"))
    assert https["spec"]["tls"] == {"certificateRef": {"name": "httpbin-tls"}, "httpRedirect": {
        "port": 15001, "statusCode": 301}, "minVersion": "1.2", "alpn": ["h2", "http/1.1"]}  # with the defaults
