"""Certificates for ADS over mTLS in the tests: the server's (rotatable, as a mounted Secret is)
and the proxies' (naming their group), as files, with the options and channels that use them."""

from __future__ import annotations

import itertools
import os
import socket
import ssl
from pathlib import Path

import grpc

from xds_operator.bootstrap import XdsClientTls
from xds_operator.xds.channel_tls import XdsTlsFiles
from xds_operator.xds.peer_group import group_uri

from .tlscerts import Issued, make_ca, make_leaf

SERVER_NAME = "xds.test"  # the server certificate's DNS name; it also carries 127.0.0.1


class XdsPki:
    """A server CA and certificate, a client CA, and client certificates made on demand.

    The server's files are read through a symlinked folder, `current -> v<N>`, swapped at once on
    rotation, as the kubelet updates a mounted Secret (so no reader sees a new certificate with an
    old key)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.server_ca = make_ca("xDS server CA")
        self.client_ca = make_ca("xDS client CA")
        self._versions = itertools.count(1)
        self.server_ca_file = self._write("server-ca.crt", self.server_ca.cert_pem)
        self.client_ca_file = self._write("client-ca.crt", self.client_ca.cert_pem)
        self.server = self.rotate()

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def new_server_certificate(self) -> Issued:
        return make_leaf(self.server_ca, SERVER_NAME, ips=["127.0.0.1"])

    def rotate(self, issued: Issued | None = None, *, key_pem: bytes | None = None) -> Issued:
        """Publishes a new server certificate (a new one unless given), optionally with a key of
        its own choosing (to publish a bad pair); returns the certificate published."""
        issued = issued or self.new_server_certificate()
        version = self.folder / f"v{next(self._versions)}"
        version.mkdir()
        (version / "tls.crt").write_bytes(issued.cert_pem)
        (version / "tls.key").write_bytes(key_pem if key_pem is not None else issued.key_pem)
        link = self.folder / ".current.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(version.name)
        os.replace(link, self.folder / "current")  # atomic: both files change at once
        self.server = issued
        return issued

    @property
    def cert_file(self) -> Path:
        return self.folder / "current" / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.folder / "current" / "tls.key"

    def files(self, *, mtls: bool = True) -> XdsTlsFiles:
        return XdsTlsFiles(self.cert_file, self.key_file, self.client_ca_file if mtls else None)

    def serve_args(self, *, mtls: bool = True) -> list[str]:
        args = ["--xds-tls-cert", str(self.cert_file), "--xds-tls-key", str(self.key_file)]
        return args + (["--xds-client-ca", str(self.client_ca_file)] if mtls else [])

    def client(self, group: str, *, ca: Issued | None = None) -> Issued:
        """A proxy's client certificate for `group`, signed by the client CA (or `ca`)."""
        return make_leaf(ca or self.client_ca, uris=[group_uri(group)], client=True)

    def client_files(self, name: str, issued: Issued) -> tuple[Path, Path]:
        return self._write(f"{name}.crt", issued.cert_pem), self._write(f"{name}.key", issued.key_pem)

    def envoy_tls(self, client: Issued | None, *, name: str = "envoy", server_name: str = SERVER_NAME
                  ) -> XdsClientTls:
        """What the bootstrap of an Envoy with client certificate `client` (None: without one) says."""
        if client is None:
            return XdsClientTls(ca=str(self.server_ca_file), server_name=server_name)
        cert, key = self.client_files(name, client)
        return XdsClientTls(ca=str(self.server_ca_file), server_name=server_name, client_cert=str(cert),
                            client_key=str(key))

    def channel(self, port: int, client: Issued | None) -> grpc.aio.Channel:
        """A grpc channel to the ADS server on 127.0.0.1:`port`, verifying it as SERVER_NAME."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca.cert_pem,
            private_key=client.key_pem if client is not None else None,
            certificate_chain=client.cert_pem if client is not None else None)
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                       options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def served_certificate(port: int, pki: XdsPki, client: Issued | None) -> bytes:
    """The DER certificate a new TLS connection to 127.0.0.1:`port` is served (as gRPC, ALPN h2)."""
    context = ssl.create_default_context(cadata=pki.server_ca.cert_pem.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        cert, key = pki.client_files("probe", client)
        context.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
