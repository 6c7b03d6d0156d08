"""Profile merge: a monoid, exact on counters, equal to profiling the union within sketch bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlwatch
from mlwatch import ProfileMergeError
from mlwatch.profile import Profile

_value = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from(["a", "b", "c", "", "é", "x" * 150]),
    st.booleans(),
)
_rows = st.lists(st.fixed_dictionaries({}, optional={"f": _value, "g": _value, "h": _value}), max_size=40)


def _counters(p: Profile) -> dict[str, tuple[int, ...]]:
    return {
        name: (c.count, c.missing, c.non_finite, c.n_numeric, c.n_categorical, c.n_text, c.n_other)
        for name, c in sorted(p.columns.items())
    }


def _fingerprint(p: Profile) -> tuple[object, ...]:
    cats = {n: c.category_counts() for n, c in p.columns.items()}
    numeric = {
        n: (c.numeric.n, c.numeric.min, c.numeric.max, tuple(c.numeric.low), tuple(c.numeric.high))
        for n, c in p.columns.items()
        if c.numeric is not None
    }
    return (p.rows, _counters(p), cats, numeric)


@settings(max_examples=60, deadline=None)
@given(a=_rows, b=_rows, c=_rows)
def test_merge_associative_commutative_and_equal_to_union(a: list[dict[str, object]], b: list[dict[str, object]], c: list[dict[str, object]]) -> None:
    """(a+b)+c == a+(b+c) == c+b+a == profile(a+b+c) on counters, categories and exact extremes."""
    pa, pb, pc = (mlwatch.profile(x, model="m") for x in (a, b, c))
    whole = mlwatch.profile(a + b + c, model="m")
    left = pa.merge(pb).merge(pc)
    right = pa.merge(pb.merge(pc))
    swapped = mlwatch.merge([pc, pb, pa])
    assert _fingerprint(left) == _fingerprint(right) == _fingerprint(swapped)
    # Columns absent from a batch are absent from its profile, so compare only what the union saw.
    assert _counters(left) == _counters(whole)
    assert {n: c.category_counts() for n, c in left.columns.items()} == {
        n: c.category_counts() for n, c in whole.columns.items()
    }


def test_merge_of_replicas_matches_whole_within_kll_bound(rng: np.random.Generator) -> None:
    """Ten replicas' profiles merged: counts exact, moments exact, quantiles within KLL's bound."""
    x = rng.gamma(2.0, 3.0, 100_000)
    parts = [mlwatch.profile({"x": chunk}, model="m") for chunk in np.array_split(x, 10)]
    merged = mlwatch.merge(parts)
    num = merged.columns["x"].numeric
    assert num is not None and num.n == x.size and merged.rows == x.size
    assert num.mean == pytest.approx(x.mean(), rel=1e-12)
    assert num.variance == pytest.approx(x.var(), rel=1e-9)
    ranks = np.linspace(0.02, 0.98, 49)
    true_ranks = np.searchsorted(np.sort(x), num.kll.quantiles(ranks), side="right") / x.size
    assert np.max(np.abs(true_ranks - ranks)) <= num.kll.normalized_rank_error()


def test_merge_different_models_is_an_error() -> None:
    """Merging profiles of two models by mistake raises a clear error."""
    with pytest.raises(ProfileMergeError, match="different models: 'a' and 'b'"):
        mlwatch.profile({"x": [1.0]}, model="a").merge(mlwatch.profile({"x": [1.0]}, model="b"))


def test_merge_mixed_versions_and_segments_and_windows() -> None:
    """Versions and segments that differ become '*'; windows widen; errors and calls add up."""
    a = Profile("m", version="1", segment={"country": "DE"}, window_start=60.0, window_end=120.0)
    b = Profile("m", version="2", segment={"country": "FR"}, window_start=120.0, window_end=180.0)
    a.calls, b.calls = 3, 4
    a.errors, b.errors = {"ValueError": 1}, {"ValueError": 2, "KeyError": 1}
    m = a.merge(b)
    assert (m.version, m.segment, m.window_start, m.window_end) == ("*", {"country": "*"}, 60.0, 180.0)
    assert m.calls == 7 and m.errors == {"ValueError": 3, "KeyError": 1}
    assert a.calls == 3  # inputs unchanged


def test_merge_needs_a_profile() -> None:
    """mlwatch.merge([]) says what it needs."""
    with pytest.raises(ValueError, match="at least one profile"):
        mlwatch.merge([])


def test_latency_sketch_merges() -> None:
    """Latency sketches merge like columns."""
    a, b = Profile("m"), Profile("m")
    a.record_latency([0.001, 0.002])
    b.record_latency([0.003, float("nan")])
    m = a.merge(b)
    assert m.latency is not None and m.latency.n == 3 and m.latency.max == 0.003


def test_latency_from_arrays_and_iterables_alike() -> None:
    """Arrays (any shape, NaN and inf dropped) and plain iterables give the same latency sketch."""
    values = np.random.default_rng(3).exponential(0.01, 3000)
    values[::97] = np.nan
    values[::101] = np.inf
    a, b, c = Profile("m"), Profile("m"), Profile("m")
    a.record_latency(values)
    b.record_latency(iter(values.tolist()))
    c.record_latency(values.reshape(100, 30))
    finite = values[np.isfinite(values)]
    for p in (a, b, c):
        assert p.latency is not None and p.latency.n == finite.shape[0]
        assert (p.latency.min, p.latency.max) == (finite.min(), finite.max())
        # KLL's rank error for k=200 is about 1.3 %; the median stays within it
        assert abs(np.mean(finite <= p.latency.quantile(0.5)) - 0.5) < 0.02
