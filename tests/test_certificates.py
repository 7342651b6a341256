"""Certificate checks before anything is sent (ir/certificates.py, ir/secrets.py), Secrets in the
file source, and what `validate` says of them."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from xds_operator.api.objects import ObjectKey
from xds_operator.ir.builder import Builder
from xds_operator.ir.certificates import InvalidSecret, covers, key_pair, now_utc
from xds_operator.sources.files import FileSource
from xds_operator.sources.kubernetes import trimmed_secret
from xds_operator.sources.state import StateStore

from .tlscerts import DAY, NOW, make_ca, make_leaf, tls_secret

ROOT = Path(__file__).resolve().parent.parent
CA = make_ca()
LEAF = make_leaf(CA, "shop.example.com")
OTHER = make_leaf(CA, "other.example.com")
INTERMEDIATE = make_ca("intermediate", issuer=CA)
CHAINED = make_leaf(INTERMEDIATE, "chained.example.com")


def _rsa_1024_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


BAD_PAIRS = {
    "not PEM": (b"hello", LEAF.key_pem, "tls.crt holds no PEM certificate"),
    "broken PEM": (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", LEAF.key_pem,
                   "tls.crt does not parse as PEM certificates"),
    "no key": (LEAF.cert_pem, b"", "tls.key holds no PEM private key"),
    "broken key": (LEAF.cert_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                   "tls.key does not parse as an unencrypted PEM private key"),
    "key of another certificate": (LEAF.cert_pem, OTHER.key_pem, "tls.key does not match the certificate in tls.crt"),
    "chain out of order": (CHAINED.cert_pem + CA.cert_pem + INTERMEDIATE.cert_pem, CHAINED.key_pem,
                           "tls.crt is not in order: certificate 1 (CN=chained.example.com) is not signed by "
                           "certificate 2 (CN=test CA)"),
    "intermediate missing": (CHAINED.cert_pem + CA.cert_pem, CHAINED.key_pem,
                             "tls.crt is not in order: certificate 1 (CN=chained.example.com) is not signed by "
                             "certificate 2 (CN=test CA)"),
    "expired": ((e := make_leaf(CA, "old.example.com", not_before=NOW - 10 * DAY, not_after=NOW - DAY)).cert_pem,
                e.key_pem, "certificate 1 of tls.crt (CN=old.example.com) expired on"),
    "not yet valid": ((f := make_leaf(CA, "new.example.com", not_before=NOW + DAY)).cert_pem, f.key_pem,
                      "certificate 1 of tls.crt (CN=new.example.com) is not valid before"),
    "RSA 1024": (LEAF.cert_pem, _rsa_1024_key(), "is an RSA key of 1024 bits"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_unusable_key_pairs_are_refused_with_the_reason(case: str) -> None:
    chain, key, reason = BAD_PAIRS[case]
    with pytest.raises(InvalidSecret) as caught:
        key_pair(chain, key, now_utc())
    assert reason in str(caught.value)


def test_a_chain_in_order_is_accepted_and_names_come_from_the_leaf() -> None:
    pair = key_pair(CHAINED.cert_pem + INTERMEDIATE.cert_pem + CA.cert_pem, CHAINED.key_pem, now_utc())
    assert pair.names == ("chained.example.com",)


@pytest.mark.parametrize("names,hostname,covered", [
    (("shop.example.com",), "shop.example.com", True),
    (("shop.example.com",), "www.shop.example.com", False),
    (("*.example.com",), "shop.example.com", True),
    (("*.example.com",), "a.shop.example.com", False),  # a wildcard is one label (RFC 6125)
    (("*.example.com",), "example.com", False),
    (("*.example.com",), "*.example.com", True),
    (("shop.example.com",), "*.example.com", False),
])
def test_names_cover_hostnames(names: tuple[str, ...], hostname: str, covered: bool) -> None:
    assert covers(names, hostname) is covered


def _route_state(secret: dict | None, hostnames: list[str], *, extra: list[dict] = ()) -> StateStore:
    from xds_operator.api.objects import UserObject
    state = StateStore()
    if secret is not None:
        state.put_secret("default", secret["metadata"]["name"], trimmed_secret(secret))
    for doc in extra:
        state.put_secret("default", doc["metadata"]["name"], trimmed_secret(doc))
    state.put(UserObject(ObjectKey("Route", "default", "r"), {
        "port": 8443, "hostnames": hostnames, "tls": {"certificateRef": {"name": "cert"}},
        "rules": [{"directResponse": {"status": 200}}]}))
    state.put(UserObject(ObjectKey("Route", "default", "plain"), {
        "port": 8443, "rules": [{"directResponse": {"status": 200}}]}))
    return state


def _refs(state: StateStore) -> tuple[str, str, str, tuple[str, ...]]:
    result = Builder().build(state)
    status = result.statuses[ObjectKey("Route", "default", "r")]
    refs = status.condition("ResolvedRefs")
    assert refs is not None
    return refs.status, refs.reason, refs.message, status.warnings


def test_expiring_soon_and_uncovered_hostnames_are_warnings() -> None:
    soon = make_leaf(CA, "shop.example.com", not_after=NOW + 5 * DAY)
    status, reason, message, warnings = _refs(_route_state(tls_secret("cert", soon),
                                                           ["shop.example.com", "x.test"]))
    assert (status, reason) == (True, "ResolvedRefs")
    assert re.fullmatch(r"spec.tls.certificateRef: the certificate of Secret default/cert expires in [45] days, on "
                        r"\S+ \S+ UTC", warnings[0]), warnings
    assert warnings[1] == ("spec.hostnames: the certificate of Secret default/cert does not cover x.test (it names "
                           "shop.example.com)")
    assert message == "all references resolved; warning: " + "; warning: ".join(warnings)


@pytest.mark.parametrize("secret,problem", [
    (None, "Secret default/cert not found"),
    ({**tls_secret("cert", LEAF), "type": "Opaque"}, "Secret default/cert is of type Opaque, not kubernetes.io/tls"),
    ({**tls_secret("cert", LEAF), "data": {}}, "Secret default/cert has no tls.crt and no tls.key"),
    ({**tls_secret("cert", LEAF), "data": {"tls.crt": tls_secret("x", LEAF)["data"]["tls.crt"],
                                           "tls.key": tls_secret("x", OTHER)["data"]["tls.key"]}},
     "Secret default/cert: tls.key does not match the certificate in tls.crt"),
])
def test_an_unusable_secret_leaves_out_only_its_routes_tls_hostnames(secret: dict | None, problem: str) -> None:
    state = _route_state(secret, ["shop.example.com"])
    status, reason, message, _ = _refs(state)
    assert (status, reason, message) == (False, "InvalidCertificateRef", f"spec.tls.certificateRef: {problem}")
    config = Builder().build(state).config_for("default")
    (listener,) = config.listeners
    assert listener.tls_hosts == () and config.secrets == ()
    assert [vh.name for vh in listener.virtual_hosts] == ["*"]  # the plain Route on the port still serves


def test_secret_rotation_changes_the_secret_only() -> None:
    from xds_operator.translate import translate
    from xds_operator.translate.resources import LISTENER, ROUTE, SECRET
    state = _route_state(tls_secret("cert", LEAF), ["shop.example.com"])
    builder = Builder()
    before = translate(builder.build(state).config_for("default"))
    state.put_secret("default", "cert", trimmed_secret(tls_secret("cert", make_leaf(CA, "shop.example.com"))))
    after = translate(builder.build(state).config_for("default"))
    assert before[LISTENER] == after[LISTENER] and before[ROUTE] == after[ROUTE]
    assert before[SECRET] != after[SECRET] and set(after[SECRET]) == {"tls/default/cert"}


# -- Secrets in files ------------------------------------------------------------------------------

SECRETS_FILE = """\
apiVersion: v1
kind: Secret
metadata: {name: by-data, namespace: ns}
type: kubernetes.io/tls
data: {"tls.crt": aGVsbG8=, "tls.key": a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: by-string-data, namespace: ns}
data: {ca.crt: aGVsbG8=}
stringData: {ca.crt: "plain text wins"}
---
apiVersion: v1
kind: Secret
metadata: {name: broken, namespace: ns}
data: {ca.crt: "not base64!"}
"""


def test_file_source_reads_secrets(tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").write_text(SECRETS_FILE)
    state = StateStore()
    source = FileSource(tmp_path, state)
    source.scan()
    assert state.secrets == {
        ("ns", "by-data"): {"type": "kubernetes.io/tls", "data": {"tls.crt": b"hello", "tls.key": b"key"}},
        ("ns", "by-string-data"): {"type": "Opaque", "data": {"ca.crt": b"plain text wins"}},
    }
    (finding,) = source.findings()
    assert (finding.line, finding.message) == (13, "Secret/ns/broken: data.ca.crt is not base64")


def test_validate_reports_certificate_problems_and_warnings() -> None:
    result = subprocess.run([sys.executable, "-m", "xds_operator.cli", "validate", str(ROOT / "tests/golden/tls.in.yaml")],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert ("error: Route/web/bad: spec.tls.certificateRef: Secret web/mismatched: tls.key does not match the "
            "certificate in tls.crt (ResolvedRefs=InvalidCertificateRef)") in out
    assert "warning: Route/web/missing: spec.tls.certificateRef: Secret web/nope not found" in out
    assert ("warning: Route/web/uncovered: the certificate of Secret web/shop does not cover other.test (it names "
            "shop.example.com)") in out
    assert out.splitlines()[-1].endswith("1 error, 2 warnings")


# -- CA bundles from ConfigMaps (a Backend's spec.tls.caCertificateRef of kind ConfigMap) ----------

CONFIG_MAPS_FILE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: by-data, namespace: ns}
data: {ca.crt: "hello", other: "not kept"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: by-binary-data, namespace: ns}
binaryData: {ca.crt: aGVsbG8=}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: broken, namespace: ns}
binaryData: {ca.crt: "not base64!"}
"""


