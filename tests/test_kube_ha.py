"""Several operator replicas on a real API server, as processes (`xds-operator run --leader-elect`),
with real Envoys spread over them: one leader writes status counting every replica's proxies; the
leader killed with SIGKILL is replaced within the documented time while traffic keeps flowing and
nothing is re-sent; a replica frozen with SIGSTOP loses the lead and, thawed, writes nothing stale.

Timings are shortened with the documented options (a 4 s lease, so the take-over bound is
lease + retry = 4.5 s), not loosened: figures for the defaults are in the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from xds_operator.dev.processes import Process, free_port

from .kubeops import KubeTestAPI, condition
from .realprocs import Envoy, eventually, http_get
from .test_kube_e2e import APP, in_namespace

LEASE, RENEW, RETRY = 4.0, 3.0, 0.5
TAKE_OVER_BOUND = LEASE + RETRY  # kube/leader.py: after a crash, within lease duration + retry period


@pytest.fixture
def httpbin(httpbin_on_host):
    """httpbin on the host's own address (conftest): the EndpointSlices point at it."""
    return httpbin_on_host


class Replica:
    """One `xds-operator run` process with leader election, on its own free ports."""

    def __init__(self, name: str, kube: KubeTestAPI, tmp: Path, ports: tuple[int, int] | None = None) -> None:
        self.name = name
        self.xds_port, self.http_port = ports or (free_port(), free_port())
        command = [sys.executable, "-m", "xds_operator.cli", "run", "--standalone", "--leader-elect",
                   "--namespace", kube.namespace, "--leader-election-namespace", kube.namespace,
                   "--leader-lease-duration", str(LEASE), "--leader-renew-deadline", str(RENEW),
                   "--leader-retry-period", str(RETRY), "--listener-address", "127.0.0.1",
                   "--xds-address", f"127.0.0.1:{self.xds_port}", "--http-address", f"127.0.0.1:{self.http_port}"]
        self.process = Process(f"replica {name}", command, log_path=tmp / f"replica-{name}.log",
                               env={"KUBECONFIG": str(kube.kubeconfig), "POD_NAME": f"replica-{name}"})

    async def start(self) -> Replica:
        await self.process.start()
        await eventually(lambda: http_get(f"http://127.0.0.1:{self.http_port}/readyz")[0] == 200, timeout=60,
                         what=f"replica {self.name} ready")
        return self

    def info(self) -> dict:
        return json.loads(http_get(f"http://127.0.0.1:{self.http_port}/replica", timeout=2)[2])

    def proxies(self) -> list[dict]:
        return json.loads(http_get(f"http://127.0.0.1:{self.http_port}/proxies", timeout=2)[2])

    def alive(self) -> bool:
        return self.process.proc is not None and self.process.returncode is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process.proc is not None
        os.kill(self.process.proc.pid, sig)

    async def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)  # a frozen one must be able to stop
        await self.process.stop()


def envoy_preferring(tmp: Path, node_id: str, first: Replica, second: Replica) -> Envoy:
    """An Envoy whose ADS cluster has both replicas: `first` at priority 0, `second` at priority 1
    (in a cluster, the one Service does this), with outlier detection, so the ADS stream moves to
    the other replica when its replica dies."""
    envoy = Envoy(tmp, first.xds_port, node_cluster="httpbin", node_id=node_id)
    bootstrap = yaml.safe_load(envoy.bootstrap.read_text())
    cluster = bootstrap["static_resources"]["clusters"][0]
    cluster["type"] = "STATIC"
    cluster.pop("dns_lookup_family", None)
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"] = {"interval": "1s",
                                                                                         "timeout": "1s"}
    # Reconnect within a second, not Envoy's default of up to 30 s.
    bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"] = {
        "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
    # A replica that refuses connections is ejected at once: the stream moves to the other one.
    cluster["outlier_detection"] = {"split_external_local_origin_errors": True,
                                    "consecutive_local_origin_failure": 1,
                                    "enforcing_consecutive_local_origin_failure": 100,
                                    "interval": "1s", "base_ejection_time": "5s", "max_ejection_percent": 100}
    cluster["load_assignment"]["endpoints"] = [
        {"priority": priority, "lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": replica.xds_port}}}}]}
        for priority, replica in enumerate((first, second))]
    envoy.bootstrap.write_text(yaml.safe_dump(bootstrap))
    return envoy


