"""The operator in-process against a real kube-apiserver: Routes, Backends, Services and
EndpointSlices in; snapshots and status out."""

from __future__ import annotations

import asyncio

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

from .kubeops import backend, endpoint_slice, has_condition, route, running_operator, service


async def snapshot_when(operator, predicate, group: str = "any", timeout: float = 15.0):
    async with asyncio.timeout(timeout):
        while True:
            snapshot = operator.plane.cache.get(group) if operator.plane and operator.plane.cache.ready else None
            if snapshot is not None and predicate(snapshot):
                return snapshot
            await asyncio.sleep(0.02)


async def test_route_and_backend_become_config_and_status(kube, monkeypatch):
    ns = kube.namespace
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        await kube.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        snapshot = await snapshot_when(operator, lambda s: f"{ns}/web" in s.resources(CLUSTER)
                                       and "http-15001" in s.resources(ROUTE))
        assert set(snapshot.resources(LISTENER)) == {"http-15001"}
        cla = snapshot.resources(ENDPOINT)[f"{ns}/web"].message
        assert [e.endpoint.address.socket_address.address for e in cla.endpoints[0].lb_endpoints] == ["10.0.0.1"]
        # Routes and Backends come on separate watches: the Route may be built alone first
        # (ResolvedRefs=False for a moment), so this waits for the status the pair converges to.
        obj = await kube.wait_for("routes", "web", condition=lambda o: has_condition("Programmed", "False")(o)
                                  and has_condition("ResolvedRefs", "True")(o))
        assert has_condition("Accepted", "True", "Accepted", generation=1)(obj)
        assert has_condition("Programmed", "False", "NoProxies")(obj)
        assert obj["status"]["observedGeneration"] == 1
        assert obj["status"]["proxies"] == {"total": 0, "synced": 0, "nacked": 0}
        # The operator writes no finalizers and no annotations, even on its own objects.
        assert not obj["metadata"].get("finalizers")
        assert not any(k.startswith("kopf.") for k in obj["metadata"].get("annotations") or {})


