"""RouteConfiguration: one per listener port, a virtual host per hostname, routes in precedence order."""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence
from functools import lru_cache

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from ..api import model
from ..api.limits import header_value_as_sent
from ..ir.ir import ListenerIR, RouteEntryIR, TlsHostIR, VirtualHostIR
from .common import ads_config_source, duration

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def translate_route_configuration(listener: ListenerIR) -> route_pb2.RouteConfiguration:
    """The plain chain's route configuration."""
    return _route_configuration(listener.name, listener.virtual_hosts)


def translate_tls_route_configuration(host: TlsHostIR) -> route_pb2.RouteConfiguration:
    """An SNI chain's own route configuration: its hostname's virtual host alone."""
    return _route_configuration(host.route_config, (host.virtual_host,))


def _route_configuration(name: str, virtual_hosts: tuple[VirtualHostIR, ...]) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[translate_virtual_host(vh) for vh in virtual_hosts])


def translate_virtual_host(vh: VirtualHostIR) -> rc.VirtualHost:
    return rc.VirtualHost(name=vh.name, domains=list(vh.domains), routes=[translate_route(r) for r in vh.routes])


# -- VHDS (delta proxies) ------------------------------------------------------------------------
# A delta proxy's plain route configuration carries no virtual hosts, only `vhds` (over the same
# ADS stream); each virtual host is a resource of its own named "<route configuration>/<domain>"
# (Envoy delivers a VirtualHost resource to the route configuration named by the part before its
# last "/", and removes one by the VirtualHost's own name, so that is the resource name too).

@lru_cache(maxsize=4096)  # (one message per name: the snapshot memo reuses its bytes by identity)
def vhds_route_configuration(name: str) -> route_pb2.RouteConfiguration:
    """A plain route configuration whose virtual hosts come over VHDS."""
    return route_pb2.RouteConfiguration(name=name, vhds=route_pb2.Vhds(config_source=ads_config_source()))


def vhds_name(route_config: str, vh: VirtualHostIR) -> str:
    """The VHDS resource name (and VirtualHost name) of one virtual host of a route configuration."""
    return f"{route_config}/{vh.name}"


def translate_vhds_virtual_host(route_config: str, vh: VirtualHostIR) -> rc.VirtualHost:
    virtual_host = translate_virtual_host(vh)
    virtual_host.name = vhds_name(route_config, vh)
    return virtual_host


_VIRTUAL_HOST_NAME_TAG = bytes([rc.VirtualHost.NAME_FIELD_NUMBER << 3 | 2])


def virtual_host_body(vh: VirtualHostIR) -> bytes:
    """The serialized virtual host without its name (field 1, first on the wire), so that the
    same bytes serve under either name: see named_virtual_host."""
    unnamed = translate_virtual_host(vh)
    unnamed.ClearField("name")
    serialized: bytes = unnamed.SerializeToString(deterministic=True)
    return serialized


def named_virtual_host(name: str, body: bytes) -> bytes:
    """The serialized VirtualHost of virtual_host_body() `body` named `name`: the bytes of
    translate_virtual_host(...) with that name, SerializeToString(deterministic=True)."""
    encoded = name.encode()
    return (_VIRTUAL_HOST_NAME_TAG + _varint(len(encoded)) + encoded if encoded else b"") + body


# Wire-format tags (field number << 3 | LEN) of RouteConfiguration.name and .virtual_hosts.
_NAME_TAG = bytes([route_pb2.RouteConfiguration.NAME_FIELD_NUMBER << 3 | 2])
_VIRTUAL_HOSTS_TAG = bytes([route_pb2.RouteConfiguration.VIRTUAL_HOSTS_FIELD_NUMBER << 3 | 2])


def route_configuration_bytes(name: str, virtual_host_records: Iterable[bytes]) -> bytes:
    """The serialized RouteConfiguration of `name` with these virtual hosts (each the
    virtual_host_record() of its serialized bytes), assembled instead of serialized: a message's
    wire form is its fields in field-number order, and a repeated message field is each element
    as a length-delimited record. So after a one-Route change only that virtual host is
    serialized again; the bytes are those of
    translate_route_configuration(...).SerializeToString(deterministic=True)."""
    encoded_name = name.encode()
    head = _NAME_TAG + _varint(len(encoded_name)) + encoded_name if encoded_name else b""
    return head + b"".join(virtual_host_records)


