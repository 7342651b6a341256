"""The state store: every input the build needs, fed by the sources, read by the controller.

Sources (file watcher, Kubernetes handlers) only put and delete here; they never build.
Each change bumps `revision` (the Secret reader polls it) and calls the listeners, which schedule a (debounced) rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.objects import ObjectKey, UserObject
from .findings import Finding

NamespacedName = tuple[str, str]


class StateStore:
    def __init__(self) -> None:
        self.objects: dict[ObjectKey, UserObject] = {}
        # Raw Kubernetes Service and EndpointSlice manifests, as the API returns them.
        self.services: dict[NamespacedName, dict[str, Any]] = {}
        self.endpoint_slices: dict[NamespacedName, dict[str, Any]] = {}
        # Secrets as sources/kubernetes.trimmed_secret keeps them: {"type": ..., "data": {key: bytes}}.
        self.secrets: dict[NamespacedName, dict[str, Any]] = {}
        # ConfigMaps with a CA bundle, as sources/kubernetes.trimmed_config_map keeps them: {"data": {"ca.crt": bytes}}.
        self.config_maps: dict[NamespacedName, dict[str, Any]] = {}
        # What each source could not load (a broken file...), for /status and /metrics.
        self.problems: dict[str, tuple[Finding, ...]] = {}
        self.revision = 0
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.revision += 1
        for listener in self._listeners:
            listener()

    # -- Routes and Backends ---------------------------------------------------------------

    def put(self, obj: UserObject) -> None:
        if self.objects.get(obj.key) != obj:
            self.objects[obj.key] = obj
            self._changed()

    def delete(self, key: ObjectKey) -> None:
        if self.objects.pop(key, None) is not None:
            self._changed()

    def set_problems(self, source: str, problems: tuple[Finding, ...]) -> None:
        """No rebuild: there is nothing to build from them."""
        self.problems[source] = problems

    # -- Services, EndpointSlices, Secrets and ConfigMaps ------------------------------------------------

    def put_service(self, namespace: str, name: str, manifest: dict[str, Any] | None) -> None:
        self._put_raw(self.services, (namespace, name), manifest)

    def put_endpoint_slice(self, namespace: str, name: str, manifest: dict[str, Any] | None) -> None:
        self._put_raw(self.endpoint_slices, (namespace, name), manifest)

    def put_secret(self, namespace: str, name: str, manifest: dict[str, Any] | None) -> None:
        self._put_raw(self.secrets, (namespace, name), manifest)

    def put_config_map(self, namespace: str, name: str, manifest: dict[str, Any] | None) -> None:
        self._put_raw(self.config_maps, (namespace, name), manifest)

    def _put_raw(self, table: dict[NamespacedName, dict[str, Any]], key: NamespacedName, manifest: dict[str, Any] | None) -> None:
        if manifest is None:
            if table.pop(key, None) is not None:
                self._changed()
        elif table.get(key) != manifest:
            table[key] = manifest
            self._changed()
