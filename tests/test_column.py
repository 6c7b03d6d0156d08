"""ColumnProfile: counting, routing by type, and exactness of moments and extremes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlwatch import ConfigError
from mlwatch.column import ColumnProfile


def test_numeric_array_counts_and_moments(rng: np.random.Generator) -> None:
    """Float arrays: NaN is missing, inf non-finite, moments exact, extremes exact."""
    x = rng.normal(3.0, 2.0, 50_000)
    data = np.concatenate([x, [np.nan, np.nan, np.inf, -np.inf]])
    col = ColumnProfile("x")
    col.update(data)
    assert (col.count, col.missing, col.non_finite, col.n_numeric) == (50_004, 2, 2, 50_000)
    assert col.kind == "numeric" and col.type_mismatch == 0
    num = col.numeric
    assert num is not None
    assert num.mean == pytest.approx(x.mean(), rel=1e-12)
    assert num.variance == pytest.approx(x.var(), rel=1e-9)
    assert (num.min, num.max) == (x.min(), x.max())
    np.testing.assert_array_equal(num.low, np.sort(x)[:64])
    np.testing.assert_array_equal(num.high, np.sort(x)[-64:])


def test_quantiles_within_kll_bound(rng: np.random.Generator) -> None:
    """Each quantile's true rank is within KLL's documented normalized rank error."""
    x = rng.lognormal(0, 1.5, 200_000)
    col = ColumnProfile("x")
    for chunk in np.array_split(x, 7):
        col.update(chunk)
    assert col.numeric is not None
    eps = col.numeric.kll.normalized_rank_error()
    ranks = np.linspace(0.01, 0.99, 99)
    q = col.numeric.kll.quantiles(ranks)
    true_ranks = np.searchsorted(np.sort(x), q, side="right") / x.size
    assert np.max(np.abs(true_ranks - ranks)) <= eps


def test_object_values_routed_by_type() -> None:
    """Mixed Python values: strings categorical, numbers numeric, others counted, nothing raised."""
    values = ["a", "b", "a", None, float("nan"), 1, 2.5, True, [1, 2], {"k": 1}, "z" * 500, float("inf")]
    col = ColumnProfile("mixed")
    col.update(values)
    assert col.count == 12
    assert col.missing == 2
    assert col.non_finite == 1
    assert col.n_numeric == 2
    assert col.n_categorical == 4  # a, b, a, True
    assert col.n_text == 1
    assert col.n_other == 2  # the list and the dict (unhashable)
    assert col.category_counts() == {"a": 2, "b": 1, "True": 1}
    assert col.kind == "categorical"
    assert col.type_mismatch == 2 + 1 + 1 + 2  # numbers, inf, text, others
    assert col.text_length is not None and col.text_length.max == 500


def test_long_text_keeps_lengths_only() -> None:
    """A declared text column never stores the text, only its length distribution."""
    col = ColumnProfile("comment", kind="text")
    col.update(["secret short", "another secret " * 20])
    assert col.freq is None and col.hll is None
    assert col.text_length is not None and col.text_length.n == 2
    assert col.kind == "text" and col.type_mismatch == 0


def test_declared_categorical_integers() -> None:
    """Integer codes declared categorical are counted as categories, 3 and 3.0 alike."""
    col = ColumnProfile("zip", kind="categorical")
    col.update(np.array([1, 2, 2, 3]))
    col.update([3.0, 1, None])
    assert col.category_counts() == {"1": 2, "2": 2, "3": 2}
    assert col.missing == 1 and col.numeric is None


def test_booleans_are_categorical() -> None:
    """Boolean arrays are categories True/False, not numbers."""
    col = ColumnProfile("flag")
    col.update(np.array([True, False, True]))
    assert col.category_counts() == {"True": 2, "False": 1}
    assert col.kind == "categorical"


def test_unhashable_and_hostile_objects_are_counted() -> None:
    """Objects whose __hash__/__eq__ raise are counted as other, never raised."""

    class Hostile:
        def __hash__(self) -> int:
            raise RuntimeError("no hash")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no eq")

    col = ColumnProfile("h")
    col.update([Hostile(), "a", Hostile(), [1]])
    assert col.n_other == 3 and col.n_categorical == 1 and col.count == 4


def test_frequent_items_exact_up_to_1000_distinct(rng: np.random.Generator) -> None:
    """Up to 1,000 distinct categories are counted exactly, and the HLL estimate is close."""
    cats = np.array([f"cat{i}" for i in range(1000)], dtype=object)
    data = cats[rng.integers(0, 1000, 300_000)]
    col = ColumnProfile("c")
    col.update(data)
    values, counts = np.unique(data.astype(str), return_counts=True)
    assert col.freq is not None and col.freq.is_exact()
    assert col.category_counts() == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert abs(col.distinct_estimate() - 1000) / 1000 < 0.05


def test_huge_ints_and_overflow_do_not_raise() -> None:
    """Ints beyond float range are other values; a sum that overflows keeps moments finite."""
    col = ColumnProfile("big")
    col.update([10**400, 1.0, 2.0])
    assert col.n_other == 1 and col.n_numeric == 2
    col2 = ColumnProfile("huge")
    col2.update(np.array([1.7e308, 1.7e308, 1.7e308]))
    assert col2.numeric is not None and math.isfinite(col2.numeric.mean)
    assert col2.numeric.m2 == 0.0  # the first batch's moments are its own: no 0 * inf cross term
    col3 = ColumnProfile("one")
    col3.update(np.array([1.5e154]))
    assert col3.numeric is not None and col3.numeric.variance == 0.0


def test_datetimes_become_epoch_seconds() -> None:
    """datetime64 values are profiled as seconds since the epoch; NaT is missing."""
    col = ColumnProfile("t")
    col.update(np.array(["2026-01-01T00:00:00", "NaT"], dtype="datetime64[s]"))
    assert col.missing == 1 and col.numeric is not None
    assert col.numeric.min == pytest.approx(1767225600.0)


def test_merge_equals_whole(rng: np.random.Generator) -> None:
    """Merging two halves gives exact counters and moments of the whole."""
    x = rng.normal(size=10_000)
    whole, a, b = ColumnProfile("x"), ColumnProfile("x"), ColumnProfile("x")
    whole.update(x)
    a.update(x[:3000])
    b.update(x[3000:])
    a.merge(b)
    assert a.count == whole.count and a.n_numeric == whole.n_numeric
    assert a.numeric is not None and whole.numeric is not None
    assert a.numeric.mean == pytest.approx(whole.numeric.mean, abs=1e-12)
    assert a.numeric.m2 == pytest.approx(whole.numeric.m2, rel=1e-9)
    np.testing.assert_array_equal(a.numeric.high, whole.numeric.high)


def test_bad_declared_kind() -> None:
    """An unknown kind is a configuration error."""
    with pytest.raises(ConfigError, match="kind must be one of"):
        ColumnProfile("x", kind="colour")  # type: ignore[arg-type]
