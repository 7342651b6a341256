"""The incremental build and snapshot give exactly what a fresh build and translate() give.

Snapshot.from_config assembles a RouteConfiguration from cached serialized virtual hosts and
reuses the IR, bytes and hashes of unchanged objects; none of that may change a byte or a version.
"""

from __future__ import annotations

import pytest

from xds_operator.api.objects import ObjectKey, UserObject
from xds_operator.ir.builder import Builder
from xds_operator.sources.state import StateStore
from xds_operator.translate import TranslateOptions, translate
from xds_operator.translate.resources import PUSH_ORDER, ROUTE
from xds_operator.xds.snapshot import ResourceMemo, Snapshot

from .test_translate_golden import CASES, GOLDEN, load_case

OPTIONS = TranslateOptions()


def assert_same_as_translate(snapshot: Snapshot, expected: Snapshot, config=None) -> None:
    """`snapshot` (from_config) is `expected` (translate()); with `config`, its delta view (VHDS)
    is also translate(config, vhds=True)."""
    for type_url in PUSH_ORDER:
        got = {n: (r.version, r.packed.SerializeToString()) for n, r in snapshot.resources(type_url).items()}
        want = {n: (r.version, r.packed.SerializeToString()) for n, r in expected.resources(type_url).items()}
        assert got == want, type_url
    assert snapshot.version == expected.version
    if config is not None:
        delta, vhds = snapshot.for_protocol("delta"), Snapshot.from_messages(translate(config, OPTIONS, vhds=True))
        for type_url in PUSH_ORDER:
            got = {n: (r.version, r.packed.SerializeToString()) for n, r in delta.resources(type_url).items()}
            want = {n: (r.version, r.packed.SerializeToString()) for n, r in vhds.resources(type_url).items()}
            assert got == want, f"delta view, {type_url}"


@pytest.mark.parametrize("case", CASES)
def test_golden_case_snapshot_is_byte_identical_to_translate(case: str) -> None:
    state, groups = load_case((GOLDEN / f"{case}.in.yaml").read_text())
    result = Builder().build(state)
    for group in groups:
        config = result.config_for(group)
        assert_same_as_translate(Snapshot.from_config(config, OPTIONS, ResourceMemo()),
                                 Snapshot.from_messages(translate(config, OPTIONS)), config)


