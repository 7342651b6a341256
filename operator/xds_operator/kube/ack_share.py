"""ACK state across replicas: each replica's record, one small Lease per replica.

Each replica publishes what its own proxies ACKed and NACKed, per object, as a compact JSON tally
(status/merge.py `Tally`: [generation, total, synced, nacked, [nack messages]], only objects some
of its proxies are sent) in an annotation of the Lease `<prefix>-<identity>` in the operator's
namespace, labelled `xds-operator.dev/acks`. It writes it at most once per `min_interval` when
the tally changes, and otherwise renews it every `heartbeat` seconds as a sign of life; on a clean
shutdown it deletes it.

The leader lists these Leases every `poll_interval` and merges the records of the others into
its statuses. A record counts until `expiry` seconds after its last change as the leader saw it
(its resourceVersion, on the leader's own clock), or after its renewTime (the writer's clock):
whichever is sooner. So a replica that dies stops counting within `expiry` (within 2 x expiry of
a leader change, as a new leader first sees every record as fresh unless its renewTime is old);
its proxies count again as soon as they reconnect to a surviving replica, which reports them.
Until the dead record expires they may be counted twice. The leader deletes records expired for
longer than 4 x expiry (replicas that are gone).

Annotations are limited to 256 KiB in all: about 4,000 objects with proxies per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.objects import ObjectKey
from ..ir.builder import BuildResult
from ..status.merge import Tally, tallies
from ..status.report import proxy_groups, reports
from ..xds.cache import SnapshotCache
from ..xds.proxies import ProxyRegistry
from .client import Conflict, KubeClient
from .leader import COORDINATION, LEASES, micro_time, parse_micro_time

log = logging.getLogger(__name__)

LABEL = "xds-operator.dev/acks"
ANNOTATION = "xds-operator.dev/acks"
MAX_RECORD_BYTES = 250_000


@dataclass(frozen=True)
class ShareTimings:
    min_interval: float = 1.0  # at most one write per replica per second
    heartbeat: float = 5.0
    expiry: float = 15.0
    poll_interval: float = 1.0


def record_name(prefix: str, identity: str) -> str:
    """A valid object name for a replica's record."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.")
    return f"{prefix}-{cleaned}"[:253].rstrip("-.")


def encode(record: Mapping[ObjectKey, Tally]) -> str:
    return json.dumps({f"{k.kind}/{k.namespace}/{k.name}": t.to_json() for k, t in sorted(record.items())},
                      separators=(",", ":"))


def decode(text: str) -> dict[ObjectKey, Tally]:
    decoded: dict[ObjectKey, Tally] = {}
    for key, value in json.loads(text).items():
        kind, namespace, name = key.split("/", 2)
        decoded[ObjectKey(kind, namespace, name)] = Tally.from_json(value)
    return decoded


class AckPublisher:
    """Keeps this replica's record up to date (every replica, the leader too: leadership may move)."""

    def __init__(self, client: KubeClient, namespace: str, prefix: str, identity: str, registry: ProxyRegistry,
                 cache: SnapshotCache, timings: ShareTimings = ShareTimings()) -> None:
        self.client = client
        self.namespace = namespace
        self.name = record_name(prefix, identity)
        self.identity = identity
        self.registry = registry
        self.cache = cache
        self.timings = timings
        self.result: BuildResult | None = None
        self.published: str | None = None
        self.writes = 0
        self._dirty = asyncio.Event()
        registry.subscribe(self._dirty.set)
        self._too_big_logged = False

    def on_build(self, result: BuildResult) -> None:
        self.result = result
        self._dirty.set()

    async def run(self) -> None:
        last_write = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.timings.heartbeat)
            # Rate limit: whatever happened meanwhile goes into the one write.
            await asyncio.sleep(max(0.0, last_write + self.timings.min_interval - time.monotonic()))
            self._dirty.clear()
            try:
                text = await self._record()
                if text != self.published or time.monotonic() - last_write >= self.timings.heartbeat:
                    await self._write(text)
                    last_write = time.monotonic()
            except Exception as exc:  # the API away: the record ages; the next pass tries again
                log.warning("could not publish this replica's ACK record %s/%s: %s", self.namespace, self.name, exc)
                self._dirty.set()
                await asyncio.sleep(self.timings.min_interval)

    async def _record(self) -> str:
        if self.result is None:
            return encode({})
        await self.cache.settled()
        groups = proxy_groups(self.registry, self.cache, copy=True)
        result = self.result
        text = await asyncio.to_thread(lambda: encode(tallies(reports(result, groups))))
        if len(text.encode()) > MAX_RECORD_BYTES:
            if not self._too_big_logged:
                log.error("this replica's ACK record is %d bytes, above %d: other replicas' leaders count its "
                          "proxies as not synced", len(text.encode()), MAX_RECORD_BYTES)
                self._too_big_logged = True
            text = encode({})
        return text

    async def _write(self, text: str) -> None:
        lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.name, "namespace": self.namespace, "labels": {LABEL: "record"},
                              "annotations": {ANNOTATION: text}},
                 "spec": {"holderIdentity": self.identity, "renewTime": micro_time(),
                          "leaseDurationSeconds": max(1, round(self.timings.expiry))}}
        current = await self.client.get(COORDINATION, LEASES, self.namespace, self.name)
        if current is None:
            await self.client.create(COORDINATION, LEASES, self.namespace, lease)
        else:
            lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await self.client.replace(COORDINATION, LEASES, self.namespace, self.name, lease)
        self.published = text
        self.writes += 1

    async def remove(self) -> None:
        """A clean shutdown: this replica's proxies are about to reconnect elsewhere."""
        try:
            await self.client.delete(COORDINATION, LEASES, self.namespace, self.name)
        except Exception as exc:
            log.warning("could not delete this replica's ACK record %s/%s: %s", self.namespace, self.name, exc)


