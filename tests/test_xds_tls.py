"""ADS over TLS and mTLS against a scripted client (tests/xds_client.py over a grpc secure channel):
the group rule on certificates (xds/peer_group.py), the server's files and their rotation
(xds/channel_tls.py), and the server refusing what it must (xds/server.py). The same with a real
Envoy is in test_xds_tls_envoy.py."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from xds_operator.api.objects import API_VERSION, UserObject
from xds_operator.cli import parser
from xds_operator.controlplane.app import ControlPlane
from xds_operator.dev.processes import envoy_binary
from xds_operator.translate.resources import CLUSTER, LISTENER
from xds_operator.xds.channel_tls import ReloadingTls, TlsFilesError, XdsTlsFiles, load
from xds_operator.xds.peer_group import group_uri, groups_named, refusal

from .test_cli import REPO, cli, one_line_error
from .test_deploy_manifests import kubectl
from .tlscerts import DAY, NOW, Issued, make_ca, make_leaf
from .xds_client import AdsClient, resource_names
from .xds_pki import XdsPki, served_certificate


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


# -- the group rule ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


def test_a_group_uri_names_its_group_only(ca: Issued):
    cert = make_leaf(ca, uris=[group_uri("edge")], client=True)
    assert groups_named(cert.cert) == {"edge"}
    assert refusal("edge", cert.cert_pem) is None
    reason = refusal("payments", cert.cert_pem)
    assert reason is not None
    assert "spiffe://xds-operator/xds-group/edge" in reason and "'payments'" in reason
    assert "spiffe://<trust domain>/xds-group/payments" in reason  # what it would need


def test_any_trust_domain_and_percent_encoded_groups(ca: Issued):
    cert = make_leaf(ca, uris=["spiffe://cluster.local/xds-group/edge", group_uri("team a/b")], client=True)
    assert groups_named(cert.cert) == {"edge", "team a/b"}
    assert group_uri("team a/b") == "spiffe://xds-operator/xds-group/team%20a%2Fb"
    assert refusal("team a/b", cert.cert_pem) is None


@pytest.mark.parametrize("names", [
    {"names": ["edge"]},  # a DNS name equal to the group is not the rule's SAN
    {"uris": ["https://xds-operator/xds-group/edge"]},  # another scheme
    {"uris": ["spiffe:///xds-group/edge"]},  # no trust domain
    {"uris": ["spiffe://td/xds-group/edge/more"]},  # a deeper path
    {"uris": ["spiffe://td/other/edge"]},
    {"uris": ["spiffe://td/xds-group/"]},
    {},  # no SAN at all
])
def test_names_that_do_not_bind_a_group(ca: Issued, names: dict):
    cert = make_leaf(ca, *names.get("names", ()), uris=names.get("uris", ()), client=True)
    assert groups_named(cert.cert) == frozenset()
    assert refusal("edge", cert.cert_pem) is not None


def test_no_or_unparsable_peer_certificate_is_refused():
    assert refusal("edge", None) == "the client presented no certificate"
    assert "does not parse" in (refusal("edge", b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n") or "")


# -- the server's files ------------------------------------------------------------------------

def files_with(tmp: Path, cert: bytes, key: bytes, ca: bytes | None = None) -> XdsTlsFiles:
    (tmp / "tls.crt").write_bytes(cert)
    (tmp / "tls.key").write_bytes(key)
    if ca is not None:
        (tmp / "ca.crt").write_bytes(ca)
    return XdsTlsFiles(tmp / "tls.crt", tmp / "tls.key", tmp / "ca.crt" if ca is not None else None)


def test_bad_files_say_which_option_and_why(tmp_path: Path, ca: Issued):
    good, other = make_leaf(ca, "xds.test"), make_leaf(ca, "xds.test")
    missing = XdsTlsFiles(tmp_path / "nope.crt", tmp_path / "nope.key")
    with pytest.raises(TlsFilesError, match=r"^--xds-tls-cert .*nope.crt: No such file or directory$"):
        load(missing)
    files = files_with(tmp_path, good.cert_pem, other.key_pem)
    with pytest.raises(TlsFilesError, match=r"^--xds-tls-key \S+tls.key does not match the certificate in "
                                            r"--xds-tls-cert \S+tls.crt$"):
        load(files)
    with pytest.raises(TlsFilesError, match=r"^--xds-tls-cert \S+ holds no PEM certificate$"):
        load(files_with(tmp_path, b"garbage", good.key_pem))
    with pytest.raises(TlsFilesError, match=r"^--xds-tls-key \S+ holds no PEM private key$"):
        load(files_with(tmp_path, good.cert_pem, b"garbage"))
    expired = make_leaf(ca, "xds.test", not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    with pytest.raises(TlsFilesError, match=r"^certificate 1 of --xds-tls-cert \S+ \(CN=xds.test\) expired on "):
        load(files_with(tmp_path, expired.cert_pem, expired.key_pem))
    with pytest.raises(TlsFilesError, match=r"^--xds-client-ca \S+ca.crt holds no PEM certificate$"):
        load(files_with(tmp_path, good.cert_pem, good.key_pem, b"not a CA"))
    assert load(files_with(tmp_path, good.cert_pem, good.key_pem, ca.cert_pem)).client_ca == ca.cert_pem


def test_reloading_reads_changed_files_and_keeps_the_last_good_ones(tmp_path: Path, caplog):
    pki = XdsPki(tmp_path)
    first = pki.server
    tls = ReloadingTls(pki.files())
    assert tls.changed() is None  # nothing changed: not even read
    second = pki.rotate()
    material = tls.changed()
    assert material is not None and material.chain == second.cert_pem and tls.current is material
    assert tls.changed() is None
    caplog.set_level(logging.ERROR, "xds_operator.xds.channel_tls")
    pki.rotate(first, key_pem=second.key_pem)  # a certificate with another's key
    assert tls.changed() is None and tls.current is material  # still the second
    assert tls.changed() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once per change, not once per handshake
    assert errors[0].startswith("xDS TLS files not reloaded, still serving the previous certificate: --xds-tls-key ")
    assert "does not match the certificate" in errors[0]
    third = pki.rotate()
    material = tls.changed()
    assert material is not None and material.chain == third.cert_pem


# -- the server --------------------------------------------------------------------------------

def manifest(kind: str, name: str, spec: dict) -> UserObject:
    return UserObject.from_manifest({"apiVersion": API_VERSION, "kind": kind,
                                     "metadata": {"name": name, "namespace": "t"}, "spec": spec})


def objects() -> list[UserObject]:
    return [manifest("Backend", "a", {"endpoints": [{"address": "127.0.0.1", "port": 9001}]}),
            manifest("Route", "edge", {"port": 10080, "proxies": ["edge"], "rules": [{"backends": [{"name": "a"}]}]}),
            manifest("Route", "pay", {"port": 10081, "proxies": ["payments"], "rules": [{"backends": [{"name": "a"}]}]})]


@pytest.fixture
async def tls_plane(tmp_path: Path):
    """start(mtls=True) -> (plane, pki); stopped (and its clients closed) after the test."""
    planes: list[ControlPlane] = []
    clients: list[AdsClient] = []

    async def start(*, mtls: bool = True) -> tuple[ControlPlane, XdsPki]:
        pki = XdsPki(tmp_path / f"pki-{len(planes)}")
        plane = ControlPlane(xds_address="127.0.0.1:0", http_address=None, debounce=0.01, xds_tls=pki.files(mtls=mtls))
        planes.append(plane)
        for obj in objects():
            plane.state.put(obj)
        await plane.start()
        await asyncio.wait_for(plane.controller.wait_built(), 5)
        return plane, pki

    def client(plane: ControlPlane, pki: XdsPki, cert: Issued | None, **kwargs) -> AdsClient:
        assert plane.xds_port is not None
        ads = AdsClient(plane.xds_port, channel=pki.channel(plane.xds_port, cert), **kwargs)
        clients.append(ads)
        return ads

    yield start, client
    for ads in clients:
        await ads.close()
        await ads.channel.close()
    for plane in planes:
        await plane.stop()


async def stream_error(ads: AdsClient) -> grpc.aio.AioRpcError:
    """The error that ended the stream, and that nothing came before it."""
    with pytest.raises(AssertionError, match="stream failed") as failed:
        await ads.recv(timeout=5)
    error = failed.value.__cause__
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_proxy_with_its_groups_certificate_gets_its_config(tls_plane, delta: bool):
    start, client = tls_plane
    plane, pki = await start()
    ads = client(plane, pki, pki.client("edge"), node_id="edge-1", cluster="edge", delta=delta)
    for type_url in (CLUSTER, LISTENER):  # listeners after their clusters are ACKed (make-before-break)
        if delta:
            ads.send_delta(type_url, subscribe=["*"])
        else:
            ads.send(type_url)
        response = await ads.expect(type_url)
        ads.ack(response)
        assert resource_names(response) == {CLUSTER: ["t/a"], LISTENER: ["http-10080"]}[type_url]  # edge's only
    assert [p.node_id for p in plane.registry.proxies.values()] == ["edge-1"]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_certificate_of_another_group_gets_permission_denied_and_nothing(tls_plane, delta: bool, caplog):
    start, client = tls_plane
    plane, pki = await start()
    caplog.set_level(logging.WARNING, "xds_operator.xds.server")
    ads = client(plane, pki, pki.client("edge"), node_id="sneaky-1", cluster="payments", delta=delta)
    if delta:
        ads.send_delta(CLUSTER, subscribe=["*"])
    else:
        ads.send(CLUSTER)
    error = await stream_error(ads)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node.cluster 'payments' refused" in (error.details() or "")
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line.startswith(f"proxy sneaky-1 (cluster 'payments') refused over {'delta' if delta else 'sotw'}: ")
    assert "spiffe://xds-operator/xds-group/edge" in line
    assert plane.registry.proxies == {}  # never registered, so never sent anything


async def test_no_client_certificate_no_handshake(tls_plane):
    start, client = tls_plane
    plane, pki = await start()
    ads = client(plane, pki, None, cluster="edge")
    ads.send(CLUSTER)
    assert (await stream_error(ads)).code() == grpc.StatusCode.UNAVAILABLE
    stranger = client(plane, pki, pki.client("edge", ca=make_ca("not the client CA")), cluster="edge")
    stranger.send(CLUSTER)
    assert (await stream_error(stranger)).code() == grpc.StatusCode.UNAVAILABLE
    assert plane.registry.proxies == {}


async def test_server_side_tls_only_needs_no_client_certificate(tls_plane):
    start, client = tls_plane
    plane, pki = await start(mtls=False)
    ads = client(plane, pki, None, cluster="payments")
    ads.send(LISTENER)
    assert resource_names(await ads.expect(LISTENER)) == ["http-10081"]


async def test_rotation_keeps_open_streams_and_new_handshakes_get_the_new_certificate(tls_plane, caplog):
    start, client = tls_plane
    plane, pki = await start()
    assert plane.xds_port is not None
    edge = pki.client("edge")
    ads = client(plane, pki, edge, cluster="edge")
    ads.send(CLUSTER)
    ads.ack(await ads.expect(CLUSTER))
    first = pki.server
    assert served_certificate(plane.xds_port, pki, edge) == der(first)

    rotated = pki.rotate()
    assert served_certificate(plane.xds_port, pki, edge) == der(rotated)
    caplog.set_level(logging.ERROR, "xds_operator.xds.channel_tls")
    pki.rotate(first, key_pem=rotated.key_pem)  # bad: the last good one keeps serving
    assert served_certificate(plane.xds_port, pki, edge) == der(rotated)
    assert served_certificate(plane.xds_port, pki, edge) == der(rotated)
    assert len([r for r in caplog.records if "not reloaded" in r.getMessage()]) == 1

    # The stream opened before all this is the same one, and still served.
    [proxy] = plane.registry.proxies.values()
    plane.state.put(manifest("Backend", "b", {"endpoints": [{"address": "127.0.0.1", "port": 9002}]}))
    plane.state.put(manifest("Route", "edge", {"port": 10080, "proxies": ["edge"], "rules": [{"backends": [{"name": "b"}]}]}))
    assert resource_names(await ads.expect(CLUSTER, timeout=5)) == ["t/b"]
    assert list(plane.registry.proxies.values()) == [proxy]


# -- the command line ----------------------------------------------------------------------------

def only_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1 and one line on stderr naming the problem, no traceback."""
    line = one_line_error(result, 1, *needles)
    assert result.stderr.strip() == line, result.stderr
    return line


