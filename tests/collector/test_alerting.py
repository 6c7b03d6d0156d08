"""Alert rules inside a real collector: profiles over real OTLP export, a real webhook receiver and SMTP server.

One collector (evaluator every 0.2 s, 0.2 s grace) runs the whole story, because each step is
only meaningful after the previous one: a drift rule fires once per episode across many
evaluator passes and resolves when traffic is normal again; a calibrated rule learns its
threshold from stored windows; failing and hanging webhooks are retried, time out and are
counted while ingest and the other channels carry on; freshness fires when traffic stops and
resolves when it returns; the scheduled summary reaches e-mail and the webhook; ``/api/alerts``,
``/metrics`` and the dashboard show it all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import needs_chromium, render
from notify_servers import Hooks, SmtpServer

import mlwatch
from mlwatch.collector.alerts_config import load_alerts_config
from mlwatch.collector.config import CollectorConfig

from .conftest import RunningCollector, make_profile

CONFIG = """
grace = 0.2

[channels.hook]
type = "webhook"
url = "{hooks}/ok/${{HOOK_TOKEN}}"
timeout = 5

[channels.failing]
type = "webhook"
url = "{hooks}/fail/x"
retries = 2
backoff = 0.05
timeout = 2

[channels.hanging]
type = "webhook"
url = "{hooks}/hang/x"
retries = 1
backoff = 0.05
timeout = 2

[channels.mail]
type = "email"
host = "127.0.0.1"
port = {smtp}
sender = "mlwatch@example.org"
recipients = ["oncall@example.org"]

[[rules]]
name = "drift"
model = "m-drift"
metric = "drift.psi"
features = ["f0"]
above = 1.0
for_windows = 2
channels = ["hook", "mail"]

[[rules]]
name = "unusual"
model = "m-drift"
metric = "drift.ks"
features = "all"
calibrate = {{ k = 4, windows = 3 }}
channels = []

[[rules]]
name = "traffic"
model = "m-drift"
metric = "calls"
above = 0
channels = ["failing", "hanging"]

[[freshness]]
name = "quiet"
model = "m-fresh"
windows = 3
channels = ["hook"]

