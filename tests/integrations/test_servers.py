"""Under real servers on loopback: uvicorn + FastAPI, gunicorn + Flask (4 pre-fork workers, recycling).

Traffic comes from httpx in a separate process (driver.py). Every server exports over real OTLP/HTTP,
to the loopback receiver of tests/otlp_receiver.py (which keeps each request, so per-process
details can be checked) or to a real ``mlwatch collector`` (which merges and stores), and is
stopped with SIGTERM, so each process's last windows leave at exit (uvicorn: the ASGI lifespan
shutdown; gunicorn workers, recycled or stopped: mlwatch's exit flush). The merged profiles must
count exactly the requests sent, per method, route template and status, and their latency
quantiles must match an independent server-side timer and sit below what the client saw.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from http_servers import APPS, child_env, collector, drive, driver_results, free_port, server, start_driver
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
    plan += [
        {"path": f"{timed_path}/{i}?sleep_ms={SLEEPS_MS[i % 5]}", "route": timed_route, "tag": "timed", "sleep_ms": SLEEPS_MS[i % 5]}
        for i in range(100)
    ]
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
    random.Random(7).shuffle(plan)  # every kind of request meets the same conditions
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


def _check_latency(server: Profile, timed: list[tuple[int, float]], independent: list[float]) -> None:
    """The recorded latency quantiles match an independent server-side timer, and sit between the work done and what the client saw.

    - against a timer wrapped around the instrumented app (it also times mlwatch's own work,
      microseconds): never below it and within 10 ms of it at every quantile. The sketch is exact
      at this size; the slack is for the gaps between the two timers' clock reads, which on a
      shared 2-core machine include waits for the GIL (5 ms switch interval, sync endpoints run
      in threads) and for a CPU; it is half the 20 ms step between designed latencies, so a
      sketch off by one step fails;
    - against the client: never above its quantiles (the client adds the network and itself) and
      never below the designed sleep's quantile (the handler's work is inside the measurement).
    """
    assert server.latency is not None and server.latency.n == len(timed) == len(independent)
    client = [t for _, t in timed]
    sleeps = [ms / 1000 for ms, _ in timed]
    for q in QUANTILES:
        s = float(server.latency.quantile(q))
        w, c, floor = _quantile(independent, q), _quantile(client, q), _quantile(sleeps, q)
        assert w - 0.010 <= s <= w + 0.0001, (q, s, w)
        assert floor <= s <= c + 0.001, (q, floor, s, c)


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile as DataSketches defines it by default: the smallest value whose rank exceeds q."""
    ordered = np.sort(np.asarray(values))
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _timings(path: Path, prefix: str) -> list[float]:
    """Seconds the outer timer measured for requests whose path starts with `prefix`."""
    out = []
    for line in path.read_text().splitlines():
        p, ns = line.rsplit(" ", 1)
        if p.startswith(prefix + "/"):
            out.append(int(ns) / 1e9)
    return out


def _check_common(plan: list[dict[str, Any]], results: list[tuple[int, float]], profiles: list[Profile], framework: str, timings: Path) -> None:
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
    timed = [(r["sleep_ms"], t) for r, (_, t) in zip(plan, results, strict=True) if r.get("tag") == "timed"]
    route = next(r["route"] for r in plan if r.get("tag") == "timed")
    prefix = route.split("/{")[0].split("/<")[0]
    _check_latency(_merged(profiles, HTTP, **{"http.route": route, "http.response.status_code": "200"}), timed, _timings(timings, prefix))