@pytest.mark.parametrize("command", ["serve", "run"])
def test_bad_tls_files_are_one_line_and_exit_1(tmp_path: Path, ca: Issued, command: str):
    good, other = make_leaf(ca, "xds.test"), make_leaf(ca, "xds.test")
    files = files_with(tmp_path, good.cert_pem, other.key_pem)
    (tmp_path / "config").mkdir()
    base = [command, "--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"]
    if command == "serve":
        base += ["--config", str(tmp_path / "config")]
    missing = tmp_path / "missing.crt"
    only_line(cli(*base, "--xds-tls-cert", str(missing), "--xds-tls-key", str(files.key)),
              f"xds-operator {command}: error: --xds-tls-cert {missing}: No such file or directory")
    only_line(cli(*base, "--xds-tls-cert", str(files.cert), "--xds-tls-key", str(files.key)),
              f"--xds-tls-key {files.key} does not match the certificate in --xds-tls-cert {files.cert}")
    (tmp_path / "junk.pem").write_text("not PEM\n")
    (tmp_path / "good.key").write_bytes(good.key_pem)
    only_line(cli(*base, "--xds-tls-cert", str(files.cert), "--xds-tls-key", str(tmp_path / "good.key"),
                  "--xds-client-ca", str(tmp_path / "junk.pem")),
              f"--xds-client-ca {tmp_path / 'junk.pem'} holds no PEM certificate")
    only_line(cli(*base, "--xds-tls-cert", str(files.cert)), "--xds-tls-cert and --xds-tls-key go together")
    only_line(cli(*base, "--xds-client-ca", str(files.cert)), "--xds-client-ca needs --xds-tls-cert and --xds-tls-key")


