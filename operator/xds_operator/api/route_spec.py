"""The Route spec, declared once: the CRD's schema (api/crd.py renders it) and the model's
validation (api/validation.py reads with it) both come from here."""

from __future__ import annotations

import re
from typing import Any

import re2

from . import model
from .fields import DNS_NAME, HEADER_NAME, HEADER_VALUE, HEADER_VALUE_MESSAGE, PATH, Fields
from .limits import (
    DIRECT_RESPONSE_BODY_MAX_BYTES,
    HEADER_NAME_MAX_BYTES,
    HEADER_VALUE_MAX_BYTES,
    MAX_REGEX_PROGRAM_SIZE,
    QUERY_PARAM_NAME_MAX_BYTES,
    header_value_as_sent,
)
from .schema import Duration, Enum, Integer, List, Object, Rule, String, Variant

PATH_MATCH_TYPES = ("Prefix", "Exact", "RegularExpression")
VALUE_MATCH_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
REDIRECT_CODES = (301, 302, 303, 307, 308)
RETRY_ON = ("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
            "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
            "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
# Ports below 1024 need a privileged proxy, and a listener that cannot bind is a NACK.
MIN_LISTENER_PORT = 1024
MAX_RULES = 128
ACTIONS = ("backends", "redirect", "directResponse")
ONLY_WITH_BACKENDS = ("timeout", "retries", "rewrite", "mirror")
# A hostname as the CRD checks it: "*", or a DNS name, optionally after "*.".
HOSTNAME = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
_DNS_WHAT = "a lower-case DNS name (RFC 1123)"

# As Envoy compiles (re2::RE2::Quiet): the defaults, but RE2 does not log its own copy of every
# error to stderr, where it would end up next to our one-line message.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


# -- what a schema cannot say ----------------------------------------------------------------

def regex(f: Fields, text: str, path: str) -> str | None:
    """A regular expression as Envoy's RE2 engine will compile it."""
    try:
        compiled = re2.compile(text, options=_RE2_OPTIONS)
    except re2.error as exc:
        message = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        f.error(path, f"invalid regular expression (RE2 syntax): {message}")
        return None
    if compiled.programsize > MAX_REGEX_PROGRAM_SIZE:
        f.error(path, f"regular expression is too complex: RE2 program size {compiled.programsize} exceeds "
                      f"Envoy's limit of {MAX_REGEX_PROGRAM_SIZE}")
        return None
    return text


def read_hostname(f: Fields, raw: Any, path: str) -> str | None:
    """A hostname, whose message names the DNS name after any "*." (the CRD's HOSTNAME pattern
    says the same in one expression)."""
    if raw == "*":
        return "*"
    text = f.string(raw, path, required=True, max_len=253)
    if text is None:
        return None
    bare = text.removeprefix("*.")
    if f.string(bare, path, max_len=253, pattern=DNS_NAME, what=_DNS_WHAT) is None:
        return None
    return text


def _exactly_one_action(rule: dict[str, Any]) -> str | None:
    actions = [k for k in ACTIONS if rule.get(k) is not None]
    if len(actions) == 1:
        return None
    return "exactly one of backends, redirect or directResponse must be set" + (
        f" (found {', '.join(actions)})" if actions else "")


def _only_with_backends(name: str) -> Rule:
    def check(rule: dict[str, Any]) -> str | None:
        if not rule.get("backends") and rule.get(name) is not None:
            return "applies only to a rule that forwards to backends"
        return None
    return Rule(f"has(self.backends) || !has(self.{name})", f"{name} applies only to a rule that forwards to backends",
                f".{name}", check)


def _status_codes_need_retriable(retries: dict[str, Any]) -> str | None:
    codes, retry_on = retries.get("statusCodes"), retries.get("retryOn")
    if not isinstance(codes, list) or not codes:
        return None
    if "retriable-status-codes" in (retry_on if isinstance(retry_on, list) and retry_on else model.Retries().retry_on):
        return None
    return "needs retriable-status-codes in retryOn"


def _not_host(message: str) -> Rule:
    # Envoy refuses to add, set or remove pseudo-headers and Host, on requests and responses alike
    # (":-prefixed or host headers may not be modified"); pseudo-headers are not tokens anyway.
    return Rule("self.lowerAscii() != 'host'", message, check=lambda name: message if name == "host" else None)


def _header_with_name_not_host(message: str) -> Rule:
    def check(header: dict[str, Any]) -> str | None:
        name = header.get("name")
        return message if isinstance(name, str) and name.lower() == "host" else None
    return Rule("self.name.lowerAscii() != 'host'", message, ".name", check)


# -- the schema --------------------------------------------------------------------------------

def _absolute_path(description: str, what: str = "an absolute path") -> String:
    return String(description, max_length=1024, pattern=PATH, what=what)


def _dns_name(description: str) -> String:
    return String(description, max_length=253, pattern=DNS_NAME, what=_DNS_WHAT)


def _header_name(description: str, **kw: Any) -> String:
    return String(description, min_length=1, max_length=256, pattern=HEADER_NAME,
                  what="an HTTP header name (RFC 7230 token)", max_bytes=HEADER_NAME_MAX_BYTES,
                  parse=lambda f, name, path: name.lower(), **kw)


_REGEX = String("", min_length=1, max_length=1024, parse=regex)

_PATH_MATCH = Object(
    "The request path condition (default: prefix /). For Prefix and Exact the value is an absolute path: it "
    "starts with / and has no query (?), fragment (#), spaces or control characters. For RegularExpression it "
    "is any RE2 expression; the operator checks that it compiles and fits Envoy's regex program-size limit "
    "(100) and reports a bad one in the Accepted condition.", {
        "type": Enum(
            "How the path is compared: Prefix (default; whole path segments, so /api matches /api and /api/x "
            "but not /apix; Envoy path_separated_prefix, or prefix for /), Exact (Envoy path) or "
            "RegularExpression (RE2 against the whole path, without the query; Envoy safe_regex).",
            PATH_MATCH_TYPES, default="Prefix"),
        "value": String("The path (Prefix, Exact: starts with /) or the RE2 regular expression (RegularExpression). "
                        "Required, 1 to 1024 characters.", min_length=1, max_length=1024),
    }, required=("value",), default={"type": "Prefix", "value": "/"},
    discriminator="type", variants=[
        Variant(("RegularExpression",), {"value": _REGEX}),
        Variant(("Prefix", "Exact"), {"value": String("", min_length=1, max_length=1024, pattern=PATH,
                                                      what="an absolute path starting with / (no query, "
                                                           "fragment or spaces)")}),
    ], build=lambda v: model.PathMatch(v["type"], v["value"]) if v["value"] is not None else None)


def _value_match(description: str, name: String) -> Object:
    return Object(description, {
        "name": name,
        "type": Enum("Exact (default) or RegularExpression (RE2, whole value).", VALUE_MATCH_TYPES, default="Exact"),
        "value": String("The exact value, or the RE2 regular expression.", max_length=4096),
    }, required=("name", "value"), null_message="must be an object with name and value",
        discriminator="type", variants=[
            Variant(("RegularExpression",), {"value": _REGEX}),
            Variant(("Exact",), {"value": String("", max_length=4096, pattern=HEADER_VALUE,
                                                 pattern_message=HEADER_VALUE_MESSAGE)}),
        ], build=lambda v: model.ValueMatch(v["name"], v["value"], v["type"])
        if v["name"] is not None and v["value"] is not None else None)


_MATCH = Object(
    "One match: all of its conditions (path, headers, query parameters, method) must hold. Envoy RouteMatch.", {
        "path": _PATH_MATCH,
        "headers": List(
            "Request header conditions, all of which must hold (at most 32). Envoy RouteMatch.headers.",
            _value_match(
                "A header that must be present with a matching value. For Exact the value may be empty and may "
                "not contain control characters other than tab (at most 4096 characters); for RegularExpression "
                "it is a non-empty RE2 expression of at most 1024 characters that must match the whole value "
                "(checked by the operator).",
                _header_name("The header name, an RFC 7230 token (case-insensitive; Envoy compares it in lower "
                             "case). At most 256 characters.")), max_items=32),
        "queryParams": List(
            "Query parameter conditions, all of which must hold (at most 32). Envoy RouteMatch.query_parameters.",
            _value_match(
                "A query parameter that must be present with a matching value. For Exact the value may be empty "
                "and may not contain control characters other than tab (at most 4096 characters); for "
                "RegularExpression it is a non-empty RE2 expression of at most 1024 characters (checked by the "
                "operator).",
                String("The query parameter name (case-sensitive), 1 to 256 characters.", min_length=1,
                       max_length=256, max_bytes=QUERY_PARAM_NAME_MAX_BYTES)), max_items=32),
        "method": Enum("The HTTP method the request must have (matched on Envoy's :method header). Unset means any "
                       "method.", METHODS),
    }, build=lambda v: model.Match(v["path"], v["headers"], v["queryParams"], v["method"]))

_BACKEND_REF = Object("A Backend and its share of the traffic.", {
    "name": String("The name of a Backend in the Route's namespace. A missing Backend is reported in the "
                   "ResolvedRefs condition and its rule is left out.", min_length=1, max_length=253),
    "weight": Integer("The relative share of requests (0 to 1000000, default 1). A Backend with weight 0 gets no "
                      "traffic.", minimum=0, maximum=1_000_000, default=1),
}, required=("name",), null_message="must be an object with a name",
    build=lambda v: model.BackendRef(v["name"], v["weight"]) if v["name"] else None)

_RETRIES = Object(
    "Retry failed requests (Envoy RouteAction.retry_policy). Only with backends. An empty object retries once "
    "on connect-failure, refused-stream and gateway-error.", {
        "attempts": Integer("How many times to retry (0 to 10, default 1). Envoy num_retries.", minimum=0,
                            maximum=10, default=1),
        "perTryTimeout": Duration("The timeout of each attempt, a duration from 1ms to 24h such as 500ms or 2s. "
                                  "Unset: the request timeout. Envoy per_try_timeout.", minimum_ms=1),
        "retryOn": List(
            "The conditions that cause a retry (Envoy retry_on, router filter x-envoy-retry-on values). Default, "
            "also when empty: connect-failure, refused-stream, gateway-error. Duplicates are ignored.",
            Enum("A retry condition, as in Envoy's x-envoy-retry-on.", RETRY_ON), max_items=len(RETRY_ON),
            default=list(model.Retries().retry_on)),
        "statusCodes": List(
            "Response status codes that cause a retry (Envoy retriable_status_codes); needs "
            "retriable-status-codes in retryOn. At most 32.",
            Integer("An HTTP status code, 100 to 599.", minimum=100, maximum=599), max_items=32),
    }, rules=[Rule("!has(self.statusCodes) || size(self.statusCodes) == 0 || "
                   "(has(self.retryOn) && 'retriable-status-codes' in self.retryOn)",
                   "statusCodes needs retriable-status-codes in retryOn", ".statusCodes",
                   _status_codes_need_retriable)],
    build=lambda v: model.Retries(v["attempts"], v["perTryTimeout"],
                                  tuple(dict.fromkeys(v["retryOn"])) or model.Retries().retry_on, v["statusCodes"]))


def _header_modifier(description: str, host_message: str) -> Object:
    header = Object("A header and its value.", {
        "name": _header_name("The header name, an RFC 7230 token of at most 256 characters; not Host."),
        "value": String("The value, at most 8192 characters, without control characters other than tab. Taken "
                        "literally (a % is escaped for Envoy).", max_length=8192, pattern=HEADER_VALUE,
                        pattern_message=HEADER_VALUE_MESSAGE, max_bytes=HEADER_VALUE_MAX_BYTES,
                        as_sent=header_value_as_sent, as_sent_note=" once % is written as %%"),
    }, required=("name", "value"), null_message="must be an object with name and value",
        rules=[_header_with_name_not_host(host_message)],
        build=lambda v: model.HeaderValue(v["name"], v["value"])
        if v["name"] is not None and v["value"] is not None else None)
    return Object(description, {
        "set": List("Headers to set, replacing any existing value (at most 64).", header, max_items=64),
        "add": List("Headers to append, keeping existing values (at most 64).", header, max_items=64),
        "remove": List("Names of headers to remove (at most 64).", _header_name(
            "A header name, an RFC 7230 token of at most 256 characters; not Host.", rules=[_not_host(host_message)]),
            max_items=64),
    }, build=lambda v: model.HeaderModifier(v["set"], v["add"], v["remove"]))


_RULE = Object(
    "One rule: the requests it matches, and exactly one action for them: backends (forward), redirect or "
    "directResponse. Each match becomes one Envoy route.", {
        "matches": List("The requests this rule applies to: a request matches when it satisfies any one of these "
                        "matches (at most 64). Default: every request (path prefix /).", _MATCH, max_items=64,
                        default=[{"path": {"type": "Prefix", "value": "/"}}]),
        "backends": List(
            "Forward matching requests to these Backends (in the Route's namespace), split by weight: Envoy "
            "weighted_clusters, or one cluster when only one weight is non-zero. 1 to 64 entries, each Backend at "
            "most once, and the weights must not all be zero.", _BACKEND_REF, min_items=1, max_items=64,
            too_few="must name at least one backend", list_type="map", map_key="name",
            duplicate="names a backend more than once",
            rules=[Rule("self.exists(b, !has(b.weight) || b.weight > 0)", "weights must not all be zero",
                        check=lambda refs: None if any(r.weight for r in refs) else "weights must not all be zero")]),
        "timeout": Duration("The whole request's timeout, retries included (Envoy RouteAction.timeout), a duration "
                            "such as 500ms, 15s or 1m30s, at most 24h; 0s disables it. Unset: Envoy's default of "
                            "15s. Only with backends."),
        "retries": _RETRIES,
        "rewrite": Object("Rewrite the request before forwarding it. Only with backends.", {
            "pathPrefix": _absolute_path("Replace the matched path prefix with this absolute path (Envoy "
                                         "prefix_rewrite), e.g. match /old-api and rewrite to /api."),
            "hostname": _dns_name("Replace the Host header with this lower-case DNS name (Envoy "
                                  "host_rewrite_literal)."),
        }, build=lambda v: model.Rewrite(v["pathPrefix"], v["hostname"])),
        "requestHeaders": _header_modifier(
            "Change the request's headers before it is forwarded (Envoy request_headers_to_add and "
            "request_headers_to_remove). The Host header cannot be changed here; use rewrite.hostname.",
            "the Host header cannot be modified; use rewrite.hostname"),
        "responseHeaders": _header_modifier(
            "Change the response's headers before it is returned (Envoy response_headers_to_add and "
            "response_headers_to_remove); applies to redirects and direct responses too. The Host header cannot "
            "be changed.", "the Host header cannot be modified"),
        "redirect": Object(
            "Answer matching requests with a redirect (Envoy RedirectAction). Unset parts keep the request's own "
            "scheme, host, port and path.", {
                "scheme": Enum("The scheme to redirect to.", ("http", "https")),
                "hostname": _dns_name("The host to redirect to, a lower-case DNS name."),
                "port": Integer("The port to redirect to (1 to 65535).", minimum=1, maximum=65535),
                "path": _absolute_path("The absolute path to redirect to (replaces the whole path)."),
                "statusCode": Integer("The redirect status code (default 302).", choices=REDIRECT_CODES, default=302),
            }, build=lambda v: model.Redirect(v["scheme"], v["hostname"], v["port"], v["path"], v["statusCode"])),
        "directResponse": Object(
            "Answer matching requests directly from Envoy (Envoy DirectResponseAction).", {
                "status": Integer("The response status code, 200 to 599.", minimum=200, maximum=599),
                "body": String("The response body (default empty), at most 4096 bytes in UTF-8 (Envoy's limit for "
                               "an inline body).", max_length=DIRECT_RESPONSE_BODY_MAX_BYTES,
                               max_bytes=DIRECT_RESPONSE_BODY_MAX_BYTES,
                               rules=[Rule(f"size(bytes(self)) <= {DIRECT_RESPONSE_BODY_MAX_BYTES}",
                                           f"must be at most {DIRECT_RESPONSE_BODY_MAX_BYTES} bytes (Envoy's limit "
                                           "for an inline body)")]),
            }, required=("status",),
            build=lambda v: model.DirectResponse(v["status"], v["body"] or "") if v["status"] is not None else None),
        "mirror": Object(
            "Also send a copy of matching requests to another Backend, ignoring its responses (Envoy "
            "request_mirror_policies). Only with backends.", {
                "backend": String("The name of a Backend in the Route's namespace that receives the copies.",
                                  min_length=1, max_length=253),
                "percent": Integer("The share of requests to mirror, 0 to 100 (default 100).", minimum=0,
                                   maximum=100, default=100),
            }, required=("backend",),
            build=lambda v: model.Mirror(v["backend"], v["percent"]) if v["backend"] else None),
    }, rules=[Rule("(has(self.backends) ? 1 : 0) + (has(self.redirect) ? 1 : 0) + (has(self.directResponse) ? 1 : 0)"
                   " == 1", "exactly one of backends, redirect or directResponse must be set",
                   check=_exactly_one_action)]
    + [_only_with_backends(name) for name in ONLY_WITH_BACKENDS],
    build=lambda v: model.Rule(v["matches"] or (model.Match(),), v["backends"], v["timeout"], v["retries"],
                               v["rewrite"], v["requestHeaders"], v["responseHeaders"], v["redirect"],
                               v["directResponse"], v["mirror"]))

def secret_ref(description: str) -> Object:
    """A reference to a Secret in the referring object's namespace, by name (Gateway API's
    SecretObjectReference without kind, group or namespace)."""
    return Object(description, {
        "name": String("The Secret's name (a lower-case DNS name, RFC 1123), in the same namespace.", min_length=1,
                       max_length=253, pattern=DNS_NAME, what=_DNS_WHAT),
    }, required=("name",), build=lambda v: v["name"])


TLS_VERSIONS = ("1.2", "1.3")
ALPN_PROTOCOLS = ("h2", "http/1.1")
HTTPS_REDIRECT_CODES = (301, 302, 307, 308)  # Gateway API's RequestRedirect codes, without 303 (it turns a POST into a GET)


def _tls_needs_named_hosts(spec: dict[str, Any]) -> str | None:
    if spec.get("tls") is None:
        return None
    hostnames = spec.get("hostnames")
    if not isinstance(hostnames, list) or not hostnames or "*" in hostnames:
        return 'tls needs hostnames, exact or "*.suffix" ("*" cannot be matched by SNI)'
    return None


_HTTP_REDIRECT = Object(
    "Redirect plain HTTP to HTTPS: on the plain port `port`, each of this Route's hostnames answers every request "
    "with a redirect to https://<host>:<this Route's port>, path and query kept "
    "(as Contour's automatic redirect for TLS virtual hosts, or a Gateway API RequestRedirect filter with scheme "
    "https on an HTTP listener). It takes that hostname's exact virtual host on the plain port, so requests for it "
    "no longer fall through to a \"*\" or \"*.suffix\" Route there. A plain Route that names the same hostname on "
    "that port keeps it, and this Route gets Conflicted=True (reason HostnameConflict) naming it; so does a second "
    "redirect of the same hostname and port to another place (the first Route by namespace/name keeps it).", {
        "port": Integer("The plain (HTTP) port to answer on, 1024-65535; usually that of the Routes serving plain "
                        "HTTP. An Envoy listener is made on it if there is none.", minimum=MIN_LISTENER_PORT,
                        maximum=65535),
        "statusCode": Integer("The redirect's status code: 301 (default), 302, 307 or 308 (307 and 308 keep the "
                              "method and body).", choices=HTTPS_REDIRECT_CODES, default=301),
    }, required=("port",),
    build=lambda v: model.HttpRedirect(v["port"], v["statusCode"]) if v["port"] is not None else None)

_ROUTE_TLS = Object(
    "Terminate TLS for this Route's hostnames on its port (HTTPS). Each hostname becomes its own Envoy filter "
    "chain, chosen by the client's SNI, with its own route configuration: a change or a broken certificate for one "
    "hostname touches no other. The certificate is sent to Envoy over SDS (never inline), so rotating the Secret "
    "drains no connection. TLS and plain Routes may share a port: Envoy tells them apart by the first bytes (TLS "
    "inspector); a TLS client whose SNI names no TLS hostname of the port is refused. A missing or invalid Secret "
    "sets ResolvedRefs=False (reason InvalidCertificateRef) and leaves only this Route's TLS hostnames out.", {
        "certificateRef": secret_ref(
            "The Secret of type kubernetes.io/tls holding the certificate chain (tls.crt, leaf first) and its "
            "private key (tls.key), PEM. It must be valid now and its names should cover the hostnames (a "
            "certificate expiring within 14 days, or not covering a hostname, is a warning in ResolvedRefs)."),
        "clientValidation": Object(
            "Require clients to present a certificate signed by a CA in this bundle (mutual TLS). Unset: no client "
            "certificate is asked for.", {
                "caCertificateRef": secret_ref("A Secret whose ca.crt holds the trusted CA certificates, PEM."),
            }, required=("caCertificateRef",), build=lambda v: v["caCertificateRef"]),
        "minVersion": Enum("The lowest TLS version accepted: 1.2 (default) or 1.3.", TLS_VERSIONS, default="1.2"),
        "alpn": List("The application protocols offered by ALPN, in order of preference (default h2, http/1.1).",
                     Enum("h2 or http/1.1.", ALPN_PROTOCOLS), min_items=1, max_items=2, list_type="set",
                     too_few="must name at least one protocol", duplicate="lists a protocol more than once",
                     default=list(ALPN_PROTOCOLS)),
        "httpRedirect": _HTTP_REDIRECT,
    }, required=("certificateRef",),
    build=lambda v: model.RouteTLS(v["certificateRef"], v["clientValidation"], v["minVersion"], tuple(v["alpn"]),
                                   v["httpRedirect"])
    if v["certificateRef"] else None)

ROUTE_SPEC = Object("What the Route routes, and how.", {
    "port": Integer("The port of the Envoy listener that serves this Route (1024-65535; default 15001). Routes on "
                    "the same port share one listener and one route configuration; their hostnames become its "
                    "virtual hosts.", minimum=MIN_LISTENER_PORT, maximum=65535, default=model.DEFAULT_LISTENER_PORT),
    "hostnames": List(
        'The Host (:authority) values this Route answers: exact names such as shop.example.com, a wildcard suffix '
        'such as *.example.com, or "*" for any host (the default). Lower-case DNS names (RFC 1123), each at most '
        'once, at most 64. Each becomes an Envoy virtual host domain.',
        String('A lower-case DNS name (RFC 1123), optionally prefixed by "*." to match any subdomain, or "*" for '
               'every host.', max_length=253, pattern=HOSTNAME, read=read_hostname),
        max_items=64, list_type="set", duplicate="lists a hostname more than once", default=["*"]),
    "proxies": List("The proxies this Route is sent to, by their Envoy node.cluster (proxy group). Empty or unset: "
                    "every proxy. At most 64; duplicates are ignored.",
                    String("An Envoy node.cluster value (the proxy group), as in the proxy's bootstrap.",
                           min_length=1, max_length=253), max_items=64),
    "rules": List("The routing rules, 1 to 128 (required). Envoy tries exact paths first, then longer prefixes, then "
                  "regular expressions; more specific header, query and method matches first; ties by "
                  "namespace/name and rule order.", _RULE, min_items=1, max_items=MAX_RULES,
                  too_few="is required: a Route needs at least one rule"),
    "tls": _ROUTE_TLS,
}, required=("rules",),
    rules=[Rule("!has(self.tls) || (has(self.hostnames) && size(self.hostnames) > 0 && !('*' in self.hostnames))",
                'tls needs hostnames, exact or "*.suffix" ("*" cannot be matched by SNI)', ".hostnames",
                _tls_needs_named_hosts)],
    build=lambda v: model.RouteSpec(v["port"], v["hostnames"] or ("*",), tuple(sorted(set(v["proxies"]))),
                                    v["rules"], v["tls"]))
