"""Alert rules: consecutive windows, episodes, cooldown, per feature, freshness, calibration's false-alarm rate."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest

import mlwatch
from mlwatch._health import HEALTH
from mlwatch.alerts import Alert, AlertRule, Alerts, FreshnessRule, calibrate, window_metrics
from mlwatch.model_quality import QualitySketch


def _window(i: int, *, calls: int = 10, errors: int = 0, model: str = "m") -> mlwatch.Profile:
    p = mlwatch.Profile(model, window_start=60.0 * i, window_end=60.0 * (i + 1))
    p.calls = calls
    if errors:
        p.errors["ValueError"] = errors
    return p


def test_fires_after_n_windows_once_per_episode() -> None:
    """A rule fires after N consecutive breaches, once per episode, and again only after resolving."""
    fired: list[Alert] = []
    resolved: list[Alert] = []
    rule = AlertRule("errors", metric="error_rate", above=0.2, for_windows=2, callback=fired.append, on_resolve=resolved.append)
    alerts = Alerts([rule])
    pattern = [5, 5, 5, 5, 0, 5, 0, 5, 5]
    for i, e in enumerate(pattern):
        alerts.evaluate([_window(i, errors=e)], now=60.0 * (i + 1))
    assert [round(a.window_end or 0) // 60 for a in fired] == [2, 9]
    assert len(resolved) == 1 and alerts.firing() == [("errors", "m", "", "")]


def test_cooldown_and_below() -> None:
    """A below-threshold rule with a cooldown does not re-fire within the cooldown."""
    fired: list[Alert] = []
    alerts = Alerts([AlertRule("acc", metric="quality.accuracy", below=0.8, cooldown=300, callback=fired.append)])
    for i, acc in enumerate([0.5, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9, 0.5]):
        p = _window(i)
        p.quality = QualitySketch()
        n_ok = int(acc * 10)
        p.quality.add_classification([1] * 10, [1] * n_ok + [0] * (10 - n_ok))
        alerts.evaluate([p], now=60.0 * i)
    assert [a.window_end for a in fired] == [60.0, 480.0]


def test_per_feature_rules_and_drift_metrics(rng: np.random.Generator) -> None:
    """features='all' keeps one episode per feature; drift metrics need a reference."""
    ref = mlwatch.profile({"a": rng.normal(size=2000), "b": rng.normal(size=2000)}, model="m")
    cur = mlwatch.profile({"a": rng.normal(size=2000), "b": rng.normal(3, 1, size=2000)}, model="m")
    cur.window_end = 60.0
    fired: list[Alert] = []
    alerts = Alerts([AlertRule("psi", metric="drift.psi", above=0.2, features="all", callback=fired.append)], reference={"m": ref})
    alerts.evaluate([cur], now=60.0)
    assert [a.feature for a in fired] == ["b"]
    assert "drift" in window_metrics(cur, ref) and "drift" not in window_metrics(cur)


def test_failing_callback_counted_never_raised() -> None:
    """A callback that raises is counted in health; evaluation goes on."""
    HEALTH.reset()

    def boom(alert: Alert) -> None:
        raise RuntimeError("fallback switch failed")

    alerts = Alerts([AlertRule("calls", metric="calls", above=5, callback=boom)])
    alerts.export([_window(0)])
    assert mlwatch.health()["internal_errors"]["alert_callback"] == 1


def test_freshness_no_traffic_and_no_labels() -> None:
    """Freshness rules fire after N windows without traffic or labels, and resolve when it returns."""
    fired: list[Any] = []
    alerts = Alerts([FreshnessRule("quiet", model="m", signal="traffic", windows=3, callback=fired.append),
                     FreshnessRule("unlabeled", model="m", signal="labels", windows=2, callback=fired.append)])
    alerts.evaluate([_window(0)], now=60.0)
    assert alerts.check_freshness(now=60.0 + 2 * 60) and [a.rule for a in fired] == ["unlabeled"]
    alerts.check_freshness(now=60.0 + 3 * 60)
    assert [a.rule for a in fired] == ["unlabeled", "quiet"]
    events = alerts.evaluate([_window(5)], now=6 * 60.0)
    assert [(a.rule, a.state) for a in events] == [("quiet", "resolved")]


def test_bad_rules_raise_config_error() -> None:
    """Rules are checked when built."""
    with pytest.raises(mlwatch.ConfigError):
        AlertRule("x", metric="calls")
    with pytest.raises(mlwatch.ConfigError):
        AlertRule("x", metric="calls", above=1, for_windows=0)
    with pytest.raises(mlwatch.ConfigError):
        Alerts([AlertRule("x", metric="calls", above=1), AlertRule("x", metric="calls", above=2)])
    with pytest.raises(mlwatch.ConfigError):
        calibrate([1.0])


def test_calibrated_rule_false_alarm_rate_under_one_percent() -> None:
    """On stationary traffic a rule calibrated on the reference's own windows raises < 1 % false alarms."""
    rng = np.random.default_rng(7)

    def window(i: int) -> mlwatch.Profile:
        p = mlwatch.profile({"x": rng.normal(size=400), "y": rng.exponential(size=400),
                             "c": rng.choice(list("abcd"), size=400, p=[0.4, 0.3, 0.2, 0.1])}, model="m")
        p.window_start, p.window_end = 60.0 * i, 60.0 * (i + 1)
        return p

    reference = [window(i) for i in range(30)]
    rules = [AlertRule.calibrated(f"psi-{f}", "drift.psi", reference, feature=f) for f in "xyc"]
    alerts = Alerts(rules, reference={"m": mlwatch.merge(reference)})
    n = 250
    fired = sum(a.state == "firing" for i in range(n) for a in alerts.evaluate([window(100 + i)], now=60.0 * (101 + i)))
    rate = fired / (n * len(rules))
    assert rate < 0.01, rate


def test_alerts_as_an_exporter_in_process(runtime: Any) -> None:
    """Alerts passed to configure(exporters=...) act on closed windows of a monitored model."""
    from mlwatch.testing import InMemoryExporter

    fired: list[Alert] = []
    alerts = Alerts([AlertRule("errors", metric="error_rate", above=0.4, model="alerting_model", callback=fired.append)])
    mlwatch.configure(exporters=[InMemoryExporter(), alerts])

    @mlwatch.monitor(model="alerting_model")
    def predict(x: float) -> float:
        if x < 0:
            raise ValueError("negative")
        return x

    for x in (1.0, -1.0, -2.0):
        with contextlib.suppress(ValueError):
            predict(x)
    mlwatch.flush()
    assert len(fired) == 1 and fired[0].value == pytest.approx(2 / 3)
