"""VHDS with real Envoys: a delta Envoy gets each virtual host on its own, a SotW Envoy of the same
proxy group the whole route configuration, and both route the same. A one-Route change reaches
the delta Envoy as one virtual host (its route configuration is not reloaded), a removed Route
stops answering, and unchanged hostnames answer throughout."""

from __future__ import annotations

import asyncio

from xds_operator.dev.processes import free_port

from .realprocs import Envoy, ServeProcess, eventually, http_get

HOSTS = 60
ROUTE = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: r{i}, namespace: vh}}
spec:
  port: {port}
  hostnames: ["{host}"]
  rules: [{{directResponse: {{status: 200, body: "{body}"}}}}]
"""


def host(i: int) -> str:
    return f"h{i}.example.com"


async def test_virtual_hosts_over_vhds_with_a_real_delta_envoy(tmp_path):
    port = free_port()
    config = tmp_path / "config"
    config.mkdir()

    def write(name: str, hostname: str, body: str) -> None:
        (config / f"{name}.yaml").write_text(ROUTE.format(i=name, port=port, host=hostname, body=body))

    for i in range(HOSTS):
        write(f"{i}", host(i), f"h{i} v1")
    write("wild", "*.wild.example.com", "wildcard v1")
    server = await ServeProcess(tmp_path, config).start()
    delta = Envoy(tmp_path, server.xds_port, api_type="DELTA_GRPC", node_id="delta-1")
    try:
        await delta.start()

        def answer(hostname: str) -> tuple[int, str]:
            status, _, body = http_get(f"http://127.0.0.1:{port}/", headers={"Host": hostname})
            return status, body.decode()

        # Ready means every virtual host is there: the listener waited for VHDS (no on-demand
        # fetch, so no first request pays for one).
        assert [answer(host(i)) for i in range(HOSTS)] == [(200, f"h{i} v1") for i in range(HOSTS)]
        assert answer("a.wild.example.com") == (200, "wildcard v1")
        assert answer(f"{host(1)}:{port}") == (200, "h1 v1")  # the port in Host is stripped
        assert answer("unknown.example.com")[0] == 404
        stats = delta.stats()
        rds_updates = stats[f"http.http-{port}.rds.http-{port}.update_success"]
        vhds_updates = stats[f"http.http-{port}.rds.vhds.http-{port}.update_success"]

        unchanged = [host(i) for i in range(10, HOSTS, 5)]
        failures: list[tuple[str, tuple[int, str]]] = []
        probes = 0
        stop = asyncio.Event()

        async def probe() -> None:  # unchanged hostnames, all the time
            nonlocal probes
            while not stop.is_set():
                for h in unchanged:
                    got = await asyncio.to_thread(answer, h)
                    probes += 1
                    if got != (200, f"{h.split('.')[0]} v1"):
                        failures.append((h, got))

        prober = asyncio.create_task(probe())
        try:
            # One Route changed: Envoy gets that virtual host (one VHDS update), not its route configuration (no RDS update).
            write("7", host(7), "h7 v2")
            await eventually(lambda: answer(host(7)) == (200, "h7 v2"), what="h7 changed through Envoy")
            status = await eventually(lambda: (s := server.get_json("/status")["Route/vh/r7"])
                                      and s["observedGeneration"] == 2 and s["proxies"]["synced"] == 1 and s,
                                      what="r7 synced at generation 2")
            programmed = next(c for c in status["conditions"] if c["type"] == "Programmed")
            assert (programmed["status"], programmed["message"]) == ("True", "1/1 proxies ACKed it")
            explained = server.get_json("/debug/explain?kind=Route&namespace=vh&name=r7")
            assert [(p["node"], p["protocol"], p["state"]) for g in explained["groups"] for p in g["proxies"]] == [
                ("delta-1", "delta", "ACKED")]
            stats = delta.stats()
            assert stats[f"http.http-{port}.rds.http-{port}.update_success"] == rds_updates
            assert stats[f"http.http-{port}.rds.vhds.http-{port}.update_success"] == vhds_updates + 1

            # A new hostname, and a removed one.
            write("new", "new.example.com", "new v1")
            await eventually(lambda: answer("new.example.com") == (200, "new v1"), what="new hostname served")
            (config / "3.yaml").unlink()
            await eventually(lambda: answer(host(3))[0] == 404, what="h3 removed")
            # The wildcard edited.
            write("wild", "*.wild.example.com", "wildcard v2")
            await eventually(lambda: answer("b.wild.example.com") == (200, "wildcard v2"), what="wildcard changed")
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await prober
        assert failures == [] and probes > len(unchanged)
        assert delta.stats()[f"http.http-{port}.rds.http-{port}.update_success"] == rds_updates
        proxies = server.get_json("/proxies")
        assert [p["nacks"] for p in proxies] == [{}]
        assert "VHDS" in proxies[0]["acked"]
    finally:
        await delta.stop()
        await server.stop()


async def test_a_delta_and_a_sotw_envoy_of_one_group_route_alike(tmp_path):
    """The group's snapshot is rendered per protocol: VHDS for the delta Envoy, whole route
    configurations for the SotW one (VHDS is delta-only). Both bind the same listener port
    (Envoy's listeners use SO_REUSEPORT), so the kernel spreads the requests over them."""
    port = free_port()
    config = tmp_path / "config"
    config.mkdir()
    for i in range(5):
        (config / f"{i}.yaml").write_text(ROUTE.format(i=i, port=port, host=host(i), body=f"h{i} v1"))
    server = await ServeProcess(tmp_path, config).start()
    envoys = [Envoy(tmp_path, server.xds_port, api_type=api, node_id=f"envoy-{api}") for api in ("DELTA_GRPC", "GRPC")]
    try:
        for envoy in envoys:
            await envoy.start()
        (config / "2.yaml").write_text(ROUTE.format(i=2, port=port, host=host(2), body="h2 v2"))
        status = await eventually(lambda: (s := server.get_json("/status")["Route/vh/r2"])
                                  and s["observedGeneration"] == 2
                                  and s["proxies"] == {"total": 2, "synced": 2, "nacked": 0} and s,
                                  what="r2 ACKed by both")
        assert next(c for c in status["conditions"] if c["type"] == "Programmed")["status"] == "True"
        statuses = {p["node"]: p for p in server.get_json("/debug/proxy-status")}
        assert {n: sorted(p["types"]) for n, p in statuses.items()} == {
            "envoy-DELTA_GRPC": ["CDS", "EDS", "LDS", "RDS", "SDS", "VHDS"], "envoy-GRPC": ["CDS", "EDS", "LDS", "RDS", "SDS"]}
        assert all(t["state"] == "SYNCED" for p in statuses.values() for t in p["types"].values()), statuses
        answers = {http_get(f"http://127.0.0.1:{port}/", headers={"Host": host(i % 5), "Connection": "close"})[2]
                   for i in range(60)}
        assert answers == {b"h0 v1", b"h1 v1", b"h2 v2", b"h3 v1", b"h4 v1"}
        served = [envoy.stats().get(f"http.http-{port}.downstream_rq_2xx", 0) for envoy in envoys]
        assert all(served), served  # both Envoys answered some
    finally:
        for envoy in envoys:
            await envoy.stop()
        await server.stop()