def test_file_source_reads_config_maps(tmp_path: Path) -> None:
    (tmp_path / "config-maps.yaml").write_text(CONFIG_MAPS_FILE)
    state = StateStore()
    source = FileSource(tmp_path, state)
    source.scan()
    assert state.config_maps == {("ns", "by-data"): {"data": {"ca.crt": b"hello"}},
                                 ("ns", "by-binary-data"): {"data": {"ca.crt": b"hello"}}}
    (finding,) = source.findings()
    assert (finding.line, finding.message) == (11, "ConfigMap/ns/broken: binaryData.ca.crt is not base64")


def _backend_state(ca_ref: dict, *, config_map: bytes | None = None, secret: bytes | None = None) -> StateStore:
    from xds_operator.api.objects import UserObject
    state = StateStore()
    if config_map is not None:
        state.put_config_map("default", "bundle", {"data": {"ca.crt": config_map}})
    if secret is not None:
        state.put_secret("default", "bundle", {"type": "Opaque", "data": {"ca.crt": secret}})
    state.put(UserObject(ObjectKey("Backend", "default", "b"), {
        "endpoints": [{"address": "10.0.0.1", "port": 443}], "tls": {"sni": "b.test", "caCertificateRef": ca_ref}}))
    state.put(UserObject(ObjectKey("Route", "default", "r"), {"rules": [{"backends": [{"name": "b"}]}]}))
    return state


