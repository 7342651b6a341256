"""End to end: `xds-operator serve` configures a real Envoy that forwards to a real httpbin.

Every test runs in both xDS modes Envoy offers: state of the world (GRPC) and delta (DELTA_GRPC).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from xds_operator.dev.processes import free_port

from .realprocs import Envoy, ServeProcess, eventually, http_get

ROUTE_TEMPLATE = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: httpbin, namespace: e2e}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {httpbin_port}}}]
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: httpbin, namespace: e2e}}
spec:
  port: {listener_port}
  rules:
  - matches: [{{path: {{type: Prefix, value: /}}}}]
    backends: [{{name: httpbin}}]
    responseHeaders:
      set: [{{name: x-config, value: "{marker}"}}]
"""



class Stack:
    def __init__(self, tmp: Path, httpbin_port: int, api_type: str) -> None:
        self.tmp = tmp
        self.api_type = api_type
        self.httpbin_port = httpbin_port
        self.listener_port = free_port()
        self.config_dir = tmp / "config"
        self.config_dir.mkdir()
        self.route_file = self.config_dir / "httpbin.yaml"
        self.write(marker="v1")
        self.server = ServeProcess(tmp, self.config_dir)
        self.envoy = Envoy(tmp, self.server.xds_port, api_type=api_type)

    def write(self, *, marker: str) -> None:
        self.route_file.write_text(ROUTE_TEMPLATE.format(httpbin_port=self.httpbin_port,
                                                         listener_port=self.listener_port, marker=marker))

    def get(self, path: str = "/headers"):
        return http_get(f"http://127.0.0.1:{self.listener_port}{path}")

    def marker(self) -> str | None:
        status, headers, _ = self.get()
        return headers.get("x-config") if status == 200 else None


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
async def stack(request, tmp_path, httpbin):
    stack = Stack(tmp_path, httpbin.port, request.param)
    await stack.server.start()
    await stack.envoy.start()
    try:
        await eventually(lambda: stack.marker() == "v1", what="traffic through Envoy")
        yield stack
    finally:
        await stack.envoy.stop()
        await stack.server.stop()


async def test_traffic_reaches_httpbin_through_envoy(stack):
    status, headers, body = stack.get("/headers")
    assert status == 200
    assert headers["server"] == "envoy"
    assert "x-envoy-upstream-service-time" in headers
    assert json.loads(body)["headers"]["Host"].startswith("127.0.0.1")
    # The control plane knows the proxy and that it ACKed every type.
    proxies = stack.server.get_json("/proxies")
    assert [p["node"] for p in proxies] == ["envoy-1"]
    # (Delta: the route configurations' virtual hosts over VHDS.)
    assert set(proxies[0]["acked"]) == {"CDS", "EDS", "LDS", "RDS"} | ({"VHDS"} if stack.api_type == "DELTA_GRPC" else set())
    assert proxies[0]["nacks"] == {}
    status = await eventually(lambda: stack.server.get_json("/status")["Route/e2e/httpbin"]["proxies"]["synced"] == 1
                              and stack.server.get_json("/status"), what="route programmed")
    programmed = next(c for c in status["Route/e2e/httpbin"]["conditions"] if c["type"] == "Programmed")
    assert programmed["status"] == "True" and programmed["message"] == "1/1 proxies ACKed it"
    assert status["Backend/e2e/httpbin"]["proxies"] == {"total": 1, "synced": 1, "nacked": 0}
    # The same, for Prometheus.
    _, headers, body = http_get(f"http://127.0.0.1:{stack.server.http_port}/metrics")
    metrics = {sample: float(value) for sample, value in
               (line.rsplit(" ", 1) for line in body.decode().splitlines() if not line.startswith("#"))}
    protocol = "delta" if stack.api_type == "DELTA_GRPC" else "sotw"
    assert metrics[f'xds_operator_connected_proxies{{protocol="{protocol}"}}'] == 1
    assert metrics['xds_operator_nacking_proxies'] == 0
    for type_ in ("CDS", "EDS", "LDS", "RDS"):
        assert metrics[f'xds_operator_xds_responses_total{{type="{type_}"}}'] >= 1
        assert metrics[f'xds_operator_xds_acks_total{{type="{type_}"}}'] >= 1
        assert metrics[f'xds_operator_xds_nacks_total{{type="{type_}"}}'] == 0
    assert metrics['xds_operator_objects{accepted="true",kind="Route"}'] == 1  # labels in the library's order
    assert metrics["xds_operator_builds_total"] >= 1


