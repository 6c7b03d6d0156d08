"""`check_quality(reference, current)`: data-quality issues of a window, from profiles alone.

What: per-column checks of the current profile, against a reference profile when one is given
and against user `Constraint`s, collected as `QualityIssue`s in a `QualityReport`.

Why these checks and tolerances (all keyword arguments of `check_quality`):

- ``missing_share``: the share of missing values moved by more than ``missing_tolerance``
  (0.05, i.e. five percentage points) either way. Both directions: a drop often means an
  upstream change (new default values, imputation) as much as a rise means breakage.
- ``type_mismatch``: the share of present values whose type does not fit the column's kind
  exceeds the reference share by more than ``type_mismatch_tolerance`` (0.01); without a
  reference, more than the tolerance. ``kind_changed``: the column's kind itself changed.
- ``out_of_range``: share of current values outside the reference [min, max] (exact). Under no
  change about ``2 / (n_ref + 1)`` of new values fall outside a sample's range, so the issue is
  raised above ``range_tolerance`` (0.01) plus that share.
- ``outliers``: share of current values outside the reference's [q0.005, q0.995]
  (``outlier_quantile``); about 1 % under no change, raised above ``outlier_share`` (0.03).
  The reference quantiles come from the exact extreme values when they cover those ranks
  (references up to 12,800 values with the default 64 extremes), from the KLL sketch otherwise.
- Shares from sketches are exact while the current window's values outside the bounds are among
  its exact extremes, and within the KLL sketch's rank error otherwise (twice that for a share
  made of two tails).
- ``distinct_count``: the HyperLogLog distinct count changed by more than ``distinct_ratio``
  (2x) in either direction *and* so did the distinct count per value; the second condition keeps
  an ID-like column seen over a bigger window (more rows, proportionally more distinct values)
  from being flagged.
- ``new_categories``: categories never seen in the reference (only when the reference's
  frequent-items sketch is exact, i.e. it kept every category): raised when their share of the
  current values exceeds ``new_category_tolerance`` (0: any new category).
- ``missing_column`` / ``new_column``: a column of the reference is absent now, or a new one
  appeared.
- `Constraint` checks use the current profile alone: ``below_min`` / ``above_max`` (exact,
  from the exact min/max, with the share of such values), ``not_allowed`` (categories outside
  ``allowed``), ``not_null`` and ``max_missing_share``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlwatch._errors import ConfigError
from mlwatch._stats import SketchDistribution, category_table
from mlwatch.column import ColumnProfile
from mlwatch.drift import _column_names, _fmt, _json_number, _json_value, _table
from mlwatch.profile import Profile

__all__ = [
    "Constraint",
    "DEFAULT_DISTINCT_RATIO",
    "DEFAULT_MISSING_TOLERANCE",
    "DEFAULT_NEW_CATEGORY_TOLERANCE",
    "DEFAULT_OUTLIER_QUANTILE",
    "DEFAULT_OUTLIER_SHARE",
    "DEFAULT_RANGE_TOLERANCE",
    "DEFAULT_TYPE_MISMATCH_TOLERANCE",
    "QualityIssue",
    "QualityReport",
    "check_quality",
]

DEFAULT_MISSING_TOLERANCE = 0.05
DEFAULT_TYPE_MISMATCH_TOLERANCE = 0.01
DEFAULT_RANGE_TOLERANCE = 0.01
DEFAULT_OUTLIER_QUANTILE = 0.005
DEFAULT_OUTLIER_SHARE = 0.03
DEFAULT_DISTINCT_RATIO = 2.0
DEFAULT_NEW_CATEGORY_TOLERANCE = 0.0

Role = Literal["input", "output"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label(value: object) -> str:
    """A category label as column profiles store it (3 and 3.0 are "3"; booleans "True"/"False")."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        if f.is_integer() and abs(f) < 2**63:
            return str(int(f))
        return repr(f)
    raise ConfigError(f"allowed values must be strings, numbers or booleans, got {value!r}")


