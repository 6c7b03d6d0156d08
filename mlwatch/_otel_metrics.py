"""OTLP metrics built from closed window profiles, at collection time.

What: `WindowMetrics` folds each batch of closed window profiles into a small state (cumulative
calls, errors by ``error.type`` and a prediction-duration histogram per model, version and
segment; running model quality from outcomes per model and version, and per segment; the last
window's per-feature missing share, quantiles and drift per model and version) and turns it,
when collected, into OpenTelemetry metric data together with the process's CPU time and
resident memory and mlwatch's own health. Two ways out:

- `to_sdk_metrics()`: OpenTelemetry SDK `Metric` objects, exported by mlwatch's exporter with the
  official OTLP/HTTP metric exporter right after each window's log records. This plays the role
  of the specification's ``MetricProducer``, which the Python SDK (1.45) does not offer yet.
- `register()`: observable instruments on an application's own `Meter` (the
  ``use_global_providers`` option); their callbacks read the same state. The OTel API has no
  observable histogram, so this path carries everything except the histograms.

Other parts of mlwatch add metrics of their own without this module knowing them (the HTTP
integration's OpenTelemetry semantic-convention metrics, ``http.server.request.duration`` and
friends): `add_view()` derives histograms from the closed windows of one model (folded like the
rest, cumulatively per attribute set), `add_live()` reads a value when metrics are collected (the
requests in flight right now).

Why: per-call ``record()`` on OTel instruments costs 9-17 µs a call (measured, DESIGN.md), far
more than mlwatch's whole hot path; the window profile already holds everything (its latency
KLL sketch gives the histogram's bucket counts), so metrics cost nothing per call.

Histogram buckets come from the latency sketch's CDF: exact while a window has at most k
(default 200) calls, within the KLL rank error beyond. Its sum is estimated from the sketch
(n times the mean of 64 evenly spaced quantiles); min and max are exact.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlwatch._convention import (
    ATTR_DRIFT_METHOD,
    ATTR_FEATURE,
    ATTR_METRIC,
    ATTR_MODEL,
    ATTR_MODEL_VERSION,
    ATTR_QUANTILE,
    ATTR_REASON,
    ATTR_SEGMENT,
    ATTR_STAGE,
)
from mlwatch._health import HEALTH, guard
from mlwatch._sketches import KllSketch
from mlwatch.model_quality import QualitySketch
from mlwatch.profile import Profile

__all__ = [
    "DURATION_BUCKETS",
    "FEATURE_QUANTILES",
    "SPECS",
    "Distribution",
    "HistogramValue",
    "MetricSpec",
    "Point",
    "View",
    "WindowMetrics",
    "add_live",
    "add_view",
]

#: Bucket bounds (seconds) of ``mlwatch.prediction.duration``: OTel's HTTP duration advice,
#: extended below 5 ms because in-process models often answer in microseconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
#: Quantiles reported per numeric input feature.
FEATURE_QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)
#: Distinct (model, version, segment) series kept for cumulative metrics; beyond, new ones are
#: dropped and counted (segments are bounded per window, not across a process's lifetime).
MAX_SERIES = 2000

Kind = Literal["counter", "updown", "gauge", "histogram"]
AttrValue = str | int | float | bool
Attrs = dict[str, AttrValue]


@dataclass(frozen=True)
class MetricSpec:
    """A metric mlwatch emits: OTel-style name, instrument kind, UCUM unit, description (and a histogram's bucket bounds)."""

    name: str
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] = DURATION_BUCKETS


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("mlwatch.prediction.duration", "histogram", "s", "Duration of monitored model calls."),
    MetricSpec("mlwatch.prediction.calls", "counter", "{call}", "Monitored model calls."),
    MetricSpec("mlwatch.prediction.errors", "counter", "{error}", "Monitored model calls that raised, by error.type."),
    MetricSpec("mlwatch.feature.missing_share", "gauge", "1", "Share of missing values of an input feature in the last window."),
    MetricSpec("mlwatch.feature.quantile", "gauge", "", "Quantiles of a numeric input feature in the last window."),
    MetricSpec("mlwatch.drift.score", "gauge", "1", "Drift statistic of a feature against the reference profile (last window)."),
    MetricSpec("mlwatch.drift.detected", "gauge", "1", "1 when a feature drifted against the reference profile in the last window."),
    MetricSpec("mlwatch.drift.share", "gauge", "1", "Share of compared features that drifted in the last window."),
    MetricSpec("mlwatch.model.quality", "gauge", "1", "Model quality from outcomes (accuracy, roc_auc, mae, ...) since the process started, by mlwatch.metric."),
    MetricSpec("mlwatch.segment.quality", "gauge", "1",
               "Model quality from outcomes per segment since the process started, by mlwatch.metric and mlwatch.segment."),
    MetricSpec("process.cpu.time", "counter", "s", "CPU time of the process, by cpu.mode."),
    MetricSpec("process.memory.usage", "updown", "By", "Resident memory of the process."),
    MetricSpec("mlwatch.dropped", "counter", "{record}", "Records mlwatch dropped, by reason."),
    MetricSpec("mlwatch.internal_errors", "counter", "{error}", "Errors inside mlwatch (counted, never raised), by stage."),
    MetricSpec("mlwatch.export.failures", "counter", "{failure}", "Failed exports, by error.type."),
    MetricSpec("mlwatch.queue.size", "updown", "{record}", "Calls buffered and not yet aggregated."),
    MetricSpec("mlwatch.export.pending", "updown", "{profile}", "Window profiles waiting for export."),
    MetricSpec("mlwatch.worker.cpu.time", "counter", "s", "CPU time spent in mlwatch's background threads (aggregation and export)."),
)


