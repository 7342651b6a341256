"""Shared pytest setup. Feature-specific fixtures live next to their tests; the Kubernetes
control plane (one per session, see tests/kubecluster.py) is here because several files use it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio

from .kubecluster import AssetsMissing, KubeCluster, find_assets
from .kubeops import KubeTestAPI, install_crds


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the golden output files from the current translator instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--update-golden")


_CLUSTER: KubeCluster | None = None


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session, with the CRDs
    installed. Without the binaries the Kubernetes tests skip, saying how to get them; under CI=true
    they fail instead."""
    global _CLUSTER
    try:
        assets = find_assets()
    except AssetsMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    # A short folder: unix socket paths in it must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="kube-", dir=tmp_path_factory.getbasetemp()))
    cluster = KubeCluster(assets, folder).start()
    _CLUSTER = cluster
    try:
        install_crds(cluster)
        yield cluster
    finally:
        _CLUSTER = None
        cluster.stop()


@pytest_asyncio.fixture
async def kube(kube_cluster: KubeCluster, request: pytest.FixtureRequest):
    """The cluster seen from one test: its own namespace (deleted afterwards) and an admin client."""
    async with KubeTestAPI(kube_cluster, request.node.name) as api:
        yield api


@pytest.fixture
def kubectl(kube: KubeTestAPI):
    """`await kubectl("apply", "-f", path)` as the admin, in the test's namespace."""
    return kube.kubectl


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and _CLUSTER is not None and "kube_cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("Kubernetes control plane logs (last lines)", _CLUSTER.logs()))
    return report