@dataclass(frozen=True)
class Constraint:
    """User rules for one column, checked against the current profile alone.

    - ``min`` / ``max``: every finite numeric value must lie within them (inclusive).
    - ``allowed``: the only categories allowed (strings, numbers or booleans; stored as labels).
    - ``not_null``: no missing values at all.
    - ``max_missing_share``: at most this share of values missing, in [0, 1].

    Validated on construction: a wrong value raises `ConfigError`.
    """

    min: float | None = None
    max: float | None = None
    allowed: Collection[str | int | float | bool] | None = None
    not_null: bool = False
    max_missing_share: float | None = None

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or math.isnan(value)):
                raise ConfigError(f"Constraint.{name} must be a number or None, got {value!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"Constraint.min ({self.min!r}) is greater than Constraint.max ({self.max!r})")
        if self.allowed is not None:
            if isinstance(self.allowed, (str, bytes)) or not isinstance(self.allowed, Iterable):
                raise ConfigError(f"Constraint.allowed must be a collection of values, got {self.allowed!r}")
            labels = frozenset(_label(v) for v in self.allowed)
            if not labels:
                raise ConfigError("Constraint.allowed must not be empty (use None for no restriction)")
            object.__setattr__(self, "allowed", labels)
        if not isinstance(self.not_null, bool):
            raise ConfigError(f"Constraint.not_null must be True or False, got {self.not_null!r}")
        share = self.max_missing_share
        if share is not None and (not _is_number(share) or not 0.0 <= share <= 1.0):
            raise ConfigError(f"Constraint.max_missing_share must be a number in [0, 1], got {share!r}")


@dataclass(frozen=True)
class QualityIssue:
    """One failed check: which column, which check, the measured value and the threshold it broke."""

    column: str
    check: str
    value: float | None
    threshold: float | None
    message: str
    role: Role = "input"

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "role": self.role,
            "check": self.check,
            "value": _json_number(self.value),
            "threshold": _json_number(self.threshold),
            "message": self.message,
        }


@dataclass(frozen=True)
class QualityReport:
    """Every issue found, and what was measured per column (issues or not)."""

    issues: tuple[QualityIssue, ...]
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def columns_with_issues(self) -> list[str]:
        return list(dict.fromkeys(i.column for i in self.issues))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "ok": self.ok,
            "n_issues": len(self.issues),
            "issues": [i.to_dict() for i in self.issues],
            "measurements": {k: _json_value(v) for k, v in self.measurements.items()},
        }

    def __str__(self) -> str:
        n_cols = len(self.measurements)
        if self.ok:
            return f"Data quality: no issues ({n_cols} columns checked)"
        head = f"Data quality: {len(self.issues)} issue(s) in {len(self.columns_with_issues)} of {n_cols} columns"
        rows = [("column", "check", "value", "threshold", "message")]
        for i in self.issues:
            name = i.column if i.role == "input" else f"{i.column} (output)"
            rows.append((name, i.check, _fmt(i.value), _fmt(i.threshold), i.message))
        return head + "\n" + _table(rows)

    def __repr__(self) -> str:
        return f"QualityReport(ok={self.ok}, issues={len(self.issues)}, columns={self.columns_with_issues!r})"


@dataclass(frozen=True)
class _Settings:
    missing_tolerance: float
    type_mismatch_tolerance: float
    range_tolerance: float
    outlier_quantile: float
    outlier_share: float
    distinct_ratio: float
    new_category_tolerance: float


def _setting(name: str, value: object, lo: float, hi: float, *, open_low: bool = False) -> float:
    """A validated tolerance: a finite number in [lo, hi] (or (lo, hi])."""
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        v = float(value)
        if (lo < v if open_low else lo <= v) and v <= hi:
            return v
    raise ConfigError(f"{name} must be a number in {'(' if open_low else '['}{lo:g}, {hi:g}], got {value!r}")