@dataclass(frozen=True)
class Distribution:
    """The values of one histogram point of one window: their KLL sketch, and their exact sum when known (else estimated from the sketch)."""

    sketch: KllSketch
    total: float | None = None


#: A view: from one closed window profile of its model, the histogram points it adds, as
#: (metric, attributes, distribution). Folded cumulatively per (metric, attributes).
View = Callable[[Profile], Iterable[tuple[MetricSpec, Attrs, Distribution]]]
#: A live metric's reading: (attributes, value) pairs, read when metrics are collected.
Reading = Callable[[], Iterable[tuple[Attrs, int | float]]]

_VIEWS: dict[str, tuple[tuple[MetricSpec, ...], View]] = {}
_LIVE: dict[str, tuple[MetricSpec, Reading]] = {}


def add_view(model: str, specs: Sequence[MetricSpec], view: View) -> None:
    """Derive the histograms `specs` from every closed window of `model` with `view` (replaces that model's view)."""
    _VIEWS[model] = (tuple(specs), view)


def add_live(spec: MetricSpec, reading: Reading) -> None:
    """Report `spec` (a counter, up-down counter or gauge) from `reading()` at each collection (replaces a reading of that name)."""
    _LIVE[spec.name] = (spec, reading)
    with _REGISTRY_LOCK:
        slots = list(_REGISTRY.values())
    for meter, current, created in slots:  # meters that already carry mlwatch's instruments get this one too
        with guard("metrics_register"):
            _create_instruments(meter, current, created)


def all_specs() -> list[MetricSpec]:
    """mlwatch's own metrics, then those of the views and live readings added so far."""
    out = list(SPECS)
    seen = {s.name for s in out}
    for spec in [s for specs, _ in _VIEWS.values() for s in specs] + [spec for spec, _ in _LIVE.values()]:
        if spec.name not in seen:
            seen.add(spec.name)
            out.append(spec)
    return out


@dataclass(frozen=True)
class HistogramValue:
    """A cumulative explicit-bucket histogram (``bucket_counts`` has ``len(bounds) + 1`` entries)."""

    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    bounds: tuple[float, ...]
    min: float
    max: float


@dataclass(frozen=True)
class Point:
    """One data point: its attributes, its value, and when its accumulation started (ns)."""

    attributes: Attrs
    value: float | int | HistogramValue
    start_ns: int


@dataclass
class _Series:
    """Cumulative state of one (model, version, segment)."""

    attrs: Attrs
    start_ns: int
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    count: int = 0
    sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    min: float = float("inf")
    max: float = float("-inf")


@dataclass
class _Hist:
    """Cumulative explicit-bucket histogram of one (view metric, attributes)."""

    attrs: Attrs
    start_ns: int
    bounds: tuple[float, ...]
    buckets: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")


