"""`drift(reference, current)`: per-column and dataset-level drift verdicts from two profiles.

What: for every column (inputs, and outputs unless ``include_outputs=False``) the statistics of
`mlwatch._stats` are computed from the two profiles' sketches, one of them is chosen as the
verdict with a threshold, and the share of drifted columns gives the dataset verdict.

Why these defaults (so that someone with no statistics background gets a sensible answer):

- Automatic method, after Evidently's defaults: while either side is small
  (``min(n_ref, n_cur) <= 1000`` values), a statistical test, because distances are noisy on
  small samples: numeric and text-length columns use the two-sample KS test, categorical
  columns the chi-square test of homogeneity; drift when ``p < 0.05``. With both sides large, a
  p-value flags every feature (any tiny difference is "significant" at a million rows), so a
  distance with a fixed threshold takes over: numeric columns use Wasserstein distance
  normalised by the reference standard deviation, drift when ``>= 0.1``; categorical columns use
  Jensen-Shannon distance, drift when ``>= 0.1``. Evidently looks at the reference size only;
  we use the smaller side so that a short current window is never judged by a noisy distance.
  NannyML derives thresholds from the spread of the metric over reference chunks; one
  reference sketch has no chunks, so like Evidently we use constant thresholds, and like NannyML
  we keep every score in the result so a user can build their own.
- Explicit methods (``method="ks" | "psi" | "js" | "wasserstein" | "hellinger" | "chisquare"``)
  default to KS ``p < 0.05``, chi-square ``p < 0.05``, PSI ``>= 0.2`` (the industry's
  "significant shift"), JS ``>= 0.1``, Wasserstein ``>= 0.1``, Hellinger ``>= 0.1``. A method
  that does not apply to a column's kind (KS or Wasserstein on categories, chi-square on
  numbers) falls back to the automatic choice for that column, with a note.
- The KS test additionally requires the statistic to exceed the sketches' combined rank error
  (``ks_resolution``, about 0.027 at k=200 once a sketch compacts): below it, a difference
  cannot be told from sketching noise, however many rows there are. With the automatic rule
  the KS test only runs on at most 1,000 values, where a significant statistic is larger than
  that anyway.
- Text columns drift on their length distribution (the text itself is never kept).
- Columns present on one side only are reported (``missing_in_current``,
  ``missing_in_reference``); a column without values on a side is ``no_data``; these do not
  count in the dataset share. A column whose kind changed (numbers became strings) is
  ``kind_mismatch`` and counts as drifted.
- Dataset drift: ``share of drifted columns >= drift_share`` (0.5 by default), over the columns
  that could be compared; never with zero columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlwatch._errors import ConfigError
from mlwatch._stats import (
    CategoricalDrift,
    NumericDrift,
    SketchDistribution,
    categorical_drift,
    category_table,
    numeric_drift,
)
from mlwatch.column import ColumnProfile
from mlwatch.profile import Profile

__all__ = [
    "AUTO_SMALL_SAMPLE",
    "ColumnDrift",
    "DEFAULT_THRESHOLDS",
    "DriftReport",
    "METHODS",
    "drift",
]

#: Method names accepted by `drift` (besides "auto").
METHODS: tuple[str, ...] = ("ks", "psi", "js", "wasserstein", "hellinger", "chisquare")
#: Default threshold per method: on the p-value for "ks" and "chisquare", on the statistic otherwise.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "psi": 0.2,
    "js": 0.1,
    "wasserstein": 0.1,
    "hellinger": 0.1,
}
#: With ``method="auto"``, a statistical test is used while either side has at most this many values.
AUTO_SMALL_SAMPLE = 1000

_P_VALUE_METHODS = frozenset({"ks", "chisquare"})
_NUMERIC_METHODS = frozenset({"ks", "psi", "js", "wasserstein", "hellinger"})
_CATEGORICAL_METHODS = frozenset({"chisquare", "psi", "js", "hellinger"})

Role = Literal["input", "output"]
Status = Literal["ok", "missing_in_current", "missing_in_reference", "no_data", "kind_mismatch", "not_found"]
#: Statuses whose columns count towards the dataset share.
_COMPARED: frozenset[str] = frozenset({"ok", "kind_mismatch"})


@dataclass(frozen=True)
class ColumnDrift:
    """The drift verdict of one column, with every score computed for it.

    ``value`` is the chosen method's statistic; ``threshold`` applies to ``p_value`` when
    ``threshold_on == "p_value"`` (KS, chi-square: drift when below) and to ``value`` otherwise
    (drift when at or above).
    """

    column: str
    role: Role
    kind: str
    status: Status
    method: str | None = None
    value: float | None = None
    threshold: float | None = None
    threshold_on: Literal["p_value", "value"] | None = None
    p_value: float | None = None
    drifted: bool = False
    n_reference: int = 0
    n_current: int = 0
    scores: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (non-finite numbers become None)."""
        return {
            "column": self.column,
            "role": self.role,
            "kind": self.kind,
            "status": self.status,
            "method": self.method,
            "value": _json_number(self.value),
            "threshold": _json_number(self.threshold),
            "threshold_on": self.threshold_on,
            "p_value": _json_number(self.p_value),
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "scores": {k: _json_value(v) for k, v in self.scores.items()},
            "note": self.note,
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-column drift results and the dataset verdict (``share >= drift_share``)."""

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    method: str
    reference: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> list[ColumnDrift]:
        """Results of the columns that could be compared (they make up the dataset share)."""
        return [c for c in self.columns if c.status in _COMPARED]

    @property
    def n_columns(self) -> int:
        return len(self.compared)

    @property
    def n_drifted(self) -> int:
        return sum(1 for c in self.compared if c.drifted)

    @property
    def share(self) -> float:
        """Share of compared columns that drifted (0 when none could be compared)."""
        n = self.n_columns
        return self.n_drifted / n if n else 0.0

    @property
    def dataset_drift(self) -> bool:
        return self.n_columns > 0 and self.share >= self.drift_share

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def __getitem__(self, column: str) -> ColumnDrift:
        """The result of one column (inputs first, then outputs)."""
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return {
            "dataset_drift": self.dataset_drift,
            "n_columns": self.n_columns,
            "n_drifted": self.n_drifted,
            "share": self.share,
            "drift_share": self.drift_share,
            "method": self.method,
            "drifted_columns": self.drifted_columns,
            "reference": {k: _json_value(v) for k, v in self.reference.items()},
            "current": {k: _json_value(v) for k, v in self.current.items()},
            "columns": [c.to_dict() for c in self.columns],
        }

    def __str__(self) -> str:
        verdict = "DATASET DRIFT" if self.dataset_drift else "no dataset drift"
        head = (
            f"Drift: {self.n_drifted} of {self.n_columns} columns drifted ({self.share:.0%}; "
            f"dataset drift at >= {self.drift_share:.0%}): {verdict}"
        )
        rows = [("column", "kind", "method", "value", "threshold", "p-value", "drifted", "status")]
        for c in self.columns:
            name = c.column if c.role == "input" else f"{c.column} (output)"
            if c.threshold is None:
                rule = "-"
            elif c.threshold_on == "p_value":
                rule = f"p < {c.threshold:g}"
            else:
                rule = f">= {c.threshold:g}"
            rows.append(
                (
                    name,
                    c.kind,
                    c.method or "-",
                    _fmt(c.value),
                    rule,
                    _fmt(c.p_value),
                    "DRIFT" if c.drifted else "no",
                    c.status if not c.note else f"{c.status}: {c.note}",
                )
            )
        return head + "\n" + _table(rows)

    def __repr__(self) -> str:
        return (
            f"DriftReport(dataset_drift={self.dataset_drift}, n_drifted={self.n_drifted}, "
            f"n_columns={self.n_columns}, drifted_columns={self.drifted_columns!r})"
        )


# ============================================================================ entry point
def drift(
    reference: Profile,
    current: Profile,
    *,
    method: str = "auto",
    columns: Iterable[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    drift_share: float = 0.5,
    include_outputs: bool = True,
) -> DriftReport:
    """Compare `current` against `reference`, column by column, from their sketches.

    - `method`: "auto" (see the module docs) or one of `METHODS` for every column.
    - `columns`: restrict to these names (inputs and outputs); a name absent from both profiles
      is reported as ``not_found``.
    - `thresholds`: override a threshold per method name (``{"psi": 0.25}``) or per column name
      (``{"age": 0.2}``, applied to that column's method); column names win over method names.
    - `drift_share`: the dataset drifts when at least this share of compared columns drift.
    - `include_outputs`: also compare model outputs (they count in the dataset share).

    Data never makes this raise; wrong arguments raise `ConfigError`.
    """
    if not isinstance(reference, Profile) or not isinstance(current, Profile):
        raise ConfigError(f"drift() compares two Profiles, got {type(reference).__name__} and {type(current).__name__}")
    if not isinstance(method, str) or (method != "auto" and method not in METHODS):
        raise ConfigError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
    share = _share(drift_share)
    wanted = _column_names(columns)
    sections: list[tuple[Role, Mapping[str, ColumnProfile], Mapping[str, ColumnProfile]]] = [
        ("input", reference.columns, current.columns)
    ]
    if include_outputs:
        sections.append(("output", reference.outputs, current.outputs))
    known = {name for _, ref, cur in sections for name in (*ref, *cur)}
    by_method, by_column = _thresholds(thresholds, known)

    results: list[ColumnDrift] = []
    seen: set[str] = set()
    for role, ref_cols, cur_cols in sections:
        names = list(ref_cols) + [n for n in cur_cols if n not in ref_cols]
        for name in names:
            if wanted is not None and name not in wanted:
                continue
            seen.add(name)
            results.append(
                _column_drift(name, role, ref_cols.get(name), cur_cols.get(name), method, by_method, by_column)
            )
    if wanted is not None:
        for name in sorted(wanted - seen):
            results.append(ColumnDrift(column=name, role="input", kind="-", status="not_found"))
    return DriftReport(
        columns=tuple(results),
        drift_share=share,
        method=method,
        reference=_identity(reference),
        current=_identity(current),
    )


# ============================================================================ one column
def _column_drift(
    name: str,
    role: Role,
    ref: ColumnProfile | None,
    cur: ColumnProfile | None,
    method: str,
    by_method: Mapping[str, float],
    by_column: Mapping[str, float],
) -> ColumnDrift:
    if ref is None or cur is None:
        present = cur if ref is None else ref
        assert present is not None
        return ColumnDrift(
            column=name,
            role=role,
            kind=present.kind,
            status="missing_in_reference" if ref is None else "missing_in_current",
            n_reference=_n_values(ref),
            n_current=_n_values(cur),
        )
    r_kind, c_kind = ref.kind, cur.kind
    n_ref, n_cur = _n_values(ref), _n_values(cur)
    if r_kind == "empty" or c_kind == "empty":
        side = (
            "on either side"
            if r_kind == c_kind
            else "in the reference"
            if r_kind == "empty"
            else "in the current window"
        )
        return ColumnDrift(
            column=name,
            role=role,
            kind=c_kind if r_kind == "empty" else r_kind,
            status="no_data",
            n_reference=n_ref,
            n_current=n_cur,
            note=f"no values {side}",
        )
    if r_kind != c_kind:
        return ColumnDrift(
            column=name,
            role=role,
            kind=f"{r_kind}->{c_kind}",
            status="kind_mismatch",
            drifted=True,
            n_reference=n_ref,
            n_current=n_cur,
            note=f"values were {r_kind} in the reference and are {c_kind} now",
        )
    if r_kind == "categorical":
        return _categorical(name, role, ref, cur, method, by_method, by_column)
    return _numeric(name, role, r_kind, ref, cur, method, by_method, by_column)


def _numeric(
    name: str,
    role: Role,
    kind: str,
    ref: ColumnProfile,
    cur: ColumnProfile,
    method: str,
    by_method: Mapping[str, float],
    by_column: Mapping[str, float],
) -> ColumnDrift:
    if kind == "text":
        d_ref, d_cur = SketchDistribution.from_kll(ref.text_length), SketchDistribution.from_kll(cur.text_length)
    else:
        d_ref = SketchDistribution.from_summary(ref.numeric) if ref.numeric is not None else None
        d_cur = SketchDistribution.from_summary(cur.numeric) if cur.numeric is not None else None
    if d_ref is None or d_cur is None:
        return ColumnDrift(
            column=name,
            role=role,
            kind=kind,
            status="no_data",
            n_reference=d_ref.n if d_ref else 0,
            n_current=d_cur.n if d_cur else 0,
            note="no finite values on " + ("either side" if d_ref is None and d_cur is None else "one side"),
        )
    scores = numeric_drift(d_ref, d_cur)
    chosen, note = _choose(method, "numeric", scores.n_reference, scores.n_current)
    if kind == "text":
        note = _join("drift of the text length distribution", note)
    threshold = by_column.get(name, by_method.get(chosen, DEFAULT_THRESHOLDS[chosen]))
    value = {
        "ks": scores.ks,
        "psi": scores.psi,
        "js": scores.js,
        "wasserstein": scores.wasserstein,
        "hellinger": scores.hellinger,
    }[chosen]
    p_value = scores.ks_p_value if chosen == "ks" else None
    drifted, why = _verdict(chosen, value, p_value, threshold)
    if chosen == "ks" and drifted and scores.ks <= scores.ks_resolution:
        drifted, why = False, f"KS statistic within the sketches' rank error ({scores.ks_resolution:.3g})"
    return _verdict_row(name, role, kind, chosen, value, threshold, p_value, drifted, scores, _numeric_scores(scores), _join(note, why))


def _verdict_row(
    name: str,
    role: Role,
    kind: str,
    chosen: str,
    value: float,
    threshold: float,
    p_value: float | None,
    drifted: bool,
    scores: NumericDrift | CategoricalDrift,
    all_scores: dict[str, Any],
    note: str,
) -> ColumnDrift:
    """The result of a column that was compared (status "ok")."""
    return ColumnDrift(
        column=name,
        role=role,
        kind=kind,
        status="ok",
        method=chosen,
        value=value,
        threshold=threshold,
        threshold_on="p_value" if chosen in _P_VALUE_METHODS else "value",
        p_value=p_value,
        drifted=drifted,
        n_reference=scores.n_reference,
        n_current=scores.n_current,
        scores=all_scores,
        note=note,
    )


def _categorical(
    name: str,
    role: Role,
    ref: ColumnProfile,
    cur: ColumnProfile,
    method: str,
    by_method: Mapping[str, float],
    by_column: Mapping[str, float],
) -> ColumnDrift:
    table = category_table(ref.freq, cur.freq)
    scores = categorical_drift(table)
    if scores.n_reference == 0 or scores.n_current == 0:
        return ColumnDrift(
            column=name,
            role=role,
            kind="categorical",
            status="no_data",
            n_reference=scores.n_reference,
            n_current=scores.n_current,
            note="no categories counted on one side",
        )
    chosen, note = _choose(method, "categorical", scores.n_reference, scores.n_current)
    threshold = by_column.get(name, by_method.get(chosen, DEFAULT_THRESHOLDS[chosen]))
    value = {"chisquare": scores.chi2, "psi": scores.psi, "js": scores.js, "hellinger": scores.hellinger}[chosen]
    p_value = scores.chi2_p_value if chosen == "chisquare" else None
    drifted, why = _verdict(chosen, value, p_value, threshold)
    if not scores.exact:
        note = _join(note, "category counts are estimates (more distinct values than the sketch keeps exactly)")
    return _verdict_row(name, role, "categorical", chosen, value, threshold, p_value, drifted, scores, _categorical_scores(scores), _join(note, why))


def _choose(method: str, kind: Literal["numeric", "categorical"], n_ref: int, n_cur: int) -> tuple[str, str]:
    """(method, note): the automatic choice, or the requested one when it applies to the kind."""
    small = min(n_ref, n_cur) <= AUTO_SMALL_SAMPLE
    auto = ("ks" if small else "wasserstein") if kind == "numeric" else ("chisquare" if small else "js")
    if method == "auto":
        return auto, ""
    allowed = _NUMERIC_METHODS if kind == "numeric" else _CATEGORICAL_METHODS
    if method in allowed:
        return method, ""
    return auto, f"{method} does not apply to {kind} columns; used {auto}"


def _verdict(method: str, value: float, p_value: float | None, threshold: float) -> tuple[bool, str]:
    if method in _P_VALUE_METHODS:
        if p_value is None or not math.isfinite(p_value):
            return False, "p-value not computable"
        return p_value < threshold, ""
    if not math.isfinite(value):
        return False, "statistic not finite (values beyond float range?)"
    return value >= threshold, ""


def _numeric_scores(s: NumericDrift) -> dict[str, Any]:
    return {
        "ks": s.ks,
        "ks_p_value": s.ks_p_value,
        "ks_resolution": s.ks_resolution,
        "psi": s.psi,
        "js": s.js,
        "wasserstein": s.wasserstein,
        "wasserstein_raw": s.wasserstein_raw,
        "hellinger": s.hellinger,
    }


def _categorical_scores(s: CategoricalDrift) -> dict[str, Any]:
    return {
        "chi2": s.chi2,
        "chi2_p_value": s.chi2_p_value,
        "dof": s.dof,
        "psi": s.psi,
        "js": s.js,
        "hellinger": s.hellinger,
        "new_categories": list(s.new_categories),
        "vanished_categories": list(s.vanished_categories),
        "counts_exact": s.exact,
    }


# ============================================================================ helpers
def _n_values(col: ColumnProfile | None) -> int:
    """Values of the column's own kind (what its statistics are computed on)."""
    if col is None:
        return 0
    kind = col.kind
    if kind == "numeric":
        return col.numeric.n if col.numeric is not None else 0
    if kind == "categorical":
        return col.n_categorical
    if kind == "text":
        return col.n_text
    return 0


def _share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"drift_share must be a number in [0, 1], got {value!r}")
    return float(value)


def _column_names(columns: Iterable[str] | None) -> set[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        raise ConfigError(f"columns must be a list of column names, not the string {columns!r}")
    names = list(columns)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ConfigError(f"columns must hold column names (strings); got {bad[:3]!r}")
    return set(names)


def _thresholds(
    thresholds: Mapping[str, float] | None, known_columns: set[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Split user thresholds into per-method and per-column overrides, validated."""
    by_method: dict[str, float] = {}
    by_column: dict[str, float] = {}
    if thresholds is None:
        return by_method, by_column
    if not isinstance(thresholds, Mapping):
        raise ConfigError(f"thresholds must be a mapping of method or column name to number, got {thresholds!r}")
    for key, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"threshold for {key!r} must be a finite number >= 0, got {value!r}")
        if key in known_columns:
            by_column[key] = float(value)
        elif key in METHODS:
            if key in _P_VALUE_METHODS and not 0 < value < 1:
                raise ConfigError(f"threshold for {key!r} is a p-value level and must be in (0, 1), got {value!r}")
            by_method[key] = float(value)
        else:
            raise ConfigError(f"thresholds key {key!r} is neither a method {METHODS} nor a column of either profile")
    return by_method, by_column


def _identity(p: Profile) -> dict[str, Any]:
    return {
        "model": p.model,
        "version": p.version,
        "segment": dict(p.segment),
        "window_start": p.window_start,
        "window_end": p.window_end,
        "rows": p.rows,
    }


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _json_number(value: float | None) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return _json_value(value.item())
    return str(value)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the header underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
