"""
Proofs that the Kubernetes API emulator (tests/kubeapi) is good enough for kopf, kubectl & realistic tests.
"""
import asyncio
import json
import textwrap

import kopf
import pytest

from tests.kubeapi import KubeAPI, KubeAPIError


CRD = {
    'apiVersion': 'apiextensions.k8s.io/v1',
    'kind': 'CustomResourceDefinition',
    'metadata': {'name': 'widgets.example.dev'},
    'spec': {
        'group': 'example.dev',
        'scope': 'Namespaced',
        'names': {'plural': 'widgets', 'singular': 'widget', 'kind': 'Widget', 'shortNames': ['wdg']},
        'versions': [{
            'name': 'v1', 'served': True, 'storage': True,
            'subresources': {'status': {}},
            'schema': {'openAPIV3Schema': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True}},
        }],
    },
}


def widget(name: str, namespace: str = 'default', **spec: object) -> dict[str, object]:
    return {'apiVersion': 'example.dev/v1', 'kind': 'Widget',
            'metadata': {'name': name, 'namespace': namespace}, 'spec': spec}


def widget_operator(registry: kopf.OperatorRegistry, deleted: list[str]) -> None:
    @kopf.on.create('example.dev', 'v1', 'widgets', registry=registry)
    @kopf.on.update('example.dev', 'v1', 'widgets', registry=registry)
    def reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: object) -> None:
        patch.status['observedSize'] = spec.get('size')
        kopf.info(body, reason='Reconciled', message=f"size={spec.get('size')}")

    @kopf.on.delete('example.dev', 'v1', 'widgets', registry=registry)
    def delete(name: str, **_: object) -> None:
        deleted.append(name)


#
# (a) kopf in the same process.
#
@pytest.mark.parametrize('namespaces', [(), ('default',), ('def*',)], ids=['clusterwide', 'namespace', 'glob'])
async def test_kopf_handles_custom_resources(kube_api: KubeAPI, namespaces: tuple[str, ...]) -> None:
    await kube_api.create(CRD)
    registry, deleted = kopf.OperatorRegistry(), []
    widget_operator(registry, deleted)
    async with kube_api.operator(registry, namespaces=namespaces):
        await kube_api.create(widget('w1', size=1))
        obj = await kube_api.wait_for('widgets', 'w1', 'default', condition=lambda o: o and o.get('status'))
        assert obj['status']['observedSize'] == 1
        assert obj['metadata']['finalizers'] == ['kopf.zalando.org/KopfFinalizerMarker']
        assert 'kopf.zalando.org/last-handled-configuration' in obj['metadata']['annotations']
        assert obj['metadata']['generation'] == 1  # neither kopf's status nor metadata patches bump it

        await kube_api.patch('widgets', 'w1', {'spec': {'size': 2}}, 'default')
        obj = await kube_api.wait_for('widgets', 'w1', 'default',
                                      condition=lambda o: o and o['status']['observedSize'] == 2)
        assert obj['metadata']['generation'] == 2

        await kube_api.delete('widgets', 'w1', 'default')  # blocked by kopf's finalizer until handled
        await kube_api.wait_for('widgets', 'w1', 'default', condition=lambda o: o is None)
        assert deleted == ['w1']

        async with asyncio.timeout(5):
            while len(kube_api.objects('v1/events', 'default')) < 2:
                await asyncio.sleep(0.05)
    events = kube_api.objects('v1/events', 'default')
    assert {e['message'] for e in events} >= {'size=1', 'size=2'}
    assert all(e['involvedObject']['name'] == 'w1' for e in events)


async def test_kopf_picks_up_a_crd_created_later(kube_api: KubeAPI) -> None:
    registry, deleted = kopf.OperatorRegistry(), []
    widget_operator(registry, deleted)
    async with kube_api.operator(registry):
        await kube_api.create(CRD)  # kopf watches the CRDs and starts serving the new resource
        await kube_api.create(widget('late', size=5))
        obj = await kube_api.wait_for('widgets', 'late', 'default', condition=lambda o: o and o.get('status'))
        assert obj['status']['observedSize'] == 5


