"""Fairness gaps across a protected segment, from the same confusion counts as model quality.

For a binary classifier monitored with a protected attribute in its segment (``segment_by=["gender"]``
or ``log_outcome(..., segment={"gender": ...})``), each group's exact confusion counts give:

- selection rate P(ŷ=1) -> **statistical parity difference**,
- precision P(y=1 | ŷ=1) -> **predictive parity** gap,
- TPR and FPR -> **equalized odds** (both gaps).

Gaps follow fairlearn's convention: the largest minus the smallest group value (0 is parity);
with ``reference=`` each group's difference to the reference group is reported too (AIF360's
"unprivileged minus privileged"). Every group's size is reported, so a gap from a group of 12
people is visibly not a gap from 12,000. Groups below ``min_group_size`` are listed but kept
out of the gaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlwatch.model_quality import ModelQuality, QualitySketch
from mlwatch.outcomes import quality
from mlwatch.profile import Profile

__all__ = ["FairnessReport", "GroupRates", "fairness", "parse_segment_key"]


def parse_segment_key(key: str) -> dict[str, str]:
    """``"country=DE,gender=f"`` -> ``{"country": "DE", "gender": "f"}``."""
    out: dict[str, str] = {}
    for part in key.split(",") if key else []:
        name, _, value = part.partition("=")
        out[name] = value
    return out


@dataclass(frozen=True)
class GroupRates:
    """One group's size and rates (NaN where the denominator is zero)."""

    group: str
    n: int
    selection_rate: float
    precision: float
    tpr: float
    fpr: float


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _rates(group: str, q: QualitySketch, positive: str) -> GroupRates:
    conf = q.classification.confusion if q.classification is not None else {}
    tp = sum(n for (y, p), n in conf.items() if y == positive and p == positive)
    fp = sum(n for (y, p), n in conf.items() if y != positive and p == positive)
    fn = sum(n for (y, p), n in conf.items() if y == positive and p != positive)
    n = sum(conf.values())
    tn = n - tp - fp - fn
    return GroupRates(group, n, _ratio(tp + fp, n), _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(fp, fp + tn))


def _gap(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) - min(finite) if len(finite) >= 2 else math.nan


@dataclass(frozen=True)
class FairnessReport:
    """Per-group rates and the gaps between groups for one protected attribute."""

    attribute: str
    groups: dict[str, GroupRates]
    statistical_parity_difference: float
    predictive_parity_difference: float
    tpr_difference: float
    fpr_difference: float
    reference: str | None = None
    vs_reference: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def equalized_odds_difference(self) -> float:
        """The larger of the TPR and FPR gaps (fairlearn's definition)."""
        return max(self.tpr_difference, self.fpr_difference)

    def to_dict(self) -> dict[str, float]:
        """Plain names: the four gaps plus each group's size and rates."""
        out = {
            "statistical_parity_difference": self.statistical_parity_difference,
            "predictive_parity_difference": self.predictive_parity_difference,
            "tpr_difference": self.tpr_difference,
            "fpr_difference": self.fpr_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
        }
        for g, r in self.groups.items():
            out.update({f"n[{g}]": float(r.n), f"selection_rate[{g}]": r.selection_rate, f"precision[{g}]": r.precision,
                        f"tpr[{g}]": r.tpr, f"fpr[{g}]": r.fpr})
        return out

    def __str__(self) -> str:
        lines = [f"fairness across {self.attribute!r}", f"{'group':<16}{'n':>10}{'selection':>11}{'precision':>11}{'tpr':>8}{'fpr':>8}"]
        for r in self.groups.values():
            lines.append(f"{r.group:<16}{r.n:>10}{r.selection_rate:>11.4f}{r.precision:>11.4f}{r.tpr:>8.4f}{r.fpr:>8.4f}")
        lines.append(f"statistical parity difference {self.statistical_parity_difference:.4f}; predictive parity "
                     f"{self.predictive_parity_difference:.4f}; equalized odds TPR {self.tpr_difference:.4f}, "
                     f"FPR {self.fpr_difference:.4f}")
        return "\n".join(lines)


def fairness(
    source: ModelQuality | Profile | Iterable[Profile],
    attribute: str,
    *,
    positive: str = "1",
    reference: str | None = None,
    min_group_size: int = 1,
) -> FairnessReport:
    """Fairness gaps across the groups of segment `attribute` of a binary classifier's quality."""
    mq = source if isinstance(source, ModelQuality) else quality(source)
    by_group: dict[str, QualitySketch] = {}
    for key, q in mq.by_segment.items():
        value = parse_segment_key(key).get(attribute)
        if value is not None:
            by_group.setdefault(value, QualitySketch()).merge_in(q)
    groups = {g: _rates(g, q, positive) for g, q in sorted(by_group.items())}
    counted = [r for r in groups.values() if r.n >= min_group_size]
    vs: dict[str, dict[str, float]] = {}
    if reference is not None and reference in groups:
        ref = groups[reference]
        for g, r in groups.items():
            vs[g] = {"statistical_parity_difference": r.selection_rate - ref.selection_rate,
                     "predictive_parity_difference": r.precision - ref.precision,
                     "tpr_difference": r.tpr - ref.tpr, "fpr_difference": r.fpr - ref.fpr}
    return FairnessReport(
        attribute,
        groups,
        _gap(r.selection_rate for r in counted),
        _gap(r.precision for r in counted),
        _gap(r.tpr for r in counted),
        _gap(r.fpr for r in counted),
        reference,
        vs,
    )
