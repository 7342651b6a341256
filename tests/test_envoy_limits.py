"""Every limit Envoy states in bytes, table-driven, against validation and a real Envoy.

For each user field that reaches an Envoy field with a `max_bytes` rule (or a byte limit in
Envoy's code), in the form the translator sends it (header values with % written as %%):

- at the limit, in ASCII and in 2-, 3- and 4-byte UTF-8 characters, validation accepts it and a
  real Envoy accepts the translated config (all of them in one `envoy --mode validate` run);
- one byte past the limit, in the same characters, validation refuses it with a message that
  names the field and the limit, and a real Envoy refuses the translated config (built from the
  model directly, behind validation's back), which proves the limit is Envoy's own.

See operator/xds_operator/api/limits.py for the table of Envoy's rules and what was unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from xds_operator.api import model
from xds_operator.api.limits import (
    DIRECT_RESPONSE_BODY_MAX_BYTES,
    HEADER_NAME_MAX_BYTES,
    HEADER_VALUE_MAX_BYTES,
    QUERY_PARAM_NAME_MAX_BYTES,
    header_value_as_sent,
    utf8_size,
)
from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.api.validation import validate
from xds_operator.ir.builder import Builder
from xds_operator.ir.ir import ClusterIR, Endpoint, ListenerIR, ProxyConfigIR, RouteEntryIR, VirtualHostIR, cluster_name
from xds_operator.sources.state import StateStore
from xds_operator.translate import translate

from .test_translate_golden import envoy_validate, static_bootstrap

# A character of each UTF-8 length.
CHARS = {1: "a", 2: "é", 3: "€", 4: "😀"}
BACKEND = ObjectKey("Backend", "ns", "b")
CLUSTER = ClusterIR(name=cluster_name(BACKEND), source=BACKEND, discovery="EDS", protocol="HTTP1",
                    load_balancer="ROUND_ROBIN", connect_timeout_ms=1000, endpoints=(Endpoint("127.0.0.1", 8080),))
FORWARD = model.Rule(backends=(model.BackendRef(CLUSTER.name),))


Entry = Callable[[str], tuple[model.Match, model.Rule]]


@dataclass(frozen=True)
class Limit:
    """A user field and the byte limit Envoy puts on what it becomes."""

    id: str
    path: str                              # validation's path of the field, in rule_spec's Route
    envoy_bytes: int                       # Envoy's limit on the field as sent
    max_chars: int                         # validation's own (the CRD's) limit in characters
    rule: Callable[[str], dict]            # a Route rule with the value in the field
    entry: Entry                           # the same as validated IR, unchecked
    envoy_reason: str                      # what Envoy says when it refuses one byte more
    as_sent: Callable[[str], str] = lambda text: text
    ascii_only: bool = False               # validation allows only ASCII (a token)

    def sent_size(self, text: str) -> int:
        return utf8_size(self.as_sent(text))


def _set_header(where: str, verb: str) -> tuple[Callable[[str], dict], Entry]:
    attr = "request_headers" if where == "requestHeaders" else "response_headers"

    def rule(value: str) -> dict:
        return {"backends": [{"name": "b"}], where: {verb: [{"name": "x-limit", "value": value}]}}

    def entry(value: str) -> tuple[model.Match, model.Rule]:
        modifier = model.HeaderModifier(**{verb: (model.HeaderValue("x-limit", value),)})
        return model.Match(), model.Rule(backends=FORWARD.backends, **{attr: modifier})
    return rule, entry


def _header_value_limit(where: str, verb: str) -> Limit:
    rule, entry = _set_header(where, verb)
    return Limit(f"{where}.{verb}.value", f"spec.rules[0].{where}.{verb}[0].value", HEADER_VALUE_MAX_BYTES, 8192,
                 rule, entry, "HeaderValueValidationError.Value: value length must be at most 16384 bytes",
                 as_sent=header_value_as_sent)


LIMITS = [
    *(_header_value_limit(where, verb) for where in ("requestHeaders", "responseHeaders") for verb in ("set", "add")),
    Limit("requestHeaders.set.name", "spec.rules[0].requestHeaders.set[0].name", HEADER_NAME_MAX_BYTES, 256,
          lambda name: {"backends": [{"name": "b"}], "requestHeaders": {"set": [{"name": name, "value": "v"}]}},
          lambda name: (model.Match(), model.Rule(backends=FORWARD.backends, request_headers=model.HeaderModifier(
              set=(model.HeaderValue(name, "v"),)))),
          "HeaderValueValidationError.Key: value length must be at most 16384 bytes", ascii_only=True),
    Limit("matches.queryParams.name", "spec.rules[0].matches[0].queryParams[0].name", QUERY_PARAM_NAME_MAX_BYTES, 256,
          lambda name: {"backends": [{"name": "b"}], "matches": [{"queryParams": [{"name": name, "value": "v"}]}]},
          lambda name: (model.Match(query_params=(model.ValueMatch(name, "v"),)), FORWARD),
          "QueryParameterMatcherValidationError.Name: value length must be at most 1024 bytes"),
    Limit("directResponse.body", "spec.rules[0].directResponse.body", DIRECT_RESPONSE_BODY_MAX_BYTES, 4096,
          lambda body: {"directResponse": {"status": 200, "body": body}},
          lambda body: (model.Match(), model.Rule(direct_response=model.DirectResponse(200, body))),
          "response body size is 4097 bytes; maximum is 4096"),
]
BY_ID = {limit.id: limit for limit in LIMITS}


def _fill(total_bytes: int, width: int, max_chars: int | None = None) -> str:
    """`total_bytes` of UTF-8 made of `width`-byte characters, topped up with ASCII; or, when that
    would be more than max_chars characters, max_chars of the wide character."""
    wide, rest = divmod(total_bytes, width)
    if max_chars is not None and wide + rest > max_chars:
        return CHARS[width] * min(wide, max_chars)
    return CHARS[width] * wide + "a" * rest


def at_limit(limit: Limit) -> dict[str, str]:
    """The longest values validation allows, per character width: at Envoy's byte limit whenever
    validation's character limit allows that many bytes."""
    widths = (1,) if limit.ascii_only else (1, 2, 3, 4)
    values = {f"{w}-byte": _fill(limit.envoy_bytes, w, limit.max_chars) for w in widths}
    if limit.as_sent("%") == "%%":
        values["%"] = "%" * (limit.envoy_bytes // 2)  # sent as %%: exactly the limit
    return values


def past_limit(limit: Limit) -> dict[str, str]:
    """One byte more than Envoy's limit, as sent, per character width (and the issue's cases)."""
    values = {f"{w}-byte": _fill(limit.envoy_bytes + 1, w) for w in (1, 2, 3, 4)}
    if limit.as_sent("%") == "%%":
        values["%"] = "%" * (limit.envoy_bytes // 2) + "a"
    if limit.envoy_bytes == HEADER_VALUE_MAX_BYTES and not limit.ascii_only:
        values["issue 6: 5,462 x €"] = "€" * 5462   # 16,386 bytes, 5,462 characters
        values["issue 6: 5,000 emoji"] = "😀" * 5000  # 20,000 bytes
    return values


def _route(rule: dict, name: str = "r") -> UserObject:
    return UserObject(ObjectKey("Route", "ns", name), {"port": 1024, "rules": [rule]})


def test_the_values_are_what_they_claim() -> None:
    for limit in LIMITS:
        for what, value in at_limit(limit).items():
            assert limit.sent_size(value) <= limit.envoy_bytes and len(value) <= limit.max_chars, (limit.id, what)
        for what, value in past_limit(limit).items():
            assert limit.sent_size(value) > limit.envoy_bytes, (limit.id, what)
            if what.endswith("-byte"):
                assert limit.sent_size(value) == limit.envoy_bytes + 1, (limit.id, what)
                assert CHARS[int(what[0])] in value
    # Where validation's character limit allows it, the at-limit value is exactly at Envoy's limit.
    assert {what for what, v in at_limit(BY_ID["requestHeaders.set.value"]).items()
            if utf8_size(header_value_as_sent(v)) == HEADER_VALUE_MAX_BYTES} == {"2-byte", "3-byte", "4-byte", "%"}
    assert utf8_size(at_limit(BY_ID["directResponse.body"])["2-byte"]) == DIRECT_RESPONSE_BODY_MAX_BYTES
    assert utf8_size(at_limit(BY_ID["matches.queryParams.name"])["4-byte"]) == QUERY_PARAM_NAME_MAX_BYTES


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.id)
def test_validation_accepts_the_limit(limit: Limit) -> None:
    for what, value in at_limit(limit).items():
        _, errors = validate(_route(limit.rule(value)))
        assert errors == [], (what, [str(e) for e in errors])


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.id)
def test_validation_refuses_one_byte_past_the_limit(limit: Limit) -> None:
    for what, value in past_limit(limit).items():
        spec, errors = validate(_route(limit.rule(value)))
        assert spec is None and [e.path for e in errors] == [limit.path], (what, [str(e) for e in errors])
        message = errors[0].message
        if len(value) > limit.max_chars:
            assert message == f"is {len(value)} characters long; at most {limit.max_chars} are allowed", what
        elif limit.ascii_only:
            assert message.endswith("is not an HTTP header name (RFC 7230 token)"), what
        else:
            note = " once % is written as %%" if limit.as_sent("%") == "%%" else ""
            assert message == (f"is {limit.sent_size(value)} bytes in UTF-8{note}, more than Envoy's limit of "
                               f"{limit.envoy_bytes} bytes"), what