#
# (b) the real kubectl through a kubeconfig: client-side apply, get, delete.
#
async def test_kubectl_apply_get_delete(kube_api: KubeAPI, kubectl, tmp_path) -> None:
    (tmp_path / 'crd.json').write_text(json.dumps(CRD))
    (tmp_path / 'ns.yaml').write_text('apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n')
    resources = textwrap.dedent('''
        apiVersion: example.dev/v1
        kind: Widget
        metadata: {name: w1, namespace: demo}
        spec: {size: 3}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: backend, namespace: demo, labels: {app: backend}}
        spec:
          selector: {app: backend}
          ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 81, targetPort: 9090}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: backend-abc
          namespace: demo
          labels: {kubernetes.io/service-name: backend}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
    ''')
    (tmp_path / 'resources.yaml').write_text(resources)

    result = await kubectl('apply', '-f', str(tmp_path / 'crd.json'))
    assert 'customresourcedefinition.apiextensions.k8s.io/widgets.example.dev created' in result.stdout
    await kubectl('apply', '-f', str(tmp_path / 'ns.yaml'))
    result = await kubectl('apply', '-f', str(tmp_path / 'resources.yaml'))
    assert result.stdout.splitlines() == [
        'widget.example.dev/w1 created',
        'service/backend created',
        'endpointslice.discovery.k8s.io/backend-abc created',
    ]

    # Re-applying a change patches (strategic merge for built-ins; merge patch for custom resources).
    (tmp_path / 'resources.yaml').write_text(resources.replace('targetPort: 8080', 'targetPort: 8181'))
    result = await kubectl('apply', '-f', str(tmp_path / 'resources.yaml'))
    assert 'service/backend configured' in result.stdout
    assert 'widget.example.dev/w1 unchanged' in result.stdout
    svc = kube_api.get('services', 'backend', 'demo')
    assert svc['spec']['ports'] == [{'name': 'http', 'port': 80, 'targetPort': 8181},
                                    {'name': 'grpc', 'port': 81, 'targetPort': 9090}]

    # Removing a list item by its merge key ($setElementOrder + $patch: delete in the strategic merge patch).
    (tmp_path / 'resources.yaml').write_text(resources.replace(', {name: grpc, port: 81, targetPort: 9090}', ''))
    await kubectl('apply', '-f', str(tmp_path / 'resources.yaml'))
    svc = kube_api.get('services', 'backend', 'demo')
    assert svc['spec']['ports'] == [{'name': 'http', 'port': 80, 'targetPort': 8080}]

    result = await kubectl('get', 'widgets,services,endpointslices', '-n', 'demo', '-o', 'json')
    items = {(i['kind'], i['metadata']['name']): i for i in json.loads(result.stdout)['items']}
    assert set(items) == {('Widget', 'w1'), ('Service', 'backend'), ('EndpointSlice', 'backend-abc')}
    assert items['Widget', 'w1']['spec'] == {'size': 3}
    assert items['EndpointSlice', 'backend-abc']['endpoints'][0]['addresses'] == ['10.0.0.1']
    result = await kubectl('get', 'wdg', 'w1', '-n', 'demo', '-o', 'jsonpath={.metadata.uid}')
    assert result.stdout == kube_api.get('widgets', 'w1', 'demo')['metadata']['uid']

    result = await kubectl('delete', '-f', str(tmp_path / 'resources.yaml'))
    assert 'service "backend" deleted' in result.stdout
    assert kube_api.objects('widgets', 'demo') == []
    assert kube_api.objects('services', 'demo') == []
    result = await kubectl('get', 'services', 'backend', '-n', 'demo', check=False)
    assert result.returncode != 0 and 'NotFound' in result.stderr

    await kubectl('delete', 'crd', 'widgets.example.dev')
    result = await kubectl('get', 'widgets', check=False)  # kubectl's cached discovery may still know it
    assert result.returncode != 0 and ('NotFound' in result.stderr or "doesn't have a resource type" in result.stderr)
    with pytest.raises(KubeAPIError):
        await kube_api.request('GET', '/apis/example.dev/v1')


#
# (c) & (d) and the rest of the realism layer, via plain HTTP.
#
async def test_generation_increments_on_spec_changes_only(kube_api: KubeAPI) -> None:
    await kube_api.create(CRD)
    obj = await kube_api.create(widget('w1', size=1))
    rvs = [int(obj['metadata']['resourceVersion'])]
    assert obj['metadata']['generation'] == 1

    async def check(generation: int, *args: object, **kwargs: object) -> None:
        obj = await kube_api.patch('widgets', 'w1', *args, **kwargs)
        assert obj['metadata']['generation'] == generation
        rvs.append(int(obj['metadata']['resourceVersion']))

    await check(1, {'status': {'phase': 'Ready'}}, 'default', subresource='status')
    await check(1, {'metadata': {'labels': {'a': 'b'}, 'finalizers': ['x/y']}}, 'default')
    await check(2, {'spec': {'size': 2}}, 'default')
    await check(3, [{'op': 'replace', 'path': '/spec/size', 'value': 3}], 'default')
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)  # monotonic, all distinct

    # A main-resource write ignores the status; a status write ignores everything else.
    obj = await kube_api.patch('widgets', 'w1', {'status': {'phase': 'Hacked'}}, 'default')
    assert obj['status'] == {'phase': 'Ready'} and obj['metadata']['resourceVersion'] == str(rvs[-1])  # a no-op
    obj = await kube_api.patch('widgets', 'w1', {'spec': {'size': 9}, 'status': {'phase': 'Done'}}, 'default',
                               subresource='status')
    assert obj['spec'] == {'size': 3} and obj['status'] == {'phase': 'Done'} and obj['metadata']['generation'] == 3


async def test_failed_json_patch_test_gives_422(kube_api: KubeAPI) -> None:
    await kube_api.create(CRD)
    obj = await kube_api.create(widget('w1', size=1))
    with pytest.raises(KubeAPIError) as err:
        await kube_api.patch('widgets', 'w1', [
            {'op': 'test', 'path': '/metadata/resourceVersion', 'value': 'stale'},
            {'op': 'replace', 'path': '/spec/size', 'value': 2},
        ], 'default')
    assert err.value.status == 422
    assert err.value.body['kind'] == 'Status' and err.value.body['reason'] == 'Invalid'
    assert kube_api.get('widgets', 'w1', 'default') == obj  # unchanged


