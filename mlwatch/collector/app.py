"""The Starlette application: routes, error handling, request metrics and the collector's lifetime.

`create_app(config)` is cheap; the store, the two worker pools (ingest and query, kept apart so a
slow drift query never delays ingest), the evaluator and the alert delivery threads (when an
alerts file is configured) start in the lifespan and stop with it.
Every `HttpError` (and Starlette's own 404/405) becomes a JSON error body; an unexpected exception
becomes a 500 with a JSON body and a log line, never a traceback to the client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlwatch.collector import api, dashboard, ingest
from mlwatch.collector.alerting import CollectorAlerts
from mlwatch.collector.auth import TokenAuth
from mlwatch.collector.config import CollectorConfig
from mlwatch.collector.errors import HttpError, error_body
from mlwatch.collector.evaluator import Evaluator, LateHours
from mlwatch.collector.limits import ConcurrencyLimiter
from mlwatch.collector.metrics import CONTENT_TYPE, CollectorMetrics
from mlwatch.collector.openapi import openapi_schema
from mlwatch.collector.query import RangeReader
from mlwatch.collector.store import Store, open_store
from mlwatch.collector.worker import WorkerPool, WorkerSettings

__all__ = ["CollectorState", "create_app"]

logger = logging.getLogger("mlwatch.collector")


class CollectorState:
    """Everything the handlers share: config, store, auth, limiter, worker pools, reader, metrics."""

    def __init__(self, config: CollectorConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.auth = TokenAuth(config.tokens)
        self.limiter = ConcurrencyLimiter(config.max_concurrent_ingest)
        settings = WorkerSettings(hmac_keys=config.hmac_keys, limits=config.limits, test_hooks=config.test_hooks)
        self.ingest_pool = WorkerPool(settings, config.workers, config.worker_timeout, "ingest")
        self.query_pool = WorkerPool(settings, config.query_workers, config.query_timeout, "query")
        self.reader = RangeReader(store, self.query_pool)
        self.metrics = CollectorMetrics(live=self._live)
        self.evaluator = Evaluator(self, config.evaluate_interval)
        self.late_hours = LateHours()
        self.alerts: CollectorAlerts | None = None
        if config.alerts is not None:
            self.alerts = CollectorAlerts(self, config.alerts)
            self.metrics.registry.register(self.alerts.prometheus())

    def _live(self) -> dict[str, float]:
        out: dict[str, float] = {
            "mlwatch_collector_ingest_in_flight": self.limiter.active,
            "mlwatch_collector_overloaded_total": self.limiter.rejected,
            "mlwatch_collector_rollups_built_total": self.reader.rollups_built,
            "mlwatch_collector_rollups_extended_total": self.reader.rollups_extended,
        }
        for pool in (self.ingest_pool, self.query_pool):
            out[f"mlwatch_collector_{pool.name}_worker_calls_total"] = pool.calls
            out[f"mlwatch_collector_{pool.name}_worker_crashes_total"] = pool.crashes
            out[f"mlwatch_collector_{pool.name}_worker_timeouts_total"] = pool.timeouts
        return out

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.stop()
        self.ingest_pool.stop()
        self.query_pool.stop()
        self.store.close()


class _RequestMetrics:
    """Pure ASGI middleware: counts responses by endpoint name and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state: CollectorState | None = getattr(scope["app"].state, "collector", None) if "app" in scope else None
            if state is not None:
                endpoint = scope.get("endpoint")
                state.metrics.requests.labels(getattr(endpoint, "__name__", "unmatched"), str(status)).inc()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return JSONResponse(error_body(exc.status, exc.code, exc.message), status_code=exc.status, headers=exc.headers)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return JSONResponse(error_body(exc.status_code, code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("mlwatch collector: unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body(500, "internal", "internal error; see the collector's log"), status_code=500)


async def _metrics(request: Request) -> Response:
    state: CollectorState = request.app.state.collector
    state.auth.check(request.headers)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE)


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_schema())


ROUTES = [
    Route("/", dashboard.page, methods=["GET"]),
    Route("/v1/logs", ingest.otlp_logs, methods=["POST"]),
    Route("/v1/metrics", ingest.otlp_metrics, methods=["POST"]),
    Route("/health", api.health, methods=["GET"]),
    Route("/metrics", _metrics, methods=["GET"]),
    Route("/openapi.json", _openapi, methods=["GET"]),
    Route("/api/services", api.services, methods=["GET"]),
    Route("/api/models", api.models, methods=["GET"]),
    Route("/api/alerts", api.alerts, methods=["GET"]),
    Route("/api/models/{model}/versions", api.versions, methods=["GET"]),
    Route("/api/models/{model}/features", api.features, methods=["GET"]),
    Route("/api/models/{model}/windows", api.windows, methods=["GET"]),
    Route("/api/models/{model}/profile", api.profile, methods=["GET"]),
    Route("/api/models/{model}/drift", api.drift, methods=["GET"]),
    Route("/api/models/{model}/drift/windows", api.drift_windows, methods=["GET"]),
    Route("/api/models/{model}/quality", api.quality, methods=["GET"]),
    Route("/api/models/{model}/quality/windows", api.quality_windows, methods=["GET"]),
    Route("/api/models/{model}/model-quality", api.model_quality, methods=["GET"]),
    Route("/api/models/{model}/reference", api.get_reference, methods=["GET"]),
    Route("/api/models/{model}/reference", api.put_reference, methods=["PUT"]),
    Route("/api/models/{model}/reference", api.delete_reference, methods=["DELETE"]),
]


def create_app(config: CollectorConfig, store: Store | None = None) -> Starlette:
    """The collector as an ASGI app; it opens `config.db` at start-up unless a `store` is given."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = store if store is not None else await anyio.to_thread.run_sync(open_store, config.db)
        state = CollectorState(config, db)
        app.state.collector = state
        if state.alerts is not None:
            state.alerts.start()
        state.evaluator.start()
        try:
            yield
        finally:
            await state.evaluator.stop()
            await anyio.to_thread.run_sync(state.close)

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={HttpError: _http_error, HTTPException: _starlette_error, Exception: _unexpected},
    )
    app.add_middleware(_RequestMetrics)
    return app
