"""Alert rules on any window metric, evaluated in-process, with callbacks that act.

```python
rules = [
    AlertRule("psi", metric="drift.psi", above=0.2, for_windows=3, features="all",
              callback=lambda alert: switch_to_fallback()),
    AlertRule("accuracy", metric="quality.accuracy", below=0.9, cooldown=3600),
    AlertRule("p99", metric="latency.p99", above=0.250),
    FreshnessRule("no labels", model="fraud", signal="labels", windows=6),
]
alerts = Alerts(rules, reference={"fraud": ref_profile}, notifiers=[Webhook(url)])
mlwatch.configure(exporters=[LocalFileExporter("./data"), alerts])   # evaluated on every closed window
```

- **Metrics** of a window (`window_metrics`): ``calls``, ``errors``, ``error_rate``,
  ``dropped``, ``latency.p50/p95/p99``, per feature ``missing_share``, ``type_mismatch_share``
  and, with a reference, ``drift`` (the chosen method's value) and ``drift.<score>`` (``ks``,
  ``psi``, ``js``, ``wasserstein``, ``hellinger``, ...), the model-quality metrics as
  ``quality.<name>`` (accuracy, roc_auc, mae, ...) and proxy metrics as ``metric.<name>.mean``.
- **Rules**: above and/or below a threshold, for N consecutive windows, on one feature, a list,
  or all (``features="all"``; each feature has its own episode), per model or any model, with a
  cooldown. A rule fires once per episode and again only after it resolved.
- **Freshness**: `FreshnessRule` fires when a model had no traffic (or no labels) for N windows;
  checked on every closed window and by `Alerts.check_freshness(now)`.
- **Calibration**: `calibrate(values, k)` = mean + k·sigma of the metric over the reference's own
  windows, and `AlertRule.calibrated(...)` builds the rule (k=4, two consecutive windows by
  default); stationary traffic then stays under 1 % false alarms (``tests/test_alerts.py``
  measures it).
- **Never hurts the host**: a failing callback or notifier is counted in `mlwatch.health()`
  (``internal_errors["alert_callback"]`` / ``["alert_notify"]``), never raised.
- **Anywhere the metrics are**: `Alerts.evaluate_metrics` applies the rules to one window's
  `window_metrics` computed elsewhere; the collector (``mlwatch collector --alerts``) computes them
  in its worker for fleet-merged windows and uses this engine (`mlwatch.collector.alerting`).
  `metric_scope` tells model-level from per-feature metric names and rejects unknown ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from mlwatch._errors import ConfigError
from mlwatch._health import HEALTH
from mlwatch.profile import Profile

__all__ = [
    "Alert",
    "AlertRule",
    "Alerts",
    "FreshnessRule",
    "Notifier",
    "calibrate",
    "metric_scope",
    "reference_metric_table",
    "window_metrics",
]

#: The key under which per-window metrics that belong to no feature are kept.
_NO_FEATURE = ""


@dataclass(frozen=True)
class Alert:
    """One rule firing (``state="firing"``) or resolving (``state="resolved"``)."""

    rule: str
    model: str
    metric: str
    state: Literal["firing", "resolved"]
    value: float
    threshold: float | None
    feature: str | None = None
    segment: str = ""
    window_end: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the webhook payload's ``alert`` field)."""
        return {
            "rule": self.rule, "model": self.model, "metric": self.metric, "state": self.state,
            "value": None if math.isnan(self.value) else self.value, "threshold": self.threshold,
            "feature": self.feature, "segment": self.segment, "window_end": self.window_end, "message": self.message,
        }


class Notifier(Protocol):
    """Somewhere alerts go (webhook, e-mail): `send` may raise; failures are counted."""

    def send(self, alerts: Sequence[Alert]) -> None: ...


AlertCallback = Callable[[Alert], None]


