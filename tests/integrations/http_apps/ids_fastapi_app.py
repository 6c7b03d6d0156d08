"""The FastAPI app of the prediction-id tests (in-process and under uvicorn): ids in a response header.

Model routes of every kind: ``/predict`` recorded by the middleware (which mints the id);
``/classify``, ``/classify_echo`` (sync handlers: FastAPI runs them in a worker thread; the latter
returns `mlwatch.current_prediction_id()` in its body) and ``/classify_async``, whose model is
``@monitor``-ed with ``prediction_ids=True`` (the id is the decorator's); ``/plain`` monitored without
prediction ids (no header); ``/stream_predict`` a streaming JSON answer; ``/own_header`` setting the
header itself. ``/feedback`` joins labels.
Under a server, ``MLWATCH_TEST_ENDPOINT`` makes it export to that OTLP endpoint.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

import mlwatch
from mlwatch.integrations.fastapi import instrument_app

HEADER = "X-Prediction-Id"
MODEL_ROUTES: dict[str, Any] = {
    "/predict": {"model": "fraud", "version": "2", "segment_by": ["country"]},
    "/classify": "classifier",
    "/classify_echo": "classifier",
    "/classify_async": "classifier",
    "/plain": "plain",
    "/stream_predict": "streamer",
    "/own_header": "own",
}


def create_app() -> FastAPI:
    """A fresh app (each in-process test gets its own recorders)."""
    app = FastAPI()

    @mlwatch.monitor(model="classifier", prediction_ids=True)
    def classify(features: dict[str, Any]) -> dict[str, Any]:
        score = min(1.0, float(features.get("amount", 0.0)) / 100.0)
        return {"score": score, "prediction": int(score > 0.5)}

    @mlwatch.monitor(model="plain")
    def plain(features: dict[str, Any]) -> float:
        return float(features.get("amount", 0.0))

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        if "amount" not in body:
            raise HTTPException(status_code=422, detail="amount is required")
        score = min(1.0, float(body["amount"]) / 100.0)
        return {"score": score, "prediction": int(score > 0.5)}

    @app.post("/classify")
    def classify_sync(features: dict[str, Any]) -> dict[str, Any]:
        return classify(features)

    @app.post("/classify_echo")
    def classify_echo(features: dict[str, Any]) -> dict[str, Any]:
        return {**classify(features), "id": mlwatch.current_prediction_id()}

    @app.post("/classify_async")
    async def classify_async(features: dict[str, Any]) -> dict[str, Any]:
        return classify(features)

    @app.post("/plain")
    def plain_route(features: dict[str, Any]) -> dict[str, Any]:
        return {"value": plain(features)}

    @app.post("/stream_predict")
    async def stream_predict(n: int = 3, sleep_ms: int = 0) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"scores": ['
            for i in range(n):
                if sleep_ms:
                    await asyncio.sleep(sleep_ms / 1000)
                yield (b"," if i else b"") + str(i / 10).encode()
            yield b'], "score": 0.25}'

        return StreamingResponse(chunks(), media_type="application/json")

    @app.post("/own_header")
    async def own_header(response: Response) -> dict[str, Any]:
        response.headers[HEADER] = "the-app-s-own"
        return {"score": 0.5}

    @app.post("/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        body = await request.json()
        counted = mlwatch.log_outcome(model=body["model"], prediction_id=body["prediction_id"], label=body["label"])
        return {"counted": counted}

    instrument_app(app, model_routes=MODEL_ROUTES, exclude_paths=["/healthz"], prediction_id_header=HEADER)
    return app


if os.environ.get("MLWATCH_TEST_ENDPOINT"):
    mlwatch.configure(endpoint=os.environ["MLWATCH_TEST_ENDPOINT"], service_name="fastapi-ids-test")
app = create_app()
