"""End to end on Kubernetes: `kubectl apply` against a real kube-apiserver, the operator, a real
Envoy and httpbin. Also the real command-line entry points: `xds-operator run` and `kopf run`
(KopfRunner)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from kopf.testing import KopfRunner

from xds_operator.dev.processes import Process, free_port
from xds_operator.translate import routes as route_translation

from .kubeops import condition, has_condition, host_address, running_operator
from .realprocs import Envoy, Httpbin, eventually, http_get

# No pods run here: the Service has no selector and its EndpointSlice, made by hand, points at
# the local httpbin, on the host's own address (the API server refuses loopback addresses there).
APP = """\
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: {httpbin_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-abcde
  namespace: demo
  labels: {{kubernetes.io/service-name: httpbin, endpointslice.kubernetes.io/managed-by: tests.xds-operator.dev}}
addressType: IPv4
ports: [{{name: http, port: {httpbin_port}, protocol: TCP}}]
endpoints:
- addresses: [{httpbin_host}]
  conditions: {{ready: true}}
---
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: httpbin, namespace: demo}}
spec:
  service: {{name: httpbin, port: http}}
---
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: httpbin, namespace: demo}}
spec:
  port: {listener_port}
  proxies: [httpbin]
  rules:
  - backends: [{{name: httpbin}}]
"""

ROUTE = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Route
metadata: {{name: {name}, namespace: demo}}
spec:
  port: {port}
  proxies: [httpbin]
  rules:
  - matches: [{{path: {{type: {match_type}, value: "{match}"}}}}]
    backends: [{{name: httpbin}}]
"""


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory):
    server = Httpbin(tmp_path_factory.mktemp("httpbin"), host=host_address())
    yield server
    server.stop()


async def kubectl_json(kubectl, *args) -> dict:
    return json.loads((await kubectl("get", *args, "-o", "json")).stdout)


async def wait_kubectl(kubectl, args: tuple, predicate, *, timeout: float = 15.0) -> dict:
    """Polls `kubectl get ARGS -o json` until predicate(object) holds, as a person would."""
    obj = None
    async with asyncio.timeout(timeout):
        while True:
            obj = await kubectl_json(kubectl, *args)
            if predicate(obj):
                return obj
            await asyncio.sleep(0.1)


def in_namespace(manifest: str, namespace: str) -> str:
    return manifest.replace("namespace: demo", f"namespace: {namespace}")


async def test_kubectl_apply_configures_envoy_and_status_tells_the_truth(kube, kubectl, monkeypatch, tmp_path, httpbin):
    listener_port, nack_port = free_port(), free_port()
    app = tmp_path / "app.yaml"
    app.write_text(in_namespace(APP.format(httpbin_host=httpbin.host, httpbin_port=httpbin.port,
                                       listener_port=listener_port), kube.namespace))
    async with running_operator(kube, monkeypatch) as operator:
        await kubectl("apply", "-f", str(app))
        envoy = await Envoy(tmp_path, operator.plane.xds_port, node_cluster="httpbin", node_id="httpbin-7d4b9").start()
        try:
            def through_envoy(path: str = "/headers", port: int = listener_port):
                return http_get(f"http://127.0.0.1:{port}{path}")

            status, headers, _ = await eventually(lambda: (r := through_envoy())[0] == 200 and r,
                                                  what="traffic through Envoy")
            assert headers["server"] == "envoy" and "x-envoy-upstream-service-time" in headers

            obj = await wait_kubectl(kubectl, ("route", "httpbin"),
                                     has_condition("Programmed", "True", "Programmed"))
            assert obj["status"]["proxies"] == {"total": 1, "synced": 1, "nacked": 0}
            assert condition(obj, "Programmed")["message"] == "1/1 proxies ACKed it"
            assert has_condition("Accepted", "True")(obj) and has_condition("ResolvedRefs", "True")(obj)
            await wait_kubectl(kubectl, ("backend", "httpbin"), has_condition("Programmed", "True"))

            # A bad Route is rejected with the reason, and traffic keeps flowing.
            bad = tmp_path / "bad.yaml"
            bad.write_text(in_namespace(ROUTE.format(name="broken", port=listener_port,
                                                     match_type="RegularExpression", match="/(unclosed"),
                                        kube.namespace))
            await kubectl("apply", "-f", str(bad))
            obj = await wait_kubectl(kubectl, ("route", "broken"), has_condition("Accepted", "False"))
            assert "spec.rules[0].matches[0].path.value: invalid regular expression" in \
                condition(obj, "Accepted")["message"]
            for _ in range(10):
                assert through_envoy()[0] == 200

            # Validation keeps user input from making Envoy NACK, so a NACK is made here in a
            # test-only way: Route "nack-me" is translated with a regex that RE2 refuses.
            real_translate = route_translation.translate_route

            def sabotaged(entry):
                translated = real_translate(entry)
                if entry.source.name != "nack-me":
                    return translated
                broken = type(translated)()
                broken.CopyFrom(translated)
                broken.match.safe_regex.regex = "(unclosed"
                return broken

            monkeypatch.setattr(route_translation, "translate_route", sabotaged)
            nack_me = tmp_path / "nack-me.yaml"
            nack_me.write_text(in_namespace(ROUTE.format(name="nack-me", port=nack_port, match_type="Prefix",
                                                         match="/"), kube.namespace))
            await kubectl("apply", "-f", str(nack_me))
            obj = await wait_kubectl(kubectl, ("route", "nack-me"),
                                     has_condition("Programmed", "False", "Rejected"))
            message = condition(obj, "Programmed")["message"]
            assert message.startswith("rejected by Envoy: httpbin-7d4b9: ") and "unclosed" in message
            assert obj["status"]["proxies"] == {"total": 1, "synced": 0, "nacked": 1}
            assert has_condition("Accepted", "True")(obj)  # the spec itself is fine
            async with asyncio.timeout(15):
                while not (events := [e for e in await kube.events_about("nack-me") if e["reason"] == "Rejected"]):
                    await asyncio.sleep(0.05)
            assert events[0]["type"] == "Warning"
            for _ in range(10):
                assert through_envoy()[0] == 200  # the other listener is untouched

            # The next good change recovers.
            monkeypatch.setattr(route_translation, "translate_route", real_translate)
            nack_me.write_text(in_namespace(ROUTE.format(name="nack-me", port=nack_port, match_type="Prefix",
                                                         match="/get"), kube.namespace))
            await kubectl("apply", "-f", str(nack_me))
            obj = await wait_kubectl(kubectl, ("route", "nack-me"),
                                     has_condition("Programmed", "True", generation=2))
            assert obj["status"]["proxies"] == {"total": 1, "synced": 1, "nacked": 0}
            await eventually(lambda: through_envoy("/get", nack_port)[0] == 200, what="recovered route")

            # Deleting the app's Route removes its listener from Envoy.
            await kubectl("delete", "route", "httpbin")
            await eventually(lambda: _refused(through_envoy), what="listener removed")
        finally:
            await envoy.stop()