@dataclass(frozen=True)
class AlertRule:
    """A threshold on one window metric, for N consecutive windows, with a cooldown in seconds."""

    name: str
    metric: str
    above: float | None = None
    below: float | None = None
    for_windows: int = 1
    features: str | Sequence[str] | None = None  # None: the model-level metric; "all" or names: per feature
    model: str | None = None  # None: every model
    cooldown: float = 0.0
    callback: AlertCallback | None = None
    on_resolve: AlertCallback | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"an alert rule needs a name, got {self.name!r}")
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigError(f"alert rule {self.name!r}: metric must be a metric name such as 'drift.psi'")
        if self.above is None and self.below is None:
            raise ConfigError(f"alert rule {self.name!r}: give above= and/or below=")
        for bound in (self.above, self.below):
            if bound is not None and (type(bound) not in (int, float) or not math.isfinite(bound)):
                raise ConfigError(f"alert rule {self.name!r}: thresholds must be finite numbers, got {bound!r}")
        if type(self.for_windows) is not int or self.for_windows < 1:
            raise ConfigError(f"alert rule {self.name!r}: for_windows must be an integer >= 1, got {self.for_windows!r}")
        if type(self.cooldown) not in (int, float) or not 0 <= self.cooldown < math.inf:
            raise ConfigError(f"alert rule {self.name!r}: cooldown must be seconds >= 0, got {self.cooldown!r}")
        if self.features is not None and self.features != "all" and (
            isinstance(self.features, str) or not all(isinstance(f, str) for f in self.features)
        ):
            raise ConfigError(f"alert rule {self.name!r}: features must be None, 'all' or a list of names")
        for cb in (self.callback, self.on_resolve):
            if cb is not None and not callable(cb):
                raise ConfigError(f"alert rule {self.name!r}: callbacks must be callable, got {cb!r}")

    def breached(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    @property
    def threshold(self) -> float | None:
        return self.above if self.above is not None else self.below

    @classmethod
    def calibrated(
        cls,
        name: str,
        metric: str,
        reference_windows: Sequence[Profile],
        *,
        k: float = 4.0,
        feature: str | None = None,
        for_windows: int = 2,
        **options: Any,
    ) -> AlertRule:
        """A rule "beyond what the reference's own windows show": above mean + k·sigma of `metric` over
        the reference windows, each compared (leave-one-out) with the merge of the others.

        Drift scores are right-skewed, so mean + 3sigma alone is breached by 1-4 % of stationary
        windows (measured: 30 reference windows of 500 rows, PSI/KS/JS/Wasserstein); the defaults
        k=4 and two consecutive windows keep stationary false alarms well under 1 %.
        """
        values = reference_metric_values(metric, reference_windows, feature=feature)
        features = options.pop("features", None if feature is None else [feature])
        return cls(name, metric, above=calibrate(values, k), features=features, for_windows=for_windows, **options)


@dataclass(frozen=True)
class FreshnessRule:
    """Fires when `model` had no traffic (``signal="traffic"``) or no labels (``"labels"``) for `windows` windows.

    ``model=None`` watches every model the engine has seen (one episode per model).
    """

    name: str
    model: str | None = None
    signal: Literal["traffic", "labels"] = "traffic"
    windows: int = 3
    callback: AlertCallback | None = None
    on_resolve: AlertCallback | None = None

    def __post_init__(self) -> None:
        if self.signal not in ("traffic", "labels"):
            raise ConfigError(f"freshness rule {self.name!r}: signal must be 'traffic' or 'labels', got {self.signal!r}")
        if type(self.windows) is not int or self.windows < 1:
            raise ConfigError(f"freshness rule {self.name!r}: windows must be an integer >= 1, got {self.windows!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ConfigError(f"freshness rule {self.name!r}: model must be a model name (or None: every model)")


# ---------------------------------------------------------------------------- metrics of a window
def calibrate(values: Iterable[float], k: float = 3.0) -> float:
    """mean + k·sigma (sample standard deviation) of a metric's values over reference windows."""
    arr = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.shape[0] < 2:
        raise ConfigError(f"calibration needs the metric over at least 2 reference windows, got {arr.shape[0]}")
    return float(arr.mean() + k * arr.std(ddof=1))


def _reference_window_values(
    metric: str, windows: Sequence[Profile], reference: Profile | None = None
) -> Iterable[Mapping[str, float]]:
    """``{feature or "": value}`` of `metric` per window; drift against `reference`, else the merge of the other windows."""
    from mlwatch.profile import merge

    for i, w in enumerate(windows):
        ref = reference
        if ref is None and metric.startswith("drift") and len(windows) > 1:
            ref = merge([*windows[:i], *windows[i + 1 :]])
        yield window_metrics(w, ref).get(metric, {})


def reference_metric_values(metric: str, windows: Sequence[Profile], *, feature: str | None = None) -> list[float]:
    """The metric of each reference window, drift metrics against the merge of the other windows."""
    out: list[float] = []
    for values in _reference_window_values(metric, windows):
        value = values.get(feature if feature is not None else _NO_FEATURE)
        if value is None and feature is None and values:
            value = max(values.values())
        if value is not None:
            out.append(value)
    return out


def reference_metric_table(
    metric: str, windows: Sequence[Profile], *, reference: Profile | None = None
) -> dict[str, list[float]]:
    """`metric` over reference windows, per feature (``""``: the model-level value), in one pass.

    Drift metrics compare each window with `reference` when given (the reference the rule will
    be evaluated against), else with the merge of the other windows (leave-one-out).
    """
    out: dict[str, list[float]] = {}
    for values in _reference_window_values(metric, windows, reference):
        for feature, value in values.items():
            out.setdefault(feature, []).append(value)
    return out


#: Model-level metric names of `window_metrics` (``quality.<name>`` and ``metric.<name>.<stat>`` also).
MODEL_METRICS = frozenset({"calls", "errors", "error_rate", "dropped", "latency.p50", "latency.p95", "latency.p99", "drift_share"})
#: Per-feature metric names of `window_metrics` (``drift.<score>`` also).
FEATURE_METRICS = frozenset({"missing_share", "type_mismatch_share", "drift"})
DRIFT_SCORES = frozenset({"ks", "ks_p_value", "ks_resolution", "psi", "js", "wasserstein", "wasserstein_raw", "hellinger",
                          "chi2", "chi2_p_value", "dof"})
QUALITY_METRICS = frozenset({
    "n_labeled", "accuracy", "precision", "recall", "f1", "positive_rate", "label_positive_rate", "fpr", "tpr",
    "roc_auc", "roc_auc_error", "precision_weighted", "recall_weighted", "f1_weighted",
    "mae", "mse", "rmse", "mape", "bias", "r2", "error_p05", "error_p50", "error_p95", "error_quantile_rank_error",
    "n_queries", "k", "ndcg", "precision_at_k", "recall_at_k", "map",
})
_PROXY_STATS = ("count", "sum", "mean", "p50", "p95")


def metric_scope(metric: str) -> Literal["model", "feature"]:
    """Whether `window_metrics` gives `metric` per model or per feature; `ConfigError` for an unknown name."""
    if metric in MODEL_METRICS:
        return "model"
    if metric in FEATURE_METRICS:
        return "feature"
    head, _, rest = metric.partition(".")
    if head == "drift" and rest in DRIFT_SCORES:
        return "feature"
    if head == "quality" and (rest in QUALITY_METRICS or (
        rest.endswith("]") and rest.partition("[")[0] in ("precision", "recall", "f1", "support") and "[" in rest
    )):
        return "model"
    if head == "metric" and rest.rpartition(".")[0] and rest.rpartition(".")[2] in _PROXY_STATS:
        return "model"
    known = [*sorted(MODEL_METRICS | FEATURE_METRICS), "drift.<score>", "quality.<name>", "metric.<name>.<stat>"]
    hint = ""
    if head == "drift" and rest:
        hint = f"; drift scores: {', '.join(sorted(DRIFT_SCORES))}"
    elif head == "quality":
        hint = f"; quality metrics: {', '.join(sorted(QUALITY_METRICS))}"
    elif head == "metric":
        hint = f"; proxy metrics are metric.<name>.<{'|'.join(_PROXY_STATS)}>"
    raise ConfigError(f"unknown metric {metric!r} (known: {', '.join(known)}{hint})")


def window_metrics(profile: Profile, reference: Profile | None = None) -> dict[str, dict[str, float]]:
    """Every alertable metric of one window: ``{metric: {feature or "": value}}``."""
    out: dict[str, dict[str, float]] = {}

    def put(metric: str, value: float, feature: str = _NO_FEATURE) -> None:
        out.setdefault(metric, {})[feature] = float(value)

    put("calls", profile.calls)
    put("errors", profile.error_count)
    put("error_rate", profile.error_count / profile.calls if profile.calls else 0.0)
    put("dropped", profile.dropped)
    if profile.latency is not None and not profile.latency.is_empty():
        for q, v in zip(("p50", "p95", "p99"), profile.latency.quantiles([0.5, 0.95, 0.99]), strict=True):
            put(f"latency.{q}", float(v))
    for name, col in profile.columns.items():
        if col.count:
            put("missing_share", col.missing_share, name)
            put("type_mismatch_share", col.n_other / col.count, name)
    if reference is not None:
        from mlwatch.drift import drift

        report = drift(reference, profile)
        for c in report.compared:
            if c.value is not None:
                put("drift", c.value, c.column)
            for score, v in c.scores.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    put(f"drift.{score}", v, c.column)
        put("drift_share", report.share)
    if profile.quality is not None:
        for name, v in profile.quality.to_dict().items():
            if name.startswith(tuple(f"{m}." for m in profile.quality.metrics)):
                put(f"metric.{name}", v)
            else:
                put(f"quality.{name}", v)
    return out


# ---------------------------------------------------------------------------- the engine
@dataclass
class _Episode:
    streak: int = 0
    firing: bool = False
    last_fired: float = -math.inf


@dataclass
class _Seen:
    width: float = 60.0
    traffic_end: float | None = None
    labels_end: float | None = None
    first_end: float | None = None


@dataclass
class Alerts:
    """Evaluates rules on closed window profiles; also an `Exporter` (pass it to `configure(exporters=...)`).

    `reference`: ``{model: reference profile}`` for drift metrics. `notifiers` receive every
    alert (firing and resolved) after the rule's callback. Thread-safe.
    """

    rules: Sequence[AlertRule | FreshnessRule]
    reference: Mapping[str, Profile] = field(default_factory=dict)
    notifiers: Sequence[Notifier] = ()
    history: list[Alert] = field(default_factory=list)
    max_history: int = 1000

    def __post_init__(self) -> None:
        for r in self.rules:
            if not isinstance(r, (AlertRule, FreshnessRule)):
                raise ConfigError(f"Alerts takes AlertRule and FreshnessRule objects, got {r!r}")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"alert rule names must be unique, got {names}")
        self._lock = threading.Lock()
        self._episodes: dict[tuple[str, str, str, str], _Episode] = {}
        self._seen: dict[str, _Seen] = {}

    # ------------------------------------------------------------------ Exporter protocol
    def export(self, profiles: Sequence[Profile]) -> None:
        """Evaluate the rules on closed windows (called by mlwatch's aggregator). Never raises."""
        try:
            self.evaluate(profiles)
        except Exception as exc:
            HEALTH.count_error("alert", exc)

    def shutdown(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, profiles: Sequence[Profile], *, now: float | None = None) -> list[Alert]:
        """Evaluate every rule on these window profiles (in window order); returns the alerts raised."""
        events: list[Alert] = []
        now_ts = time.time() if now is None else now
        for p in sorted(profiles, key=lambda x: x.window_end or 0.0):
            metrics = window_metrics(p, self.reference.get(p.model))
            labeled = p.quality.to_dict().get("n_labeled", 0.0) if p.quality is not None else 0.0
            events.extend(self.evaluate_metrics(
                p.model, metrics, segment=p.segment_key, window_start=p.window_start, window_end=p.window_end,
                calls=max(p.calls, p.rows), labeled=labeled, now=now_ts,
            ))
        events.extend(self.check_freshness(now_ts, dispatch=False))
        self._dispatch(events)
        return events

    def evaluate_metrics(
        self,
        model: str,
        metrics: Mapping[str, Mapping[str, float]],
        *,
        segment: str = "",
        window_start: float | None = None,
        window_end: float | None = None,
        calls: int = 0,
        labeled: float = 0.0,
        now: float | None = None,
        rules: Sequence[AlertRule] | None = None,
    ) -> list[Alert]:
        """Apply the rules to one window's metrics (``window_metrics`` output, computed anywhere).

        The window is also noted for freshness (`calls`, the calls or rows profiled, and `labeled`
        say whether it had traffic and labels). `rules` replaces the engine's own threshold rules for this call (the collector
        passes rules with thresholds calibrated per model and feature). Nothing is dispatched:
        the caller gets the alerts.
        """
        now_ts = time.time() if now is None else now
        chosen = [r for r in self.rules if isinstance(r, AlertRule)] if rules is None else rules
        out: list[Alert] = []
        with self._lock:
            self._note_seen(model, window_start, window_end, calls, labeled)
            for rule in chosen:
                if rule.model is None or rule.model == model:
                    out.extend(self._apply(rule, model, segment, window_end, metrics, now_ts))
        return out

    def _note_seen(self, model: str, window_start: float | None, window_end: float | None, calls: int, labeled: float) -> None:
        seen = self._seen.setdefault(model, _Seen())
        if window_start is not None and window_end is not None:
            seen.width = window_end - window_start
        end = window_end if window_end is not None else time.time()
        seen.first_end = end if seen.first_end is None else min(seen.first_end, end)
        if calls:
            seen.traffic_end = end if seen.traffic_end is None else max(seen.traffic_end, end)
        if labeled > 0:
            seen.labels_end = end if seen.labels_end is None else max(seen.labels_end, end)

    def _apply(self, rule: AlertRule, model: str, segment: str, window_end: float | None,
               metrics: Mapping[str, Mapping[str, float]], now: float) -> list[Alert]:
        values = metrics.get(rule.metric)
        if values is None:
            return []
        if rule.features is None:
            targets = {_NO_FEATURE: values[_NO_FEATURE]} if _NO_FEATURE in values else {}
        elif rule.features == "all":
            targets = {f: v for f, v in values.items() if f != _NO_FEATURE}
        else:
            targets = {f: values[f] for f in rule.features if f in values}
        out: list[Alert] = []
        for feature, value in targets.items():
            key = (rule.name, model, segment, feature)
            ep = self._episodes.setdefault(key, _Episode())
            feat = feature or None
            if rule.breached(value):
                ep.streak += 1
                if not ep.firing and ep.streak >= rule.for_windows and now - ep.last_fired >= rule.cooldown:
                    ep.firing, ep.last_fired = True, now
                    out.append(self._alert(rule.name, model, rule.metric, "firing", value, rule.threshold, feat, segment, window_end))
            else:
                ep.streak = 0
                if ep.firing:
                    ep.firing = False
                    out.append(self._alert(rule.name, model, rule.metric, "resolved", value, rule.threshold, feat, segment, window_end))
        return out

    @staticmethod
    def _alert(rule: str, model: str, metric: str, state: Literal["firing", "resolved"], value: float,
               threshold: float | None, feature: str | None, segment: str, window_end: float | None) -> Alert:
        where = f" feature {feature!r}" if feature else ""
        seg = f" [{segment}]" if segment else ""
        verb = "fired" if state == "firing" else "resolved"
        msg = f"{rule} {verb}: {model}{seg}{where} {metric}={value:.4g} (threshold {threshold})"
        return Alert(rule, model, metric, state, value, threshold, feature, segment, window_end, msg)

    def check_freshness(self, now: float | None = None, *, dispatch: bool = True) -> list[Alert]:
        """Fire (or resolve) freshness rules: no traffic or no labels for N windows before `now`."""
        now_ts = time.time() if now is None else now
        out: list[Alert] = []
        with self._lock:
            for rule in self.rules:
                if not isinstance(rule, FreshnessRule):
                    continue
                for model in [rule.model] if rule.model is not None else sorted(self._seen):
                    alert = self._freshness(rule, model, now_ts)
                    if alert is not None:
                        out.append(alert)
        if dispatch:
            self._dispatch(out)
        return out

    def _freshness(self, rule: FreshnessRule, model: str, now: float) -> Alert | None:
        seen = self._seen.setdefault(model, _Seen())
        last = seen.traffic_end if rule.signal == "traffic" else seen.labels_end
        if last is None:  # never seen: count from the first window we heard of the model
            last = seen.first_end
        if last is None:
            return None
        stale = math.floor((now - last) / seen.width) if seen.width > 0 else 0
        ep = self._episodes.setdefault((rule.name, model, "", ""), _Episode())
        metric = f"freshness.{rule.signal}"
        if stale >= rule.windows and not ep.firing:
            ep.firing, ep.last_fired = True, now
            return Alert(rule.name, model, metric, "firing", float(stale), float(rule.windows), window_end=last,
                         message=f"{rule.name} fired: {model} had no {rule.signal} for {stale} windows")
        if stale < rule.windows and ep.firing:
            ep.firing = False
            return Alert(rule.name, model, metric, "resolved", float(stale), float(rule.windows), window_end=last,
                         message=f"{rule.name} resolved: {model} has {rule.signal} again")
        return None

    def _dispatch(self, events: list[Alert]) -> None:
        """Callbacks first (they act: fallback, retrain), then notifiers; failures are counted."""
        if not events:
            return
        by_name = {r.name: r for r in self.rules}
        with self._lock:
            self.history.extend(events)
            del self.history[: max(0, len(self.history) - self.max_history)]
        for alert in events:
            rule = by_name.get(alert.rule)
            cb = None if rule is None else (rule.callback if alert.state == "firing" else rule.on_resolve)
            if cb is not None:
                try:
                    cb(alert)
                except Exception as exc:
                    HEALTH.count_error("alert_callback", exc)
        for notifier in self.notifiers:
            try:
                notifier.send(events)
            except Exception as exc:
                HEALTH.count_error("alert_notify", exc)

    def firing(self) -> list[tuple[str, str, str, str]]:
        """(rule, model, segment, feature) of every episode currently firing."""
        with self._lock:
            return [k for k, ep in self._episodes.items() if ep.firing]
