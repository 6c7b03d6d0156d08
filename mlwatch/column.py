"""`ColumnProfile`: everything mlwatch keeps about one feature or output, as mergeable state.

A column counts every value it is shown and routes each non-missing value by its Python type:
finite numbers to a `NumericSummary`, short strings and booleans to a frequent-items sketch plus a
HyperLogLog, long strings to a length distribution only (the text itself is never kept), and
anything else (lists, objects, unhashables) to a counter. The column's kind is the declared one
or, when none was declared, the majority type; values of other types count as type mismatches.
Keeping every type's counts (instead of fixing the kind on the first batch) makes the kind, and
the mismatch count, the same whichever replica saw which values first: merging stays exact.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mlwatch._errors import ConfigError, ProfileMergeError
from mlwatch._numeric import DEFAULT_EXTREMES, NumericSummary
from mlwatch._sketches import DEFAULT_FREQ_LG, DEFAULT_HLL_LG, DEFAULT_KLL_K, FrequentSketch, HllSketch, KllSketch
from mlwatch._tabular import StrCounts

__all__ = ["DEFAULT_MAX_CATEGORY_LENGTH", "KINDS", "ColumnProfile", "Kind", "as_array"]

Kind = Literal["numeric", "categorical", "text", "empty"]
DeclaredKind = Literal["numeric", "categorical", "text"]
KINDS: tuple[DeclaredKind, ...] = ("numeric", "categorical", "text")

#: Strings longer than this are treated as free text: only their length is profiled.
DEFAULT_MAX_CATEGORY_LENGTH = 100

_NUMERIC_TYPES: tuple[type, ...] = (int, float, np.integer, np.floating)
#: Exact types whose lists convert to float64 in one numpy call (bool is deliberately absent).
_FAST_NUMERIC: frozenset[type] = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


def _is_missing_scalar(value: object) -> bool:
    """None, NaN, pandas NA/NaT and numpy NaT, recognised without importing pandas."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    name = type(value).__name__
    return name in ("NAType", "NaTType") or (name == "datetime64" and bool(np.isnat(value)))  # type: ignore[call-overload]


