"""Helpers for tests that run the operator against the real Kubernetes control plane
(tests/kubecluster.py): an admin client bound to the test's namespace, kubectl, and the operator
run by kopf in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from xds_operator.kube.operator import Operator, OperatorConfig, register

from .kubecluster import KubeCluster, binary

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
GROUP_VERSION = "xds-operator.dev/v1alpha1"

# plural -> (URL prefix, namespaced): the resources the tests touch.
RESOURCES = {
    "routes": (f"/apis/{GROUP_VERSION}", True),
    "backends": (f"/apis/{GROUP_VERSION}", True),
    "services": ("/api/v1", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", True),
    "secrets": ("/api/v1", True),
    "configmaps": ("/api/v1", True),
    "events": ("/api/v1", True),
    "leases": ("/apis/coordination.k8s.io/v1", True),
    "serviceaccounts": ("/api/v1", True),
    "namespaces": ("/api/v1", False),
    "customresourcedefinitions": ("/apis/apiextensions.k8s.io/v1", False),
    "clusterroles": ("/apis/rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": ("/apis/rbac.authorization.k8s.io/v1", False),
    "flowschemas": ("/apis/flowcontrol.apiserver.k8s.io/v1", False),
    "prioritylevelconfigurations": ("/apis/flowcontrol.apiserver.k8s.io/v1", False),
}
KIND_PLURALS = {"Route": "routes", "Backend": "backends", "Service": "services", "EndpointSlice": "endpointslices", "Secret": "secrets",
                "ConfigMap": "configmaps",
                "Event": "events", "Lease": "leases", "ServiceAccount": "serviceaccounts", "Namespace": "namespaces",
                "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
                "FlowSchema": "flowschemas", "PriorityLevelConfiguration": "prioritylevelconfigurations"}


class KubeAPIError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body.get('message') if isinstance(body, dict) else body}")
        self.status = status
        self.body = body


def run_kubectl(cluster: KubeCluster, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [binary(cluster.assets, "kubectl"), f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args]
    result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "HOME": str(cluster.folder)})
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed with {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


def install_crds(cluster: KubeCluster) -> None:
    run_kubectl(cluster, "apply", "-k", str(CRDS))
    # Right after the create a CRD has no status yet, and `kubectl wait` errors out on that.
    deadline = time.monotonic() + 60
    while True:
        waited = run_kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
                             "crd/routes.xds-operator.dev", "crd/backends.xds-operator.dev", check=False)
        if waited.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the CRDs are not Established: {waited.stderr}")
        time.sleep(0.2)


def namespace_for(test_name: str) -> str:
    """A valid, unique namespace name for a test."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"{slug}-{hashlib.sha1(test_name.encode()).hexdigest()[:6]}"


class KubeTestAPI:
    """The admin's view of the cluster from one test; objects without a namespace land in the test's."""

    def __init__(self, cluster: KubeCluster, test_name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace_for(test_name)
        self.session: aiohttp.ClientSession | None = None
        self.namespaces = [self.namespace]  # deleted at the end

    async def __aenter__(self) -> KubeTestAPI:
        context = ssl.create_default_context(cafile=self.cluster.certs.path("ca.crt"))
        context.load_cert_chain(self.cluster.certs.path("admin.crt"), self.cluster.certs.path("admin.key"))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, force_close=True))
        await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            # Namespace deletion (kube-controller-manager) takes its objects along, in the background.
            for namespace in self.namespaces:
                await self.request("DELETE", self.path("namespaces", namespace), check=False)
        finally:
            await self.session.close()

    async def other_namespace(self, suffix: str) -> str:
        """One more namespace for this test (deleted at the end too)."""
        name = f"{self.namespace[:50]}-{suffix}"
        await self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.namespaces.append(name)
        return name

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def path(self, plural: str, name: str | None = None, namespace: str | None = None,
             subresource: str | None = None) -> str:
        prefix, namespaced = RESOURCES[plural]
        parts = [prefix]
        if namespaced and namespace != "":
            parts += ["namespaces", namespace or self.namespace]
        parts.append(plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)

    async def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                      check: bool = True) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, f"{self.cluster.url}{path}", data=data,
                                        headers={"Content-Type": content_type}) as response:
            text = await response.text()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        if check and response.status >= 400:
            raise KubeAPIError(response.status, payload)
        return payload

    async def create(self, obj: dict, **params: str) -> dict:
        plural = KIND_PLURALS[obj["kind"]]
        meta = obj.setdefault("metadata", {})
        if RESOURCES[plural][1] and not meta.get("namespace"):
            meta["namespace"] = self.namespace
        query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
        return await self.request("POST", self.path(plural, namespace=meta.get("namespace")) + query, obj)

    async def get(self, plural: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return await self.request("GET", self.path(plural, name, namespace))
        except KubeAPIError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, plural: str, namespace: str | None = None) -> list[dict]:
        return (await self.request("GET", self.path(plural, namespace=namespace)))["items"]

    async def patch(self, plural: str, name: str, patch: Any, namespace: str | None = None, *,
                    subresource: str | None = None, content_type: str | None = None) -> dict:
        if content_type is None:
            content_type = "application/json-patch+json" if isinstance(patch, list) else "application/merge-patch+json"
        return await self.request("PATCH", self.path(plural, name, namespace, subresource), patch,
                                  content_type=content_type)

    async def delete(self, plural: str, name: str, namespace: str | None = None) -> dict:
        return await self.request("DELETE", self.path(plural, name, namespace))

    async def wait_for(self, plural: str, name: str, namespace: str | None = None, *,
                       condition: Callable[[dict | None], Any] = lambda obj: obj is not None,
                       timeout: float = 15) -> dict | None:
        """Polls until the object satisfies `condition` (which gets None while it is absent)."""
        obj = None
        try:
            async with asyncio.timeout(timeout):
                while not condition(obj := await self.get(plural, name, namespace)):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"{plural}/{name} did not reach the condition in {timeout}s; last: "
                                 f"{json.dumps(obj, indent=1)[:3000]}") from None
        return obj

    async def events_about(self, name: str, namespace: str | None = None) -> list[dict]:
        return [e for e in await self.list("events", namespace) if e["involvedObject"]["name"] == name]

    async def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                      kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as the admin (or with `kubeconfig`), in the test's namespace unless told otherwise."""
        if not any(a in ("-n", "--namespace", "-A", "--all-namespaces") or a.startswith("--namespace=")
                   for a in args):
            args = (*args, "-n", self.namespace)
        return await asyncio.to_thread(run_kubectl, self.cluster, *args, kubeconfig=kubeconfig, input=input,
                                       check=check)


