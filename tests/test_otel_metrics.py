"""OTLP metrics built from window profiles: histogram from the latency sketch, counters, gauges, drift, health."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from otlp_receiver import HealthDelta, Receiver, any_value, window_profile

import mlwatch
from mlwatch import Profile, _otel_metrics
from mlwatch._otel_metrics import (
    DURATION_BUCKETS,
    Distribution,
    MetricSpec,
    WindowMetrics,
    add_live,
    add_view,
    all_specs,
    bucket_counts,
)
from mlwatch._sketches import KllSketch
from mlwatch.otlp import OtlpExporter

_HEALTH = {
    "dropped": {"buffer_full": 3},
    "internal_errors": {"aggregate": 1},
    "export_failures": {"http_503": 2},
    "queued_records": 17,
    "export_pending": 1,
    "worker_cpu_seconds": 0.25,
}


def _points(collected: dict[str, Any], name: str) -> list[tuple[dict[str, Any], Any]]:
    return [(p.attributes, p.value) for p in collected[name]]


def test_bucket_counts_are_exact_for_small_windows() -> None:
    """While a window has at most k calls, bucket counts equal the exact ones (upper bounds inclusive)."""
    values = np.array([0.00005, 0.0001, 0.0002, 0.003, 0.003, 0.2, 11.0])
    kll = KllSketch()
    kll.update(values)
    counts = bucket_counts(kll)
    expected = np.histogram(values, bins=[-np.inf, *[np.nextafter(b, np.inf) for b in DURATION_BUCKETS], np.inf])[0]
    assert counts == expected.tolist()


def test_bucket_counts_sum_to_n_for_large_windows(rng: np.random.Generator) -> None:
    """Beyond k calls the counts are estimates, but they always add up to the number of calls."""
    values = rng.lognormal(mean=-6, sigma=1.5, size=100_000)
    kll = KllSketch()
    kll.update(values)
    counts = bucket_counts(kll)
    assert sum(counts) == 100_000
    exact = np.histogram(values, bins=[-np.inf, *DURATION_BUCKETS, np.inf])[0]
    assert np.max(np.abs(np.array(counts) - exact)) <= 0.02 * 100_000


def test_counters_are_cumulative_per_model_version_segment() -> None:
    """Calls and errors accumulate across windows, by (model, version, segment) and error.type."""
    wm = WindowMetrics(health=lambda: _HEALTH)
    a = window_profile("wm", 10, version="1", segment={"country": "DE"}, window=0.0)
    a.errors = {"ValueError": 2}
    b = window_profile("wm", 5, version="1", segment={"country": "DE"}, window=60.0)
    b.errors = {"ValueError": 1, "KeyError": 1}
    wm.observe([a])
    wm.observe([b])
    got = wm.collect()
    attrs = {"mlwatch.model": "wm", "mlwatch.model.version": "1", "mlwatch.segment": "country=DE"}
    assert _points(got, "mlwatch.prediction.calls") == [(attrs, 15)]
    assert sorted(_points(got, "mlwatch.prediction.errors"), key=lambda kv: str(kv[0])) == [
        ({**attrs, "error.type": "KeyError"}, 1),
        ({**attrs, "error.type": "ValueError"}, 3),
    ]
    [(_, hist)] = _points(got, "mlwatch.prediction.duration")
    assert hist.count == 15 and sum(hist.bucket_counts) == 15
    assert hist.bucket_counts[DURATION_BUCKETS.index(0.001)] == 15  # every call took 1 ms
    assert hist.sum == pytest.approx(0.015) and hist.min == hist.max == 0.001


def test_feature_gauges_describe_the_last_window() -> None:
    """Missing share and quantiles per feature come from the latest window, merged across segments."""
    wm = WindowMetrics(health=lambda: _HEALTH)
    old = mlwatch.profile({"a": [100.0] * 10}, model="fg")
    old.window_start = 0.0
    de = mlwatch.profile({"a": [1.0, 2.0, None, 4.0]}, model="fg", segment={"c": "DE"})
    fr = mlwatch.profile({"a": [5.0, None, None, 8.0]}, model="fg", segment={"c": "FR"})
    for p in (de, fr):
        p.window_start = 60.0
    wm.observe([old, de, fr])
    got = wm.collect()
    assert _points(got, "mlwatch.feature.missing_share") == [({"mlwatch.model": "fg", "mlwatch.feature": "a"}, 3 / 8)]
    quantiles = {attrs["mlwatch.quantile"]: v for attrs, v in _points(got, "mlwatch.feature.quantile")}
    assert set(quantiles) == {0.05, 0.5, 0.95}
    assert quantiles[0.05] == 1.0 and quantiles[0.95] == 8.0


def test_drift_gauges_with_a_reference(tmp_path: Any, rng: np.random.Generator) -> None:
    """With reference={model: path}, drift scores, verdicts and the drifted share become gauges."""
    ref = mlwatch.profile({"shifted": rng.normal(0, 1, 5000), "stable": rng.normal(0, 1, 5000)}, model="dr")
    path = tmp_path / "ref.mlw"
    ref.save(path)
    cur = mlwatch.profile({"shifted": rng.normal(3, 1, 5000), "stable": rng.normal(0, 1, 5000)}, model="dr")
    cur.window_start = 0.0
    wm = WindowMetrics(reference={"dr": str(path)}, health=lambda: _HEALTH)
    wm.observe([cur])
    got = wm.collect()
    detected = {attrs["mlwatch.feature"]: v for attrs, v in _points(got, "mlwatch.drift.detected")}
    assert detected == {"shifted": 1, "stable": 0}
    assert all("mlwatch.drift.method" in attrs for attrs, _ in _points(got, "mlwatch.drift.score"))
    assert _points(got, "mlwatch.drift.share") == [({"mlwatch.model": "dr"}, 0.5)]


def test_process_and_health_metrics() -> None:
    """Process CPU time and memory, plus mlwatch's drops, errors, failures, queue and cost, by label."""
    got = WindowMetrics(health=lambda: _HEALTH).collect()
    modes = {attrs["cpu.mode"] for attrs, _ in _points(got, "process.cpu.time")}
    assert modes == {"user", "system"}
    if os.path.exists("/proc/self/statm"):
        [(_, rss)] = _points(got, "process.memory.usage")
        assert rss > 10 * 1024 * 1024
    assert _points(got, "mlwatch.dropped") == [({"mlwatch.reason": "buffer_full"}, 3)]
    assert _points(got, "mlwatch.internal_errors") == [({"mlwatch.stage": "aggregate"}, 1)]
    assert _points(got, "mlwatch.export.failures") == [({"error.type": "http_503"}, 2)]
    assert _points(got, "mlwatch.queue.size") == [({}, 17)]
    assert _points(got, "mlwatch.export.pending") == [({}, 1)]
    assert _points(got, "mlwatch.worker.cpu.time") == [({}, 0.25)]


