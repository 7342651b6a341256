"""Writes Route and Backend status to Kubernetes, only when it changes.

Runs after every build and every proxy ACK/NACK/connect/disconnect, debounced, so a burst of
ACKs from many proxies becomes one pass. A condition that turns False for a rejection
(invalid spec, NACK) is also posted as a Warning Event.

Writes are conditional on the resourceVersion last seen: a concurrent writer makes the server
answer 409 Conflict, and the writer re-reads the object, recomputes (keeping the new
lastTransitionTimes) and writes again, backing off. 429 and 5xx are retried by the client.
Each object has its own writer task while it has a status to write, so one object backing off
delays no other object and no later pass.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..api.objects import API_VERSION, ObjectKey
from ..controlplane.debounce import settle
from ..ir.builder import BuildResult
from ..sources.state import StateStore
from ..status.report import ObjectReport, proxy_groups, reports
from ..xds.cache import SnapshotCache
from ..xds.proxies import ProxyRegistry
from .client import WRITE_BACKOFF, Conflict, ExponentialBackoff, KubeClient

log = logging.getLogger(__name__)

PLURALS = {"Route": "routes", "Backend": "backends"}
PREFIX = f"/apis/{API_VERSION}"
WRITERS = 8  # status writes in flight at once
# (condition, reason) pairs that are posted as Warning Events: a rejected spec, a NACK.
WARNINGS = {("Accepted", "Invalid"), ("Accepted", "HostnameConflict"), ("Programmed", "Rejected")}


def desired_status(report: ObjectReport, current: dict[str, Any]) -> dict[str, Any]:
    """The status to write: the report, keeping lastTransitionTime of conditions whose status did not change."""
    status = report.to_status()
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions: list[dict[str, Any]] = status["conditions"]
    for condition in conditions:
        before = previous.get(condition["type"])
        if before is not None and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime", now)
        else:
            condition["lastTransitionTime"] = now
    return status


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    return {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                     for c in status.get("conditions") or []]}


class StatusWriter:
    def __init__(self, client: KubeClient, state: StateStore, registry: ProxyRegistry, cache: SnapshotCache,
                 current: dict[ObjectKey, dict[str, Any]], versions: dict[ObjectKey, str], *, debounce: float = 0.05,
                 backoff: ExponentialBackoff = WRITE_BACKOFF, is_leader: Callable[[], bool] = lambda: True,
                 merge: Callable[[Mapping[ObjectKey, ObjectReport]], Mapping[ObjectKey, ObjectReport]] | None = None
                 ) -> None:
        self.client = client
        self.state = state
        self.registry = registry
        self.cache = cache
        # The status and resourceVersion each object has in the API, kept up to date by the watch.
        self.current = current
        self.versions = versions
        self.debounce = debounce
        self.backoff = backoff
        self.conflicts = 0
        self.result: BuildResult | None = None
        self.writes = 0
        # Several replicas: only the leader writes (a follower's changes set one flag, no queue),
        # and `merge` adds the other replicas' proxies to the reports.
        self.is_leader = is_leader
        self.merge = merge
        self.passes = 0
        self._dirty = asyncio.Event()
        registry.subscribe(self._dirty.set)
        # One writer task per object with a status to write, and the newest report it is to write.
        self._writing: dict[ObjectKey, asyncio.Task[None]] = {}
        self._latest: dict[ObjectKey, ObjectReport] = {}
        self._slots = asyncio.Semaphore(WRITERS)

    def wake(self) -> None:
        """Something other than a build or a proxy changed (leadership, another replica's ACKs)."""
        self._dirty.set()

    def on_build(self, result: BuildResult) -> None:
        self.result = result
        self._dirty.set()

    async def run(self) -> None:
        failures: Iterator[float] = iter(())
        try:
            while True:
                await self._dirty.wait()
                # Everything that changes within `debounce` of the first change is one pass.
                await settle(self._dirty, self.debounce, max_delay=self.debounce)
                if not self.is_leader():
                    continue  # wake() when leadership comes
                try:
                    await self.write_changed()
                    failures = iter(())
                except Exception as exc:  # a defect in computing the reports: try again, later
                    delay = next(failures, None)
                    if delay is None:
                        failures = iter(ExponentialBackoff(first=1.0, cap=30.0, attempts=None))
                        delay = next(failures)
                    log.error("computing status failed (%s); next try in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    self._dirty.set()
        finally:
            writers = list(self._writing.values())
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
            self._writing.clear()  # (a task cancelled before it ran never got to its `finally`)

    async def write_changed(self) -> None:
        """Hands each object whose status changed to its own writer and returns: an object whose
        writes are backing off (429, 409, an unreachable API) holds up neither the others nor the
        next pass; its writer writes the newest report when it gets through."""
        if self.result is None:
            return
        # Computed off the event loop, on the tables as they are now: with many objects it takes a while.
        await self.cache.settled()
        groups = proxy_groups(self.registry, self.cache, copy=True)
        computed = await asyncio.to_thread(reports, self.result, groups, self.registry.refused_objects)
        if self.merge is not None:
            computed = dict(self.merge(computed))
        self.passes += 1
        for key, report in computed.items():
            if key not in self._writing:
                if key not in self.state.objects:
                    continue  # deleted since the build
                before = self.current.get(key, {})
                if _comparable(desired_status(report, before)) == _comparable(before):
                    continue
            self._latest[key] = report  # a writer in flight takes it when its write is through
            if key not in self._writing:
                self._writing[key] = asyncio.create_task(self._write_newest(key), name=f"status-{key}")

    def writing(self) -> int:
        """Objects whose status write is in flight or waiting to be retried."""
        return len(self._writing)

    async def _write_newest(self, key: ObjectKey) -> None:
        """Writes the newest report of one object until none is left; failures back off per object."""
        failures: Iterator[float] = iter(())
        try:
            while (report := self._latest.pop(key, None)) is not None:
                try:
                    async with self._slots:
                        obj = self.state.objects.get(key)
                        if obj is None or not self.is_leader():
                            continue  # deleted, or no longer ours to write (the next leader's pass covers it)
                        before = self.current.get(key, {})
                        written = await self._write(key, report, before)
                except Exception as exc:  # the client has retried already: this object, later
                    delay = next(failures, None)
                    if delay is None:
                        failures = iter(ExponentialBackoff(first=1.0, cap=30.0, attempts=None))
                        delay = next(failures)
                    log.error("writing the status of %s failed (%s); next try in %.1fs", key, exc, delay)
                    self._latest.setdefault(key, report)  # unless a newer report came meanwhile
                    await asyncio.sleep(delay)
                    continue
                failures = iter(())
                if written is not None:
                    self.writes += 1
                    try:
                        await self._post_warnings(key, obj.uid, before, written)
                    except Exception as exc:  # an Event is a courtesy: the status is written
                        log.error("posting a Warning Event for %s failed: %s", key, exc)
        finally:
            # (no await since the last pop: a report set meanwhile would have found this task)
            self._writing.pop(key, None)

    async def _write(self, key: ObjectKey, report: ObjectReport, current: dict[str, Any]) -> dict[str, Any] | None:
        """Writes the report's status if it differs from `current`; the status written, or None."""
        plural = PLURALS[key.kind]
        retries = iter(self.backoff)
        while True:
            status = desired_status(report, current)
            if _comparable(status) == _comparable(current):
                return None
            try:
                body = await self.client.patch_status(PREFIX, plural, key.namespace, key.name, status,
                                                      self.versions.get(key))
            except Conflict:
                self.conflicts += 1
                delay = next(retries, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                fresh = await self.client.get(PREFIX, plural, key.namespace, key.name)
                if fresh is None:
                    return None
                current = dict(fresh.get("status") or {})
                self.current[key] = current
                self.versions[key] = fresh["metadata"]["resourceVersion"]
                continue
            if body is None:
                return None  # deleted meanwhile
            self.current[key] = status
            self.versions[key] = body["metadata"]["resourceVersion"]
            return status

    async def _post_warnings(self, key: ObjectKey, uid: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        old = {c.get("type"): c for c in before.get("conditions") or []}
        for condition in after["conditions"]:
            if condition["status"] != "False" or (condition["type"], condition["reason"]) not in WARNINGS:
                continue
            previous = old.get(condition["type"])
            if previous and previous.get("reason") == condition["reason"] and \
                    previous.get("message") == condition["message"]:
                continue
            involved = {"apiVersion": API_VERSION, "kind": key.kind, "namespace": key.namespace, "name": key.name,
                        "uid": uid}
            await self.client.post_warning(involved, condition["reason"],
                                           f"{condition['type']}: {condition['message']}")
