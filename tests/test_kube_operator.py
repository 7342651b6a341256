"""The operator in-process against the Kubernetes API emulator: Routes, Backends, Services and
EndpointSlices in; snapshots and status out."""

from __future__ import annotations

import asyncio

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .kubeops import CRDS, backend, endpoint_slice, has_condition, route, running_operator, service


async def snapshot_when(operator, predicate, group: str = "any", timeout: float = 5.0):
    async with asyncio.timeout(timeout):
        while True:
            snapshot = operator.plane.cache.get(group) if operator.plane and operator.plane.cache.ready else None
            if snapshot is not None and predicate(snapshot):
                return snapshot
            await asyncio.sleep(0.02)


async def test_route_and_backend_become_config_and_status(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    async with running_operator(kube_api, monkeypatch) as operator:
        await kube_api.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube_api.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        snapshot = await snapshot_when(operator, lambda s: "default/web" in s.resources(CLUSTER)
                                       and "http-15001" in s.resources(ROUTE))
        assert set(snapshot.resources(LISTENER)) == {"http-15001"}
        cla = snapshot.resources(ENDPOINT)["default/web"].message
        assert [e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints] == ["10.0.0.1"]
        obj = await kube_api.wait_for("routes", "web", "default", condition=has_condition("Programmed", "False"))
        assert has_condition("Accepted", "True", "Accepted", generation=1)(obj)
        assert has_condition("ResolvedRefs", "True")(obj)
        assert has_condition("Programmed", "False", "NoProxies")(obj)
        assert obj["status"]["observedGeneration"] == 1
        assert obj["status"]["proxies"] == {"total": 0, "synced": 0, "nacked": 0}
        # The operator writes no finalizers and no annotations, even on its own objects.
        assert not obj["metadata"].get("finalizers")
        assert not any(k.startswith("kopf.") for k in obj["metadata"].get("annotations") or {})


async def test_services_and_endpoint_slices_become_eds(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    await kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    async with running_operator(kube_api, monkeypatch) as operator:
        await kube_api.create(backend("cart", "shop", service={"name": "cart", "port": "http"}))
        await kube_api.create(route("cart", "shop", rules=[{"backends": [{"name": "cart"}]}]))
        obj = await kube_api.wait_for("backends", "cart", "shop",
                                      condition=has_condition("ResolvedRefs", "False", "ServiceNotFound"))
        assert "Service shop/cart not found" in obj["status"]["conditions"][1]["message"]

        await kube_api.create(service("cart", "shop", [{"name": "http", "port": 80, "targetPort": 8080}]))
        await kube_api.create(endpoint_slice("cart-1", "shop", "cart", [{"name": "http", "port": 8080}], [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},  # not ready: left out
            {"addresses": ["10.1.0.3"]},  # no conditions means ready
        ]))

        def addresses(snapshot):
            cla = snapshot.resources(ENDPOINT).get("shop/cart")
            if cla is None or not cla.message.endpoints:
                return []
            return sorted(e.endpoint.address.socket_address.address for e in cla.message.endpoints[0].lb_endpoints)

        await snapshot_when(operator, lambda s: addresses(s) == ["10.1.0.1", "10.1.0.3"])
        await kube_api.wait_for("backends", "cart", "shop", condition=has_condition("ResolvedRefs", "True"))

        # A pod becomes ready; another slice of the same Service adds one more.
        await kube_api.patch("endpointslices", "cart-1", {"endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": True}},
        ]}, "shop")
        await kube_api.create(endpoint_slice("cart-2", "shop", "cart", [{"name": "http", "port": 8080}],
                                             [{"addresses": ["10.1.0.9"]}]))
        await snapshot_when(operator, lambda s: addresses(s) == ["10.1.0.1", "10.1.0.2", "10.1.0.9"])

        # The Service goes away: the cluster stays (empty) and the status says why.
        await kube_api.delete("services", "cart", "shop")
        await kube_api.wait_for("backends", "cart", "shop",
                                condition=has_condition("ResolvedRefs", "False", "ServiceNotFound"))
        service_obj = kube_api.get("endpointslices", "cart-2", "shop")
        assert not service_obj["metadata"].get("finalizers") and not service_obj["metadata"].get("annotations")


