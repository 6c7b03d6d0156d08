"""The FastAPI app the integration tests serve (in-process and under uvicorn): every case in one app.

Sync and async endpoints, a model route, a model route whose handler is also `@monitor`ed, a
streaming response, a body read twice, handled and unhandled errors, an excluded health check.
Under a server, ``MLWATCH_TEST_ENDPOINT`` makes it export to that OTLP endpoint.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

import mlwatch
from mlwatch.integrations.fastapi import instrument_app

MODEL_ROUTES = {"/predict": "fraud", "/score/{kind}": "scorer"}


def create_app(instrument: bool = True) -> FastAPI:
    """The test app; `instrument=False` gives the same app without mlwatch, for comparisons."""
    app = FastAPI()

    @mlwatch.monitor(model="scorer")
    def score(features: dict[str, Any]) -> float:
        return float(features.get("amount", 0.0)) * 0.5

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/items/{item_id}")
    def get_item(item_id: int, sleep_ms: int = 0) -> dict[str, Any]:
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        return {"id": item_id}

    @app.get("/async/{item_id}")
    async def get_async(item_id: int, sleep_ms: int = 0) -> dict[str, Any]:
        if sleep_ms:
            await asyncio.sleep(sleep_ms / 1000)
        return {"id": item_id}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        amount = float(body.get("amount", 0.0))
        return {"score": amount / 100.0, "label": "fraud" if amount > 50 else "ok"}

    @app.post("/score/{kind}")
    async def score_route(kind: str, request: Request) -> dict[str, Any]:
        return {"score": score(await request.json()), "kind": kind}

    @app.post("/echo_twice")
    async def echo_twice(request: Request) -> dict[str, Any]:
        raw = await request.body()
        again = await request.json()
        return {"bytes": len(raw), "keys": sorted(again)}

    @app.get("/stream")
    async def stream(n: int = 5, sleep_ms: int = 0) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(n):
                if sleep_ms:
                    await asyncio.sleep(sleep_ms / 1000)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/status/{code}")
    def status(code: int) -> None:
        raise HTTPException(status_code=code, detail="as asked")

    if instrument:
        instrument_app(app, model_routes=MODEL_ROUTES, exclude_paths=["/healthz"])
    return app


class _Timed:
    """An outer ASGI wrapper appending each request's path and duration (ns) to a file: an independent timer.

    With ``MLWATCH_TEST_STARTS`` set, it also appends each request's path to that file when the request arrives.
    """

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path
        self.starts = os.environ.get("MLWATCH_TEST_STARTS")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.starts:
            with open(self.starts, "a") as fh:
                fh.write(f"{scope['path']}\n")
        t0 = time.perf_counter_ns()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter_ns() - t0
            with open(self.path, "a") as fh:
                fh.write(f"{scope['path']} {elapsed}\n")


if os.environ.get("MLWATCH_TEST_ENDPOINT"):
    mlwatch.configure(endpoint=os.environ["MLWATCH_TEST_ENDPOINT"], service_name="fastapi-test")
app: Any = create_app()
if os.environ.get("MLWATCH_TEST_TIMINGS"):
    app = _Timed(app, os.environ["MLWATCH_TEST_TIMINGS"])
