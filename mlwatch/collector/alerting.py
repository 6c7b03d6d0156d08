"""Alert rules evaluated inside the collector, and the threads that deliver them.

What, on every evaluator pass (`CollectorAlerts.evaluate`):

1. For each model, the windows completed since the last pass: a window is complete once its end
   is `grace` seconds in the past (replicas export a little after a window closes). Each window
   is evaluated once: a per-model watermark remembers the last window start evaluated. On the
   first pass after start-up, only the latest ``max(for_windows)`` complete windows are looked at,
   so a restart re-establishes ongoing episodes without replaying the whole history.
2. Each window merged across instances, versions and segments (the range reader's parts), its
   metrics computed in the query worker (`mlwatch.alerts.window_metrics`; drift against the
   model's reference, uploaded or moving, as the drift API), then the rules applied by the same
   `mlwatch.alerts.Alerts` engine as in-process: N consecutive windows, one alert per episode,
   resolve, cooldown. Calibrated rules get their thresholds per model and feature from stored
   windows (the ``calibrate`` worker operation), once.
3. Freshness rules (no traffic, no labels for N windows), then the scheduled summary when due.

Alerts go to per-channel delivery threads through bounded queues: a webhook that hangs or fails
delays only its own thread (never the event loop, ingest or the other channels); a full queue
drops and counts. Everything is counted on ``/metrics`` (``mlwatch_alert_firing`` per rule, model
and feature; notifications by channel and outcome; windows evaluated; evaluation errors) and
shown by ``GET /api/alerts``. State is in memory: a restart forgets episodes and cooldowns.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlwatch.alerts import Alert, AlertRule, Alerts
from mlwatch.collector.alerts_config import AlertsConfig, Channel, RuleConfig
from mlwatch.collector.errors import HttpError
from mlwatch.collector.references import resolve_reference
from mlwatch.collector.store import Filters

if TYPE_CHECKING:
    from mlwatch.collector.app import CollectorState

__all__ = ["CollectorAlerts"]

logger = logging.getLogger("mlwatch.collector")
_ALL = Filters()
_Key = tuple[str, str, str, str]  # rule, model, segment, feature ("" for none)


def _send_alerts(alerts: Sequence[Alert], channel: Channel) -> None:
    channel.send(alerts)


def _send_text(subject: str, text: str, channel: Channel) -> None:
    channel.send_text(subject, text)


class _Delivery:
    """One channel's delivery thread: jobs from a bounded queue, failures counted, never raised."""

    def __init__(self, name: str, channel: Channel, queue_size: int, redact: Callable[[str], str]) -> None:
        self.name = name
        self.channel = channel
        self.kind = "webhook" if hasattr(channel, "url") else "email"
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error = ""
        self.last_sent_at: float | None = None
        self._redact = redact
        self._queue: queue.Queue[Callable[[Channel], None]] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mlwatch-alerts-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Callable[[Channel], None]) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                job(self.channel)
            except Exception as exc:  # a channel's failure is counted, never raised
                self.failed += 1
                self.last_error = self._redact(f"{type(exc).__name__}: {exc}")[:300]
                logger.warning("mlwatch collector: alert channel %s failed: %s", self.name, self.last_error)
            else:
                self.sent += 1
                self.last_sent_at = time.time()

    def stop(self) -> None:
        """Stop taking jobs (a delivery in progress finishes or times out on its own)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread; what is still queued is dropped (and counted)."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.dropped += self._queue.qsize()


class CollectorAlerts:
    """The collector's alert engine, channels and summary schedule (built when an alerts file is given)."""

    def __init__(self, state: CollectorState, config: AlertsConfig) -> None:
        self.state = state
        self.config = config
        self.engine = Alerts([r.rule for r in config.rules] + [f.rule for f in config.freshness])
        self.routes: dict[str, tuple[str, ...]] = {r.rule.name: r.channels for r in config.rules}
        self.routes.update({f.rule.name: f.channels for f in config.freshness})
        self.deliveries = {name: _Delivery(name, ch, config.queue_size, config.redact) for name, ch in config.channels.items()}
        self.lookback = max([r.rule.for_windows for r in config.rules], default=1)
        self.history: deque[tuple[float, Alert]] = deque(maxlen=config.history)
        self.windows_evaluated = 0
        self.evaluation_errors = 0
        self.events = {"firing": 0, "resolved": 0}
        self.last_summary_at: float | None = None
        self.summary_errors = 0
        self._watermark: dict[str, float] = {}
        self._firing: dict[_Key, tuple[Alert, float]] = {}
        self._known: dict[_Key, int] = {}  # every episode seen: 1 firing, 0 resolved (the /metrics gauge)
        self._calibrated: dict[tuple[str, str], dict[str, Any]] = {}  # (rule, model) -> thresholds, status
        self.next_summary_at = self._next_summary(time.time()) if config.summary else math.inf

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        for d in self.deliveries.values():
            d.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every delivery thread, waiting at most `timeout` seconds in all (they are daemons)."""
        deadline = time.monotonic() + timeout
        for d in self.deliveries.values():
            d.stop()
        for d in self.deliveries.values():
            d.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ evaluation
    async def evaluate(self, models: Sequence[str], now: float) -> None:
        """One pass: every model's new complete windows, freshness, the summary when due. Never raises."""
        for model in models:
            try:
                await self._evaluate_model(model, now)
            except Exception as exc:  # counted per model; the loop goes on
                self.evaluation_errors += 1
                logger.warning("mlwatch collector: alert evaluation of %s failed: %s", model, exc)
        try:
            self._record(self.engine.check_freshness(now, dispatch=False), now)
            if now >= self.next_summary_at:
                self.next_summary_at = self._next_summary(now)
                await self._send_summary(now)
        except Exception as exc:
            self.evaluation_errors += 1
            logger.warning("mlwatch collector: alert freshness/summary failed: %s", exc)

    def _applicable(self, model: str) -> list[RuleConfig]:
        return [r for r in self.config.rules if r.rule.model in (None, model)]

    def _needs_labels(self, model: str) -> bool:
        return any(f.rule.signal == "labels" and f.rule.model in (None, model) for f in self.config.freshness)

    async def _new_windows(self, model: str, now: float) -> list[tuple[float, float, int]]:
        """(start, end, calls) of the windows completed since the watermark, oldest first."""
        state = self.state
        mark = self._watermark.get(model)
        if mark is None:
            starts = await anyio.to_thread.run_sync(state.store.window_starts_before, model, math.inf, self.lookback + 3, _ALL)
            if not starts:
                return []
            lo = min(starts)
        else:
            lo = math.nextafter(mark, math.inf)
        ends: dict[float, float] = {}
        calls: dict[float, int] = {}
        for w in await state.reader.window_stats(model, lo, math.inf, _ALL):
            ends[w.window_start] = max(ends.get(w.window_start, w.window_end), w.window_end)
            calls[w.window_start] = calls.get(w.window_start, 0) + max(w.calls, w.n_rows)  # traffic: calls, or rows profiled
        complete: list[tuple[float, float, int]] = []
        for ws in sorted(ends):
            if ends[ws] + self.config.grace > now:
                break  # this one (and any later) may still receive parts
            complete.append((ws, ends[ws], calls[ws]))
        if mark is None:
            complete = complete[-self.lookback :]
        return complete[: state.config.max_windows_per_query]

    async def _evaluate_model(self, model: str, now: float) -> None:
        state = self.state
        windows = await self._new_windows(model, now)
        if not windows:
            return
        self._watermark[model] = windows[-1][0]  # advanced first: a failing batch is skipped, not retried forever
        self.windows_evaluated += len(windows)
        configs = self._applicable(model)
        if not configs and not self._needs_labels(model):  # freshness of traffic only: the stored counts suffice
            for ws, we, n in windows:
                self.engine.evaluate_metrics(model, {}, window_start=ws, window_end=we, calls=n, now=now, rules=[])
            return
        first = windows[0][0]
        ref_parts: list[bytes] = []
        uploaded = False
        if any(r.rule.metric.startswith("drift") for r in configs):
            try:
                ref_parts, ref_info = await resolve_reference(
                    state.reader, model, first, _ALL, "auto", state.config.moving_reference_windows
                )
                uploaded = ref_info.get("kind") == "uploaded"
            except HttpError:  # no reference yet: drift rules have nothing to say about these windows
                ref_parts = []
        rules: list[AlertRule] = []
        for rc in configs:
            rules.extend(await self._concrete(rc, model, first, ref_parts if uploaded else [], now))
        parts = await state.reader.window_parts(model, first, math.nextafter(windows[-1][0], math.inf), _ALL)
        results: list[dict[str, Any]] = await state.query_pool.call("alert_metrics", ref_parts, parts)
        events: list[Alert] = []
        for r in results:
            events += self.engine.evaluate_metrics(
                model, r["metrics"], window_start=r["window_start"], window_end=r["window_end"],
                calls=r["calls"], labeled=r["labeled"], now=now, rules=rules,
            )
        self._record(events, now)

    async def _concrete(self, rc: RuleConfig, model: str, before: float, reference: list[bytes], now: float) -> list[AlertRule]:
        """The rule as evaluated for `model`: itself, or one rule per feature with its calibrated threshold."""
        cal = rc.calibration
        if cal is None:
            return [rc.rule]
        key = (rc.rule.name, model)
        done = self._calibrated.get(key)
        if done is None or done["status"] != "calibrated":
            done = self._calibrated[key] = await self._calibrate(rc, model, before, reference, now)
        thresholds: dict[str, float] = done.get("thresholds", {})
        rule = rc.rule
        if rule.features is None:
            return [replace(rule, above=thresholds[""])] if "" in thresholds else []
        wanted = [f for f in thresholds if f] if rule.features == "all" else [f for f in rule.features if f in thresholds]
        return [replace(rule, above=thresholds[f], features=[f]) for f in wanted]

    async def _calibrate(self, rc: RuleConfig, model: str, before: float, reference: list[bytes], now: float) -> dict[str, Any]:
        state = self.state
        cal = rc.calibration
        assert cal is not None
        if cal.start is not None and cal.end is not None:
            stats = await state.reader.window_stats(model, cal.start, cal.end, _ALL)
            starts = sorted({w.window_start for w in stats})[-cal.windows :]
            needed = 2
        else:
            starts = sorted(await anyio.to_thread.run_sync(state.store.window_starts_before, model, before, cal.windows, _ALL))
            needed = cal.windows
        if len(starts) < needed:
            return {"status": "waiting", "windows": len(starts), "needed": needed}
        wanted = set(starts)
        parts = [p for ws, _, p in await state.reader.window_parts(model, starts[0], math.nextafter(starts[-1], math.inf), _ALL)
                 if ws in wanted]
        thresholds = await state.query_pool.call("calibrate", reference, parts, rc.rule.metric, cal.k)
        logger.info("mlwatch collector: rule %r calibrated for %s on %d windows: %s", rc.rule.name, model, len(parts), thresholds)
        return {"status": "calibrated", "windows": len(parts), "thresholds": thresholds, "at": now,
                "against": "uploaded reference" if reference else "the other windows"}

    # ------------------------------------------------------------------ events and delivery
    def _record(self, events: Sequence[Alert], now: float) -> None:
        if not events:
            return
        batches: dict[str, list[Alert]] = {}
        for a in events:
            key = (a.rule, a.model, a.segment, a.feature or "")
            if a.state == "firing":
                self._firing[key] = (a, now)
            else:
                self._firing.pop(key, None)
            self._known[key] = 1 if a.state == "firing" else 0
            self.events[a.state] += 1
            self.history.append((now, a))
            for name in self.routes.get(a.rule, ()):
                batches.setdefault(name, []).append(a)
            logger.warning("mlwatch collector: %s", a.message)
        for name, batch in batches.items():
            self.deliveries[name].submit(partial(_send_alerts, batch))

    def _next_summary(self, now: float) -> float:
        s = self.config.summary
        assert s is not None
        return math.floor((now - s.offset) / s.interval) * s.interval + s.interval + s.offset

    async def _send_summary(self, now: float) -> None:
        s = self.config.summary
        assert s is not None
        state = self.state
        payloads: list[bytes] = []
        for m in await anyio.to_thread.run_sync(state.store.models):
            payloads += [p.payload for p in await state.reader.parts(m["model"], now - s.period, now, _ALL)]
        try:
            text: str = await state.query_pool.call("health_summary", payloads, s.title) if payloads else f"{s.title}\nno models reported"
        except Exception:
            self.summary_errors += 1
            raise
        firing = sorted(self._firing.values(), key=lambda x: x[1])
        text += f"\nfiring alerts: {len(firing)}" + "".join(f"\n- {a.message}" for a, _ in firing)
        self.last_summary_at = now
        for name in s.channels:
            self.deliveries[name].submit(partial(_send_text, s.title, text))

    # ------------------------------------------------------------------ views
    def snapshot(self, model: str | None = None, limit: int = 100) -> dict[str, Any]:
        """What ``GET /api/alerts`` returns: firing alerts, recent events (newest first), rules, channels."""
        firing = [{**a.to_dict(), "since": since} for (a, since) in sorted(self._firing.values(), key=lambda x: x[1])
                  if model is None or a.model == model]
        events = [{**a.to_dict(), "at": at} for at, a in reversed(self.history) if model is None or a.model == model][:limit]
        rules: list[dict[str, Any]] = []
        for rc in self.config.rules:
            r = rc.rule
            entry: dict[str, Any] = {"name": r.name, "kind": "threshold", "metric": r.metric, "model": r.model,
                                     "above": None if rc.calibration else r.above, "below": r.below,
                                     "features": r.features if r.features is None or r.features == "all" else list(r.features),
                                     "for_windows": r.for_windows, "cooldown": r.cooldown, "channels": list(rc.channels)}
            if rc.calibration is not None:
                entry["calibration"] = {"k": rc.calibration.k, "windows": rc.calibration.windows,
                                        "models": {m: c for (n, m), c in self._calibrated.items() if n == r.name}}
            rules.append(entry)
        rules += [{"name": f.rule.name, "kind": "freshness", "metric": f"freshness.{f.rule.signal}", "model": f.rule.model,
                   "windows": f.rule.windows, "channels": list(f.channels)} for f in self.config.freshness]
        channels = {n: {"type": d.kind, "sent": d.sent, "failed": d.failed, "dropped": d.dropped,
                        "last_error": d.last_error or None, "last_sent_at": d.last_sent_at} for n, d in self.deliveries.items()}
        summary = None
        if self.config.summary is not None:
            summary = {"interval": self.config.summary.interval, "period": self.config.summary.period,
                       "channels": list(self.config.summary.channels), "next_at": self.next_summary_at,
                       "last_sent_at": self.last_summary_at, "errors": self.summary_errors}
        return {"configured": True, "firing": firing, "events": events, "rules": rules, "channels": channels,
                "summary": summary, "evaluated": {m: ws for m, ws in sorted(self._watermark.items()) if model in (None, m)},
                "windows_evaluated": self.windows_evaluated, "evaluation_errors": self.evaluation_errors}

    def prometheus(self) -> Collector:
        """A prometheus_client collector of the alert series (registered on the collector's registry)."""
        return _AlertMetrics(self)


