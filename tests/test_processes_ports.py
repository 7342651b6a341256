"""free_port() never hands the same port out twice in one process (seen once: a server's HTTP
port and an Envoy's admin port were the same, and Envoy failed to start)."""

from __future__ import annotations

from xds_operator.dev.processes import free_port


def test_free_port_gives_no_port_twice() -> None:
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
