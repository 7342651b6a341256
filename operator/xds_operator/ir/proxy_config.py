"""A proxy group's config from the built Routes, made whole or updated from the previous build's.

After a change to a few Routes that keeps their ports, hostnames, target groups and clusters
(an edited rule, header or weight: the common edit), only the virtual hosts of their hostnames
are made again; every other virtual host, listener and the cluster list are the previous
build's objects, which the snapshot's memo then recognises by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..api.objects import ObjectKey
from .ir import (
    ClusterIR,
    DownstreamTlsIR,
    ListenerIR,
    ProxyConfigIR,
    RouteEntryIR,
    SecretIR,
    TlsHostIR,
    VirtualHostIR,
    listener_name,
    tls_route_config_name,
)
from .redirects import place_redirects

if TYPE_CHECKING:
    from .builder import BuiltRoute

HostKey = tuple[int, str]  # port, hostname
VirtualHostMaker = Callable[[str, list[RouteEntryIR]], VirtualHostIR]


@dataclass(frozen=True)
class GroupConfig:
    config: ProxyConfigIR
    # Per (port, hostname): the Routes that contribute to its virtual host, in key order, and
    # where that virtual host and its listener sit in `config`.
    host_routes: Mapping[HostKey, tuple[ObjectKey, ...]]
    positions: Mapping[HostKey, tuple[int, int]]


def full_config(routes: Iterable[BuiltRoute], group: str, clusters: Mapping[str, ClusterIR],
                cluster_secrets: Mapping[str, SecretIR], virtual_host: VirtualHostMaker) -> GroupConfig:
    """`cluster_secrets`: the SDS secrets of the clusters' upstream TLS, by name."""
    by_port: dict[int, dict[str, list[RouteEntryIR]]] = {}
    host_routes: dict[HostKey, list[ObjectKey]] = {}
    # The routes are in key order (the Builder lists them so), so each port's sources are too.
    sources: dict[int, list[ObjectKey]] = {}
    # TLS: per port and SNI hostname, the settings of the first Route (by key) and every
    # Route's entries for it (not in host_routes/positions: updated_config makes TLS whole).
    tls_by_port: dict[int, dict[str, tuple[DownstreamTlsIR, list[RouteEntryIR], list[ObjectKey]]]] = {}
    secrets: dict[str, SecretIR] = {}
    redirecting: list[BuiltRoute] = []  # TLS Routes with spec.tls.httpRedirect
    used_clusters: set[str] = set()
    for route in routes:
        if not route.applies_to(group):
            continue
        if route.tls is not None:
            hosts_tls = tls_by_port.setdefault(route.port, {})
            for hostname in route.hostnames if route.entries else ():
                _, tls_entries, keys = hosts_tls.setdefault(hostname, (route.tls, [], []))
                tls_entries.extend(route.entries)
                keys.append(route.key)
            secrets.update((s.name, s) for s in route.secrets)
            if route.https_redirect is not None:
                redirecting.append(route)
        else:
            sources.setdefault(route.port, []).append(route.key)
            hosts = by_port.setdefault(route.port, {})
            # A Route whose rules were all left out adds no virtual host: an empty one would
            # answer 404 for its hostnames instead of letting them fall through to "*".
            for hostname in route.hostnames if route.entries else ():
                hosts.setdefault(hostname, []).extend(route.entries)
                host_routes.setdefault((route.port, hostname), []).append(route.key)
        used_clusters.update(used_by(route.entries))
    place_redirects(redirecting, group, by_port, sources)
    listeners = []
    positions: dict[HostKey, tuple[int, int]] = {}
    for listener_index, port in enumerate(sorted(by_port.keys() | tls_by_port.keys())):
        ordered = sorted(by_port.get(port, {}).items(), key=_host_order)
        for vh_index, (host, _) in enumerate(ordered):
            positions[(port, host)] = (listener_index, vh_index)
        listeners.append(ListenerIR(
            name=listener_name(port),
            port=port,
            virtual_hosts=tuple(virtual_host(host, entries) for host, entries in ordered),
            sources=tuple(sources.get(port, ())),
            tls_hosts=tuple(
                TlsHostIR(host, tls_route_config_name(port, host), tls, virtual_host(host, tls_entries),
                          tuple(sorted(keys)))
                for host, (tls, tls_entries, keys) in sorted(tls_by_port.get(port, {}).items())
            ),
        ))
    cluster_list = tuple(clusters[name] for name in sorted(used_clusters))
    for cluster in cluster_list:
        secrets.update((s, cluster_secrets[s]) for s in _secrets_of(cluster))
    config = ProxyConfigIR(listeners=tuple(listeners), clusters=cluster_list,
                           secrets=tuple(secrets[name] for name in sorted(secrets)))
    return GroupConfig(config, {k: tuple(v) for k, v in host_routes.items()}, positions)


