"""Status patches and API reads through kopf's own API client, the one its watches use: the same
login and re-authentication, retries with backoff on connection errors, 5xx and 429 (honouring the
server's Retry-After). What it leaves to us is 409 Conflict, which only the status writer can
resolve (re-read, recompute, write again); it arrives here as `Conflict`.

Events are posted with kopf's own event poster (its message trimming, retries, and a warning in
the log, never an exception, when an Event cannot be posted: they are auxiliary).

kopf exposes its client only in `kopf._cogs`; the Kubernetes tests run every call here against a
real API server, so a kopf release that moves it fails them, not production.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors
from kopf._cogs.clients import events as kopf_events
from kopf._cogs.structs import bodies, references

log = logging.getLogger(__name__)


class RetryLog(logging.LoggerAdapter):
    """kopf's client logs each attempt it retries at ERROR; a retried 429 or 503 is routine, so
    those lines go to DEBUG. What finally fails is raised, and its caller says so."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= logging.ERROR and "will retry" in str(msg):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


retry_log = RetryLog(log, {})

Conflict = kopf_errors.APIConflictError
NotFound = kopf_errors.APINotFoundError
APIError = kopf_errors.APIError


@dataclass(frozen=True)
class ExponentialBackoff:
    """Delays for retries: first, first*factor, ... up to cap, with +-20 % jitter so that many
    writers do not retry in step; `attempts` None means forever. Iterable any number of times,
    as kopf iterates it afresh for each request."""

    first: float = 0.1
    factor: float = 2.0
    cap: float = 10.0
    attempts: int | None = 8

    def __iter__(self) -> Iterator[float]:
        counter = itertools.count() if self.attempts is None else range(self.attempts)
        for n in counter:
            delay = min(self.cap, self.first * self.factor ** min(n, 64))
            yield delay * random.uniform(0.8, 1.2)


# Status writes: about 0.1 s to 10 s, eight retries (half a minute), then the writer's next pass.
WRITE_BACKOFF = ExponentialBackoff()
EVENT_BACKOFF = ExponentialBackoff(attempts=4)
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
EVENTS = references.Resource("", "v1", "events", kind="Event", namespaced=True)


class KubeClient:
    """Reads and status patches of namespaced objects by URL prefix (e.g. /apis/group/version)."""

    def __init__(self, settings: kopf.OperatorSettings, backoff: ExponentialBackoff = WRITE_BACKOFF) -> None:
        self.settings = settings
        self.backoff = backoff

    async def _call(self, method: str, url: str, payload: object | None = None,
                    content_type: str = "application/json") -> Any:
        response = await kopf_api.request(method, url, payload=payload, headers={"Content-Type": content_type},
                                          settings=self.settings, backoffs=self.backoff, logger=retry_log)
        async with response:
            return await response.json()

    async def list_names(self, prefix: str, plural: str, namespace: str = "") -> set[tuple[str, str]]:
        """(namespace, name) of every object of a kind, by one metadata-only LIST."""
        where = f"/namespaces/{namespace}" if namespace else ""
        response = await kopf_api.request("GET", f"{prefix}{where}/{plural}", settings=self.settings,
                                          backoffs=self.backoff, logger=retry_log,
                                          headers={"Accept": METADATA_ONLY})
        async with response:
            listing = await response.json()
        return {((item.get("metadata") or {}).get("namespace", ""), (item.get("metadata") or {}).get("name", ""))
                for item in listing.get("items") or []}

    async def get(self, prefix: str, plural: str, namespace: str, name: str) -> dict | None:
        try:
            return await self._call("GET", f"{prefix}/namespaces/{namespace}/{plural}/{name}")
        except NotFound:
            return None

    async def patch_status(self, prefix: str, plural: str, namespace: str, name: str, status: dict,
                           resource_version: str | None) -> dict | None:
        """Merge-patches `status` through the status subresource; None if the object is gone.
        With `resource_version` the write is conditional: Conflict if the object changed since."""
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self._call("PATCH", f"{prefix}/namespaces/{namespace}/{plural}/{name}/status", patch,
                                    "application/merge-patch+json")
        except NotFound:
            return None

    async def post_warning(self, involved: dict, reason: str, message: str) -> None:
        """A Warning Event about `involved` (apiVersion, kind, namespace, name, uid)."""
        await kopf_events.post_event(ref=cast(bodies.ObjectReference, involved), type="Warning", reason=reason, message=message,
                                     resource=EVENTS, settings=self.settings, logger=retry_log,
                                     backoffs=EVENT_BACKOFF)
