"""A real Kubernetes control plane for the tests, started once per session as envtest does:
etcd on a temporary data directory, kube-apiserver (RBAC, service-account signing keys, a
self-made serving CA and an admin client certificate) and kube-controller-manager (garbage
collection, namespace deletion, EndpointSlice mirroring, service accounts and their tokens).

The binaries come from KUBEBUILDER_ASSETS (envtest's convention: `setup-envtest use -p path`
prints such a directory), else from tools/kube/build.sh, which builds them from Go modules into
.cache/kube-bin/<version>/ once and reuses them. Everything listens on 127.0.0.1 on free ports;
every process is reaped by its PID; the logs stay in the session's temporary directory.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from xds_operator.dev.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "tools" / "kube" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
HOW_TO_GET = ("the Kubernetes tests need etcd, kube-apiserver, kube-controller-manager and kubectl: "
              "install Go (1.26) so that tools/kube/build.sh can build them, or point KUBEBUILDER_ASSETS "
              "at a directory that has them (e.g. `setup-envtest use -p path` plus kube-controller-manager "
              "and kubectl of the same release)")


class AssetsMissing(Exception):
    pass


def find_assets() -> Path:
    """The directory with the four binaries, building them if needed and possible."""
    if explicit := os.environ.get("KUBEBUILDER_ASSETS"):
        assets = Path(explicit)
        missing = [b for b in BINARIES if not (assets / b).is_file() and shutil.which(b) is None]
        if missing:
            raise AssetsMissing(f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}; {HOW_TO_GET}")
        return assets
    if shutil.which("go") is None:
        raise AssetsMissing(f"KUBEBUILDER_ASSETS is not set and there is no Go toolchain; {HOW_TO_GET}")
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"tools/kube/build.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def binary(assets: Path, name: str) -> str:
    """A binary of the assets; kube-controller-manager and kubectl may come from PATH (setup-envtest
    ships only etcd, kube-apiserver and kubectl)."""
    path = assets / name
    return str(path) if path.is_file() else shutil.which(name) or str(path)


# -- certificates ----------------------------------------------------------------------------------


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
          sans: list[x509.GeneralName] | None = None, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Certificates:
    """A CA, the API server's serving certificate, an admin client certificate (system:masters)
    and the service-account signing key pair, as PEM files in `folder`."""

    folder: Path

    def __post_init__(self) -> None:
        f = self.folder
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xds-operator-test-ca")])
        ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        serving_key = ec.generate_private_key(ec.SECP256R1())
        serving = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key,
                        ca_name, ca_key, sans=[x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _cert(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "admin")]),
                      admin_key, ca_name, ca_key, client=True)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name, data in {
            "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
            "ca.key": _pem_key(ca_key),
            "apiserver.crt": serving.public_bytes(serialization.Encoding.PEM),
            "apiserver.key": _pem_key(serving_key),
            "admin.crt": admin.public_bytes(serialization.Encoding.PEM),
            "admin.key": _pem_key(admin_key),
            "sa.key": _pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo),
        }.items():
            (f / name).write_bytes(data)

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def data(self, name: str) -> str:
        return base64.b64encode((self.folder / name).read_bytes()).decode()


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One control-plane process, logging to a file, reaped by PID (its own process group)."""

    name: str
    command: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager; `kubeconfig` is the admin's."""

    assets: Path
    folder: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.certs = Certificates(self._dir("pki"))
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.api_port = free_port()
        self.kcm_port = free_port()
        self.url = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = self.folder / "admin.kubeconfig"
        self.write_kubeconfig(self.kubeconfig, {"client-certificate-data": self.certs.data("admin.crt"),
                                                "client-key-data": self.certs.data("admin.key")})
        self._ssl = ssl.create_default_context(cafile=self.certs.path("ca.crt"))
        self._ssl.load_cert_chain(self.certs.path("admin.crt"), self.certs.path("admin.key"))

    def _dir(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_kubeconfig(self, path: Path, user: dict, namespace: str = "default") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority-data": self.certs.data("ca.crt")}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
            "current-context": "test",
        }))
        return path

    # -- lifecycle

    def start(self) -> "KubeCluster":
        try:
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def start_etcd(self) -> None:
        data = self._dir("etcd")
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self.daemons["etcd"] = Daemon("etcd", [
            binary(self.assets, "etcd"), "--name", "test", "--data-dir", str(data),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}", "--unsafe-no-fsync", "--log-level", "warn",
        ], self.folder / "etcd.log").start()
        self._wait("etcd", f"{self.etcd_url}/health", context=None)

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def apiserver_command(self) -> list[str]:
        c = self.certs
        return [
            binary(self.assets, "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(self.api_port),
            "--cert-dir", str(self._dir("apiserver-certs")),
            "--tls-cert-file", c.path("apiserver.crt"), "--tls-private-key-file", c.path("apiserver.key"),
            "--client-ca-file", c.path("ca.crt"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", c.path("sa.pub"), "--service-account-signing-key-file", c.path("sa.key"),
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true",
            "--endpoint-reconciler-type", "none",  # no kubernetes Service endpoints for a loopback address
            # The tests compact etcd themselves (resilience); no periodic compaction in between.
            "--etcd-compaction-interval", "0",
            "--v", "1",
        ]

    def start_apiserver(self) -> None:
        self.daemons["kube-apiserver"] = Daemon("kube-apiserver", self.apiserver_command(),
                                                self.folder / "kube-apiserver.log").start()
        self._wait("kube-apiserver", f"{self.url}/readyz", timeout=90)
        self._wait("kube-apiserver", f"{self.url}/healthz", timeout=30)

    def stop_apiserver(self) -> None:
        self.daemons["kube-apiserver"].stop()

    def start_controller_manager(self) -> None:
        c = self.certs
        self.daemons["kube-controller-manager"] = Daemon("kube-controller-manager", [
            binary(self.assets, "kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig), "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(self.kcm_port),
            "--cert-dir", str(self._dir("kcm-certs")),
            "--leader-elect=false",
            "--controllers", "garbagecollector,namespace,endpointslicemirroring,serviceaccount,serviceaccount-token",
            "--service-account-private-key-file", c.path("sa.key"), "--root-ca-file", c.path("ca.crt"),
            "--v", "1",
        ], self.folder / "kube-controller-manager.log").start()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        self._wait("kube-controller-manager", f"https://127.0.0.1:{self.kcm_port}/healthz", context=insecure,
                   timeout=60)

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.daemons:
                self.daemons[name].stop()

    def _wait(self, name: str, url: str, *, context: ssl.SSLContext | None | bool = True,
              timeout: float = 30) -> None:
        ctx = self._ssl if context is True else context
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            daemon = self.daemons[name]
            if not daemon.alive():
                raise RuntimeError(f"{name} exited with {daemon.proc.returncode} while starting:\n"
                                   f"{daemon.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:500]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(f"{name}: {url} not ready within {timeout}s ({last}):\n{self.daemons[name].log_tail()}")

    # -- for tests

    def request(self, method: str, path: str, body: object = None, *,
                content_type: str = "application/json", token: str | None = None) -> tuple[int, dict]:
        """A synchronous admin request (or with a bearer `token`): (status, decoded JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        context = self._ssl
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            context = ssl.create_default_context(cafile=self.certs.path("ca.crt"))
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=30, context=context) as response:
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                try:
                    return exc.code, json.loads(raw)
                except ValueError:
                    return exc.code, {"message": raw.decode(errors="replace")}
            except (urllib.error.URLError, ConnectionError):
                if attempt == 2:  # a connection reset under load is retried; a server away is not
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def compact_etcd(self) -> int:
        """Compacts etcd at its current revision (what makes older watches answer 410 Gone)."""
        status = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
        revision = int(status["header"]["revision"])
        self._etcd_post("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def etcd_put(self, key: str, value: str) -> None:
        self._etcd_post("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                       "value": base64.b64encode(value.encode()).decode()})

    def etcd_delete(self, key: str) -> int:
        """Deletes a key behind the API server's back (as another API server replica would); how many went."""
        answer = self._etcd_post("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})
        return int(answer.get("deleted", 0))

    def _etcd_post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.etcd_url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name} ({daemon.log_path}) ---\n{daemon.log_tail(lines)}"
                         for name, daemon in self.daemons.items())
