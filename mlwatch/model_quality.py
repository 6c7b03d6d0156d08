"""Model quality from outcomes: a mergeable `QualitySketch` and the `ModelQuality` report.

Ground truth arrives late, so quality is measured from (prediction, label) pairs folded into
mergeable state, never from stored rows:

- classification: exact confusion counts per (label, predicted class) (accuracy, precision,
  recall and F1 per class, macro and weighted, exactly as scikit-learn computes them), plus, when
  scores are given, two KLL sketches per class (scores of that class's positives and negatives)
  for a threshold-free ROC AUC. The AUC is exact while both sketches hold every value
  (n <= k), and otherwise within ``roc_auc_error`` = the two sketches' rank-error bounds added
  (99 % confidence): AUC = P(S+ > S-) integrates one CDF against the other, and each CDF is off
  by at most its rank error.
- regression: exact sums (error, absolute error, squared error, absolute percentage error) and
  the label's mergeable moments (MAE, MSE, RMSE, MAPE, R², bias), plus a KLL sketch of the signed
  error (prediction - label) for error quantiles within the KLL rank error.
- ranking: per query NDCG@k, precision@k and average precision, summed (means are exact).
- proxy metrics / KPIs from `mlwatch.log_metric`: count, sum and a KLL sketch per name.

Everything merges associatively and commutatively (sums, and KLL's merge), so the quality of N
replicas or windows merged equals the quality of their union.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mlwatch._errors import ProfileMergeError
from mlwatch._sketches import DEFAULT_KLL_K, KllSketch

__all__ = [
    "ClassificationState",
    "MetricState",
    "ModelQuality",
    "QualitySketch",
    "RankingState",
    "RegressionState",
    "class_key",
]

#: sklearn's MAPE divides by max(|y|, eps) with this eps.
_EPS = float(np.finfo(np.float64).eps)


def class_key(value: Any) -> str:
    """A label or predicted class as a stable string: True/1/1.0 -> "1", "cat" -> "cat"."""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _kll_copy(sk: KllSketch | None) -> KllSketch | None:
    return None if sk is None else sk.copy()


def _kll_merge(mine: KllSketch | None, other: KllSketch | None) -> KllSketch | None:
    if other is None:
        return mine
    if mine is None:
        return other.copy()
    mine.merge(other)
    return mine


def _is_exact(sk: KllSketch) -> bool:
    _, weights = sk.items()
    return bool(np.all(weights == 1.0))


# ---------------------------------------------------------------------------- classification
class ClassificationState:
    """Confusion counts {(label, predicted): n} and per-class positive/negative score sketches."""

    __slots__ = ("confusion", "k", "neg_scores", "pos_scores")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self.k = k
        self.confusion: dict[tuple[str, str], int] = {}
        self.pos_scores: dict[str, KllSketch] = {}  # class -> scores for that class where label == class
        self.neg_scores: dict[str, KllSketch] = {}  # class -> scores for that class where label != class

    def add(self, labels: Sequence[str], predicted: Sequence[str], scores: Mapping[str, npt.ArrayLike] | None = None) -> None:
        """Add pairs (already as class keys); `scores[c][i]` is row i's score for class c."""
        conf = self.confusion
        for pair in zip(labels, predicted, strict=True):
            conf[pair] = conf.get(pair, 0) + 1
        if scores:
            lab = np.array(labels, dtype=object)
            for cls, values in scores.items():
                arr = np.asarray(values, dtype=np.float64)
                ok = np.isfinite(arr)
                is_pos = (lab == cls) & ok
                is_neg = (lab != cls) & ok
                for target, mask in ((self.pos_scores, is_pos), (self.neg_scores, is_neg)):
                    if mask.any():
                        sk = target.get(cls)
                        if sk is None:
                            sk = target[cls] = KllSketch(self.k)
                        sk.update(arr[mask])

    def merge_in(self, other: ClassificationState) -> None:
        for pair, n in other.confusion.items():
            self.confusion[pair] = self.confusion.get(pair, 0) + n
        for mine, theirs in ((self.pos_scores, other.pos_scores), (self.neg_scores, other.neg_scores)):
            for cls, sk in theirs.items():
                merged = _kll_merge(mine.get(cls), sk)
                assert merged is not None
                mine[cls] = merged

    def copy(self) -> ClassificationState:
        c = ClassificationState(self.k)
        c.confusion = dict(self.confusion)
        c.pos_scores = {k: v.copy() for k, v in self.pos_scores.items()}
        c.neg_scores = {k: v.copy() for k, v in self.neg_scores.items()}
        return c

    @property
    def n(self) -> int:
        return sum(self.confusion.values())

    def classes(self) -> list[str]:
        return sorted({c for pair in self.confusion for c in pair})

    def per_class(self) -> dict[str, dict[str, float]]:
        """precision, recall, f1 and support per class (0.0 where undefined, like sklearn's zero_division=0)."""
        out: dict[str, dict[str, float]] = {}
        for c in self.classes():
            tp = self.confusion.get((c, c), 0)
            fp = sum(n for (lab, pred), n in self.confusion.items() if pred == c and lab != c)
            fn = sum(n for (lab, pred), n in self.confusion.items() if lab == c and pred != c)
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
            out[c] = {"precision": precision, "recall": recall, "f1": f1, "support": float(tp + fn),
                      "tp": float(tp), "fp": float(fp), "fn": float(fn)}
        return out

    def roc_auc(self, cls: str) -> tuple[float, float]:
        """One-vs-rest ROC AUC for `cls` and its error bound (0.0 while exact); NaN if undefined."""
        pos, neg = self.pos_scores.get(cls), self.neg_scores.get(cls)
        if pos is None or neg is None or pos.is_empty() or neg.is_empty():
            return math.nan, math.nan
        px, pw = pos.items()
        nx, nw = neg.items()
        cum = np.concatenate(([0.0], np.cumsum(nw)))
        below = cum[np.searchsorted(nx, px, side="left")]
        upto = cum[np.searchsorted(nx, px, side="right")]
        wins = float(np.sum(pw * (below + 0.5 * (upto - below))))
        auc = wins / (float(pw.sum()) * float(nw.sum()))
        err = 0.0
        if not (_is_exact(pos) and _is_exact(neg)):
            err = pos.normalized_rank_error() + neg.normalized_rank_error()
        return auc, err

    def metrics(self, positive: str = "1") -> dict[str, float]:
        """Plain metric names; binary problems (classes within {0, 1}) report the positive class."""
        n = self.n
        out: dict[str, float] = {"n_labeled": float(n)}
        if not n:
            return out
        correct = sum(v for (lab, pred), v in self.confusion.items() if lab == pred)
        out["accuracy"] = correct / n
        per = self.per_class()
        classes = self.classes()
        binary = set(classes) <= {"0", "1"}
        if binary:
            p = per.get(positive, {"precision": 0.0, "recall": 0.0, "f1": 0.0})
            out.update(precision=p["precision"], recall=p["recall"], f1=p["f1"])
            n_pos = sum(v for (lab, _), v in self.confusion.items() if lab == positive)
            out["positive_rate"] = sum(v for (_, pred), v in self.confusion.items() if pred == positive) / n
            out["label_positive_rate"] = n_pos / n
            if per.get(positive):
                tp, fp, fn = per[positive]["tp"], per[positive]["fp"], per[positive]["fn"]
                tn = n - tp - fp - fn
                out["fpr"] = fp / (fp + tn) if fp + tn else 0.0
                out["tpr"] = out["recall"]
            auc, err = self.roc_auc(positive)
            if not math.isnan(auc):
                out["roc_auc"], out["roc_auc_error"] = auc, err
        else:
            supports = {c: per[c]["support"] for c in classes}
            label_classes = [c for c in classes if supports[c] > 0]  # sklearn averages over labels present in either
            for m in ("precision", "recall", "f1"):
                out[m] = float(np.mean([per[c][m] for c in classes])) if classes else 0.0
                total = sum(supports[c] for c in label_classes)
                out[f"{m}_weighted"] = sum(per[c][m] * supports[c] for c in label_classes) / total if total else 0.0
            aucs = [self.roc_auc(c) for c in classes]
            if aucs and all(not math.isnan(a) for a, _ in aucs):
                out["roc_auc"] = float(np.mean([a for a, _ in aucs]))
                out["roc_auc_error"] = float(np.mean([e for _, e in aucs]))
        for c in classes:
            for m in ("precision", "recall", "f1", "support"):
                out[f"{m}[{c}]"] = per[c][m]
        return out