def _refused(request) -> bool:
    try:
        request()
    except OSError:
        return True
    return False


async def test_xds_operator_run_cli_against_the_api(kube, kubectl, tmp_path):
    """The product's own entry point, cluster-wide, logging in through KUBECONFIG as `kubectl` does."""
    http_port = free_port()
    command = [sys.executable, "-m", "xds_operator.cli", "run", "--standalone",
               "--xds-address", f"127.0.0.1:{free_port()}", "--http-address", f"127.0.0.1:{http_port}"]
    process = await Process("xds-operator run", command, log_path=tmp_path / "operator.log",
                            env={"KUBECONFIG": str(kube.kubeconfig)}).start()
    try:
        route_file = tmp_path / "route.yaml"
        route_file.write_text(ROUTE.format(name="cli", port=free_port(), match_type="Exact", match="/x")
                              .replace("namespace: demo", f"namespace: {kube.namespace}"))
        await kubectl("apply", "-f", str(route_file))
        obj = await wait_kubectl(kubectl, ("route", "cli"), has_condition("ResolvedRefs", "False"), timeout=30)
        assert f"Backend {kube.namespace}/httpbin not found" in condition(obj, "ResolvedRefs")["message"]
        await eventually(lambda: http_get(f"http://127.0.0.1:{http_port}/readyz")[0] == 200, what="readyz")
    finally:
        await process.stop()
    assert process.proc.returncode is not None


async def test_kopf_runner_drives_the_operator_module(kube, kubectl, monkeypatch, tmp_path):
    """kopf's own harness: `kopf run -m xds_operator.kube.operator`, configured by environment."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    from xds_operator.kube import operator as module
    monkeypatch.setattr(module.OPERATOR, "config", module.OperatorConfig(
        xds_address="127.0.0.1:0", http_address="127.0.0.1:0", initial_quiet=0.05, initial_max_delay=0.5))
    runner = KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "xds_operator.kube.operator"])
    runner.__enter__()
    try:
        route_file = tmp_path / "route.yaml"
        route_file.write_text(ROUTE.format(name="runner", port=free_port(), match_type="Exact", match="/x")
                              .replace("namespace: demo", f"namespace: {kube.namespace}"))
        await kubectl("apply", "-f", str(route_file))
        obj = await wait_kubectl(kubectl, ("route", "runner"), has_condition("Accepted", "True"), timeout=30)
        assert has_condition("ResolvedRefs", "False", "BackendNotFound")(obj)
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
