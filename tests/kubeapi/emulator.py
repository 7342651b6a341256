"""
The realism layer on top of ``kmock.KubernetesEmulator`` (kmock 0.8).

kmock does the HTTP server, the request parsing & routing, the reactions DSL for tests
(``emulator['get /version'] << {...}``), the request log, the discovery endpoints, the object
store with histories (``emulator.objects``) and the event buses for watch-streams.
This class only replaces kmock's naive object-mutating logic with a stricter one:

* uid / resourceVersion (a global monotonic counter, as strings) / creationTimestamp / generation
  (bumped on changes outside of ``metadata`` & ``status``) / ``metadata.generateName``;
* standard ``Status`` errors: 404 NotFound, 409 AlreadyExists & Conflict, 422 Invalid, 400 BadRequest;
* kind/apiVersion/resourceVersion on lists; label & field selectors on lists & watches;
* watch-streams that honour ``resourceVersion`` (replaying the changes since then) & ``timeoutSeconds``;
* the ``status`` subresource: writes to it change only the status, writes to the main resource
  ignore the status (for resources that declare the status subresource);
* merge / strategic-merge (approximated) / JSON / apply (approximated) patches, PUT replacements;
* deletion with finalizers (``deletionTimestamp``), namespace & CRD deletion cascades;
* CRDs become discoverable and served once created (their schemas are NOT validated here);
* the built-in resources are discoverable from kmock's bundled discovery data.

Unlike in kmock, the state changes in the fallback handlers, i.e. only if the request is not
intercepted by a user-defined reaction: ``emulator['patch', kmock.subresource('status')] << 500``
makes the API fail without side effects, as a failing API server would.
"""
import asyncio
import copy
import datetime
import hashlib
import json
import random
import re
import uuid
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import kmock
import yaml
from kmock._internal import parsing

from .patches import PatchError, json_patch, match_fields, match_labels, merge_patch, strategic_merge_patch

Resource = kmock.resource
Key = tuple[Resource, str | None, str]  # (storage resource, namespace or None, name)

CRDS = Resource('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')
NAMESPACES = Resource('', 'v1', 'namespaces')
ALL_VERBS = {'create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'}
INITIAL_NAMESPACES = ('default', 'kube-system', 'kube-public', 'kube-node-lease')
NOT_BUILTIN_GROUPS = {'gateway.networking.k8s.io', 'metrics.k8s.io'}  # CRDs & aggregated APIs in k3s
_STOP = object()  # a bus marker to end all watch-streams on shutdown


def _fix_kmock_parse_path() -> None:
    # kmock 0.8 fails on `/api/v1/namespaces` (ValueError) and parses `/api/v1/namespaces/x`
    # as "namespace x, no resource". Route the namespace paths properly, delegate the rest.
    original = parsing.parse_path
    if getattr(original, '_kubeapi_fixed', False):
        return

    def parse_path(path: str) -> parsing.ParsedPath:
        parts = path.strip('/').split('/')
        if parts[:3] == ['api', 'v1', 'namespaces'] and (
            len(parts) <= 4 or (len(parts) == 5 and parts[4] in ('status', 'finalize'))
        ):
            name = parts[3] if len(parts) > 3 else None
            sub = parts[4] if len(parts) > 4 else None
            return parsing.ParsedPath('', 'v1', 'namespaces', None, name, sub)
        return original(path)

    parse_path._kubeapi_fixed = True  # type: ignore[attr-defined]
    parsing.parse_path = parse_path


_fix_kmock_parse_path()


def _error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _version_priority(version: str) -> tuple[Any, ...]:
    # Kubernetes version priority: GA > beta > alpha, higher numbers first, odd names last.
    m = re.fullmatch(r'v(\d+)(?:(alpha|beta)(\d+))?', version)
    if m is None:
        return (3, 0, 0, version)
    stage = {None: 0, 'beta': 1, 'alpha': 2}[m[2]]
    return (stage, -int(m[1]), -int(m[3] or 0), version)


def api_version(res: Resource) -> str:
    return f'{res.group}/{res.version}' if res.group else str(res.version)


def _qualified(res: Resource) -> str:
    return f'{res.plural}.{res.group}' if res.group else str(res.plural)