async def test_updates_and_deletes_flow_through(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    async with running_operator(kube_api, monkeypatch) as operator:
        await kube_api.create(backend("a", endpoints=[{"address": "10.0.0.1", "port": 80}]))
        await kube_api.create(backend("b", endpoints=[{"address": "10.0.0.2", "port": 80}]))
        await kube_api.create(route("r", rules=[{"backends": [{"name": "a"}]}]))
        await snapshot_when(operator, lambda s: set(s.resources(CLUSTER)) == {"default/a"})

        await kube_api.patch("routes", "r", {"spec": {"rules": [{"backends": [{"name": "b"}]}]}}, "default")
        await snapshot_when(operator, lambda s: set(s.resources(CLUSTER)) == {"default/b"})
        await kube_api.wait_for("routes", "r", "default", condition=has_condition("Accepted", "True", generation=2))

        await kube_api.delete("routes", "r", "default")
        await snapshot_when(operator, lambda s: not s.resources(LISTENER) and not s.resources(CLUSTER))


async def test_invalid_route_is_rejected_with_field_paths_and_an_event(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    async with running_operator(kube_api, monkeypatch) as operator:
        await kube_api.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        bad = route("bad", rules=[{"matches": [{"path": {"type": "RegularExpression", "value": "/(?=x)"}}],
                                   "backends": [{"name": "web"}]}])
        await kube_api.create(bad)
        obj = await kube_api.wait_for("routes", "bad", "default", condition=has_condition("Accepted", "False"))
        accepted = obj["status"]["conditions"][0]
        assert accepted["reason"] == "Invalid"
        assert accepted["message"].startswith("spec.rules[0].matches[0].path.value: invalid regular expression")
        assert has_condition("Programmed", "False", "Invalid")(obj)

        async with asyncio.timeout(5):
            while not [e for e in kube_api.objects("v1/events", "default")
                       if e["involvedObject"]["name"] == "bad" and e["reason"] == "Invalid"]:
                await asyncio.sleep(0.05)
        event = next(e for e in kube_api.objects("v1/events", "default") if e["involvedObject"]["name"] == "bad")
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Route"
        assert event["involvedObject"]["uid"] == obj["metadata"]["uid"]
        assert "invalid regular expression" in event["message"]
        snapshot = operator.plane.cache.get("any")
        assert not snapshot.resources(LISTENER)  # nothing of it was sent


async def test_status_is_written_only_when_it_changes(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    async with running_operator(kube_api, monkeypatch) as operator:
        await kube_api.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube_api.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        await kube_api.wait_for("routes", "web", "default", condition=has_condition("Programmed", "False"))
        await kube_api.wait_for("backends", "web", "default", condition=has_condition("Programmed", "False"))
        await asyncio.sleep(0.5)
        writes = operator.writer.writes
        assert writes == 2  # one per object
        # A change elsewhere rebuilds everything, but these two statuses are unchanged: no writes.
        await kube_api.create(backend("other", endpoints=[{"address": "10.0.0.2", "port": 80}]))
        await kube_api.wait_for("backends", "other", "default", condition=has_condition("Accepted", "True"))
        await asyncio.sleep(0.5)
        assert operator.writer.writes == writes + 1


async def test_namespaced_operator_sees_only_its_namespaces(kube_api, kubectl, monkeypatch):
    await kubectl("apply", "-k", str(CRDS))
    for namespace in ("shop", "other"):
        await kube_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    async with running_operator(kube_api, monkeypatch, namespaces=("shop",)) as operator:
        for namespace in ("shop", "other"):
            await kube_api.create(backend("web", namespace, endpoints=[{"address": "10.0.0.1", "port": 80}]))
            await kube_api.create(route("web", namespace, rules=[{"backends": [{"name": "web"}]}]))
        await snapshot_when(operator, lambda s: "shop/web" in s.resources(CLUSTER))
        await kube_api.wait_for("routes", "web", "shop", condition=has_condition("Accepted", "True"))
        await asyncio.sleep(0.3)
        assert set(operator.plane.cache.get("any").resources(CLUSTER)) == {"shop/web"}
        assert not kube_api.get("routes", "web", "other").get("status")  # not its business
