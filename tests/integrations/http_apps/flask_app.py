"""The Flask app the integration tests serve (in-process and under gunicorn): every case in one app.

Under a server, ``MLWATCH_TEST_ENDPOINT`` makes it export to that OTLP endpoint. At import it makes
one monitored call of the model ``warmup``: with ``--preload`` that call happens in the gunicorn
master before it forks, and must be counted exactly once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, request

import mlwatch
from mlwatch.integrations.flask import instrument_app

MODEL_ROUTES = {"/predict": "fraud", "/score/<kind>": "scorer"}


def create_app(instrument: bool = True) -> Flask:
    """The test app; `instrument=False` gives the same app without mlwatch, for comparisons."""
    app = Flask(__name__)

    @mlwatch.monitor(model="scorer")
    def score(features: dict[str, Any]) -> float:
        return float(features.get("amount", 0.0)) * 0.5

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/items/<int:item_id>")
    def get_item(item_id: int) -> dict[str, Any]:
        sleep_ms = int(request.args.get("sleep_ms", 0))
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        return {"id": item_id}

    @app.get("/sleep/<int:item_id>")
    def sleep(item_id: int) -> dict[str, Any]:
        time.sleep(int(request.args.get("sleep_ms", 0)) / 1000)
        return {"id": item_id}

    @app.post("/predict")
    def predict() -> dict[str, Any]:
        body = request.get_json()
        amount = float(body.get("amount", 0.0))
        return {"score": amount / 100.0, "label": "fraud" if amount > 50 else "ok"}

    @app.post("/score/<kind>")
    def score_route(kind: str) -> dict[str, Any]:
        return {"score": score(request.get_json()), "kind": kind}

    @app.post("/echo_twice")
    def echo_twice() -> dict[str, Any]:
        raw = request.get_data()
        again = request.get_json()
        return {"bytes": len(raw), "keys": sorted(again)}

    @app.get("/stream")
    def stream() -> Response:
        n = int(request.args.get("n", 5))
        sleep_ms = int(request.args.get("sleep_ms", 0))

        def chunks() -> Iterator[bytes]:
            for i in range(n):
                if sleep_ms:
                    time.sleep(sleep_ms / 1000)
                yield f"chunk {i}\n".encode()

        return Response(chunks(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/status/<int:code>")
    def status(code: int) -> None:
        abort(code)

    if instrument:
        instrument_app(app, model_routes=MODEL_ROUTES, exclude_paths=["/healthz"])
    return app


if os.environ.get("MLWATCH_TEST_ENDPOINT"):
    mlwatch.configure(endpoint=os.environ["MLWATCH_TEST_ENDPOINT"], service_name="flask-test")

    @mlwatch.monitor(model="warmup")
    def _warmup(features: dict[str, float]) -> float:
        return features["x"]

    _warmup({"x": 1.0})


class _Timed:
    """An outer WSGI wrapper appending each request's path and duration (ns, until close) to a file."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        t0 = time.perf_counter_ns()
        result = self.app(environ, start_response)
        try:
            yield from result
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            elapsed = time.perf_counter_ns() - t0
            with open(self.path, "a") as fh:
                fh.write(f"{environ['PATH_INFO']} {elapsed}\n")


app = create_app()
if os.environ.get("MLWATCH_TEST_TIMINGS"):
    app.wsgi_app = _Timed(app.wsgi_app, os.environ["MLWATCH_TEST_TIMINGS"])  # type: ignore[method-assign]
