"""Where alerts go: webhooks (Slack-compatible JSON, via httpx), e-mail over SMTP, a scheduled summary.

Every notifier has ``send(alerts)`` (used by `mlwatch.alerts.Alerts`) and ``send_text(subject,
text)`` (used by the summary). They may raise; `Alerts` and `SummarySchedule` count failures in
`mlwatch.health()` and never let them reach the serving path.

- `Webhook`: POST ``{"text": ..., "alerts": [...]}`` (Slack and most incident tools read
  ``text``), with a timeout and retries with exponential backoff on network errors and 5xx/429.
- `Email`: one plain-text message per batch through `smtplib` (optional STARTTLS and login).
- `SummarySchedule`: a daemon thread that every `interval` seconds (e.g. weekly) builds a text
  (`summary_text` of every model's recent profiles, or any callable) and sends it; it loops on
  `Event.wait`, so `stop()` ends it at once.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx

from mlwatch._errors import ConfigError
from mlwatch._health import HEALTH
from mlwatch.alerts import Alert
from mlwatch.profile import Profile

__all__ = ["Email", "SummarySchedule", "Webhook", "alerts_text", "summary_text"]


def alerts_text(alerts: Sequence[Alert]) -> str:
    """One line per alert, firing first."""
    ordered = sorted(alerts, key=lambda a: a.state != "firing")
    return "\n".join((":rotating_light: " if a.state == "firing" else ":white_check_mark: ") + a.message for a in ordered)


@dataclass
class Webhook:
    """POST alerts as Slack-compatible JSON to `url`, with `retries` retries and a per-try `timeout`."""

    url: str
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must be an http(s) URL, got {self.url!r}")
        if type(self.retries) is not int or self.retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {self.retries!r}")
        if type(self.timeout) not in (int, float) or self.timeout <= 0:
            raise ConfigError(f"timeout must be seconds > 0, got {self.timeout!r}")

    def send(self, alerts: Sequence[Alert]) -> None:
        self.post({"text": alerts_text(alerts), "alerts": [a.to_dict() for a in alerts]})

    def send_text(self, subject: str, text: str) -> None:
        self.post({"text": f"*{subject}*\n{text}"})

    def post(self, payload: Mapping[str, Any]) -> None:
        """Deliver one JSON payload; raises after the last retry fails."""
        last: Exception | None = None
        with httpx.Client(timeout=self.timeout, headers=dict(self.headers)) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    resp = client.post(self.url, json=payload)
                except httpx.HTTPError as exc:
                    last = exc
                    continue
                if resp.status_code < 300:
                    return
                last = RuntimeError(f"webhook answered HTTP {resp.status_code}")
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # a client error will not fix itself
        assert last is not None
        raise last


@dataclass
class Email:
    """Send alerts as plain-text e-mail through an SMTP server."""

    host: str
    sender: str
    recipients: Sequence[str]
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.recipients or isinstance(self.recipients, str):
            raise ConfigError("recipients must be a non-empty list of addresses")
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise ConfigError(f"port must be a TCP port, got {self.port!r}")

    def send(self, alerts: Sequence[Alert]) -> None:
        firing = sum(a.state == "firing" for a in alerts)
        subject = f"[mlwatch] {firing} alert(s) firing" if firing else "[mlwatch] alerts resolved"
        self.send_text(subject, alerts_text(alerts))

    def send_text(self, subject: str, text: str) -> None:
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg.set_content(text)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username is not None:
                smtp.login(self.username, self.password or "")
            smtp.send_message(msg)


def summary_text(profiles: Iterable[Profile], *, title: str = "mlwatch summary") -> str:
    """Every model's health over these profiles: calls, error rate, p95 latency, key quality metrics."""
    from mlwatch.profile import merge

    by_model: dict[str, list[Profile]] = {}
    for p in profiles:
        by_model.setdefault(p.model, []).append(p)
    lines = [title]
    for model, ps in sorted(by_model.items()):
        m = merge(ps)
        parts = [f"{m.calls} calls", f"error rate {m.error_count / m.calls:.2%}" if m.calls else "no traffic"]
        if m.latency is not None and not m.latency.is_empty():
            parts.append(f"p95 latency {m.latency.quantile(0.95) * 1000:.1f} ms")
        if m.quality is not None:
            q = m.quality.to_dict()
            parts += [f"{name} {q[name]:.4g}" for name in ("n_labeled", "accuracy", "roc_auc", "mae", "rmse", "ndcg") if name in q]
        lines.append(f"- {model}: " + ", ".join(parts))
    if len(lines) == 1:
        lines.append("no models reported")
    return "\n".join(lines)


class SummarySchedule:
    """Send `build()`'s text to every notifier every `interval` seconds, from a daemon thread."""

    def __init__(self, build: Callable[[], str], notifiers: Sequence[Any], *, interval: float = 7 * 86_400.0,
                 subject: str = "mlwatch summary") -> None:
        if type(interval) not in (int, float) or interval <= 0:
            raise ConfigError(f"interval must be seconds > 0, got {interval!r}")
        self.build = build
        self.notifiers = list(notifiers)
        self.interval = float(interval)
        self.subject = subject
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SummarySchedule:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlwatch-summary", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.send_now()

    def send_now(self) -> None:
        """Build and send one summary now; failures are counted, never raised."""
        try:
            text = self.build()
        except Exception as exc:
            HEALTH.count_error("summary", exc)
            return
        for n in self.notifiers:
            try:
                n.send_text(self.subject, text)
            except Exception as exc:
                HEALTH.count_error("alert_notify", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
