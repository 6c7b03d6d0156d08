"""Model quality sketches: every metric against scikit-learn on the same raw data, merge and wire."""

from __future__ import annotations

import math

import numpy as np
import pytest

sk_metrics = pytest.importorskip("sklearn.metrics")

from mlwatch import Profile, ProfileFormatError  # noqa: E402
from mlwatch.model_quality import ModelQuality, QualitySketch  # noqa: E402


def _binary(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, s


def test_binary_counts_exact_and_auc_exact_while_small(rng: np.random.Generator) -> None:
    """Accuracy, precision, recall, F1 equal sklearn exactly; ROC AUC is exact while sketches hold every score."""
    y, s = _binary(rng, 150)
    q = QualitySketch()
    q.add_binary(y.tolist(), s)
    d = q.to_dict()
    p = (s >= 0.5).astype(int)
    assert d["accuracy"] == sk_metrics.accuracy_score(y, p)
    assert d["precision"] == pytest.approx(sk_metrics.precision_score(y, p), abs=1e-15)
    assert d["recall"] == pytest.approx(sk_metrics.recall_score(y, p), abs=1e-15)
    assert d["f1"] == pytest.approx(sk_metrics.f1_score(y, p), abs=1e-15)
    assert d["roc_auc"] == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)
    assert d["roc_auc_error"] == 0.0


def test_binary_auc_within_stated_bound_on_large_data(rng: np.random.Generator) -> None:
    """With 200k scores, merged from 20 batches, ROC AUC stays within the reported error bound."""
    y, s = _binary(rng, 200_000)
    parts = []
    for i in range(0, y.shape[0], 10_000):
        part = QualitySketch()
        part.add_binary(y[i : i + 10_000].tolist(), s[i : i + 10_000])
        parts.append(part)
    q = parts[0]
    for part in parts[1:]:
        q.merge_in(part)
    d = q.to_dict()
    assert d["accuracy"] == sk_metrics.accuracy_score(y, (s >= 0.5).astype(int))
    assert 0 < d["roc_auc_error"] < 0.06
    assert abs(d["roc_auc"] - sk_metrics.roc_auc_score(y, s)) <= d["roc_auc_error"]


def test_multiclass_macro_weighted_and_ovr_auc(rng: np.random.Generator) -> None:
    """Multiclass precision/recall/F1 (macro, weighted, per class) and one-vs-rest AUC equal sklearn."""
    n = 2000
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), y] += 0.4
    proba /= proba.sum(1, keepdims=True)
    pred = proba.argmax(1)
    q = QualitySketch()
    q.add_classification(y.tolist(), pred.tolist(), {c: proba[:, c] for c in range(3)})
    d = q.to_dict()
    for name, fn in (("precision", sk_metrics.precision_score), ("recall", sk_metrics.recall_score), ("f1", sk_metrics.f1_score)):
        assert d[name] == pytest.approx(fn(y, pred, average="macro"), abs=1e-12)
        assert d[f"{name}_weighted"] == pytest.approx(fn(y, pred, average="weighted"), abs=1e-12)
        assert d[f"{name}[1]"] == pytest.approx(fn(y, pred, average=None)[1], abs=1e-12)
    assert d["accuracy"] == sk_metrics.accuracy_score(y, pred)
    assert abs(d["roc_auc"] - sk_metrics.roc_auc_score(y, proba, multi_class="ovr")) <= max(d["roc_auc_error"], 1e-12)


def test_string_labels(rng: np.random.Generator) -> None:
    """String classes work like integers (per-class metrics keyed by the class)."""
    y = rng.choice(["cat", "dog", "emu"], 500)
    p = np.where(rng.random(500) < 0.7, y, rng.choice(["cat", "dog", "emu"], 500))
    q = QualitySketch()
    q.add_classification(y, p)
    d = q.to_dict()
    assert d["f1"] == pytest.approx(sk_metrics.f1_score(y, p, average="macro"), abs=1e-12)
    assert d["recall[emu]"] == pytest.approx(sk_metrics.recall_score(y, p, labels=["emu"], average=None)[0])


def test_regression_metrics(rng: np.random.Generator) -> None:
    """MAE, MSE, RMSE, MAPE and R² equal sklearn; the error median is within the KLL rank error."""
    y = rng.normal(10, 3, 50_000)
    p = y + rng.normal(0.2, 1, 50_000)
    q = QualitySketch()
    for i in range(0, 50_000, 5000):
        q.add_regression(p[i : i + 5000], y[i : i + 5000])
    d = q.to_dict()
    assert d["mae"] == pytest.approx(sk_metrics.mean_absolute_error(y, p), rel=1e-9)
    assert d["mse"] == pytest.approx(sk_metrics.mean_squared_error(y, p), rel=1e-9)
    assert d["rmse"] == pytest.approx(math.sqrt(sk_metrics.mean_squared_error(y, p)), rel=1e-9)
    assert d["mape"] == pytest.approx(sk_metrics.mean_absolute_percentage_error(y, p), rel=1e-9)
    assert d["r2"] == pytest.approx(sk_metrics.r2_score(y, p), rel=1e-9)
    err = np.sort(p - y)
    rank = np.searchsorted(err, d["error_p50"]) / err.shape[0]
    assert abs(rank - 0.5) <= d["error_quantile_rank_error"]