@dataclass
class _Last:
    """Last-window gauges of one (model, version)."""

    attrs: Attrs
    missing: dict[str, float] = field(default_factory=dict)
    quantiles: dict[str, tuple[float, ...]] = field(default_factory=dict)
    drift: list[tuple[str, str, float, bool]] = field(default_factory=list)  # feature, method, score, drifted
    drift_share: float | None = None


def _base_attrs(p: Profile) -> Attrs:
    attrs: Attrs = {ATTR_MODEL: p.model}
    if p.version is not None:
        attrs[ATTR_MODEL_VERSION] = p.version
    return attrs


def bucket_counts(latency: KllSketch, bounds: Sequence[float] = DURATION_BUCKETS) -> list[int]:
    """Counts per explicit bucket ``(b[i-1], b[i]]`` from a KLL sketch, summing exactly to its n."""
    n = latency.n
    if n == 0:
        return [0] * (len(bounds) + 1)
    # OTel buckets include their upper bound: ask for the share of values <= each bound.
    ranks = np.concatenate(([0.0], latency.cdf(list(bounds), inclusive=True)))
    ranks[-1] = 1.0
    raw = np.diff(ranks) * n
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:  # largest remainders get the missing units
        for i in np.argsort(-(raw - counts), kind="stable")[:short]:
            counts[i] += 1
    return [int(c) for c in counts]


def _estimated_sum(latency: KllSketch) -> float:
    ranks = (np.arange(64) + 0.5) / 64
    return float(np.mean(latency.quantiles(list(ranks))) * latency.n)


def process_usage() -> tuple[float, float, int | None]:
    """(user CPU seconds, system CPU seconds, resident bytes or None where unknown)."""
    t = os.times()
    rss: int | None = None
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/statm", "rb") as fh:
                rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            rss = None
    return t.user, t.system, rss


