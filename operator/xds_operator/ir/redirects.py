"""HTTP to HTTPS redirects of TLS Routes (`spec.tls.httpRedirect`).

On the plain port of the redirect, each hostname of the Route gets an exact virtual host of its
own with one route: every request answers with a redirect to https://<host>:<the Route's port>,
path and query kept (Envoy's RedirectAction with scheme and port only). A hostname there already
belongs to a plain Route that names it, or to an earlier redirect (by namespace/name): Envoy
refuses two virtual hosts with one domain, so the redirect is left out for it, and the Route says
so with Conflicted=True instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..api import model
from ..api.conditions import CONFLICTED, Condition
from ..api.objects import ObjectKey, joined
from .ir import RouteEntryIR

if TYPE_CHECKING:
    from .builder import BuiltRoute, ObjectStatus

FIELD = "spec.tls.httpRedirect"


@dataclass(frozen=True)
class HttpsRedirectIR:
    port: int  # the plain port it answers on
    entry: RouteEntryIR  # the one route of each of its virtual hosts


def https_redirect(key: ObjectKey, spec: model.RouteSpec) -> HttpsRedirectIR | None:
    redirect = spec.tls.http_redirect if spec.tls is not None else None
    if redirect is None:
        return None
    action = model.Rule(matches=(), redirect=model.Redirect(scheme="https", port=spec.port,
                                                            status_code=redirect.status_code))
    return HttpsRedirectIR(redirect.port, RouteEntryIR(joined(key.namespace, key.name, "https-redirect"), key,
                                                       model.Match(), action))


def _redirecting(route: BuiltRoute) -> HttpsRedirectIR | None:
    # A TLS Route none of whose rules is served has no HTTPS chain to send anyone to.
    return route.https_redirect if route.entries and not route.left_out else None


def _owns_plain_hosts(route: BuiltRoute) -> bool:
    return route.tls is None and bool(route.entries) and not route.left_out


def place_redirects(routes: Iterable[BuiltRoute], group: str,
                    hosts_by_port: MutableMapping[int, dict[str, list[RouteEntryIR]]],
                    sources: MutableMapping[int, list[ObjectKey]]) -> None:
    """Adds the redirects of `routes` (TLS Routes with one, in key order) to `group`'s plain virtual
    hosts `hosts_by_port` (its plain Routes' only), where their hostnames are free; each
    redirecting Route becomes a source of its plain port."""
    for route in routes:
        redirect = _redirecting(route)
        if redirect is None or not route.applies_to(group):
            continue
        # (A port new here gets every hostname: a TLS Route has at least one, each once.)
        hosts = hosts_by_port.setdefault(redirect.port, {})
        placed = False
        for hostname in route.hostnames:
            if hostname not in hosts:  # a plain Route's, or an earlier redirect's
                hosts[hostname] = [redirect.entry]
                placed = True
        if placed:
            sources.setdefault(redirect.port, []).append(route.key)
            sources[redirect.port].sort()


def _share_a_group(a: BuiltRoute, b: BuiltRoute) -> bool:
    return not a.proxies or not b.proxies or not set(a.proxies).isdisjoint(b.proxies)


def redirect_conflicts(routes: Iterable[BuiltRoute]) -> dict[ObjectKey, list[str]]:
    """For each redirecting Route (in key order), what keeps its redirect from a hostname in
    some proxy group: a plain Route naming that hostname on that port, or an earlier Route
    redirecting it elsewhere. An empty list: no conflict."""
    routes = list(routes)
    redirecting = [r for r in routes if _redirecting(r) is not None]
    if not redirecting:  # the usual case: one pass, no index
        return {}
    plain: dict[tuple[int, str], list[BuiltRoute]] = {}
    wanted = {(r.https_redirect.port, h) for r in redirecting if r.https_redirect is not None for h in r.hostnames}
    for route in routes:
        if _owns_plain_hosts(route):
            for hostname in route.hostnames:
                if (route.port, hostname) in wanted:
                    plain.setdefault((route.port, hostname), []).append(route)
    earlier: dict[tuple[int, str], list[BuiltRoute]] = {}
    found: dict[ObjectKey, list[str]] = {}
    for route in redirecting:
        redirect = route.https_redirect
        assert redirect is not None
        problems = found[route.key] = []
        for hostname in route.hostnames:
            place = (redirect.port, hostname)
            owners = [o for o in plain.get(place, ()) if _share_a_group(o, route)]
            if owners:
                problems.append(f"{hostname} on port {redirect.port} (plain Route "
                                f"{', '.join(joined(o.key.namespace, o.key.name) for o in owners)} serves it)")
            others = [o for o in earlier.get(place, ()) if _share_a_group(o, route)
                      and o.https_redirect is not None and o.https_redirect.entry.action != redirect.entry.action]
            if others:
                problems.append(f"{hostname} on port {redirect.port} (Route "
                                f"{', '.join(joined(o.key.namespace, o.key.name) for o in others)} redirects it "
                                "to another place)")
            earlier.setdefault(place, []).append(route)
    return found


def with_conflicts(statuses: Mapping[ObjectKey, ObjectStatus], conflicts: Mapping[ObjectKey, list[str]]
                   ) -> dict[ObjectKey, ObjectStatus]:
    """The statuses of the redirecting Routes with their Conflicted condition (and, for
    `validate`, a warning at the field for each conflict)."""
    out = {}
    for key, problems in conflicts.items():
        status = statuses[key]
        if problems:
            message = "no HTTPS redirect for " + "; ".join(problems) + ", in the proxy groups they share"
            condition = Condition(CONFLICTED, True, "HostnameConflict", message)
            warnings = (*status.warnings, f"{FIELD}: {message}")
        else:
            condition = Condition(CONFLICTED, False, "NoConflicts", "every hostname is redirected to HTTPS")
            warnings = status.warnings
        out[key] = replace(status, conditions=(*status.conditions, condition), warnings=warnings)
    return out


def ownership(route: BuiltRoute | None) -> tuple[object, ...] | None:
    """What the redirects' conflicts depend on in a plain Route: where it has virtual hosts."""
    if route is None:
        return None
    return route.port, route.hostnames, route.proxies, _owns_plain_hosts(route)
