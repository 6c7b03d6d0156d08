"""The collector's dashboard at `/`: served without a token, and drawn by a real browser from the live API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from browser import needs_chromium, render

from mlwatch.collector.config import CollectorConfig

from .conftest import PROTOBUF_HEADERS, RunningCollector, make_profile, otlp_request

MODEL = 'fraud<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """A collector holding a reference and 12 one-minute windows of a model, the last 4 shifted."""
    db = tmp_path_factory.mktemp("dashboard") / "c.db"
    with RunningCollector(CollectorConfig(db=str(db), evaluate_interval=0)) as running, running.client() as client:
        rng = np.random.default_rng(3)
        windows = []
        for i in range(12):
            p = make_profile(1_800_000_000.0 + 60 * i, model=MODEL, shift=3.0 if i >= 8 else 0.0, n=1500, features=3, seed=i)
            p.calls = 1500
            p.errors = {"TimeoutError": i % 3}
            p.record_latency(rng.gamma(2.0, 0.003, 1500))
            windows.append(p.to_bytes())
        assert client.post("/v1/logs", content=otlp_request(windows), headers=PROTOBUF_HEADERS).status_code == 200
        ref = make_profile(0.0, model=MODEL, n=3000, features=3, seed=99)
        ref.window_start = ref.window_end = None
        quoted = httpx.URL("/api/models/").join(MODEL.replace("/", "%2F")).raw_path.decode()
        assert client.put(f"{quoted}/reference", content=ref.to_bytes()).status_code == 201
        yield running


def test_dashboard_page_is_served(collector: RunningCollector) -> None:
    """`GET /` answers an HTML page that loads nothing from elsewhere."""
    with collector.client() as client:
        resp = client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert not re.search(r'(src|href)="(https?:)?//', resp.text)


@needs_chromium
def test_dashboard_in_chromium(collector: RunningCollector, tmp_path: Path) -> None:
    """Chromium draws the live dashboard: no console errors, charts drawn, drifted features as the API says."""
    with collector.client() as client:
        models = client.get("/api/models").json()["models"]
        quoted = httpx.URL("/api/models/").join(MODEL.replace("/", "%2F")).raw_path.decode()
        latest = client.get(f"{quoted}/windows").json()
        found = client.get(f"{quoted}/drift", params={"start": latest["end"] - 3600, "end": latest["end"]}).json()
    assert [m["model"] for m in models] == [MODEL]
    expected = found["drift"]["drifted_columns"]
    assert expected  # the shifted windows drift against the uploaded reference
    shot = tmp_path / "dashboard.png"
    page = render(f"{collector.url}/", screenshot=shot, size="1400,1200", budget_ms=8000)
    assert page.console == []
    assert 'data-ready="1"' in page.dom
    assert "<img" not in page.dom  # the model name is text, never markup
    drifted = re.findall(r'<tr class="feature-row drifted" data-feature="([^"]*)" data-drifted="true"', page.dom)
    assert sorted(drifted) == sorted(expected)
    for chart in ("chart-drift", "chart-quality", "chart-calls", "chart-errors", "chart-latency"):
        svg = page.dom.split(f'id="{chart}"', 1)[1].split("</svg>", 1)[0]
        assert "<rect" in svg or "<circle" in svg, chart
    latency = page.dom.split('id="chart-latency"', 1)[1].split("</svg>", 1)[0]
    assert re.findall(r'<polyline class="line" data-series="(p\d+)"', latency) == ["p50", "p99"]  # both lines, one point per window
    assert latency.count("<circle") == 24
    assert shot.stat().st_size > 20_000


def test_windows_with_latency(collector: RunningCollector) -> None:
    """`/windows?latency=true` adds each window's latency quantiles: those of the window's merged profile."""
    quoted = httpx.URL("/api/models/").join(MODEL.replace("/", "%2F")).raw_path.decode()
    with collector.client() as client:
        plain = client.get(f"{quoted}/windows", params={"start": 0}).json()["windows"]
        timed = client.get(f"{quoted}/windows", params={"start": 0, "latency": "true"}).json()["windows"]
        one = timed[5]
        summary = client.get(f"{quoted}/profile", params={"start": one["window_start"], "end": one["window_end"]}).json()["profile"]
    assert len(timed) == 12 and all("latency_seconds" not in w for w in plain)
    assert [{k: v for k, v in w.items() if k != "latency_seconds"} for w in timed] == plain
    for w in timed:
        lat = w["latency_seconds"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 0.2
    assert one["latency_seconds"] == summary["latency_seconds"]


def test_report_from_collector_url(collector: RunningCollector, tmp_path: Path) -> None:
    """`mlwatch report --current <collector URL>` reads the model's windows over the API."""
    from mlwatch.cli import main
    from mlwatch.report import load_profiles

    profiles = load_profiles(collector.url, model=MODEL)
    assert len(profiles) == 12 and sum(p.calls for p in profiles) == 18_000
    ref = make_profile(0.0, model=MODEL, n=3000, features=3, seed=99)
    ref.save(tmp_path / "ref.mlw")
    out = tmp_path / "r.html"
    assert main(["report", "--reference", str(tmp_path / "ref.mlw"), "--current", collector.url, "-o", str(out), "-q"]) == 0
    page = out.read_text()
    assert "12 windows" in page and "<img src=x" not in page


@needs_chromium
def test_dashboard_without_models_in_chromium(tmp_path: Path) -> None:
    """On an empty collector the dashboard says how to send data, without console errors."""
    with RunningCollector(CollectorConfig(db=str(tmp_path / "empty.db"), evaluate_interval=0)) as running:
        page = render(f"{running.url}/", budget_ms=4000)
    assert page.console == []
    assert 'data-ready="empty"' in page.dom and "No models yet" in page.dom


@needs_chromium
def test_dashboard_caps_per_window_series(tmp_path: Path) -> None:
    """A range with more windows than one API request allows draws the latest 240, without an error (latency too)."""
    with RunningCollector(CollectorConfig(db=str(tmp_path / "many.db"), evaluate_interval=0)) as running, running.client() as client:
        windows = [make_profile(1_800_000_000.0 + 60 * i, model="many", n=40, seed=i).to_bytes() for i in range(260)]
        assert client.post("/v1/logs", content=otlp_request(windows), headers=PROTOBUF_HEADERS).status_code == 200
        assert client.put("/api/models/many/reference", content=windows[0]).status_code == 201
        too_many = client.get("/api/models/many/windows", params={"start": 0, "latency": "true"})
        page = render(f"{running.url}/?model=many&range=21600", budget_ms=15000)
    assert too_many.status_code == 400 and too_many.json()["error"] == "too_many_windows"  # latency is capped like per-window analysis
    assert page.console == []
    assert 'data-ready="1"' in page.dom
    message = page.dom.split('id="message">', 1)[1].split("</div>", 1)[0]
    assert message == ""
    drift_chart = page.dom.split('id="chart-drift"', 1)[1].split("</svg>", 1)[0]
    assert drift_chart.count("<circle") == 240
