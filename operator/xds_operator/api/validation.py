"""Validation of Route and Backend specs: everything Envoy would reject is caught here.

A spec that passes `validate_*` translates into configuration that Envoy accepts; that is the
promise which keeps user input from ever causing a NACK.
"""

from __future__ import annotations

import re
from typing import Any

import re2

from . import model
from .fields import FieldError, Fields
from .objects import UserObject

PROTOCOLS = ("HTTP1", "HTTP2")
LOAD_BALANCERS = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
PATH_MATCH_TYPES = ("Prefix", "Exact", "RegularExpression")
VALUE_MATCH_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
REDIRECT_CODES = (301, 302, 303, 307, 308)
RETRY_ON = ("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
            "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
            "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
# Envoy refuses regexes whose compiled RE2 program is larger than this (runtime key
# re2.max_program_size.error_level, default 100).
MAX_REGEX_PROGRAM_SIZE = 100
# Envoy's default limit for an inline direct response body (max_direct_response_body_size_bytes).
MAX_DIRECT_RESPONSE_BODY = 4096
# Ports below 1024 need a privileged proxy, and a listener that cannot bind is a NACK.
MIN_LISTENER_PORT = 1024
MAX_RULES = 128

# No control characters: Envoy refuses NUL, CR and LF in rewrites and redirects, and any of them in
# health check paths.
_PATH = re.compile(r"^/[^?#\s\x00-\x1f\x7f]*$")


def validate(obj: UserObject) -> tuple[model.RouteSpec | model.BackendSpec | None, list[FieldError]]:
    """The validated spec of a Route or Backend, or None with the reasons."""
    fields = Fields()
    if not obj.key.name:
        fields.error("metadata.name", "is required")
    if obj.key.kind == "Route":
        spec = _route(fields, obj.spec)
    elif obj.key.kind == "Backend":
        spec = _backend(fields, obj.spec)
    else:
        fields.error("kind", f"{obj.key.kind!r} is not Route or Backend")
        spec = None
    if fields.errors:
        return None, fields.errors
    return spec, []


# -- Backend ---------------------------------------------------------------------------------

def _backend(f: Fields, raw: Any) -> model.BackendSpec | None:
    spec = f.mapping(raw, "spec", ("service", "endpoints", "dns", "protocol", "loadBalancer", "connectTimeout",
                                   "healthCheck", "circuitBreaker", "outlierDetection"))
    if spec is None:
        if raw is None:
            f.error("spec", "is required")
        return None
    targets = [k for k in ("service", "endpoints", "dns") if spec.get(k) is not None]
    if len(targets) != 1:
        f.error("spec", "exactly one of service, endpoints or dns must be set"
                + (f" (found {', '.join(targets)})" if targets else ""))
    service = _service_ref(f, spec.get("service"), "spec.service")
    endpoints = f.items(spec.get("endpoints"), "spec.endpoints", _static_endpoint(f))
    if spec.get("endpoints") is not None and not endpoints and not f.errors:
        f.error("spec.endpoints", "must list at least one endpoint")
    dns = None
    if (raw_dns := f.mapping(spec.get("dns"), "spec.dns", ("hostname", "port"))) is not None:
        host = f.dns_name(raw_dns.get("hostname"), "spec.dns.hostname", required=True)
        port = f.port(raw_dns.get("port"), "spec.dns.port", required=True)
        dns = model.DnsTarget(host, port) if host and port else None
    return model.BackendSpec(
        service=service,
        endpoints=endpoints,
        dns=dns,
        protocol=f.enum(spec.get("protocol"), "spec.protocol", PROTOCOLS) or "HTTP1",
        load_balancer=f.enum(spec.get("loadBalancer"), "spec.loadBalancer", LOAD_BALANCERS) or "ROUND_ROBIN",
        connect_timeout_ms=f.duration(spec.get("connectTimeout"), "spec.connectTimeout", minimum_ms=1,
                                      maximum_ms=3_600_000) or 5_000,
        health_check=_health_check(f, spec.get("healthCheck")),
        circuit_breaker=_circuit_breaker(f, spec.get("circuitBreaker")),
        outlier_detection=_outlier_detection(f, spec.get("outlierDetection")),
    )


def _service_ref(f: Fields, raw: Any, path: str) -> model.ServiceRef | None:
    ref = f.mapping(raw, path, ("name", "port"))
    if ref is None:
        return None
    name = f.dns_label(ref.get("name"), f"{path}.name", required=True)
    port = ref.get("port")
    if isinstance(port, str):
        port = f.dns_label(port, f"{path}.port", required=True)
    else:
        port = f.port(port, f"{path}.port", required=True)
    return model.ServiceRef(name, port) if name and port else None


def _static_endpoint(f: Fields):
    def read(raw: Any, path: str) -> model.StaticEndpoint | None:
        ep = f.mapping(raw, path, ("address", "port"))
        if ep is None:
            if raw is None:  # mapping() reported values of another type
                f.error(path, "must be an object with address and port")
            return None
        address = f.ip_address(ep.get("address"), f"{path}.address")
        port = f.port(ep.get("port"), f"{path}.port", required=True)
        return model.StaticEndpoint(address, port) if address and port else None
    return read


def _health_check(f: Fields, raw: Any) -> model.HealthCheck | None:
    hc = f.mapping(raw, "spec.healthCheck", ("path", "interval", "timeout", "healthyThreshold", "unhealthyThreshold"))
    if hc is None:
        return None
    d = model.HealthCheck()
    path = f.string(hc.get("path"), "spec.healthCheck.path", pattern=_PATH, what="an absolute path such as /healthz")
    return model.HealthCheck(
        path=path or d.path,
        interval_ms=f.duration(hc.get("interval"), "spec.healthCheck.interval", minimum_ms=1) or d.interval_ms,
        timeout_ms=f.duration(hc.get("timeout"), "spec.healthCheck.timeout", minimum_ms=1) or d.timeout_ms,
        healthy_threshold=f.integer(hc.get("healthyThreshold"), "spec.healthCheck.healthyThreshold",
                                    minimum=1, maximum=100) or d.healthy_threshold,
        unhealthy_threshold=f.integer(hc.get("unhealthyThreshold"), "spec.healthCheck.unhealthyThreshold",
                                      minimum=1, maximum=100) or d.unhealthy_threshold,
    )


def _circuit_breaker(f: Fields, raw: Any) -> model.CircuitBreaker | None:
    names = {"maxConnections": "max_connections", "maxPendingRequests": "max_pending_requests",
             "maxRequests": "max_requests", "maxRetries": "max_retries"}
    cb = f.mapping(raw, "spec.circuitBreaker", names)
    if cb is None:
        return None
    return model.CircuitBreaker(**{
        attr: f.integer(cb.get(key), f"spec.circuitBreaker.{key}", minimum=1, maximum=2**31 - 1)
        for key, attr in names.items()
    })


def _outlier_detection(f: Fields, raw: Any) -> model.OutlierDetection | None:
    od = f.mapping(raw, "spec.outlierDetection", ("consecutive5xx", "interval", "baseEjectionTime",
                                                   "maxEjectionPercent"))
    if od is None:
        return None
    d = model.OutlierDetection()
    p = "spec.outlierDetection"
    return model.OutlierDetection(
        consecutive_5xx=f.integer(od.get("consecutive5xx"), f"{p}.consecutive5xx", minimum=1,
                                  maximum=1000) or d.consecutive_5xx,
        interval_ms=f.duration(od.get("interval"), f"{p}.interval", minimum_ms=1) or d.interval_ms,
        base_ejection_time_ms=f.duration(od.get("baseEjectionTime"), f"{p}.baseEjectionTime",
                                         minimum_ms=1) or d.base_ejection_time_ms,
        max_ejection_percent=_default(f.integer(od.get("maxEjectionPercent"), f"{p}.maxEjectionPercent",
                                                minimum=0, maximum=100), d.max_ejection_percent),
    )


# -- Route -----------------------------------------------------------------------------------

def _route(f: Fields, raw: Any) -> model.RouteSpec | None:
    spec = f.mapping(raw, "spec", ("port", "hostnames", "proxies", "rules"))
    if spec is None:
        if raw is None:
            f.error("spec", "is required")
        return None
    port = f.port(spec.get("port"), "spec.port", minimum=MIN_LISTENER_PORT)
    hostnames = f.items(spec.get("hostnames"), "spec.hostnames", _hostname(f), max_items=64)
    if len(set(hostnames)) != len(hostnames):
        f.error("spec.hostnames", "lists a hostname more than once")
    proxies = f.items(spec.get("proxies"), "spec.proxies",
                      lambda v, p: f.string(v, p, required=True, max_len=253), max_items=64)
    if spec.get("rules") is None or spec.get("rules") == []:
        f.error("spec.rules", "is required: a Route needs at least one rule")
    rules = f.items(spec.get("rules"), "spec.rules", _rule(f), max_items=MAX_RULES)
    return model.RouteSpec(
        port=port or model.DEFAULT_LISTENER_PORT,
        hostnames=hostnames or ("*",),
        proxies=tuple(sorted(set(proxies))),
        rules=rules,
    )


def _hostname(f: Fields):
    def read(raw: Any, path: str) -> str | None:
        if raw == "*":
            return raw
        text = f.string(raw, path, required=True, max_len=253)
        if text is None:
            return None
        bare = text[2:] if text.startswith("*.") else text
        if f.dns_name(bare, path) is None:
            return None
        return text
    return read


def _rule(f: Fields):
    def read(raw: Any, p: str) -> model.Rule | None:
        rule = f.mapping(raw, p, ("matches", "backends", "timeout", "retries", "rewrite", "requestHeaders",
                                  "responseHeaders", "redirect", "directResponse", "mirror"))
        if rule is None:
            if raw is None:
                f.error(p, "must be an object")
            return None
        actions = [k for k in ("backends", "redirect", "directResponse") if rule.get(k) is not None]
        if len(actions) != 1:
            f.error(p, "exactly one of backends, redirect or directResponse must be set"
                    + (f" (found {', '.join(actions)})" if actions else ""))
        if not rule.get("backends"):
            for only_with_backends in ("timeout", "retries", "rewrite", "mirror"):
                if rule.get(only_with_backends) is not None:
                    f.error(f"{p}.{only_with_backends}", "applies only to a rule that forwards to backends")
        matches = f.items(rule.get("matches"), f"{p}.matches", _match(f), max_items=64)
        backends = f.items(rule.get("backends"), f"{p}.backends", _backend_ref(f), max_items=64)
        if rule.get("backends") is not None and not backends:
            f.error(f"{p}.backends", "must name at least one backend")
        if backends and sum(b.weight for b in backends) == 0:
            f.error(f"{p}.backends", "weights must not all be zero")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            f.error(f"{p}.backends", "names a backend more than once")
        return model.Rule(
            matches=matches or (model.Match(),),
            backends=backends,
            timeout_ms=f.duration(rule.get("timeout"), f"{p}.timeout"),
            retries=_retries(f, rule.get("retries"), f"{p}.retries"),
            rewrite=_rewrite(f, rule.get("rewrite"), f"{p}.rewrite"),
            request_headers=_header_modifier(f, rule.get("requestHeaders"), f"{p}.requestHeaders", request=True),
            response_headers=_header_modifier(f, rule.get("responseHeaders"), f"{p}.responseHeaders"),
            redirect=_redirect(f, rule.get("redirect"), f"{p}.redirect"),
            direct_response=_direct_response(f, rule.get("directResponse"), f"{p}.directResponse"),
            mirror=_mirror(f, rule.get("mirror"), f"{p}.mirror"),
        )
    return read


def _match(f: Fields):
    def read(raw: Any, p: str) -> model.Match | None:
        m = f.mapping(raw, p, ("path", "headers", "queryParams", "method"))
        if m is None:
            if raw is None:
                f.error(p, "must be an object")
            return None
        path = model.PathMatch()
        if (raw_path := f.mapping(m.get("path"), f"{p}.path", ("type", "value"))) is not None:
            kind = f.enum(raw_path.get("type"), f"{p}.path.type", PATH_MATCH_TYPES) or "Prefix"
            if kind == "RegularExpression":
                value = _regex(f, raw_path.get("value"), f"{p}.path.value")
            else:
                value = f.string(raw_path.get("value"), f"{p}.path.value", required=True, pattern=_PATH,
                                 what="an absolute path starting with / (no query, fragment or spaces)")
            if value is not None:
                path = model.PathMatch(kind, value)
        return model.Match(
            path=path,
            headers=f.items(m.get("headers"), f"{p}.headers", _value_match(f, header=True), max_items=32),
            query_params=f.items(m.get("queryParams"), f"{p}.queryParams", _value_match(f, header=False),
                                 max_items=32),
            method=f.enum(m.get("method"), f"{p}.method", METHODS),
        )
    return read


def _value_match(f: Fields, *, header: bool):
    def read(raw: Any, p: str) -> model.ValueMatch | None:
        m = f.mapping(raw, p, ("name", "value", "type"))
        if m is None:
            if raw is None:
                f.error(p, "must be an object with name and value")
            return None
        if header:
            name = f.header_name(m.get("name"), f"{p}.name")
        else:
            name = f.string(m.get("name"), f"{p}.name", required=True, max_len=256)
        kind = f.enum(m.get("type"), f"{p}.type", VALUE_MATCH_TYPES) or "Exact"
        if kind == "RegularExpression":
            value = _regex(f, m.get("value"), f"{p}.value")
        else:
            value = f.header_value(m.get("value"), f"{p}.value", max_len=4096)
        return model.ValueMatch(name, value, kind) if name is not None and value is not None else None
    return read


def _regex(f: Fields, raw: Any, path: str) -> str | None:
    """A regular expression as Envoy's RE2 engine will compile it."""
    text = f.string(raw, path, required=True, max_len=1024)
    if text is None:
        return None
    try:
        compiled = re2.compile(text)
    except re2.error as exc:
        message = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        f.error(path, f"invalid regular expression (RE2 syntax): {message}")
        return None
    if compiled.programsize > MAX_REGEX_PROGRAM_SIZE:
        f.error(path, f"regular expression is too complex: RE2 program size {compiled.programsize} exceeds "
                      f"Envoy's limit of {MAX_REGEX_PROGRAM_SIZE}")
        return None
    return text


def _backend_ref(f: Fields):
    def read(raw: Any, p: str) -> model.BackendRef | None:
        ref = f.mapping(raw, p, ("name", "weight"))
        if ref is None:
            if raw is None:
                f.error(p, "must be an object with a name")
            return None
        name = f.string(ref.get("name"), f"{p}.name", required=True, max_len=253)
        weight = _default(f.integer(ref.get("weight"), f"{p}.weight", minimum=0, maximum=1_000_000), 1)
        return model.BackendRef(name, weight) if name else None
    return read


def _retries(f: Fields, raw: Any, p: str) -> model.Retries | None:
    r = f.mapping(raw, p, ("attempts", "perTryTimeout", "retryOn", "statusCodes"))
    if r is None:
        return None
    d = model.Retries()
    retry_on = f.items(r.get("retryOn"), f"{p}.retryOn", lambda v, q: f.enum(v, q, RETRY_ON, required=True),
                       max_items=len(RETRY_ON))
    codes = f.items(r.get("statusCodes"), f"{p}.statusCodes",
                    lambda v, q: f.integer(v, q, minimum=100, maximum=599, required=True), max_items=32)
    if codes and "retriable-status-codes" not in (retry_on or d.retry_on):
        f.error(f"{p}.statusCodes", "needs retriable-status-codes in retryOn")
    return model.Retries(
        attempts=_default(f.integer(r.get("attempts"), f"{p}.attempts", minimum=0, maximum=10), d.attempts),
        per_try_timeout_ms=f.duration(r.get("perTryTimeout"), f"{p}.perTryTimeout", minimum_ms=1),
        retry_on=tuple(dict.fromkeys(retry_on)) or d.retry_on,
        status_codes=codes,
    )


def _rewrite(f: Fields, raw: Any, p: str) -> model.Rewrite | None:
    r = f.mapping(raw, p, ("pathPrefix", "hostname"))
    if r is None:
        return None
    return model.Rewrite(
        path_prefix=f.string(r.get("pathPrefix"), f"{p}.pathPrefix", pattern=_PATH, what="an absolute path"),
        hostname=f.dns_name(r.get("hostname"), f"{p}.hostname"),
    )


def _header_modifier(f: Fields, raw: Any, p: str, *, request: bool = False) -> model.HeaderModifier | None:
    m = f.mapping(raw, p, ("set", "add", "remove"))
    if m is None:
        return None

    def modifiable(name: str | None, path: str) -> str | None:
        # Envoy refuses to add, set or remove pseudo-headers and Host, on requests and responses alike
        # (":-prefixed or host headers may not be modified"); pseudo-headers are not tokens anyway.
        if name == "host":
            f.error(path, "the Host header cannot be modified" + ("; use rewrite.hostname" if request else ""))
            return None
        return name

    def header(raw_h: Any, q: str) -> model.HeaderValue | None:
        h = f.mapping(raw_h, q, ("name", "value"))
        if h is None:
            if raw_h is None:
                f.error(q, "must be an object with name and value")
            return None
        name = modifiable(f.header_name(h.get("name"), f"{q}.name"), f"{q}.name")
        value = f.header_value(h.get("value"), f"{q}.value")
        return model.HeaderValue(name, value) if name is not None and value is not None else None

    return model.HeaderModifier(
        set=f.items(m.get("set"), f"{p}.set", header, max_items=64),
        add=f.items(m.get("add"), f"{p}.add", header, max_items=64),
        remove=f.items(m.get("remove"), f"{p}.remove", lambda v, q: modifiable(f.header_name(v, q), q),
                       max_items=64),
    )


def _redirect(f: Fields, raw: Any, p: str) -> model.Redirect | None:
    r = f.mapping(raw, p, ("scheme", "hostname", "port", "path", "statusCode"))
    if r is None:
        return None
    # An integer first: 301.0 or True must not pass for a redirect code.
    code = f.integer(r.get("statusCode"), f"{p}.statusCode", minimum=-2**63, maximum=2**63)
    if code is not None and code not in REDIRECT_CODES:
        f.error(f"{p}.statusCode", f"{code!r} is not one of: {', '.join(map(str, REDIRECT_CODES))}")
        code = None
    return model.Redirect(
        scheme=f.enum(r.get("scheme"), f"{p}.scheme", ("http", "https")),
        hostname=f.dns_name(r.get("hostname"), f"{p}.hostname"),
        port=f.port(r.get("port"), f"{p}.port"),
        path=f.string(r.get("path"), f"{p}.path", pattern=_PATH, what="an absolute path"),
        status_code=code or 302,
    )


def _direct_response(f: Fields, raw: Any, p: str) -> model.DirectResponse | None:
    r = f.mapping(raw, p, ("status", "body"))
    if r is None:
        return None
    status = f.integer(r.get("status"), f"{p}.status", minimum=200, maximum=599, required=True)
    body = f.string(r.get("body"), f"{p}.body", max_len=MAX_DIRECT_RESPONSE_BODY) or ""
    if len(body.encode()) > MAX_DIRECT_RESPONSE_BODY:
        f.error(f"{p}.body", f"is larger than Envoy's limit of {MAX_DIRECT_RESPONSE_BODY} bytes")
    return model.DirectResponse(status, body) if status is not None else None


def _mirror(f: Fields, raw: Any, p: str) -> model.Mirror | None:
    m = f.mapping(raw, p, ("backend", "percent"))
    if m is None:
        return None
    name = f.string(m.get("backend"), f"{p}.backend", required=True, max_len=253)
    percent = _default(f.integer(m.get("percent"), f"{p}.percent", minimum=0, maximum=100), 100)
    return model.Mirror(name, percent) if name else None


def _default(value: int | None, default: int) -> int:
    """`value or default` would turn an explicit 0 into the default."""
    return default if value is None else value