async def test_services_and_endpoint_slices_become_eds(kube, monkeypatch):
    """Services without a selector and EndpointSlices made by hand (no pods run here), as a
    Service's ports by name and by number; slices added, changed and removed."""
    ns = kube.namespace
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(backend("cart", service={"name": "cart", "port": "http"}))
        await kube.create(backend("cart-by-number", service={"name": "cart", "port": 80}))
        await kube.create(route("cart", rules=[{"backends": [{"name": "cart"}]}]))
        await kube.create(route("cart-by-number", port=15002, rules=[{"backends": [{"name": "cart-by-number"}]}]))
        obj = await kube.wait_for("backends", "cart", condition=has_condition("ResolvedRefs", "False", "ServiceNotFound"))
        assert f"Service {ns}/cart not found" in obj["status"]["conditions"][1]["message"]

        await kube.create(service("cart", None, [{"name": "http", "port": 80, "targetPort": 8080},
                                                 {"name": "admin", "port": 81, "targetPort": 9090}]))
        await kube.create(endpoint_slice("cart-1", None, "cart",
                                         [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}], [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": False}},  # not ready: left out
            {"addresses": ["10.1.0.3"]},  # no conditions means ready
        ]))

        def endpoints(snapshot, cluster=f"{ns}/cart"):
            cla = snapshot.resources(ENDPOINT).get(cluster)
            if cla is None or not cla.message.endpoints:
                return []
            return sorted((e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                          for e in cla.message.endpoints[0].lb_endpoints)

        await snapshot_when(operator, lambda s: endpoints(s) == [("10.1.0.1", 8080), ("10.1.0.3", 8080)])
        # The Service's port 80 by number is the same port as "http" by name.
        await snapshot_when(operator, lambda s: endpoints(s, f"{ns}/cart-by-number")
                            == [("10.1.0.1", 8080), ("10.1.0.3", 8080)])
        await kube.wait_for("backends", "cart", condition=has_condition("ResolvedRefs", "True"))
        await kube.wait_for("backends", "cart-by-number", condition=has_condition("ResolvedRefs", "True"))

        # A pod becomes ready; another slice of the same Service adds one more.
        await kube.patch("endpointslices", "cart-1", {"endpoints": [
            {"addresses": ["10.1.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": True}},
        ]})
        await kube.create(endpoint_slice("cart-2", None, "cart", [{"name": "http", "port": 8080}],
                                         [{"addresses": ["10.1.0.9"]}]))
        await snapshot_when(operator, lambda s: endpoints(s) == [("10.1.0.1", 8080), ("10.1.0.2", 8080),
                                                                 ("10.1.0.9", 8080)])
        # A slice removed takes its endpoints along.
        await kube.delete("endpointslices", "cart-1")
        await snapshot_when(operator, lambda s: endpoints(s) == [("10.1.0.9", 8080)])

        # The Service goes away: the status says why.
        await kube.delete("services", "cart")
        await kube.wait_for("backends", "cart", condition=has_condition("ResolvedRefs", "False", "ServiceNotFound"))
        slice_obj = await kube.get("endpointslices", "cart-2")
        assert not slice_obj["metadata"].get("finalizers") and not slice_obj["metadata"].get("annotations")


async def test_updates_and_deletes_flow_through(kube, monkeypatch):
    ns = kube.namespace
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(backend("a", endpoints=[{"address": "10.0.0.1", "port": 80}]))
        await kube.create(backend("b", endpoints=[{"address": "10.0.0.2", "port": 80}]))
        await kube.create(route("r", rules=[{"backends": [{"name": "a"}]}]))
        await snapshot_when(operator, lambda s: set(s.resources(CLUSTER)) == {f"{ns}/a"})

        await kube.patch("routes", "r", {"spec": {"rules": [{"backends": [{"name": "b"}]}]}})
        await snapshot_when(operator, lambda s: set(s.resources(CLUSTER)) == {f"{ns}/b"})
        await kube.wait_for("routes", "r", condition=has_condition("Accepted", "True", generation=2))

        await kube.delete("routes", "r")
        await snapshot_when(operator, lambda s: not s.resources(LISTENER) and not s.resources(CLUSTER))


async def test_invalid_route_is_rejected_with_field_paths_and_an_event(kube, monkeypatch):
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        bad = route("bad", rules=[{"matches": [{"path": {"type": "RegularExpression", "value": "/(?=x)"}}],
                                   "backends": [{"name": "web"}]}])
        await kube.create(bad)
        obj = await kube.wait_for("routes", "bad", condition=has_condition("Accepted", "False"))
        accepted = obj["status"]["conditions"][0]
        assert accepted["reason"] == "Invalid"
        assert accepted["message"].startswith("spec.rules[0].matches[0].path.value: invalid regular expression")
        assert has_condition("Programmed", "False", "Invalid")(obj)

        async with asyncio.timeout(15):
            while not [e for e in await kube.events_about("bad") if e["reason"] == "Invalid"]:
                await asyncio.sleep(0.05)
        event = next(e for e in await kube.events_about("bad") if e["reason"] == "Invalid")
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Route"
        assert event["involvedObject"]["uid"] == obj["metadata"]["uid"]
        assert "invalid regular expression" in event["message"]
        snapshot = operator.plane.cache.get("any")
        assert not snapshot.resources(LISTENER)  # nothing of it was sent


async def test_status_is_written_only_when_it_changes(kube, monkeypatch):
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(backend("web", endpoints=[{"address": "10.0.0.1", "port": 8080}]))
        # The Backend seen first: Routes and Backends come on separate watches, and a change is
        # built at once when the operator is idle, so a Route whose event came first would be
        # built alone (ResolvedRefs=False, then True: two writes that are real changes).
        await kube.wait_for("backends", "web", condition=has_condition("Programmed", "False"))
        await kube.create(route("web", rules=[{"backends": [{"name": "web"}]}]))
        await kube.wait_for("routes", "web", condition=has_condition("Programmed", "False"))
        await asyncio.sleep(0.5)
        writes = operator.writer.writes
        assert writes == 2  # one per object
        # A change elsewhere rebuilds everything, but these two statuses are unchanged: no writes.
        await kube.create(backend("other", endpoints=[{"address": "10.0.0.2", "port": 80}]))
        await kube.wait_for("backends", "other", condition=has_condition("Accepted", "True"))
        await asyncio.sleep(0.5)
        assert operator.writer.writes == writes + 1


async def test_namespaced_operator_sees_only_its_namespaces(kube, monkeypatch):
    shop = kube.namespace
    other = await kube.other_namespace("other")
    async with running_operator(kube, monkeypatch, namespaces=(shop,)) as operator:
        for namespace in (shop, other):
            await kube.create(backend("web", namespace, endpoints=[{"address": "10.0.0.1", "port": 80}]))
            await kube.create(route("web", namespace, rules=[{"backends": [{"name": "web"}]}]))
        await snapshot_when(operator, lambda s: f"{shop}/web" in s.resources(CLUSTER))
        await kube.wait_for("routes", "web", shop, condition=has_condition("Accepted", "True"))
        await asyncio.sleep(0.3)
        assert set(operator.plane.cache.get("any").resources(CLUSTER)) == {f"{shop}/web"}
        assert not (await kube.get("routes", "web", other)).get("status")  # not its business


async def test_tls_secrets_from_the_api_become_sds_and_status(kube, monkeypatch):
    """A TLS Route's Secret from the API: served over SDS, rotated in place; a broken one is
    InvalidCertificateRef; an Opaque CA Secret a Route names is read; other Secrets are not kept
    (kube/secrets.py: the TLS watch is filtered by the API server)."""
    from xds_operator.translate.resources import SECRET

    from .tlscerts import make_ca, make_leaf, tls_secret

    ns = kube.namespace
    ca = make_ca()
    first, second = make_leaf(ca, "shop.example.com"), make_leaf(ca, "shop.example.com")
    async with running_operator(kube, monkeypatch) as operator:
        await kube.create(tls_secret("shop", first, namespace=ns))
        await kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": "helm-release", "namespace": ns}, "stringData": {"release": "x" * 100}})
        await kube.create(route("shop", port=15443, hostnames=["shop.example.com"],
                                tls={"certificateRef": {"name": "shop"}},
                                rules=[{"directResponse": {"status": 200}}]))
        await kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": "clients", "namespace": ns}, "stringData": {"ca.crt": ca.cert_pem.decode()}})
        await kube.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": "unused-ca", "namespace": ns}, "stringData": {"ca.crt": ca.cert_pem.decode()}})
        await kube.create(route("mtls", port=15443, hostnames=["mtls.example.com"],
                                tls={"certificateRef": {"name": "shop"},
                                     "clientValidation": {"caCertificateRef": {"name": "clients"}}},
                                rules=[{"directResponse": {"status": 200}}]))

        def served(snapshot, cert) -> bool:
            secret = snapshot.resources(SECRET).get(f"tls/{ns}/shop")
            return secret is not None and secret.message.tls_certificate.certificate_chain.inline_string == \
                cert.cert_pem.decode()

        await snapshot_when(operator, lambda s: served(s, first) and "https-15443/shop.example.com" in s.resources(ROUTE))
        await kube.wait_for("routes", "shop", condition=has_condition("ResolvedRefs", "True"))
        await kube.wait_for("routes", "mtls", condition=has_condition("ResolvedRefs", "True"))
        await snapshot_when(operator, lambda s: f"ca/{ns}/clients" in s.resources(SECRET))
        # Neither the Helm release nor the CA bundle no Route names is kept.
        assert set(operator.plane.state.secrets) == {(ns, "shop"), (ns, "clients")}

        await kube.patch("secrets", "shop", {"data": tls_secret("shop", second)["data"]})
        await snapshot_when(operator, lambda s: served(s, second))

        await kube.patch("secrets", "shop", {"data": {"tls.key": tls_secret("x", first)["data"]["tls.key"]}})
        obj = await kube.wait_for("routes", "shop",
                                  condition=has_condition("ResolvedRefs", "False", "InvalidCertificateRef"))
        refs = next(c for c in obj["status"]["conditions"] if c["type"] == "ResolvedRefs")
        assert refs["message"] == (f"spec.tls.certificateRef: Secret {ns}/shop: tls.key does not match the "
                                   "certificate in tls.crt")
        await snapshot_when(operator, lambda s: not s.resources(SECRET) and not s.resources(LISTENER))  # both Routes out
        await kube.delete("secrets", "shop")
        await kube.wait_for("routes", "shop", condition=lambda o: has_condition("ResolvedRefs", "False")(o) and any(
            c["message"].endswith("not found") for c in o["status"]["conditions"]))


async def test_a_backend_ca_bundle_from_a_config_map(kube, monkeypatch):
    """A Backend's caCertificateRef of kind ConfigMap: that ConfigMap is read with a GET (no other
    ConfigMap is kept), re-read every resync interval, and a missing or expired one is
    InvalidCertificateRef naming it (kube/configmaps.py)."""
    from xds_operator.translate.resources import SECRET

    from .tlscerts import DAY, NOW, make_ca

    ns = kube.namespace
    first, second = make_ca("first CA"), make_ca("second CA")
    expired = make_ca("old CA", not_before=NOW - 10 * DAY, not_after=NOW - DAY)

    def config_map(name: str, pem: bytes) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                "data": {"ca.crt": pem.decode()}}

    def served_ca(snapshot) -> str | None:
        secret = snapshot.resources(SECRET).get(f"configmap-ca/{ns}/bundle")
        return None if secret is None else secret.message.validation_context.trusted_ca.inline_string

    async with running_operator(kube, monkeypatch, resync_interval=1.0) as operator:
        await kube.create(config_map("unrelated", first.cert_pem))
        await kube.create(backend("tls", endpoints=[{"address": "10.0.0.1", "port": 443}],
                                  tls={"sni": "b.test", "caCertificateRef": {"kind": "ConfigMap", "name": "bundle"}}))
        await kube.create(route("tls", rules=[{"backends": [{"name": "tls"}]}]))
        obj = await kube.wait_for("backends", "tls",
                                  condition=has_condition("ResolvedRefs", "False", "InvalidCertificateRef"))
        refs = next(c for c in obj["status"]["conditions"] if c["type"] == "ResolvedRefs")
        assert refs["message"] == f"spec.tls.caCertificateRef: ConfigMap {ns}/bundle not found"

        await kube.create(config_map("bundle", first.cert_pem))
        await snapshot_when(operator, lambda s: served_ca(s) == first.cert_pem.decode())
        await kube.wait_for("backends", "tls", condition=has_condition("ResolvedRefs", "True"))
        assert set(operator.plane.state.config_maps) == {(ns, "bundle")}  # not the unrelated one

        # A change is read again (within the resync interval, 1 s here).
        await kube.patch("configmaps", "bundle", {"data": {"ca.crt": second.cert_pem.decode()}})
        await snapshot_when(operator, lambda s: served_ca(s) == second.cert_pem.decode())

        await kube.patch("configmaps", "bundle", {"data": {"ca.crt": expired.cert_pem.decode()}})
        obj = await kube.wait_for("backends", "tls",
                                  condition=has_condition("ResolvedRefs", "False", "InvalidCertificateRef"))
        refs = next(c for c in obj["status"]["conditions"] if c["type"] == "ResolvedRefs")
        assert refs["message"].startswith(f"spec.tls.caCertificateRef: ConfigMap {ns}/bundle: the CA certificate "
                                          "in ca.crt (CN=old CA) expired on"), refs
        await snapshot_when(operator, lambda s: served_ca(s) is None and f"{ns}/tls" not in s.resources(CLUSTER))

        # No longer referenced: no longer kept.
        await kube.patch("backends", "tls", {"spec": {"tls": {"caCertificateRef": None}}})
        await kube.wait_for("backends", "tls", condition=has_condition("ResolvedRefs", "True"))
        async with asyncio.timeout(5):
            while operator.plane.state.config_maps:
                await asyncio.sleep(0.05)