def test_ranking_metrics(rng: np.random.Generator) -> None:
    """NDCG@k equals sklearn's ndcg_score; MAP equals the mean of sklearn's average_precision_score."""
    rels = [rng.integers(0, 4, 12) for _ in range(200)]
    q = QualitySketch()
    for r in rels:
        q.add_ranking(r.tolist(), k=5)
    d = q.to_dict()
    scores = np.tile(np.arange(12, 0, -1), (200, 1))
    assert d["ndcg"] == pytest.approx(sk_metrics.ndcg_score(np.array(rels), scores, k=5), abs=1e-12)
    aps = [sk_metrics.average_precision_score(r > 0, np.arange(12, 0, -1)) if (r > 0).any() else 0.0 for r in rels]
    assert d["map"] == pytest.approx(float(np.mean(aps)), abs=1e-12)
    assert d["precision_at_k"] == pytest.approx(float(np.mean([(r[:5] > 0).mean() for r in rels])), abs=1e-12)


def test_merge_is_associative_and_commutative(rng: np.random.Generator) -> None:
    """(a+b)+c == a+(c+b) == the sketch of the union, on counting metrics."""
    y, s = _binary(rng, 3000)
    parts = []
    for i in range(3):
        q = QualitySketch()
        q.add_binary(y[i * 1000 : (i + 1) * 1000].tolist(), s[i * 1000 : (i + 1) * 1000])
        q.add_regression(s[i * 1000 : (i + 1) * 1000], y[i * 1000 : (i + 1) * 1000])
        parts.append(q)
    whole = QualitySketch()
    whole.add_binary(y.tolist(), s)
    whole.add_regression(s, y)
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[0].merge(parts[2].merge(parts[1]))
    for name in ("accuracy", "precision", "recall", "f1", "n_labeled"):
        assert left.to_dict()[name] == right.to_dict()[name] == whole.to_dict()[name]
    assert left.to_dict()["mae"] == pytest.approx(whole.to_dict()["mae"], rel=1e-12)


def test_wire_round_trip_version_2(rng: np.random.Generator) -> None:
    """A profile with quality is written as format version 2 and reads back with equal metrics."""
    y, s = _binary(rng, 500)
    p = Profile("fraud", segment={"country": "DE"}, window_start=0.0, window_end=60.0)
    p.quality = QualitySketch()
    p.quality.add_binary(y.tolist(), s)
    p.quality.add_regression(s, y)
    p.quality.add_ranking([1, 0, 2], k=3)
    p.quality.add_metric("clicks", [1.0, 0.0, 1.0])
    data = p.to_bytes()
    assert int.from_bytes(data[4:6], "little") == 2
    back = Profile.from_bytes(data)
    assert back.quality is not None
    assert back.quality.to_dict() == p.quality.to_dict()
    assert int.from_bytes(Profile("m").to_bytes()[4:6], "little") == 1  # no quality: readable by version-1 readers


def test_wire_rejects_inconsistent_quality(rng: np.random.Generator) -> None:
    """A quality sketch whose count disagrees with the header is rejected before use."""
    import json
    import struct

    from tests.test_wire import _reseal  # type: ignore[attr-defined]

    p = Profile("m")
    p.quality = QualitySketch()
    p.quality.add_regression([1.0, 2.0], [1.5, 2.5])
    data = p.to_bytes()
    head_len = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[12 : 12 + head_len])
    header["quality"]["regression"]["n"] = 3
    head = json.dumps(header).encode()
    forged = _reseal(data[:8] + struct.pack("<I", len(head)) + head + data[12 + head_len : -32])
    with pytest.raises(ProfileFormatError, match="n=2"):
        Profile.from_bytes(forged)


def test_report_prints_table(rng: np.random.Generator) -> None:
    """ModelQuality prints a readable table with one column per segment."""
    a, b = QualitySketch(), QualitySketch()
    a.add_classification([1, 0, 1], [1, 0, 0])
    b.add_classification([1, 1], [1, 1])
    mq = ModelQuality("fraud", a.merge(b), {"country=DE": a, "country=FR": b})
    text = str(mq)
    assert "accuracy" in text and "country=DE" in text and "country=FR" in text
    assert mq.to_dict()["accuracy"] == 0.8


def test_merge_property_counts_equal_union() -> None:
    """For any split of any labelled data, merging the parts' sketches gives the union's counting metrics."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pairs = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.floats(-1e6, 1e6)), min_size=1, max_size=60)

    @settings(max_examples=60, deadline=None)
    @given(pairs, st.integers(0, 60))
    def check(rows: list[tuple[int, int, float]], cut: int) -> None:
        def sketch(part: list[tuple[int, int, float]]) -> QualitySketch:
            q = QualitySketch()
            if part:
                q.add_classification([r[0] for r in part], [r[1] for r in part])
                q.add_regression([r[2] for r in part], [float(r[0]) for r in part])
            return q

        whole, merged = sketch(rows), sketch(rows[:cut]).merge(sketch(rows[cut:]))
        a, b = whole.to_dict(), merged.to_dict()
        assert a.keys() == b.keys()
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-9), name

    check()