def test_metrics_reach_an_otlp_receiver() -> None:
    """The exporter sends the metrics with the official OTLP exporter: names, units, cumulative temporality."""
    with Receiver() as rx:
        exp = OtlpExporter(rx.url)
        exp.export([window_profile("otlp_metrics", 12)])
        assert exp.force_flush(5)
        exp.shutdown()
        got = rx.metrics()
    [duration] = got["mlwatch.prediction.duration"]
    assert duration.unit == "s"
    assert duration.histogram.aggregation_temporality == 2  # CUMULATIVE
    [dp] = duration.histogram.data_points
    assert dp.count == 12 and list(dp.explicit_bounds) == list(DURATION_BUCKETS)
    assert {kv.key: any_value(kv.value) for kv in dp.attributes}["mlwatch.model"] == "otlp_metrics"
    [calls] = got["mlwatch.prediction.calls"]
    assert calls.sum.is_monotonic and calls.sum.data_points[0].as_int == 12
    assert {"process.cpu.time", "mlwatch.worker.cpu.time", "mlwatch.queue.size"} <= set(got)


def test_observable_instruments_on_an_application_meter() -> None:
    """register(): every metric but the histogram as an observable instrument of the given Meter."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    wm = WindowMetrics(health=lambda: _HEALTH)
    wm.register(provider.get_meter("mlwatch"))
    wm.observe([window_profile("observable", 4)])
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "mlwatch.prediction.calls" in names and "mlwatch.feature.missing_share" in names
    assert "mlwatch.prediction.duration" not in names  # the OTel API has no observable histogram
    assert names <= {s.name for s in all_specs()}
    again = WindowMetrics(health=lambda: _HEALTH)  # a reconfigured exporter: same meter, new state
    again.register(provider.get_meter("mlwatch"))
    again.observe([window_profile("observable", 9)])
    data = reader.get_metrics_data()
    assert data is not None
    calls = [dp.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == "mlwatch.prediction.calls" for dp in m.data.data_points]
    assert calls == [9]  # read once, from the latest state: no duplicate instruments
    provider.shutdown()


def test_views_and_live_readings() -> None:
    """add_view(): histograms derived from one model's closed windows, cumulative per attribute set; add_live():
    a value read at collection, also as an instrument on a meter registered before it was added."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    size = MetricSpec("test.view.size", "histogram", "By", "A derived histogram.", (1.0, 10.0))
    live = MetricSpec("test.live.count", "updown", "{thing}", "A value read at collection.")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    wm = WindowMetrics(health=lambda: _HEALTH)
    wm.register(provider.get_meter("mlwatch"))
    try:
        add_view("viewed", [size], lambda p: [(size, {"side": p.segment_key}, Distribution(p.latency, 123.0))] if p.latency else [])
        add_live(live, lambda: [({"side": "a"}, 3)])
        wm.observe([window_profile("viewed", 4, latency=5.0), window_profile("viewed", 2, latency=0.5, window=60.0), window_profile("other", 3)])
        got = {m.name: m for m in wm.to_sdk_metrics()}
        [point] = got["test.view.size"].data.data_points
        assert (got["test.view.size"].unit, dict(point.attributes), point.count, point.sum) == ("By", {"side": ""}, 6, 246.0)
        assert (list(point.explicit_bounds), list(point.bucket_counts)) == ([1.0, 10.0], [2, 4, 0])
        assert [(dict(p.attributes), p.value) for p in got["test.live.count"].data.data_points] == [({"side": "a"}, 3)]
        data = reader.get_metrics_data()
        assert data is not None
        observed = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        assert [p.value for p in observed["test.live.count"].data.data_points] == [3]
        assert "test.view.size" not in observed  # the OTel API has no observable histogram
    finally:
        _otel_metrics._VIEWS.pop("viewed", None)
        _otel_metrics._LIVE.pop(live.name, None)
        provider.shutdown()


