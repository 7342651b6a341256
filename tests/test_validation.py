"""Unit tests of the user-facing model and its validation, and of the build step's status logic.

Validation's promise: every problem is reported with the path of the field and a precise message, in
one pass, and anything that passes translates into configuration a real Envoy accepts (the latter is
proved against Envoy in test_translate_golden.py). Input of any shape never raises.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from typing import Any

import pytest

from xds_operator.api import model
from xds_operator.api.conditions import ACCEPTED, RESOLVED_REFS
from xds_operator.api.durations import parse_duration_ms
from xds_operator.api.fields import FieldError
from xds_operator.api.objects import API_VERSION, ObjectKey, UserObject
from xds_operator.api.validation import validate
from xds_operator.ir.builder import Builder
from xds_operator.ir.ir import cluster_name
from xds_operator.sources.state import StateStore
from xds_operator.translate import translate

# -- helpers -------------------------------------------------------------------------------------


def route(spec: Any, name: str = "r", namespace: str = "ns", generation: int = 1, kind: str = "Route") -> UserObject:
    return UserObject(ObjectKey(kind, namespace, name), spec, generation)


def backend(spec: Any, name: str = "b", namespace: str = "ns", generation: int = 1) -> UserObject:
    return UserObject(ObjectKey("Backend", namespace, name), spec, generation)


def valid(obj: UserObject):
    spec, errors = validate(obj)
    assert errors == [], [str(e) for e in errors]
    assert spec is not None
    return spec


def errors_of(obj: UserObject) -> dict[str, str]:
    """path -> message (the tests use specs with at most one error per path)."""
    spec, errors = validate(obj)
    assert spec is None and errors, "expected the spec to be refused"
    assert all(isinstance(e, FieldError) for e in errors)
    out: dict[str, str] = {}
    for e in errors:
        out[e.path] = f"{out[e.path]} | {e.message}" if e.path in out else e.message
    return out


def only_error(obj: UserObject) -> tuple[str, str]:
    spec, errors = validate(obj)
    assert spec is None and len(errors) == 1, [str(e) for e in errors]
    return errors[0].path, errors[0].message


EP = [{"address": "10.0.0.1", "port": 80}]


def rule_spec(**rule) -> dict:
    """A Route spec with one rule; `backends` defaults to one Backend named b."""
    if not {"backends", "redirect", "directResponse"} & rule.keys():
        rule["backends"] = [{"name": "b"}]
    return {"port": 8080, "rules": [rule]}


def route_error(**rule) -> tuple[str, str]:
    return only_error(route(rule_spec(**rule)))


def valid_rule(**rule) -> model.Rule:
    spec = valid(route(rule_spec(**rule)))
    assert len(spec.rules) == 1
    return spec.rules[0]


# -- objects and durations ------------------------------------------------------------------------


def test_from_manifest_defaults_and_fields():
    obj = UserObject.from_manifest({"apiVersion": API_VERSION, "kind": "Route",
                                    "metadata": {"name": "r"}, "spec": {"rules": []}}, origin="f.yaml:3")
    assert obj.key == ObjectKey("Route", "default", "r")
    assert (obj.generation, obj.origin, obj.uid, obj.spec) == (1, "f.yaml:3", "", {"rules": []})
    obj = UserObject.from_manifest({"kind": "Backend", "metadata": {
        "name": "b", "namespace": "prod", "generation": 7, "uid": "u-1", "labels": {"app": "x"}}},
        default_namespace="other")
    assert obj.key == ObjectKey("Backend", "prod", "b")
    assert (obj.generation, obj.uid, obj.spec) == (7, "u-1", None)
    assert str(obj.key) == "Backend/prod/b"


@pytest.mark.parametrize("text, ms", [
    ("0s", 0), ("1ms", 1), ("250ms", 250), ("10s", 10_000), ("1m30s", 90_000), ("2h", 7_200_000),
    ("1h2m3s4ms", 3_723_004), ("99999ms", 99_999), ("1s500ms", 1_500),
])
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "1", "1.5s", "-1s", "1d", "1S", " 1s", "1s ", "123456s", "1s1s1s1s1s", "s",
                                  "1 s", "1µs", "١s", 5, None])  # noqa: RUF001 (an Arabic-Indic digit on purpose)
def test_bad_durations(text):
    with pytest.raises(ValueError, match="is not a duration such as 500ms, 10s, 1m30s or 1h"):
        parse_duration_ms(text)


def test_metadata_and_kind():
    assert only_error(UserObject(ObjectKey("Backend", "ns", ""), {"endpoints": EP})) == \
        ("metadata.name", "is required")
    assert only_error(route({}, kind="Gateway")) == ("kind", "'Gateway' is not Route or Backend")


# -- Backend -----------------------------------------------------------------------------------------


def test_backend_defaults():
    spec = valid(backend({"endpoints": EP}))
    assert spec == model.BackendSpec(endpoints=(model.StaticEndpoint("10.0.0.1", 80),))
    assert (spec.protocol, spec.load_balancer, spec.connect_timeout_ms) == ("HTTP1", "ROUND_ROBIN", 5_000)
    assert spec.service is spec.dns is spec.health_check is spec.circuit_breaker is spec.outlier_detection is None


def test_backend_every_field():
    spec = valid(backend({
        "endpoints": [{"address": "10.0.0.1", "port": 1}, {"address": "FD00:0:0::1", "port": 65535}],
        "protocol": "HTTP2", "loadBalancer": "MAGLEV", "connectTimeout": "1h",
        "healthCheck": {"path": "/healthz", "interval": "5s", "timeout": "1s", "healthyThreshold": 2,
                        "unhealthyThreshold": 100},
        "circuitBreaker": {"maxConnections": 1, "maxPendingRequests": 2, "maxRequests": 3, "maxRetries": 2**31 - 1},
        "outlierDetection": {"consecutive5xx": 1000, "interval": "1ms", "baseEjectionTime": "1m",
                             "maxEjectionPercent": 100},
    }))
    assert spec == model.BackendSpec(
        endpoints=(model.StaticEndpoint("10.0.0.1", 1), model.StaticEndpoint("fd00::1", 65535)),  # normalised IPv6
        protocol="HTTP2", load_balancer="MAGLEV", connect_timeout_ms=3_600_000,
        health_check=model.HealthCheck("/healthz", 5_000, 1_000, 2, 100),
        circuit_breaker=model.CircuitBreaker(1, 2, 3, 2**31 - 1),
        outlier_detection=model.OutlierDetection(1000, 1, 60_000, 100),
    )


@pytest.mark.parametrize("lb", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"])
def test_backend_load_balancers(lb):
    assert valid(backend({"endpoints": EP, "loadBalancer": lb})).load_balancer == lb


def test_backend_targets():
    assert valid(backend({"service": {"name": "web", "port": 8080}})).service == model.ServiceRef("web", 8080)
    assert valid(backend({"service": {"name": "web", "port": "http"}})).service == model.ServiceRef("web", "http")
    assert valid(backend({"dns": {"hostname": "api.example.com", "port": 443}})).dns == \
        model.DnsTarget("api.example.com", 443)
    assert valid(backend({"dns": {"hostname": "localhost", "port": 1}})).dns == model.DnsTarget("localhost", 1)


def test_backend_block_defaults():
    spec = valid(backend({"endpoints": EP, "healthCheck": {}, "circuitBreaker": {}, "outlierDetection": {}}))
    assert spec.health_check == model.HealthCheck() == model.HealthCheck("/", 10_000, 2_000, 1, 3)
    assert spec.circuit_breaker == model.CircuitBreaker(None, None, None, None)
    assert spec.outlier_detection == model.OutlierDetection() == model.OutlierDetection(5, 10_000, 30_000, 10)
    # An explicit 0 is kept, not replaced by the default.
    assert valid(backend({"endpoints": EP, "outlierDetection": {"maxEjectionPercent": 0}})) \
        .outlier_detection.max_ejection_percent == 0


@pytest.mark.parametrize("spec, message", [
    ({}, "exactly one of service, endpoints or dns must be set"),
    ({"endpoints": EP, "dns": {"hostname": "a.com", "port": 80}},
     "exactly one of service, endpoints or dns must be set (found endpoints, dns)"),
    ({"service": {"name": "s", "port": 80}, "endpoints": EP, "dns": {"hostname": "a.com", "port": 80}},
     "exactly one of service, endpoints or dns must be set (found service, endpoints, dns)"),
    (None, "is required"),
    ([], "must be an object, not a list"),
    ("endpoints", "must be an object, not a string"),
])
def test_backend_exactly_one_target(spec, message):
    assert only_error(backend(spec)) == ("spec", message)


@pytest.mark.parametrize("spec, path, message", [
    ({"endpoints": EP, "protocl": "HTTP2"}, "spec.protocl",
     "unknown field (expected one of: circuitBreaker, connectTimeout, dns, endpoints, healthCheck, loadBalancer, "
     "outlierDetection, protocol, service, tls)"),
    ({"endpoints": [{"address": "10.0.0.1", "port": 80, "weight": 1}]}, "spec.endpoints[0].weight",
     "unknown field (expected one of: address, port)"),
    ({"endpoints": EP, "healthCheck": {"intervall": "1s"}}, "spec.healthCheck.intervall",
     "unknown field (expected one of: healthyThreshold, interval, path, timeout, unhealthyThreshold)"),
    ({"service": {"name": "s", "port": 80, "namespace": "x"}}, "spec.service.namespace",
     "unknown field (expected one of: name, port)"),
    ({"dns": {"hostname": "a.com", "port": 80, "ttl": 1}}, "spec.dns.ttl",
     "unknown field (expected one of: hostname, port)"),
    ({"endpoints": EP, "circuitBreaker": {"maxConnection": 1}}, "spec.circuitBreaker.maxConnection",
     "unknown field (expected one of: maxConnections, maxPendingRequests, maxRequests, maxRetries)"),
    ({"endpoints": EP, "outlierDetection": {"consecutive5XX": 1}}, "spec.outlierDetection.consecutive5XX",
     "unknown field (expected one of: baseEjectionTime, consecutive5xx, interval, maxEjectionPercent)"),
    # types
    ({"endpoints": {"address": "10.0.0.1", "port": 80}}, "spec.endpoints", "must be a list, not an object"),
    ({"endpoints": [{"address": "10.0.0.1", "port": "80"}]}, "spec.endpoints[0].port",
     "must be an integer, not a string"),
    ({"endpoints": [{"address": "10.0.0.1", "port": True}]}, "spec.endpoints[0].port",
     "must be an integer, not a boolean"),
    ({"endpoints": [{"address": "10.0.0.1", "port": 80.0}]}, "spec.endpoints[0].port",
     "must be an integer, not a number"),
    ({"endpoints": [{"address": 10, "port": 80}]}, "spec.endpoints[0].address", "must be a string, not an integer"),
    ({"endpoints": EP, "protocol": ["HTTP2"]}, "spec.protocol", "must be a string, not a list"),
    ({"endpoints": EP, "connectTimeout": 5}, "spec.connectTimeout", "must be a string, not an integer"),
    ({"endpoints": EP, "healthCheck": "yes"}, "spec.healthCheck", "must be an object, not a string"),
    # values
    ({"endpoints": []}, "spec.endpoints", "must list at least one endpoint"),
    ({"endpoints": [{"address": "backend.local", "port": 80}]}, "spec.endpoints[0].address",
     "'backend.local' is not an IPv4 or IPv6 address (use spec.dns for host names)"),
    ({"endpoints": [{"address": "10.0.0.256", "port": 80}]}, "spec.endpoints[0].address",
     "'10.0.0.256' is not an IPv4 or IPv6 address (use spec.dns for host names)"),
    ({"endpoints": [{"port": 80}]}, "spec.endpoints[0].address", "is required"),
    ({"endpoints": [{"address": "10.0.0.1"}]}, "spec.endpoints[0].port", "is required"),
    ({"endpoints": [{"address": "10.0.0.1", "port": 0}]}, "spec.endpoints[0].port", "0 is out of range [1, 65535]"),
    ({"endpoints": [{"address": "10.0.0.1", "port": 65536}]}, "spec.endpoints[0].port",
     "65536 is out of range [1, 65535]"),
    ({"service": {"name": "Web", "port": 80}}, "spec.service.name", "'Web' is not a lower-case DNS label (RFC 1035)"),
    ({"service": {"name": "web.ns", "port": 80}}, "spec.service.name",
     "'web.ns' is not a lower-case DNS label (RFC 1035)"),
    ({"service": {"port": 80}}, "spec.service.name", "is required"),
    ({"service": {"name": "web", "port": "HTTP_1"}}, "spec.service.port",
     "'HTTP_1' is not a lower-case DNS label (RFC 1035)"),
    ({"service": {"name": "web", "port": 0}}, "spec.service.port", "0 is out of range [1, 65535]"),
    ({"service": {"name": "web"}}, "spec.service.port", "is required"),
    ({"dns": {"hostname": "Example.com", "port": 80}}, "spec.dns.hostname",
     "'Example.com' is not a lower-case DNS name (RFC 1123)"),
    ({"dns": {"hostname": "*.example.com", "port": 80}}, "spec.dns.hostname",
     "'*.example.com' is not a lower-case DNS name (RFC 1123)"),
    ({"dns": {"hostname": "a..b", "port": 80}}, "spec.dns.hostname", "'a..b' is not a lower-case DNS name (RFC 1123)"),
    ({"dns": {"hostname": "-a.com", "port": 80}}, "spec.dns.hostname",
     "'-a.com' is not a lower-case DNS name (RFC 1123)"),
    ({"dns": {"hostname": "10.0.0.1:80", "port": 80}}, "spec.dns.hostname",
     "'10.0.0.1:80' is not a lower-case DNS name (RFC 1123)"),
    ({"dns": {"hostname": "a" * 254, "port": 80}}, "spec.dns.hostname",
     "is 254 characters long; at most 253 are allowed"),
    ({"dns": {"hostname": "a.com"}}, "spec.dns.port", "is required"),
    ({"endpoints": EP, "protocol": "HTTP3"}, "spec.protocol", "'HTTP3' is not one of: HTTP1, HTTP2"),
    ({"endpoints": EP, "protocol": "http2"}, "spec.protocol", "'http2' is not one of: HTTP1, HTTP2"),
    ({"endpoints": EP, "loadBalancer": "round_robin"}, "spec.loadBalancer",
     "'round_robin' is not one of: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV"),
    ({"endpoints": EP, "connectTimeout": "0s"}, "spec.connectTimeout", "0s is out of range [1ms, 3600000ms]"),
    ({"endpoints": EP, "connectTimeout": "61m"}, "spec.connectTimeout", "61m is out of range [1ms, 3600000ms]"),
    ({"endpoints": EP, "connectTimeout": "5"}, "spec.connectTimeout",
     "'5' is not a duration such as 500ms, 10s, 1m30s or 1h"),
    ({"endpoints": EP, "healthCheck": {"path": "healthz"}}, "spec.healthCheck.path",
     "'healthz' is not an absolute path such as /healthz"),
    ({"endpoints": EP, "healthCheck": {"path": "/health?full=1"}}, "spec.healthCheck.path",
     "'/health?full=1' is not an absolute path such as /healthz"),
    ({"endpoints": EP, "healthCheck": {"path": "/a\x00"}}, "spec.healthCheck.path",
     "'/a\\x00' is not an absolute path such as /healthz"),
    ({"endpoints": EP, "healthCheck": {"path": "/a\x01"}}, "spec.healthCheck.path",
     "'/a\\x01' is not an absolute path such as /healthz"),
    ({"endpoints": EP, "healthCheck": {"interval": "0ms"}}, "spec.healthCheck.interval",
     "0ms is out of range [1ms, 86400000ms]"),
    ({"endpoints": EP, "healthCheck": {"timeout": "25h"}}, "spec.healthCheck.timeout",
     "25h is out of range [1ms, 86400000ms]"),
    ({"endpoints": EP, "healthCheck": {"healthyThreshold": 0}}, "spec.healthCheck.healthyThreshold",
     "0 is out of range [1, 100]"),
    ({"endpoints": EP, "healthCheck": {"unhealthyThreshold": 101}}, "spec.healthCheck.unhealthyThreshold",
     "101 is out of range [1, 100]"),
    ({"endpoints": EP, "circuitBreaker": {"maxConnections": 0}}, "spec.circuitBreaker.maxConnections",
     "0 is out of range [1, 2147483647]"),
    ({"endpoints": EP, "circuitBreaker": {"maxRetries": 2**31}}, "spec.circuitBreaker.maxRetries",
     "2147483648 is out of range [1, 2147483647]"),
    ({"endpoints": EP, "outlierDetection": {"consecutive5xx": 0}}, "spec.outlierDetection.consecutive5xx",
     "0 is out of range [1, 1000]"),
    ({"endpoints": EP, "outlierDetection": {"maxEjectionPercent": 101}}, "spec.outlierDetection.maxEjectionPercent",
     "101 is out of range [0, 100]"),
    ({"endpoints": EP, "outlierDetection": {"maxEjectionPercent": -1}}, "spec.outlierDetection.maxEjectionPercent",
     "-1 is out of range [0, 100]"),
    ({"endpoints": EP, "outlierDetection": {"baseEjectionTime": "1 m"}}, "spec.outlierDetection.baseEjectionTime",
     "'1 m' is not a duration such as 500ms, 10s, 1m30s or 1h"),
])
def test_backend_field_errors(spec, path, message):
    assert only_error(backend(spec)) == (path, message)


def test_backend_reports_every_problem_at_once():
    errors = errors_of(backend({"endpoints": [{"address": "x", "port": 0}, "10.0.0.1:80"], "protocol": "h2",
                                "connectTimeout": "soon", "extra": 1}))
    assert set(errors) == {"spec.extra", "spec.endpoints[0].address", "spec.endpoints[0].port", "spec.endpoints[1]",
                           "spec.protocol", "spec.connectTimeout"}
    assert errors["spec.endpoints[1]"] == "must be an object, not a string"  # once, not twice


# -- Route: happy paths ----------------------------------------------------------------------------


def test_route_defaults():
    spec = valid(route({"rules": [{"backends": [{"name": "b"}]}]}))
    assert spec == model.RouteSpec(port=15001, hostnames=("*",), proxies=(),
                                 rules=(model.Rule(backends=(model.BackendRef("b", 1),)),))
    rule = spec.rules[0]
    assert rule.matches == (model.Match(path=model.PathMatch("Prefix", "/")),)
    assert rule.timeout_ms is rule.retries is rule.rewrite is rule.request_headers is rule.response_headers is None
    assert rule.redirect is rule.direct_response is rule.mirror is None


def test_route_every_field():
    spec = valid(route({
        "port": 1024,
        "hostnames": ["example.com", "*.example.com", "*", "a-b.c0.example"],
        "proxies": ["edge", "internal", "edge"],
        "rules": [{
            "matches": [
                {"path": {"type": "Exact", "value": "/exact"}},
                {"path": {"value": "/prefix/"}, "method": "PATCH",
                 "headers": [{"name": "X-Tenant", "value": "a\tb"},
                             {"name": "x-v", "type": "RegularExpression", "value": "v[0-9]+"}],
                 "queryParams": [{"name": "Q", "value": ""},
                                 {"name": "p", "type": "RegularExpression", "value": ".*"}]},
                {"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}},
            ],
            "backends": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1_000_000}],
            "timeout": "1m30s",
            "retries": {"attempts": 0, "perTryTimeout": "250ms", "retryOn": ["5xx", "retriable-status-codes", "5xx"],
                        "statusCodes": [100, 599]},
            "rewrite": {"pathPrefix": "/", "hostname": "internal.example"},
            "requestHeaders": {"set": [{"name": "X-A", "value": "1"}], "add": [{"name": "x-b", "value": ""}],
                               "remove": ["Cookie"]},
            "responseHeaders": {"set": [{"name": "cache-control", "value": "no-store"}], "remove": ["server"]},
            "mirror": {"backend": "shadow", "percent": 0},
        }],
    }))
    assert spec == model.RouteSpec(
        port=1024,
        hostnames=("example.com", "*.example.com", "*", "a-b.c0.example"),
        proxies=("edge", "internal"),  # sorted, without duplicates
        rules=(model.Rule(
            matches=(
                model.Match(path=model.PathMatch("Exact", "/exact")),
                model.Match(path=model.PathMatch("Prefix", "/prefix/"), method="PATCH",
                          headers=(model.ValueMatch("x-tenant", "a\tb"),  # header names lower-cased
                                   model.ValueMatch("x-v", "v[0-9]+", "RegularExpression")),
                          query_params=(model.ValueMatch("Q", ""),  # query parameter names are case-sensitive
                                        model.ValueMatch("p", ".*", "RegularExpression"))),
                model.Match(path=model.PathMatch("RegularExpression", "/v[0-9]+/.*")),
            ),
            backends=(model.BackendRef("a", 0), model.BackendRef("b", 1_000_000)),
            timeout_ms=90_000,
            retries=model.Retries(0, 250, ("5xx", "retriable-status-codes"), (100, 599)),
            rewrite=model.Rewrite("/", "internal.example"),
            request_headers=model.HeaderModifier(set=(model.HeaderValue("x-a", "1"),), add=(model.HeaderValue("x-b", ""),),
                                               remove=("cookie",)),
            response_headers=model.HeaderModifier(set=(model.HeaderValue("cache-control", "no-store"),),
                                                remove=("server",)),
            mirror=model.Mirror("shadow", 0),
        ),),
    )


def test_route_rule_defaults():
    rule = valid_rule(retries={}, rewrite={}, mirror={"backend": "m"}, requestHeaders={}, timeout="0s")
    assert rule.retries == model.Retries(1, None, ("connect-failure", "refused-stream", "gateway-error"), ())
    assert rule.rewrite == model.Rewrite(None, None)
    assert rule.mirror == model.Mirror("m", 100)
    assert rule.request_headers == model.HeaderModifier()
    assert rule.timeout_ms == 0  # 0s: no timeout, kept (not the default None)
    assert valid_rule(retries={"retryOn": []}).retries.retry_on == model.Retries().retry_on
    assert valid_rule(matches=[{}]).matches == (model.Match(),)
    assert valid_rule(matches=[{"path": {"type": "Exact", "value": "/"}}]).matches[0].path == \
        model.PathMatch("Exact", "/")


def test_route_redirect_and_direct_response():
    assert valid_rule(redirect={}).redirect == model.Redirect(None, None, None, None, 302)
    assert valid_rule(redirect={"scheme": "https", "hostname": "new.example.com", "port": 8443, "path": "/new",
                                "statusCode": 308}).redirect == \
        model.Redirect("https", "new.example.com", 8443, "/new", 308)
    for code in (301, 302, 303, 307, 308):
        assert valid_rule(redirect={"statusCode": code}).redirect.status_code == code
    assert valid_rule(directResponse={"status": 204}).direct_response == model.DirectResponse(204, "")
    assert valid_rule(directResponse={"status": 599, "body": "x" * 4096}).direct_response.body == "x" * 4096
    assert valid_rule(directResponse={"status": 200, "body": "é" * 2048}).direct_response.body == "é" * 2048
    # header modifiers apply to redirects and direct responses too
    assert valid_rule(directResponse={"status": 200}, responseHeaders={"set": [{"name": "a", "value": "b"}]}) \
        .response_headers.set == (model.HeaderValue("a", "b"),)


@pytest.mark.parametrize("hostname", ["*", "example.com", "*.example.com", "localhost", "10.0.0.1", "a" * 253,
                                      "xn--bcher-kva.example", "0.example"])
def test_route_hostnames_ok(hostname):
    spec = valid(route({"hostnames": [hostname], "rules": [{"directResponse": {"status": 200}}]}))
    assert spec.hostnames == (hostname,)


@pytest.mark.parametrize("hostname, message", [
    ("Example.com", "'Example.com' is not a lower-case DNS name (RFC 1123)"),
    ("*example.com", "'*example.com' is not a lower-case DNS name (RFC 1123)"),
    ("foo.*.com", "'foo.*.com' is not a lower-case DNS name (RFC 1123)"),
    ("*.*.com", "'*.com' is not a lower-case DNS name (RFC 1123)"),
    ("example.*", "'example.*' is not a lower-case DNS name (RFC 1123)"),
    ("**", "'**' is not a lower-case DNS name (RFC 1123)"),
    ("*.", "'' is not a lower-case DNS name (RFC 1123)"),
    ("example.com:8080", "'example.com:8080' is not a lower-case DNS name (RFC 1123)"),
    ("example.com.", "'example.com.' is not a lower-case DNS name (RFC 1123)"),
    ("exa mple.com", "'exa mple.com' is not a lower-case DNS name (RFC 1123)"),
    ("", "must not be empty"),
    ("a" * 254, "is 254 characters long; at most 253 are allowed"),
    (7, "must be a string, not an integer"),
    (None, "is required"),
])
def test_route_hostname_errors(hostname, message):
    assert only_error(route({"hostnames": [hostname], "rules": [{"directResponse": {"status": 200}}]})) == \
        ("spec.hostnames[0]", message)


def test_route_top_level_errors():
    def err(spec):
        return only_error(route(spec))
    rules = [{"directResponse": {"status": 200}}]
    assert err({"port": 1023, "rules": rules}) == ("spec.port", "1023 is out of range [1024, 65535]")
    assert err({"port": 80, "rules": rules}) == ("spec.port", "80 is out of range [1024, 65535]")
    assert err({"port": 65536, "rules": rules}) == ("spec.port", "65536 is out of range [1024, 65535]")
    assert err({"port": "8080", "rules": rules}) == ("spec.port", "must be an integer, not a string")
    assert valid(route({"port": 65535, "rules": rules})).port == 65535
    assert err({"port": 8080}) == ("spec.rules", "is required: a Route needs at least one rule")
    assert err({"rules": {"backends": []}}) == ("spec.rules", "must be a list, not an object")
    assert err({"rules": rules * 129}) == ("spec.rules", "has 129 items; at most 128 are allowed")
    assert len(valid(route({"rules": rules * 128})).rules) == 128
    assert err({"hostnames": ["a.com", "a.com"], "rules": rules}) == \
        ("spec.hostnames", "lists a hostname more than once")
    assert err({"hostnames": "a.com", "rules": rules}) == ("spec.hostnames", "must be a list, not a string")
    assert err({"hostnames": ["h.com"] * 65, "rules": rules}) == \
        ("spec.hostnames", "has 65 items; at most 64 are allowed")
    assert err({"proxies": [""], "rules": rules}) == ("spec.proxies[0]", "must not be empty")
    assert err({"proxies": [1], "rules": rules}) == ("spec.proxies[0]", "must be a string, not an integer")
    assert err({"rules": rules, "gateway": "x"}) == ("spec.gateway",
                                                     "unknown field (expected one of: hostnames, port, proxies, rules, tls)")
    assert err(None) == ("spec", "is required")
    assert err(["rules"]) == ("spec", "must be an object, not a list")
    assert only_error(route({"rules": ["x"]})) == ("spec.rules[0]", "must be an object, not a string")
    assert errors_of(route({"rules": [None]})) == {"spec.rules[0]": "must be an object"}


# -- Route: rule errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule, path, message", [
    # exactly one action
    ({"matches": [{}], "backends": None}, "spec.rules[0]",
     "exactly one of backends, redirect or directResponse must be set"),
    ({"backends": [{"name": "b"}], "redirect": {}}, "spec.rules[0]",
     "exactly one of backends, redirect or directResponse must be set (found backends, redirect)"),
    ({"redirect": {}, "directResponse": {"status": 200}}, "spec.rules[0]",
     "exactly one of backends, redirect or directResponse must be set (found redirect, directResponse)"),
    # only with backends
    ({"redirect": {}, "timeout": "1s"}, "spec.rules[0].timeout", "applies only to a rule that forwards to backends"),
    ({"directResponse": {"status": 200}, "retries": {}}, "spec.rules[0].retries",
     "applies only to a rule that forwards to backends"),
    ({"redirect": {}, "rewrite": {}}, "spec.rules[0].rewrite", "applies only to a rule that forwards to backends"),
    ({"directResponse": {"status": 200}, "mirror": {"backend": "m"}}, "spec.rules[0].mirror",
     "applies only to a rule that forwards to backends"),
    # backends
    ({"backends": []}, "spec.rules[0].backends", "must name at least one backend"),
    ({"backends": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}, "spec.rules[0].backends",
     "weights must not all be zero"),
    ({"backends": [{"name": "a"}, {"name": "b"}, {"name": "a", "weight": 2}]}, "spec.rules[0].backends",
     "names a backend more than once"),
    ({"backends": [{"name": "a", "weight": -1}, {"name": "b"}]}, "spec.rules[0].backends[0].weight",
     "-1 is out of range [0, 1000000]"),
    ({"backends": [{"name": "a", "weight": 1_000_001}]}, "spec.rules[0].backends[0].weight",
     "1000001 is out of range [0, 1000000]"),
    ({"backends": [{"name": "a", "weight": "1"}]}, "spec.rules[0].backends[0].weight",
     "must be an integer, not a string"),
    ({"backends": [{"name": "a", "port": 80}]}, "spec.rules[0].backends[0].port",
     "unknown field (expected one of: name, weight)"),
    ({"backends": [{"name": "a"}], "filters": []}, "spec.rules[0].filters",
     "unknown field (expected one of: backends, directResponse, matches, mirror, redirect, requestHeaders, "
     "responseHeaders, retries, rewrite, timeout)"),
    ({"backends": [{"name": "a"}], "timeout": "25h"}, "spec.rules[0].timeout", "25h is out of range [0ms, 86400000ms]"),
    ({"backends": [{"name": "a"}], "timeout": "1.5s"}, "spec.rules[0].timeout",
     "'1.5s' is not a duration such as 500ms, 10s, 1m30s or 1h"),
    # matches
    ({"matches": {"path": {}}}, "spec.rules[0].matches", "must be a list, not an object"),
    ({"matches": [{"path": {"type": "Exact"}}]}, "spec.rules[0].matches[0].path.value", "is required"),
    ({"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}, "spec.rules[0].matches[0].path.type",
     "'PathPrefix' is not one of: Prefix, Exact, RegularExpression"),
    ({"matches": [{"path": {"value": "api"}}]}, "spec.rules[0].matches[0].path.value",
     "'api' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"type": "Exact", "value": "/a?b=1"}}]}, "spec.rules[0].matches[0].path.value",
     "'/a?b=1' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"value": "/a#frag"}}]}, "spec.rules[0].matches[0].path.value",
     "'/a#frag' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"value": "/a b"}}]}, "spec.rules[0].matches[0].path.value",
     "'/a b' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"value": "/a\r\n"}}]}, "spec.rules[0].matches[0].path.value",
     "'/a\\r\\n' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"value": "/a\x00"}}]}, "spec.rules[0].matches[0].path.value",
     "'/a\\x00' is not an absolute path starting with / (no query, fragment or spaces)"),
    ({"matches": [{"path": {"value": "/", "regex": "x"}}]}, "spec.rules[0].matches[0].path.regex",
     "unknown field (expected one of: type, value)"),
    ({"matches": [{"method": "get"}]}, "spec.rules[0].matches[0].method",
     "'get' is not one of: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"),
    ({"matches": [{"headers": [{"name": "x a", "value": "1"}]}]}, "spec.rules[0].matches[0].headers[0].name",
     "'x a' is not an HTTP header name (RFC 7230 token)"),
    ({"matches": [{"headers": [{"name": ":authority", "value": "1"}]}]}, "spec.rules[0].matches[0].headers[0].name",
     "':authority' is not an HTTP header name (RFC 7230 token)"),
    ({"matches": [{"headers": [{"name": "x", "value": "a\r\nb"}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "must not contain control characters such as CR, LF or NUL"),
    ({"matches": [{"headers": [{"name": "x", "value": "a\nb"}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "must not contain control characters such as CR, LF or NUL"),
    ({"matches": [{"headers": [{"name": "x", "value": "a\x00"}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "must not contain control characters such as CR, LF or NUL"),
    ({"matches": [{"headers": [{"name": "x", "value": "\x7f"}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "must not contain control characters such as CR, LF or NUL"),
    ({"matches": [{"headers": [{"name": "x"}]}]}, "spec.rules[0].matches[0].headers[0].value", "is required"),
    ({"matches": [{"headers": [{"name": "x", "value": 1}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "must be a string, not an integer"),
    ({"matches": [{"headers": [{"name": "x", "value": "1", "type": "Prefix"}]}]},
     "spec.rules[0].matches[0].headers[0].type", "'Prefix' is not one of: Exact, RegularExpression"),
    ({"matches": [{"headers": [{"name": "x", "value": "v" * 4097}]}]}, "spec.rules[0].matches[0].headers[0].value",
     "is 4097 characters long; at most 4096 are allowed"),
    ({"matches": [{"queryParams": [{"name": "", "value": "1"}]}]}, "spec.rules[0].matches[0].queryParams[0].name",
     "must not be empty"),
    ({"matches": [{"queryParams": [{"name": "q", "value": "1", "exact": True}]}]},
     "spec.rules[0].matches[0].queryParams[0].exact", "unknown field (expected one of: name, type, value)"),
    # retries
    ({"retries": {"attempts": 11}}, "spec.rules[0].retries.attempts", "11 is out of range [0, 10]"),
    ({"retries": {"attempts": -1}}, "spec.rules[0].retries.attempts", "-1 is out of range [0, 10]"),
    ({"retries": {"retryOn": ["5XX"]}}, "spec.rules[0].retries.retryOn[0]",
     "'5XX' is not one of: 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, "
     "retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure, "
     "cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"),
    ({"retries": {"retryOn": "5xx"}}, "spec.rules[0].retries.retryOn", "must be a list, not a string"),
    ({"retries": {"statusCodes": [503]}}, "spec.rules[0].retries.statusCodes",
     "needs retriable-status-codes in retryOn"),
    ({"retries": {"retryOn": ["retriable-status-codes"], "statusCodes": [600]}}, "spec.rules[0].retries.statusCodes[0]",
     "600 is out of range [100, 599]"),
    ({"retries": {"perTryTimeout": "0ms"}}, "spec.rules[0].retries.perTryTimeout",
     "0ms is out of range [1ms, 86400000ms]"),
    ({"retries": {"tries": 1}}, "spec.rules[0].retries.tries",
     "unknown field (expected one of: attempts, perTryTimeout, retryOn, statusCodes)"),
    # rewrite
    ({"rewrite": {"pathPrefix": "api"}}, "spec.rules[0].rewrite.pathPrefix", "'api' is not an absolute path"),
    ({"rewrite": {"pathPrefix": "/a\x00b"}}, "spec.rules[0].rewrite.pathPrefix", "'/a\\x00b' is not an absolute path"),
    ({"rewrite": {"hostname": "*.example.com"}}, "spec.rules[0].rewrite.hostname",
     "'*.example.com' is not a lower-case DNS name (RFC 1123)"),
    ({"rewrite": {"path": "/"}}, "spec.rules[0].rewrite.path", "unknown field (expected one of: hostname, pathPrefix)"),
    # mirror
    ({"mirror": {"percent": 10}}, "spec.rules[0].mirror.backend", "is required"),
    ({"mirror": {"backend": "m", "percent": 101}}, "spec.rules[0].mirror.percent", "101 is out of range [0, 100]"),
    ({"mirror": {"backend": "m", "percent": 50.5}}, "spec.rules[0].mirror.percent", "must be an integer, not a number"),
    # redirect
    ({"redirect": {"statusCode": 200}}, "spec.rules[0].redirect.statusCode",
     "200 is not one of: 301, 302, 303, 307, 308"),
    ({"redirect": {"statusCode": 304}}, "spec.rules[0].redirect.statusCode",
     "304 is not one of: 301, 302, 303, 307, 308"),
    ({"redirect": {"statusCode": "301"}}, "spec.rules[0].redirect.statusCode", "must be an integer, not a string"),
    ({"redirect": {"statusCode": 301.0}}, "spec.rules[0].redirect.statusCode", "must be an integer, not a number"),
    ({"redirect": {"statusCode": True}}, "spec.rules[0].redirect.statusCode", "must be an integer, not a boolean"),
    ({"redirect": {"scheme": "ftp"}}, "spec.rules[0].redirect.scheme", "'ftp' is not one of: http, https"),
    ({"redirect": {"port": 0}}, "spec.rules[0].redirect.port", "0 is out of range [1, 65535]"),
    ({"redirect": {"hostname": "Example.com"}}, "spec.rules[0].redirect.hostname",
     "'Example.com' is not a lower-case DNS name (RFC 1123)"),
    ({"redirect": {"path": "new"}}, "spec.rules[0].redirect.path", "'new' is not an absolute path"),
    ({"redirect": {"path": "/a\x00"}}, "spec.rules[0].redirect.path", "'/a\\x00' is not an absolute path"),
    ({"redirect": {"url": "https://x"}}, "spec.rules[0].redirect.url",
     "unknown field (expected one of: hostname, path, port, scheme, statusCode)"),
    # direct response
    ({"directResponse": {"status": 199}}, "spec.rules[0].directResponse.status", "199 is out of range [200, 599]"),
    ({"directResponse": {"status": 600}}, "spec.rules[0].directResponse.status", "600 is out of range [200, 599]"),
    ({"directResponse": {"body": "x"}}, "spec.rules[0].directResponse.status", "is required"),
    ({"directResponse": {"status": 200, "body": "x" * 4097}}, "spec.rules[0].directResponse.body",
     "is 4097 characters long; at most 4096 are allowed"),
    ({"directResponse": {"status": 200, "body": "é" * 2049}}, "spec.rules[0].directResponse.body",
     "is 4098 bytes in UTF-8, more than Envoy's limit of 4096 bytes"),
    ({"directResponse": {"status": 200, "body": 5}}, "spec.rules[0].directResponse.body",
     "must be a string, not an integer"),
    ({"directResponse": {"status": 200, "headers": {}}}, "spec.rules[0].directResponse.headers",
     "unknown field (expected one of: body, status)"),
])
def test_route_rule_errors(rule, path, message):
    assert only_error(route(rule_spec(**rule))) == (path, message)


@pytest.mark.parametrize("regex", ["/v[0-9]+/.*", "(?i)^/api$", "é+", "[^/]+\\.png", "a{96}", "\\d{1,3}", "(a|b)*c"])
def test_regexes_ok(regex):
    rule = valid_rule(matches=[{"path": {"type": "RegularExpression", "value": regex},
                                "headers": [{"name": "x", "type": "RegularExpression", "value": regex}],
                                "queryParams": [{"name": "q", "type": "RegularExpression", "value": regex}]}])
    match = rule.matches[0]
    assert (match.path.value, match.headers[0].value, match.query_params[0].value) == (regex, regex, regex)


@pytest.mark.parametrize("regex, message", [
    ("(?=x)", "invalid regular expression (RE2 syntax): invalid perl operator: (?="),
    ("(?!x)", "invalid regular expression (RE2 syntax): invalid perl operator: (?!"),
    ("(?<=a)b", "invalid regular expression (RE2 syntax): invalid perl operator: (?<="),
    ("(a)\\1", "invalid regular expression (RE2 syntax): invalid escape sequence: \\1"),
    ("(", "invalid regular expression (RE2 syntax): missing ): ("),
    ("a{1001}", "invalid regular expression (RE2 syntax): invalid repetition size: {1001}"),
    ("a{97}", "regular expression is too complex: RE2 program size 101 exceeds Envoy's limit of 100"),
    ("[a-z]{97}", "regular expression is too complex: RE2 program size 101 exceeds Envoy's limit of 100"),
    ("", "must not be empty"),
    ("x" * 1025, "is 1025 characters long; at most 1024 are allowed"),
])
def test_regex_errors(regex, message):
    for match, path in [
        ({"path": {"type": "RegularExpression", "value": regex}}, "spec.rules[0].matches[0].path.value"),
        ({"headers": [{"name": "x", "type": "RegularExpression", "value": regex}]},
         "spec.rules[0].matches[0].headers[0].value"),
        ({"queryParams": [{"name": "q", "type": "RegularExpression", "value": regex}]},
         "spec.rules[0].matches[0].queryParams[0].value"),
    ]:
        assert route_error(matches=[match]) == (path, message)


def test_a_bad_regex_leaves_stderr_clean():
    """RE2 logs its own copy of each error (absl, re2.cc) unless told not to: the user would see it
    next to the one-line message. A fresh process, so that absl's first-use banner would show too."""
    code = ("from xds_operator.api.objects import ObjectKey, UserObject\n"
            "from xds_operator.api.validation import validate\n"
            "spec = {'rules': [{'backends': [{'name': 'b'}], 'matches': [{'path': {'type': 'RegularExpression', "
            "'value': '(unclosed'}, 'headers': [{'name': 'x', 'type': 'RegularExpression', 'value': '(?=x)'}]}]}]}\n"
            "_, errors = validate(UserObject(ObjectKey('Route', 'ns', 'r'), spec))\n"
            "print(len(errors))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "2\n", "")


@pytest.mark.parametrize("where", ["requestHeaders", "responseHeaders"])
def test_header_modifier_errors(where):
    suffix = "; use rewrite.hostname" if where == "requestHeaders" else ""
    p = f"spec.rules[0].{where}"
    assert route_error(**{where: {"set": [{"name": "Host", "value": "x"}]}}) == \
        (f"{p}.set[0].name", "the Host header cannot be modified" + suffix)
    assert route_error(**{where: {"add": [{"name": "host", "value": "x"}]}}) == \
        (f"{p}.add[0].name", "the Host header cannot be modified" + suffix)
    assert route_error(**{where: {"remove": ["HOST"]}}) == \
        (f"{p}.remove[0]", "the Host header cannot be modified" + suffix)
    assert route_error(**{where: {"set": [{"name": ":path", "value": "/"}]}}) == \
        (f"{p}.set[0].name", "':path' is not an HTTP header name (RFC 7230 token)")
    assert route_error(**{where: {"remove": [":authority"]}}) == \
        (f"{p}.remove[0]", "':authority' is not an HTTP header name (RFC 7230 token)")
    assert route_error(**{where: {"set": [{"name": "x", "value": "a\r\nSet-Cookie: y"}]}}) == \
        (f"{p}.set[0].value", "must not contain control characters such as CR, LF or NUL")
    assert route_error(**{where: {"add": [{"name": "x"}]}}) == (f"{p}.add[0].value", "is required")
    assert route_error(**{where: {"add": [{"name": "x", "value": "1", "append": True}]}}) == \
        (f"{p}.add[0].append", "unknown field (expected one of: name, value)")
    assert route_error(**{where: {"replace": []}}) == \
        (f"{p}.replace", "unknown field (expected one of: add, remove, set)")
    assert route_error(**{where: {"remove": [1]}}) == (f"{p}.remove[0]", "must be a string, not an integer")
    assert route_error(**{where: {"set": [{"name": "", "value": "1"}]}}) == (f"{p}.set[0].name", "must not be empty")
    assert route_error(**{where: {"set": [{"name": "x" * 257, "value": "1"}]}}) == \
        (f"{p}.set[0].name", "is 257 characters long; at most 256 are allowed")
    # what is allowed: tokens (lower-cased), tabs and any other text in values
    modifier = valid_rule(**{where: {"set": [{"name": "X-Weird!#$%&'*+-.^_`|~", "value": "a\tb é"}]}})
    assert getattr(modifier, "request_headers" if where == "requestHeaders" else "response_headers").set == \
        (model.HeaderValue("x-weird!#$%&'*+-.^_`|~", "a\tb é"),)


def test_lone_surrogates_are_refused():
    # YAML ("\ud800") and JSON escapes produce them; RE2 and protobuf would raise on them.
    assert route_error(matches=[{"path": {"type": "RegularExpression", "value": "\ud800"}}]) == \
        ("spec.rules[0].matches[0].path.value", "must be valid Unicode text (it contains a lone surrogate)")
    assert route_error(directResponse={"status": 200, "body": "\udfff"}) == \
        ("spec.rules[0].directResponse.body", "must be valid Unicode text (it contains a lone surrogate)")
    assert route_error(matches=[{"queryParams": [{"name": "\ud800", "value": "x"}]}]) == \
        ("spec.rules[0].matches[0].queryParams[0].name", "must be valid Unicode text (it contains a lone surrogate)")


def test_route_reports_every_problem_at_once():
    errors = errors_of(route({"port": 80, "hostnames": ["A"], "rules": [
        {"backends": [], "matches": [{"method": "FETCH"}]},
        {"redirect": {"statusCode": 200}, "timeout": "1s"},
    ]}))
    assert set(errors) == {"spec.port", "spec.hostnames[0]", "spec.rules[0].backends",
                           "spec.rules[0].matches[0].method", "spec.rules[1].redirect.statusCode",
                           "spec.rules[1].timeout"}


# -- garbage of any shape never raises ----------------------------------------------------------------

# Strings that reach every check: boundaries, control characters, lone surrogates, regex edge cases, ...
EDGE_STRINGS = [
    "", " ", "*", "/", "//", "/a", "/a/", "/a/b", "/a//", "/a?b", "/a#b", "/a b", "/é", "/%2F", "a", "A", "é", "\t",
    "\r\n", "\x00", "\x7f", "\ud800", "1s", "0s", "0ms", "1ms", "25h", "1h", "1m30s", "99999h", "http", "https",
    "HTTP2", "MAGLEV", "Exact", "Prefix", "RegularExpression", "GET", "5xx", "retriable-status-codes", "host", "Host",
    ":path", "x-a", "X-A", "example.com", "*.example.com", "foo.*.com", "10.0.0.1", "::1", "fd00::1", "(?=x)", "(a)\\1",
    "a{96}", "a{97}", "\\pL+", "(", "[", ".*", "x" * 300, "y" * 5000, "b", "ns", "default", "edge",
]
SCHEMA_KEYS = [
    "service", "endpoints", "dns", "protocol", "loadBalancer", "connectTimeout", "healthCheck", "circuitBreaker",
    "outlierDetection", "name", "port", "address", "hostname", "path", "interval", "timeout", "healthyThreshold",
    "unhealthyThreshold", "maxConnections", "maxPendingRequests", "maxRequests", "maxRetries", "consecutive5xx",
    "baseEjectionTime", "maxEjectionPercent", "hostnames", "proxies", "rules", "matches", "backends", "retries",
    "rewrite", "requestHeaders", "responseHeaders", "redirect", "directResponse", "mirror", "type", "value",
    "headers", "queryParams", "method", "weight", "attempts", "perTryTimeout", "retryOn", "statusCodes",
    "pathPrefix", "set", "add", "remove", "scheme", "statusCode", "status", "body", "backend", "percent",
]
EDGE_NUMBERS = [0, 1, -1, 2, 80, 100, 301, 302, 599, 600, 1023, 1024, 4096, 65535, 65536, 2**31 - 1, 2**31, 2**63,
                -2**63, 10**30, 0.0, 1.5, -0.0, 301.0, math.inf, -math.inf, math.nan, True, False]


def junk(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON-like value (and a few that JSON lacks: NaN, huge integers, lone surrogates)."""
    roll = rng.random()
    if depth > 4 or roll < 0.15:
        return rng.choice([None, True, False])
    if roll < 0.35:
        return rng.choice(EDGE_NUMBERS) if rng.random() < 0.7 else rng.randint(-10**6, 10**6)
    if roll < 0.65:
        if rng.random() < 0.8:
            return rng.choice(EDGE_STRINGS)
        return "".join(chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0, 0x10ffff)]))
                       for _ in range(rng.randint(0, 12)))
    if roll < 0.8:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {(rng.choice(SCHEMA_KEYS) if rng.random() < 0.8 else junk_key(rng)): junk(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def junk_key(rng: random.Random) -> Any:
    return rng.choice(["", "x", "Spec", "\ud800", 1, 1.5, None, True, (1, 2)])


def plausible_backend(rng: random.Random, junk_rate: float = 0.08) -> dict:
    """A Backend spec that is often valid, with random fields missing or replaced by junk."""
    def maybe(value_fn, p=0.5):
        return value_fn() if rng.random() < p else None

    def pick(*values):
        return junk(rng) if rng.random() < junk_rate else rng.choice(values)

    target = rng.choice(["endpoints", "dns", "service", "endpoints", "endpoints"])
    spec: dict = {}
    if target == "endpoints" or rng.random() < 0.05:
        spec["endpoints"] = [{"address": pick("10.0.0.1", "127.0.0.1", "fd00::1", "0.0.0.0", "::1"),
                              "port": pick(1, 80, 8080, 65535)} for _ in range(rng.randint(1, 3))]
    if target == "dns" or rng.random() < 0.05:
        spec["dns"] = {"hostname": pick("example.com", "localhost", "a-b.example", "x" * 63 + ".com"),
                       "port": pick(1, 443, 65535)}
    if target == "service" or rng.random() < 0.05:
        spec["service"] = {"name": pick("web", "web-1"), "port": pick(80, "http", "grpc-web")}
    for key, fn in [
        ("protocol", lambda: pick("HTTP1", "HTTP2")),
        ("loadBalancer", lambda: pick("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")),
        ("connectTimeout", lambda: pick("1ms", "250ms", "5s", "1h")),
        ("healthCheck", lambda: {k: v for k, v in {
            "path": maybe(lambda: pick("/", "/healthz", "/a/b/", "/é", "/%20")),
            "interval": maybe(lambda: pick("1ms", "10s", "24h")), "timeout": maybe(lambda: pick("1ms", "2s", "24h")),
            "healthyThreshold": maybe(lambda: pick(1, 100)), "unhealthyThreshold": maybe(lambda: pick(1, 3, 100)),
        }.items() if v is not None}),
        ("circuitBreaker", lambda: {k: pick(1, 1000, 2**31 - 1) for k in
                                    rng.sample(["maxConnections", "maxPendingRequests", "maxRequests", "maxRetries"],
                                               rng.randint(0, 4))}),
        ("outlierDetection", lambda: {k: v for k, v in {
            "consecutive5xx": maybe(lambda: pick(1, 1000)), "interval": maybe(lambda: pick("1ms", "24h")),
            "baseEjectionTime": maybe(lambda: pick("1ms", "30s", "24h")),
            "maxEjectionPercent": maybe(lambda: pick(0, 50, 100)),
        }.items() if v is not None}),
    ]:
        if rng.random() < 0.4:
            spec[key] = fn()
    if rng.random() < junk_rate:
        spec[rng.choice(SCHEMA_KEYS)] = junk(rng)
    return spec


def plausible_route(rng: random.Random, backend_names: list[str], junk_rate: float = 0.03) -> dict:
    """A Route spec that is often valid, exercising every feature with edge values."""
    def pick(*values):
        return junk(rng) if rng.random() < junk_rate else rng.choice(values)

    def some(fn, lo=0, hi=3):
        return [fn() for _ in range(rng.randint(lo, hi))]

    def header_name():
        return pick("x-a", "X-Upper", "content-type", "cookie", "x-envoy-upstream-rq-timeout-ms", "te", "connection",
                    "transfer-encoding", "user-agent", "x!#$%&'*+-.^_`|~", "set-cookie", "content-length",
                    "x-forwarded-for", "x-request-id", "keep-alive", "upgrade", "proxy-connection", "authority",
                    "x-envoy-original-path", "via", "location", "date", "server", "x" * 256)

    def header_value():
        return pick("", "v", "a\tb", "é", "x" * 200, " padded ", "\"quoted\"", "%00", "50%", "%%", "%REQ(:path)%",
                    "%DOWNSTREAM_REMOTE_ADDRESS%", "%START_TIME(%s)%", "\\", "{}", "x" * 8192, "\x7e\x80\xff")

    def regex():
        return pick("/v[0-9]+/.*", ".*", "a{96}", "(?i)abc", "é+", "[^/]+", "\\d+", "^/a$", "\\C", "\\pN", "(a|b)*",
                    "\\Q.*\\E", "[[:alpha:]]+", "(?P<name>x)", "x*?")

    def path_value(kind):
        if kind == "RegularExpression":
            return regex()
        return pick("/", "/a", "/a/", "/a/b", "//", "/a//", "/é", "/%2F", "/a;b", "/a*", "/~user", "/a" * 100)

    def match():
        m: dict = {}
        if rng.random() < 0.8:
            kind = pick("Exact", "Prefix", "RegularExpression")
            m["path"] = {"type": kind, "value": path_value(kind)} if rng.random() < 0.9 else {"value": path_value("")}
        if rng.random() < 0.4:
            m["headers"] = some(lambda: {"name": header_name(), **(
                {"type": "RegularExpression", "value": regex()} if rng.random() < 0.3 else {"value": header_value()})})
        if rng.random() < 0.3:
            m["queryParams"] = some(lambda: {"name": pick("q", "Q", "a b", "é", "x" * 256, "%", "="), **(
                {"type": "RegularExpression", "value": regex()} if rng.random() < 0.3 else {"value": header_value()})})
        if rng.random() < 0.3:
            m["method"] = pick("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
        return m

    def modifier():
        def hv():
            return {"name": header_name(), "value": header_value()}
        return {k: v for k, v in {"set": some(hv) if rng.random() < 0.6 else None,
                                  "add": some(hv) if rng.random() < 0.6 else None,
                                  "remove": some(header_name) if rng.random() < 0.5 else None}.items()
                if v is not None}

    def rule():
        r: dict = {}
        if rng.random() < 0.85:
            r["matches"] = some(match, 1, 3)
        action = rng.choice(["backends"] * 6 + ["redirect", "directResponse"])
        if action == "backends":
            names = rng.sample(backend_names, rng.randint(1, min(3, len(backend_names))))
            r["backends"] = [{"name": n, **({"weight": pick(0, 1, 5, 1_000_000)} if rng.random() < 0.5 else {})}
                             for n in names]
            if rng.random() < 0.3:
                r["timeout"] = pick("0s", "1ms", "15s", "24h")
            if rng.random() < 0.3:
                on = rng.sample(["5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
                                 "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
                                 "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
                                 "internal", "resource-exhausted", "unavailable"], rng.randint(0, 5))
                r["retries"] = {k: v for k, v in {
                    "attempts": pick(0, 1, 10) if rng.random() < 0.5 else None,
                    "perTryTimeout": pick("1ms", "500ms", "24h") if rng.random() < 0.5 else None,
                    "retryOn": on or None,
                    "statusCodes": [pick(100, 503, 599)] if "retriable-status-codes" in on else None,
                }.items() if v is not None}
            if rng.random() < 0.3:
                r["rewrite"] = {k: v for k, v in {
                    "pathPrefix": pick("/", "/x", "/x/", "/é") if rng.random() < 0.7 else None,
                    "hostname": pick("internal.example", "localhost", "a.b") if rng.random() < 0.5 else None,
                }.items() if v is not None}
            if rng.random() < 0.2:
                r["mirror"] = {"backend": rng.choice(backend_names),
                               **({"percent": pick(0, 1, 100)} if rng.random() < 0.5 else {})}
        elif action == "redirect":
            r["redirect"] = {k: v for k, v in {
                "scheme": pick("http", "https"), "hostname": pick("example.com", "a.b", "localhost"),
                "port": pick(1, 80, 443, 65535), "path": pick("/", "/new", "/a/b/", "/é"),
                "statusCode": pick(301, 302, 303, 307, 308)}.items() if rng.random() < 0.5}
        else:
            r["directResponse"] = {"status": pick(200, 204, 404, 503, 599),
                                   **({"body": pick("", "ok", "é" * 2048, "x" * 4096, "<h1>\r\n</h1>\x00")}
                                      if rng.random() < 0.6 else {})}
        if rng.random() < 0.3:
            r["requestHeaders"] = modifier()
        if rng.random() < 0.3:
            r["responseHeaders"] = modifier()
        if rng.random() < junk_rate:
            r[rng.choice(SCHEMA_KEYS)] = junk(rng)
        return r

    spec: dict = {"rules": some(rule, 1, 4)}
    if rng.random() < 0.7:
        spec["port"] = pick(1024, 8080, 9090, 15001, 65535)
    if rng.random() < 0.6:
        hostnames = some(lambda: pick(
            "*", "example.com", "*.example.com", "localhost", "a-b.example", "x" * 63 + ".io", "10.0.0.1"), 1, 3)
        spec["hostnames"] = [h for i, h in enumerate(hostnames) if h not in hostnames[:i]]
    if rng.random() < 0.3:
        spec["proxies"] = some(lambda: pick("default", "edge", "internal"), 1, 2)
    return spec


def mutate(rng: random.Random, value: Any) -> Any:
    """`value` with one random node replaced by junk (or a dict key renamed, or a list item dropped)."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.1:
            del out[key]
        elif roll < 0.2:
            out[str(key) + "x"] = out.pop(key)
        else:
            out[key] = mutate(rng, value[key])
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + ([] if rng.random() < 0.1 else [mutate(rng, value[i])]) + value[i + 1:]
    return junk(rng)


def random_objects(seed: int, count: int, *, junk_rate: float | None = None) -> list[UserObject]:
    """`count` Routes and Backends in two namespaces: pure junk, plausible specs and mutations of them;
    with junk_rate=0, only plausible specs (mostly valid: for checking Envoy accepts whatever passes)."""
    rng = random.Random(seed)
    garbage = junk_rate is None or junk_rate > 0
    rates = {} if junk_rate is None else {"junk_rate": junk_rate}
    names = ["b0", "b1", "b2", "b3", "missing"]
    objects = []
    for i in range(count):
        kind = rng.choice(["Route", "Backend"])
        namespace = rng.choice(["ns", "other"])
        roll = rng.random()
        if garbage and roll < 0.2:
            spec = junk(rng)
        elif kind == "Backend":
            spec = plausible_backend(rng, **rates)
        else:
            spec = plausible_route(rng, names, **rates)
        if garbage and roll > 0.75:
            spec = mutate(rng, spec)
        name = rng.choice(names[:4]) if kind == "Backend" else f"r{i}"
        objects.append(UserObject(ObjectKey(kind, namespace, name if not garbage or rng.random() > 0.01 else ""), spec,
                                  generation=rng.randint(1, 5)))
    return objects


def _check_outcome(obj: UserObject) -> bool:
    spec, errors = validate(obj)
    assert isinstance(errors, list)
    assert (spec is None) == bool(errors), (obj, spec, errors)
    for e in errors:
        assert isinstance(e, FieldError) and isinstance(e.path, str) and isinstance(e.message, str) and str(e)
        assert e.path.split(".")[0].split("[")[0] in ("spec", "metadata", "kind"), e
    if spec is not None:
        assert isinstance(spec, model.RouteSpec if obj.key.kind == "Route" else model.BackendSpec)
    return spec is not None


@pytest.mark.parametrize("garbage", [
    None, 0, -1, 1.5, math.nan, True, "", "spec", [], [None], [[[]]], {}, {None: None}, {1: 2}, {"rules": None},
    {"rules": [None, 1, "x", [], {}]}, {"rules": [{"matches": [None, [], 1]}]}, {"endpoints": [None]},
    {"port": math.inf, "rules": [{"backends": [{"name": "b", "weight": math.nan}]}]},
    {"rules": [{"redirect": {"statusCode": [[301]]}}]}, {"rules": [{"directResponse": {"status": {"code": 200}}}]},
    {"hostnames": [["*"]], "rules": [{"backends": [{"name": ["b"]}]}]},
    {"service": {"name": "web", "port": None}}, {"service": {"name": "web", "port": []}},
    {"dns": [], "endpoints": {}, "service": ""},
])
@pytest.mark.parametrize("kind", ["Route", "Backend", "Other"])
def test_garbage_never_raises(garbage, kind):
    _check_outcome(route(garbage, kind=kind))


def test_deeply_nested_junk_never_raises():
    deep: Any = "x"
    for i in range(10_000):
        deep = [deep] if i % 2 else {"rules": deep}
    nested_rules: Any = {"backends": [{"name": "b"}]}
    for _ in range(2_000):
        nested_rules = {"rules": [nested_rules], "matches": [nested_rules]}
    for spec in (deep, {"rules": deep}, {"rules": [{"matches": deep}]}, nested_rules, {"endpoints": deep},
                 {"rules": [{"redirect": {"statusCode": deep}}]}):
        for kind in ("Route", "Backend"):
            assert not _check_outcome(route(spec, kind=kind))


@pytest.mark.parametrize("seed", range(6))
def test_random_specs_never_raise_in_validation_build_and_translation(seed):
    objects = random_objects(seed, 500)
    accepted = sum(_check_outcome(obj) for obj in objects)
    # The generator must reach both outcomes, or it tests little.
    assert 0.2 * len(objects) < accepted < 0.9 * len(objects), accepted
    state = StateStore()
    builder = Builder()
    configs = None
    # Applied in chunks, as a stream of edits: later objects with the same key replace earlier ones,
    # valid or not, so the Builder's memory of the last valid generation is exercised too.
    for start in range(0, len(objects) + 100, 100):
        for obj in objects[start:start + 100]:
            state.put(obj)
        result = builder.build(state)
        assert set(result.statuses) == set(state.objects)
        for status in result.statuses.values():
            accepted_condition = status.condition(ACCEPTED)
            assert accepted_condition is not None and accepted_condition.status == (not status.errors)
        previous, configs = configs, {g: result.config_for(g) for g in ("default", "edge", "internal")}
        for config in configs.values():
            for by_name in translate(config).values():
                for message in by_name.values():
                    message.SerializeToString(deterministic=True)
    assert configs == previous  # the last round changed nothing: the same config


# -- build: references, last valid generation, precedence -------------------------------------------


def build(*objects: UserObject, builder: Builder | None = None, state: StateStore | None = None):
    state = state or StateStore()
    for obj in objects:
        state.put(obj)
    builder = builder or Builder()
    return builder.build(state), builder, state


def entry_names(result, group: str = "default", port: int | None = None, host: str = "*") -> list[str]:
    config = result.config_for(group)
    listener = next(ln for ln in config.listeners if port is None or ln.port == port)
    vhost = next(vh for vh in listener.virtual_hosts if vh.name == host)
    return [e.name for e in vhost.routes]


def test_missing_backend_leaves_rule_out():
    result, _, _ = build(
        backend({"endpoints": EP}, name="here"),
        route({"port": 8080, "rules": [
            {"matches": [{"path": {"value": "/gone"}}], "backends": [{"name": "gone"}]},
            {"matches": [{"path": {"value": "/ok"}}], "backends": [{"name": "here"}], "mirror": {"backend": "gone"}},
        ]}, name="r"),
    )
    status = result.statuses[ObjectKey("Route", "ns", "r")]
    assert status.condition(ACCEPTED).status is True
    refs = status.condition(RESOLVED_REFS)
    assert (refs.status, refs.reason) == (False, "BackendNotFound")
    assert refs.message == ("spec.rules[0].backends[0]: Backend ns/gone not found or not accepted; "
                            "spec.rules[0]: left out, no backend to send to; "
                            "spec.rules[1].mirror.backend: Backend ns/gone not found or not accepted")
    assert entry_names(result) == ["ns/r/1/0"]
    (entry,) = result.config_for("default").listeners[0].virtual_hosts[0].routes
    assert entry.action.mirror is None and entry.action.backends == (model.BackendRef("ns/here", 1),)
    assert [c.name for c in result.config_for("default").clusters] == ["ns/here"]
    backend_status = result.statuses[ObjectKey("Backend", "ns", "here")]
    assert [(c.type, c.status) for c in backend_status.conditions] == [(ACCEPTED, True), (RESOLVED_REFS, True)]


def test_backends_resolve_in_the_route_namespace_only():
    result, _, _ = build(backend({"endpoints": EP}, name="b", namespace="a"),
                         route(rule_spec(), name="r", namespace="b"))
    refs = result.statuses[ObjectKey("Route", "b", "r")].condition(RESOLVED_REFS)
    assert (refs.status, refs.reason) == (False, "BackendNotFound")
    assert "Backend b/b not found" in refs.message
    assert result.config_for("default").clusters == ()


def test_route_to_invalid_backend_is_not_resolved():
    result, _, _ = build(backend({"endpoints": []}, name="b"), route(rule_spec(), name="r"))
    assert result.statuses[ObjectKey("Backend", "ns", "b")].conditions[0].status is False
    assert len(result.statuses[ObjectKey("Backend", "ns", "b")].conditions) == 1  # no ResolvedRefs when invalid
    assert result.statuses[ObjectKey("Route", "ns", "r")].condition(RESOLVED_REFS).reason == "BackendNotFound"


def test_unresolved_service_serves_an_empty_cluster():
    result, _, _ = build(backend({"service": {"name": "web", "port": 80}}, name="b"), route(rule_spec(), name="r"))
    refs = result.statuses[ObjectKey("Backend", "ns", "b")].condition(RESOLVED_REFS)
    assert (refs.status, refs.reason, refs.message) == (False, "ServiceNotFound", "Service ns/web not found")
    (cluster,) = result.config_for("default").clusters
    assert cluster.name == cluster_name(ObjectKey("Backend", "ns", "b")) == "ns/b" and cluster.endpoints == ()
    assert result.statuses[ObjectKey("Route", "ns", "r")].condition(RESOLVED_REFS).status is True


def test_invalid_edit_keeps_serving_the_last_valid_generation():
    good = route({"port": 8080, "rules": [{"backends": [{"name": "b"}], "timeout": "5s"}]}, name="r", generation=1)
    result, builder, state = build(backend({"endpoints": EP}, name="b"), good)
    served = result.config_for("default")
    assert result.statuses[good.key].condition(ACCEPTED).status is True

    bad = route({"port": 80, "rules": [{"backends": [{"name": "b"}], "timeout": "5 s"}]}, name="r", generation=2)
    result, _, _ = build(bad, builder=builder, state=state)
    status = result.statuses[bad.key]
    accepted = status.condition(ACCEPTED)
    assert (status.generation, accepted.status, accepted.reason) == (2, False, "Invalid")
    assert accepted.message == ("spec.port: 80 is out of range [1024, 65535]; spec.rules[0].timeout: '5 s' is not a "
                                "duration such as 500ms, 10s, 1m30s or 1h (still serving the last valid generation 1)")
    assert [str(e) for e in status.errors] == ["spec.port: 80 is out of range [1024, 65535]",
                                               "spec.rules[0].timeout: '5 s' is not a duration such as 500ms, 10s, "
                                               "1m30s or 1h"]
    assert status.condition(RESOLVED_REFS).status is True
    assert accepted.to_dict(status.generation)["observedGeneration"] == 2
    assert result.config_for("default") == served  # generation 1, unchanged

    # a second invalid edit still serves generation 1
    worse = route({"rules": "none"}, name="r", generation=3)
    result, _, _ = build(worse, builder=builder, state=state)
    assert result.statuses[worse.key].condition(ACCEPTED).message.endswith(
        "(still serving the last valid generation 1)")
    assert result.config_for("default") == served

    # a valid edit takes over
    fixed = route({"port": 9090, "rules": [{"backends": [{"name": "b"}]}]}, name="r", generation=4)
    result, _, _ = build(fixed, builder=builder, state=state)
    assert result.statuses[fixed.key].condition(ACCEPTED).status is True
    assert [ln.port for ln in result.config_for("default").listeners] == [9090]

    # once deleted, the object is forgotten: re-created invalid, nothing is served
    state.delete(fixed.key)
    builder.build(state)
    result, _, _ = build(route({"port": 80, "rules": []}, name="r", generation=1), builder=builder, state=state)
    assert "still serving" not in result.statuses[fixed.key].condition(ACCEPTED).message
    assert result.config_for("default").listeners == ()


def test_invalid_backend_edit_keeps_its_cluster():
    result, builder, state = build(backend({"endpoints": EP}, name="b"), route(rule_spec(), name="r"))
    result, _, _ = build(backend({"endpoints": EP, "protocol": "SPDY"}, name="b", generation=2),
                         builder=builder, state=state)
    assert result.statuses[ObjectKey("Backend", "ns", "b")].condition(ACCEPTED).status is False
    assert [c.name for c in result.config_for("default").clusters] == ["ns/b"]
    assert result.statuses[ObjectKey("Route", "ns", "r")].condition(RESOLVED_REFS).status is True
    # a new Builder (a restarted control plane) never saw it valid
    result, _, _ = build(builder=Builder(), state=state)
    assert result.config_for("default").clusters == ()
    assert result.statuses[ObjectKey("Route", "ns", "r")].condition(RESOLVED_REFS).status is False


def _rule(path_type: str, value: str, **extra) -> dict:
    return {"matches": [{"path": {"type": path_type, "value": value}, **extra}], "directResponse": {"status": 200}}


def test_route_precedence():
    result, _, _ = build(
        route({"port": 8080, "rules": [
            _rule("RegularExpression", "/.*"),             # 0
            _rule("Prefix", "/"),                          # 1
            _rule("Prefix", "/api"),                       # 2
            _rule("Exact", "/api"),                        # 3
            _rule("Prefix", "/api/v1/"),                   # 4: normalised /api/v1: longer than /api
            _rule("Prefix", "/api", method="GET"),         # 5: more specific than rule 2
            _rule("Exact", "/a"),                          # 6: shorter exact after /api
            _rule("RegularExpression", "/a.*"),            # 7: regexes keep their order
            _rule("Prefix", "/a///"),                      # 8: /a: after /api/v1, /api and /a/b
            _rule("Prefix", "/a/b"),                       # 9
        ]}, name="z", namespace="ns"),
        # the same Prefix / in other Routes: by namespace, then name
        route({"port": 8080, "rules": [_rule("Prefix", "/")]}, name="a", namespace="ns"),
        route({"port": 8080, "rules": [_rule("Prefix", "/")]}, name="z", namespace="aa"),
    )
    assert entry_names(result) == [
        "ns/z/3/0", "ns/z/6/0",                          # Exact, longer first
        "ns/z/4/0", "ns/z/5/0", "ns/z/2/0", "ns/z/9/0", "ns/z/8/0",  # Prefix, longer first, specific first
        "aa/z/0/0", "ns/a/0/0", "ns/z/1/0",              # Prefix /: namespace/name
        "ns/z/0/0", "ns/z/7/0",                          # RegularExpression, in rule order
    ]


def test_route_precedence_keeps_rule_and_match_order_past_ten():
    rules = [{"matches": [{"path": {"value": "/t"}, "headers": [{"name": "x-n", "value": str(i)}]}],
              "directResponse": {"status": 200}} for i in range(12)]
    rules[11]["matches"] = [{"path": {"value": "/u"}}] * 12
    result, _, _ = build(route({"port": 8080, "rules": rules}, name="r"))
    assert entry_names(result) == [f"ns/r/{i}/0" for i in range(11)] + [f"ns/r/11/{m}" for m in range(12)]


def test_hostnames_merge_into_virtual_hosts():
    result, _, _ = build(
        route({"port": 8080, "hostnames": ["b.example.com", "*"], "rules": [_rule("Prefix", "/b")]}, name="b"),
        route({"port": 8080, "hostnames": ["b.example.com", "*.example.com"], "rules": [_rule("Exact", "/a")]},
              name="a"),
        route({"port": 9090, "rules": [_rule("Prefix", "/")]}, name="c"),
    )
    config = result.config_for("default")
    assert [(ln.name, ln.port) for ln in config.listeners] == [("http-8080", 8080), ("http-9090", 9090)]
    vhosts = config.listeners[0].virtual_hosts
    assert [(vh.name, vh.domains) for vh in vhosts] == [
        ("*.example.com", ("*.example.com",)), ("b.example.com", ("b.example.com",)), ("*", ("*",))]
    assert [e.name for e in vhosts[1].routes] == ["ns/a/0/0", "ns/b/0/0"]
    assert [k.name for k in config.listeners[0].sources] == ["a", "b"]


def test_proxies_target_groups():
    result, _, _ = build(
        backend({"endpoints": EP}, name="b1"), backend({"endpoints": EP}, name="b2"),
        route({"port": 8080, "proxies": ["edge"], "rules": [{"backends": [{"name": "b1"}]}]}, name="edge-only"),
        route({"port": 8081, "rules": [{"backends": [{"name": "b2"}]}]}, name="everyone"),
    )
    assert [ln.port for ln in result.config_for("edge").listeners] == [8080, 8081]
    assert [c.name for c in result.config_for("edge").clusters] == ["ns/b1", "ns/b2"]
    assert [ln.port for ln in result.config_for("default").listeners] == [8081]
    assert [c.name for c in result.config_for("default").clusters] == ["ns/b2"]
    assert result.config_for("nobody").listeners == (result.config_for("default").listeners)