def _secrets_of(cluster: ClusterIR) -> list[str]:
    tls = cluster.tls
    return [] if tls is None else [s for s in (tls.ca_secret, tls.client_secret) if s is not None]


def updated_config(base: GroupConfig, group: str, changed: Iterable[ObjectKey],
                   before: Mapping[ObjectKey, BuiltRoute], after: Mapping[ObjectKey, BuiltRoute],
                   clusters: Mapping[str, ClusterIR] | None, virtual_host: VirtualHostMaker) -> GroupConfig | None:
    """`base` with the virtual hosts of the changed Routes made again; None if a change moves
    a Route (port, hostnames, groups, whether it has any rule) or changes the clusters it uses,
    or if a Route with TLS changed (its SNI chains and Secrets are made whole): then the caller
    makes the config whole. `clusters` is given when a Backend changed."""
    touched: dict[HostKey, None] = {}
    for key in changed:
        old, new = before.get(key), after.get(key)
        if old is None or new is None or old.applies_to(group) != new.applies_to(group):
            return None
        if old.tls is not None or new.tls is not None or old.left_out or new.left_out:
            return None
        if not new.applies_to(group):
            continue
        if (old.port != new.port or old.hostnames != new.hostnames or bool(old.entries) != bool(new.entries)
                or used_by(old.entries) != used_by(new.entries)):
            return None
        for hostname in new.hostnames if new.entries else ():
            touched[(new.port, hostname)] = None
    listeners = list(base.config.listeners)
    virtual_hosts: dict[int, list[VirtualHostIR]] = {}
    for port, hostname in touched:
        listener_index, vh_index = base.positions[(port, hostname)]
        entries = [e for k in base.host_routes[(port, hostname)] for e in after[k].entries]
        hosts = virtual_hosts.get(listener_index)
        if hosts is None:
            hosts = virtual_hosts[listener_index] = list(listeners[listener_index].virtual_hosts)
        hosts[vh_index] = virtual_host(hostname, entries)
    for listener_index, hosts in virtual_hosts.items():
        old_listener = listeners[listener_index]
        listeners[listener_index] = ListenerIR(old_listener.name, old_listener.port, tuple(hosts),
                                               old_listener.sources, old_listener.tls_hosts)
    cluster_list = base.config.clusters
    if clusters is not None:
        cluster_list = tuple(clusters[c.name] for c in cluster_list)
    # The Builder builds whole when a Secret or a TLS Backend changed: the secrets are as before.
    return GroupConfig(ProxyConfigIR(listeners=tuple(listeners), clusters=cluster_list, secrets=base.config.secrets),
                       base.host_routes, base.positions)


def used_by(entries: Iterable[RouteEntryIR]) -> set[str]:
    """The clusters route entries send to (or mirror to)."""
    used: set[str] = set()
    for entry in entries:
        used.update(b.name for b in entry.action.backends)
        if entry.action.mirror:
            used.add(entry.action.mirror.backend)
    return used


def _host_order(item: tuple[str, list[RouteEntryIR]]) -> tuple[bool, str]:
    return item[0] == "*", item[0]
