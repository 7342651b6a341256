"""The operator with the permissions deploy/ gives it, and no more: a TokenRequest token of the
ServiceAccount in deploy/operator/, bound by exactly the roles there. Also what happens without one
of them, and status writes under the API server's own rate limiting (API Priority and Fairness
answering 429) and conflicts (409)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import threading
import urllib.request
from pathlib import Path

import yaml

from xds_operator.api.objects import API_GROUP, API_VERSION

from .kubeops import ROOT, KubeTestAPI, backend, has_condition, route, run_kubectl, running_operator
from .realprocs import http_get
from .tlscerts import make_ca

RBAC = ROOT / "deploy" / "operator" / "rbac.yaml"


async def token_kubeconfig(kube: KubeTestAPI, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig with a fresh token of that ServiceAccount (TokenRequest), as a pod would have."""
    review = await kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 3600}})
    return kube.cluster.write_kubeconfig(path, {"token": review["status"]["token"]})


async def deployed_operator_kubeconfig(kube: KubeTestAPI, tmp_path: Path) -> Path:
    await kube.kubectl("apply", "-k", str(ROOT / "deploy" / "operator"), "-n", "xds-operator")
    return await token_kubeconfig(kube, "xds-operator", "xds-operator", tmp_path / "operator.kubeconfig")


async def readyz(operator) -> tuple[int, str]:
    status, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{operator.plane.http_port}/readyz")
    return status, body.decode()


async def test_operator_works_with_exactly_the_deployed_permissions(kube, monkeypatch, tmp_path):
    kubeconfig = await deployed_operator_kubeconfig(kube, tmp_path)
    # The token really is the ServiceAccount's, without the admin's rights (it may read Secrets, and
    # get a ConfigMap by name, but not list ConfigMaps).
    denied = run_kubectl(kube.cluster, "get", "configmaps", "-A", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr
    async with running_operator(kube, monkeypatch, namespaces=(), kubeconfig=kubeconfig) as operator:
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        await kube.create(route("bad", rules=[{"matches": [{"path": {"type": "RegularExpression", "value": "(?=x)"}}],
                                               "backends": [{"name": "web"}]}]))
        obj = await kube.wait_for("routes", "web", condition=has_condition("Programmed", "False", "NoProxies"))
        assert has_condition("Accepted", "True", generation=1)(obj) and has_condition("ResolvedRefs", "True")(obj)
        await kube.wait_for("backends", "web", condition=has_condition("Accepted", "True"))
        # A CA bundle in a ConfigMap: `get` on it is enough.
        await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bundle"},
                           "data": {"ca.crt": make_ca().cert_pem.decode()}})
        await kube.create(backend("tls", endpoints=[{"address": "10.0.0.1", "port": 443}],
                                  tls={"caCertificateRef": {"kind": "ConfigMap", "name": "bundle"}}))
        await kube.wait_for("backends", "tls", condition=has_condition("ResolvedRefs", "True"))
        await kube.wait_for("routes", "bad", condition=has_condition("Accepted", "False", "Invalid"))
        async with asyncio.timeout(15):
            while not [e for e in await kube.events_about("bad") if e["reason"] == "Invalid"]:
                await asyncio.sleep(0.1)
        async with asyncio.timeout(15):
            while (await readyz(operator))[0] != 200:
                await asyncio.sleep(0.1)


async def test_a_missing_permission_is_a_clear_error_in_the_log_and_in_readyz(kube, monkeypatch, tmp_path, caplog):
    """The deployed ClusterRole without `watch` on EndpointSlices, bound to another ServiceAccount."""
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "ClusterRole")
    name = f"xds-operator-limited-{kube.namespace}"[:63]
    role["metadata"] = {"name": name}
    for rule in role["rules"]:
        if rule["resources"] == ["endpointslices"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "watch"]
    await kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "limited"}})
    await kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    await kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": kube.namespace}]})
    kubeconfig = await token_kubeconfig(kube, kube.namespace, "limited", tmp_path / "limited.kubeconfig")
    try:
        caplog.set_level(logging.INFO, logger="xds_operator")
        async with running_operator(kube, monkeypatch, namespaces=(), kubeconfig=kubeconfig) as operator:
            expected = "missing permission: cannot watch endpointslices.discovery.k8s.io cluster-wide"
            async with asyncio.timeout(15):
                while expected not in (await readyz(operator))[1]:
                    await asyncio.sleep(0.1)
            assert (await readyz(operator))[0] == 503
            errors = [r for r in caplog.records if r.levelno == logging.ERROR and expected in r.getMessage()]
            assert len(errors) == 1, [r.getMessage() for r in caplog.records]
            assert not any(r.exc_info for r in caplog.records if r.name.startswith("xds_operator"))
    finally:
        await kube.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}", check=False)
        await kube.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}", check=False)


