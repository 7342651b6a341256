"""Helpers for tests that run the operator against the Kubernetes API emulator."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import kopf

from xds_operator.kube.operator import Operator, OperatorConfig, register

from .kubeapi import KubeAPI

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
GROUP_VERSION = "xds-operator.dev/v1alpha1"


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


@contextlib.asynccontextmanager
async def running_operator(kube_api: KubeAPI, monkeypatch, *, namespaces: tuple[str, ...] = (),
                           **config: Any) -> AsyncIterator[Operator]:
    """The operator in this event loop, logging in through a kubeconfig as it would in production."""
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    settings = dict(xds_address="127.0.0.1:0", http_address="127.0.0.1:0", listener_address="127.0.0.1",
                    initial_quiet=0.05, initial_max_delay=0.5)
    settings.update(config)
    operator = Operator(OperatorConfig(**settings))
    registry = kopf.OperatorRegistry()
    register(registry, operator)
    async with kube_api.operator(registry, namespaces=namespaces):
        yield operator


def backend(name: str, namespace: str = "default", **spec: Any) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "Backend", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def route(name: str, namespace: str = "default", **spec: Any) -> dict:
    return {"apiVersion": GROUP_VERSION, "kind": "Route", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def service(name: str, namespace: str, ports: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": ports, "selector": {"app": name}}}


def endpoint_slice(name: str, namespace: str, service_name: str, ports: list[dict], endpoints: list[dict]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}