def host_address() -> str:
    """This machine's own non-loopback IPv4 address, for EndpointSlices that point at local
    backends: the API server refuses loopback addresses in them. Traffic to it stays in the host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the source address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if ipaddress.ip_address(address).is_loopback:
        raise RuntimeError("no non-loopback IPv4 address on this machine, which EndpointSlices need")
    return address


def condition(obj: dict | None, type_: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def has_condition(type_: str, status: str, reason: str | None = None, generation: int | None = None):
    """A wait_for() predicate: the object has that condition (and observedGeneration)."""
    def check(obj: dict | None) -> bool:
        c = condition(obj, type_)
        return (c is not None and c["status"] == status and (reason is None or c["reason"] == reason)
                and (generation is None or c.get("observedGeneration") == generation))
    return check


def test_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.reconnect_backoff = 0.1
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1
    return settings


@contextlib.asynccontextmanager
async def running_operator(kube: KubeTestAPI, monkeypatch, *, namespaces: tuple[str, ...] | None = None,
                           kubeconfig: Path | None = None, ready_timeout: float = 30,
                           **config: Any) -> AsyncIterator[Operator]:
    """The operator in this event loop, logging in through a kubeconfig as it would in production;
    by default it watches only the test's namespace."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig or kube.kubeconfig))
    settings = {"xds_address": "127.0.0.1:0", "http_address": "127.0.0.1:0", "listener_address": "127.0.0.1",
                    "initial_quiet": 0.05, "initial_max_delay": 0.5}
    settings.update(config)
    watched = (kube.namespace,) if namespaces is None else namespaces
    operator = Operator(OperatorConfig(namespaces=watched, **settings))
    registry = kopf.OperatorRegistry()
    register(registry, operator)
    stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry, settings=test_settings(), standalone=True, clusterwide=not watched,
        namespaces=watched, stop_flag=stop_flag, ready_flag=ready_flag), name="kopf operator")
    ready = asyncio.create_task(ready_flag.wait())
    try:
        done, _ = await asyncio.wait([task, ready], timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task in done:
            await task  # its startup error
            raise RuntimeError("kopf operator exited prematurely")
        if not ready_flag.is_set():
            raise TimeoutError("kopf operator did not become ready")
        yield operator
    finally:
        stop_flag.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 15)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def backend(name: str, namespace: str | None = None, **spec: Any) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "Backend", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def route(name: str, namespace: str | None = None, **spec: Any) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "Route", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def service(name: str, namespace: str | None, ports: list[dict], *, selector: bool = False) -> dict:
    """A Service; without a selector (the default here, as no pods run) its EndpointSlices are made by hand."""
    spec: dict = {"ports": ports}
    if selector:
        spec["selector"] = {"app": name}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def endpoint_slice(name: str, namespace: str | None, service_name: str, ports: list[dict],
                   endpoints: list[dict]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name,
                                    # A slice made by hand, not by a controller: the mirroring and
                                    # EndpointSlice controllers leave it alone.
                                    "endpointslice.kubernetes.io/managed-by": "tests.xds-operator.dev"}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}