async def test_standard_errors(kube_api: KubeAPI) -> None:
    await kube_api.create(CRD)
    obj = await kube_api.create(widget('w1'))
    with pytest.raises(KubeAPIError) as err:
        await kube_api.create(widget('w1'))
    assert err.value.status == 409 and err.value.body['reason'] == 'AlreadyExists'
    with pytest.raises(KubeAPIError) as err:
        await kube_api.patch('widgets', 'nope', {'spec': {}}, 'default')
    assert err.value.status == 404
    assert err.value.body == {
        'apiVersion': 'v1', 'kind': 'Status', 'metadata': {}, 'status': 'Failure', 'code': 404, 'reason': 'NotFound',
        'message': 'widgets.example.dev "nope" not found',
        'details': {'name': 'nope', 'group': 'example.dev', 'kind': 'widgets'},
    }
    with pytest.raises(KubeAPIError) as err:  # an optimistic-concurrency conflict
        await kube_api.request('PUT', kube_api.path('widgets', 'w1', 'default'),
                               dict(obj, metadata=dict(obj['metadata'], resourceVersion='1')))
    assert err.value.status == 409 and err.value.body['reason'] == 'Conflict'
    with pytest.raises(KubeAPIError) as err:
        await kube_api.request('GET', '/apis/example.dev/v1/gadgets')
    assert err.value.status == 404


async def test_lists_generate_name_and_namespaces(kube_api: KubeAPI) -> None:
    created = await kube_api.create({'apiVersion': 'v1', 'kind': 'ConfigMap',
                                     'metadata': {'generateName': 'cm-', 'namespace': 'default'}})
    assert created['metadata']['name'].startswith('cm-') and len(created['metadata']['name']) == 8
    assert created['metadata']['uid'] and created['metadata']['creationTimestamp']

    listing = await kube_api.request('GET', '/api/v1/namespaces/default/configmaps')
    assert listing['kind'] == 'ConfigMapList' and listing['apiVersion'] == 'v1'
    assert int(listing['metadata']['resourceVersion']) >= int(created['metadata']['resourceVersion'])
    assert [i['metadata']['name'] for i in listing['items']] == [created['metadata']['name']]

    event = await kube_api.create({'apiVersion': 'events.k8s.io/v1', 'kind': 'Event', 'reason': 'Tested',
                                   'metadata': {'generateName': 'ev-', 'namespace': 'default'}})
    assert kube_api.objects('events.k8s.io/v1/events', 'default') == [event]

    namespaces = await kube_api.request('GET', '/api/v1/namespaces')
    assert namespaces['kind'] == 'NamespaceList'
    assert 'default' in {i['metadata']['name'] for i in namespaces['items']}
    assert (await kube_api.request('GET', '/api/v1/namespaces/default'))['status']['phase'] == 'Active'


def configmap(name: str, **labels: str) -> dict[str, object]:
    return {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': name, 'labels': labels}}


async def test_watch_honours_resource_version_and_selectors(kube_api: KubeAPI) -> None:
    await kube_api.create(configmap('old', app='x'))
    rv = (await kube_api.request('GET', '/api/v1/configmaps'))['metadata']['resourceVersion']
    await kube_api.create(configmap('new', app='x'))
    await kube_api.create(configmap('other', app='y'))

    params = {'watch': 'true', 'resourceVersion': rv, 'labelSelector': 'app in (x)', 'timeoutSeconds': '1'}
    async with kube_api.client.get('/api/v1/namespaces/default/configmaps', params=params) as resp:
        assert resp.status == 200
        async with asyncio.timeout(5):
            first = json.loads(await resp.content.readline())
            assert (first['type'], first['object']['metadata']['name']) == ('ADDED', 'new')  # not "old"
            await kube_api.patch('configmaps', 'other', {'data': {'k': 'v'}}, 'default')  # filtered out
            await kube_api.patch('configmaps', 'new', {'data': {'k': 'v'}}, 'default')
            await kube_api.delete('configmaps', 'new', 'default')
            events = [json.loads(line) async for line in resp.content]  # until timeoutSeconds
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [('MODIFIED', 'new'), ('DELETED', 'new')]
    assert events[0]['object']['data'] == {'k': 'v'}


async def test_deletion_waits_for_finalizers(kube_api: KubeAPI) -> None:
    await kube_api.create({'apiVersion': 'v1', 'kind': 'ConfigMap',
                           'metadata': {'name': 'cm', 'finalizers': ['example.dev/hold']}})
    deleting = await kube_api.delete('configmaps', 'cm', 'default')
    assert deleting['metadata']['deletionTimestamp']
    assert kube_api.get('configmaps', 'cm', 'default')['metadata']['deletionTimestamp']
    await kube_api.patch('configmaps', 'cm', {'metadata': {'finalizers': None}}, 'default')
    assert kube_api.get('configmaps', 'cm', 'default') is None
