"""
``KubeAPI``: the emulator on a local HTTP port, plus conveniences for tests (kubeconfig, kubectl, kopf).
"""
import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import aiohttp
import kmock
import kopf
import yaml

from .emulator import KubeEmulator, Resource, api_version


class KubeAPIError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body.get('message') if isinstance(body, dict) else body}")
        self.status = status
        self.body = body


class KubeAPI:
    """
    A Kubernetes API emulator served on ``http://127.0.0.1:<free port>`` while entered.

    ``api.emulator`` is the kmock handler: its DSL injects failures or overrides
    (``api.emulator['patch', kmock.subresource('status')] << 500``), iterating it
    gives the request log, ``api.emulator.objects`` gives the objects with their histories.
    """

    def __init__(self, *, host: str = '127.0.0.1', port: int | None = None, server_version: str = '1.32.0') -> None:
        self.emulator = KubeEmulator(server_version=server_version)
        # No keep-alive for the helpers' client: kopf.operator() considers all tasks spawned
        # after its start as its own "hung" tasks (incl. the server's per-connection tasks)
        # and waits 5s for them on exit; idle keep-alive connections would delay that.
        self._server = kmock.Server(self.emulator, host=host, port=port, client_fct=lambda url: aiohttp.ClientSession(
            url, connector=aiohttp.TCPConnector(force_close=True)))
        self._stack = contextlib.AsyncExitStack()
        self._tmpdir: pathlib.Path | None = None

    async def __aenter__(self) -> 'KubeAPI':
        try:
            await self._stack.enter_async_context(self.emulator)
            await self._stack.enter_async_context(self._server)
            self._stack.push_async_callback(self.emulator.close_streams)  # before the server stops
            self._tmpdir = pathlib.Path(tempfile.mkdtemp(prefix='kubeapi-'))
            self._stack.callback(shutil.rmtree, self._tmpdir, ignore_errors=True)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        # Surface the emulator's own bugs (HTTP 500s), not the intended API errors (404, 409...).
        bugs = [e for e in self.emulator.errors if not isinstance(e, kmock.KubernetesError)]
        await self._stack.aclose()
        if bugs and exc_info[0] is None:
            raise ExceptionGroup("The Kubernetes API emulator failed internally", bugs)

    @property
    def url(self) -> str:
        return str(self._server.url).rstrip('/')

    @property
    def client(self) -> aiohttp.ClientSession:
        return self._server.client

    #
    # Clients: kubeconfig/kubectl & kopf.
    #
    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = 'default') -> pathlib.Path:
        path = pathlib.Path(path)
        path.write_text(yaml.safe_dump({
            'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
            'clusters': [{'name': 'kubeapi', 'cluster': {'server': self.url}}],
            'users': [{'name': 'kubeapi', 'user': {'token': 'kubeapi-token'}}],
            'contexts': [{'name': 'kubeapi',
                          'context': {'cluster': 'kubeapi', 'user': 'kubeapi', 'namespace': namespace}}],
            'current-context': 'kubeapi',
        }))
        return path

    @property
    def kubeconfig(self) -> pathlib.Path:
        """A kubeconfig file pointing to this server (created on first use, removed on exit)."""
        assert self._tmpdir is not None, "KubeAPI is not entered"
        path = self._tmpdir / 'kubeconfig'
        return path if path.exists() else self.write_kubeconfig(path)

    async def kubectl(
            self, *args: str, input: str | bytes | None = None, check: bool = True, timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run the real ``kubectl`` against this server — asynchronously, since the server
        runs in the same event loop. The discovery cache is private to this server.
        """
        binary = shutil.which('kubectl')
        if binary is None:
            raise FileNotFoundError("kubectl is not found in PATH")
        assert self._tmpdir is not None, "KubeAPI is not entered"
        cmd = [binary, f'--kubeconfig={self.kubeconfig}', f'--cache-dir={self._tmpdir / "cache"}', *args]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, HOME=str(self._tmpdir), KUBECONFIG=str(self.kubeconfig)),
        )
        try:
            data = input.encode() if isinstance(input, str) else input
            stdout, stderr = await asyncio.wait_for(proc.communicate(data), timeout)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result = subprocess.CompletedProcess(cmd, proc.returncode, stdout.decode(), stderr.decode())
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed with {result.returncode}:\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def connection_info(self, *, namespace: str = 'default') -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self.url, insecure=True, default_namespace=namespace)

    def login_handler(self, **_: Any) -> kopf.ConnectionInfo:
        """Use as ``kopf.on.login(registry=registry)(api.login_handler)``."""
        return self.connection_info()

    @contextlib.asynccontextmanager
    async def operator(
            self,
            registry: kopf.OperatorRegistry,
            *,
            namespaces: Collection[str] = (),
            clusterwide: bool | None = None,
            settings: kopf.OperatorSettings | None = None,
            memo: Any = None,
            ready_timeout: float = 10,
            stop_timeout: float = 10,
    ) -> AsyncIterator[asyncio.Task[None]]:
        """
        Run ``kopf.operator()`` against this server in the current event loop, stop it on exit.

        The registry must be test-specific: a login handler for this server is added to it.
        Beware: on exit, kopf waits up to 5s for (and then cancels) all the asyncio tasks
        created after its start, so do not leave long-running tasks of the test behind.
        """
        kopf.on.login(registry=registry, id='kubeapi-login')(self.login_handler)
        if settings is None:
            settings = kopf.OperatorSettings()
            settings.watching.reconnect_backoff = 0.1
            settings.queueing.idle_timeout = 0.5
            settings.queueing.exit_timeout = 1
        stop_flag, ready_flag = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(kopf.operator(
            registry=registry, settings=settings, memo=memo, standalone=True,
            clusterwide=clusterwide if clusterwide is not None else not namespaces, namespaces=namespaces,
            stop_flag=stop_flag, ready_flag=ready_flag,
        ), name='kopf operator')
        ready = asyncio.create_task(ready_flag.wait())
        try:
            done, _ = await asyncio.wait([task, ready], timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if task in done:
                await task  # re-raise the startup errors
                raise RuntimeError("kopf operator exited prematurely")
            if not ready_flag.is_set():
                raise TimeoutError("kopf operator did not become ready")
            yield task
        finally:
            stop_flag.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), stop_timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    #
    # Reading the state for assertions (no HTTP involved, no side effects).
    #
    def resource(self, spec: str | Resource) -> Resource:
        """``'widgets'``, ``'Widget'``, ``'example.dev/v1/widgets'``, ``'v1/services'`` → a served resource."""
        return self.emulator.resolve(spec)

    def objects(self, resource: str | Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.emulator.live(resource, namespace)

    def get(self, resource: str | Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.emulator.read(resource, name, namespace)

    async def wait_for(
            self, resource: str | Resource, name: str, namespace: str | None = None, *,
            condition: Callable[[dict[str, Any] | None], Any] = lambda obj: obj is not None,
            timeout: float = 5,
    ) -> dict[str, Any] | None:
        """Poll until the object satisfies the condition (it receives ``None`` if absent)."""
        async with asyncio.timeout(timeout):
            while not condition(obj := self.get(resource, name, namespace)):
                await asyncio.sleep(0.02)
        return obj

    #
    # Writing through the HTTP API, as a client would (watchers see the changes).
    #
    def path(self, resource: str | Resource, name: str | None = None, namespace: str | None = None,
             subresource: str | None = None) -> str:
        res = self.resource(resource)
        parts = ['/api' if not res.group else f'/apis/{res.group}', res.version]
        if namespace is not None and self.emulator.resources[res].namespaced:
            parts += ['namespaces', namespace]
        parts += [res.plural] + ([name] if name else []) + ([subresource] if subresource else [])
        return '/'.join(parts)

    async def request(self, method: str, path: str, body: Any = None, content_type: str = 'application/json') -> Any:
        data = None if body is None else json.dumps(body)
        async with self.client.request(method, path, data=data, headers={'Content-Type': content_type}) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            if resp.status >= 400:
                raise KubeAPIError(resp.status, payload)
            return payload

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        resources = self.emulator.resources
        res = next((r for r in resources
                    if resources[r].kind == obj['kind'] and api_version(r) == obj['apiVersion']), None)
        if res is None:
            raise LookupError(f"No served resource for {obj['apiVersion']} {obj['kind']}")
        namespace = obj.get('metadata', {}).get('namespace') or ('default' if resources[res].namespaced else None)
        return await self.request('POST', self.path(res, namespace=namespace), dict(obj))

    async def patch(self, resource: str | Resource, name: str, patch: Any, namespace: str | None = None, *,
                    subresource: str | None = None, content_type: str | None = None) -> dict[str, Any]:
        if content_type is None:
            json_patch = isinstance(patch, list)
            content_type = 'application/json-patch+json' if json_patch else 'application/merge-patch+json'
        return await self.request('PATCH', self.path(resource, name, namespace, subresource), patch, content_type)

    async def delete(self, resource: str | Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request('DELETE', self.path(resource, name, namespace))
