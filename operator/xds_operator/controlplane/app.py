"""Wiring of one control plane process: state, controller, cache, ADS server, HTTP endpoints.

Sources are added by the caller (the file source for `serve`, kopf for `run`), so the core
knows nothing of where objects come from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from ..addresses import UsageError, check_free
from ..sources.state import StateStore
from ..status.metrics import Metrics
from ..status.web import make_app, start_http
from ..translate import TranslateOptions
from ..xds.cache import SnapshotCache
from ..xds.callbacks import FanOut
from ..xds.channel_tls import ReloadingTls, TlsFilesError, XdsTlsFiles
from ..xds.proxies import ProxyRegistry
from ..xds.server import start_server
from .controller import Controller
from .isolation import RouteIsolation

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    xds_address: str = "0.0.0.0:18000"
    http_address: str | None = "0.0.0.0:18001"
    options: TranslateOptions = TranslateOptions()
    xds_tls: XdsTlsFiles | None = None  # ADS over TLS (mTLS with a client CA); None: plaintext
    debounce: float = 0.05
    state: StateStore = field(default_factory=StateStore)
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    registry: ProxyRegistry = field(default_factory=ProxyRegistry)
    # Sources' own conditions for readiness: each returns why it is not ready, or None.
    readiness_checks: list[Callable[[], str | None]] = field(default_factory=list)
    # More JSON endpoints (path -> body), served from start() on.
    extra_json: dict[str, Callable[[], object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.controller = Controller(self.state, self.cache, self.options, debounce=self.debounce)
        self.metrics = Metrics(self.controller, self.registry, self.cache)
        self.controller.on_build.append(lambda _: self.metrics.tracker.on_build(self.controller.last_change_at))
        self.controller.isolation = RouteIsolation(self.registry, self.controller.rebuild_soon)
        self.xds_port: int | None = None
        self.http_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        for check in self.readiness_checks:
            if (reason := check()) is not None:
                return reason
        if self._server is None or not self.cache.ready:
            return "no config built yet"
        return None

    async def start(self, *, initial_quiet: float = 0.0, initial_max_delay: float = 0.0) -> None:
        """Raises UsageError, before anything runs, if the ADS or HTTP port is taken or a TLS file is bad."""
        check_free(self.xds_address, "the ADS port; choose another with --xds-address")
        if self.http_address:
            check_free(self.http_address, "the HTTP port; choose another with --http-address")
        try:
            tls = ReloadingTls(self.xds_tls) if self.xds_tls is not None else None
        except TlsFilesError as exc:
            raise UsageError(str(exc)) from None
        run = self.controller.run(initial_quiet=initial_quiet, initial_max_delay=initial_max_delay)
        self._tasks.append(asyncio.create_task(run, name="controller"))
        self._server, self.xds_port = await start_server(self.xds_address, self.cache,
                                                          FanOut(self.registry, self.metrics.tracker), tls)
        log.info("ADS server listening on %s (port %d)%s", self.xds_address, self.xds_port,
                 "" if tls is None else ", over mTLS" if tls.files.requires_client_certificates else ", over TLS")
        if self.http_address:
            self._http, self.http_port = await start_http(make_app(self.controller, self.registry,
                                                                   self.not_ready_reason, self.metrics.registry,
                                                                   self.extra_json),
                                                          self.http_address)
            log.info("HTTP endpoints on %s (port %d): /healthz /readyz /proxies /status /metrics", self.http_address,
                     self.http_port)

    def add_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        self.cache.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._server is not None:
            await self._server.stop(grace=1)
            self._server = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
