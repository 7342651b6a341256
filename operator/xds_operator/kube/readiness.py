"""Whether the Kubernetes side is ready, and why not: for /readyz and one clear log line each.

Not ready while
- the API server cannot be reached (the error, once; and once again when it answers),
- a permission the operator needs is missing (asked with SelfSubjectAccessReviews, which every
  authenticated user may create), or
- the initial listing of a watched kind is not yet in: the names one LIST of it returns are not all
  among the objects kopf has handed over (watch events, the initial listing's included). An empty
  kind is listed as soon as that LIST answers.

Once ready it stays ready: connected Envoys keep their config while the API is away, and taking
the operator out of its Service would cut them off. Losing and regaining the API is logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors

import kopf

from .client import ExponentialBackoff

log = logging.getLogger(__name__)

# kopf's client logs every failed attempt; these checks report the outcome themselves, once.
_quiet = logging.getLogger("xds_operator.kube.readiness.requests")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


@dataclass(frozen=True)
class WatchedKind:
    group: str
    version: str
    plural: str

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def full_name(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    subresource: str = ""

    def describe(self, namespace: str) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        return f"{self.verb} {what}{'.' + self.group if self.group else ''} {where}"


@dataclass
class KubeReadiness:
    kinds: list[WatchedKind]
    permissions: list[Permission]
    namespaces: list[str]  # empty: the whole cluster
    settings: kopf.OperatorSettings = field(default_factory=kopf.OperatorSettings)
    server: str = "the Kubernetes API"
    poll: ExponentialBackoff = ExponentialBackoff(first=0.2, cap=10.0, attempts=None)
    monitor_interval: float = 5.0

    def __post_init__(self) -> None:
        self.problem: str | None = "waiting for the Kubernetes API"
        self.ready = False
        self.reachable: bool | None = None
        self.seen: dict[str, set[tuple[str, str]]] = {k.plural: set() for k in self.kinds}
        self.listed: set[str] = set()

    def reason(self) -> str | None:
        """For ControlPlane.readiness_checks: why not ready, or None."""
        return None if self.ready else self.problem

    def saw(self, plural: str, namespace: str, name: str) -> None:
        """kopf handed over an event (of any type) for this object."""
        self.seen.setdefault(plural, set()).add((namespace, name))

    async def run(self) -> None:
        """Runs inside kopf's operator (it uses kopf's authenticated client)."""
        delays = iter(self.poll)
        while not self.ready:
            try:
                problem = await self._check()
            except Exception as exc:  # an API error the checks did not expect: report, retry
                problem = f"the Kubernetes API at {self.server} failed: {_short(exc)}"
            if problem is None:
                self.ready = True
                self.problem = None
                log.info("ready: the initial listing of %s is in", ", ".join(k.full_name for k in self.kinds))
                break
            if problem != self.problem and not problem.startswith(("waiting", "cannot reach")):
                log.error("not ready: %s", problem)
            self.problem = problem
            await asyncio.sleep(next(delays))
        while True:  # afterwards: only say when the API goes away and comes back
            await asyncio.sleep(self.monitor_interval)
            await self._reach()

    async def _check(self) -> str | None:
        if (problem := await self._reach()) is not None:
            return problem
        missing = await self._missing_permissions()
        if missing:
            return "missing permission: cannot " + "; cannot ".join(missing) + \
                " (see deploy/operator/rbac.yaml)"
        waiting = [kind.full_name for kind in self.kinds if not await self._listed(kind)]
        if waiting:
            return f"waiting for the initial listing of {', '.join(waiting)}"
        return None

    async def _call(self, method: str, url: str, payload: object | None = None,
                    accept: str = "application/json") -> dict:
        response = await kopf_api.request(method, url, payload=payload, settings=self.settings, backoffs=(),
                                          headers={"Accept": accept, "Content-Type": "application/json"},
                                          logger=_quiet)
        async with response:
            return await response.json()

    async def _reach(self) -> str | None:
        try:
            await self._call("GET", "/version")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if self.reachable is not False:
                (log.warning if self.ready else log.error)(
                    "cannot reach the Kubernetes API at %s: %s%s", self.server, _short(exc),
                    "; serving the last config, retrying" if self.ready else "; retrying")
            self.reachable = False
            return f"cannot reach the Kubernetes API at {self.server}: {_short(exc)}"
        except kopf_errors.APIError as exc:
            self.reachable = False
            return f"the Kubernetes API at {self.server} answers {exc.status}: {exc}"
        if self.reachable is False:
            log.info("the Kubernetes API at %s answers again", self.server)
        self.reachable = True
        return None

    async def _missing_permissions(self) -> list[str]:
        missing = []
        for namespace in self.namespaces or [""]:
            for permission in self.permissions:
                review = await self._call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": {
                        "namespace": namespace, "verb": permission.verb, "group": permission.group,
                        "resource": permission.resource, "subresource": permission.subresource}}})
                if not (review.get("status") or {}).get("allowed"):
                    missing.append(permission.describe(namespace))
        return missing

    async def _listed(self, kind: WatchedKind) -> bool:
        if kind.plural in self.listed:
            return True
        names: set[tuple[str, str]] = set()
        for namespace in self.namespaces or [""]:
            where = f"/namespaces/{namespace}" if namespace else ""
            listing = await self._call("GET", f"{kind.prefix}{where}/{kind.plural}", accept=METADATA_ONLY)
            for item in listing.get("items") or []:
                meta = item.get("metadata") or {}
                names.add((meta.get("namespace", ""), meta.get("name", "")))
        if names <= self.seen.get(kind.plural, set()):
            self.listed.add(kind.plural)
            return True
        return False


def _short(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error.strerror or exc.os_error) if exc.os_error else str(exc)
    return str(exc) or type(exc).__name__


class DropRetryNoise(logging.Filter):
    """kopf logs every retried request at ERROR ("Request attempt #3 failed; will retry: ...").
    Its retries are endless here, and KubeReadiness reports what keeps failing once; drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Request attempt") and "will retry" in message)


def quiet_kopf_retries() -> None:
    noise = DropRetryNoise()
    for name in list(logging.Logger.manager.loggerDict):
        if name == "kopf" or name.startswith("kopf."):
            logger = logging.getLogger(name)
            if not any(isinstance(f, DropRetryNoise) for f in logger.filters):
                logger.addFilter(noise)