def test_the_issues_header_values_are_refused_for_their_bytes() -> None:
    """5,462 x "€" is 5,462 characters, well within 8,192, but 16,386 bytes: Envoy NACKed it."""
    for where in ("requestHeaders", "responseHeaders"):
        for verb in ("set", "add"):
            for value, size in (("€" * 5462, 16386), ("😀" * 5000, 20000), ("%" * 8000 + "€" * 130, 16390)):
                _, errors = validate(_route({"backends": [{"name": "b"}],
                                                where: {verb: [{"name": "x", "value": value}]}}))
                assert [str(e) for e in errors] == [(
                    f"spec.rules[0].{where}.{verb}[0].value: is {size} bytes in UTF-8 once % is written as %%, "
                    f"more than Envoy's limit of 16384 bytes")]


def test_envoy_accepts_every_value_at_the_limit(tmp_path: Path) -> None:
    """All at-limit values of all fields as Routes on one port, through the Builder: one Envoy run."""
    state = StateStore()
    state.put(UserObject(BACKEND, {"endpoints": [{"address": "127.0.0.1", "port": 8080}]}))
    count = 0
    for limit in LIMITS:
        for value in at_limit(limit).values():
            rule = limit.rule(value)
            rule.setdefault("matches", [{}])[0]["path"] = {"type": "Exact", "value": f"/case-{count}"}
            state.put(_route(rule, name=f"r{count}"))
            count += 1
    # The longest namespace and names Kubernetes allows, in cluster and route names.
    longest_backend = ObjectKey("Backend", "n" * 63, "b" * 253)
    state.put(UserObject(longest_backend, {"endpoints": [{"address": "127.0.0.1", "port": 8080}]}))
    state.put(UserObject(ObjectKey("Route", "n" * 63, "r" * 253),
                         {"port": 1024, "rules": [{"matches": [{"path": {"type": "Exact", "value": "/longest"}}],
                                                   "backends": [{"name": "b" * 253}]}]}))
    count += 1
    result = Builder().build(state)
    assert cluster_name(longest_backend) in result.clusters
    assert all(s.condition("Accepted").status for s in result.statuses.values()), \
        [s.condition("Accepted").message for s in result.statuses.values() if not s.condition("Accepted").status]
    resources = translate(result.config_for("default"))
    routes = [r for rc in resources["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"].values()
              for vh in rc.virtual_hosts for r in vh.routes]
    assert len(routes) == count
    proc = envoy_validate(static_bootstrap(resources), tmp_path / "at-limit.pb")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _unchecked_config(limit: Limit, value: str) -> ProxyConfigIR:
    match, rule = limit.entry(value)
    entry = RouteEntryIR("ns/r/0/0", ObjectKey("Route", "ns", "r"), match, rule)
    listener = ListenerIR("http-1024", 1024, (VirtualHostIR("*", ("*",), (entry,)),), (entry.source,))
    return ProxyConfigIR(listeners=(listener,), clusters=(CLUSTER,))


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.id)
def test_envoy_refuses_one_byte_past_the_limit(limit: Limit, tmp_path: Path) -> None:
    cases = past_limit(limit)

    def run(item: tuple[int, str]):
        i, what = item
        bootstrap = static_bootstrap(translate(_unchecked_config(limit, cases[what])))
        return what, envoy_validate(bootstrap, tmp_path / f"past-{i}.pb")

    with ThreadPoolExecutor(max_workers=2) as pool:
        for what, proc in pool.map(run, enumerate(cases)):
            assert proc.returncode != 0, f"Envoy accepted {limit.id} {what}"
            output = proc.stdout + proc.stderr
            reason = limit.envoy_reason
            if "4097" in reason:  # the body's message names its size
                reason = reason.replace("4097", str(limit.sent_size(cases[what])))
            assert reason in output, (what, output[-2000:])


