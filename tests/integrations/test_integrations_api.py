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
