"""The build step: validated objects -> per-object IR pieces and status conditions.

The Builder remembers the last valid spec of every object, so that an invalid edit keeps
serving the previous good version (and says so in the status) instead of dropping traffic.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, is_not
from typing import Any

from ..api import model
from ..api.conditions import ACCEPTED, RESOLVED_REFS, Condition
from ..api.fields import FieldError
from ..api.objects import ObjectKey, UserObject, joined
from ..api.validation import validate
from ..sources.state import StateStore
from .certificates import Recheck, covers, now_utc
from .conflicts import conflicted, tls_hostname_conflicts, without_hostnames
from .ir import (
    ClusterIR,
    DownstreamTlsIR,
    Endpoint,
    ProxyConfigIR,
    RouteEntryIR,
    SecretIR,
    UpstreamTlsIR,
    VirtualHostIR,
    cluster_name,
    route_entry_name,
)
from .proxy_config import GroupConfig, full_config, updated_config
from .redirects import HttpsRedirectIR, https_redirect, ownership, redirect_conflicts, with_conflicts
from .secrets import UnusableSecret, ca_config_map, ca_secret, tls_secret
from .services import SlicesByService, UnresolvedService, resolve_service, slices_by_service

log = logging.getLogger(__name__)

_PATH_RANK = {"Exact": 0, "Prefix": 1, "RegularExpression": 2}
_ACCEPTED = Condition(ACCEPTED, True, "Accepted", "spec is valid")  # one, shared by every valid object


@dataclass(frozen=True, slots=True)
class BuiltRoute:
    """A Route ready to be placed on proxies: its targets and resolved route entries."""

    key: ObjectKey
    port: int
    hostnames: tuple[str, ...]
    proxies: tuple[str, ...]
    entries: tuple[RouteEntryIR, ...]
    tls: DownstreamTlsIR | None = None
    secrets: tuple[SecretIR, ...] = ()
    # A TLS Route whose Secrets cannot be used: its hostnames are left out, on every chain.
    left_out: bool = False
    https_redirect: HttpsRedirectIR | None = None  # spec.tls.httpRedirect

    def applies_to(self, group: str) -> bool:
        return not self.left_out and (not self.proxies or group in self.proxies)


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    generation: int
    conditions: tuple[Condition, ...]
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[str, ...] = ()  # "field.path: message", also in the ResolvedRefs message

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass
class BuildResult:
    routes: tuple[BuiltRoute, ...] = ()
    clusters: dict[str, ClusterIR] = field(default_factory=dict)
    statuses: dict[ObjectKey, ObjectStatus] = field(default_factory=dict)
    routes_by_key: dict[ObjectKey, BuiltRoute] = field(default_factory=dict)
    secrets: dict[str, SecretIR] = field(default_factory=dict)  # of the clusters, by SDS name
    # The earliest instant at which a certificate check of this build may come out otherwise (one
    # becomes valid, expires or comes within 14 days of expiry): build again then, though nothing changed.
    recheck_at: datetime.datetime | None = None

    # Virtual hosts by hostname and route entries, made by config_for of this build and of the one
    # before: an unchanged virtual host is the very same object, so its translation is reused.
    virtual_hosts: dict[tuple[object, ...], tuple[list[RouteEntryIR], VirtualHostIR]] = field(
        default_factory=dict, compare=False, repr=False)
    earlier_virtual_hosts: dict[tuple[object, ...], tuple[list[RouteEntryIR], VirtualHostIR]] = field(
        default_factory=dict, compare=False, repr=False)

    # Set by an incremental build: the Routes it made again, the previous build's Routes and
    # group configs (to update those instead of making them whole), and whether a Backend changed.
    changed_routes: tuple[ObjectKey, ...] | None = field(default=None, compare=False, repr=False)
    earlier_routes: dict[ObjectKey, BuiltRoute] = field(default_factory=dict, compare=False, repr=False)
    earlier_configs: dict[str, GroupConfig] = field(default_factory=dict, compare=False, repr=False)
    clusters_changed: bool = field(default=False, compare=False, repr=False)
    configs: dict[str, GroupConfig] = field(default_factory=dict, compare=False, repr=False)

    def config_for(self, group: str) -> ProxyConfigIR:
        """What proxies whose node.cluster is `group` should run (made once per group)."""
        made = self.configs.get(group)
        if made is None:
            base = self.earlier_configs.get(group) if self.changed_routes is not None else None
            if base is not None:
                made = updated_config(base, group, self.changed_routes or (), self.earlier_routes,
                                      self.routes_by_key, self.clusters if self.clusters_changed else None,
                                      self.secrets, self._virtual_host)
            if made is None:
                made = full_config(self.routes, group, self.clusters, self.secrets, self._virtual_host)
            self.configs[group] = made
        return made.config

    def _virtual_host(self, host: str, entries: list[RouteEntryIR]) -> VirtualHostIR:
        key = (host, *map(id, entries))
        hit = self.virtual_hosts.get(key) or self.earlier_virtual_hosts.get(key)
        if hit is None or not all(a is b for a, b in zip(hit[0], entries, strict=False)):
            hit = (entries, VirtualHostIR(name=host, domains=(host,), routes=tuple(sorted(entries, key=_precedence))))
        self.virtual_hosts[key] = hit
        return hit[1]


# What validating one object gave: the spec to serve (None: nothing valid yet), Accepted, the errors.
_Validated = tuple[model.RouteSpec | model.BackendSpec | None, Condition, tuple[FieldError, ...]]


@dataclass(frozen=True, slots=True)
class _ClusterMemo:
    spec: model.BackendSpec
    obj: UserObject
    cluster: ClusterIR | None  # None: its TLS Secrets cannot be used
    secrets: tuple[SecretIR, ...]
    status: ObjectStatus
    recheck_at: datetime.datetime | None = None  # when its certificates' checks may come out otherwise


@dataclass(frozen=True, slots=True)
class _RouteMemo:
    spec: model.RouteSpec
    obj: UserObject
    referenced: tuple[str, ...]  # cluster names, in the order of `present`
    present: tuple[bool, ...]
    secrets: tuple[object, ...]  # the contents of the Secrets its TLS references
    route: BuiltRoute
    status: ObjectStatus
    recheck_at: datetime.datetime | None = None  # when its certificates' checks may come out otherwise


def _precedence(entry: RouteEntryIR) -> tuple[int, int, int, str, str]:
    """Exact paths first, then longer prefixes, then regexes; more specific matches before
    less specific ones on the same path; ties broken by namespace/name, then rule order.
    (Rule and match order need no key: sorted() is stable, and a Route's entries are listed
    in that order.)"""
    m = entry.match
    if m.path.type == "RegularExpression":
        path_len = 0
    else:  # the length Envoy matches on: the translator drops a Prefix's trailing slashes
        path_len = -len(m.path.value.rstrip("/") if m.path.type == "Prefix" else m.path.value)
    specificity = -(len(m.headers) + len(m.query_params) + (1 if m.method else 0))
    return _PATH_RANK[m.path.type], path_len, specificity, entry.source.namespace, entry.source.name


class Builder:
    """Builds incrementally: what did not change since the last build is reused, not redone, so
    a one-object change at 10,000 objects costs a pass of identity checks, not a rebuild."""

    def __init__(self) -> None:
        self._last_valid: dict[ObjectKey, tuple[int, model.RouteSpec | model.BackendSpec]] = {}
        # Validation of objects that did not change since the last build is reused: a source
        # hands over the same UserObject until the object changes.
        self._validated_memo: dict[ObjectKey, tuple[UserObject, _Validated]] = {}
        # Likewise a Route's IR, as long as its spec and the existence of what it references hold,
        # and a static Backend's; each with the object's status, reused while the object is.
        self._route_memo: dict[ObjectKey, _RouteMemo] = {}
        self._cluster_memo: dict[ObjectKey, _ClusterMemo] = {}
        # The objects' keys in order, sorted again only when the set of keys changes.
        self._keys: frozenset[ObjectKey] = frozenset()
        self._sorted_keys: list[ObjectKey] = []
        # What the last build was made from, for the next one to tell what changed.
        self._previous: BuildResult | None = None
        self._objects: dict[ObjectKey, UserObject] = {}
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._slices: dict[tuple[str, str], dict[str, Any]] = {}
        self._secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        # The objects whose spec (as served) has TLS, and when each one's certificates are due a check.
        self._tls_keys: set[ObjectKey] = set()
        self._rechecks: dict[ObjectKey, datetime.datetime] = {}
        self._virtual_hosts: dict[tuple[object, ...], tuple[list[RouteEntryIR], VirtualHostIR]] = {}
        self._redirecting = False  # the last full build had a TLS Route with an HTTP to HTTPS redirect

    def build(self, state: StateStore) -> BuildResult:
        result = BuildResult(earlier_virtual_hosts=self._virtual_hosts)
        self._virtual_hosts = result.virtual_hosts  # filled by config_for, read by the next build
        if not self._incremental(state, result):
            self._full(state, result)
        self._previous = result
        self._objects = dict(state.objects)
        self._services = dict(state.services)
        self._slices = dict(state.endpoint_slices)
        self._secrets = dict(state.secrets)
        self._config_maps = dict(state.config_maps)
        return result

    def _incremental(self, state: StateStore, result: BuildResult) -> bool:
        """Redoes only the objects that changed since the last build (and those whose Secrets or
        ConfigMaps changed), into `result`; False (and `result` untouched) when the change is not
        one it handles: objects added or deleted, Services or EndpointSlices changed, an object's
        spec appearing or going, a Backend's cluster appearing or going (its TLS Secrets usable or
        not), or a certificate's time having come (BuildResult.recheck_at)."""
        previous = self._previous
        objects = state.objects
        before = self._objects
        if previous is None or state.services != self._services or state.endpoint_slices != self._slices:
            return False
        now = now_utc()
        if previous.recheck_at is not None and now >= previous.recheck_at:
            return False  # a certificate's time has come: check them again
        # The same keys in the same order (the usual case) compare by identity, without hashing,
        # and then the objects pairwise, in C.
        if list(objects) == list(before):
            changed = list(compress(objects, map(is_not, objects.values(), before.values())))
        elif objects.keys() == before.keys():
            changed = [key for key, obj in objects.items() if before[key] is not obj]
        else:
            return False
        earlier_specs = {}
        for key in changed:
            obj = objects[key]
            earlier_spec = earlier_specs[key] = self._validated_memo[key][1][0]
            outcome = self._validated(obj)
            self._validated_memo[key] = (obj, outcome)  # so that a full build reuses it
            if (outcome[0] is None) != (earlier_spec is None):
                return False
        # Unchanged objects whose Secrets or ConfigMaps changed are made again too.
        sources = _changed_sources(state.secrets, self._secrets, "Secret") | _changed_sources(
            state.config_maps, self._config_maps, "ConfigMap")
        if sources:
            redo = set(changed)
            for key in self._tls_keys - redo:
                spec = self._validated_memo[key][1][0]
                if spec is not None and _tls_sources(key, spec) & sources:
                    changed.append(key)
                    earlier_specs[key] = spec
        # The clusters first, checked: one that appears or goes changes the Routes that send to it.
        made_clusters = {}
        for key in changed:
            spec = self._validated_memo[key][1][0]
            if isinstance(spec, model.BackendSpec):
                slices = {} if spec.service is None else slices_by_service(state)
                recheck = Recheck(now)
                made = _cluster(state, slices, key, spec, recheck)
                if made[0] is None or self._cluster_memo[key].cluster is None:
                    return False
                made_clusters[key] = (made, recheck.at)
        clusters = dict(previous.clusters)
        statuses = dict(previous.statuses)
        routes_by_key = dict(previous.routes_by_key)
        changed_routes = []
        tls_routes_changed = tls_backends_changed = False
        for key in changed:
            obj = objects[key]
            validated = self._validated_memo[key][1]
            spec = validated[0]
            had_tls = getattr(earlier_specs[key], "tls", None) is not None
            has_tls = getattr(spec, "tls", None) is not None
            if has_tls:
                self._tls_keys.add(key)
            else:
                self._tls_keys.discard(key)
            if spec is None:
                statuses[key] = self._status(obj, validated, None)
            elif isinstance(spec, model.BackendSpec):
                (cluster, refs, secrets, warnings), recheck_at = made_clusters[key]
                assert cluster is not None  # (checked above)
                entry = self._cluster_memo[key] = _ClusterMemo(spec, obj, cluster, secrets,
                                                               self._status(obj, validated, refs, warnings),
                                                               recheck_at)
                clusters[cluster.name] = cluster
                statuses[key] = entry.status
                result.clusters_changed = True
                tls_backends_changed |= had_tls or has_tls
                self._noted_recheck(key, recheck_at)
            else:
                # What a Route references exists as before: no spec appeared or went.
                recheck = Recheck(now)
                route, refs, warnings = _route(state, key, spec, clusters, recheck)
                earlier_route = previous.routes_by_key.get(key)
                if (route.https_redirect is not None
                        or (earlier_route is not None and earlier_route.https_redirect is not None)
                        or (self._redirecting and ownership(route) != ownership(earlier_route))):
                    return False  # the redirects' Conflicted conditions are made again, whole
                referenced = _referenced_clusters(key, spec)
                present = tuple(name in clusters for name in referenced)
                self._route_memo[key] = _RouteMemo(spec, obj, referenced, present,
                                                   _referenced_secrets(state, key, spec), route,
                                                   self._status(obj, validated, refs, warnings), recheck.at)
                routes_by_key[key] = route
                statuses[key] = self._route_memo[key].status
                changed_routes.append(key)
                tls_routes_changed |= had_tls or has_tls
                self._noted_recheck(key, recheck.at)
        if tls_routes_changed:  # which TLS Route has which SNI hostname may have changed
            tls_keys = sorted((k for k in self._tls_keys if k.kind == "Route" and k in self._route_memo),
                              key=ObjectKey.sort_key)
            redone = set(changed_routes)
            for _, route, status in self._resolve_conflicts([self._route_memo[k].route for k in tls_keys],
                                                            {k: self._route_memo[k].status for k in tls_keys},
                                                            previous.statuses):
                key = route.key
                if routes_by_key.get(key) is not route and key in routes_by_key:
                    routes_by_key[key] = route
                    if key not in redone:
                        changed_routes.append(key)
                statuses[key] = status
        result.clusters, result.statuses, result.routes_by_key = clusters, statuses, routes_by_key
        if tls_backends_changed:
            result.secrets = {s.name: s for m in self._cluster_memo.values() if m.cluster is not None
                              for s in m.secrets}
        else:
            result.secrets = previous.secrets
        result.recheck_at = min(self._rechecks.values(), default=None)
        if changed_routes:
            result.routes = tuple(map(routes_by_key.__getitem__, map(attrgetter("key"), previous.routes)))
        else:
            result.routes = previous.routes
        result.changed_routes = tuple(changed_routes)
        result.earlier_routes = previous.routes_by_key
        result.earlier_configs = previous.configs
        return True

    def _noted_recheck(self, key: ObjectKey, at: datetime.datetime | None) -> None:
        if at is None:
            self._rechecks.pop(key, None)
        else:
            self._rechecks[key] = at

    @staticmethod
    def _resolve_conflicts(routes: list[BuiltRoute], statuses: dict[ObjectKey, ObjectStatus],
                           earlier: dict[ObjectKey, ObjectStatus]) -> list[tuple[int, BuiltRoute, ObjectStatus]]:
        """Every TLS Route of `routes` (in key order), by index, as served and with its status:
        those that list a TLS hostname another Route has with other settings lose it
        (ir/conflicts.py)."""
        conflicts = tls_hostname_conflicts(routes)
        out = []
        for index, route in enumerate(routes):
            if route.tls is None:
                continue
            status = statuses[route.key]
            found = conflicts.get(index)
            if found is not None:
                route = without_hostnames(route, found[1])
                status = conflicted(status, found[1])
                if earlier.get(route.key) != status:  # logged when it appears or changes, not every build
                    log.error("%s: %s", route.key, "; ".join(c.message for c in status.conditions
                                                             if c.type == ACCEPTED))
            out.append((index, route, status))
        return out

    def _full(self, state: StateStore, result: BuildResult) -> None:
        objects = state.objects
        if objects.keys() != self._keys:
            self._keys = frozenset(objects)
            self._sorted_keys = sorted(objects, key=ObjectKey.sort_key)
            self._last_valid = {k: v for k, v in self._last_valid.items() if k in objects}
        specs: dict[ObjectKey, model.RouteSpec | model.BackendSpec] = {}
        validated_memo: dict[ObjectKey, tuple[UserObject, _Validated]] = {}
        previous_validated = self._validated_memo
        for key in self._sorted_keys:
            obj = objects[key]
            previous = previous_validated.get(key)
            outcome = previous[1] if previous is not None and previous[0] is obj else self._validated(obj)
            validated_memo[key] = (obj, outcome)
            if outcome[0] is not None:
                specs[key] = outcome[0]
        self._validated_memo = validated_memo

        slices = slices_by_service(state) if state.endpoint_slices else {}
        now = now_utc()
        rechecks: dict[ObjectKey, datetime.datetime] = {}
        tls_keys: set[ObjectKey] = set()
        cluster_memo: dict[ObjectKey, _ClusterMemo] = {}
        previous_clusters = self._cluster_memo
        statuses = result.statuses
        for key, spec in specs.items():
            if isinstance(spec, model.BackendSpec):
                obj = objects[key]
                hit = previous_clusters.get(key)
                if (spec.service is None and spec.tls is None and hit is not None and hit.spec is spec
                        and hit.obj is obj):
                    entry = hit  # static endpoints or DNS: depends on the spec alone
                else:
                    recheck = Recheck(now)
                    cluster, refs, secrets, warnings = _cluster(state, slices, key, spec, recheck)
                    entry = _ClusterMemo(spec, obj, cluster, secrets,
                                         self._status(obj, validated_memo[key][1], refs, warnings), recheck.at)
                if spec.tls is not None:
                    tls_keys.add(key)
                    if entry.recheck_at is not None:
                        rechecks[key] = entry.recheck_at
                cluster_memo[key] = entry
                if entry.cluster is not None:
                    result.clusters[entry.cluster.name] = entry.cluster
                    result.secrets.update((s.name, s) for s in entry.secrets)
                statuses[key] = entry.status
        routes = []
        route_memo: dict[ObjectKey, _RouteMemo] = {}
        previous_routes = self._route_memo
        clusters = result.clusters
        for key, spec in specs.items():
            if isinstance(spec, model.RouteSpec):
                obj = objects[key]
                route_hit = previous_routes.get(key)
                same_spec = route_hit is not None and route_hit.spec is spec
                referenced = route_hit.referenced if route_hit is not None and same_spec else _referenced_clusters(
                    key, spec)
                present = tuple(name in clusters for name in referenced)
                secret_contents = _referenced_secrets(state, key, spec)
                if (route_hit is not None and same_spec and route_hit.present == present and route_hit.obj is obj
                        and route_hit.secrets == secret_contents
                        and (route_hit.recheck_at is None or now < route_hit.recheck_at)):
                    route_entry = route_hit
                else:
                    recheck = Recheck(now)
                    route, refs, warnings = _route(state, key, spec, clusters, recheck)
                    route_entry = _RouteMemo(spec, obj, referenced, present, secret_contents, route,
                                             self._status(obj, validated_memo[key][1], refs, warnings), recheck.at)
                if spec.tls is not None:
                    tls_keys.add(key)
                    if route_entry.recheck_at is not None:
                        rechecks[key] = route_entry.recheck_at
                route_memo[key] = route_entry
                routes.append(route_entry.route)
                statuses[key] = route_entry.status
        self._route_memo = route_memo
        self._cluster_memo = cluster_memo
        earlier_statuses = self._previous.statuses if self._previous is not None else {}
        for index, route, status in self._resolve_conflicts(routes, statuses, earlier_statuses):
            routes[index] = route
            statuses[route.key] = status
        # (After the TLS hostname conflicts: a redirect follows the hostnames its Route kept.)
        conflicts = redirect_conflicts(routes)
        statuses.update(with_conflicts(statuses, conflicts))
        self._redirecting = bool(conflicts)
        result.routes = tuple(routes)
        result.routes_by_key = {r.key: r for r in routes}
        self._tls_keys, self._rechecks = tls_keys, rechecks
        result.recheck_at = min(rechecks.values(), default=None)
        if len(specs) < len(objects):
            for key in objects.keys() - specs.keys():
                statuses[key] = self._status(objects[key], validated_memo[key][1], None)

    @staticmethod
    def _status(obj: UserObject, validated: _Validated, refs: Condition | None,
                warnings: tuple[str, ...] = ()) -> ObjectStatus:
        _, accepted, errors = validated
        conditions = (accepted,) if refs is None else (accepted, refs)
        return ObjectStatus(obj.generation, conditions, errors, warnings)

    def _validated(self, obj: UserObject) -> _Validated:
        spec, errors = validate(obj)
        if spec is not None:
            self._last_valid[obj.key] = (obj.generation, spec)
            return spec, _ACCEPTED, ()
        message = "; ".join(map(str, errors))
        log.error("%s rejected (%s): %s", obj.key, obj.origin or "no origin", message)
        last = self._last_valid.get(obj.key)
        if last is not None:
            message += f" (still serving the last valid generation {last[0]})"
            return last[1], Condition(ACCEPTED, False, "Invalid", message), tuple(errors)
        return None, Condition(ACCEPTED, False, "Invalid", message), tuple(errors)