def test_observe_never_raises() -> None:
    """A broken profile or reference is counted as an internal error, never raised into the exporter."""
    d = HealthDelta()
    wm = WindowMetrics(reference={"broken": "/nonexistent.mlw"}, health=lambda: _HEALTH)
    wm.observe([Profile("broken")])
    wm.observe([object()])  # type: ignore[list-item]
    assert "mlwatch.prediction.calls" in wm.collect()
    assert d.errors() == {"metrics_reference": 1, "metrics_observe": 1}


def test_model_quality_gauge() -> None:
    """Quality parts of window profiles become mlwatch.model.quality points by metric name."""
    from mlwatch.model_quality import QualitySketch

    wm = WindowMetrics(health=dict)
    for labels, preds in (([1, 0], [1, 0]), ([1, 1], [0, 1])):
        p = Profile("qm", version="1", window_start=0.0, window_end=60.0)
        p.quality = QualitySketch()
        p.quality.add_classification(labels, preds)
        wm.observe([p])
    points = {pt.attributes["mlwatch.metric"]: pt.value for pt in wm.collect()["mlwatch.model.quality"]}
    assert points["accuracy"] == 0.75 and points["n_labeled"] == 4 and "precision[1]" not in points


def test_segment_quality_gauge_bounded() -> None:
    """Per-segment quality becomes mlwatch.segment.quality points; segments beyond the cap fold into __other__."""
    from mlwatch.model_quality import QualitySketch

    wm = WindowMetrics(health=dict, max_segments=2)
    for country, labels, preds in (("DE", [1, 0], [1, 0]), ("FR", [1, 1], [0, 1]), ("IT", [1], [1]), ("ES", [0], [1]),
                                   ("DE", [1, 1], [1, 1])):
        p = Profile("qs", version="1", segment={"country": country}, window_start=0.0, window_end=60.0)
        p.quality = QualitySketch()
        p.quality.add_classification(labels, preds)
        wm.observe([p])
    points = {(pt.attributes["mlwatch.segment"], pt.attributes["mlwatch.metric"]): pt.value
              for pt in wm.collect()["mlwatch.segment.quality"]}
    assert {seg for seg, _ in points} == {"country=DE", "country=FR", "country=__other__"}
    assert points[("country=DE", "accuracy")] == 1.0 and points[("country=FR", "accuracy")] == 0.5
    assert points[("country=__other__", "accuracy")] == 0.5 and points[("country=__other__", "n_labeled")] == 2
    overall = {pt.attributes["mlwatch.metric"]: pt.value for pt in wm.collect()["mlwatch.model.quality"]}
    assert overall["n_labeled"] == 8 and "mlwatch.segment" not in wm.collect()["mlwatch.model.quality"][0].attributes
