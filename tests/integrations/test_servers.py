"""Under real servers on loopback: uvicorn + FastAPI, gunicorn + Flask (4 pre-fork workers, recycling).

Traffic comes from httpx in a separate process (driver.py); every server exports over real OTLP/HTTP
to a loopback receiver (tests/otlp_receiver.py) and is stopped with SIGTERM, so each process's last
windows leave through mlwatch's exit flush. The decoded, merged profiles must count exactly the
requests sent, per method, route template and status, and their latency quantiles must match what
the client measured.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("httpx")
from http_servers import APPS, child_env, drive, free_port, server
from otlp_receiver import Receiver

from mlwatch import Profile, merge

HTTP = "http.server"
#: (quantile, sleep) design: 5 sleep values 20 ms apart, equally often; quantiles in mid-step.
SLEEPS_MS = (10, 30, 50, 70, 90)
QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)


def _plan(framework: str) -> list[dict[str, Any]]:
    """Requests of every kind, each with the route template and status the server should record."""
    item_route = "/items/{item_id}" if framework == "fastapi" else "/items/<int:item_id>"
    score_route = "/score/{kind}" if framework == "fastapi" else "/score/<kind>"
    timed_path, timed_route = ("/async", "/async/{item_id}") if framework == "fastapi" else ("/sleep", "/sleep/<int:item_id>")
    plan: list[dict[str, Any]] = []
    plan += [{"path": f"/items/{i}", "route": item_route, "tag": "plain"} for i in range(60)]
    plan += [{"path": f"{timed_path}/{i}?sleep_ms={SLEEPS_MS[i % 5]}", "route": timed_route, "tag": "timed"} for i in range(100)]
    plan += [
        {"method": "POST", "path": "/predict", "route": "/predict", "json": {"amount": float(2 * i), "country": "DE" if i % 2 else "FR"}}
        for i in range(40)
    ]
    plan += [{"method": "POST", "path": "/predict", "route": "/predict", "content": "{not json", "headers": {"content-type": "application/json"}}] * 3
    plan += [{"method": "POST", "path": f"/score/k{i % 3}", "route": score_route, "json": {"amount": float(i)}} for i in range(20)]
    plan += [{"method": "POST", "path": "/echo_twice", "route": "/echo_twice", "json": {"a": 1, "b": 2}}] * 5
    plan += [{"path": "/stream?n=3", "route": "/stream"}] * 5
    plan += [{"path": "/boom", "route": "/boom"}] * 5
    plan += [{"path": "/status/404", "route": "/status/{code}" if framework == "fastapi" else "/status/<int:code>"}] * 5
    plan += [{"path": "/status/503", "route": "/status/{code}" if framework == "fastapi" else "/status/<int:code>"}] * 5
    plan += [{"path": "/no/such/page", "route": "__missing__"}] * 5
    plan += [{"path": "/healthz", "route": None}] * 5  # excluded: never recorded
    plan += [{"path": "/stream?n=40&sleep_ms=25", "route": "/stream", "disconnect": True}] * 3
    return plan


def _expected(plan: list[dict[str, Any]], results: list[tuple[int, float]]) -> Counter[tuple[str, str, str]]:
    """(method, route, status) -> requests, from the plan and the statuses the client saw."""
    out: Counter[tuple[str, str, str]] = Counter()
    for req, (status, _) in zip(plan, results, strict=True):
        if req["route"] is None:
            continue
        out[(req.get("method", "GET"), req["route"], "200" if status == -1 else str(status))] += 1
    return out


def _recorded(profiles: list[Profile]) -> Counter[tuple[str, str, str]]:
    out: Counter[tuple[str, str, str]] = Counter()
    for p in profiles:
        if p.model == HTTP:
            s = p.segment
            out[(s["http.request.method"], s["http.route"], s["http.response.status_code"])] += p.calls
    return out


def _merged(profiles: list[Profile], model: str, **segment: str) -> Profile:
    chosen = [p for p in profiles if p.model == model and all(p.segment.get(k) == v for k, v in segment.items())]
    assert chosen, f"no profile of {model} {segment}"
    return merge(chosen)


def _check_latency(server: Profile, client_seconds: list[float]) -> None:
    """Server-side quantiles sit just below the client's (which add the network and the client)."""
    assert server.latency is not None and server.latency.n == len(client_seconds)
    client = np.asarray(client_seconds)
    for q in QUANTILES:
        c = float(np.quantile(client, q, method="inverted_cdf"))
        s = float(server.latency.quantile(q))
        assert s <= c + 0.001, (q, s, c)
        assert c - s <= 0.010, (q, s, c)  # half the 20 ms step between sleep values


