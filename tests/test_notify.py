"""Notifiers against real local servers: a webhook receiver (with failures and retries) and an SMTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from notify_servers import SmtpServer

import mlwatch
from mlwatch._health import HEALTH
from mlwatch.alerts import Alert, AlertRule, Alerts
from mlwatch.notify import Email, SummarySchedule, Webhook, summary_text


class _Hook(BaseHTTPRequestHandler):
    fail_first = 0
    received: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            type(self).received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A webhook receiver on loopback, stopped after the test."""
    _Hook.received = []
    _Hook.fail_first = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A local SMTP server, stopped after the test."""
    with SmtpServer() as server:
        yield server


def _alert() -> Alert:
    return Alert("errors", "fraud", "error_rate", "firing", 0.5, 0.2, message="errors fired: fraud error_rate=0.5")


def test_webhook_slack_payload_with_retries(hook_url: str) -> None:
    """The webhook retries 5xx answers and delivers Slack-compatible JSON (``text``) with the alerts."""
    _Hook.fail_first = 2
    Webhook(hook_url, retries=3, backoff=0.01, timeout=2.0).send([_alert()])
    assert len(_Hook.received) == 1
    payload = _Hook.received[0]
    assert "errors fired" in payload["text"] and payload["alerts"][0]["rule"] == "errors"


def test_webhook_failure_counted_by_alerts(hook_url: str) -> None:
    """A webhook that keeps failing is counted in health; the rule still fires its callback."""
    HEALTH.reset()
    _Hook.fail_first = 10
    fired: list[Alert] = []
    alerts = Alerts([AlertRule("calls", metric="calls", above=0, callback=fired.append)],
                    notifiers=[Webhook(hook_url, retries=1, backoff=0.01, timeout=2.0)])
    p = mlwatch.Profile("fraud", window_start=0.0, window_end=60.0)
    p.calls = 3
    alerts.export([p])
    assert len(fired) == 1 and mlwatch.health()["internal_errors"]["alert_notify"] == 1


def test_webhook_unreachable_times_out() -> None:
    """An unreachable webhook raises after its retries (the caller counts it)."""
    with pytest.raises(Exception):  # noqa: B017, PT011 - httpx's connect error, whatever its exact type
        Webhook("http://127.0.0.1:9/hook", retries=1, backoff=0.01, timeout=0.5).send([_alert()])


def test_email_over_local_smtp(smtp: SmtpServer) -> None:
    """Alerts arrive as e-mail through a real SMTP conversation."""
    Email("127.0.0.1", "mlwatch@example.org", ["oncall@example.org"], port=smtp.port, timeout=5.0).send([_alert()])
    assert len(smtp.messages) == 1
    msg = smtp.parsed()[0]
    assert msg["Subject"] == "[mlwatch] 1 alert(s) firing" and msg["To"] == "oncall@example.org"
    assert "errors fired" in msg.get_payload()


def test_scheduled_summary(smtp: SmtpServer, hook_url: str) -> None:
    """The scheduled summary sends every model's health to every channel."""
    p = mlwatch.Profile("fraud", window_start=0.0, window_end=60.0)
    p.calls = 100
    p.errors["ValueError"] = 2
    email = Email("127.0.0.1", "mlwatch@example.org", ["team@example.org"], port=smtp.port, timeout=5.0)
    schedule = SummarySchedule(lambda: summary_text([p]), [email, Webhook(hook_url, timeout=2.0)], interval=0.05).start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if smtp.messages and _Hook.received:
                break
            deadline.wait(0.05)
    finally:
        schedule.stop()
    assert "fraud: 100 calls, error rate 2.00%" in _Hook.received[0]["text"]
    assert b"fraud: 100 calls" in smtp.messages[0]


def test_bad_notifier_config() -> None:
    """Wrong notifier settings raise ConfigError when built."""
    with pytest.raises(mlwatch.ConfigError):
        Webhook("ftp://x")
    with pytest.raises(mlwatch.ConfigError):
        Email("h", "a@b", [])