class WindowMetrics:
    """Metric state folded from closed windows; collected into OTel data on demand (thread-safe).

    - `reference`: ``{model: Profile or path to a profile file}`` for drift gauges.
    - `health`: returns the ``mlwatch.health()`` dict (injectable for tests).
    - `max_segments`: segments with their own ``mlwatch.segment.quality`` points per model and
      version; later ones are folded into the ``__other__`` segment. None: the ``max_segments``
      setting of `mlwatch.configure()` (the same cap as segments per window).
    """

    def __init__(
        self,
        *,
        reference: Mapping[str, Profile | str | os.PathLike[str]] | None = None,
        health: Callable[[], Mapping[str, Any]] | None = None,
        max_segments: int | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str | None, str], _Series] = {}
        self._views: dict[tuple[str, tuple[tuple[str, AttrValue], ...]], _Hist] = {}
        self._last: dict[tuple[str, str | None], _Last] = {}
        self._reference_sources = dict(reference or {})
        self._references: dict[str, Profile | None] = {}
        self._quality: dict[tuple[str, str | None], tuple[Attrs, QualitySketch]] = {}
        self._segment_quality: dict[tuple[str, str | None, str], tuple[Attrs, QualitySketch]] = {}
        self._segments: dict[tuple[str, str | None], int] = {}  # segments with quality per (model, version)
        self._max_segments = max_segments
        self._health = health
        self.start_ns = time.time_ns()
        self._cache: tuple[float, dict[str, list[Point]]] | None = None

    # ------------------------------------------------------------------ fold (exporter's thread)
    def observe(self, profiles: Sequence[Profile]) -> None:
        """Fold one batch of closed window profiles in. Never raises (errors are counted)."""
        with guard("metrics_observe"):
            now = time.time_ns()
            latest: dict[tuple[str, str | None], list[Profile]] = {}
            with self._lock:
                for p in profiles:
                    self._fold_series(p, now)
                    if p.model in _VIEWS:
                        self._fold_view(p, now)
                    if p.quality is not None and not p.quality.is_empty():
                        self._fold_quality(p)
                    key = (p.model, p.version)
                    group = latest.setdefault(key, [])
                    if group and (group[0].window_start or 0) < (p.window_start or 0):
                        group.clear()
                    if not group or group[0].window_start == p.window_start:
                        group.append(p)
            for (model, version), group in latest.items():
                last = self._window_gauges(group)
                with self._lock:
                    self._last[(model, version)] = last
                    self._cache = None

    def _fold_series(self, p: Profile, now: int) -> None:
        key = (p.model, p.version, p.segment_key)
        s = self._series.get(key)
        if s is None:
            if len(self._series) >= MAX_SERIES:
                HEALTH.count_dropped("metrics_series_limit", 1)
                return
            s = self._series[key] = _Series({**_base_attrs(p), ATTR_SEGMENT: p.segment_key}, now)
        s.calls += p.calls
        for name, n in p.errors.items():
            s.errors[name] = s.errors.get(name, 0) + n
        lat = p.latency
        if lat is not None and lat.n:
            for i, c in enumerate(bucket_counts(lat)):
                s.buckets[i] += c
            s.count += lat.n
            s.sum += _estimated_sum(lat)
            s.min = min(s.min, lat.min)
            s.max = max(s.max, lat.max)

    def _fold_view(self, p: Profile, now: int) -> None:
        with guard("metrics_view"):
            for spec, attrs, dist in _VIEWS[p.model][1](p):
                sketch = dist.sketch
                if not sketch.n:
                    continue
                key = (spec.name, tuple(sorted(attrs.items())))
                h = self._views.get(key)
                if h is None:
                    if len(self._views) >= MAX_SERIES:
                        HEALTH.count_dropped("metrics_series_limit", 1)
                        continue
                    h = self._views[key] = _Hist(dict(attrs), now, spec.buckets, [0] * (len(spec.buckets) + 1))
                for i, c in enumerate(bucket_counts(sketch, h.bounds)):
                    h.buckets[i] += c
                h.count += sketch.n
                h.sum += _estimated_sum(sketch) if dist.total is None else dist.total
                h.min = min(h.min, sketch.min)
                h.max = max(h.max, sketch.max)

    def _fold_quality(self, p: Profile) -> None:
        """Running model quality per (model, version): outcomes arrive late, so not per window."""
        key = (p.model, p.version)
        have = self._quality.get(key)
        if have is None:
            if len(self._quality) >= MAX_SERIES:
                HEALTH.count_dropped("metrics_series_limit", 1)
                return
            have = self._quality[key] = (_base_attrs(p), QualitySketch())
        assert p.quality is not None
        have[1].merge_in(p.quality)
        if p.segment:
            self._fold_segment_quality(p)

    def _fold_segment_quality(self, p: Profile) -> None:
        """Running quality per segment, at most `max_segments` per (model, version), then ``__other__``."""
        from mlwatch._runtime import OTHER_SEGMENT, RUNTIME

        cap = self._max_segments if self._max_segments is not None else RUNTIME.settings.max_segments
        segment = p.segment
        key = (p.model, p.version, p.segment_key)
        if key not in self._segment_quality and self._segments.get(key[:2], 0) >= cap:
            segment = dict.fromkeys(segment, OTHER_SEGMENT)
            key = (p.model, p.version, ",".join(f"{k}={v}" for k, v in sorted(segment.items())))
        have = self._segment_quality.get(key)
        if have is None:
            if len(self._segment_quality) >= MAX_SERIES:
                HEALTH.count_dropped("metrics_series_limit", 1)
                return
            self._segments[key[:2]] = self._segments.get(key[:2], 0) + 1
            have = self._segment_quality[key] = ({**_base_attrs(p), ATTR_SEGMENT: key[2]}, QualitySketch())
        assert p.quality is not None
        have[1].merge_in(p.quality)

    def _window_gauges(self, group: list[Profile]) -> _Last:
        last = _Last(_base_attrs(group[0]))
        names = {name for p in group for name in p.columns}
        for name in sorted(names):
            cols = [p.columns[name] for p in group if name in p.columns]
            count = sum(c.count for c in cols)
            last.missing[name] = sum(c.missing for c in cols) / count if count else 0.0
            sketches = [c.numeric.kll for c in cols if c.numeric is not None and c.numeric.n]
            if sketches:
                kll = sketches[0].copy()
                for other in sketches[1:]:
                    kll.merge(other)
                last.quantiles[name] = tuple(float(q) for q in kll.quantiles(list(FEATURE_QUANTILES)))
        ref = self._reference(group[0].model)
        if ref is not None:
            self._drift(last, ref, group)
        return last

    def _reference(self, model: str) -> Profile | None:
        if model not in self._references:
            source = self._reference_sources.get(model)
            ref: Profile | None = None
            if source is not None:
                with guard("metrics_reference"):
                    ref = source if isinstance(source, Profile) else Profile.load(source)
            self._references[model] = ref
        return self._references[model]

    def _drift(self, last: _Last, ref: Profile, group: list[Profile]) -> None:
        with guard("metrics_drift"):
            from mlwatch.drift import drift
            from mlwatch.profile import merge

            current = group[0] if len(group) == 1 else merge(group)
            report = drift(ref, current, include_outputs=False)
            for c in report.compared:
                if c.value is not None and c.method is not None:
                    last.drift.append((c.column, c.method, float(c.value), bool(c.drifted)))
            last.drift_share = report.share

    # ------------------------------------------------------------------ collect (any thread)
    def collect(self) -> dict[str, list[Point]]:
        """Every metric's points right now: profile-derived state, process usage, mlwatch health."""
        out: dict[str, list[Point]] = {s.name: [] for s in all_specs()}
        with self._lock:
            for (name, _), hist in self._views.items():
                hv = HistogramValue(hist.count, hist.sum, tuple(hist.buckets), hist.bounds, hist.min, hist.max)
                out.setdefault(name, []).append(Point(dict(hist.attrs), hv, hist.start_ns))
            for s in self._series.values():
                out["mlwatch.prediction.calls"].append(Point(dict(s.attrs), s.calls, s.start_ns))
                for etype, n in sorted(s.errors.items()):
                    out["mlwatch.prediction.errors"].append(Point({**s.attrs, "error.type": etype}, n, s.start_ns))
                if s.count:
                    h = HistogramValue(s.count, s.sum, tuple(s.buckets), DURATION_BUCKETS, s.min, s.max)
                    out["mlwatch.prediction.duration"].append(Point(dict(s.attrs), h, s.start_ns))
            for last in self._last.values():
                for feature, share in last.missing.items():
                    out["mlwatch.feature.missing_share"].append(Point({**last.attrs, ATTR_FEATURE: feature}, share, self.start_ns))
                for feature, qs in last.quantiles.items():
                    for q, v in zip(FEATURE_QUANTILES, qs, strict=True):
                        attrs: Attrs = {**last.attrs, ATTR_FEATURE: feature, ATTR_QUANTILE: q}
                        out["mlwatch.feature.quantile"].append(Point(attrs, v, self.start_ns))
                for feature, method, score, drifted in last.drift:
                    attrs = {**last.attrs, ATTR_FEATURE: feature, ATTR_DRIFT_METHOD: method}
                    out["mlwatch.drift.score"].append(Point(attrs, score, self.start_ns))
                    out["mlwatch.drift.detected"].append(Point(attrs, int(drifted), self.start_ns))
                if last.drift_share is not None:
                    out["mlwatch.drift.share"].append(Point(dict(last.attrs), last.drift_share, self.start_ns))
            for name, sketches in (("mlwatch.model.quality", self._quality), ("mlwatch.segment.quality", self._segment_quality)):
                for q_attrs, sketch in sketches.values():
                    for metric, value in sketch.to_dict().items():
                        if "[" not in metric and math.isfinite(value):  # per-class entries would multiply series
                            out[name].append(Point({**q_attrs, ATTR_METRIC: metric}, value, self.start_ns))
        user, system, rss = process_usage()
        out["process.cpu.time"] += [Point({"cpu.mode": "user"}, user, self.start_ns), Point({"cpu.mode": "system"}, system, self.start_ns)]
        if rss is not None:
            out["process.memory.usage"].append(Point({}, rss, self.start_ns))
        self._collect_health(out)
        for spec, reading in list(_LIVE.values()):
            with guard("metrics_live"):
                out[spec.name] = [Point(dict(attrs), value, self.start_ns) for attrs, value in reading()]
        return out

    def _collect_health(self, out: dict[str, list[Point]]) -> None:
        if self._health is None:
            from mlwatch.lifecycle import health

            snap: Mapping[str, Any] = health()
        else:
            snap = self._health()
        t0 = self.start_ns
        for reason, n in sorted(snap.get("dropped", {}).items()):
            out["mlwatch.dropped"].append(Point({ATTR_REASON: reason}, n, t0))
        for stage, n in sorted(snap.get("internal_errors", {}).items()):
            out["mlwatch.internal_errors"].append(Point({ATTR_STAGE: stage}, n, t0))
        for reason, n in sorted(snap.get("export_failures", {}).items()):
            out["mlwatch.export.failures"].append(Point({"error.type": reason}, n, t0))
        out["mlwatch.queue.size"].append(Point({}, int(snap.get("queued_records", 0)), t0))
        if "export_pending" in snap:
            out["mlwatch.export.pending"].append(Point({}, int(snap["export_pending"]), t0))
        out["mlwatch.worker.cpu.time"].append(Point({}, float(snap.get("worker_cpu_seconds", 0.0)), t0))

    def _collect_cached(self, max_age: float = 1.0) -> dict[str, list[Point]]:
        """`collect()` shared by the callbacks of one collection cycle (one per instrument)."""
        now = time.monotonic()
        cache = self._cache
        if cache is not None and now - cache[0] < max_age:
            return cache[1]
        data = self.collect()
        self._cache = (now, data)
        return data

    # ------------------------------------------------------------------ ways out
    def to_sdk_metrics(self, collected: Mapping[str, list[Point]] | None = None) -> list[Any]:
        """OpenTelemetry SDK `Metric` objects (cumulative temporality) for `MetricsData`."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            HistogramDataPoint,
            Metric,
            NumberDataPoint,
            Sum,
        )

        data = self.collect() if collected is None else collected
        now = time.time_ns()
        cumulative = AggregationTemporality.CUMULATIVE
        metrics: list[Any] = []
        for spec in all_specs():
            points = data.get(spec.name) or []
            if not points:
                continue
            payload: Any
            if spec.kind == "histogram":
                hps = []
                for p in points:
                    h = p.value
                    assert isinstance(h, HistogramValue)
                    hps.append(HistogramDataPoint(p.attributes, p.start_ns, now, h.count, h.sum, list(h.bucket_counts), list(h.bounds), h.min, h.max))
                payload = Histogram(hps, cumulative)
            else:
                nps = [NumberDataPoint(p.attributes, p.start_ns, now, _number(p.value)) for p in points]
                payload = Gauge(nps) if spec.kind == "gauge" else Sum(nps, cumulative, spec.kind == "counter")
            metrics.append(Metric(spec.name, spec.description, spec.unit, payload))
        return metrics

    def register(self, meter: Any) -> None:
        """Observable instruments on `meter` (an OTel API `Meter`) reading this state.

        Instruments cannot be removed from a meter, so they are created once per meter and read
        whichever `WindowMetrics` registered last (a reconfigured or forked exporter's new state).
        """
        with _REGISTRY_LOCK:
            slot = _REGISTRY.get(id(meter))
            if slot is not None and slot[0] is meter:
                slot[1][0] = self
                current, created = slot[1], slot[2]
            else:
                current, created = [self], set()
                _REGISTRY[id(meter)] = (meter, current, created)
        _create_instruments(meter, current, created)


def _create_instruments(meter: Any, current: list[WindowMetrics], created: set[str]) -> None:
    """The observable instruments of every metric known now that `meter` does not carry yet."""
    from opentelemetry.metrics import CallbackOptions, Observation

    def callback_for(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(_number(p.value), p.attributes) for p in current[0]._collect_cached().get(name, [])]
            except Exception as exc:
                HEALTH.count_error("metrics_callback", exc)
                return []

        return callback

    with _REGISTRY_LOCK:
        specs = [s for s in all_specs() if s.name not in created and s.kind != "histogram"]
        created.update(s.name for s in specs)
    for spec in specs:  # histograms: the OTel API has no observable histogram (see the module docstring)
        cb = [callback_for(spec.name)]
        if spec.kind == "counter":
            meter.create_observable_counter(spec.name, callbacks=cb, unit=spec.unit, description=spec.description)
        elif spec.kind == "updown":
            meter.create_observable_up_down_counter(spec.name, callbacks=cb, unit=spec.unit, description=spec.description)
        else:
            meter.create_observable_gauge(spec.name, callbacks=cb, unit=spec.unit, description=spec.description)


#: Meters that already carry mlwatch's observable instruments: id -> (meter, [current state], names created).
_REGISTRY: dict[int, tuple[Any, list[WindowMetrics], set[str]]] = {}
_REGISTRY_LOCK = threading.Lock()


def _number(value: float | int | HistogramValue) -> float | int:
    if isinstance(value, HistogramValue):
        raise TypeError("a histogram has no single number")
    return value
