"""ADS over mTLS with real Envoys: `xds-operator serve --xds-tls-cert/--xds-tls-key/--xds-client-ca`
and Envoys whose bootstrap is `xds-operator bootstrap`'s rendering (realprocs.Envoy renders it with
the same XdsClientTls the --xds-tls-ca/--xds-client-cert/--xds-client-key options make).

An Envoy with its group's certificate gets its config and serves traffic; one without a client
certificate gets no handshake; one whose certificate names another group gets PERMISSION_DENIED
and nothing; the server's certificate rotates under an open stream without dropping it. And
`xds-operator run` over mTLS with Routes from a real API server.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from xds_operator.dev.processes import Process, free_port, wait_http

from .kubeops import route
from .realprocs import Envoy, ServeProcess, eventually, http_get
from .tlscerts import Issued
from .xds_pki import SERVER_NAME, XdsPki, served_certificate

GROUP = "edge"
XDS = "cluster.xds-operator."  # Envoy's stats of its connection to the control plane


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


class MtlsStack:
    """`serve` over mTLS with one direct-response Route for the edge group; Envoys added per test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pki = XdsPki(tmp / "pki")
        self.listener_port = free_port()
        self.config = tmp / "config"
        self.config.mkdir()
        self.write_route("v1")
        self.server = ServeProcess(tmp, self.config, args=self.pki.serve_args())
        self.envoys: list[Envoy] = []

    def write_route(self, body: str) -> None:
        route = (f"apiVersion: xds-operator.dev/v1alpha1\nkind: Route\nmetadata: {{name: edge, namespace: t}}\n"
                 f"spec:\n  port: {self.listener_port}\n  proxies: [{GROUP}]\n"
                 f"  rules: [{{directResponse: {{status: 200, body: {body}}}}}]\n")
        tmp = self.config / ".edge.yaml"  # hidden files are not read: the rename is atomic
        tmp.write_text(route)
        tmp.replace(self.config / "edge.yaml")

    def envoy(self, node_id: str, client: Issued | None, *, api_type: str = "GRPC",
              server_name: str = SERVER_NAME) -> Envoy:
        envoy = Envoy(self.tmp, self.server.xds_port, api_type=api_type, node_cluster=GROUP, node_id=node_id,
                      xds_tls=self.pki.envoy_tls(client, name=node_id, server_name=server_name))
        self.envoys.append(envoy)
        return envoy

    def body(self) -> bytes | None:
        """The Route's answer through Envoy; None if Envoy does not serve it (or does not listen)."""
        try:
            status, _, body = http_get(f"http://127.0.0.1:{self.listener_port}/")
        except OSError:
            return None
        return body if status == 200 else None

    def serve_log(self) -> str:
        return self.server.log_path.read_text()

    def connected_lines(self, node_id: str) -> list[str]:
        return [line for line in self.serve_log().splitlines() if f"proxy {node_id} (cluster" in line
                and " connected over " in line]


@pytest.fixture
async def mtls(tmp_path: Path):
    stack = MtlsStack(tmp_path)
    await stack.server.start()
    try:
        yield stack
    finally:
        for envoy in stack.envoys:
            await envoy.stop()
        await stack.server.stop()


def envoy_log(envoy: Envoy) -> str:
    assert envoy.process.log_path is not None
    return envoy.process.log_path.read_text()


def updates(envoy: Envoy) -> dict[str, int]:
    """Envoy's non-zero counts of xDS updates (not clusters' own `update_success`, of membership)."""
    return {k: v for k, v in envoy.update_counters().items() if v and not k.startswith("cluster.")}


# SotW verifies the server by its DNS name (and sends it as SNI), delta by its IP address SAN.
@pytest.mark.parametrize("api_type, server_name", [("GRPC", SERVER_NAME), ("DELTA_GRPC", "127.0.0.1")],
                         ids=["sotw", "delta"])
async def test_an_envoy_with_its_groups_certificate_gets_config_and_serves(mtls: MtlsStack, api_type: str,
                                                                             server_name: str):
    envoy = await mtls.envoy("edge-1", mtls.pki.client(GROUP), api_type=api_type, server_name=server_name).start()
    assert await eventually(lambda: mtls.body() == b"v1", what="traffic through Envoy")
    assert envoy.stats()[XDS + "ssl.handshake"] >= 1
    [proxy] = mtls.server.get_json("/proxies")
    assert (proxy["node"], proxy["cluster"]) == ("edge-1", GROUP)
    assert not {k: v for k, v in updates(envoy).items() if k.endswith("update_rejected")}


async def test_an_envoy_without_a_client_certificate_gets_nothing(mtls: MtlsStack):
    envoy = await mtls.envoy("anonymous-1", None).start(wait_ready=False)
    # It tries, and its handshakes fail (Envoy counts them as failed connects): the server
    # requires a certificate.
    await eventually(lambda: envoy.stats().get(XDS + "upstream_cx_connect_fail", 0) >= 2, timeout=30,
                     what="two refused handshakes")
    stats = envoy.stats()
    assert stats[XDS + "ssl.handshake"] == 0, stats
    assert stats["control_plane.connected_state"] == 0
    assert updates(envoy) == {}
    assert mtls.server.get_json("/proxies") == []
    assert "anonymous-1" not in mtls.serve_log()  # no stream ever reached the server
    assert mtls.body() is None


