"""The build step: validated objects -> per-object IR pieces and status conditions.

The Builder remembers the last valid spec of every object, so that an invalid edit keeps
serving the previous good version (and says so in the status) instead of dropping traffic.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field

from ..api import model
from ..api.conditions import ACCEPTED, RESOLVED_REFS, Condition
from ..api.fields import FieldError
from ..api.objects import ObjectKey, UserObject, joined
from ..api.validation import validate
from ..sources.state import StateStore
from .certificates import covers, now_utc
from .ir import (ClusterIR, DownstreamTlsIR, Endpoint, ListenerIR, ProxyConfigIR, RouteEntryIR, SecretIR, TlsHostIR,
                 UpstreamTlsIR, VirtualHostIR, cluster_name, listener_name, route_entry_name, tls_route_config_name)
from .secrets import UnusableSecret, ca_secret, tls_secret
from .services import SlicesByService, UnresolvedService, resolve_service, slices_by_service

log = logging.getLogger(__name__)

_PATH_RANK = {"Exact": 0, "Prefix": 1, "RegularExpression": 2}


@dataclass(frozen=True)
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

    def applies_to(self, group: str) -> bool:
        return not self.left_out and (not self.proxies or group in self.proxies)


@dataclass(frozen=True)
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

    def config_for(self, group: str) -> ProxyConfigIR:
        """What proxies whose node.cluster is `group` should run."""
        by_port: dict[int, dict[str, list[RouteEntryIR]]] = {}
        sources: dict[int, set[ObjectKey]] = {}
        # TLS: per port and SNI hostname, the settings of the first Route (by key) and every
        # Route's entries for it.
        tls_by_port: dict[int, dict[str, tuple[DownstreamTlsIR, list[RouteEntryIR], set[ObjectKey]]]] = {}
        used_clusters: set[str] = set()
        secrets: dict[str, SecretIR] = {}
        for route in self.routes:
            if not route.applies_to(group):
                continue
            if route.tls is not None:
                hosts_tls = tls_by_port.setdefault(route.port, {})
                for hostname in route.hostnames if route.entries else ():
                    _, entries, keys = hosts_tls.setdefault(hostname, (route.tls, [], set()))
                    entries.extend(route.entries)
                    keys.add(route.key)
                secrets.update((s.name, s) for s in route.secrets)
            else:
                sources.setdefault(route.port, set()).add(route.key)
                hosts = by_port.setdefault(route.port, {})
                # A Route whose rules were all left out adds no virtual host: an empty one would
                # answer 404 for its hostnames instead of letting them fall through to "*".
                for hostname in route.hostnames if route.entries else ():
                    hosts.setdefault(hostname, []).extend(route.entries)
            for entry in route.entries:
                used_clusters.update(b.name for b in entry.action.backends)
                if entry.action.mirror:
                    used_clusters.add(entry.action.mirror.backend)
        listeners = tuple(
            ListenerIR(
                name=listener_name(port),
                port=port,
                virtual_hosts=tuple(
                    _virtual_host(host, entries)
                    for host, entries in sorted(by_port.get(port, {}).items(), key=lambda kv: (kv[0] == "*", kv[0]))
                ),
                sources=tuple(sorted(sources.get(port, ()))),
                tls_hosts=tuple(
                    TlsHostIR(host, tls_route_config_name(port, host), tls, _virtual_host(host, entries),
                              tuple(sorted(keys)))
                    for host, (tls, entries, keys) in sorted(tls_by_port.get(port, {}).items())
                ),
            )
            for port in sorted(by_port.keys() | tls_by_port.keys())
        )
        clusters = tuple(self.clusters[name] for name in sorted(used_clusters))
        for cluster in clusters:
            secrets.update((s, self.secrets[s]) for s in _cluster_secrets(cluster))
        return ProxyConfigIR(listeners=listeners, clusters=clusters,
                             secrets=tuple(secrets[name] for name in sorted(secrets)))


def _virtual_host(host: str, entries: list[RouteEntryIR]) -> VirtualHostIR:
    return VirtualHostIR(name=host, domains=(host,), routes=tuple(sorted(entries, key=_precedence)))


def _cluster_secrets(cluster: ClusterIR) -> list[str]:
    tls = cluster.tls
    return [] if tls is None else [s for s in (tls.ca_secret, tls.client_secret) if s is not None]


def _precedence(entry: RouteEntryIR):
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
    def __init__(self) -> None:
        self._last_valid: dict[ObjectKey, tuple[int, model.RouteSpec | model.BackendSpec]] = {}
        # Validation of objects that did not change since the last build is reused: a source
        # hands over the same UserObject until the object changes.
        self._validated_memo: dict[ObjectKey, tuple[UserObject, tuple]] = {}
        # Likewise a Route's IR, as long as its spec and the existence of what it references hold.
        self._route_memo: dict[ObjectKey, tuple[model.RouteSpec, tuple[bool, ...], tuple]] = {}
        self._cluster_memo: dict[ObjectKey, tuple[model.BackendSpec, tuple]] = {}

    def build(self, state: StateStore) -> BuildResult:
        result = BuildResult()
        specs: dict[ObjectKey, model.RouteSpec | model.BackendSpec] = {}
        accepted: dict[ObjectKey, Condition] = {}
        errors: dict[ObjectKey, tuple[FieldError, ...]] = {}
        memo = {}
        for key, obj in sorted(state.objects.items(), key=_by_key):
            previous = self._validated_memo.get(key)
            outcome = previous[1] if previous is not None and previous[0] is obj else self._validated(obj)
            memo[key] = (obj, outcome)
            spec, accepted[key], errors[key] = outcome
            if spec is not None:
                specs[key] = spec
        self._validated_memo = memo
        self._last_valid = {k: v for k, v in self._last_valid.items() if k in state.objects}

        slices = slices_by_service(state)
        now = now_utc()
        cluster_memo = {}
        for key, spec in specs.items():
            if isinstance(spec, model.BackendSpec):
                previous = self._cluster_memo.get(key)
                if spec.service is None and spec.tls is None and previous is not None and previous[0] is spec:
                    outcome = previous[1]  # static endpoints or DNS: depends on the spec alone
                else:
                    outcome = _cluster(state, slices, key, spec, now)
                cluster_memo[key] = (spec, outcome)
                cluster, refs, secrets, warnings = outcome
                if cluster is not None:
                    result.clusters[cluster.name] = cluster
                    result.secrets.update((s.name, s) for s in secrets)
                self._set_status(result, state.objects[key], accepted[key], refs, errors[key], warnings)
        routes = []
        route_memo = {}
        for key, spec in specs.items():
            if isinstance(spec, model.RouteSpec):
                present = (tuple(name in result.clusters for name in _referenced_clusters(key, spec)),
                           _referenced_secrets(state, key, spec))
                previous = self._route_memo.get(key)
                if previous is not None and previous[0] is spec and previous[1] == present:
                    outcome = previous[2]
                else:
                    outcome = _route(state, key, spec, result.clusters, now)
                route_memo[key] = (spec, present, outcome)
                route, refs, warnings = outcome
                routes.append(route)
                self._set_status(result, state.objects[key], accepted[key], refs, errors[key], warnings)
        self._route_memo = route_memo
        self._cluster_memo = cluster_memo
        result.routes = tuple(routes)
        result.routes_by_key = {r.key: r for r in routes}
        for key in state.objects.keys() - specs.keys():
            self._set_status(result, state.objects[key], accepted[key], None, errors[key])
        return result

    def _validated(self, obj: UserObject):
        spec, errors = validate(obj)
        if spec is not None:
            self._last_valid[obj.key] = (obj.generation, spec)
            return spec, Condition(ACCEPTED, True, "Accepted", "spec is valid"), ()
        message = "; ".join(map(str, errors))
        log.error("%s rejected (%s): %s", obj.key, obj.origin or "no origin", message)
        last = self._last_valid.get(obj.key)
        if last is not None:
            message += f" (still serving the last valid generation {last[0]})"
            return last[1], Condition(ACCEPTED, False, "Invalid", message), tuple(errors)
        return None, Condition(ACCEPTED, False, "Invalid", message), tuple(errors)

    @staticmethod
    def _set_status(result: BuildResult, obj: UserObject, accepted: Condition, refs: Condition | None,
                    errors: tuple[FieldError, ...], warnings: tuple[str, ...] = ()) -> None:
        conditions = (accepted,) if refs is None else (accepted, refs)
        result.statuses[obj.key] = ObjectStatus(obj.generation, conditions, errors, warnings)


def _resolved(warnings: list[str]) -> Condition:
    message = "all references resolved"
    if warnings:
        message += "; warning: " + "; warning: ".join(warnings)
    return Condition(RESOLVED_REFS, True, "ResolvedRefs", message)


def _invalid_certificate(problems: list[str]) -> Condition:
    return Condition(RESOLVED_REFS, False, "InvalidCertificateRef", "; ".join(problems))


def _upstream_tls(state: StateStore, key: ObjectKey, spec: model.BackendSpec, now: datetime.datetime,
                  problems: list[str], warnings: list[str]) -> tuple[UpstreamTlsIR | None, list[SecretIR]]:
    tls = spec.tls
    if tls is None:
        return None, []
    secrets = []
    names: dict[str, str | None] = {"ca": None, "client": None}
    for what, ref, path in (("ca", tls.ca_certificate_ref, "spec.tls.caCertificateRef"),
                            ("client", tls.client_certificate_ref, "spec.tls.clientCertificateRef")):
        if ref is None:
            continue
        try:
            if what == "ca":
                secret, found = ca_secret(state, key.namespace, ref, now)
            else:
                secret, _, found = tls_secret(state, key.namespace, ref, now)
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
             now: datetime.datetime) -> tuple[ClusterIR | None, Condition, tuple[SecretIR, ...], tuple[str, ...]]:
    """The cluster (None when its TLS Secrets cannot be used), ResolvedRefs, secrets, warnings."""
    problems: list[str] = []
    warnings: list[str] = []
    tls, secrets = _upstream_tls(state, key, spec, now, problems, warnings)
    if problems:
        return None, _invalid_certificate(problems), (), ()
    for warning in warnings:
        log.warning("%s: %s", key, warning)
    refs = _resolved(warnings)
    endpoints = ()
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


def _by_key(item: tuple[ObjectKey, UserObject]) -> ObjectKey:
    return item[0]


def _referenced_clusters(key: ObjectKey, spec: model.RouteSpec) -> list[str]:
    names = []
    for rule in spec.rules:
        names.extend(b.name for b in rule.backends)
        if rule.mirror is not None:
            names.append(rule.mirror.backend)
    return [cluster_name(ObjectKey("Backend", key.namespace, n)) for n in names]


def _referenced_secrets(state: StateStore, key: ObjectKey, spec: model.RouteSpec) -> tuple:
    """What a Route's TLS depends on besides its spec: the Secrets' contents."""
    if spec.tls is None:
        return ()
    return tuple(state.secrets.get((key.namespace, name))
                 for name in (spec.tls.certificate_ref, spec.tls.ca_certificate_ref) if name is not None)


def _downstream_tls(state: StateStore, key: ObjectKey, spec: model.RouteSpec, now: datetime.datetime,
                    problems: list[str], warnings: list[str]) -> tuple[DownstreamTlsIR | None, list[SecretIR]]:
    tls = spec.tls
    if tls is None:
        return None, []
    secrets = []
    try:
        certificate, pair, found = tls_secret(state, key.namespace, tls.certificate_ref, now)
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
            ca, found = ca_secret(state, key.namespace, tls.ca_certificate_ref, now)
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
           now: datetime.datetime) -> tuple[BuiltRoute, Condition, tuple[str, ...]]:
    tls_problems: list[str] = []
    warnings: list[str] = []
    tls, secrets = _downstream_tls(state, key, spec, now, tls_problems, warnings)
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
    if problems:
        refs = Condition(RESOLVED_REFS, False, "BackendNotFound", "; ".join(problems))
    else:
        refs = _resolved(warnings)
    built = BuiltRoute(key, spec.port, spec.hostnames, spec.proxies, tuple(entries), tls, tuple(secrets))
    return built, refs, tuple(warnings)