def test_a_backend_ca_bundle_from_a_config_map() -> None:
    from xds_operator.translate import translate
    from xds_operator.translate.resources import CLUSTER, SECRET
    other_ca = make_ca("other CA")
    # A Secret of the same name is not what kind ConfigMap names.
    state = _backend_state({"kind": "ConfigMap", "name": "bundle"}, config_map=CA.cert_pem, secret=other_ca.cert_pem)
    result = Builder().build(state)
    refs = result.statuses[ObjectKey("Backend", "default", "b")].condition("ResolvedRefs")
    assert refs is not None and refs.status, refs
    config = result.config_for("default")
    (secret,) = config.secrets
    assert (secret.name, secret.source, secret.trusted_ca) == (
        "configmap-ca/default/bundle", ObjectKey("ConfigMap", "default", "bundle"), CA.cert_pem.decode())
    resources = translate(config)
    assert set(resources[SECRET]) == {"configmap-ca/default/bundle"}
    assert "configmap-ca/default/bundle" in str(resources[CLUSTER]["default/b"])
    # kind Secret (the default) reads the Secret.
    (secret,) = Builder().build(_backend_state({"name": "bundle"}, config_map=CA.cert_pem,
                                               secret=other_ca.cert_pem)).config_for("default").secrets
    assert (secret.name, secret.trusted_ca) == ("ca/default/bundle", other_ca.cert_pem.decode())


@pytest.mark.parametrize("config_map,problem", [
    (None, "ConfigMap default/bundle not found"),
    (b"", "ConfigMap default/bundle has no ca.crt"),
    (b"hello", "ConfigMap default/bundle: ca.crt holds no PEM certificate"),
    (make_ca(not_before=NOW - 10 * DAY, not_after=NOW - DAY).cert_pem,
     "ConfigMap default/bundle: the CA certificate in ca.crt (CN=test CA) expired on"),
])
def test_an_unusable_config_map_ca_bundle_leaves_its_backend_out(config_map: bytes | None, problem: str) -> None:
    result = Builder().build(_backend_state({"kind": "ConfigMap", "name": "bundle"}, config_map=config_map))
    refs = result.statuses[ObjectKey("Backend", "default", "b")].condition("ResolvedRefs")
    assert refs is not None and (refs.status, refs.reason) == (False, "InvalidCertificateRef")
    assert refs.message.startswith(f"spec.tls.caCertificateRef: {problem}"), refs.message
    config = result.config_for("default")
    assert config.clusters == () and config.secrets == ()


