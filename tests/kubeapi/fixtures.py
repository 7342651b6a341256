"""
Pytest fixtures for the Kubernetes API emulator. Enable them in a conftest.py::

    pytest_plugins = ["tests.kubeapi.fixtures"]
"""
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from subprocess import CompletedProcess

import pytest
import pytest_asyncio

from .api import KubeAPI


@pytest_asyncio.fixture()
async def kube_api() -> AsyncIterator[KubeAPI]:
    """A fresh emulated Kubernetes API on a free 127.0.0.1 port, stopped after the test."""
    async with KubeAPI() as api:
        yield api


@pytest.fixture()
def kubectl(kube_api: KubeAPI) -> Callable[..., Awaitable[CompletedProcess[str]]]:
    """``await kubectl('apply', '-f', path)`` against ``kube_api``; skips the test if there is no kubectl."""
    if shutil.which('kubectl') is None:
        pytest.skip("kubectl is not installed")
    return kube_api.kubectl