def _resolved(warnings: list[str]) -> Condition:
    message = "all references resolved"
    if warnings:
        message += "; warning: " + "; warning: ".join(warnings)
    return Condition(RESOLVED_REFS, True, "ResolvedRefs", message)


def _invalid_certificate(problems: list[str]) -> Condition:
    return Condition(RESOLVED_REFS, False, "InvalidCertificateRef", "; ".join(problems))


def _upstream_tls(state: StateStore, key: ObjectKey, spec: model.BackendSpec, recheck: Recheck,
                  problems: list[str], warnings: list[str]) -> tuple[UpstreamTlsIR | None, list[SecretIR]]:
    tls = spec.tls
    if tls is None:
        return None, []
    secrets = []
    names: dict[str, str | None] = {"ca": None, "client": None}
    ca_ref = tls.ca_certificate_ref
    for what, ref, path in (("ca", ca_ref.name if ca_ref is not None else None, "spec.tls.caCertificateRef"),
                            ("client", tls.client_certificate_ref, "spec.tls.clientCertificateRef")):
        if ref is None:
            continue
        try:
            if what == "ca":
                read_ca = ca_config_map if ca_ref is not None and ca_ref.kind == "ConfigMap" else ca_secret
                secret, found = read_ca(state, key.namespace, ref, recheck)
            else:
                secret, _, found = tls_secret(state, key.namespace, ref, recheck)
        except UnusableSecret as exc:
            problems.append(f"{path}: {exc}")
            continue
        warnings.extend(f"{path}: {w}" for w in found)
        secrets.append(secret)
        names[what] = secret.name
    sni = tls.sni or (spec.dns.hostname if spec.dns is not None else None)
    alpn = ("h2",) if spec.protocol == "HTTP2" else ("http/1.1",)
    return UpstreamTlsIR(sni, names["ca"], names["client"], tls.subject_alt_names, alpn), secrets


