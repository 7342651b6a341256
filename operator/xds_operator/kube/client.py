"""A minimal Kubernetes API client for what kopf does not do for us outside handlers:
status patches and Events. It logs in exactly as kopf did (the same ConnectionInfo)."""

from __future__ import annotations

import datetime
import logging

import aiohttp
import kopf

log = logging.getLogger(__name__)


class KubeClient:
    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),  # bearer token or basic auth, as kopf sends them
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._session.close()

    async def patch_status(self, group_version: str, plural: str, namespace: str, name: str, status: dict) -> bool:
        """Merge-patches `status` through the status subresource; False if the object is gone."""
        url = f"{self.server}/apis/{group_version}/namespaces/{namespace}/{plural}/{name}/status"
        async with self._session.patch(url, json={"status": status},
                                       headers={"Content-Type": "application/merge-patch+json"}) as response:
            if response.status == 404:
                return False
            if response.status >= 400:
                raise RuntimeError(f"PATCH {url}: {response.status} {await response.text()}")
            return True

    async def post_event(self, *, api_version: str, kind: str, namespace: str, name: str, uid: str,
                         type_: str, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "namespace": namespace, "name": name,
                               "uid": uid},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "xds-operator"},
            "reportingComponent": "xds-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        url = f"{self.server}/api/v1/namespaces/{namespace}/events"
        async with self._session.post(url, json=body) as response:
            if response.status >= 400:
                log.warning("could not post event for %s/%s: %s %s", namespace, name, response.status,
                            await response.text())
