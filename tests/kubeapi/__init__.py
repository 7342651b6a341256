"""
A small, realistic Kubernetes API emulator for tests, built on kmock's ``KubernetesEmulator``.

* :class:`KubeAPI` — the server on a free 127.0.0.1 port with conveniences:
  ``url``, ``kubeconfig``/``write_kubeconfig()``, ``kubectl()``, ``connection_info()``/``login_handler``,
  ``operator()`` (kopf in the same event loop), ``objects()``/``get()``/``wait_for()`` (state for assertions),
  ``create()``/``patch()``/``delete()``/``request()`` (writes through HTTP, as any client would).
* :class:`KubeEmulator` — the kmock handler with the realism layer (see its module docstring).
* Fixtures ``kube_api`` & ``kubectl`` in ``tests.kubeapi.fixtures``: ``pytest_plugins = ["tests.kubeapi.fixtures"]``.

kopf::

    registry = kopf.OperatorRegistry()

    @kopf.on.create('example.dev', 'v1', 'widgets', registry=registry)
    def fn(patch, **_): patch.status['ok'] = True

    async with kube_api.operator(registry, namespaces=['default']):  # or clusterwide by default
        await kube_api.create(widget)
        await kube_api.wait_for('widgets', 'w1', 'default', condition=lambda o: o and o.get('status'))

kubectl (no special flags needed: a minimal /openapi/v3 makes kubectl delegate the validation)::

    await kubectl('apply', '-f', 'crd.yaml')
    out = (await kubectl('get', 'widgets', '-A', '-o', 'json')).stdout
"""
from .api import KubeAPI, KubeAPIError
from .emulator import KubeEmulator

__all__ = ['KubeAPI', 'KubeAPIError', 'KubeEmulator']