def _cluster(state: StateStore, slices: SlicesByService, key: ObjectKey, spec: model.BackendSpec,
             recheck: Recheck) -> tuple[ClusterIR | None, Condition, tuple[SecretIR, ...], tuple[str, ...]]:
    """The cluster (None when its TLS Secrets cannot be used), ResolvedRefs, secrets, warnings."""
    problems: list[str] = []
    warnings: list[str] = []
    tls, secrets = _upstream_tls(state, key, spec, recheck, problems, warnings)
    if problems:
        return None, _invalid_certificate(problems), (), ()
    for warning in warnings:
        log.warning("%s: %s", key, warning)
    refs = _resolved(warnings)
    endpoints: tuple[Endpoint, ...] = ()
    if spec.service is not None:
        try:
            endpoints = resolve_service(state, slices, key.namespace, spec.service)
        except UnresolvedService as exc:
            # The cluster is still served, empty: routes to it answer 503 until the Service appears.
            refs = Condition(RESOLVED_REFS, False, "ServiceNotFound", str(exc))
    else:
        endpoints = tuple(Endpoint(e.address, e.port) for e in spec.endpoints)
    cluster = ClusterIR(
        name=cluster_name(key),
        source=key,
        discovery="STRICT_DNS" if spec.dns else "EDS",
        protocol=spec.protocol,
        load_balancer=spec.load_balancer,
        connect_timeout_ms=spec.connect_timeout_ms,
        endpoints=endpoints,
        dns=spec.dns,
        health_check=spec.health_check,
        circuit_breaker=spec.circuit_breaker,
        outlier_detection=spec.outlier_detection,
        tls=tls,
    )
    return cluster, refs, tuple(secrets), tuple(warnings)


