"""The Flask app of the prediction-id tests (in-process and under gunicorn): ids in a response header.

The same routes as ``ids_fastapi_app``: ``/predict`` recorded by the middleware (which mints the id),
``/classify`` whose model is ``@monitor``-ed with ``prediction_ids=True`` (the id is the decorator's),
``/plain`` monitored without prediction ids (no header), ``/stream_predict`` a streamed JSON answer,
``/own_header`` setting the header itself; ``/feedback`` joins labels. Under a server,
``MLWATCH_TEST_ENDPOINT`` makes it export to that OTLP endpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, request

import mlwatch
from mlwatch.integrations.flask import instrument_app

HEADER = "X-Prediction-Id"
MODEL_ROUTES: dict[str, Any] = {
    "/predict": {"model": "fraud", "version": "2", "segment_by": ["country"]},
    "/classify": "classifier",
    "/classify_echo": "classifier",
    "/plain": "plain",
    "/stream_predict": "streamer",
    "/own_header": "own",
}


def create_app() -> Flask:
    """A fresh app (each in-process test gets its own recorders)."""
    app = Flask(__name__)

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
    def predict() -> dict[str, Any]:
        body = request.get_json()
        if "amount" not in body:
            abort(422)
        score = min(1.0, float(body["amount"]) / 100.0)
        return {"score": score, "prediction": int(score > 0.5)}

    @app.post("/classify")
    def classify_route() -> dict[str, Any]:
        return classify(request.get_json())

    @app.post("/classify_echo")
    def classify_echo() -> dict[str, Any]:
        return {**classify(request.get_json()), "id": mlwatch.current_prediction_id()}

    @app.post("/plain")
    def plain_route() -> dict[str, Any]:
        return {"value": plain(request.get_json())}

    @app.post("/stream_predict")
    def stream_predict() -> Response:
        n = int(request.args.get("n", 3))
        sleep_ms = int(request.args.get("sleep_ms", 0))

        def chunks() -> Iterator[bytes]:
            yield b'{"scores": ['
            for i in range(n):
                if sleep_ms:
                    time.sleep(sleep_ms / 1000)
                yield (b"," if i else b"") + str(i / 10).encode()
            yield b'], "score": 0.25}'

        return Response(chunks(), mimetype="application/json")

    @app.post("/own_header")
    def own_header() -> Response:
        resp = Response('{"score": 0.5}', mimetype="application/json")
        resp.headers[HEADER] = "the-app-s-own"
        return resp

    @app.post("/feedback")
    def feedback() -> dict[str, Any]:
        body = request.get_json()
        return {"counted": mlwatch.log_outcome(model=body["model"], prediction_id=body["prediction_id"], label=body["label"])}

    instrument_app(app, model_routes=MODEL_ROUTES, exclude_paths=["/healthz"], prediction_id_header=HEADER)
    return app


if os.environ.get("MLWATCH_TEST_ENDPOINT"):
    mlwatch.configure(endpoint=os.environ["MLWATCH_TEST_ENDPOINT"], service_name="flask-ids-test")
app = create_app()
