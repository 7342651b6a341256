"""A proxy group's config from the built Routes, made whole or updated from the previous build's.

After a change to a few Routes that keeps their ports, hostnames, target groups and clusters
(an edited rule, header or weight: the common edit; for a TLS Route also a rotated certificate or
other TLS settings), only the virtual hosts (or SNI chains) of their hostnames are made again;
every other virtual host, listener and the cluster list are the previous build's objects, which
the snapshot's memo then recognises by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
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
    # Likewise per (port, SNI hostname): the TLS Routes of its chain and where the chain sits (the
    # listener, the index in its tls_hosts); and every TLS Route of the group (their Secrets are sent).
    tls_host_routes: Mapping[HostKey, tuple[ObjectKey, ...]] = field(default_factory=dict)
    tls_positions: Mapping[HostKey, tuple[int, int]] = field(default_factory=dict)
    tls_routes: tuple[ObjectKey, ...] = ()


def full_config(routes: Iterable[BuiltRoute], group: str, clusters: Mapping[str, ClusterIR],
                cluster_secrets: Mapping[str, SecretIR], virtual_host: VirtualHostMaker) -> GroupConfig:
    """`cluster_secrets`: the SDS secrets of the clusters' upstream TLS, by name."""
    by_port: dict[int, dict[str, list[RouteEntryIR]]] = {}
    host_routes: dict[HostKey, list[ObjectKey]] = {}
    # The routes are in key order (the Builder lists them so), so each port's sources are too.
    sources: dict[int, list[ObjectKey]] = {}
    # TLS: per port and SNI hostname, the settings of the first Route (by key) and every
    # Route's entries for it.
    tls_by_port: dict[int, dict[str, tuple[DownstreamTlsIR, list[RouteEntryIR], list[ObjectKey]]]] = {}
    tls_routes: list[ObjectKey] = []
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
            tls_routes.append(route.key)
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
    tls_positions: dict[HostKey, tuple[int, int]] = {}
    for listener_index, port in enumerate(sorted(by_port.keys() | tls_by_port.keys())):
        ordered = sorted(by_port.get(port, {}).items(), key=_host_order)
        for vh_index, (host, _) in enumerate(ordered):
            positions[(port, host)] = (listener_index, vh_index)
        for tls_index, host in enumerate(sorted(tls_by_port.get(port, {}))):
            tls_positions[(port, host)] = (listener_index, tls_index)
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
    tls_host_routes = {(port, host): tuple(keys) for port, hosts in tls_by_port.items()
                       for host, (_, _, keys) in hosts.items()}
    return GroupConfig(config, {k: tuple(v) for k, v in host_routes.items()}, positions,
                       tls_host_routes, tls_positions, tuple(tls_routes))


def _secrets_of(cluster: ClusterIR) -> list[str]:
    tls = cluster.tls
    return [] if tls is None else [s for s in (tls.ca_secret, tls.client_secret) if s is not None]


def updated_config(base: GroupConfig, group: str, changed: Collection[ObjectKey],
                   before: Mapping[ObjectKey, BuiltRoute], after: Mapping[ObjectKey, BuiltRoute],
                   clusters: Mapping[str, ClusterIR] | None, cluster_secrets: Mapping[str, SecretIR],
                   virtual_host: VirtualHostMaker) -> GroupConfig | None:
    """`base` with the virtual hosts (and SNI chains) of the changed Routes made again; None if a
    change moves a Route (port, hostnames, groups, whether it has any rule, TLS or not, left out
    or not) or changes the clusters it uses: then the caller makes the config whole. `clusters`
    is given when a Backend changed; `cluster_secrets`: the clusters' SDS secrets by name."""
    touched: dict[HostKey, None] = {}
    touched_tls: dict[HostKey, None] = {}
    for key in changed:
        old, new = before.get(key), after.get(key)
        if old is None or new is None or old.applies_to(group) != new.applies_to(group):
            return None
        if (old.tls is None) != (new.tls is None) or old.left_out != new.left_out:
            return None
        if not new.applies_to(group):
            continue
        if (old.port != new.port or old.hostnames != new.hostnames or bool(old.entries) != bool(new.entries)
                or used_by(old.entries) != used_by(new.entries)):
            return None
        for hostname in new.hostnames if new.entries else ():
            (touched if new.tls is None else touched_tls)[(new.port, hostname)] = None
    listeners = list(base.config.listeners)
    virtual_hosts: dict[int, list[VirtualHostIR]] = {}
    for port, hostname in touched:
        listener_index, vh_index = base.positions[(port, hostname)]
        entries = [e for k in base.host_routes[(port, hostname)] for e in after[k].entries]
        hosts = virtual_hosts.get(listener_index)
        if hosts is None:
            hosts = virtual_hosts[listener_index] = list(listeners[listener_index].virtual_hosts)
        hosts[vh_index] = virtual_host(hostname, entries)
    tls_hosts: dict[int, list[TlsHostIR]] = {}
    for port, hostname in touched_tls:
        listener_index, tls_index = base.tls_positions[(port, hostname)]
        keys = base.tls_host_routes[(port, hostname)]
        entries = [e for k in keys for e in after[k].entries]
        chain_tls = after[keys[0]].tls  # the first Route's (the Builder leaves out those with others)
        assert chain_tls is not None
        hosts_tls = tls_hosts.get(listener_index)
        if hosts_tls is None:
            hosts_tls = tls_hosts[listener_index] = list(listeners[listener_index].tls_hosts)
        hosts_tls[tls_index] = TlsHostIR(hostname, tls_route_config_name(port, hostname), chain_tls,
                                         virtual_host(hostname, entries), tuple(sorted(keys)))
    for listener_index in virtual_hosts.keys() | tls_hosts.keys():
        old_listener = listeners[listener_index]
        hosts = virtual_hosts.get(listener_index)
        chains = tls_hosts.get(listener_index)
        listeners[listener_index] = ListenerIR(old_listener.name, old_listener.port,
                                               old_listener.virtual_hosts if hosts is None else tuple(hosts),
                                               old_listener.sources,
                                               old_listener.tls_hosts if chains is None else tuple(chains))
    cluster_list = base.config.clusters
    if clusters is not None:
        cluster_list = tuple(clusters[c.name] for c in cluster_list)
    secrets = base.config.secrets
    if clusters is not None or any(after[k].tls is not None for k in changed):
        # A TLS Route or a Backend changed: its Secrets may have (new contents, other names).
        by_name: dict[str, SecretIR] = {}
        for key in base.tls_routes:
            by_name.update((s.name, s) for s in after[key].secrets)
        for cluster in cluster_list:
            by_name.update((s, cluster_secrets[s]) for s in _secrets_of(cluster))
        secrets = tuple(by_name[name] for name in sorted(by_name))
    return GroupConfig(ProxyConfigIR(listeners=tuple(listeners), clusters=cluster_list, secrets=secrets),
                       base.host_routes, base.positions, base.tls_host_routes, base.tls_positions, base.tls_routes)


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