class ColumnProfile:
    """Mergeable profile of one column (input feature or model output)."""

    __slots__ = (
        "_freq_lg",
        "_hll_lg",
        "_kll_k",
        "count",
        "declared_kind",
        "freq",
        "hll",
        "max_category_length",
        "missing",
        "n_categorical",
        "n_extremes",
        "n_numeric",
        "n_other",
        "n_text",
        "name",
        "non_finite",
        "numeric",
        "text_length",
    )

    def __init__(
        self,
        name: str,
        *,
        kind: DeclaredKind | None = None,
        kll_k: int = DEFAULT_KLL_K,
        freq_lg: int = DEFAULT_FREQ_LG,
        hll_lg: int = DEFAULT_HLL_LG,
        n_extremes: int = DEFAULT_EXTREMES,
        max_category_length: int = DEFAULT_MAX_CATEGORY_LENGTH,
    ) -> None:
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"column {name!r}: kind must be one of {KINDS}, got {kind!r}")
        self.name = name
        self.declared_kind: DeclaredKind | None = kind
        self._kll_k = kll_k
        self._freq_lg = freq_lg
        self._hll_lg = hll_lg
        self.n_extremes = n_extremes
        self.max_category_length = max_category_length
        self.count = 0  # every value shown, missing included
        self.missing = 0  # None, NaN, NA, NaT
        self.non_finite = 0  # +-inf: numeric but kept out of the sketches
        self.n_numeric = 0  # finite numbers sketched in `numeric`
        self.n_categorical = 0  # short strings, booleans, and numbers of a declared categorical column
        self.n_text = 0  # long strings (length only)
        self.n_other = 0  # any other type: always a type mismatch
        self.numeric: NumericSummary | None = None
        self.freq: FrequentSketch | None = None
        self.hll: HllSketch | None = None
        self.text_length: KllSketch | None = None

    # ----------------------------------------------------------------- derived facts
    @property
    def kind(self) -> Kind:
        """The declared kind, else the type most values had ("empty" when there were none)."""
        if self.declared_kind is not None:
            return self.declared_kind
        best = max(self.n_numeric + self.non_finite, self.n_categorical, self.n_text)
        if best == 0:
            return "empty"
        if self.n_numeric + self.non_finite == best:
            return "numeric"
        return "categorical" if self.n_categorical == best else "text"

    @property
    def type_mismatch(self) -> int:
        """Non-missing values whose type does not fit the column's kind."""
        kind = self.kind
        if kind == "numeric":
            return self.n_categorical + self.n_text + self.n_other
        if kind == "categorical":
            return self.n_numeric + self.non_finite + self.n_text + self.n_other
        if kind == "text":
            return self.n_numeric + self.non_finite + self.n_categorical + self.n_other
        return self.n_other

    @property
    def present(self) -> int:
        """Values that were not missing."""
        return self.count - self.missing

    @property
    def missing_share(self) -> float:
        return self.missing / self.count if self.count else 0.0

    @property
    def type_mismatch_share(self) -> float:
        return self.type_mismatch / self.present if self.present else 0.0

    def distinct_estimate(self) -> float:
        """Estimated number of distinct categorical values (0 for other kinds)."""
        return self.hll.estimate() if self.hll is not None else 0.0

    def category_counts(self) -> dict[str, int]:
        """Counts per category (exact while fewer distinct values than the sketch keeps)."""
        return self.freq.counts() if self.freq is not None else {}

    # ----------------------------------------------------------------- updates
    def add_missing(self, n: int) -> None:
        """Count `n` rows in which this column had no value at all."""
        self.count += n
        self.missing += n

    def _numeric_summary(self) -> NumericSummary:
        if self.numeric is None:
            self.numeric = NumericSummary(self._kll_k, self.n_extremes)
        return self.numeric

    def _add_categories(self, counts: Mapping[str, int]) -> None:
        if not counts:
            return
        if self.freq is None:
            self.freq = FrequentSketch(self._freq_lg)
            self.hll = HllSketch(self._hll_lg)
        assert self.hll is not None
        self.freq.update_counts(counts)
        self.hll.update_distinct(counts.keys())
        self.n_categorical += sum(counts.values())

    def _add_text_lengths(self, lengths: Sequence[int] | npt.NDArray[np.float64]) -> None:
        arr = np.asarray(lengths, dtype=np.float64)
        if arr.shape[0] == 0:
            return
        if self.text_length is None:
            self.text_length = KllSketch(self._kll_k)
        self.text_length.update(arr)
        self.n_text += int(arr.shape[0])

    def _add_floats(self, arr: npt.NDArray[np.float64]) -> None:
        """Float array: NaN is missing, inf is non-finite, the rest is numeric (or categorical if declared)."""
        finite_mask = np.isfinite(arr)
        n_finite = int(np.count_nonzero(finite_mask))
        if n_finite == arr.shape[0]:
            finite = arr
        else:
            n_nan = int(np.count_nonzero(np.isnan(arr)))
            self.missing += n_nan
            self.non_finite += arr.shape[0] - n_finite - n_nan
            finite = arr[finite_mask]
        if self.declared_kind in ("categorical", "text"):
            self._add_number_categories(finite)
            return
        self._numeric_summary().update(finite)
        self.n_numeric += n_finite

    def _add_number_categories(self, finite: npt.NDArray[Any]) -> None:
        # In the order values first occur, as a list of them is counted: once the frequent-items
        # sketch purges, what it keeps depends on the order categories arrive in.
        values, first, counts = np.unique(finite, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        labels = map(_number_label, values[order].tolist())
        self._add_categories(dict(zip(labels, counts[order].tolist(), strict=True)))

    def update(self, values: Any) -> None:
        """Add one batch of values: a numpy array, a pandas/polars Series, any sequence, or strings
        already counted (`StrCounts`).

        Vectorised for numeric arrays; object data is counted once per distinct value. Values of
        any type are accepted: what does not fit is counted, never raised.
        """
        if type(values) is StrCounts:  # what a list of these strings gives, counted in C
            self.count += values.n
            self._classify_counts(values.counts.items())
            return
        if isinstance(values, list):
            self.count += len(values)
            if values:
                self._update_objects(values)
            return
        if isinstance(values, tuple):
            self.update(list(values))
            return
        arr = as_array(values)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        n = int(arr.shape[0])
        self.count += n
        if n == 0:
            return
        kind = arr.dtype.kind
        if kind == "f":
            self._add_floats(arr.astype(np.float64, copy=False))
        elif kind in "iu":
            if self.declared_kind in ("categorical", "text"):
                self._add_number_categories(arr)
            else:
                self._numeric_summary().update(arr.astype(np.float64))
                self.n_numeric += n
        elif kind == "b":
            n_true = int(np.count_nonzero(arr))
            self._add_categories({k: v for k, v in (("True", n_true), ("False", n - n_true)) if v})
        elif kind in "US":
            self._update_objects(arr.tolist())
        elif kind == "M":
            nat = np.isnat(arr)
            self.missing += int(np.count_nonzero(nat))
            secs = arr[~nat].astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
            self._numeric_summary().update(secs)
            self.n_numeric += int(secs.shape[0])
        elif kind == "m":
            nat = np.isnat(arr)
            self.missing += int(np.count_nonzero(nat))
            secs = arr[~nat].astype("timedelta64[ns]").astype(np.int64).astype(np.float64) / 1e9
            self._numeric_summary().update(secs)
            self.n_numeric += int(secs.shape[0])
        elif kind == "c":
            self.n_other += n
        else:
            self._update_objects(arr.tolist() if isinstance(arr, np.ndarray) else list(arr))

    def _update_objects(self, values: list[Any]) -> None:
        """Python objects: classify each distinct value once, with its count."""
        types: set[type] | None = getattr(values, "types", None)  # precomputed by TypedColumn
        if types is None and type(values[0]) is str:
            # Text columns: count first and look at the types of the distinct values only. Only
            # str keys prove nothing was merged (a str never equals a number or a bool).
            counts = _count_hashable(values)
            if counts is not None and all(type(k) is str for k in counts):
                self._classify_counts(counts.items())
                return
        if types is None:
            types = set(map(type, values))
        if types <= _FAST_NUMERIC and self.declared_kind in (None, "numeric"):
            try:
                # fromiter: a third of np.array's instructions per value (no shape discovery)
                floats = np.fromiter(values, dtype=np.float64, count=len(values))
            except (OverflowError, ValueError, TypeError):  # e.g. an int beyond float range
                pass
            else:
                self._add_floats(floats)
                return
        if bool in types and len(types) > 1:
            # True == 1 and they hash alike: key by (value, is_bool) so neither swallows the other.
            pairs = _count_hashable((v, type(v) is bool) for v in values)
            if pairs is not None:
                self._classify_counts([(v, c) for (v, _), c in pairs.items()])
                return
        counts = _count_hashable(values)
        if counts is None:
            self._update_objects_one_by_one(values)
            return
        self._classify_counts(counts.items())

    def _update_objects_one_by_one(self, values: list[Any]) -> None:
        counts: Counter[tuple[Any, bool]] = Counter()
        for value in values:
            try:
                counts[(value, type(value) is bool)] += 1
            except Exception:  # unhashable, or __hash__/__eq__ raising
                self.n_other += 1
        self._classify_counts([(v, c) for (v, _), c in counts.items()])

    def _classify_counts(self, counts: Iterable[tuple[Any, int]]) -> None:
        categories: dict[str, int] = {}
        numbers: list[float] = []
        number_counts: list[int] = []
        lengths: list[int] = []
        length_counts: list[int] = []
        declared = self.declared_kind
        limit = self.max_category_length
        for value, c in counts:
            try:
                t = type(value)
                if t is str or isinstance(value, str):
                    if declared == "text" or len(value) > limit:
                        lengths.append(len(value))
                        length_counts.append(c)
                    else:
                        categories[str(value)] = categories.get(str(value), 0) + c
                elif t is bool or isinstance(value, np.bool_):
                    label = "True" if value else "False"
                    categories[label] = categories.get(label, 0) + c
                elif _is_missing_scalar(value):
                    self.missing += c
                elif isinstance(value, _NUMERIC_TYPES):
                    f = float(value)  # type: ignore[arg-type]  # int, float or a numpy number
                    if declared in ("categorical", "text"):
                        if math.isnan(f):
                            self.missing += c
                        elif math.isinf(f):  # as in a float array: non-finite, not a category "inf"
                            self.non_finite += c
                        else:
                            label = _number_label(value)
                            categories[label] = categories.get(label, 0) + c
                    elif math.isfinite(f):
                        numbers.append(f)
                        number_counts.append(c)
                    else:
                        self.non_finite += c
                else:
                    self.n_other += c
            except Exception:  # a value whose type lies about itself: count it, never raise
                self.n_other += c
        if numbers:
            arr = np.repeat(np.asarray(numbers, dtype=np.float64), number_counts)
            self._numeric_summary().update(arr)
            self.n_numeric += int(arr.shape[0])
        if lengths:
            self._add_text_lengths(np.repeat(np.asarray(lengths, dtype=np.float64), length_counts))
        self._add_categories(categories)

    # ----------------------------------------------------------------- merge
    def merge(self, other: ColumnProfile) -> None:
        """Fold `other` (a profile of the same column) into this one."""
        if other.declared_kind is not None and self.declared_kind not in (None, other.declared_kind):
            raise ProfileMergeError(
                f"column {self.name!r} is declared {self.declared_kind} on one side and {other.declared_kind} on the other"
            )
        if self.declared_kind is None:
            self.declared_kind = other.declared_kind
        self.count += other.count
        self.missing += other.missing
        self.non_finite += other.non_finite
        self.n_numeric += other.n_numeric
        self.n_categorical += other.n_categorical
        self.n_text += other.n_text
        self.n_other += other.n_other
        if other.numeric is not None:
            self._numeric_summary().merge(other.numeric)
        if other.freq is not None:
            assert other.hll is not None
            if self.freq is None:
                self.freq = other.freq.copy()
                self.hll = other.hll.copy()
            else:
                assert self.hll is not None
                self.freq.merge(other.freq)
                self.hll.merge(other.hll)
        if other.text_length is not None:
            if self.text_length is None:
                self.text_length = other.text_length.copy()
            else:
                self.text_length.merge(other.text_length)

    def copy(self) -> ColumnProfile:
        clone = ColumnProfile(
            self.name,
            kind=self.declared_kind,
            kll_k=self._kll_k,
            freq_lg=self._freq_lg,
            hll_lg=self._hll_lg,
            n_extremes=self.n_extremes,
            max_category_length=self.max_category_length,
        )
        clone.merge(self)
        return clone

    def summary(self) -> dict[str, Any]:
        """A plain-dict digest for display and JSON."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "count": self.count,
            "missing": self.missing,
            "missing_share": self.missing_share,
            "non_finite": self.non_finite,
            "type_mismatch": self.type_mismatch,
        }
        num = self.numeric
        if num is not None and num.n:
            q = num.kll.quantiles([0.05, 0.25, 0.5, 0.75, 0.95])
            out.update(
                mean=num.mean, std=num.std, min=num.min, max=num.max,
                p05=float(q[0]), p25=float(q[1]), p50=float(q[2]), p75=float(q[3]), p95=float(q[4]),
            )
        if self.freq is not None:
            counts = self.freq.counts()
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            out.update(distinct=round(self.distinct_estimate()), top=[list(kv) for kv in top])
        if self.text_length is not None:
            out.update(text_length_p50=self.text_length.quantile(0.5), text_length_max=self.text_length.max)
        return out


def _number_label(value: Any) -> str:
    """Category label of a number in a categorical column: 3 and 3.0 are the same category."""
    f = float(value)
    if f.is_integer() and abs(f) < 2**63:
        return str(int(f))
    return repr(f)


def _count_hashable(values: Iterable[Any]) -> Counter[Any] | None:
    try:
        return Counter(values)
    except Exception:
        return None


def as_array(values: Any) -> npt.NDArray[Any]:
    """A 1-D numpy view of a batch without importing pandas or polars."""
    if isinstance(values, np.ndarray):
        return values
    module = type(values).__module__ or ""
    if module.startswith("pandas"):
        return _pandas_to_numpy(values)
    if module.startswith("polars"):
        return _polars_to_numpy(values)
    try:
        return np.fromiter(values, dtype=object)
    except TypeError:  # not iterable: a single value
        out = np.empty(1, dtype=object)
        out[0] = values
        return out


def _pandas_to_numpy(series: Any) -> npt.NDArray[Any]:
    dtype = series.dtype
    name = type(dtype).__name__
    if name == "CategoricalDtype":
        return np.asarray(series.astype(object).to_numpy())
    if name in ("Int64Dtype", "Int32Dtype", "Int16Dtype", "Int8Dtype", "UInt64Dtype", "UInt32Dtype",
                "UInt16Dtype", "UInt8Dtype", "Float64Dtype", "Float32Dtype"):
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    if name == "BooleanDtype":
        return np.asarray(series.to_numpy(dtype=object, na_value=None))
    if name in ("DatetimeTZDtype",):
        return np.asarray(series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())
    return np.asarray(series.to_numpy())


def _polars_to_numpy(series: Any) -> npt.NDArray[Any]:
    dtype = str(series.dtype)
    if dtype.startswith(("Float", "Int", "UInt")) and series.null_count():
        return np.asarray(series.cast(float).fill_null(float("nan")).to_numpy())
    if dtype in ("String", "Utf8", "Categorical", "Enum", "Boolean") or series.null_count():
        return np.asarray(series.to_list(), dtype=object)
    return np.asarray(series.to_numpy())