@pytest.mark.parametrize("api_type, protocol", [("GRPC", "sotw"), ("DELTA_GRPC", "delta")], ids=["sotw", "delta"])
async def test_an_envoy_with_another_groups_certificate_gets_permission_denied(mtls: MtlsStack, api_type: str,
                                                                               protocol: str):
    envoy = await mtls.envoy("sneaky-1", mtls.pki.client("payments"), api_type=api_type).start(wait_ready=False)
    await eventually(lambda: f"proxy sneaky-1 (cluster 'edge') refused over {protocol}" in mtls.serve_log(),
                     timeout=30, what="the server refusing the stream")
    line = next(line for line in mtls.serve_log().splitlines() if "proxy sneaky-1" in line)
    assert "spiffe://xds-operator/xds-group/payments" in line and "WARNING" in line
    # Envoy was told why (gRPC status 7, PERMISSION_DENIED) and got nothing.
    await eventually(lambda: re.search(r"config stream to xds-operator closed[^\n]*: 7, ", envoy_log(envoy)),
                     what="Envoy logging PERMISSION_DENIED", timeout=10)
    assert updates(envoy) == {}
    assert mtls.server.get_json("/proxies") == []
    assert mtls.connected_lines("sneaky-1") == []
    assert mtls.body() is None


async def test_rotating_the_servers_certificate_keeps_envoys_stream(mtls: MtlsStack):
    edge = mtls.pki.client(GROUP)
    envoy = await mtls.envoy("edge-1", edge).start()
    assert await eventually(lambda: mtls.body() == b"v1", what="traffic through Envoy")
    connections = envoy.stats()[XDS + "upstream_cx_total"]
    first = mtls.pki.server
    assert served_certificate(mtls.server.xds_port, mtls.pki, edge) == der(first)

    rotated = mtls.pki.rotate()
    # The next handshake gets the new certificate...
    assert served_certificate(mtls.server.xds_port, mtls.pki, edge) == der(rotated)
    # ... and a new Envoy, verifying it, connects with it.
    second = await mtls.envoy("edge-2", mtls.pki.client(GROUP)).start()
    assert second.stats()[XDS + "ssl.handshake"] >= 1
    # A bad pair on rotation: logged, and the last good certificate keeps serving.
    mtls.pki.rotate(first, key_pem=rotated.key_pem)
    assert served_certificate(mtls.server.xds_port, mtls.pki, edge) == der(rotated)
    assert "xDS TLS files not reloaded, still serving the previous certificate: --xds-tls-key " in mtls.serve_log()

    # The first Envoy's stream is the one it opened before all this, and still delivers.
    mtls.write_route("v2")
    assert await eventually(lambda: mtls.body() == b"v2", what="the change through the old stream")
    stats = envoy.stats()
    assert stats["control_plane.connected_state"] == 1
    assert stats[XDS + "upstream_cx_total"] == connections  # no reconnect
    assert stats[XDS + "upstream_cx_destroy"] == 0
    assert len(mtls.connected_lines("edge-1")) == 1
    assert not {k: v for k, v in updates(envoy).items() if k.endswith("update_rejected")}


async def test_run_serves_ads_over_mtls_from_the_kubernetes_api(kube, tmp_path: Path):
    """`xds-operator run --xds-tls-cert ... --xds-client-ca ...`: a Route from the API reaches an
    Envoy with its group's certificate; one with another group's is refused."""
    pki = XdsPki(tmp_path / "pki")
    listener_port, xds_port, http_port = free_port(), free_port(), free_port()
    await kube.create(route("edge", kube.namespace, port=listener_port, proxies=[GROUP],
                            rules=[{"directResponse": {"status": 200, "body": "from the API"}}]))
    command = [sys.executable, "-m", "xds_operator.cli", "run", "--standalone", "--namespace", kube.namespace,
               "--xds-address", f"127.0.0.1:{xds_port}", "--http-address", f"127.0.0.1:{http_port}",
               "--listener-address", "127.0.0.1", *pki.serve_args()]
    log = tmp_path / "operator.log"
    operator = await Process("xds-operator run", command, log_path=log,
                             env={"KUBECONFIG": str(kube.kubeconfig)}).start()
    envoys = []
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/readyz", process=operator)
        assert "ADS server listening on 127.0.0.1:" in log.read_text() and ", over mTLS" in log.read_text()
        envoys.append(envoy := Envoy(tmp_path, xds_port, node_cluster=GROUP, node_id="edge-1",
                                     xds_tls=pki.envoy_tls(pki.client(GROUP), name="edge-1")))
        await envoy.start()
        assert await eventually(lambda: http_get(f"http://127.0.0.1:{listener_port}/")[2] == b"from the API",
                                what="the API's Route through Envoy")
        envoys.append(sneaky := Envoy(tmp_path, xds_port, node_cluster=GROUP, node_id="sneaky-1",
                                      xds_tls=pki.envoy_tls(pki.client("payments"), name="sneaky-1")))
        await sneaky.start(wait_ready=False)
        await eventually(lambda: "proxy sneaky-1 (cluster 'edge') refused over sotw" in log.read_text(),
                         what="the operator refusing the other group's certificate")
        assert updates(sneaky) == {}
    finally:
        for envoy in envoys:
            await envoy.stop()
        await operator.stop()