def virtual_host_record(serialized: bytes) -> bytes:
    """One RouteConfiguration.virtual_hosts element as it appears on the wire."""
    return _VIRTUAL_HOSTS_TAG + _varint(len(serialized)) + serialized


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@lru_cache(maxsize=65536)
def translate_route(entry: RouteEntryIR) -> rc.Route:
    rule = entry.action
    route = rc.Route(name=entry.name, match=_match(entry.match))
    if rule.redirect is not None:
        route.redirect.CopyFrom(_redirect(rule.redirect))
    elif rule.direct_response is not None:
        route.direct_response.status = rule.direct_response.status
        if rule.direct_response.body:
            route.direct_response.body.inline_string = rule.direct_response.body
    else:
        route.route.CopyFrom(_forward(rule))
    _headers(rule.request_headers, route.request_headers_to_add, route.request_headers_to_remove)
    _headers(rule.response_headers, route.response_headers_to_add, route.response_headers_to_remove)
    return route


def _match(match: model.Match) -> rc.RouteMatch:
    out = rc.RouteMatch()
    path = match.path
    if path.type == "Exact":
        out.path = path.value
    elif path.type == "RegularExpression":
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=path.value))
    elif path.value.rstrip("/") == "":
        out.prefix = "/"
    else:
        # Whole path segments, as Gateway API's PathPrefix: /api matches /api and /api/x, not /apix.
        out.path_separated_prefix = path.value.rstrip("/")
    for header in match.headers:
        out.headers.append(rc.HeaderMatcher(name=header.name, string_match=_string_match(header)))
    if match.method:
        out.headers.append(rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact=match.method)))
    for param in match.query_params:
        out.query_parameters.append(rc.QueryParameterMatcher(name=param.name, string_match=_string_match(param)))
    return out


def _string_match(match: model.ValueMatch) -> string_pb2.StringMatcher:
    if match.type == "RegularExpression":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    return string_pb2.StringMatcher(exact=match.value)


def _forward(rule: model.Rule) -> rc.RouteAction:
    action = rc.RouteAction()
    weighted = [b for b in rule.backends if b.weight > 0]
    if len(weighted) == 1:
        action.cluster = weighted[0].name
    else:
        action.weighted_clusters.clusters.extend(
            rc.WeightedCluster.ClusterWeight(name=b.name, weight=wrappers_pb2.UInt32Value(value=b.weight))
            for b in weighted)
    if rule.timeout_ms is not None:
        action.timeout.CopyFrom(duration(rule.timeout_ms))
    if (retries := rule.retries) is not None:
        action.retry_policy.retry_on = ",".join(retries.retry_on)
        action.retry_policy.num_retries.value = retries.attempts
        if retries.per_try_timeout_ms is not None:
            action.retry_policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_ms))
        action.retry_policy.retriable_status_codes.extend(retries.status_codes)
    if (rewrite := rule.rewrite) is not None:
        if rewrite.path_prefix is not None:
            action.prefix_rewrite = rewrite.path_prefix
        if rewrite.hostname is not None:
            action.host_rewrite_literal = rewrite.hostname
    if (mirror := rule.mirror) is not None:
        action.request_mirror_policies.append(rc.RouteAction.RequestMirrorPolicy(
            cluster=mirror.backend,
            runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
                numerator=mirror.percent, denominator=percent_pb2.FractionalPercent.HUNDRED)),
        ))
    return action


def _redirect(redirect: model.Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.status_code])
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    if redirect.hostname:
        out.host_redirect = redirect.hostname
    if redirect.port:
        out.port_redirect = redirect.port
    if redirect.path:
        out.path_redirect = redirect.path
    return out


def _headers(modifier: model.HeaderModifier | None, to_add: MutableSequence[base_pb2.HeaderValueOption],
             to_remove: MutableSequence[str]) -> None:
    if modifier is None:
        return
    for header, action in [(h, _SET) for h in modifier.set] + [(h, _ADD) for h in modifier.add]:
        # The escaped form is the one validation measured against Envoy's byte limit.
        to_add.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=header.name, value=header_value_as_sent(header.value)),
            append_action=action))
    to_remove.extend(modifier.remove)