def scrape(stack: Stack) -> dict[str, float]:
    _, _, body = http_get(f"http://127.0.0.1:{stack.server.http_port}/metrics")
    return {sample: float(value) for sample, value in
            (line.rsplit(" ", 1) for line in body.decode().splitlines() if not line.startswith("#"))}


async def test_a_change_acked_by_envoy_is_timed_in_the_convergence_histogram(stack):
    assert 'xds_operator_convergence_seconds_count{group="test"}' not in scrape(stack)  # connecting is no change
    stack.write(marker="v2")
    await eventually(lambda: stack.marker() == "v2", what="marker v2 through Envoy")
    metrics = await eventually(lambda: (m := scrape(stack)).get('xds_operator_convergence_seconds_count{group="test"}')
                               and m, what="the change timed")
    assert metrics['xds_operator_convergence_seconds_count{group="test"}'] == 1
    # From the file's change (seen by a 100 ms poll, then debounced) to Envoy's ACK: well under the 60 s bucket.
    assert 0 < metrics['xds_operator_convergence_seconds_sum{group="test"}'] < 60
    assert metrics['xds_operator_convergence_seconds_bucket{group="test",le="60.0"}'] == 1


async def test_file_edit_is_applied_live(stack):
    for marker in ("v2", "v3"):
        stack.write(marker=marker)
        await eventually(lambda marker=marker: stack.marker() == marker, what=f"marker {marker} through Envoy")


async def test_invalid_documents_leave_traffic_untouched(stack):
    before = stack.envoy.update_counters()
    # A file that is not YAML at all: its last good objects stay.
    stack.route_file.write_text("kind: Route\nspec: [unclosed\n")
    # A Route edit that fails validation: the last valid generation keeps serving.
    (stack.config_dir / "bad-route.yaml").write_text(
        "apiVersion: xds-operator.dev/v1alpha1\nkind: Route\nmetadata: {name: bad, namespace: e2e}\n"
        "spec:\n  port: 80\n  rules:\n  - matches: [{path: {type: RegularExpression, value: '(unclosed'}}]\n"
        "    backends: [{name: httpbin}]\n")
    status = await eventually(lambda: stack.server.get_json("/status").get("Route/e2e/bad"), what="bad route status")
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "False"
    assert "spec.port" in accepted["message"] and "spec.rules[0].matches[0].path.value" in accepted["message"]
    for _ in range(10):
        assert stack.marker() == "v1"
    after = stack.envoy.update_counters()
    assert {k: v for k, v in after.items() if k.endswith("update_rejected")} == \
           {k: v for k, v in before.items() if k.endswith("update_rejected")}
    # Fixing the file applies it again.
    stack.write(marker="fixed")
    await eventually(lambda: stack.marker() == "fixed", what="fixed config through Envoy")


async def test_server_restart_keeps_envoy_serving_and_resyncs_without_resending(stack):
    def counters():
        # xDS updates only: the bootstrap's own cluster (the control plane) counts DNS refreshes here too.
        return {k: v for k, v in stack.envoy.update_counters().items()
                if k.endswith("update_success") and not k.startswith("cluster.xds-operator.")}

    before = counters()
    await stack.server.stop()
    await eventually(lambda: stack.envoy.stats().get("control_plane.connected_state") == 0, what="disconnect seen")
    for _ in range(5):
        assert stack.marker() == "v1"  # Envoy serves its last config while the control plane is away
    await stack.server.start()
    await eventually(lambda: stack.envoy.stats().get("control_plane.connected_state") == 1, timeout=30,
                     what="reconnect")
    # The restarted server recognises Envoy's versions (content hashes): nothing is resent...
    # Envoy's first requests name the versions it runs; they count as ACKed as they arrive.
    types = {"CDS", "EDS", "LDS", "RDS"} | ({"VHDS"} if stack.api_type == "DELTA_GRPC" else set())
    await eventually(lambda: (p := stack.server.get_json("/proxies")) and set(p[0]["acked"]) == types,
                     what="proxy registered with its running versions")
    await asyncio.sleep(0.5)  # time for any (wrong) resend to arrive and be counted
    assert counters() == before
    # ...and a change after the restart still flows.
    stack.write(marker="after-restart")
    await eventually(lambda: stack.marker() == "after-restart", what="change after restart")