def _referenced_clusters(key: ObjectKey, spec: model.RouteSpec) -> tuple[str, ...]:
    names: list[str] = []
    for rule in spec.rules:
        names.extend(b.name for b in rule.backends)
        if rule.mirror is not None:
            names.append(rule.mirror.backend)
    return tuple(cluster_name(ObjectKey("Backend", key.namespace, n)) for n in names)


def _changed_sources(now: dict[tuple[str, str], dict[str, Any]], before: dict[tuple[str, str], dict[str, Any]],
                     kind: str) -> set[tuple[str, str, str]]:
    """The Secrets (or ConfigMaps) that differ between two states, as (kind, namespace, name)."""
    if now == before:
        return set()
    return {(kind, *k) for k in now.keys() | before.keys() if now.get(k) != before.get(k)}


def _tls_sources(key: ObjectKey, spec: model.RouteSpec | model.BackendSpec) -> set[tuple[str, str, str]]:
    """The Secrets and ConfigMaps an object's TLS reads, as (kind, namespace, name)."""
    tls = spec.tls
    if tls is None:
        return set()
    if isinstance(tls, model.RouteTLS):
        names = [tls.certificate_ref, tls.ca_certificate_ref]
        return {("Secret", key.namespace, n) for n in names if n is not None}
    found = {("Secret", key.namespace, tls.client_certificate_ref)} if tls.client_certificate_ref else set()
    if tls.ca_certificate_ref is not None:
        found.add((tls.ca_certificate_ref.kind, key.namespace, tls.ca_certificate_ref.name))
    return found


