"""The operator: kopf and the ADS server in one asyncio loop.

Usable two ways, with the same handlers:
- `xds-operator run [--namespace NS]...` (the product's command), and
- `kopf run -m xds_operator.kube.operator` (what kopf's own tooling and KopfRunner drive),
  configured by the XDS_OPERATOR_* environment variables (XDS_OPERATOR_NAMESPACES, comma-separated,
  must name the namespaces given to kopf with -n: /readyz waits for their listing).

Handlers only watch (`on.event`): the operator writes no finalizers and no annotations, not
even on its own Routes and Backends; it writes their status subresource and Events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..api.objects import API_GROUP, VERSION, ObjectKey
from ..controlplane.app import ControlPlane
from ..sources.kubernetes import apply_endpoint_slice_event, apply_object_event, apply_service_event
from ..sources.state import StateStore
from ..status.merge import merge
from ..translate import TranslateOptions
from ..xds.channel_tls import XdsTlsFiles
from .ack_share import AckPublisher, AckRecords, ShareTimings
from .client import ExponentialBackoff, KubeClient
from .configmaps import ConfigMapReads
from .leader import ELECTION_BACKOFF, LeaderElector, LeaderTimings, default_identity
from .readiness import KubeReadiness, Permission, WatchedKind, quiet_kopf_retries
from .resync import Resync
from .secrets import SecretWatch
from .status_writer import StatusWriter

log = logging.getLogger(__name__)

ROUTES = WatchedKind(API_GROUP, VERSION, "routes")
BACKENDS = WatchedKind(API_GROUP, VERSION, "backends")
SERVICES = WatchedKind("", "v1", "services")
ENDPOINT_SLICES = WatchedKind("discovery.k8s.io", "v1", "endpointslices")
WATCHED = [ROUTES, BACKENDS, SERVICES, ENDPOINT_SLICES]
# What the operator itself needs (deploy/operator/rbac.yaml grants it): watching, status, Events.
PERMISSIONS = [Permission(verb, kind.group, kind.plural) for kind in WATCHED for verb in ("list", "watch")] + [
    Permission("patch", API_GROUP, "routes", "status"),
    Permission("patch", API_GROUP, "backends", "status"),
    Permission("create", "", "events"),
] + [Permission(verb, "", "secrets") for verb in ("get", "list", "watch")]  # kube/secrets.py, not kopf
# kopf's own requests (watches, discovery) retry for as long as the API is away, backing off up
# to 30 s; KubeReadiness says once what is wrong instead of kopf logging each attempt.
API_RETRIES = ExponentialBackoff(first=0.5, cap=30.0, attempts=None)


@dataclass
class OperatorConfig:
    xds_address: str = "0.0.0.0:18000"
    http_address: str = "0.0.0.0:18001"
    listener_address: str = "0.0.0.0"
    xds_tls: XdsTlsFiles | None = None  # ADS over TLS / mTLS (run --xds-tls-cert ...)
    namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    # The first build waits until the initial listing is in (quiet this long), at most max.
    initial_quiet: float = 0.5
    initial_max_delay: float = 5.0
    # How often objects deleted while a watch was down (see resync.py) are looked for.
    resync_interval: float = 30.0
    # Several replicas (see kube/leader.py, kube/ack_share.py): off, every process writes status.
    leader_election: bool = False
    leader_namespace: str = "default"  # where the Leases are: the operator's own namespace
    lease_name: str = "xds-operator"  # the leader's Lease; the replicas' ACK records are <name>-<identity>
    identity: str = field(default_factory=default_identity)
    leader_timings: LeaderTimings = LeaderTimings()
    share_timings: ShareTimings = ShareTimings()

    @classmethod
    def from_env(cls) -> OperatorConfig:
        env = os.environ.get
        namespaces = tuple(n for n in env("XDS_OPERATOR_NAMESPACES", "").split(",") if n)
        return cls(xds_address=env("XDS_OPERATOR_XDS_ADDRESS", cls.xds_address),
                   http_address=env("XDS_OPERATOR_HTTP_ADDRESS", cls.http_address),
                   listener_address=env("XDS_OPERATOR_LISTENER_ADDRESS", cls.listener_address),
                   namespaces=namespaces)


@dataclass
class Operator:
    """What the handlers share: the control plane, the API's view of statuses, the writer."""

    config: OperatorConfig
    plane: ControlPlane | None = None
    statuses: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    versions: dict[ObjectKey, str] = field(default_factory=dict)  # resourceVersion, for conditional writes
    connection: kopf.ConnectionInfo | None = None
    readiness: KubeReadiness | None = None
    writer: StatusWriter | None = None
    elector: LeaderElector | None = None
    publisher: AckPublisher | None = None
    records: AckRecords | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # the Kubernetes side, run inside kopf
    secrets_listed: Callable[[], str | None] | None = None  # the Secret watch's readiness check
    started_by_kopf: bool = False  # then kopf's cleanup stops the control plane too
    after_cleanup: Callable[[], None] | None = None

    @property
    def state(self) -> StateStore:
        """The control plane's state store (the handlers run only after startup made it)."""
        if self.plane is None:
            raise RuntimeError("a watch event before the control plane started")
        return self.plane.state

    async def start(self) -> None:
        """Starts the control plane (idempotent: `xds-operator run` starts it before kopf)."""
        if self.plane is not None:
            return
        self.plane = ControlPlane(xds_address=self.config.xds_address, http_address=self.config.http_address,
                                  options=TranslateOptions(listener_address=self.config.listener_address),
                                  xds_tls=self.config.xds_tls)
        self.readiness = KubeReadiness(WATCHED, PERMISSIONS, list(self.config.namespaces))
        self.plane.readiness_checks.append(self.readiness.reason)
        self.plane.extra_json["/replica"] = self.replica_info
        await self.plane.start(initial_quiet=self.config.initial_quiet,
                               initial_max_delay=self.config.initial_max_delay)

    def start_kube_side(self, settings: kopf.OperatorSettings) -> None:
        """Inside kopf's operator (its API client needs kopf's context): readiness and status."""
        assert self.plane is not None and self.readiness is not None
        self.readiness.settings = settings
        client = KubeClient(settings)
        config = self.config
        if config.leader_election:
            self.elector = LeaderElector(KubeClient(settings, ELECTION_BACKOFF), config.leader_namespace,
                                         config.lease_name, config.identity, config.leader_timings)
            self.publisher = AckPublisher(client, config.leader_namespace, config.lease_name, config.identity,
                                          self.plane.registry, self.plane.cache, config.share_timings)
            self.records = AckRecords(client, config.leader_namespace, self.publisher.name, self.elector.is_leader,
                                      self._others_changed, config.share_timings)
            records = self.records
            elector = self.elector
            self.writer = StatusWriter(client, self.plane.state, self.plane.registry, self.plane.cache,
                                       self.statuses, self.versions,
                                       is_leader=lambda: elector.is_leader() and records.ready,
                                       merge=lambda local: merge(local, records.live()))
            self.plane.controller.on_build.append(self.publisher.on_build)
        else:
            self.writer = StatusWriter(client, self.plane.state, self.plane.registry, self.plane.cache,
                                       self.statuses, self.versions)
        self.plane.controller.on_build.append(self.writer.on_build)
        resync = Resync(client, self.plane.state, {"Route": ROUTES, "Backend": BACKENDS, "services": SERVICES,
                                                   "endpointslices": ENDPOINT_SLICES},
                        list(self.config.namespaces), interval=self.config.resync_interval)
        secrets = SecretWatch(settings, self.plane.state, list(self.config.namespaces),
                              refresh=self.config.resync_interval)
        self.secrets_listed = lambda: (None if secrets.listed.is_set()
                                       else "waiting for the initial listing of kubernetes.io/tls Secrets")
        self.plane.readiness_checks.append(self.secrets_listed)
        self.tasks = [asyncio.create_task(self.readiness.run(), name="kube-readiness"),
                      asyncio.create_task(secrets.run(), name="secret-watch"),
                      asyncio.create_task(ConfigMapReads(settings, self.plane.state,
                                                         refresh=self.config.resync_interval).run(),
                                          name="configmap-reads"),
                      asyncio.create_task(self.writer.run(), name="status-writer"),
                      asyncio.create_task(resync.run(), name="kube-resync")]
        if self.elector is not None and self.publisher is not None and self.records is not None:
            self.tasks += [asyncio.create_task(self.elector.run(), name="leader-election"),
                           asyncio.create_task(self.publisher.run(), name="ack-publisher"),
                           asyncio.create_task(self.records.run(), name="ack-records")]

    def _others_changed(self) -> None:
        # Also once when this replica has become the leader and read the records: a full pass.
        if self.writer is not None:
            self.writer.wake()

    def replica_info(self) -> dict[str, object]:
        """/replica: this replica's part in leader election and status writing."""
        writer = self.writer
        return {
            "identity": self.config.identity,
            "leaderElection": self.config.leader_election,
            "leader": self.elector.leader if self.elector is not None else not self.config.leader_election,
            "holder": self.elector.holder if self.elector is not None else None,
            "statusPasses": writer.passes if writer is not None else 0,
            "statusWrites": writer.writes if writer is not None else 0,
            "statusWritesPending": writer.writing() if writer is not None else 0,
            "ackRecordWrites": self.publisher.writes if self.publisher is not None else 0,
            "otherReplicasCounted": len(self.records.live()) if self.records is not None else 0,
            "maxRssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    async def stop_kube_side(self) -> None:
        # Before kopf exits: it waits 5 s for tasks started during its run that are still alive.
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        # A clean shutdown hands over at once: the Lease released, this replica's record gone.
        if self.elector is not None:
            await self.elector.release()
        if self.publisher is not None:
            await self.publisher.remove()
        if self.plane is not None and self.secrets_listed in self.plane.readiness_checks:
            self.plane.readiness_checks.remove(self.secrets_listed)
        if self.plane is not None and self.writer is not None:
            self.plane.controller.on_build.remove(self.writer.on_build)
            self.writer = None
        if self.plane is not None and self.publisher is not None:
            self.plane.controller.on_build.remove(self.publisher.on_build)
        self.elector = self.publisher = self.records = None

    async def stop(self) -> None:
        await self.stop_kube_side()
        if self.plane is not None:
            await self.plane.stop()
            self.plane = None


def find_credentials(settings: kopf.OperatorSettings | None = None) -> kopf.ConnectionInfo | None:
    """kopf's own defaults: the pod's service account, else the kubeconfig (KUBECONFIG, ~/.kube/config)."""
    settings = settings or kopf.OperatorSettings()
    return (kopf.login_with_service_account(settings=settings, logger=log)
            or kopf.login_with_kubeconfig(settings=settings, logger=log))


def register(registry: kopf.OperatorRegistry, operator: Operator) -> None:
    """Installs the handlers on a kopf registry."""

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        info = find_credentials(settings)
        if info is None:
            log.error("no Kubernetes credentials: set KUBECONFIG (or ~/.kube/config), or run in a pod "
                      "with a service account")
        operator.connection = info
        if info is not None and operator.readiness is not None:
            operator.readiness.server = info.server
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING  # handler logs are not Events; ours are explicit
        settings.watching.server_timeout = 300
        settings.networking.error_backoffs = API_RETRIES
        quiet_kopf_retries()
        operator.started_by_kopf = operator.plane is None
        await operator.start()
        operator.start_kube_side(settings)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if operator.started_by_kopf:
            await operator.stop()
        else:
            await operator.stop_kube_side()
        if operator.after_cleanup is not None:
            operator.after_cleanup()

    for kind in (ROUTES, BACKENDS):
        @kopf.on.event(API_GROUP, VERSION, kind.plural, registry=registry)
        def on_object(event: kopf.RawEvent, body: kopf.Body, _plural: str = kind.plural, **_: Any) -> None:
            event_type = event["type"] or "ADDED"
            apply_object_event(operator.state, operator.statuses, event_type, body)
            _saw(operator, _plural, body)
            meta = body.get("metadata") or {}
            key = ObjectKey(body.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
            if event_type == "DELETED":
                operator.versions.pop(key, None)
            else:
                operator.versions[key] = meta.get("resourceVersion", "")

    @kopf.on.event("", "v1", "services", registry=registry)
    def on_service(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        apply_service_event(operator.state, event["type"] or "ADDED", body)
        _saw(operator, SERVICES.plural, body)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    def on_endpoint_slice(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        apply_endpoint_slice_event(operator.state, event["type"] or "ADDED", body)
        _saw(operator, ENDPOINT_SLICES.plural, body)


def _saw(operator: Operator, plural: str, body: kopf.Body) -> None:
    # After the state store has it: "listed" means the state holds the listing.
    if operator.readiness is not None:
        meta = body.get("metadata") or {}
        operator.readiness.saw(plural, meta.get("namespace", ""), meta.get("name", ""))


# `kopf run -m xds_operator.kube.operator` uses kopf's default registry and the environment.
OPERATOR = Operator(OperatorConfig.from_env())
register(kopf.get_default_registry(), OPERATOR)


def run_operator(args: argparse.Namespace, xds_tls: XdsTlsFiles | None = None) -> int:
    """`xds-operator run`: the same handlers, configured from the command line (`xds_tls`: the
    checked --xds-tls-* files)."""
    try:
        timings = LeaderTimings(args.leader_lease_duration, args.leader_renew_deadline, args.leader_retry_period)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    try:
        credentials = find_credentials()
    except Exception as exc:  # a kubeconfig that cannot be read or parsed
        log.error("cannot read the Kubernetes credentials: %s", exc)
        return 1
    if credentials is None:
        log.error("no Kubernetes credentials: set KUBECONFIG (or ~/.kube/config), or run in a pod "
                  "with a service account")
        return 1
    OPERATOR.config = OperatorConfig(
        xds_address=args.xds_address, http_address=args.http_address, listener_address=args.listener_address,
        xds_tls=xds_tls, namespaces=tuple(args.namespace), leader_election=args.leader_elect,
        leader_namespace=args.leader_election_namespace or os.environ.get("POD_NAMESPACE") or "default", lease_name=args.leader_lease_name,
        leader_timings=timings, share_timings=ShareTimings(heartbeat=args.leader_lease_duration / 3, expiry=args.leader_lease_duration))

    async def main() -> None:
        # The control plane starts before kopf and stops after it, so kopf's stop does not wait
        # for the servers' tasks.
        await OPERATOR.start()
        assert OPERATOR.readiness is not None
        OPERATOR.readiness.server = credentials.server
        kopf_run = asyncio.create_task(kopf.operator(
            registry=kopf.get_default_registry(), standalone=args.standalone,
            namespaces=args.namespace or [], clusterwide=not args.namespace))
        # After its cleanup kopf gives requests still retrying (e.g. discovery of an API server that
        # is away) 5 s to finish; there is nothing left worth waiting for, so it is cancelled.
        def cancel_soon() -> None:
            asyncio.get_running_loop().call_later(0.2, kopf_run.cancel)

        OPERATOR.after_cleanup = cancel_soon
        try:
            await kopf_run
        except asyncio.CancelledError:
            if not kopf_run.cancelled():
                raise
        finally:
            await OPERATOR.stop()

    asyncio.run(main())
    return 0