def _check_common(plan: list[dict[str, Any]], results: list[tuple[int, float]], profiles: list[Profile], framework: str) -> None:
    assert _recorded(profiles) == _expected(plan, results)
    statuses = Counter(status for status, _ in results)
    assert statuses[200] >= 200 and statuses[-1] == 3
    fraud = _merged(profiles, "fraud")
    ok_predict = sum(1 for r, (st, _) in zip(plan, results, strict=True) if r["path"] == "/predict" and st == 200)
    assert ok_predict == 40
    amount = fraud.columns["amount"]
    assert amount.count - amount.missing == 40 and fraud.columns["country"].category_counts() == {"DE": 20, "FR": 20}
    assert fraud.outputs["score"].count == 40 and set(fraud.outputs["label"].category_counts()) == {"fraud", "ok"}
    if framework == "fastapi":  # the handler's request.json() raises on malformed JSON: a model call that failed (500)
        assert fraud.calls == 43 and fraud.errors == {"JSONDecodeError": 3}
    else:  # Flask answers 400 on malformed JSON: rejected before any model ran, not a model call
        assert fraud.calls == 40 and fraud.errors == {}
    scorer = _merged(profiles, "scorer")  # @monitor on the handler owns it: the middleware adds no second call
    assert scorer.calls == 20
    boom = _merged(profiles, HTTP, **{"http.route": "/boom"})
    assert boom.errors == {"RuntimeError": 5}
    timed = [t for r, (_, t) in zip(plan, results, strict=True) if r.get("tag") == "timed"]
    route = next(r["route"] for r in plan if r.get("tag") == "timed")
    _check_latency(_merged(profiles, HTTP, **{"http.route": route, "http.response.status_code": "200"}), timed)


def test_uvicorn_fastapi_counts_exactly(tmp_path: Path) -> None:
    """uvicorn + FastAPI (sync and async endpoints): merged profiles count every request exactly, by route and status."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    plan = _plan("fastapi")
    with Receiver() as rx:
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        with server(cmd, port, child_env(rx.url), tmp_path, tmp_path / "uvicorn.log"):
            results = drive(f"http://127.0.0.1:{port}", plan, 8, tmp_path)
        profiles = rx.profiles()
        instances = {res["service.instance.id"] for res, _ in rx.log_records()}
    _check_common(plan, results, profiles, "fastapi")
    assert len(instances) == 1


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_flask_prefork_counts_exactly(tmp_path: Path, preload: bool) -> None:
    """gunicorn + Flask, 4 pre-fork workers recycled by --max-requests: no worker silent, nothing counted twice."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    port = free_port()
    plan = _plan("flask")
    max_requests = 25 if preload else 40
    with Receiver() as rx:
        cmd = [
            sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
            "--max-requests", str(max_requests), "--graceful-timeout", "10", "--log-level", "info",
            *(["--preload"] if preload else []), "flask_app:app",
        ]
        log = tmp_path / "gunicorn.log"
        with server(cmd, port, child_env(rx.url), tmp_path, log):
            results = drive(f"http://127.0.0.1:{port}", plan, 3, tmp_path)
        profiles = rx.profiles()
        instances = {res["service.instance.id"] for res, _ in rx.log_records()}
    _check_common(plan, results, profiles, "flask")
    booted = log.read_text().count("Booting worker")
    assert booted > 4  # workers were recycled
    warmup = _merged(profiles, "warmup")
    if preload:  # one call in the master before the fork: counted once, by the master, never by a worker
        assert warmup.calls == 1
    else:  # every worker imported the app itself: one call each, every one of them delivered
        assert warmup.calls == booted
        assert len(instances) == booted