# ============================================================================ entry point
def check_quality(
    reference: Profile | None,
    current: Profile,
    *,
    constraints: Mapping[str, Constraint] | None = None,
    columns: Iterable[str] | None = None,
    include_outputs: bool = True,
    missing_tolerance: float = DEFAULT_MISSING_TOLERANCE,
    type_mismatch_tolerance: float = DEFAULT_TYPE_MISMATCH_TOLERANCE,
    range_tolerance: float = DEFAULT_RANGE_TOLERANCE,
    outlier_quantile: float = DEFAULT_OUTLIER_QUANTILE,
    outlier_share: float = DEFAULT_OUTLIER_SHARE,
    distinct_ratio: float = DEFAULT_DISTINCT_RATIO,
    new_category_tolerance: float = DEFAULT_NEW_CATEGORY_TOLERANCE,
) -> QualityReport:
    """Check `current` (against `reference` when given, and against `constraints`).

    `columns` restricts the checks to these names; `include_outputs` also checks model outputs.
    The tolerances are described in the module docs. Data never makes this raise; wrong
    arguments raise `ConfigError`.
    """
    if reference is not None and not isinstance(reference, Profile):
        raise ConfigError(f"reference must be a Profile or None, got {type(reference).__name__}")
    if not isinstance(current, Profile):
        raise ConfigError(f"current must be a Profile, got {type(current).__name__}")
    settings = _Settings(
        missing_tolerance=_setting("missing_tolerance", missing_tolerance, 0.0, 1.0),
        type_mismatch_tolerance=_setting("type_mismatch_tolerance", type_mismatch_tolerance, 0.0, 1.0),
        range_tolerance=_setting("range_tolerance", range_tolerance, 0.0, 1.0),
        outlier_quantile=_setting("outlier_quantile", outlier_quantile, 0.0, 0.5, open_low=True),
        outlier_share=_setting("outlier_share", outlier_share, 0.0, 1.0),
        distinct_ratio=_setting("distinct_ratio", distinct_ratio, 1.0, math.inf),
        new_category_tolerance=_setting("new_category_tolerance", new_category_tolerance, 0.0, 1.0),
    )
    rules = _constraints(constraints)
    wanted = _column_names(columns)
    sections: list[tuple[Role, Mapping[str, ColumnProfile] | None, Mapping[str, ColumnProfile]]] = [
        ("input", reference.columns if reference is not None else None, current.columns)
    ]
    if include_outputs:
        sections.append(("output", reference.outputs if reference is not None else None, current.outputs))

    issues: list[QualityIssue] = []
    measurements: dict[str, dict[str, Any]] = {}
    constrained_seen: set[str] = set()
    for role, ref_cols, cur_cols in sections:
        names = list(cur_cols) + [n for n in (ref_cols or {}) if n not in cur_cols]
        for name in names:
            if wanted is not None and name not in wanted:
                continue
            key = name if role == "input" else f"{name} (output)"
            found: list[QualityIssue] = []
            measured: dict[str, Any] = {}
            ref = ref_cols.get(name) if ref_cols is not None else None
            cur = cur_cols.get(name)
            if cur is None:
                found.append(
                    QualityIssue(name, "missing_column", None, None, "column of the reference is absent", role)
                )
            else:
                if ref_cols is not None and ref is None:
                    found.append(QualityIssue(name, "new_column", None, None, "column not in the reference", role))
                _check_column(name, role, ref, cur, settings, found, measured)
            rule = rules.get(name)
            if rule is not None:
                constrained_seen.add(name)
                if cur is not None:
                    _check_constraint(name, role, cur, rule, found, measured)
                elif not any(i.check == "missing_column" for i in found):
                    found.append(QualityIssue(name, "missing_column", None, None, "constrained column is absent", role))
            measurements[key] = measured
            issues.extend(found)
    for name in sorted(rules.keys() - constrained_seen):
        if wanted is None or name in wanted:
            issues.append(QualityIssue(name, "missing_column", None, None, "constrained column is absent"))
            measurements.setdefault(name, {})
    return QualityReport(issues=tuple(issues), measurements=measurements)


def _constraints(constraints: Mapping[str, Constraint] | None) -> dict[str, Constraint]:
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise ConfigError(f"constraints must map column names to Constraint, got {constraints!r}")
    out: dict[str, Constraint] = {}
    for name, rule in constraints.items():
        if not isinstance(name, str) or not isinstance(rule, Constraint):
            raise ConfigError(f"constraints must map column names to Constraint, got {name!r}: {rule!r}")
        out[name] = rule
    return out