async def test_status_writes_survive_conflicts_with_a_concurrent_writer(kube, monkeypatch):
    """The writer's patch carries the resourceVersion it saw; a concurrent writer changes the object
    just before, the real server answers 409, the writer re-reads and writes again."""
    async with running_operator(kube, monkeypatch) as operator:
        writer = operator.writer
        real_patch = writer.client.patch_status
        interfered: list[str] = []

        async def concurrent_writer_first(prefix, plural, namespace, name, status, resource_version):
            if name == "web" and plural == "routes" and not interfered:
                # Another client updates the object between our read and our write.
                changed = await kube.patch("routes", "web", {"metadata": {"labels": {"touched-by": "someone-else"}}})
                interfered.append(changed["metadata"]["resourceVersion"])
            return await real_patch(prefix, plural, namespace, name, status, resource_version)

        monkeypatch.setattr(writer.client, "patch_status", concurrent_writer_first)
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        obj = await kube.wait_for("routes", "web", condition=has_condition("Accepted", "True", generation=1))
        assert interfered and writer.conflicts >= 1
        assert obj["metadata"]["labels"] == {"touched-by": "someone-else"}  # the other writer's change stays
        assert has_condition("Programmed", "False", "NoProxies")(obj)


def rejected_by_flow_schema(kube: KubeTestAPI, flow_schema: str) -> int:
    with urllib.request.urlopen(f"{kube.cluster.url}/metrics", context=kube.cluster._ssl, timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(r'^apiserver_flowcontrol_rejected_requests_total\{[^}]*flow_schema="' + re.escape(flow_schema)
                         + r'"[^}]*\} (\d+)', re.M)
    return sum(int(m) for m in pattern.findall(text))


class SlowRequest:
    """A status PATCH whose body arrives a byte at a time: API Priority and Fairness gives it a
    seat before the body is read, so it holds that seat for as long as it is kept open."""

    def __init__(self, kube: KubeTestAPI, path: str, token: str, length: int = 1_000_000) -> None:
        context = ssl.create_default_context(cafile=kube.cluster.certs.path("ca.crt"))
        raw = socket.create_connection(("127.0.0.1", kube.cluster.api_port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                           f"Content-Type: application/merge-patch+json\r\nContent-Length: {length}\r\n\r\n ")
                          .encode())
        self.sock.settimeout(1.0)
        try:
            self.answer = self.sock.recv(200).decode(errors="replace")  # an answer right away: rejected
        except TimeoutError:
            self.answer = ""
        self._stop = threading.Event()
        self._trickle = threading.Thread(target=self._keep_sending, daemon=True)
        if not self.answer:
            self._trickle.start()

    @property
    def holds_a_seat(self) -> bool:
        return not self.answer

    def _keep_sending(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.sock.sendall(b" ")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        if self._trickle.is_alive():
            self._trickle.join()
        self.sock.close()


async def test_status_writes_back_off_on_429_from_the_api_server(kube, monkeypatch, tmp_path, caplog):
    """API Priority and Fairness made to reject: a priority level with no seats of its own and no
    queue for the operator's and a decoy's status patches in this namespace; the decoy's slow
    requests hold every seat it has, so the operator's patches are answered 429 with Retry-After.
    The writer retries, as told by Retry-After (no hot loop, no error while the client retries),
    writes nothing meanwhile, and the write lands once the seats are free."""
    kubeconfig = await deployed_operator_kubeconfig(kube, tmp_path)
    ns = kube.namespace
    await kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "decoy"}})
    await kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "decoy"},
        "rules": [{"apiGroups": [API_GROUP], "resources": ["routes/status"], "verbs": ["patch"]}]})
    await kube.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "decoy"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "decoy"},
        "subjects": [{"kind": "ServiceAccount", "name": "decoy", "namespace": ns}]})
    decoy_token = (await kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/decoy/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}))["status"]["token"]
    await kube.create(route("decoy", rules=[{"backends": [{"name": "nothing"}]}]))
    decoy_path = f"/apis/{API_VERSION}/namespaces/{ns}/routes/decoy/status"

    level = f"jail-{ns}"[:63]
    schemas = {who: f"jail-{who}-{ns}"[:63] for who in ("operator", "decoy")}
    flowcontrol = "/apis/flowcontrol.apiserver.k8s.io/v1"
    await kube.request("POST", f"{flowcontrol}/prioritylevelconfigurations", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": level},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 0, "lendablePercent": 0,
                                                "borrowingLimitPercent": 0, "limitResponse": {"type": "Reject"}}}})
    for who, (sa_namespace, sa_name) in {"operator": ("xds-operator", "xds-operator"), "decoy": (ns, "decoy")}.items():
        await kube.request("POST", f"{flowcontrol}/flowschemas", {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": schemas[who]},
            "spec": {"priorityLevelConfiguration": {"name": level}, "matchingPrecedence": 10,
                     "distinguisherMethod": {"type": "ByUser"},
                     "rules": [{"subjects": [{"kind": "ServiceAccount",
                                              "serviceAccount": {"name": sa_name, "namespace": sa_namespace}}],
                                "resourceRules": [{"verbs": ["patch"], "apiGroups": [API_GROUP],
                                                   "resources": ["routes/status"], "namespaces": [ns]}]}]}})
    decoys: list[SlowRequest] = []
    try:
        # Slow requests until one is turned away: then every seat of the level is held.
        async with asyncio.timeout(20):  # APF picks up the new configuration within moments
            while not decoys or decoys[-1].holds_a_seat:
                decoy = await asyncio.to_thread(SlowRequest, kube, decoy_path, decoy_token)
                if decoy.holds_a_seat and rejected_by_flow_schema(kube, schemas["decoy"]) == 0 and \
                        len(decoys) >= 8:
                    raise AssertionError("the priority level admits everything: not configured yet?")
                decoys.append(decoy)
        assert decoys[-1].answer.startswith("HTTP/1.1 429"), decoys[-1].answer
        caplog.set_level(logging.DEBUG, logger="xds_operator")
        async with running_operator(kube, monkeypatch, kubeconfig=kubeconfig):
            async with asyncio.timeout(20):  # the decoy Route's status write is turned away, and retried
                while rejected_by_flow_schema(kube, schemas["operator"]) < 1:
                    await asyncio.sleep(0.2)
            await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
            await kube.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
            # Backends' status is not limited, and a write backing off holds up no other object's.
            await kube.wait_for("backends", "web", condition=has_condition("Accepted", "True"))
            async with asyncio.timeout(20):
                while rejected_by_flow_schema(kube, schemas["operator"]) < 2:
                    await asyncio.sleep(0.2)
            started = asyncio.get_running_loop().time()
            first = rejected_by_flow_schema(kube, schemas["operator"])
            await asyncio.sleep(3)
            rejected = rejected_by_flow_schema(kube, schemas["operator"]) - first
            elapsed = asyncio.get_running_loop().time() - started
            # Retried, but as told by Retry-After (at least 1 s), not in a hot loop: two objects here
            # are limited (Route "web", and the decoy Route, whose status the operator writes too).
            assert 1 <= rejected <= 2 * (elapsed + 1.5), (rejected, elapsed)
            assert not (await kube.get("routes", "web")).get("status")
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("xds_operator")]
            assert any("429" in r.getMessage() or "TooManyRequests" in r.getMessage() for r in caplog.records)
            for decoy in decoys:
                decoy.close()
            decoys.clear()
            await kube.wait_for("routes", "web", condition=has_condition("Accepted", "True", generation=1), timeout=30)
    finally:
        for decoy in decoys:
            decoy.close()
        for name in schemas.values():
            await kube.request("DELETE", f"{flowcontrol}/flowschemas/{name}", check=False)
        await kube.request("DELETE", f"{flowcontrol}/prioritylevelconfigurations/{level}", check=False)


