"""The operator: kopf and the ADS server in one asyncio loop.

Usable two ways, with the same handlers:
- `xds-operator run [--namespace NS]...` (the product's command), and
- `kopf run -m xds_operator.kube.operator` (what kopf's own tooling and KopfRunner drive),
  configured by the XDS_OPERATOR_* environment variables.

Handlers only watch (`on.event`): the operator writes no finalizers and no annotations, not
even on its own Routes and Backends; it writes their status subresource and Events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import dataclass, field

import kopf

from ..controlplane.app import ControlPlane
from ..api.objects import API_GROUP, ObjectKey
from ..translate import TranslateOptions
from .client import KubeClient
from ..sources.kubernetes import apply_endpoint_slice_event, apply_object_event, apply_service_event
from .status_writer import StatusWriter

log = logging.getLogger(__name__)

VERSION = "v1alpha1"


@dataclass
class OperatorConfig:
    xds_address: str = "0.0.0.0:18000"
    http_address: str = "0.0.0.0:18001"
    listener_address: str = "0.0.0.0"
    # The first build waits until the initial listing is in (quiet this long), at most max.
    initial_quiet: float = 0.5
    initial_max_delay: float = 5.0

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        env = os.environ.get
        return cls(xds_address=env("XDS_OPERATOR_XDS_ADDRESS", cls.xds_address),
                   http_address=env("XDS_OPERATOR_HTTP_ADDRESS", cls.http_address),
                   listener_address=env("XDS_OPERATOR_LISTENER_ADDRESS", cls.listener_address))


@dataclass
class Operator:
    """What the handlers share: the control plane, the API's view of statuses, the writer."""

    config: OperatorConfig
    plane: ControlPlane | None = None
    statuses: dict[ObjectKey, dict] = field(default_factory=dict)
    connection: kopf.ConnectionInfo | None = None
    client: KubeClient | None = None
    writer: StatusWriter | None = None

    async def start(self) -> None:
        self.plane = ControlPlane(xds_address=self.config.xds_address, http_address=self.config.http_address,
                                  options=TranslateOptions(listener_address=self.config.listener_address))
        await self.plane.start(initial_quiet=self.config.initial_quiet,
                               initial_max_delay=self.config.initial_max_delay)

    async def start_status_writer(self) -> None:
        if self.connection is None:
            raise RuntimeError("no Kubernetes credentials: kopf has not logged in")
        self.client = KubeClient(self.connection)
        self.writer = StatusWriter(self.client, self.plane.state, self.plane.registry, self.plane.cache, self.statuses)
        self.plane.controller.on_build.append(self.writer.on_build)
        self.plane.add_task(self.writer.run(), "status-writer")

    async def stop(self) -> None:
        if self.plane is not None:
            await self.plane.stop()
        if self.client is not None:
            await self.client.close()


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Installs the handlers on a kopf registry."""

    @kopf.on.login(registry=registry)
    def login(**kwargs) -> kopf.ConnectionInfo | None:
        # kopf's own defaults, kept so the status writer can log in the same way.
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        operator.connection = info
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_) -> None:
        settings.posting.level = logging.WARNING  # handler logs are not Events; ours are explicit
        settings.watching.server_timeout = 300
        await operator.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_) -> None:
        await operator.stop()

    for plural in ("routes", "backends"):
        @kopf.on.event(API_GROUP, VERSION, plural, registry=registry)
        async def on_object(event: dict, body: kopf.Body, **_) -> None:
            await _ensure_writer(operator)
            apply_object_event(operator.plane.state, operator.statuses, event["type"] or "ADDED", body)

    @kopf.on.event("", "v1", "services", registry=registry)
    def on_service(event: dict, body: kopf.Body, **_) -> None:
        apply_service_event(operator.plane.state, event["type"] or "ADDED", body)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    def on_endpoint_slice(event: dict, body: kopf.Body, **_) -> None:
        apply_endpoint_slice_event(operator.plane.state, event["type"] or "ADDED", body)


async def _ensure_writer(operator: Operator) -> None:
    # Started on the first object event: by then kopf has logged in.
    if operator.writer is None:
        await operator.start_status_writer()


# `kopf run -m xds_operator.kube.operator` uses kopf's default registry and the environment.
OPERATOR = Operator(OperatorConfig.from_env())
register(kopf.get_default_registry(), OPERATOR)


def run_operator(args: argparse.Namespace) -> int:
    """`xds-operator run`: the same handlers, configured from the command line."""
    OPERATOR.config = OperatorConfig(xds_address=args.xds_address, http_address=args.http_address,
                                     listener_address=args.listener_address)
    asyncio.run(kopf.operator(
        registry=kopf.get_default_registry(),
        standalone=args.standalone,
        namespaces=args.namespace or [],
        clusterwide=not args.namespace,
    ))
    return 0