@dataclass
class _Seen:
    version: str
    at: float  # monotonic, when this version was first seen
    renewed: float  # wall clock, the record's renewTime
    tallies: dict[ObjectKey, Tally] = field(default_factory=dict)


class AckRecords:
    """The other replicas' records, as the leader reads them."""

    def __init__(self, client: KubeClient, namespace: str, own_name: str, is_leader: Callable[[], bool],
                 on_change: Callable[[], None], timings: ShareTimings = ShareTimings()) -> None:
        self.client = client
        self.namespace = namespace
        self.own_name = own_name
        self.is_leader = is_leader
        self.on_change = on_change
        self.timings = timings
        self.seen: dict[str, _Seen] = {}
        self._counted: frozenset[str] = frozenset()
        self.polls = 0  # listings read
        # A new leader writes no status before it has read the others' records once: else its
        # first pass would count its own proxies only, and the next one all of them again.
        self.ready = False

    def live(self) -> list[dict[ObjectKey, Tally]]:
        """The records that count now."""
        return [self.seen[name].tallies for name in sorted(self._alive())]

    def _alive(self) -> set[str]:
        mono, wall = time.monotonic(), time.time()
        return {name for name, seen in self.seen.items()
                if mono - seen.at < self.timings.expiry and wall - seen.renewed < self.timings.expiry}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.timings.poll_interval)
            if not self.is_leader():
                self.seen.clear()  # a follower keeps nothing
                self._counted = frozenset()
                self.ready = False
                continue
            try:
                first = not self.ready
                await self.poll()
                self.polls += 1
                self.ready = True
                if first:
                    self.on_change()
            except Exception as exc:
                log.warning("could not read the other replicas' ACK records: %s", exc)

    async def poll(self) -> None:
        items = await self.client.list_labelled(COORDINATION, LEASES, self.namespace, LABEL)
        now = time.monotonic()
        changed = False
        names = set()
        for item in items:
            meta = item.get("metadata") or {}
            name = meta.get("name", "")
            if name == self.own_name:
                continue
            names.add(name)
            version = meta.get("resourceVersion", "")
            previous = self.seen.get(name)
            if previous is not None and previous.version == version:
                continue
            try:
                record = decode((meta.get("annotations") or {}).get(ANNOTATION) or "{}")
                renewed = parse_micro_time((item.get("spec") or {}).get("renewTime") or micro_time(0))
            except (ValueError, TypeError) as exc:
                log.warning("ignoring the unreadable ACK record %s: %s", name, exc)
                continue
            changed = changed or previous is None or previous.tallies != record
            self.seen[name] = _Seen(version, now, renewed, record)
        for name in set(self.seen) - names:
            del self.seen[name]
            changed = True
        alive = frozenset(self._alive())
        if alive != self._counted:
            changed = True
            self._counted = alive
        await self._collect(now)
        if changed:
            self.on_change()

    async def _collect(self, now: float) -> None:
        for name, seen in list(self.seen.items()):
            if now - seen.at > 4 * self.timings.expiry:
                with contextlib.suppress(Conflict):
                    await self.client.delete(COORDINATION, LEASES, self.namespace, name)
                log.info("deleted the ACK record %s of a replica gone since %.0fs", name, now - seen.at)
                del self.seen[name]
