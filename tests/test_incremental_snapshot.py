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


def test_builds_with_tls_match_fresh_ones() -> None:
    """TLS and plain Routes on one port, a TLS Backend: a plain edit takes the incremental path
    and keeps the SNI chains and secrets; a TLS Route's edit, a rotated, a broken and a restored
    Secret, and a TLS Backend's edit are built whole. Each gives what a fresh build gives."""
    from xds_operator.sources.kubernetes import trimmed_secret

    from .tlscerts import ca_secret, make_ca, make_leaf, tls_secret

    ca = make_ca()

    def certificate(*names: str) -> dict[str, object]:
        return trimmed_secret(tls_secret("cert", make_leaf(ca, *names), namespace="ns"))

    def tls_route(marker: str) -> UserObject:
        return UserObject(ObjectKey("Route", "ns", "secure"), {
            "port": 8443, "hostnames": ["a.example.com", "b.example.com"], "tls": {"certificateRef": {"name": "cert"}},
            "rules": [{"backends": [{"name": "b0"}], "responseHeaders": {"set": [{"name": "x-marker", "value": marker}]}}]})

    def plain_route(marker: str) -> UserObject:
        obj = route(1, marker=marker)
        return UserObject(obj.key, {**obj.spec, "port": 8443})

    def tls_backend(sni: str) -> UserObject:
        return UserObject(ObjectKey("Backend", "ns", "b0"), {
            "endpoints": [{"address": "10.0.0.1", "port": 443}], "tls": {"sni": sni, "caCertificateRef": {"name": "ca"}}})

    state = StateStore()
    state.put_secret("ns", "cert", certificate("a.example.com", "b.example.com"))
    state.put_secret("ns", "ca", trimmed_secret(ca_secret("ca", ca, namespace="ns")))
    state.put(tls_backend("one.internal"))
    state.put(backend(1))
    state.put(tls_route("a"))
    state.put(plain_route("a"))
    builder, memo = Builder(), ResourceMemo()
    Snapshot.from_config(builder.build(state).config_for("default"), OPTIONS, memo)
    memo.rotate()
    edits = [
        (lambda: state.put(plain_route("b")), True),
        (lambda: state.put(tls_route("b")), False),
        (lambda: state.put_secret("ns", "cert", certificate("a.example.com", "b.example.com")), False),  # rotated
        (lambda: state.put_secret("ns", "cert", {"type": "kubernetes.io/tls", "data": {}}), False),  # broken
        (lambda: state.put(plain_route("c")), True),  # beside a TLS Route that is left out
        (lambda: state.put_secret("ns", "cert", certificate("*.example.com")), False),  # restored
        (lambda: state.put(tls_backend("two.internal")), False),
    ]
    for edit, incremental in edits:
        edit()
        result = builder.build(state)
        assert (result.changed_routes is not None) is incremental
        fresh = Builder().build(state)
        assert result.statuses == fresh.statuses
        assert result.config_for("default") == fresh.config_for("default")
        snapshot = Snapshot.from_config(result.config_for("default"), OPTIONS, memo)
        snapshot.check_consistent()
        assert_same_as_translate(snapshot, Snapshot.from_messages(translate(fresh.config_for("default"), OPTIONS)),
                                 fresh.config_for("default"))
        memo.rotate()