async def test_backend_removed_and_restored_unchanged_serves_again(stack):
    original = stack.route_file.read_text()
    _backend_doc, route_doc = original.split("---\n")
    stack.route_file.write_text(route_doc)  # the Backend goes: its rule is left out, its cluster removed
    await eventually(lambda: stack.get()[0] == 404, what="route left out")
    await eventually(lambda: not any(k.startswith("cluster.e2e/httpbin.") for k in stack.envoy.stats()),
                     what="cluster removed from Envoy")
    stack.route_file.write_text(original)  # back, byte for byte: same versions as before
    # Well within Envoy's 15 s initial fetch timeout: the endpoints are sent again at once.
    await eventually(lambda: stack.marker() == "v1", timeout=5, what="traffic restored")


OTHER_TEMPLATE = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: other, namespace: e2e}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {httpbin_port}}}]
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: other, namespace: e2e}}
spec:
  port: {listener_port}
  rules:
  - matches: [{{path: {{type: Prefix, value: /other}}}}]
    backends: [{{name: other}}]
    rewrite: {{pathPrefix: /}}
"""


@pytest.mark.parametrize("own_listener", [False, True], ids=["same-listener", "own-listener"])
async def test_restart_after_a_backend_and_its_route_went_resends_nothing(stack, own_listener):
    """Envoy drops the EDS names of a removed cluster (and the RDS name of a removed listener),
    and a SotW response cannot tell it a new version for fewer names: it goes on reporting the
    version of the larger set. A restarted server still sees that it has the remaining
    resources unchanged, and sends nothing."""
    other_port = free_port() if own_listener else stack.listener_port
    other = stack.config_dir / "other.yaml"
    other.write_text(OTHER_TEMPLATE.format(httpbin_port=stack.httpbin_port, listener_port=other_port))
    await eventually(lambda: http_get(f"http://127.0.0.1:{other_port}/other/get")[0] == 200, what="other route")
    other.unlink()
    await eventually(lambda: not any(k.startswith("cluster.e2e/other.") for k in stack.envoy.stats()),
                     what="cluster removed")
    if own_listener:
        await eventually(lambda: _refused(f"http://127.0.0.1:{other_port}/get"), what="listener removed")
    assert stack.marker() == "v1"

    def counters():
        return {k: v for k, v in stack.envoy.update_counters().items()
                if k.endswith("update_success") and not k.startswith("cluster.xds-operator.")}

    def synced() -> bool:
        proxies = stack.server.get_json("/proxies")
        return bool(proxies) and all(proxies[0]["acked"].get(t) for t in ("CDS", "EDS", "LDS", "RDS"))

    await eventually(synced, what="converged")
    await asyncio.sleep(0.5)  # nothing more in flight
    before = counters()
    assert before["cluster.e2e/httpbin.update_success"] >= 1
    await stack.server.stop()
    await eventually(lambda: stack.envoy.stats().get("control_plane.connected_state") == 0, what="disconnect seen")
    await stack.server.start()
    await eventually(lambda: stack.envoy.stats().get("control_plane.connected_state") == 1, timeout=30,
                     what="reconnect")
    await eventually(synced, what="proxy registered with its running versions")
    await asyncio.sleep(0.5)  # time for any (wrong) resend to arrive and be counted
    assert counters() == before
    assert stack.marker() == "v1"


def _refused(url: str) -> bool:
    try:
        http_get(url)
    except OSError:
        return True
    return False


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
async def test_an_envoy_whose_group_has_nothing_yet_completes_its_initialization(api_type, tmp_path):
    """No Route or Backend yet: the first CDS and LDS responses are empty, and are sent (in delta
    too: Envoy's initialization waits for them, until its 15 s initial fetch timeout)."""
    config = tmp_path / "config"
    config.mkdir()
    server = await ServeProcess(tmp_path, config).start()
    envoy = Envoy(tmp_path, server.xds_port, api_type=api_type)
    try:
        await envoy.start(wait_ready=False)
        kinds = ("cluster_manager.cds", "listener_manager.lds")
        await eventually(lambda: all(envoy.stats().get(f"{k}.update_success", 0) >= 1 for k in kinds),
                         what="empty CDS and LDS responses applied", timeout=10)
        stats = envoy.stats()
        assert not any(stats.get(f"{k}.init_fetch_timeout", 0) for k in kinds), stats
        assert http_get(f"{envoy.admin_url}/ready")[0] == 200
    finally:
        await envoy.stop()
        await server.stop()
