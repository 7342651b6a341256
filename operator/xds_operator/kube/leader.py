"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica serves xDS; only the one holding the Lease writes statuses and Events.

- A candidate that finds no Lease creates it, holding it. A Lease whose holder is someone else is
  taken over only when its record (its resourceVersion) has not changed for `lease_duration`
  seconds on the candidate's own clock (so clock skew between replicas does not matter), or when
  its holder is empty (released).
- The leader renews every `retry_period` seconds; if it cannot renew for `renew_deadline` seconds
  it stops writing (before anyone else may take over, as renew_deadline < lease_duration).
- On a clean shutdown the leader releases the Lease (empty holder), so a follower takes over at
  its next try, within `retry_period`. After a crash, within lease_duration + retry_period.

Writes are conditional on the resourceVersion read: two candidates racing get one 409 Conflict.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from .client import Conflict, ExponentialBackoff, KubeClient

log = logging.getLogger(__name__)

COORDINATION = "/apis/coordination.k8s.io/v1"
LEASES = "leases"
# A renewal that has to wait long is worth less than the next one: few, short retries.
ELECTION_BACKOFF = ExponentialBackoff(first=0.2, cap=1.0, attempts=2)


@dataclass(frozen=True)
class LeaderTimings:
    """client-go's defaults. Invariant: retry_period < renew_deadline < lease_duration."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(f"leader election timings need retry period ({self.retry_period:g}s) < renew deadline "
                             f"({self.renew_deadline:g}s) < lease duration ({self.lease_duration:g}s)")


def default_identity() -> str:
    """The pod's name (POD_NAME, from the downward API) or the host name, and the process id."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


def micro_time(at: float | None = None) -> str:
    """A Kubernetes MicroTime."""
    moment = datetime.datetime.fromtimestamp(time.time() if at is None else at, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class LeaderElector:
    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str,
                 timings: LeaderTimings = LeaderTimings()) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self.leader = False
        self.holder: str | None = None  # as last read
        self.transitions = 0  # leadership gained by this replica
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._last_error: str | None = None

    def is_leader(self) -> bool:
        """Asked before each status pass: a renewal older than the deadline no longer counts, even
        before the loop notices (a process frozen and thawed must not write as a stale leader)."""
        return self.leader and time.monotonic() - self._renewed_at <= self.timings.renew_deadline

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.timings.renew_deadline / 2):
                    await self.try_acquire_or_renew()
            except Exception as exc:  # the API away, a timeout, a missing permission: the deadline decides
                message = str(exc) or type(exc).__name__
                if message != self._last_error:  # once, not every retry period
                    log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, message)
                self._last_error = message
            else:
                self._last_error = None
            if self.leader and time.monotonic() - self._renewed_at > self.timings.renew_deadline:
                log.warning("leader election: could not renew Lease %s/%s for %.0fs; no longer the leader",
                            self.namespace, self.name, self.timings.renew_deadline)
                self._set(False)
            await asyncio.sleep(self.timings.retry_period)

    async def try_acquire_or_renew(self) -> bool:
        now = time.monotonic()
        lease = await self.client.get(COORDINATION, LEASES, self.namespace, self.name)
        if lease is None:
            try:
                await self.client.create(COORDINATION, LEASES, self.namespace, self._lease(None, {}))
            except Conflict:  # another candidate was first
                return False
            return self._acquired(now)
        spec: dict[str, Any] = lease.get("spec") or {}
        version = lease["metadata"]["resourceVersion"]
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, now
        holder = spec.get("holderIdentity") or ""
        self.holder = holder or None
        duration = float(spec.get("leaseDurationSeconds") or self.timings.lease_duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            self._set(False)
            return False
        try:
            await self.client.replace(COORDINATION, LEASES, self.namespace, self.name, self._lease(lease, spec))
        except Conflict:
            return False
        return self._acquired(now)

    async def release(self) -> None:
        """Gives the Lease up if this replica holds it (a clean shutdown): a follower need not wait."""
        if not self.leader:
            return
        self._set(False)
        try:
            lease = await self.client.get(COORDINATION, LEASES, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time()}
            await self.client.replace(COORDINATION, LEASES, self.namespace, self.name, {**lease, "spec": spec})
            log.info("leader election: released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # then the others wait for it to expire
            log.warning("leader election: could not release Lease %s/%s: %s", self.namespace, self.name, exc)

    def _lease(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> dict[str, Any]:
        now = micro_time()
        taking_over = spec.get("holderIdentity") != self.identity
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.timings.lease_duration)),
            "acquireTime": now if taking_over else spec.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if taking_over and lease else 0),
        }
        metadata = dict(lease["metadata"]) if lease else {"name": self.name, "namespace": self.namespace}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": new_spec}

    def _acquired(self, now: float) -> bool:
        self._renewed_at = now
        self.holder = self.identity
        self._set(True)
        return True

    def _set(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        if leader:
            self.transitions += 1
            log.info("leader election: %s is the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
