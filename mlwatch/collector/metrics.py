"""The collector's ``/metrics``: its own health and the latest drift verdicts, in Prometheus text format.

Written with prometheus_client on a registry owned by one collector (so tests get a fresh one).
Counters of requests and profiles are plain `Counter`s; numbers owned elsewhere (worker crashes,
429s, rollups built, the drift cache) are read at scrape time by `_LiveCollector`, so a feature
that disappears from the drift results disappears from the exposition too.

Drift series: ``mlwatch_drift_score`` (the chosen method's statistic), ``mlwatch_drift_p_value``
and ``mlwatch_drift_detected`` per {model, feature, role, method}; ``mlwatch_dataset_drift`` and
``mlwatch_dataset_drift_share`` per model; ``mlwatch_drift_window_start_seconds`` tells which
window was evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "CollectorMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class CollectorMetrics:
    """Every metric the collector exposes; `drift_results` is replaced by the evaluator."""

    def __init__(self, live: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.time()
        self.requests = Counter(
            "mlwatch_collector_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.profiles = Counter(
            "mlwatch_collector_profiles", "mlwatch.profile records received, by outcome", ["outcome"], registry=self.registry
        )
        self.rejections = Counter(
            "mlwatch_collector_rejections", "records or requests refused, by reason", ["reason"], registry=self.registry
        )
        self.ingest_bytes = Counter(
            "mlwatch_collector_ingest_bytes", "request body bytes after decompression", registry=self.registry
        )
        self.drift_results: dict[str, dict[str, Any]] = {}  # model -> compact drift result
        self.evaluations = 0
        self.evaluation_errors = 0
        self._live = live
        self.registry.register(_LiveCollector(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan


class _LiveCollector(Collector):
    def __init__(self, owner: CollectorMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        o = self.owner
        up = GaugeMetricFamily("mlwatch_collector_start_time_seconds", "when this collector started")
        up.add_metric([], o.started_at)
        yield up
        live = dict(o._live()) if o._live is not None else {}
        for name, value in sorted(live.items()):
            if name.endswith("_total"):
                fam: GaugeMetricFamily | CounterMetricFamily = CounterMetricFamily(name.removesuffix("_total"), name.replace("_", " "))
            else:
                fam = GaugeMetricFamily(name, name.replace("_", " "))
            fam.add_metric([], value)
            yield fam
        evals = CounterMetricFamily("mlwatch_collector_drift_evaluations", "drift evaluations run, by outcome", labels=["outcome"])
        evals.add_metric(["ok"], o.evaluations)
        evals.add_metric(["error"], o.evaluation_errors)
        yield evals
        labels = ["model", "feature", "role", "method"]
        score = GaugeMetricFamily("mlwatch_drift_score", "drift statistic of the chosen method, latest window vs reference", labels=labels)
        p_value = GaugeMetricFamily("mlwatch_drift_p_value", "p-value of the drift test (KS, chi-square)", labels=labels)
        detected = GaugeMetricFamily("mlwatch_drift_detected", "1 when the feature drifted in the latest window", labels=labels)
        dataset = GaugeMetricFamily("mlwatch_dataset_drift", "1 when the share of drifted features reaches the threshold", labels=["model"])
        share = GaugeMetricFamily("mlwatch_dataset_drift_share", "share of compared features that drifted", labels=["model"])
        window = GaugeMetricFamily("mlwatch_drift_window_start_seconds", "start of the window evaluated", labels=["model"])
        for model, result in sorted(o.drift_results.items()):
            dataset.add_metric([model], 1.0 if result["dataset_drift"] else 0.0)
            share.add_metric([model], float(result["share"]))
            window.add_metric([model], float(result["window_start"]))
            for col in result["columns"]:
                if col["status"] not in ("ok", "kind_mismatch"):
                    continue
                key = [model, col["column"], col["role"], col["method"] or ""]
                score.add_metric(key, _num(col["value"]))
                if col["p_value"] is not None:
                    p_value.add_metric(key, _num(col["p_value"]))
                detected.add_metric(key, 1.0 if col["drifted"] else 0.0)
        yield from (score, p_value, detected, dataset, share, window)