def _referenced_secrets(state: StateStore, key: ObjectKey, spec: model.RouteSpec) -> tuple[object, ...]:
    """What a Route's TLS depends on besides its spec: the Secrets' contents."""
    if spec.tls is None:
        return ()
    return tuple(state.secrets.get((key.namespace, name))
                 for name in (spec.tls.certificate_ref, spec.tls.ca_certificate_ref) if name is not None)


def _downstream_tls(state: StateStore, key: ObjectKey, spec: model.RouteSpec, recheck: Recheck,
                    problems: list[str], warnings: list[str]) -> tuple[DownstreamTlsIR | None, list[SecretIR]]:
    tls = spec.tls
    if tls is None:
        return None, []
    secrets = []
    try:
        certificate, pair, found = tls_secret(state, key.namespace, tls.certificate_ref, recheck)
    except UnusableSecret as exc:
        problems.append(f"spec.tls.certificateRef: {exc}")
    else:
        secrets.append(certificate)
        warnings.extend(f"spec.tls.certificateRef: {w}" for w in found)
        uncovered = [h for h in spec.hostnames if not covers(pair.names, h)]
        if uncovered:
            warnings.append(f"spec.hostnames: the certificate of Secret {joined(key.namespace, tls.certificate_ref)} "
                            f"does not cover {', '.join(uncovered)} (it names {', '.join(pair.names) or 'nothing'})")
    ca_name = None
    if tls.ca_certificate_ref is not None:
        try:
            ca, found = ca_secret(state, key.namespace, tls.ca_certificate_ref, recheck)
        except UnusableSecret as exc:
            problems.append(f"spec.tls.clientValidation.caCertificateRef: {exc}")
        else:
            secrets.append(ca)
            ca_name = ca.name
            warnings.extend(f"spec.tls.clientValidation.caCertificateRef: {w}" for w in found)
    if problems:
        return None, []
    return DownstreamTlsIR(secrets[0].name, ca_name, tls.min_version, tls.alpn), secrets