def test_uvicorn_fastapi_counts_exactly(tmp_path: Path) -> None:
    """uvicorn + FastAPI (sync and async endpoints): merged profiles count every request exactly, by route and status."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    plan = _plan("fastapi")
    with Receiver() as rx:
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        env = {**child_env(rx.url), "MLWATCH_TEST_TIMINGS": str(tmp_path / "timings.txt")}
        with server(cmd, port, env, tmp_path, tmp_path / "uvicorn.log"):
            results = drive(f"http://127.0.0.1:{port}", plan, 8, tmp_path)
        profiles = rx.profiles()
        instances = {res["service.instance.id"] for res, _ in rx.log_records()}
    _check_common(plan, results, profiles, "fastapi", tmp_path / "timings.txt")
    assert len(instances) == 1


_SIGNALLED = [
    pytest.param("uvicorn", signal.SIGTERM, id="uvicorn-SIGTERM"),
    pytest.param("uvicorn", signal.SIGINT, id="uvicorn-SIGINT"),
    pytest.param("gunicorn-uvicorn-workers", signal.SIGTERM, id="gunicorn-uvicorn-workers-SIGTERM"),
]


@pytest.mark.parametrize(("kind", "sig"), _SIGNALLED)
def test_asgi_server_stopped_by_a_signal_loses_nothing(tmp_path: Path, kind: str, sig: signal.Signals) -> None:
    """uvicorn (alone, or as gunicorn's workers) stopped by a signal with requests in flight: they finish, and
    every request answered is exported exactly once, although on SIGTERM uvicorn ends its process by
    re-raising the signal, so that no atexit handler runs (the windows leave at the lifespan shutdown)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    if kind == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        pytest.importorskip("gunicorn")
        pytest.importorskip("uvicorn.workers")
        cmd = [
            sys.executable, "-m", "gunicorn", "--worker-class", "uvicorn.workers.UvicornWorker", "--workers", "2",
            "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS), "--graceful-timeout", "20", "fastapi_app:app",
        ]
    starts = tmp_path / "starts.txt"
    fast = [{"path": f"/items/{i}"} for i in range(40)]
    slow = [{"path": f"/async/{i}?sleep_ms=1500"} for i in range(6)]
    with Receiver() as rx:
        env = {
            **child_env(rx.url), "MLWATCH_TEST_TIMINGS": str(tmp_path / "timings.txt"), "MLWATCH_TEST_STARTS": str(starts),
            "XDG_RUNTIME_DIR": str(tmp_path),
        }
        base = f"http://127.0.0.1:{port}"
        with server(cmd, port, env, tmp_path, tmp_path / "server.log") as proc:
            answered = drive(base, fast, 4, tmp_path)
            in_flight = start_driver(base, slow, len(slow), tmp_path)
            deadline = time.monotonic() + 30
            while sum(line.startswith("/async/") for line in _lines(starts)) < len(slow):  # every slow request is being handled
                assert time.monotonic() < deadline and in_flight.poll() is None, "the slow requests never arrived"
                time.sleep(0.02)
            proc.send_signal(sig)
            answered += driver_results(in_flight)
            proc.wait(60)
        profiles = rx.profiles()
    assert [status for status, _ in answered] == [200] * (len(fast) + len(slow))
    if kind == "uvicorn" and sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # ended by its own re-raised signal: no atexit handler ran
    assert _recorded(profiles) == {("GET", "/items/{item_id}", "200"): len(fast), ("GET", "/async/{item_id}", "200"): len(slow)}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _gunicorn(port: int, preload: bool, max_requests: int) -> list[str]:
    """gunicorn with 4 sync workers (its control socket, where it has one, goes to $XDG_RUNTIME_DIR: the test's own)."""
    return [
        sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
        "--max-requests", str(max_requests), "--graceful-timeout", "10", "--log-level", "info",
        *(["--preload"] if preload else []), "flask_app:app",
    ]


def test_gunicorn_flask_prefork_counts_exactly(tmp_path: Path) -> None:
    """gunicorn + Flask, 4 pre-fork workers each importing the app, recycled by --max-requests: every worker delivers, exactly."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    port = free_port()
    plan = _plan("flask")
    with Receiver() as rx:
        log = tmp_path / "gunicorn.log"
        env = {**child_env(rx.url), "MLWATCH_TEST_TIMINGS": str(tmp_path / "timings.txt"), "XDG_RUNTIME_DIR": str(tmp_path)}
        with server(_gunicorn(port, preload=False, max_requests=40), port, env, tmp_path, log):
            results = drive(f"http://127.0.0.1:{port}", plan, 3, tmp_path)
        profiles = rx.profiles()
        instances = {res["service.instance.id"] for res, _ in rx.log_records()}
    _check_common(plan, results, profiles, "flask", tmp_path / "timings.txt")
    booted = log.read_text().count("Booting worker")
    assert booted > 4  # workers were recycled
    # every worker imported the app itself and made one warm-up call: each delivered it, as itself
    assert _merged(profiles, "warmup").calls == booted
    assert len(instances) == booted


def test_gunicorn_preload_into_the_mlwatch_collector(tmp_path: Path) -> None:
    """gunicorn --preload (4 workers forked from a master that already recorded a call), recycled often, into the real collector: exact merged counts."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    pytest.importorskip("mlwatch.collector.server")
    port = free_port()
    plan = _plan("flask")
    with collector(tmp_path) as url:
        log = tmp_path / "gunicorn.log"
        env = {**child_env(url), "MLWATCH_TEST_TIMINGS": str(tmp_path / "timings.txt"), "XDG_RUNTIME_DIR": str(tmp_path)}
        with server(_gunicorn(port, preload=True, max_requests=25), port, env, tmp_path, log):
            results = drive(f"http://127.0.0.1:{port}", plan, 3, tmp_path)
        profiles = [_from_collector(url, HTTP, segment) for segment in _segments(_expected(plan, results))]
        profiles += [_from_collector(url, model) for model in ("fraud", "scorer", "warmup")]
    _check_common(plan, results, profiles, "flask", tmp_path / "timings.txt")
    assert log.read_text().count("Booting worker") >= 8  # workers were recycled, more than once each
    # one call in the master before the fork: counted once, by the master, never again by a worker
    assert _merged(profiles, "warmup").calls == 1


def _segments(expected: Counter[tuple[str, str, str]]) -> list[str]:
    """The collector's segment keys (``k=v`` sorted by key) of the expected (method, route, status); /boom's requests raised."""
    out = []
    for method, route, status in expected:
        segment = {"http.request.method": method, "http.route": route, "http.response.status_code": status, "url.scheme": "http"}
        if route == "/boom":
            segment["error.type"] = "RuntimeError"
        out.append(",".join(f"{k}={v}" for k, v in sorted(segment.items())))
    return out


def _from_collector(url: str, model: str, segment: str | None = None) -> Profile:
    """The collector's merge of every window of `model` (one segment, or all), as a profile."""
    params: dict[str, Any] = {"format": "mlw", "start": 0, "end": 4_000_000_000}
    if segment is not None:
        params["segment"] = segment
    r = httpx.get(f"{url}/api/models/{model}/profile", params=params, timeout=30)
    assert r.status_code == 200, (model, segment, r.text)
    return Profile.from_bytes(r.content)