# ---------------------------------------------------------------------------- regression
class RegressionState:
    """Exact error sums, the label's moments, and a KLL sketch of the signed error."""

    __slots__ = ("errors", "n", "sum_abs", "sum_ape", "sum_err", "sum_sq", "y_m2", "y_mean")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self.n = 0
        self.sum_err = 0.0
        self.sum_abs = 0.0
        self.sum_sq = 0.0
        self.sum_ape = 0.0
        self.y_mean = 0.0
        self.y_m2 = 0.0
        self.errors = KllSketch(k)

    def add(self, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        pred = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        ok = np.isfinite(pred) & np.isfinite(y)
        pred, y = pred[ok], y[ok]
        n_b = int(y.shape[0])
        if not n_b:
            return
        err = pred - y
        self.sum_err += float(err.sum())
        self.sum_abs += float(np.abs(err).sum())
        self.sum_sq += float(np.square(err).sum())
        self.sum_ape += float((np.abs(err) / np.maximum(np.abs(y), _EPS)).sum())
        mean_b = float(y.mean())
        self._combine(n_b, mean_b, float(np.square(y - mean_b).sum()))
        self.errors.update(err)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.y_mean
        self.y_mean += delta * n_b / n
        self.y_m2 += m2_b + delta * delta * n_a * n_b / n
        self.n = n

    def merge_in(self, other: RegressionState) -> None:
        if not other.n:
            return
        self.sum_err += other.sum_err
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        self.sum_ape += other.sum_ape
        self._combine(other.n, other.y_mean, other.y_m2)
        self.errors.merge(other.errors)

    def copy(self) -> RegressionState:
        c = RegressionState(self.errors.k)
        for name in ("n", "sum_err", "sum_abs", "sum_sq", "sum_ape", "y_mean", "y_m2"):
            setattr(c, name, getattr(self, name))
        c.errors = self.errors.copy()
        return c

    def metrics(self) -> dict[str, float]:
        n = self.n
        out: dict[str, float] = {"n_labeled": float(n)}
        if not n:
            return out
        out.update(
            mae=self.sum_abs / n,
            mse=self.sum_sq / n,
            rmse=math.sqrt(self.sum_sq / n),
            mape=self.sum_ape / n,
            bias=self.sum_err / n,
        )
        if self.y_m2 > 0:
            out["r2"] = 1.0 - self.sum_sq / self.y_m2
        q = self.errors.quantiles([0.05, 0.5, 0.95])
        out.update(error_p05=float(q[0]), error_p50=float(q[1]), error_p95=float(q[2]))
        out["error_quantile_rank_error"] = 0.0 if _is_exact(self.errors) else self.errors.normalized_rank_error()
        return out


# ---------------------------------------------------------------------------- ranking
def _dcg(rel: npt.NDArray[np.float64]) -> float:
    return float(np.sum(rel / np.log2(np.arange(2, rel.shape[0] + 2))))


class RankingState:
    """Per-query NDCG@k, precision@k and average precision, summed over queries (means are exact)."""

    __slots__ = ("k", "n", "sum_ap", "sum_ndcg", "sum_precision", "sum_recall")

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self.n = 0
        self.sum_ndcg = 0.0
        self.sum_precision = 0.0
        self.sum_recall = 0.0
        self.sum_ap = 0.0

    def add(self, relevance: Sequence[float], n_relevant: int | None = None) -> None:
        """One query: the relevance of each item in the order shown (graded or 0/1).

        NDCG uses linear gains like scikit-learn's `ndcg_score`; an item counts as relevant for
        precision, recall and AP when its relevance is > 0. `n_relevant` is the number of relevant
        items that exist (for recall and AP; default: those in the list).
        """
        rel = np.asarray(relevance, dtype=np.float64)
        rel = np.where(np.isfinite(rel), rel, 0.0)
        k = self.k
        ideal = _dcg(np.sort(rel)[::-1][:k])
        self.sum_ndcg += _dcg(rel[:k]) / ideal if ideal > 0 else 0.0
        hits = rel > 0
        total = int(hits.sum()) if n_relevant is None else max(int(n_relevant), int(hits.sum()))
        self.sum_precision += float(hits[:k].sum()) / k
        if total:
            self.sum_recall += float(hits[:k].sum()) / total
            ranks = np.nonzero(hits)[0] + 1
            self.sum_ap += float(np.sum(np.arange(1, ranks.shape[0] + 1) / ranks)) / total
        self.n += 1

    def merge_in(self, other: RankingState) -> None:
        if other.n and self.n and other.k != self.k:
            raise ProfileMergeError(f"cannot merge ranking quality at k={self.k} and k={other.k}")
        if not self.n:
            self.k = other.k
        self.n += other.n
        self.sum_ndcg += other.sum_ndcg
        self.sum_precision += other.sum_precision
        self.sum_recall += other.sum_recall
        self.sum_ap += other.sum_ap

    def copy(self) -> RankingState:
        c = RankingState(self.k)
        for name in ("n", "sum_ndcg", "sum_precision", "sum_recall", "sum_ap"):
            setattr(c, name, getattr(self, name))
        return c

    def metrics(self) -> dict[str, float]:
        n = self.n
        out: dict[str, float] = {"n_queries": float(n), "k": float(self.k)}
        if n:
            out.update(ndcg=self.sum_ndcg / n, precision_at_k=self.sum_precision / n,
                       recall_at_k=self.sum_recall / n, map=self.sum_ap / n)
        return out


# ---------------------------------------------------------------------------- proxy metrics
class MetricState:
    """A logged proxy metric or KPI: count, sum and a KLL sketch, like a numeric feature."""

    __slots__ = ("kll", "n", "total")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self.n = 0
        self.total = 0.0
        self.kll = KllSketch(k)

    def add(self, values: npt.ArrayLike) -> None:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.shape[0]:
            self.n += int(arr.shape[0])
            self.total += float(arr.sum())
            self.kll.update(arr)

    def merge_in(self, other: MetricState) -> None:
        self.n += other.n
        self.total += other.total
        self.kll.merge(other.kll)

    def copy(self) -> MetricState:
        c = MetricState(self.kll.k)
        c.n, c.total, c.kll = self.n, self.total, self.kll.copy()
        return c

    def metrics(self, name: str) -> dict[str, float]:
        if not self.n:
            return {}
        q = self.kll.quantiles([0.5, 0.95])
        return {f"{name}.count": float(self.n), f"{name}.sum": self.total, f"{name}.mean": self.total / self.n,
                f"{name}.p50": float(q[0]), f"{name}.p95": float(q[1])}


# ---------------------------------------------------------------------------- the monoid
class QualitySketch:
    """Everything known about a model's quality in one window and segment; a mergeable monoid."""

    __slots__ = ("classification", "k", "metrics", "ranking", "regression")

    def __init__(self, k: int = DEFAULT_KLL_K) -> None:
        self.k = k
        self.classification: ClassificationState | None = None
        self.regression: RegressionState | None = None
        self.ranking: RankingState | None = None
        self.metrics: dict[str, MetricState] = {}

    # ------------------------------------------------------------------ updates
    def add_classification(self, labels: Iterable[Any], predicted: Iterable[Any], scores: Mapping[Any, npt.ArrayLike] | None = None) -> None:
        """Labels and predicted classes (any hashable; normalised by `class_key`), optional scores per class."""
        if self.classification is None:
            self.classification = ClassificationState(self.k)
        keyed = None if scores is None else {class_key(c): v for c, v in scores.items()}
        self.classification.add([class_key(x) for x in labels], [class_key(x) for x in predicted], keyed)

    def add_binary(self, labels: Sequence[Any], scores: Sequence[float], threshold: float = 0.5) -> None:
        """Binary outcomes with the positive class's score: predicted class is ``score >= threshold``."""
        s = np.asarray(scores, dtype=np.float64)
        self.add_classification(labels, ["1" if v >= threshold else "0" for v in s.tolist()], {"1": s})

    def add_regression(self, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        if self.regression is None:
            self.regression = RegressionState(self.k)
        self.regression.add(predictions, labels)

    def add_ranking(self, relevance: Sequence[float], *, k: int = 10, n_relevant: int | None = None) -> None:
        if self.ranking is None:
            self.ranking = RankingState(k)
        elif self.ranking.k != k:
            raise ValueError(f"ranking quality of this model is kept at k={self.ranking.k}, not k={k}")
        self.ranking.add(relevance, n_relevant)

    def add_metric(self, name: str, values: npt.ArrayLike) -> None:
        state = self.metrics.get(name)
        if state is None:
            state = self.metrics[name] = MetricState(self.k)
        state.add(values)

    # ------------------------------------------------------------------ monoid
    def is_empty(self) -> bool:
        return self.classification is None and self.regression is None and self.ranking is None and not self.metrics

    def merge_in(self, other: QualitySketch) -> None:
        if other.classification is not None:
            if self.classification is None:
                self.classification = other.classification.copy()
            else:
                self.classification.merge_in(other.classification)
        if other.regression is not None:
            if self.regression is None:
                self.regression = other.regression.copy()
            else:
                self.regression.merge_in(other.regression)
        if other.ranking is not None:
            if self.ranking is None:
                self.ranking = other.ranking.copy()
            else:
                self.ranking.merge_in(other.ranking)
        for name, state in other.metrics.items():
            mine = self.metrics.get(name)
            if mine is None:
                self.metrics[name] = state.copy()
            else:
                mine.merge_in(state)

    def merge(self, other: QualitySketch) -> QualitySketch:
        out = self.copy()
        out.merge_in(other)
        return out

    def copy(self) -> QualitySketch:
        c = QualitySketch(self.k)
        c.classification = None if self.classification is None else self.classification.copy()
        c.regression = None if self.regression is None else self.regression.copy()
        c.ranking = None if self.ranking is None else self.ranking.copy()
        c.metrics = {k: v.copy() for k, v in self.metrics.items()}
        return c

    # ------------------------------------------------------------------ results
    def to_dict(self) -> dict[str, float]:
        """Plain metric names: accuracy, precision, recall, f1, roc_auc, mae, mse, rmse, mape, ndcg, ..."""
        out: dict[str, float] = {}
        if self.classification is not None:
            out.update(self.classification.metrics())
        if self.regression is not None:
            reg = self.regression.metrics()
            if "n_labeled" in out:
                reg["n_labeled"] += out["n_labeled"]
            out.update(reg)
        if self.ranking is not None:
            out.update(self.ranking.metrics())
        for name, state in sorted(self.metrics.items()):
            out.update(state.metrics(name))
        return out

    def __repr__(self) -> str:
        parts = [p for p, v in (("classification", self.classification), ("regression", self.regression), ("ranking", self.ranking)) if v is not None]
        return f"QualitySketch({', '.join(parts + sorted(self.metrics)) or 'empty'})"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4f}"


class ModelQuality:
    """A model's quality overall, per segment and per version; prints as a table, `to_dict()` for code."""

    def __init__(self, model: str, overall: QualitySketch, by_segment: Mapping[str, QualitySketch] | None = None,
                 by_version: Mapping[str, QualitySketch] | None = None) -> None:
        self.model = model
        self.overall = overall
        self.by_segment: dict[str, QualitySketch] = dict(by_segment or {})
        self.by_version: dict[str, QualitySketch] = dict(by_version or {})

    def to_dict(self) -> dict[str, float]:
        """The overall metrics by plain name."""
        return self.overall.to_dict()

    def segments(self) -> dict[str, dict[str, float]]:
        """Metrics per segment key (e.g. ``country=DE``)."""
        return {k: v.to_dict() for k, v in sorted(self.by_segment.items())}

    def versions(self) -> dict[str, dict[str, float]]:
        """Metrics per model version."""
        return {k: v.to_dict() for k, v in sorted(self.by_version.items())}

    def __getitem__(self, name: str) -> float:
        return self.to_dict()[name]

    def __str__(self) -> str:
        columns: list[tuple[str, dict[str, float]]] = [("all", self.to_dict())]
        columns += [(f"version={k}", v) for k, v in self.versions().items() if len(self.by_version) > 1]
        columns += [(k or "(no segment)", v) for k, v in self.segments().items() if len(self.by_segment) > 1 or k]
        names: list[str] = []
        for _, metrics in columns:
            names.extend(n for n in metrics if n not in names)
        header = ["metric", *(c for c, _ in columns)]
        rows = [[n, *(_fmt(m.get(n, math.nan)) for _, m in columns)] for n in names]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [f"model quality: {self.model}", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ModelQuality(model={self.model!r}, n_labeled={self.to_dict().get('n_labeled', 0):.0f}, segments={len(self.by_segment)})"