def test_envoy_takes_the_longest_values_of_the_fields_it_does_not_limit_in_bytes(tmp_path: Path) -> None:
    """Fields whose Envoy rules (see api/limits.py) state no byte limit: validation's longest values,
    in 4-byte characters (four times the bytes of ASCII), are accepted by a real Envoy."""
    wide = CHARS[4]
    path = "/" + wide * 1023  # validation's 1,024 characters, 4,093 bytes
    rules = [
        {"backends": [{"name": "b"}], "matches": [{"headers": [{"name": "x", "value": wide * 4096}],
                                                   "queryParams": [{"name": "q", "value": wide * 4096}]}]},
        {"backends": [{"name": "b"}], "matches": [{"path": {"type": "Exact", "value": path}}]},
        {"backends": [{"name": "b"}], "matches": [{"path": {"type": "Prefix", "value": path}}],
         "rewrite": {"pathPrefix": path, "hostname": "h" * 253}},
        {"redirect": {"path": path, "hostname": "h" * 253}, "matches": [{"path": {"type": "Exact", "value": "/r"}}]},
        {"backends": [{"name": "b"}], "matches": [{"path": {"type": "RegularExpression", "value": wide * 12}}]},
    ]
    state = StateStore()
    state.put(UserObject(BACKEND, {"endpoints": [{"address": "127.0.0.1", "port": 8080}], "healthCheck": {"path": path}}))
    for i, rule in enumerate(rules):
        state.put(UserObject(ObjectKey("Route", "ns", f"r{i}"),
                             {"port": 1024, "hostnames": ["*." + "h" * 251], "rules": [rule]}))
    result = Builder().build(state)
    assert all(s.condition("Accepted").status for s in result.statuses.values()), \
        [s.condition("Accepted").message for s in result.statuses.values() if not s.condition("Accepted").status]
    proc = envoy_validate(static_bootstrap(translate(result.config_for("default"))), tmp_path / "wide.pb")
    assert proc.returncode == 0, proc.stdout + proc.stderr
