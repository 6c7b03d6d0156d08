"""The integrations' public surface: every module documents itself and exports a sorted, real __all__."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

MODULES = ["asgi", "wsgi", "_http_metrics", "_body", "fastapi", "flask"]


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_and_sorted_all(name: str) -> None:
    """Each module has a docstring and an __all__ that is sorted and names real attributes."""
    if name in ("fastapi", "flask"):
        pytest.importorskip("starlette" if name == "fastapi" else name)
    module = importlib.import_module(f"mlwatch.integrations.{name}")
    assert module.__doc__ and module.__doc__.strip()
    exported = list(module.__all__)
    assert exported == sorted(exported)
    assert [n for n in exported if not hasattr(module, n)] == []


def test_parse_wrk_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP benchmark reads wrk's --latency report (seconds and requests per second)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from benchmarks.bench_http import parse_wrk

    report = """Running 5s test @ http://127.0.0.1:1/predict
  1 threads and 4 connections
  Latency Distribution
     50%  812.00us
     75%    1.02ms
     90%    1.31ms
     99%    3.20ms
  11111 requests in 5.00s, 1.80MB read
Requests/sec:   2222.20
Transfer/sec:    368.90KB
"""
    got = parse_wrk(report)
    assert got["p50"] == pytest.approx(812e-6) and got["p99"] == pytest.approx(3.2e-3)
    assert got["rps"] == pytest.approx(2222.2) and got["errors"] == 0.0
    with pytest.raises(RuntimeError, match="failed requests"):  # a benchmark of error answers is refused
        parse_wrk(report.replace("Requests/sec:", "  Non-2xx or 3xx responses: 11111\nRequests/sec:"))


def test_http_benchmark_apps_answer_the_benchmark_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The three apps bench_http.py measures answer its request 200 with the model's answer (they once answered 422)."""
    pytest.importorskip("opentelemetry.instrumentation.fastapi")
    import asyncio

    import httpx

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    monkeypatch.setenv("BENCH_MLWATCH_DIR", str(tmp_path))
    from benchmarks import bench_http

    async def post(app: object) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:  # type: ignore[arg-type]
            return await client.post("/predict", json=bench_http.BODY)

    from mlwatch._runtime import RUNTIME

    previous = RUNTIME.settings
    try:
        for create in (bench_http.create_plain, bench_http.create_mlwatch, bench_http.create_otel):
            answer = asyncio.run(post(create()))
            assert (answer.status_code, answer.json()) == (200, {"score": 0.425, "label": "ok"}), create.__name__
    finally:
        RUNTIME.flush()
        RUNTIME.configure(previous)
        RUNTIME.restart()