def _route(state: StateStore, key: ObjectKey, spec: model.RouteSpec, clusters: dict[str, ClusterIR],
           recheck: Recheck) -> tuple[BuiltRoute, Condition, tuple[str, ...]]:
    tls_problems: list[str] = []
    warnings: list[str] = []
    tls, secrets = _downstream_tls(state, key, spec, recheck, tls_problems, warnings)
    if tls_problems:
        log.error("%s: TLS hostnames left out: %s", key, "; ".join(tls_problems))
        return (BuiltRoute(key, spec.port, spec.hostnames, spec.proxies, (), left_out=True),
                _invalid_certificate(tls_problems), ())
    for warning in warnings:
        log.warning("%s: %s", key, warning)
    problems: list[str] = []

    def resolve(name: str, path: str) -> str | None:
        cluster = cluster_name(ObjectKey("Backend", key.namespace, name))
        if cluster not in clusters:
            problems.append(f"{path}: Backend {joined(key.namespace, name)} not found or not accepted")
            return None
        return cluster

    entries = []
    for r, rule in enumerate(spec.rules):
        backends = tuple(model.BackendRef(c, b.weight) for i, b in enumerate(rule.backends)
                         if (c := resolve(b.name, f"spec.rules[{r}].backends[{i}]")))
        if rule.backends and (not backends or sum(b.weight for b in backends) == 0):
            problems.append(f"spec.rules[{r}]: left out, no backend to send to")
            continue
        mirror = rule.mirror
        if mirror is not None:
            cluster = resolve(mirror.backend, f"spec.rules[{r}].mirror.backend")
            mirror = model.Mirror(cluster, mirror.percent) if cluster else None
        action = dataclasses.replace(rule, matches=(), backends=backends, mirror=mirror)
        for m, match in enumerate(rule.matches):
            entries.append(RouteEntryIR(route_entry_name(key, r, m), key, match, action))
    refs = Condition(RESOLVED_REFS, False, "BackendNotFound", "; ".join(problems)) if problems else _resolved(warnings)
    built = BuiltRoute(key, spec.port, spec.hostnames, spec.proxies, tuple(entries), tls, tuple(secrets),
                       https_redirect=https_redirect(key, spec))
    return built, refs, tuple(warnings)