[summary]
interval = 1
period = "1h"
title = "weekly health"
channels = ["mail", "hook"]
"""


def _wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningCollector, Hooks, SmtpServer]]:
    """A collector with the alerts file above, its webhook receiver and SMTP server."""
    monkeypatch.setenv("HOOK_TOKEN", "tok-secret-42")
    with Hooks(hang=4.0) as hooks, SmtpServer() as smtp:
        path = tmp_path / "alerts.toml"
        path.write_text(CONFIG.format(hooks=hooks.url(""), smtp=smtp.port))
        config = CollectorConfig(db=str(tmp_path / "c.db"), evaluate_interval=0.2, alerts=load_alerts_config(str(path)))
        with RunningCollector(config) as running:
            yield running, hooks, smtp


def test_rules_channels_freshness_and_summary_in_a_live_collector(setup: tuple[RunningCollector, Hooks, SmtpServer], tmp_path: Path) -> None:
    """Episodes fire once and resolve; failures are retried, time out, are counted and stall nothing; freshness; summary."""
    running, hooks, smtp = setup
    exporter = mlwatch.OtlpExporter(running.url, metrics=False, service_name="alerting-test")
    client = running.client()
    ok = "/ok/tok-secret-42"

    def alerts(model: str | None = None) -> dict[str, Any]:
        resp = client.get("/api/alerts", params={"model": model} if model else {})
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        return body

    def send(*profiles: mlwatch.Profile) -> float:
        t0 = time.perf_counter()
        exporter.export(list(profiles))
        assert exporter.force_flush(30)
        return time.perf_counter() - t0

    def evaluated(model: str, start: float) -> bool:
        return alerts()["evaluated"].get(model) == start

    def hook_alerts(rule: str) -> list[tuple[str, float]]:
        return [(a["state"], a["window_end"]) for body in hooks.bodies(ok) for a in body.get("alerts", []) if a["rule"] == rule]

    try:
        ref = make_profile(0.0, model="m-drift", n=2000, seed=99)
        ref.window_start = ref.window_end = None
        assert client.put("/api/models/m-drift/reference", content=ref.to_bytes()).status_code == 201
        base = math.floor(time.time()) - 600.0  # one-second windows, complete long ago: no waiting for real time
        shifts = [0, 0, 0, 4, 4, 4, 4, 0, 0, 4, 4]

        def window(i: int) -> mlwatch.Profile:
            p = make_profile(base + i, model="m-drift", shift=shifts[i], n=400, seed=i, width=1.0)
            p.calls = 400
            return p

        # Normal traffic; the "traffic" rule fires at once on the failing and the hanging channel.
        send(window(0), window(1), window(2))
        _wait("the first windows evaluated", lambda: evaluated("m-drift", base + 2))
        _wait("the hanging webhook reached", lambda: hooks.count("/hang/x") >= 1)
        # Ingest and the other channels go on while a webhook hangs: drift fires on the second drifted window.
        for i in (3, 4):
            assert send(window(i)) < 2.0
            _wait(f"window {i} evaluated", lambda i=i: evaluated("m-drift", base + i))
        _wait("the drift alert delivered", lambda: hook_alerts("drift"))
        first_hang = hooks.times("/hang/x")[0]
        drift_delivered = min(t for t, b in zip(hooks.received_at[ok], hooks.bodies(ok), strict=True)
                              if any(a["rule"] == "drift" for a in b.get("alerts", [])))
        assert drift_delivered < first_hang + 2 * 2.0  # delivered while the hanging channel was still trying
        # More drifted windows over several passes: still one alert; normal windows resolve it; a new episode fires again.
        for i in (5, 6, 7, 8, 9, 10):
            send(window(i))
            _wait(f"window {i} evaluated", lambda i=i: evaluated("m-drift", base + i))
        _wait("three drift events delivered", lambda: len(hook_alerts("drift")) == 3)
        time.sleep(0.6)  # a few more evaluator passes over nothing new
        assert hook_alerts("drift") == [("firing", base + 5), ("resolved", base + 8), ("firing", base + 11)]
        body = alerts("m-drift")
        drift_events = [(e["state"], e["window_end"]) for e in reversed(body["events"]) if e["rule"] == "drift"]
        assert drift_events == [("firing", base + 5), ("resolved", base + 8), ("firing", base + 11)]
        unusual = [(e["state"], e["feature"], e["window_end"]) for e in reversed(body["events"]) if e["rule"] == "unusual"]
        assert unusual == [("firing", "f0", base + 4), ("resolved", "f0", base + 8), ("firing", "f0", base + 10)]
        calibration = next(r for r in body["rules"] if r["name"] == "unusual")["calibration"]["models"]["m-drift"]
        assert calibration["status"] == "calibrated" and calibration["windows"] == 3
        assert calibration["against"] == "uploaded reference" and set(calibration["thresholds"]) == {"f0"}  # no KS for "c"
        assert {(a["rule"], a["feature"]) for a in body["firing"]} == {("drift", "f0"), ("unusual", "f0"), ("traffic", None)}
        mails = [m for m in smtp.parsed() if m["Subject"] == "[mlwatch] 1 alert(s) firing"]
        assert len(mails) == 2 and "drift fired: m-drift feature 'f0' drift.psi=" in mails[0].get_payload()

        # The failing webhook was tried 1 + 2 times, the hanging one timed out twice; both counted, nothing raised.
        _wait("both bad channels counted", lambda: alerts()["channels"]["hanging"]["failed"] == 1)
        channels = alerts()["channels"]
        assert channels["failing"]["failed"] == 1 and hooks.count("/fail/x") == 3
        assert channels["failing"]["last_error"] == "RuntimeError: webhook answered HTTP 500"
        assert channels["hanging"]["last_error"].startswith("ReadTimeout") and hooks.count("/hang/x") == 2
        assert channels["hook"]["failed"] == 0 and channels["hook"]["sent"] >= 3
        assert "tok-secret-42" not in str(alerts())

        # Freshness: traffic stops for 3 windows, fires once; traffic returns, it resolves.
        width = 0.4
        now = time.time()
        send(*(make_profile(now - width * (2 - i), model="m-fresh", n=50, seed=i, width=width) for i in range(2)))
        fresh = _wait("the freshness alert", lambda: [e for e in alerts("m-fresh")["events"] if e["rule"] == "quiet"])
        assert [e["state"] for e in fresh] == ["firing"] and fresh[0]["value"] >= 3
        assert time.time() - now >= 3 * width
        now = time.time()
        send(make_profile(now - width, model="m-fresh", n=50, seed=7, width=width))
        _wait("freshness resolved", lambda: alerts("m-fresh")["events"][0]["state"] == "resolved")
        assert [e["state"] for e in alerts("m-fresh")["events"]] == ["resolved", "firing"]

        # The scheduled summary (every second here) reaches e-mail and the webhook.
        summaries = _wait("a summary e-mail with every window",
                          lambda: [m for m in smtp.parsed() if m["Subject"] == "weekly health" and "- m-drift: 4400 calls" in m.get_payload()])
        text = summaries[-1].get_payload(decode=True).decode()
        assert "- m-fresh: " in text and "firing alerts: " in text and "drift fired: m-drift feature 'f0' drift.psi=" in text
        _wait("a summary webhook", lambda: [b for b in hooks.bodies(ok) if b["text"].startswith("*weekly health*")])

        # Prometheus: a firing gauge per rule, model and feature; deliveries by channel and outcome.
        metrics = client.get("/metrics").text
        assert 'mlwatch_alert_firing{feature="f0",model="m-drift",rule="drift"} 1.0' in metrics
        assert 'mlwatch_alert_firing{feature="",model="m-fresh",rule="quiet"} 0.0' in metrics
        assert 'mlwatch_collector_alert_notifications_total{channel="failing",outcome="failed"} 1.0' in metrics
        assert "mlwatch_collector_alert_evaluation_errors_total 0.0" in metrics
        assert alerts("nope") ["firing"] == [] and alerts("nope")["events"] == []
    finally:
        exporter.shutdown(5)
        client.close()


@needs_chromium
def test_dashboard_shows_firing_alerts(tmp_path: Path) -> None:
    """The dashboard's "Firing alerts" panel lists what /api/alerts reports, as text."""
    path = tmp_path / "alerts.toml"
    path.write_text('grace = 0\n[[rules]]\nname = "busy <b>"\nmetric = "calls"\nabove = 10\n')
    config = CollectorConfig(db=str(tmp_path / "c.db"), evaluate_interval=0.2, alerts=load_alerts_config(str(path)))
    with RunningCollector(config) as running, running.client() as client:
        p = make_profile(math.floor(time.time()) - 120, model="m-dash", n=50)
        p.calls = 50
        from .conftest import PROTOBUF_HEADERS, otlp_request

        assert client.post("/v1/logs", content=otlp_request([p.to_bytes()]), headers=PROTOBUF_HEADERS).status_code == 200
        _wait("the alert", lambda: client.get("/api/alerts").json()["firing"])
        page = render(f"{running.url}/", budget_ms=3000)
    assert page.console == []
    panel = page.dom.split('id="alerts-section"', 1)[1].split("</section>", 1)[0]
    assert "hidden" not in panel.split(">", 1)[0] and '<tr class="alert-row"><td>busy &lt;b&gt;</td><td>m-dash</td>' in panel


def test_api_alerts_without_rules(client: httpx.Client) -> None:
    """Without --alerts, /api/alerts answers that nothing is configured."""
    assert client.get("/api/alerts").json() == {"configured": False, "firing": [], "events": []}