def test_bootstrap_renders_the_transport_socket_envoy_accepts(tmp_path: Path):
    pki = XdsPki(tmp_path)
    cert, key = pki.client_files("edge", pki.client("edge"))
    result = cli("bootstrap", "--node-cluster", "edge", "--xds-address", "xds.example:18000",
                 "--xds-tls-ca", str(pki.server_ca_file), "--xds-client-cert", str(cert), "--xds-client-key", str(key))
    assert result.returncode == 0, result.stderr
    [cluster] = yaml.safe_load(result.stdout)["static_resources"]["clusters"]
    assert cluster["transport_socket"] == {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "xds.example",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
            "validation_context": {"trusted_ca": {"filename": str(pki.server_ca_file)},
                                   "match_typed_subject_alt_names": [{"san_type": "DNS",
                                                                      "matcher": {"exact": "xds.example"}}]}}}}
    path = tmp_path / "envoy.yaml"
    path.write_text(result.stdout)
    check = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # An IP address is matched as one and sent as no SNI; without a client certificate, none is sent.
    by_ip = yaml.safe_load(cli("bootstrap", "--xds-address", "10.0.0.1:18000", "--xds-tls-ca", "/ca.crt").stdout)
    context = by_ip["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert "sni" not in context and "tls_certificates" not in context["common_tls_context"]
    assert context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.1"}}]
    named = yaml.safe_load(cli("bootstrap", "--xds-address", "10.0.0.1:18000", "--xds-tls-ca", "/ca.crt",
                               "--xds-server-name", "xds-operator.xds-operator.svc").stdout)
    assert named["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["sni"] == \
        "xds-operator.xds-operator.svc"


def test_bootstrap_tls_options_that_do_not_go_together():
    only_line(cli("bootstrap", "--xds-client-cert", "/c.crt", "--xds-client-key", "/c.key"),
              "need --xds-tls-ca")
    only_line(cli("bootstrap", "--xds-tls-ca", "/ca.crt", "--xds-client-cert", "/c.crt"),
              "--xds-client-cert and --xds-client-key go together")



def test_the_deploy_component_passes_the_mounted_secret_to_run(tmp_path: Path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    deploy = Path(os.path.relpath(REPO / "deploy", overlay))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(deploy / "operator")], "components": [str(deploy / "components" / "ads-mtls")]}))
    rendered = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    [deployment] = [d for d in yaml.safe_load_all(rendered.stdout) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = parser().parse_args(container["args"])
    assert (args.command, args.standalone, args.leader_elect) == ("run", True, True)
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert volume == {"name": mount["name"], "secret": {"secretName": "xds-operator-xds-tls"}}
    folder = Path(mount["mountPath"])
    assert (args.xds_tls_cert, args.xds_tls_key, args.xds_client_ca) == (
        str(folder / "tls.crt"), str(folder / "tls.key"), str(folder / "ca.crt"))