def xds_updates(envoy: Envoy) -> dict[str, int]:
    # xDS updates only: the bootstrap's own cluster (the control plane) is not one.
    return {k: v for k, v in envoy.update_counters().items()
            if k.endswith(("update_success", "update_rejected")) and not k.startswith("cluster.xds-operator.")}


class Traffic:
    """Requests through an Envoy listener, one after another in a thread, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = http_get(f"http://127.0.0.1:{self.port}/get", timeout=2)[0]
                if status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{time.monotonic():.2f}: HTTP {status}")
            except OSError as exc:
                self.failed.append(f"{time.monotonic():.2f}: {exc}")
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def counted(total: int, generation: int | None = None):
    """Programmed True with `total` proxies, all synced, at `generation` if given."""
    def check(obj: dict | None) -> bool:
        programmed = condition(obj, "Programmed")
        return bool(obj and programmed and programmed["status"] == "True"
                    and (generation is None or programmed.get("observedGeneration") == generation)
                    and obj["status"].get("proxies") == {"total": total, "synced": total, "nacked": 0})
    return check


async def patch_header(kube: KubeTestAPI, value: str) -> int:
    body = await kube.patch("routes", "httpbin", {"spec": {"rules": [{
        "backends": [{"name": "httpbin"}], "responseHeaders": {"set": [{"name": "x-phase", "value": value}]}}]}})
    return body["metadata"]["generation"]


async def leader_of(kube: KubeTestAPI) -> str | None:
    lease = await kube.get("leases", "xds-operator")
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


async def test_two_replicas_count_every_proxy_and_fail_over(kube, kubectl, tmp_path, httpbin):
    listener = free_port()
    app = tmp_path / "app.yaml"
    app.write_text(in_namespace(APP.format(httpbin_host=httpbin.host, httpbin_port=httpbin.port,
                                           listener_port=listener), kube.namespace))
    await kubectl("apply", "-f", str(app))
    a, b = Replica("a", kube, tmp_path), Replica("b", kube, tmp_path)
    envoys: list[Envoy] = []
    try:
        await a.start()
        await eventually(lambda: a.info()["leader"], timeout=15, what="replica a leads")
        await b.start()
        assert (await leader_of(kube)).startswith("replica-a_")
        envoys = [await envoy_preferring(tmp_path, "envoy-a", a, b).start(),
                  await envoy_preferring(tmp_path, "envoy-b", b, a).start()]
        await eventually(lambda: len(a.proxies()) == 1 and len(b.proxies()) == 1, timeout=30,
                         what="one Envoy on each replica")

        # The leader counts the follower's proxy too.
        await kube.wait_for("routes", "httpbin", condition=counted(2), timeout=30)
        await kube.wait_for("backends", "httpbin", condition=counted(2), timeout=30)

        # Many changes: the follower writes nothing and keeps nothing queued; the leader keeps up.
        before_b = b.info()
        lags = []
        for i in range(40):
            started = time.monotonic()
            generation = await patch_header(kube, f"change-{i}")
            if i % 10 == 9:
                await kube.wait_for("routes", "httpbin", condition=counted(2, generation), timeout=30)
                lags.append(time.monotonic() - started)
        after_b = b.info()
        assert not after_b["leader"]
        assert after_b["statusPasses"] == before_b["statusPasses"] == 0
        assert after_b["statusWrites"] == 0
        assert after_b["maxRssKiB"] - before_b["maxRssKiB"] < 20 * 1024, (before_b, after_b)
        assert a.info()["otherReplicasCounted"] == 1
        print(f"\nstatus lag with 2 replicas (patch to Programmed 2/2 at the new generation): "
              f"{', '.join(f'{lag:.2f}s' for lag in lags)}")

        await eventually(lambda: all(http_get(f"http://127.0.0.1:{listener}/get")[1].get("x-phase") == "change-39"
                                     for _ in envoys), timeout=15, what="the last change through Envoy")
        await asyncio.sleep(1.0)  # nothing more in flight
        updates_before = [xds_updates(e) for e in envoys]

        # The leader dies: Envoy a moves to replica b, which resends nothing; b takes the lead.
        with Traffic(listener) as traffic:
            await asyncio.sleep(0.5)
            killed = time.monotonic()
            a.signal(signal.SIGKILL)
            await a.process.wait()
            await eventually(lambda: b.info()["leader"], timeout=TAKE_OVER_BOUND + 5, interval=0.05,
                             what="replica b leads")
            take_over = time.monotonic() - killed
            try:
                await eventually(lambda: len(b.proxies()) == 2, timeout=30, what="both Envoys on replica b")
            except AssertionError:
                print(http_get(f"{envoys[0].admin_url}/clusters")[2].decode())
                raise
            generation = await patch_header(kube, "after-kill")
            # a's record stops counting within its expiry (the lease duration): 2 proxies, both on b.
            await kube.wait_for("routes", "httpbin", condition=counted(2, generation), timeout=LEASE * 2 + 15)
            await eventually(lambda: http_get(f"http://127.0.0.1:{listener}/get")[1].get("x-phase") == "after-kill",
                             timeout=15, what="the change after the kill through Envoy")
            await asyncio.sleep(0.5)
        print(f"leader take-over after SIGKILL: {take_over:.2f}s (bound {TAKE_OVER_BOUND:g}s); "
              f"{traffic.ok} requests through Envoy during the failover, {len(traffic.failed)} failed")
        assert take_over <= TAKE_OVER_BOUND + 1.0, take_over  # +1 s: this test polls /replica
        assert traffic.ok > 20 and not traffic.failed, traffic.failed[:5]
        assert await leader_of(kube) == b.info()["identity"]
        # On reconnect nothing unchanged was sent: the one update each Envoy took since is the
        # route config changed after the kill (RDS), once.
        for before, envoy in zip(updates_before, envoys, strict=False):
            after = xds_updates(envoy)
            grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            assert grown and all(".rds." in k and k.endswith("update_success") and v == 1
                                 for k, v in grown.items()), grown

        # A new replica c replaces a (on its address, as a new pod behind the Service); then b, the
        # leader with both Envoys, is frozen (SIGSTOP): c takes over and keeps writing statuses,
        # the Envoys keep serving; b, thawed, steps down, writes nothing stale, and its proxies
        # count again through its record.
        c = await Replica("c", kube, tmp_path, ports=(a.xds_port, a.http_port)).start()
        try:
            with Traffic(listener) as traffic:
                frozen = time.monotonic()
                b.signal(signal.SIGSTOP)
                await eventually(lambda: c.info()["leader"], timeout=TAKE_OVER_BOUND + 5, what="replica c leads")
                frozen_take_over = time.monotonic() - frozen
                generation = await patch_header(kube, "while-frozen")
                # Written by c, counting only the proxies connected to c (an Envoy whose stream to b
                # broke on its keepalive may have moved): b's record has expired while it is frozen.
                await kube.wait_for("routes", "httpbin", timeout=LEASE * 2 + 15, condition=lambda obj: bool(
                    (p := condition(obj, "Programmed")) and p.get("observedGeneration") == generation
                    and obj["status"]["proxies"]["total"] == len(c.proxies()) < 2))
                b.signal(signal.SIGCONT)
                await eventually(lambda: not b.info()["leader"], timeout=5, what="replica b stepped down")
                writes = b.info()["statusWrites"]
                await kube.wait_for("routes", "httpbin", condition=counted(2, generation), timeout=LEASE * 2 + 15)
                generation = await patch_header(kube, "after-thaw")
                await kube.wait_for("routes", "httpbin", condition=counted(2, generation), timeout=LEASE * 2 + 15)
                await asyncio.sleep(0.5)
            print(f"leader take-over after SIGSTOP: {frozen_take_over:.2f}s; {traffic.ok} requests through Envoy, "
                  f"{len(traffic.failed)} failed")
            assert frozen_take_over <= TAKE_OVER_BOUND + 1.0
            assert traffic.ok > 20 and not traffic.failed, traffic.failed[:5]
            assert b.info()["statusWrites"] == writes  # nothing written since it was thawed
            assert await leader_of(kube) == c.info()["identity"]
        finally:
            stopped = time.monotonic()
            await c.stop()
        # A clean stop releases the Lease: b need not wait for it to expire.
        await eventually(lambda: b.info()["leader"], timeout=RETRY + 2, what="replica b leads after c stopped")
        print(f"leader hand-over after a clean stop: {time.monotonic() - stopped:.2f}s")
    finally:
        for envoy in envoys:
            await envoy.stop()
        await b.stop()
        await a.stop()


async def test_rolling_restart_of_both_replicas_under_load(kube, kubectl, tmp_path, httpbin):
    """Each replica in turn stopped cleanly (SIGTERM) and replaced by a new process on the same
    address (as a new pod behind the Service; the other replica carries the proxies meanwhile),
    the next one only once the new one is ready. Traffic through the Envoys (both listen on the
    Route's port, the kernel spreads connections) never fails, nothing is re-sent, and one leader
    writes statuses counting both proxies at the end."""
    listener = free_port()
    app = tmp_path / "app.yaml"
    app.write_text(in_namespace(APP.format(httpbin_host=httpbin.host, httpbin_port=httpbin.port,
                                           listener_port=listener), kube.namespace))
    await kubectl("apply", "-f", str(app))
    a, b = Replica("a", kube, tmp_path), Replica("b", kube, tmp_path)
    replicas, envoys = [a, b], []
    try:
        await a.start()
        await b.start()
        envoys = [await envoy_preferring(tmp_path, "envoy-a", a, b).start(),
                  await envoy_preferring(tmp_path, "envoy-b", b, a).start()]
        await kube.wait_for("routes", "httpbin", condition=counted(2), timeout=30)
        await eventually(lambda: http_get(f"http://127.0.0.1:{listener}/get")[0] == 200, what="traffic")
        await asyncio.sleep(1.0)
        updates_before = [xds_updates(e) for e in envoys]
        with Traffic(listener) as traffic:
            for old in (a, b):
                new = Replica(f"{old.name}2", kube, tmp_path, ports=(old.xds_port, old.http_port))
                await old.stop()  # SIGTERM: the Lease released, its record deleted
                replicas.append(await new.start())
                await eventually(lambda: sum(len(r.proxies()) for r in replicas if r.alive()) == 2,
                                 timeout=30, what="both Envoys connected")
            generation = await patch_header(kube, "after-restart")
            await kube.wait_for("routes", "httpbin", condition=counted(2, generation), timeout=LEASE * 2 + 15)
            await asyncio.sleep(0.5)
        print(f"\nrolling restart of both replicas: {traffic.ok} requests through Envoy, {len(traffic.failed)} failed")
        assert traffic.ok > 20 and not traffic.failed, traffic.failed[:5]
        for before, envoy in zip(updates_before, envoys, strict=False):
            after = xds_updates(envoy)
            grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            assert grown and all(".rds." in k and k.endswith("update_success") and v == 1
                                 for k, v in grown.items()), grown
        leaders = [r for r in replicas if r.alive() and r.info()["leader"]]
        assert len(leaders) == 1 and await leader_of(kube) == leaders[0].info()["identity"]
    finally:
        for envoy in envoys:
            await envoy.stop()
        for replica in replicas:
            await replica.stop()
