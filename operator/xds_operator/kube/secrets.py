"""Secrets from the API without holding the cluster's Secrets in memory.

Clusters keep thousands of Opaque Secrets (Helm keeps every release in one); a watch of all
Secrets, as kopf makes it, receives and parses each of them (projectcontour/contour#7660). So:
- kubernetes.io/tls Secrets come from a LIST (paginated) and WATCH filtered by the API server
  (fieldSelector type=kubernetes.io/tls): no other Secret is ever sent;
- the other Secrets a Route or Backend names (a CA bundle in an Opaque Secret's ca.crt) are read
  one by one with GET, when first referenced and then every `refresh` seconds (a CA bundle in a
  ConfigMap likewise, by kube/configmaps.py).
Only tls.crt, tls.key and ca.crt are kept (sources/kubernetes.kept_secret).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors

from ..sources.kubernetes import TLS_SECRET_TYPE, kept_secret
from ..sources.state import StateStore
from .client import KubeClient, retry_log
from .configmaps import names_a_config_map
from .referenced import read_passes

log = logging.getLogger(__name__)

_TLS_ONLY = urllib.parse.quote(f"type={TLS_SECRET_TYPE}")
_PAGE = 250


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass
class SecretWatch:
    settings: kopf.OperatorSettings
    state: StateStore
    namespaces: list[str]  # empty: the whole cluster
    refresh: float = 30.0
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    _tls: set[tuple[str, str]] = field(default_factory=set)  # what the TLS watch put in the state
    _referenced: set[tuple[str, str]] = field(default_factory=set)  # what the GETs put there

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._watch_tls(ns), name=f"secrets-tls-{ns or 'all'}")
                 for ns in self.namespaces or [""]]
        tasks.append(asyncio.create_task(self._read_referenced(), name="secrets-referenced"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def _url(self, namespace: str, query: str) -> str:
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"/api/v1{where}/secrets?fieldSelector={_TLS_ONLY}&{query}"

    async def _watch_tls(self, namespace: str) -> None:
        delay = 0.5
        while True:
            try:
                version = await self._list(namespace)
                self.listed.set()
                delay = 0.5
                while True:
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except _Expired:
                continue
            except Exception as exc:  # the API away: kopf's client retried; try again later
                log.warning("watching kubernetes.io/tls Secrets failed (%s); again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _list(self, namespace: str) -> str:
        seen: set[tuple[str, str]] = set()
        token = ""
        while True:
            query = f"limit={_PAGE}" + (f"&continue={urllib.parse.quote(token)}" if token else "")
            response = await kopf_api.request("GET", self._url(namespace, query), settings=self.settings,
                                              logger=retry_log)
            async with response:
                page = await response.json()
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                key = (meta.get("namespace", ""), meta.get("name", ""))
                seen.add(key)
                self.state.put_secret(*key, kept_secret(item))
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                version = (page.get("metadata") or {}).get("resourceVersion", "")
                break
        mine = {k for k in self._tls if not namespace or k[0] == namespace}
        for key in mine - seen:  # deleted while not watching
            if key not in self._referenced:
                self.state.put_secret(*key, None)
        self._tls = (self._tls - mine) | seen
        return str(version)

    async def _watch(self, namespace: str, version: str) -> str:
        query = f"watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={version}"
        try:
            async for event in kopf_api.stream(self._url(namespace, query), settings=self.settings,
                                               logger=retry_log):
                kind, body = event.get("type"), event.get("object") or {}
                meta = body.get("metadata") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise _Expired()
                    raise RuntimeError(body.get("message") or "watch error")
                version = meta.get("resourceVersion", version)
                if kind == "BOOKMARK":
                    continue
                key = (meta.get("namespace", ""), meta.get("name", ""))
                if kind == "DELETED":
                    self._tls.discard(key)
                    self.state.put_secret(*key, None)
                else:
                    self._tls.add(key)
                    self.state.put_secret(*key, kept_secret(body))
        except kopf_errors.APIError as exc:
            if exc.status == 410:
                raise _Expired() from None
            raise
        return version

    def referenced(self) -> set[tuple[str, str]]:
        """The Secrets the Routes and Backends name (as written), with their namespaces."""
        names: set[tuple[str, str]] = set()
        for key, obj in self.state.objects.items():
            spec = obj.spec if isinstance(obj.spec, dict) else {}
            found = spec.get("tls")
            tls: dict[str, Any] = found if isinstance(found, dict) else {}
            validation = tls.get("clientValidation")
            refs = [tls.get("certificateRef"), tls.get("caCertificateRef"), tls.get("clientCertificateRef"),
                    validation.get("caCertificateRef") if isinstance(validation, dict) else None]
            names.update((key.namespace, ref["name"]) for ref in refs
                         if isinstance(ref, dict) and isinstance(ref.get("name"), str) and not names_a_config_map(ref))
        return names

    async def _read_referenced(self) -> None:
        """GETs the referenced Secrets the TLS watch does not bring: when first referenced (the
        state's revision is checked every 0.2 s) and every `refresh` seconds."""
        client = KubeClient(self.settings)
        async for full in read_passes(self.state, self.refresh):
            wanted = {k for k in self.referenced() if k not in self._tls}
            for key in sorted(self._referenced - wanted):
                self._referenced.discard(key)
                if key not in self._tls:
                    self.state.put_secret(*key, None)
            for key in sorted(wanted if full else wanted - self._referenced):
                try:
                    body = await client.get("/api/v1", "secrets", *key)
                except Exception as exc:
                    log.debug("reading Secret %s/%s failed: %s", *key, exc)
                    continue
                self._referenced.add(key)
                if body is None or (body.get("type") == TLS_SECRET_TYPE):
                    # Gone, or a TLS one (the watch has it, or will).
                    if key not in self._tls:
                        self.state.put_secret(*key, None if body is None else kept_secret(body))
                    continue
                self.state.put_secret(*key, kept_secret(body))