def route(i: int, marker: str = "a", host: str | None = None) -> UserObject:
    return UserObject(ObjectKey("Route", "ns", f"r{i}"), {
        "hostnames": [host or f"h{i}.example.com"],
        "rules": [{"matches": [{"path": {"type": "Prefix", "value": f"/p{i}"}}], "backends": [{"name": f"b{i}"}],
                   "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]})


def backend(i: int) -> UserObject:
    return UserObject(ObjectKey("Backend", "ns", f"b{i}"), {"endpoints": [{"address": "10.0.0.1", "port": 80 + i}]})


def test_edits_through_the_memos_match_a_fresh_build() -> None:
    """Edits, a shared hostname, a deletion and an unresolved reference: after each, the kept
    Builder and memo give what a new Builder and translate() give."""
    state = StateStore()
    for i in range(20):
        state.put(backend(i))
        state.put(route(i))
    builder, memo = Builder(), ResourceMemo()
    edits = [
        lambda: state.put(route(3, marker="b")),
        lambda: state.put(route(5, host="h4.example.com")),  # two Routes in one virtual host
        lambda: state.delete(ObjectKey("Backend", "ns", "b7")),  # r7 loses its backend
        lambda: state.put(backend(7)),
        lambda: state.delete(ObjectKey("Route", "ns", "r0")),
        lambda: None,  # nothing changed
    ]
    for edit in edits:
        edit()
        result = builder.build(state)
        snapshot = Snapshot.from_config(result.config_for("default"), OPTIONS, memo)
        memo.rotate()
        fresh = Builder().build(state)
        assert result.statuses == fresh.statuses
        assert_same_as_translate(snapshot, Snapshot.from_messages(translate(fresh.config_for("default"), OPTIONS)),
                                 fresh.config_for("default"))


def test_an_assembled_route_configuration_parses_back_to_the_translated_message() -> None:
    state = StateStore()
    for i in range(3):
        state.put(backend(i))
        state.put(route(i))
    config = Builder().build(state).config_for("default")
    (resource,) = Snapshot.from_config(config, OPTIONS).resources(ROUTE).values()
    assert resource.built is None  # assembled from bytes, parsed on demand
    assert resource.message == translate(config, OPTIONS)[ROUTE][resource.name]


def test_incremental_group_configs_match_fresh_ones_for_every_group() -> None:
    """Routes aimed at one proxy group, edited in place, moved to another group, given a
    hostname another Route has: each group's updated config equals a fresh build's."""
    def aimed(i: int, marker: str, proxies: list[str], host: str | None = None) -> UserObject:
        obj = route(i, marker=marker, host=host)
        return UserObject(obj.key, {**obj.spec, "proxies": proxies})

    state = StateStore()
    for i in range(6):
        state.put(backend(i))
        state.put(aimed(i, "a", ["edge"] if i % 2 else []))
    builder, memo = Builder(), ResourceMemo()
    groups = ("default", "edge", "internal")
    first = builder.build(state)
    for group in groups:
        Snapshot.from_config(first.config_for(group), OPTIONS, memo)
    memo.rotate()
    edits = [
        lambda: state.put(aimed(1, "b", ["edge"])),  # in place: the incremental path
        lambda: state.put(aimed(2, "c", [])),
        lambda: state.put(aimed(3, "d", ["internal"])),  # moved to another group
        lambda: state.put(aimed(4, "e", [], host="h0.example.com")),  # joins r0's virtual host
        lambda: state.put(aimed(4, "f", [], host="h0.example.com")),  # edited there
    ]
    for edit in edits:
        edit()
        result = builder.build(state)
        assert result.changed_routes is not None  # each edit took the incremental path
        fresh = Builder().build(state)
        for group in groups:
            assert result.config_for(group) == fresh.config_for(group), group
            snapshot = Snapshot.from_config(result.config_for(group), OPTIONS, memo)
            assert_same_as_translate(snapshot, Snapshot.from_messages(translate(fresh.config_for(group), OPTIONS)),
                                     fresh.config_for(group))
        memo.rotate()


def test_builds_with_tls_match_fresh_ones(monkeypatch) -> None:
    """TLS and plain Routes on one port, TLS Backends (a CA from a Secret, one from a ConfigMap):
    edits to them and to their Secrets and ConfigMaps take the incremental path, and where nothing
    moves (a rotated certificate, an edited rule) the group config is updated rather than made whole.
    Each gives what a fresh build gives, byte for byte."""
    import xds_operator.ir.builder as builder_module
    from xds_operator.sources.kubernetes import trimmed_secret

    from .tlscerts import ca_secret, make_ca, make_leaf, tls_secret

    ca = make_ca()
    whole = []
    real_full_config = builder_module.full_config
    monkeypatch.setattr(builder_module, "full_config", lambda *args: whole.append(1) or real_full_config(*args))

    def certificate(*names: str) -> dict[str, object]:
        return trimmed_secret(tls_secret("cert", make_leaf(ca, *names), namespace="ns"))

    def tls_route(marker: str, name: str = "secure", hostnames: tuple[str, ...] = ("a.example.com", "b.example.com"),
                  **tls: object) -> UserObject:
        return UserObject(ObjectKey("Route", "ns", name), {
            "port": 8443, "hostnames": list(hostnames), "tls": {"certificateRef": {"name": "cert"}, **tls},
            "rules": [{"backends": [{"name": "b0"}], "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]})

    def plain_route(marker: str) -> UserObject:
        obj = route(1, marker=marker)
        return UserObject(obj.key, {**obj.spec, "port": 8443})

    def tls_backend(sni: str, name: str = "b0", ca_ref: dict | None = None) -> UserObject:
        return UserObject(ObjectKey("Backend", "ns", name), {
            "endpoints": [{"address": "10.0.0.1", "port": 443}],
            "tls": {"sni": sni, "caCertificateRef": ca_ref or {"name": "ca"}}})

    def ca_config_map(issuer) -> dict[str, object]:
        return {"data": {"ca.crt": issuer.cert_pem}}

    state = StateStore()
    state.put_secret("ns", "cert", certificate("a.example.com", "b.example.com", "c.example.com"))
    state.put_secret("ns", "ca", trimmed_secret(ca_secret("ca", ca, namespace="ns")))
    state.put_config_map("ns", "bundle", ca_config_map(ca))
    state.put(tls_backend("one.internal"))
    state.put(tls_backend("bundle.internal", "b2", {"kind": "ConfigMap", "name": "bundle"}))
    state.put(backend(1))
    state.put(tls_route("a"))
    state.put(tls_route("a", "other", ("c.example.com",)))
    state.put(plain_route("a"))
    state.put(UserObject(ObjectKey("Route", "ns", "to-b2"), {"port": 8443, "hostnames": ["d.example.com"],
                                                            "rules": [{"backends": [{"name": "b2"}]}]}))
    builder, memo = Builder(), ResourceMemo()
    Snapshot.from_config(builder.build(state).config_for("default"), OPTIONS, memo)
    memo.rotate()
    edits = [  # the edit; whether the build is incremental; whether the group config is updated in place
        (lambda: state.put(plain_route("b")), True, True),
        (lambda: state.put(tls_route("b")), True, True),  # a TLS Route's rule
        (lambda: state.put(tls_route("b", minVersion="1.3")), True, True),  # its TLS settings
        (lambda: state.put_secret("ns", "cert", certificate("a.example.com", "b.example.com", "c.example.com")),
         True, True),  # rotated
        (lambda: state.put_secret("ns", "cert", {"type": "kubernetes.io/tls", "data": {}}), True, False),  # broken
        (lambda: state.put(plain_route("c")), True, True),  # beside TLS Routes that are left out
        (lambda: state.put_secret("ns", "cert", certificate("*.example.com")), True, False),  # restored
        # Another Route takes a.example.com with other TLS settings: a conflict, and then none.
        (lambda: state.put(tls_route("c", "other", ("a.example.com", "c.example.com"))), True, False),
        (lambda: state.put(tls_route("c", "other", ("a.example.com", "c.example.com"), minVersion="1.3")),
         True, False),
        (lambda: state.put(tls_backend("two.internal")), True, True),
        (lambda: state.put_secret("ns", "ca", trimmed_secret(ca_secret("ca", make_ca("new CA"), namespace="ns"))),
         True, True),  # a Backend's CA Secret rotated
        (lambda: state.put_config_map("ns", "bundle", ca_config_map(make_ca("newer CA"))), True, True),
        (lambda: state.put_config_map("ns", "bundle", {"data": {}}), False, False),  # its cluster is left out
        (lambda: state.put_config_map("ns", "bundle", ca_config_map(ca)), False, False),  # and back
    ]
    for number, (edit, incremental, updated) in enumerate(edits):
        edit()
        whole.clear()
        result = builder.build(state)
        assert (result.changed_routes is not None) is incremental, number
        config = result.config_for("default")
        assert (not whole) is updated, number
        fresh = Builder().build(state)
        assert result.statuses == fresh.statuses, number
        assert result.recheck_at == fresh.recheck_at, number
        assert config == fresh.config_for("default"), number
        snapshot = Snapshot.from_config(config, OPTIONS, memo)
        snapshot.check_consistent()
        assert_same_as_translate(snapshot, Snapshot.from_messages(translate(fresh.config_for("default"), OPTIONS)))
        memo.rotate()
        # ("other" is first by name: it keeps a.example.com, "secure" loses it while their settings differ.)
        accepted = result.statuses[ObjectKey("Route", "ns", "secure")].condition("Accepted")
        assert accepted is not None and accepted.reason == ("HostnameConflict" if number == 7 else "Accepted"), number


def test_builds_with_an_https_redirect_match_fresh_ones() -> None:
    """A TLS Route redirecting its hostnames on the plain port: a plain edit that keeps where its
    Route serves is incremental, one that takes or gives back a redirected hostname is built whole
    (the redirect's Conflicted condition follows). Each gives what a fresh build gives."""
    from xds_operator.sources.kubernetes import trimmed_secret

    from .tlscerts import make_ca, make_leaf, tls_secret

    state = StateStore()
    cert = make_leaf(make_ca(), "a.example.com", "b.example.com")
    state.put_secret("ns", "cert", trimmed_secret(tls_secret("cert", cert, namespace="ns")))
    state.put(UserObject(ObjectKey("Route", "ns", "secure"), {
        "port": 8443, "hostnames": ["a.example.com", "b.example.com"],
        "tls": {"certificateRef": {"name": "cert"}, "httpRedirect": {"port": 8080}},
        "rules": [{"directResponse": {"status": 200}}]}))
    state.put(backend(1))

    def plain_route(marker: str, host: str = "h1.example.com") -> UserObject:
        obj = route(1, marker=marker, host=host)
        return UserObject(obj.key, {**obj.spec, "port": 8080})

    state.put(plain_route("a"))
    builder, memo = Builder(), ResourceMemo()
    Snapshot.from_config(builder.build(state).config_for("default"), OPTIONS, memo)
    memo.rotate()
    secure = ObjectKey("Route", "ns", "secure")
    edits = [
        (lambda: state.put(plain_route("b")), True, "False"),
        (lambda: state.put(plain_route("b", host="a.example.com")), False, "True"),  # takes a.example.com
        (lambda: state.put(plain_route("c", host="a.example.com")), True, "True"),
        (lambda: state.put(plain_route("c")), False, "False"),  # gives it back
        # The redirecting TLS Route itself edited: built whole, its Conflicted condition made again.
        (lambda: state.put(UserObject(secure, {
            "port": 8443, "hostnames": ["a.example.com", "b.example.com"],
            "tls": {"certificateRef": {"name": "cert"}, "httpRedirect": {"port": 8080}},
            "rules": [{"directResponse": {"status": 201}}]})), False, "False"),
    ]
    for edit, incremental, conflicted in edits:
        edit()
        result = builder.build(state)
        assert (result.changed_routes is not None) is incremental
        fresh = Builder().build(state)
        assert result.statuses == fresh.statuses
        condition = result.statuses[secure].condition("Conflicted")
        assert condition is not None and condition.to_dict(1)["status"] == conflicted
        config = result.config_for("default")
        assert config == fresh.config_for("default")
        [plain] = [ln for ln in config.listeners if ln.port == 8080]
        redirected = {vh.name for vh in plain.virtual_hosts if vh.routes[0].action.redirect is not None}
        assert redirected == ({"b.example.com"} if conflicted == "True" else {"a.example.com", "b.example.com"})
        snapshot = Snapshot.from_config(config, OPTIONS, memo)
        snapshot.check_consistent()
        assert_same_as_translate(snapshot, Snapshot.from_messages(translate(fresh.config_for("default"), OPTIONS)),
                                 fresh.config_for("default"))
        memo.rotate()
