"""Fairness gaps across a protected segment equal the rates computed on the raw data."""

from __future__ import annotations

import numpy as np
import pytest

sk_metrics = pytest.importorskip("sklearn.metrics")

from mlwatch import Profile  # noqa: E402
from mlwatch.fairness import fairness, parse_segment_key  # noqa: E402
from mlwatch.model_quality import ModelQuality, QualitySketch  # noqa: E402


def _data(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for group, n, bias in (("f", 3000, 0.0), ("m", 5000, 0.08), ("x", 40, 0.2)):
        y = rng.integers(0, 2, n)
        p = (rng.random(n) < 0.25 + 0.5 * y + bias).astype(int)
        out[group] = (y, p)
    return out


def test_gaps_match_raw_rates(rng: np.random.Generator) -> None:
    """Statistical parity, predictive parity and equalized-odds gaps equal sklearn's per-group rates."""
    data = _data(rng)
    profiles = []
    for group, (y, p) in data.items():
        prof = Profile("credit", segment={"gender": group, "region": "eu"})
        prof.quality = QualitySketch()
        prof.quality.add_classification(y.tolist(), p.tolist())
        profiles.append(prof)
    report = fairness(profiles, "gender", reference="f")
    sel = {g: p.mean() for g, (y, p) in data.items()}
    prec = {g: sk_metrics.precision_score(y, p) for g, (y, p) in data.items()}
    tpr = {g: sk_metrics.recall_score(y, p) for g, (y, p) in data.items()}
    fpr = {g: ((p == 1) & (y == 0)).sum() / (y == 0).sum() for g, (y, p) in data.items()}
    assert report.statistical_parity_difference == pytest.approx(max(sel.values()) - min(sel.values()), abs=1e-12)
    assert report.predictive_parity_difference == pytest.approx(max(prec.values()) - min(prec.values()), abs=1e-12)
    assert report.tpr_difference == pytest.approx(max(tpr.values()) - min(tpr.values()), abs=1e-12)
    assert report.fpr_difference == pytest.approx(max(fpr.values()) - min(fpr.values()), abs=1e-12)
    assert report.groups["x"].n == 40  # small groups are visible
    assert report.vs_reference["m"]["tpr_difference"] == pytest.approx(tpr["m"] - tpr["f"], abs=1e-12)
    small_out = fairness(profiles, "gender", min_group_size=100)
    assert small_out.tpr_difference == pytest.approx(abs(tpr["m"] - tpr["f"]), abs=1e-12)
    assert "gender" in str(report) and "statistical_parity_difference" in report.to_dict()


def test_from_model_quality_and_segment_keys() -> None:
    """fairness() takes a ModelQuality; segment keys parse into dicts."""
    a, b = QualitySketch(), QualitySketch()
    a.add_classification([1, 0], [1, 1])
    b.add_classification([1, 0], [0, 0])
    mq = ModelQuality("m", a.merge(b), {"group=a": a, "group=b": b})
    assert fairness(mq, "group").statistical_parity_difference == 1.0
    assert parse_segment_key("a=1,b=x") == {"a": "1", "b": "x"}
