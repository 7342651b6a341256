"""Writes Route and Backend status to Kubernetes, only when it changes.

Runs after every build and every proxy ACK/NACK/connect/disconnect, debounced, so a burst of
ACKs from many proxies becomes one pass. A condition that turns False for a rejection
(invalid spec, NACK) is also posted as a Warning Event.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from ..ir.builder import BuildResult
from ..xds.cache import SnapshotCache
from ..api.objects import API_VERSION, ObjectKey
from ..sources.state import StateStore
from ..status.report import ObjectReport, proxy_groups, reports
from ..xds.proxies import ProxyRegistry
from .client import KubeClient

log = logging.getLogger(__name__)

PLURALS = {"Route": "routes", "Backend": "backends"}
# (condition, reason) pairs that are posted as Warning Events: a rejected spec, a NACK.
WARNINGS = {("Accepted", "Invalid"), ("Programmed", "Rejected")}


def desired_status(report: ObjectReport, current: dict) -> dict:
    """The status to write: the report, keeping lastTransitionTime of conditions whose status did not change."""
    status = report.to_status()
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in status["conditions"]:
        before = previous.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        condition["lastTransitionTime"] = before.get("lastTransitionTime", now) if same else now
    return status


def _comparable(status: dict) -> dict:
    return {**status, "conditions": [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                     for c in status.get("conditions") or []]}


class StatusWriter:
    def __init__(self, client: KubeClient, state: StateStore, registry: ProxyRegistry, cache: SnapshotCache,
                 current: dict[ObjectKey, dict], *, debounce: float = 0.05) -> None:
        self.client = client
        self.state = state
        self.registry = registry
        self.cache = cache
        self.current = current  # the status each object has in the API, kept up to date by the watch
        self.debounce = debounce
        self.result: BuildResult | None = None
        self.writes = 0
        self._dirty = asyncio.Event()
        registry.subscribe(self._dirty.set)

    def on_build(self, result: BuildResult) -> None:
        self.result = result
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            try:
                await self.write_changed()
            except Exception:
                log.exception("status pass failed; retrying")
                await asyncio.sleep(1)
                self._dirty.set()

    async def write_changed(self) -> None:
        if self.result is None:
            return
        # Computed off the event loop, on copies: with many objects and proxies it takes a while.
        groups = proxy_groups(self.registry, self.cache, copy=True)
        computed = await asyncio.to_thread(reports, self.result, groups)
        for key, report in computed.items():
            obj = self.state.objects.get(key)
            if obj is None:
                continue  # deleted since the build
            current = self.current.get(key, {})
            status = desired_status(report, current)
            if _comparable(status) == _comparable(current):
                continue
            if not await self.client.patch_status(API_VERSION, PLURALS[key.kind], key.namespace, key.name, status):
                continue
            self.writes += 1
            self.current[key] = status
            await self._post_warnings(key, obj.uid, current, status)

    async def _post_warnings(self, key: ObjectKey, uid: str, before: dict, after: dict) -> None:
        old = {c.get("type"): c for c in before.get("conditions") or []}
        for condition in after["conditions"]:
            if condition["status"] != "False" or (condition["type"], condition["reason"]) not in WARNINGS:
                continue
            previous = old.get(condition["type"])
            if previous and previous.get("reason") == condition["reason"] and \
                    previous.get("message") == condition["message"]:
                continue
            await self.client.post_event(api_version=API_VERSION, kind=key.kind, namespace=key.namespace,
                                         name=key.name, uid=uid, type_="Warning", reason=condition["reason"],
                                         message=f"{condition['type']}: {condition['message']}")
