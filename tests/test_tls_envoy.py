"""TLS end to end: `xds-operator serve` reads Secrets from files and a real Envoy terminates TLS
with them (SNI chains, certificates over SDS), validates client certificates, and speaks TLS and
mTLS to a Python TLS backend. Certificates are made here with `cryptography`.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import socket
import ssl
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from xds_operator.dev.processes import free_port

from .realprocs import Envoy, ServeProcess, eventually
from .tlscerts import Issued, ca_config_map, ca_secret, make_ca, make_leaf, tls_secret

A, WILD, PLAIN_HOST = "a.example.test", "*.wild.example.test", "plain.example.test"


def route(name: str, port: int, hostnames: list[str], *, tls: dict | None = None, body: str = "",
          backend: str | None = None) -> dict:
    rule = {"backends": [{"name": backend}]} if backend else {"directResponse": {"status": 200, "body": body or name}}
    spec: dict = {"port": port, "hostnames": hostnames, "rules": [rule]}
    if tls is not None:
        spec["tls"] = tls
    return {"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Route", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


def write_docs(path: Path, docs: list[dict]) -> None:
    tmp = path.with_name("." + path.name)  # hidden files are not read: the rename is atomic
    tmp.write_text(yaml.safe_dump_all(docs))
    tmp.replace(path)


def client_context(ca: Issued, client: Issued | None = None, tmp: Path | None = None,
                   alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if client is not None:
        assert tmp is not None
        (tmp / "client.crt").write_bytes(client.cert_pem)
        (tmp / "client.key").write_bytes(client.key_pem)
        context.load_cert_chain(tmp / "client.crt", tmp / "client.key")
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class TlsConnection:
    """An HTTP/1.1 keep-alive connection over TLS to Envoy, by SNI name."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        self.host = server_name
        self.reader = self.sock.makefile("rb")

    @property
    def peer_der(self) -> bytes:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return der

    def get(self, path: str = "/") -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        status = int(self.reader.readline().split()[1])
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, self.reader.read(length)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def handshake(port: int, server_name: str, context: ssl.SSLContext) -> tuple[bytes, int, bytes]:
    """A new connection: the certificate served, and one request's answer."""
    conn = TlsConnection(port, server_name, context)
    try:
        return conn.peer_der, *conn.get()
    finally:
        conn.close()


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