def test_validate_reads_config_map_ca_bundles(tmp_path: Path) -> None:
    expired = make_ca(not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    docs = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "web"},
             "data": {"ca.crt": ca.cert_pem.decode()}} for name, ca in (("good", CA), ("expired", expired))]
    docs += [{"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Backend", "metadata": {"name": name, "namespace": "web"},
              "spec": {"endpoints": [{"address": "10.0.0.1", "port": 443}],
                       "tls": {"caCertificateRef": {"kind": "ConfigMap", "name": name}}}}
             for name in ("good", "expired", "missing")]
    import yaml
    (tmp_path / "backends.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run([sys.executable, "-m", "xds_operator.cli", "validate", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert "Backend/web/good" not in out, out
    assert "Backend/web/expired: spec.tls.caCertificateRef: ConfigMap web/expired: the CA certificate in ca.crt" in out, out
    assert "Backend/web/missing: spec.tls.caCertificateRef: ConfigMap web/missing not found" in out, out


# -- TLS hostnames two Routes share on a port -----------------------------------------------------

def _tls_route(name: str, hostnames: list[str], cert: str, **tls: object) -> dict:
    return {"port": 8443, "hostnames": hostnames, "tls": {"certificateRef": {"name": cert}, **tls},
            "rules": [{"directResponse": {"status": 200, "body": name}}]}


def _shared_host_state(*routes: tuple[str, dict]) -> StateStore:
    from xds_operator.api.objects import UserObject
    state = StateStore()
    for cert, leaf in (("one", make_leaf(CA, "a.test", "b.test")), ("two", make_leaf(CA, "a.test", "c.test"))):
        state.put_secret("default", cert, trimmed_secret(tls_secret(cert, leaf)))
    for name, spec in routes:
        state.put(UserObject(ObjectKey("Route", "default", name), spec))
    return state


def _chains(result) -> dict[str, set[str]]:
    """SNI hostname -> the Routes whose rules its chain serves."""
    (listener,) = result.config_for("default").listeners
    return {h.hostname: {e.source.name for e in h.virtual_host.routes} for h in listener.tls_hosts}


def test_a_tls_hostname_with_other_tls_settings_is_a_conflict_for_the_later_route() -> None:
    state = _shared_host_state(("first", _tls_route("first", ["a.test", "b.test"], "one")),
                               ("second", _tls_route("second", ["a.test", "c.test"], "two")),
                               ("third", _tls_route("third", ["a.test"], "one", minVersion="1.3")))
    result = Builder().build(state)
    # a.test keeps the first Route's settings and only its rules; the others' other hostnames serve.
    assert _chains(result) == {"a.test": {"first"}, "b.test": {"first"}, "c.test": {"second"}}
    first = result.statuses[ObjectKey("Route", "default", "first")].condition("Accepted")
    assert first is not None and first.status
    second = result.statuses[ObjectKey("Route", "default", "second")].condition("Accepted")
    assert second is not None and (second.status, second.reason) == (False, "HostnameConflict")
    assert second.message == ("spec.hostnames[0]: a.test is a TLS hostname of Route default/first on port 8443 too, "
                              "with other TLS settings (spec.tls.certificateRef differs): that Route, first by "
                              "namespace/name, serves it and this Route's rules for it are left out")
    third = result.statuses[ObjectKey("Route", "default", "third")].condition("Accepted")
    assert third is not None and (third.status, third.reason) == (False, "HostnameConflict")
    assert "(spec.tls.minVersion differs)" in third.message
    # The third Route serves nothing: it is not sent, and neither is anything of its own.
    assert result.routes_by_key[ObjectKey("Route", "default", "third")].left_out
    assert {s.name for s in result.config_for("default").secrets} == {"tls/default/one", "tls/default/two"}


def test_routes_with_the_same_tls_settings_or_other_proxies_share_a_hostname() -> None:
    same = _shared_host_state(("first", _tls_route("first", ["a.test"], "one")),
                              ("second", _tls_route("second", ["a.test"], "one")))
    result = Builder().build(same)
    assert _chains(result) == {"a.test": {"first", "second"}}  # the rules merged
    assert all(s.condition("Accepted").status for s in result.statuses.values())
    apart = _shared_host_state(("first", {**_tls_route("first", ["a.test"], "one"), "proxies": ["x"]}),
                               ("second", {**_tls_route("second", ["a.test"], "two"), "proxies": ["y"]}))
    result = Builder().build(apart)
    assert all(s.condition("Accepted").status for s in result.statuses.values())


def test_validate_reports_tls_hostname_conflicts(tmp_path: Path) -> None:
    import yaml
    docs = [tls_secret(cert, make_leaf(CA, "a.test")) for cert in ("one", "two")]
    docs += [{"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route", "metadata": {"name": name, "namespace": "default"},
              "spec": _tls_route(name, ["a.test"], cert)} for name, cert in (("first", "one"), ("second", "two"))]
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run([sys.executable, "-m", "xds_operator.cli", "validate", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "Route/default/second" in line]
    assert line.endswith("routes.yaml:45:5: error: Route/default/second: spec.hostnames[0]: a.test is a TLS hostname of Route default/first on port "
                         "8443 too, with other TLS settings (spec.tls.certificateRef differs): that Route, first by "
                         "namespace/name, serves it and this Route's rules for it are left out "
                         "(Accepted=HostnameConflict)"), line
    assert "Route/default/first" not in result.stdout


# -- certificates whose time comes while nothing changes -------------------------------------------

def test_the_build_says_when_to_check_certificates_again_and_then_does(monkeypatch) -> None:
    """BuildResult.recheck_at is the next instant a check may come out otherwise (the controller
    builds again then); a build at or after it checks again, though no object or Secret changed."""
    import xds_operator.ir.builder as builder_module
    now = now_utc().replace(microsecond=0)
    expiring = make_leaf(CA, "shop.example.com", not_after=now + 15 * DAY)  # warned in a day
    state = _route_state(tls_secret("cert", expiring), ["shop.example.com"])
    builder = Builder()
    monkeypatch.setattr(builder_module, "now_utc", lambda: now)
    result = builder.build(state)
    assert result.recheck_at == expiring.cert.not_valid_after_utc - 14 * DAY
    assert result.statuses[ObjectKey("Route", "default", "r")].warnings == ()
    # Just before: nothing new (and the memo is reused).
    monkeypatch.setattr(builder_module, "now_utc", lambda: result.recheck_at - datetime.timedelta(seconds=1))
    assert builder.build(state).statuses[ObjectKey("Route", "default", "r")].warnings == ()
    # At the warning's instant: the warning, and the next instant is the expiry.
    monkeypatch.setattr(builder_module, "now_utc", lambda: result.recheck_at)
    warned = builder.build(state)
    (warning,) = warned.statuses[ObjectKey("Route", "default", "r")].warnings
    assert warning.startswith("spec.tls.certificateRef: the certificate of Secret default/cert expires in 14 days")
    assert warned.recheck_at == expiring.cert.not_valid_after_utc
    # At the expiry: out of the config, and the condition says why.
    monkeypatch.setattr(builder_module, "now_utc", lambda: warned.recheck_at)
    expired = builder.build(state)
    refs = expired.statuses[ObjectKey("Route", "default", "r")].condition("ResolvedRefs")
    assert refs is not None and (refs.status, refs.reason) == (False, "InvalidCertificateRef")
    assert "certificate 1 of tls.crt (CN=shop.example.com) expired on" in refs.message
    assert expired.config_for("default").secrets == () and expired.recheck_at is None


def test_a_certificate_not_valid_yet_is_checked_again_when_it_becomes_valid(monkeypatch) -> None:
    import xds_operator.ir.builder as builder_module
    now = now_utc().replace(microsecond=0)
    future = make_leaf(CA, "shop.example.com", not_before=now + DAY)
    state = _route_state(tls_secret("cert", future), ["shop.example.com"])
    builder = Builder()
    monkeypatch.setattr(builder_module, "now_utc", lambda: now)
    result = builder.build(state)
    assert result.statuses[ObjectKey("Route", "default", "r")].condition("ResolvedRefs").status is False
    assert result.recheck_at == future.cert.not_valid_before_utc
    monkeypatch.setattr(builder_module, "now_utc", lambda: result.recheck_at)
    assert builder.build(state).statuses[ObjectKey("Route", "default", "r")].condition("ResolvedRefs").status is True
