"""Prediction ids in a response header (``prediction_id_header=``): under uvicorn and gunicorn, and in-process.

Under a real server the client reads each model route's id from the header and posts the label to
the app's ``/feedback`` route (``mlwatch.log_outcome(prediction_id=...)`` in the server process);
the server exports over OTLP to a loopback receiver and is stopped with SIGTERM. The exported
profiles must count every prediction once (a model ``@monitor``-ed in the handler is not counted
again by the middleware) and carry every label, joined to its own prediction, window and segment.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_servers import APPS, child_env, free_port, server
from otlp_receiver import HealthDelta, Receiver

import mlwatch
from mlwatch import ConfigError, Profile
from mlwatch.testing import capture

HEADER = "X-Prediction-Id"


def _amounts(n: int) -> list[float]:
    return [float((7 * i) % 100) for i in range(n)]


def _label(amount: float) -> int:
    """The truth the labels tell: fraud above 40 (the test model says above 50, so some answers are wrong)."""
    return int(amount > 40)


def _exercise(base: str, async_route: bool) -> dict[str, Any]:
    """Every kind of request against a running server; what the client saw, and the labels it sent back."""
    seen: dict[str, Any] = {"ids": [], "missing": [], "labels": {}, "echo": []}
    with httpx.Client(base_url=base, timeout=30) as client:

        def predict(path: str, body: dict[str, Any], model: str | None) -> httpx.Response:
            r = client.post(path, json=body)
            pid = r.headers.get(HEADER)
            if model is None or r.status_code != 200:
                if pid is not None:
                    seen["missing"].append((path, r.status_code, pid))  # a header where none belongs
                return r
            assert pid, (path, r.status_code, r.text)
            seen["ids"].append(pid)
            label = _label(float(body.get("amount", 0.0)))
            seen["labels"].setdefault(model, []).append((float(body.get("amount", 0.0)), label))
            f = client.post("/feedback", json={"model": model, "prediction_id": pid, "label": label})
            assert f.status_code == 200 and f.json() == {"counted": True}, (path, f.text)
            return r

        for i, amount in enumerate(_amounts(40)):
            predict("/predict", {"amount": amount, "country": "DE" if i % 2 else "FR"}, "fraud")
        for amount in _amounts(20):
            predict("/classify", {"amount": amount}, "classifier")
            if async_route:
                predict("/classify_async", {"amount": amount}, "classifier")
        for amount in _amounts(5):
            r = predict("/classify_echo", {"amount": amount}, "classifier")
            seen["echo"].append((r.headers[HEADER], r.json()["id"]))
        for _ in range(3):
            predict("/predict", {"country": "DE"}, None)  # 422: no prediction, no id
            predict("/plain", {"amount": 3.0}, None)  # monitored without prediction_ids: no id
        seen["own"] = client.post("/own_header", json={}).headers.get_list(HEADER)
        # a streamed JSON answer: the id is in the headers, which arrive before the body is done
        for _ in range(3):
            t0 = time.perf_counter()
            with client.stream("POST", "/stream_predict", params={"n": 4, "sleep_ms": 100}) as r:
                pid, chunks, first = r.headers.get(HEADER), [], None
                for chunk in r.iter_bytes():
                    first = first if first is not None else time.perf_counter() - t0
                    chunks.append(chunk)
                total = time.perf_counter() - t0
            assert pid and b"".join(chunks) == b'{"scores": [0.0,0.1,0.2,0.3], "score": 0.25}'
            assert first is not None and first < total - 0.2, (first, total)  # it streamed
            seen["ids"].append(pid)
            seen["labels"].setdefault("streamer", []).append((0.0, 0))
            assert client.post("/feedback", json={"model": "streamer", "prediction_id": pid, "label": 0}).json() == {"counted": True}
        seen["unknown"] = client.post("/feedback", json={"model": "fraud", "prediction_id": "nope", "label": 1}).json()
    return seen


def _check(seen: dict[str, Any], profiles: list[Profile], async_route: bool) -> None:
    assert seen["missing"] == []
    assert len(set(seen["ids"])) == len(seen["ids"])  # one id per prediction
    assert seen["echo"] and all(header == body for header, body in seen["echo"])  # current_prediction_id()'s own id
    assert seen["own"] == ["the-app-s-own"]  # the app's own header is left alone
    assert seen["unknown"] == {"counted": False}

    def merged(model: str, **segment: str) -> Profile:
        chosen = [p for p in profiles if p.model == model and all(p.segment.get(k) == v for k, v in segment.items())]
        assert chosen, (model, segment)
        return mlwatch.merge(chosen)

    fraud = merged("fraud")
    assert fraud.calls == 40  # the 3 answered 422 were rejected before the model: not model calls
    q = mlwatch.quality([p for p in profiles if p.model == "fraud"])
    labels = seen["labels"]["fraud"]
    expected_accuracy = sum(int(a / 100 > 0.5) == y for a, y in labels) / len(labels)
    assert q.to_dict()["n_labeled"] == 40 and q.to_dict()["accuracy"] == pytest.approx(expected_accuracy)
    assert {k: v["n_labeled"] for k, v in q.segments().items()} == {"country=DE": 20, "country=FR": 20}  # each label in its prediction's segment
    n_classify = 20 * (2 if async_route else 1) + 5
    classifier = merged("classifier")
    assert classifier.calls == n_classify  # the decorator owns the model: no second call from the middleware
    assert mlwatch.quality([p for p in profiles if p.model == "classifier"]).to_dict()["n_labeled"] == n_classify
    streamer = mlwatch.quality([p for p in profiles if p.model == "streamer"]).to_dict()
    assert streamer["n_labeled"] == 3 and streamer["accuracy"] == 1.0  # score 0.25 read from the streamed body, label 0


def test_uvicorn_fastapi_ids_join_labels(tmp_path: Path) -> None:
    """uvicorn + FastAPI: every model route's answer carries its id (sync, async, middleware-recorded, streamed) and each label joins it."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    with Receiver() as rx:
        cmd = [sys.executable, "-m", "uvicorn", "ids_fastapi_app:app", "--app-dir", str(APPS), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
        with server(cmd, port, child_env(rx.url), tmp_path, tmp_path / "uvicorn.log"):
            seen = _exercise(f"http://127.0.0.1:{port}", async_route=True)
        profiles = rx.profiles()
    _check(seen, profiles, async_route=True)


def test_gunicorn_flask_ids_join_labels(tmp_path: Path) -> None:
    """gunicorn (one sync worker) + Flask: the same, through the WSGI middleware."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    port = free_port()
    with Receiver() as rx:
        cmd = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
               "--graceful-timeout", "10", "--log-level", "warning", "ids_flask_app:app"]
        env = {**child_env(rx.url), "XDG_RUNTIME_DIR": str(tmp_path)}
        with server(cmd, port, env, tmp_path, tmp_path / "gunicorn.log"):
            seen = _exercise(f"http://127.0.0.1:{port}", async_route=False)
        profiles = rx.profiles()
    _check(seen, profiles, async_route=False)


# ---------------------------------------------------------------------------- in-process
def test_header_name_is_checked() -> None:
    """A header name that is not an HTTP token raises ConfigError when instrumenting."""
    from mlwatch.integrations.asgi import MlwatchASGIMiddleware
    from mlwatch.integrations.wsgi import MlwatchWSGIMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    for bad in ("", "X Prediction", "X-Id\r\nSet-Cookie: a=b", 7):
        with pytest.raises(ConfigError, match="prediction_id_header"):
            MlwatchASGIMiddleware(app, model_routes={"/p": "m"}, prediction_id_header=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="prediction_id_header"):
            MlwatchWSGIMiddleware(lambda e, s: [], model_routes={"/p": "m"}, prediction_id_header=bad)  # type: ignore[arg-type]


def test_failures_never_reach_the_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """When minting an id fails, the answer goes out unchanged, without the header, and the failure is counted."""
    pytest.importorskip("fastapi")
    from http_apps.ids_fastapi_app import create_app

    import mlwatch.integrations._http_metrics as http_metrics

    def broken(*args: Any) -> str:
        raise RuntimeError("mint failed")

    monkeypatch.setattr(http_metrics, "new_prediction", broken)
    monkeypatch.setattr(http_metrics, "request_prediction_id", broken)
    health = HealthDelta()

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post(p, json={"amount": 70.0}) for p in ("/predict", "/classify")]

    with capture():
        responses = asyncio.run(run())
    assert [(r.status_code, r.json()["prediction"], HEADER.lower() in r.headers) for r in responses] == [(200, 1, False)] * 2
    assert health.errors().get("http_prediction_id", 0) == 2


def test_flask_in_process_header_matches_current_prediction_id() -> None:
    """Flask's test client (no server): the header is the id `current_prediction_id()` gave the handler."""
    pytest.importorskip("flask")
    from http_apps.ids_flask_app import create_app

    with capture():
        client = create_app().test_client()
        r = client.post("/classify_echo", json={"amount": 80.0})
        plain = client.post("/plain", json={"amount": 1.0})
        missing = client.get("/healthz")
    assert r.status_code == 200 and r.headers[HEADER] == r.get_json()["id"]
    assert HEADER not in plain.headers and HEADER not in missing.headers
