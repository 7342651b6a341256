"""Shared pytest setup. Feature-specific fixtures live next to their tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.kubeapi.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the golden output files from the current translator instead of comparing")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--update-golden")