def time_ago(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


def plain_get(port: int, host: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def refused(port: int, server_name: str, context: ssl.SSLContext) -> bool:
    """The handshake (or, with TLS 1.3, the first exchange after it) fails."""
    try:
        handshake(port, server_name, context)
    except (ssl.SSLError, ConnectionError, OSError, IndexError, ValueError):
        return True
    return False


class TlsStack:
    def __init__(self, tmp: Path, api_type: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.config = tmp / "config"
        self.config.mkdir()
        self.server = ServeProcess(tmp, self.config)
        self.envoy = Envoy(tmp, self.server.xds_port, api_type=api_type)
        self.ca = make_ca()

    async def start(self) -> None:
        """After the first files are written: a delta Envoy started on an empty config did not get
        ready within 30s here (noticed, not investigated)."""
        await self.server.start()
        await self.envoy.start()

    def status(self, name: str) -> dict:
        return {c["type"]: c for c in self.server.get_json("/status")[f"Route/default/{name}"]["conditions"]}

    def rejected(self) -> dict[str, int]:
        return {k: v for k, v in self.envoy.update_counters().items() if k.endswith("update_rejected") and v}


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
async def tls_stack(request, tmp_path):
    stack = TlsStack(tmp_path, request.param)
    try:
        yield stack
    finally:
        await stack.envoy.stop()
        await stack.server.stop()


async def test_sni_wildcard_shared_port_and_rotation_without_draining(tls_stack: TlsStack):
    s = tls_stack
    exact, wild = make_leaf(s.ca, A), make_leaf(s.ca, WILD)
    write_docs(s.config / "secrets.yaml", [tls_secret("a", exact), tls_secret("wild", wild)])
    write_docs(s.config / "routes.yaml", [
        route("a", s.port, [A], tls={"certificateRef": {"name": "a"}}),
        route("wild", s.port, [WILD], tls={"certificateRef": {"name": "wild"}}),
        route("plain", s.port, [PLAIN_HOST]),
    ])
    await s.start()
    context = client_context(s.ca)
    # SNI picks each hostname's certificate, and its own routes.
    assert await eventually(lambda: handshake(s.port, A, context) == (der(exact), 200, b"a"), what="a.example.test")
    assert handshake(s.port, "x.wild.example.test", context) == (der(wild), 200, b"wild")
    assert handshake(s.port, "y.wild.example.test", context)[0] == der(wild)
    # Plain HTTP on the same port; TLS for a name no chain has is refused.
    assert plain_get(s.port, PLAIN_HOST) == (200, b"plain")
    assert refused(s.port, "unknown.example.test", context)
    # Programmed judges a TLS Route on its SNI route configuration and its certificate.
    await eventually(lambda: s.status("a")["Programmed"]["status"] == "True", what="Route a programmed")

    # Rotation: an open connection keeps working, the next handshake sees the new certificate,
    # and the listener is not modified (so nothing drains).
    open_conn = TlsConnection(s.port, A, context)
    assert open_conn.get() == (200, b"a")
    modified = s.envoy.stats().get("listener_manager.listener_modified", 0)
    rotated = make_leaf(s.ca, A)
    started = time.monotonic()
    write_docs(s.config / "secrets.yaml", [tls_secret("a", rotated), tls_secret("wild", wild)])
    await eventually(lambda: handshake(s.port, A, context)[0] == der(rotated), interval=0.01,
                     what="the rotated certificate served")
    elapsed = time.monotonic() - started
    print(f"\nSecret file edit -> new certificate served: {elapsed * 1000:.0f} ms ({s.envoy.process.name}, "
          f"file poll interval 100 ms)")
    assert open_conn.peer_der == der(exact)
    assert open_conn.get() == (200, b"a")
    open_conn.close()
    assert s.envoy.stats().get("listener_manager.listener_modified", 0) == modified
    assert handshake(s.port, "x.wild.example.test", context)[0] == der(wild)
    assert s.rejected() == {}
    sds_ok = {k: v for k, v in s.envoy.update_counters().items() if k.startswith("sds.") and "update_success" in k}
    assert sds_ok and all(v >= 1 for v in sds_ok.values()), sds_ok


def plain_answer(port: int, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request with this Host, not following redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def test_http_to_https_redirect(tls_stack: TlsStack):
    """spec.tls.httpRedirect: plain requests for the TLS hostnames get the redirect (path and query
    kept) and following it with the CA works; a hostname a plain Route names on that port stays
    that Route's (Conflicted on the TLS Route), until that Route lets it go; "*" serves the rest."""
    s = tls_stack
    http_port = free_port()
    taken = "taken.example.test"
    write_docs(s.config / "secrets.yaml", [tls_secret("a", make_leaf(s.ca, A, taken))])
    secure = route("secure", s.port, [A, taken], tls={"certificateRef": {"name": "a"},
                                                      "httpRedirect": {"port": http_port}})
    plain = [route("plain", http_port, ["*"]), route("taken", http_port, [taken])]
    write_docs(s.config / "routes.yaml", [secure, *plain])
    await s.start()
    answer = await eventually(lambda: (a := plain_answer(http_port, f"{A}:{http_port}", "/headers?x=1&y=2"))[0] == 301
                              and a, what="the redirect on the plain port")
    location = answer[1]["location"]
    assert location == f"https://{A}:{s.port}/headers?x=1&y=2"
    target = urllib.parse.urlsplit(location)
    conn = TlsConnection(target.port, target.hostname, client_context(s.ca))
    try:
        assert conn.get(f"{target.path}?{target.query}") == (200, b"secure")
    finally:
        conn.close()
    assert plain_answer(http_port, "other.example.test", "/")[0::2] == (200, b"plain")
    assert plain_answer(http_port, taken, "/")[0::2] == (200, b"taken")
    conflicted = s.status("secure")["Conflicted"]
    assert (conflicted["status"], conflicted["reason"]) == ("True", "HostnameConflict")
    assert f"{taken} on port {http_port} (plain Route default/taken serves it)" in conflicted["message"]
    await eventually(lambda: s.status("secure")["Programmed"]["status"] == "True", what="Route secure programmed")

    write_docs(s.config / "routes.yaml", [secure, plain[0]])  # the plain Route lets it go
    answer = await eventually(lambda: (a := plain_answer(http_port, taken, "/"))[0] == 301 and a,
                              what="the redirect of the hostname let go")
    assert answer[1]["location"] == f"https://{taken}:{s.port}/"
    assert s.status("secure")["Conflicted"]["status"] == "False"
    assert s.rejected() == {}


async def test_bad_secret_next_to_a_good_one(tls_stack: TlsStack):
    s = tls_stack
    good, other = make_leaf(s.ca, A), make_leaf(s.ca, "b.example.test")
    mismatched = tls_secret("bad", other)
    mismatched["data"]["tls.key"] = tls_secret("x", good)["data"]["tls.key"]  # a key that is not the certificate's
    expired = make_leaf(s.ca, "c.example.test", not_before=time_ago(10), not_after=time_ago(1))
    write_docs(s.config / "secrets.yaml", [tls_secret("good", good), mismatched, tls_secret("expired", expired)])
    write_docs(s.config / "routes.yaml", [
        route("good", s.port, [A], tls={"certificateRef": {"name": "good"}}),
        route("bad", s.port, ["b.example.test"], tls={"certificateRef": {"name": "bad"}}),
        route("expired", s.port, ["c.example.test"], tls={"certificateRef": {"name": "expired"}}),
        route("missing", s.port, ["d.example.test"], tls={"certificateRef": {"name": "nope"}}),
    ])
    await s.start()
    context = client_context(s.ca)
    assert await eventually(lambda: handshake(s.port, A, context) == (der(good), 200, b"good"), what="good serves")
    for name, problem in [("bad", "Secret default/bad: tls.key does not match the certificate in tls.crt"),
                          ("expired", "Secret default/expired: certificate 1 of tls.crt (CN=c.example.test) expired"),
                          ("missing", "Secret default/nope not found")]:
        refs = s.status(name)["ResolvedRefs"]
        assert (refs["status"], refs["reason"]) == ("False", "InvalidCertificateRef"), refs
        assert refs["message"].startswith(f"spec.tls.certificateRef: {problem}"), refs
    for host in ("b.example.test", "c.example.test", "d.example.test"):
        assert refused(s.port, host, context)
    assert s.rejected() == {}


async def test_client_certificate_required(tls_stack: TlsStack):
    s = tls_stack
    server = make_leaf(s.ca, A)
    client_ca = make_ca("client CA")
    write_docs(s.config / "secrets.yaml", [tls_secret("a", server), ca_secret("clients", client_ca)])
    write_docs(s.config / "routes.yaml", [route("a", s.port, [A], tls={
        "certificateRef": {"name": "a"}, "clientValidation": {"caCertificateRef": {"name": "clients"}}})])
    await s.start()
    with_cert = client_context(s.ca, make_leaf(client_ca, client=True), s.tmp)
    assert await eventually(lambda: handshake(s.port, A, with_cert)[1:] == (200, b"a"), what="mTLS serves")
    assert refused(s.port, A, client_context(s.ca))  # no client certificate
    stranger = client_context(s.ca, make_leaf(make_ca("other CA"), client=True), s.tmp)
    assert refused(s.port, A, stranger)  # one the CA did not sign
    assert s.rejected() == {}


# -- upstream TLS and mTLS -------------------------------------------------------------------------

class TlsBackend:
    """A Python HTTPS server answering its name; optionally requiring client certificates."""

    def __init__(self, tmp: Path, cert: Issued, *, client_ca: Issued | None = None) -> None:
        self.port = free_port()
        (tmp / "backend.crt").write_bytes(cert.cert_pem)
        (tmp / "backend.key").write_bytes(cert.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "backend.crt", tmp / "backend.key")
        context.set_alpn_protocols(["http/1.1"])
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca.cert_pem.decode())
        seen: list[str] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer = self.connection.getpeercert()
                seen.append(json.dumps(peer.get("subject") if peer else None))
                body = b"tls backend"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def backend(name: str, port: int, tls: dict) -> dict:
    return {"apiVersion": "xds-operator.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"endpoints": [{"address": "127.0.0.1", "port": port}], "tls": tls}}


@pytest.mark.parametrize("api_type", ["GRPC"])
async def test_upstream_tls_and_mtls(tmp_path: Path, api_type: str):
    ca = make_ca("backend CA")
    tls_server = TlsBackend(tmp_path, make_leaf(ca, "backend.test"), client_ca=ca)
    stack = TlsStack(tmp_path, api_type)
    try:
        client = make_leaf(ca, "envoy.test", client=True)
        write_docs(stack.config / "secrets.yaml", [ca_secret("backend-ca", ca), tls_secret("envoy-client", client),
                                                   ca_config_map("backend-ca", ca),
                                                   ca_config_map("other-ca", make_ca("other CA"))])
        write_docs(stack.config / "routes.yaml", [
            backend("mtls", tls_server.port, {"sni": "backend.test", "caCertificateRef": {"name": "backend-ca"},
                                              "clientCertificateRef": {"name": "envoy-client"},
                                              "subjectAltNames": ["backend.test"]}),
            backend("no-client-cert", tls_server.port, {"sni": "backend.test",
                                                        "caCertificateRef": {"name": "backend-ca"}}),
            backend("wrong-san", tls_server.port, {"sni": "backend.test", "caCertificateRef": {"name": "backend-ca"},
                                                   "clientCertificateRef": {"name": "envoy-client"},
                                                   "subjectAltNames": ["someone-else.test"]}),
            route("mtls", stack.port, ["mtls.test"], backend="mtls"),
            route("no-client-cert", stack.port, ["nocert.test"], backend="no-client-cert"),
            route("wrong-san", stack.port, ["wrongsan.test"], backend="wrong-san"),
            # The CA bundle from a ConfigMap's ca.crt: the right one verifies, another CA's does not.
            backend("configmap-ca", tls_server.port, {"sni": "backend.test",
                                                      "caCertificateRef": {"kind": "ConfigMap", "name": "backend-ca"},
                                                      "clientCertificateRef": {"name": "envoy-client"}}),
            backend("configmap-other-ca", tls_server.port, {
                "sni": "backend.test", "caCertificateRef": {"kind": "ConfigMap", "name": "other-ca"},
                "clientCertificateRef": {"name": "envoy-client"}}),
            route("configmap-ca", stack.port, ["cm.test"], backend="configmap-ca"),
            route("configmap-other-ca", stack.port, ["cm-other.test"], backend="configmap-other-ca"),
        ])
        await stack.start()
        assert await eventually(lambda: plain_get(stack.port, "mtls.test") == (200, b"tls backend"),
                                what="mTLS to the backend")
        assert "envoy.test" in tls_server.seen[-1]  # the backend saw Envoy's client certificate
        assert plain_get(stack.port, "nocert.test")[0] == 503  # the backend requires a client certificate
        assert plain_get(stack.port, "wrongsan.test")[0] == 503  # the SAN does not match
        assert plain_get(stack.port, "cm.test") == (200, b"tls backend")
        assert plain_get(stack.port, "cm-other.test")[0] == 503  # another CA does not vouch for the backend
        assert stack.rejected() == {}
    finally:
        await stack.envoy.stop()
        await stack.server.stop()
        tls_server.stop()


# -- a certificate's time comes while nothing changes ----------------------------------------------

def unverified_context() -> ssl.SSLContext:
    """Takes any certificate, expired too: what Envoy serves, not what a client would accept."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize("api_type", ["GRPC"])
async def test_a_certificate_expiring_while_serving_leaves_envoy_without_a_change(tmp_path: Path, api_type: str):
    """No file is written after the certificates: the operator's timer for the next certificate
    instant (controlplane/controller.py) makes the build that drops the expired one and warns of
    the one now within 14 days of its expiry."""
    stack = TlsStack(tmp_path, api_type)
    try:
        lasting = make_leaf(stack.ca, A)
        write_docs(stack.config / "secrets.yaml", [tls_secret("a", lasting)])
        write_docs(stack.config / "routes.yaml", [route("a", stack.port, [A], tls={"certificateRef": {"name": "a"}})])
        await stack.start()
        context = client_context(stack.ca)
        assert await eventually(lambda: handshake(stack.port, A, context)[0] == der(lasting), what="a serves")

        now = datetime.datetime.now(datetime.UTC)
        short = make_leaf(stack.ca, "short.example.test", not_after=now + datetime.timedelta(seconds=6))
        soon = make_leaf(stack.ca, "soon.example.test", not_after=now + datetime.timedelta(days=14, seconds=6))
        write_docs(stack.config / "secrets.yaml", [tls_secret("a", lasting), tls_secret("short", short),
                                                   tls_secret("soon", soon)])
        write_docs(stack.config / "routes.yaml", [
            route("a", stack.port, [A], tls={"certificateRef": {"name": "a"}}),
            route("short", stack.port, ["short.example.test"], tls={"certificateRef": {"name": "short"}}),
            route("soon", stack.port, ["soon.example.test"], tls={"certificateRef": {"name": "soon"}}),
        ])
        assert await eventually(lambda: handshake(stack.port, "short.example.test", context)[0] == der(short),
                                what="the short-lived certificate served")
        assert stack.status("short")["ResolvedRefs"]["status"] == "True"
        assert "warning" not in stack.status("soon")["ResolvedRefs"]["message"]

        anything = unverified_context()
        await eventually(lambda: refused(stack.port, "short.example.test", anything), timeout=20,
                         what="the expired certificate's hostname out of Envoy")
        refs = stack.status("short")["ResolvedRefs"]
        assert (refs["status"], refs["reason"]) == ("False", "InvalidCertificateRef"), refs
        assert "certificate 1 of tls.crt (CN=short.example.test) expired on" in refs["message"], refs
        refs = stack.status("soon")["ResolvedRefs"]
        assert refs["status"] == "True" and "warning: spec.tls.certificateRef: the certificate of Secret " \
            "default/soon expires in 1" in refs["message"], refs
        assert handshake(stack.port, A, context)[0] == der(lasting)  # the rest keeps serving
        assert handshake(stack.port, "soon.example.test", context)[0] == der(soon)
        assert stack.rejected() == {}
    finally:
        await stack.envoy.stop()
        await stack.server.stop()