# ============================================================================ checks
def _check_column(
    name: str,
    role: Role,
    ref: ColumnProfile | None,
    cur: ColumnProfile,
    s: _Settings,
    found: list[QualityIssue],
    measured: dict[str, Any],
) -> None:
    measured.update(
        count=cur.count,
        missing_share=cur.missing_share,
        type_mismatch_share=cur.type_mismatch_share,
        kind=cur.kind,
    )
    base_mismatch = ref.type_mismatch_share if ref is not None and ref.count else 0.0
    limit = base_mismatch + s.type_mismatch_tolerance
    if cur.present and cur.type_mismatch_share > limit:
        found.append(
            QualityIssue(
                name,
                "type_mismatch",
                cur.type_mismatch_share,
                limit,
                f"{cur.type_mismatch} of {cur.present} values do not fit the {cur.kind} kind",
                role,
            )
        )
    if ref is None or ref.count == 0 or cur.count == 0:
        return
    change = cur.missing_share - ref.missing_share
    measured["missing_share_change"] = change
    if abs(change) > s.missing_tolerance:
        found.append(
            QualityIssue(
                name,
                "missing_share",
                cur.missing_share,
                ref.missing_share + math.copysign(s.missing_tolerance, change),
                f"missing share {'rose' if change > 0 else 'fell'} from {ref.missing_share:.2%} to {cur.missing_share:.2%}",
                role,
            )
        )
    r_kind, c_kind = ref.kind, cur.kind
    if "empty" not in (r_kind, c_kind) and r_kind != c_kind:
        found.append(QualityIssue(name, "kind_changed", None, None, f"values were {r_kind} and are now {c_kind}", role))
        return
    if c_kind == "numeric":
        _check_numeric(name, role, ref, cur, s, found, measured)
    elif c_kind == "categorical":
        _check_categorical(name, role, ref, cur, s, found, measured)


def _check_numeric(
    name: str,
    role: Role,
    ref: ColumnProfile,
    cur: ColumnProfile,
    s: _Settings,
    found: list[QualityIssue],
    measured: dict[str, Any],
) -> None:
    if ref.numeric is None or cur.numeric is None:
        return
    d_ref = SketchDistribution.from_summary(ref.numeric)
    d_cur = SketchDistribution.from_summary(cur.numeric)
    if d_ref is None or d_cur is None:
        return
    lo, hi = float(ref.numeric.min), float(ref.numeric.max)
    outside = float(d_cur.cdf_below(lo)[0] + 1.0 - d_cur.cdf(hi)[0])
    outside = min(1.0, max(0.0, outside))
    limit = s.range_tolerance + 2.0 / (d_ref.n + 1)
    measured.update(out_of_range_share=outside, reference_min=lo, reference_max=hi)
    if outside > limit:
        found.append(
            QualityIssue(
                name,
                "out_of_range",
                outside,
                limit,
                f"{outside:.2%} of values outside the reference range [{lo:.6g}, {hi:.6g}]",
                role,
            )
        )
    q = s.outlier_quantile
    q_lo, q_hi = (float(v) for v in d_ref.quantiles([q, 1.0 - q]))
    tails = float(d_cur.cdf_below(q_lo)[0] + 1.0 - d_cur.cdf(q_hi)[0])
    tails = min(1.0, max(0.0, tails))
    measured.update(outlier_share=tails, outlier_bounds=[q_lo, q_hi])
    if tails > s.outlier_share:
        found.append(
            QualityIssue(
                name,
                "outliers",
                tails,
                s.outlier_share,
                f"{tails:.2%} of values outside the reference's [q{q:g}, q{1 - q:g}] = [{q_lo:.6g}, {q_hi:.6g}]"
                f" (about {2 * q:.2%} expected)",
                role,
            )
        )