class _AlertMetrics(Collector):
    def __init__(self, owner: CollectorAlerts) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        o = self.owner
        firing = GaugeMetricFamily("mlwatch_alert_firing", "1 while an alert rule fires for a model (and feature), 0 after it resolved",
                                   labels=["rule", "model", "feature"])
        for (rule, model, _, feature), value in sorted(dict(o._known).items()):
            firing.add_metric([rule, model, feature], float(value))
        yield firing
        sent = CounterMetricFamily("mlwatch_collector_alert_notifications", "alert and summary deliveries, by channel and outcome",
                                   labels=["channel", "outcome"])
        for name, d in sorted(o.deliveries.items()):
            sent.add_metric([name, "sent"], d.sent)
            sent.add_metric([name, "failed"], d.failed)
            sent.add_metric([name, "dropped"], d.dropped)
        yield sent
        events = CounterMetricFamily("mlwatch_collector_alert_events", "alerts raised, by state", labels=["state"])
        for st, n in sorted(o.events.items()):
            events.add_metric([st], n)
        yield events
        windows = CounterMetricFamily("mlwatch_collector_alert_windows_evaluated", "complete windows the alert rules evaluated")
        windows.add_metric([], o.windows_evaluated)
        yield windows
        errors = CounterMetricFamily("mlwatch_collector_alert_evaluation_errors", "alert evaluations that failed (skipped, logged)")
        errors.add_metric([], o.evaluation_errors)
        yield errors