async def test_leader_election_and_ack_records_with_exactly_the_deployed_permissions(kube, monkeypatch, tmp_path,
                                                                                     caplog):
    """--leader-elect as deployed: the Lease and this replica's ACK record in the operator's
    namespace with the Role of deploy/, both given back on a clean stop."""
    from xds_operator.kube.ack_share import ShareTimings, record_name
    from xds_operator.kube.leader import LeaderTimings

    kubeconfig = await deployed_operator_kubeconfig(kube, tmp_path)
    lease_name = f"rbac-{kube.namespace}"[:60]
    async with running_operator(kube, monkeypatch, namespaces=(), kubeconfig=kubeconfig, leader_election=True,
                                leader_namespace="xds-operator", lease_name=lease_name, identity="pod-x_7",
                                leader_timings=LeaderTimings(4.0, 3.0, 0.5),
                                share_timings=ShareTimings(heartbeat=1.0, expiry=4.0)) as operator:
        async with asyncio.timeout(15):
            while not (operator.elector and operator.elector.is_leader()):
                await asyncio.sleep(0.05)
        await kube.create(route("web", rules=[{"backends": [{"name": "nowhere"}]}]))
        await kube.wait_for("routes", "web", condition=has_condition("ResolvedRefs", "False"))
        record = await kube.wait_for("leases", record_name(lease_name, "pod-x_7"), "xds-operator")
        assert record["metadata"]["labels"] == {"xds-operator.dev/acks": "record"}
        assert record["spec"]["holderIdentity"] == "pod-x_7"
        lease = await kube.get("leases", lease_name, "xds-operator")
        assert lease["spec"]["holderIdentity"] == "pod-x_7" and lease["spec"]["leaseDurationSeconds"] == 4
        async with asyncio.timeout(10):  # the leader lists the others' records every second: allowed too
            while not (operator.records and operator.records.polls):
                await asyncio.sleep(0.1)
        assert not [r for r in caplog.records if r.name.startswith("xds_operator.kube") and
                    r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    lease = await kube.get("leases", lease_name, "xds-operator")
    assert lease["spec"]["holderIdentity"] in ("", None)  # released
    assert await kube.get("leases", record_name(lease_name, "pod-x_7"), "xds-operator") is None