def _spec_part(obj: Mapping[str, Any], ignored: set[str]) -> dict[str, Any]:
    return {key: val for key, val in obj.items() if key not in ignored}


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    server_version: str = '1.32.0'

    _rv: int = attrs.field(default=0, init=False)
    _log: dict[Resource, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=lambda: defaultdict(list), init=False)
    _storage: dict[Resource, Resource] = attrs.field(factory=dict, init=False)  # CRD version → storage version
    _crd_resources: dict[str, list[Resource]] = attrs.field(factory=dict, init=False)  # CRD name → served
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback['get', re.compile(r'/openapi/v3(/.*)?')] << self._serve_openapi_v3
        with warnings.catch_warnings():  # kmock 0.8 uses the deprecated importlib.resources.read_binary()
            warnings.simplefilter('ignore', DeprecationWarning)
            self.resources.load_bundled()
        for res in [res for res in self.resources if res.group in NOT_BUILTIN_GROUPS]:
            del self.resources[res]
        for name in INITIAL_NAMESPACES:
            self._store(self._key(NAMESPACES, None, name), self._new_object(
                NAMESPACES, self.resources[NAMESPACES], None, {'metadata': {'name': name}}))

    async def close_streams(self) -> None:
        """End all the watch-streams (e.g. before the server shuts down)."""
        self._closing = True
        for bus in list(self._buses.values()):
            await bus.put(_STOP)

    #
    # Public helpers for tests (synchronous, no HTTP).
    #
    def resolve(self, spec: str | Resource) -> Resource:
        """Turn ``'widgets'``, ``'v1/services'``, ``'widgets.v1.example.dev'``... into a served resource."""
        wanted = Resource(spec)
        candidates = [res for res in self.resources if wanted.check(res)]
        if not candidates:
            candidates = [res for res in self.resources
                          if self.resources[res].kind == wanted.plural or spec in self.resources[res].shortnames]
        groups = {res.group for res in candidates}
        if len(groups) != 1:
            raise LookupError(f"Resource {spec!r} is {'ambiguous' if candidates else 'unknown'}: {candidates}")
        return min(candidates, key=lambda res: _version_priority(res.version or ''))

    def live(self, spec: str | Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        res = self.resolve(spec)
        info = self.resources[res]
        return [self._present(raw, res) for raw in self._list(res, namespace if info.namespaced else None)]

    def read(self, spec: str | Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        res = self.resolve(spec)
        raw = self._get(self._key(res, namespace if self.resources[res].namespaced else None, name))
        return None if raw is None else self._present(raw, res)

    #
    # Storage internals. Always called under the lock; the stored dicts are never mutated in place.
    #
    def _key(self, res: Resource, namespace: str | None, name: str) -> Key:
        return (self._storage.get(res, res), namespace, name)

    def _get(self, key: Key) -> dict[str, Any] | None:
        obj = self._objects[key] if key in self._objects else None
        return None if obj is None or obj.deleted else copy.deepcopy(obj.raw)

    def _list(self, res: Resource, namespace: str | None) -> list[dict[str, Any]]:
        storage = self._storage.get(res, res)
        found = [((ns or '', name), obj) for (r, ns, name), obj in self._objects.items()
                 if r == storage and not obj.deleted and (namespace is None or ns == namespace)]
        return [copy.deepcopy(obj.raw) for _, obj in sorted(found, key=lambda pair: pair[0])]

    def _store(self, key: Key, raw: dict[str, Any] | None) -> None:
        if raw is None:
            self._objects[key].delete()
        elif key not in self._objects:
            self._objects[key] = raw
        else:
            self._objects[key].history.append(raw)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, key: Key, kind: str, raw: dict[str, Any]) -> None:
        event = {'type': kind, 'object': copy.deepcopy(raw)}
        self._log[key[0]].append((self._rv, event))
        await self._buses[key[0]].put(event)

    def _present(self, raw: dict[str, Any], res: Resource) -> dict[str, Any]:
        # The objects of CRDs with several versions are stored once; show them as requested.
        return dict(raw, apiVersion=api_version(res)) if res in self._storage else raw

    #
    # Request interpretation.
    #
    async def _handle(self, request: kmock.Request) -> Any:
        # Skip KubernetesEmulator._handle(): its naive state tracking is replaced by the fallbacks below.
        return await kmock.RawHandler._handle(self, request)

    def _target(self, request: kmock.Request, *, named: bool) -> tuple[Resource, kmock.ResourceInfo, Key | None]:
        res = request.resource
        if res is None or res.plural is None or res not in self.resources:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        info = self.resources[res]
        if request.subresource not in (None, 'status') or (request.subresource and 'status' not in info.subresources):
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        if not info.namespaced and request.namespace is not None:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        if not named:
            return res, info, None
        if request.name is None or (info.namespaced and request.namespace is None):
            raise _error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        return res, info, self._key(res, request.namespace, request.name)

    def _not_found(self, res: Resource, name: str) -> kmock.KubernetesError:
        return _error(404, 'NotFound', f'{_qualified(res)} "{name}" not found',
                      name=name, group=res.group, kind=res.plural)

    def _body(self, request: kmock.Request) -> Any:
        data = request.data
        if data is None and request.body:
            try:
                data = yaml.safe_load(request.body)  # apply-patch+yaml, or just sloppy clients
            except yaml.YAMLError:
                pass
        if not isinstance(data, (dict, list)):
            raise _error(400, 'BadRequest', 'the request body is not a valid JSON/YAML object')
        return copy.deepcopy(data)

    def _dry_run(self, request: kmock.Request) -> bool:
        return request.params.get('dryRun') == 'All'

    def _ignored_on_main(self, info: kmock.ResourceInfo) -> set[str]:
        return {'metadata', 'status'} if 'status' in info.subresources else {'metadata'}

    def _new_object(
            self, res: Resource, info: kmock.ResourceInfo, namespace: str | None, body: dict[str, Any],
    ) -> dict[str, Any]:
        meta = dict(body.get('metadata') or {})
        if not meta.get('name') and meta.get('generateName'):
            suffix = ''.join(random.choices('bcdfghjklmnpqrstvwxz2456789', k=5))
            meta['name'] = meta['generateName'] + suffix
        if not meta.get('name'):
            raise _error(422, 'Invalid', f'{info.kind} is invalid: metadata.name: Required value: '
                         'name or generateName is required', group=res.group, kind=info.kind)
        for field in ('deletionTimestamp', 'deletionGracePeriodSeconds', 'resourceVersion', 'managedFields'):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv())
        if namespace is not None:
            meta['namespace'] = namespace
        else:
            meta.pop('namespace', None)
        obj = {'apiVersion': api_version(res), 'kind': info.kind, 'metadata': meta}
        obj |= {key: val for key, val in body.items() if key not in obj}
        if 'status' in info.subresources:
            obj.pop('status', None)
        if res == NAMESPACES:
            meta.setdefault('labels', {})['kubernetes.io/metadata.name'] = meta['name']
            obj['spec'] = {'finalizers': ['kubernetes']}
            obj['status'] = {'phase': 'Active'}
        if res == CRDS:
            names = obj.get('spec', {}).get('names', {})
            obj['status'] = {
                'acceptedNames': names,
                'storedVersions': [v['name'] for v in obj.get('spec', {}).get('versions', []) if v.get('storage')],
                'conditions': [
                    {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts', 'lastTransitionTime': _now()},
                    {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                     'lastTransitionTime': _now()},
                ],
            }
        return obj

    #
    # The fallback handlers (used unless a request is intercepted by a user-defined reaction).
    #
    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        res, info, _ = self._target(request, named=False)
        async with self._lock:
            items = self._list(res, request.namespace)
            rv = str(self._rv)
        items = [self._present(obj, res) for obj in items if self._matches(request, obj)]
        return {'apiVersion': api_version(res), 'kind': f'{info.kind}List',
                'metadata': {'resourceVersion': rv}, 'items': items}

    def _matches(self, request: kmock.Request, obj: Mapping[str, Any]) -> bool:
        meta = obj.get('metadata', {})
        try:
            return bool(
                (request.namespace is None or meta.get('namespace') == request.namespace) and
                (request.name is None or meta.get('name') == request.name) and
                match_labels(request.params.get('labelSelector'), meta.get('labels') or {}) and
                match_fields(request.params.get('fieldSelector'), obj)
            )
        except ValueError as e:
            raise _error(400, 'BadRequest', str(e)) from e

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        res, info, _ = self._target(request, named=False)
        self._matches(request, {})  # validate the selectors before the stream starts
        since = request.params.get('resourceVersion') or '0'
        timeout = float(request.params.get('timeoutSeconds') or 0) or None
        storage = self._storage.get(res, res)
        bus = self._buses[storage]
        async with self._lock:
            marker = await bus.mark()
            if since == '0':  # "any": the synthetic additions of the current state, then the changes
                backlog = [{'type': 'ADDED', 'object': obj} for obj in self._list(res, request.namespace)]
            else:
                backlog = [event for rv, event in self._log[storage] if rv > int(since)]
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        stream = bus.stream(since=marker)
        try:
            yield b''  # send the headers now, even if there are no events yet
            for event in backlog:
                if self._matches(request, event['object']):
                    yield {'type': event['type'], 'object': self._present(event['object'], res)}
            while not self._closing:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    event = await asyncio.wait_for(anext(stream), remaining)
                except TimeoutError:
                    break
                if event is _STOP:
                    break
                if self._matches(request, event['object']):
                    yield {'type': event['type'], 'object': self._present(event['object'], res)}
        finally:
            await stream.aclose()
            await bus.unmark(marker)

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        res, info, key = self._target(request, named=True)
        async with self._lock:
            raw = self._get(key)
        if raw is None:
            raise self._not_found(res, key[2])
        return self._present(raw, res)

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        res, info, _ = self._target(request, named=False)
        if request.subresource is not None:
            raise _error(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
        body = self._body(request)
        if not isinstance(body, dict):
            raise _error(400, 'BadRequest', 'the request body must be an object')
        body_ns = (body.get('metadata') or {}).get('namespace')
        namespace = request.namespace or body_ns if info.namespaced else None
        if info.namespaced and request.namespace and body_ns and body_ns != request.namespace:
            raise _error(400, 'BadRequest', 'the namespace of the provided object does not match '
                         'the namespace sent on the request')
        if info.namespaced and not namespace:
            raise _error(400, 'BadRequest', 'the namespace is required for a namespaced resource')
        async with self._lock:
            obj = self._new_object(res, info, namespace, body)
            key = self._key(res, namespace, obj['metadata']['name'])
            if self._get(key) is not None:
                raise _error(409, 'AlreadyExists', f'{_qualified(res)} "{key[2]}" already exists',
                             name=key[2], group=res.group, kind=res.plural)
            if not self._dry_run(request):
                if res == CRDS:
                    self._register_crd(obj)
                self._store(key, obj)
                await self._emit(key, 'ADDED', obj)
        return kmock.Response(status=201, payload=self._present(obj, res))

    async def _serve_update(self, request: kmock.Request) -> dict[str, Any]:
        res, info, key = self._target(request, named=True)
        body = self._body(request)
        ctype = request.headers.get('Content-Type', '').split(';')[0].strip()
        async with self._lock:
            old = self._get(key)
            if old is None and ctype == 'application/apply-patch+yaml':  # server-side apply creates
                obj = self._new_object(res, info, request.namespace, merge_patch({'metadata': {'name': key[2]}}, body))
                if not self._dry_run(request):
                    self._store(key, obj)
                    await self._emit(key, 'ADDED', obj)
                return self._present(obj, res)
            if old is None:
                raise self._not_found(res, key[2])
            try:
                if ctype == 'application/json-patch+json' or isinstance(body, list):
                    new = json_patch(old, body)
                elif ctype == 'application/strategic-merge-patch+json':
                    new = strategic_merge_patch(old, body)
                else:  # merge-patch+json, apply-patch+yaml (approximated)
                    new = merge_patch(old, body)
            except PatchError as e:
                raise _error(422, 'Invalid', f'the server rejected our request due to an error in our request: {e}',
                             name=key[2], group=res.group, kind=res.plural) from e
            return await self._commit_update(request, res, info, key, old, new)

    async def _serve_replace(self, request: kmock.Request) -> dict[str, Any]:
        res, info, key = self._target(request, named=True)
        body = self._body(request)
        async with self._lock:
            old = self._get(key)
            if old is None:
                raise self._not_found(res, key[2])
            return await self._commit_update(request, res, info, key, old, body)

    async def _commit_update(
            self, request: kmock.Request, res: Resource, info: kmock.ResourceInfo,
            key: Key, old: dict[str, Any], new: Any,
    ) -> dict[str, Any]:
        if not isinstance(new, dict):
            raise _error(422, 'Invalid', 'the resulting object is not a JSON object', name=key[2])
        old_meta, new_meta = old['metadata'], dict(new.get('metadata') or {})
        if new_meta.get('resourceVersion') not in (None, old_meta['resourceVersion']):
            raise _error(409, 'Conflict', f'Operation cannot be fulfilled on {_qualified(res)} "{key[2]}": the object '
                         'has been modified; please apply your changes to the latest version and try again',
                         name=key[2], group=res.group, kind=res.plural)

        if request.subresource == 'status':  # only the status can change, nothing else
            new = dict(old, status=new.get('status'))
            if new['status'] is None:
                del new['status']
        else:
            if 'status' in info.subresources:  # the main resource ignores the status
                new = {k: v for k, v in new.items() if k != 'status'}
                if 'status' in old:
                    new['status'] = old['status']
            for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'resourceVersion',
                          'deletionTimestamp', 'deletionGracePeriodSeconds'):
                new_meta.pop(field, None)
                if field in old_meta:
                    new_meta[field] = old_meta[field]
            new = dict(new, apiVersion=old['apiVersion'], kind=old['kind'], metadata=new_meta)

        if new == old:  # no-op writes change nothing, not even the resourceVersion
            return self._present(old, res)
        ignored = self._ignored_on_main(info)
        if _spec_part(new, ignored) != _spec_part(old, ignored):
            new['metadata'] = dict(new['metadata'], generation=old_meta.get('generation', 0) + 1)
        new['metadata'] = dict(new['metadata'], resourceVersion=self._next_rv())
        released = bool(new['metadata'].get('deletionTimestamp')) and not new['metadata'].get('finalizers')
        if not self._dry_run(request):
            if res == CRDS:
                self._register_crd(new)
            self._store(key, new)
            await self._emit(key, 'MODIFIED', new)
            if released:
                await self._remove(key)
        return self._present(new, res)

    async def _serve_delete(self, request: kmock.Request) -> dict[str, Any]:
        res, info, key = self._target(request, named=True)
        async with self._lock:
            obj = self._get(key)
            if obj is None:
                raise self._not_found(res, key[2])
            if self._dry_run(request):
                return self._present(obj, res)
            return self._present(await self._delete(key), res)

    async def _delete(self, key: Key) -> dict[str, Any]:
        obj = self._get(key)
        assert obj is not None
        meta = obj['metadata']
        if meta.get('deletionTimestamp'):
            return obj  # already being deleted, waiting for the finalizers
        if meta.get('finalizers'):
            obj['metadata'] = dict(meta, deletionTimestamp=_now(), deletionGracePeriodSeconds=0,
                                   generation=meta.get('generation', 0) + 1, resourceVersion=self._next_rv())
            self._store(key, obj)
            await self._emit(key, 'MODIFIED', obj)
            return obj
        return await self._remove(key)

    async def _remove(self, key: Key) -> dict[str, Any]:
        obj = self._get(key)
        assert obj is not None
        obj['metadata'] = dict(obj['metadata'], resourceVersion=self._next_rv())
        self._objects[key].history[-1] = obj  # the last seen state, with the deletion's version
        self._store(key, None)
        await self._emit(key, 'DELETED', obj)

        # Cascades: a namespace takes its content with it, a CRD takes its custom resources.
        res, _, name = key
        if res == NAMESPACES:
            for other_key in [k for k in self._objects.keys() if k[1] == name and not self._objects[k].deleted]:
                await self._delete(other_key)
        if res == CRDS:
            served = self._crd_resources.pop(name, [])
            storages = {self._storage.pop(r, r) for r in served}
            for r in served:
                self.resources.pop(r, None)
            for other_key in [k for k in self._objects.keys() if k[0] in storages and not self._objects[k].deleted]:
                self._objects[other_key].delete()
                await self._emit(other_key, 'DELETED', self._objects[other_key].last.raw)
        return obj

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get('spec') or {}
        names = spec.get('names') or {}
        versions = [v for v in spec.get('versions') or [] if v.get('served', True)]
        if not spec.get('group') or not names.get('plural') or not names.get('kind') or not versions:
            raise _error(422, 'Invalid', 'CustomResourceDefinition is invalid: spec.group, spec.names.plural, '
                         'spec.names.kind & spec.versions are required', kind='CustomResourceDefinition')
        storage = next((v['name'] for v in versions if v.get('storage')), versions[0]['name'])
        for res in self._crd_resources.pop(crd['metadata']['name'], []):
            self.resources.pop(res, None)
            self._storage.pop(res, None)
        served = []
        for version in versions:
            res = Resource(spec['group'], version['name'], names['plural'])
            subresources = set((version.get('subresources') or spec.get('subresources') or {}).keys())
            self.resources[res] = kmock.ResourceInfo(
                kind=names['kind'], singular=names.get('singular') or names['kind'].lower(),
                namespaced=spec.get('scope', 'Namespaced') == 'Namespaced', verbs=ALL_VERBS,
                shortnames=names.get('shortNames') or [], categories=names.get('categories') or [],
                subresources=subresources,
            )
            self._storage[res] = Resource(spec['group'], storage, names['plural'])
            served.append(res)
        self._crd_resources[crd['metadata']['name']] = served

    #
    # Discovery: deterministic preferred versions, declared resources only, a configurable version.
    #
    def _get_resources(self) -> list[Resource]:
        return list(self.resources)

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = defaultdict(set)
        for res in self.resources:
            if res.group and res.version:
                groups[res.group].add(res.version)
        return {group: sorted(versions, key=_version_priority) for group, versions in sorted(groups.items())}

    def _api_group(self, group: str, versions: list[str]) -> dict[str, Any]:
        gvs = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': gvs, 'preferredVersion': gvs[0]}

    async def _serve_apis(self, request: kmock.Request) -> dict[str, Any]:
        groups = [self._api_group(g, vs) for g, vs in self._group_versions().items()]
        return {'apiVersion': 'v1', 'kind': 'APIGroupList', 'groups': groups}

    async def _serve_group(self, request: kmock.Request) -> dict[str, Any]:
        versions = self._group_versions().get(request.resource.group if request.resource else '')
        if not versions:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        return {'apiVersion': 'v1', 'kind': 'APIGroup', **self._api_group(request.resource.group, versions)}

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        # kmock gives the subresources the shortnames of their parents, which confuses kubectl.
        group, version = (request.resource.group, request.resource.version) if request.resource else ('', '')
        served = [res for res in self.resources if res.group == group and res.version == version]
        if not served and group:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        entries: list[dict[str, Any]] = []
        for res in sorted(served, key=lambda r: r.plural or ''):
            info = self.resources[res]
            entries.append({
                'name': res.plural, 'singularName': info.singular or '', 'namespaced': bool(info.namespaced),
                'kind': info.kind, 'verbs': sorted(info.verbs), 'shortNames': sorted(info.shortnames),
                'categories': sorted(info.categories),
            })
            entries += [{'name': f'{res.plural}/{sub}', 'singularName': '', 'namespaced': bool(info.namespaced),
                         'kind': info.kind, 'verbs': ['get', 'patch', 'update']}
                        for sub in sorted(info.subresources) if sub == 'status']
        group_version = f'{group}/{version}' if group else version
        return {'apiVersion': 'v1', 'kind': 'APIResourceList', 'groupVersion': group_version, 'resources': entries}

    async def _serve_openapi_v3(self, request: kmock.Request) -> dict[str, Any]:
        # Just enough of OpenAPI v3 for kubectl's field validation to be delegated to the server
        # (which ignores it): the PATCH operations of every resource accept ?fieldValidation=…
        title = {'title': 'Kubernetes', 'version': f'v{self.server_version}'}
        docs: dict[str, dict[str, Any]] = defaultdict(lambda: {'openapi': '3.0.0', 'info': title, 'paths': {}})
        for res in self.resources:
            info = self.resources[res]
            prefix = f'apis/{res.group}/{res.version}' if res.group else f'api/{res.version}'
            scope = '/namespaces/{namespace}' if info.namespaced else ''
            docs[prefix]['paths'][f'/{prefix}{scope}/{res.plural}/{{name}}'] = {'patch': {
                'x-kubernetes-group-version-kind': {'group': res.group, 'version': res.version, 'kind': info.kind},
                'parameters': [{'name': 'fieldValidation', 'in': 'query', 'schema': {'type': 'string'}}],
                'responses': {'200': {'description': 'OK'}},
            }}
        path = request.url.path.removeprefix('/openapi/v3').strip('/')
        if not path:
            hashes = {prefix: hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()
                      for prefix, doc in docs.items()}  # new URLs on changes: kubectl caches the documents
            return {'paths': {prefix: {'serverRelativeURL': f'/openapi/v3/{prefix}?hash={hashes[prefix]}'}
                              for prefix in sorted(docs)}}
        if path not in docs:
            raise _error(404, 'NotFound', 'the server could not find the requested resource')
        return docs[path]

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, Any]:
        major, minor, *_ = self.server_version.split('.')
        return {'major': major, 'minor': minor, 'gitVersion': f'v{self.server_version}', 'gitCommit': 'kmock',
                'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z', 'goVersion': 'go1.23',
                'compiler': 'gc', 'platform': 'linux/amd64'}