def _check_categorical(
    name: str,
    role: Role,
    ref: ColumnProfile,
    cur: ColumnProfile,
    s: _Settings,
    found: list[QualityIssue],
    measured: dict[str, Any],
) -> None:
    r_est, c_est = ref.distinct_estimate(), cur.distinct_estimate()
    measured.update(distinct=c_est, reference_distinct=r_est)
    if r_est > 0 and c_est > 0 and ref.n_categorical and cur.n_categorical:
        ratio = c_est / r_est
        per_value = (c_est / cur.n_categorical) / (r_est / ref.n_categorical)
        r = s.distinct_ratio
        measured["distinct_ratio"] = ratio
        if (ratio > r and per_value > r) or (ratio < 1.0 / r and per_value < 1.0 / r):
            found.append(
                QualityIssue(
                    name,
                    "distinct_count",
                    ratio,
                    r if ratio > 1 else 1.0 / r,
                    f"about {c_est:.0f} distinct values, {ratio:.3g}x the reference's {r_est:.0f}",
                    role,
                )
            )
    table = category_table(ref.freq, cur.freq)
    if not table.reference_exact or not table.new:
        return
    new = set(table.new)
    counts = dict(zip(table.labels, table.current.tolist(), strict=True))
    total = float(table.current.sum())
    share = sum(counts.get(c, 0.0) for c in new) / total if total else 0.0
    measured.update(new_categories=sorted(new), new_category_share=share)
    if share > s.new_category_tolerance:
        shown = ", ".join(repr(c) for c in sorted(new, key=lambda c: -counts.get(c, 0.0))[:5])
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        found.append(
            QualityIssue(
                name,
                "new_categories",
                share,
                s.new_category_tolerance,
                f"{len(new)} new categor{'y' if len(new) == 1 else 'ies'} ({share:.2%} of values): {shown}{more}",
                role,
            )
        )


def _check_constraint(
    name: str,
    role: Role,
    cur: ColumnProfile,
    rule: Constraint,
    found: list[QualityIssue],
    measured: dict[str, Any],
) -> None:
    num = cur.numeric
    dist = SketchDistribution.from_summary(num) if num is not None else None
    if rule.min is not None and num is not None and dist is not None and num.min < rule.min:
        share = float(dist.cdf_below(rule.min)[0])
        measured["below_min_share"] = share
        found.append(
            QualityIssue(
                name,
                "below_min",
                float(num.min),
                float(rule.min),
                f"minimum {num.min:.6g} is below {rule.min:g} ({share:.2%} of values)",
                role,
            )
        )
    if rule.max is not None and num is not None and dist is not None and num.max > rule.max:
        share = float(1.0 - dist.cdf(rule.max)[0])
        measured["above_max_share"] = share
        found.append(
            QualityIssue(
                name,
                "above_max",
                float(num.max),
                float(rule.max),
                f"maximum {num.max:.6g} is above {rule.max:g} ({share:.2%} of values)",
                role,
            )
        )
    if rule.allowed is not None and cur.freq is not None:
        allowed = rule.allowed
        counts = cur.category_counts()
        bad = {k: v for k, v in counts.items() if k not in allowed}
        total = cur.freq.total_weight
        if bad:
            share = sum(bad.values()) / total if total else 0.0
            shown = ", ".join(repr(k) for k, _ in sorted(bad.items(), key=lambda kv: -kv[1])[:5])
            found.append(
                QualityIssue(
                    name,
                    "not_allowed",
                    share,
                    0.0,
                    f"{len(bad)} value(s) outside the allowed set ({share:.2%} of values): {shown}",
                    role,
                )
            )
    if rule.not_null and cur.missing:
        found.append(QualityIssue(name, "not_null", float(cur.missing), 0.0, f"{cur.missing} missing values", role))
    if rule.max_missing_share is not None and cur.missing_share > rule.max_missing_share:
        found.append(
            QualityIssue(
                name,
                "max_missing_share",
                cur.missing_share,
                float(rule.max_missing_share),
                f"{cur.missing_share:.2%} of values missing (at most {rule.max_missing_share:.2%} allowed)",
                role,
            )
        )
