"""check_quality(): reference-based checks, constraints, sketch accuracy of shares, never raising."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import small_profiles

import mlwatch
from mlwatch import ConfigError, Profile
from mlwatch.quality_checks import Constraint, QualityIssue, QualityReport, check_quality


def checks(report: QualityReport, column: str | None = None) -> set[str]:
    """The names of the failed checks (of one column, or of all)."""
    return {i.check for i in report.issues if column is None or i.column == column}


# ============================================================================ Constraint
@pytest.mark.parametrize(
    "kwargs",
    [
        {"min": "0"},
        {"min": float("nan")},
        {"max": True},
        {"min": 5, "max": 1},
        {"allowed": "abc"},
        {"allowed": []},
        {"allowed": [None]},
        {"allowed": 5},
        {"not_null": 1},
        {"max_missing_share": 1.5},
        {"max_missing_share": -0.1},
        {"max_missing_share": "0.1"},
    ],
)
def test_constraint_validation(kwargs: dict[str, Any]) -> None:
    """Wrong constraint values raise ConfigError at construction."""
    with pytest.raises(ConfigError):
        Constraint(**kwargs)


def test_constraint_is_frozen_and_normalises_allowed() -> None:
    """Constraint is immutable; allowed values become category labels (3 and 3.0 are "3")."""
    c = Constraint(min=0, max=10.5, allowed=["a", 3, 3.0, True, 2.5], not_null=True, max_missing_share=0.1)
    assert c.allowed == frozenset({"a", "3", "True", "2.5"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.min = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"missing_tolerance": -0.1},
        {"outlier_quantile": 0.0},
        {"outlier_quantile": 0.6},
        {"distinct_ratio": 0.5},
        {"range_tolerance": "0.1"},
        {"constraints": {"x": {"min": 0}}},
        {"columns": "x"},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, Any]) -> None:
    """Wrong tolerances, constraints or column lists raise ConfigError."""
    p = mlwatch.profile({"x": [1.0, 2.0]})
    with pytest.raises(ConfigError):
        check_quality(p, p, **kwargs)


def test_non_profile_raises_config_error() -> None:
    """A current that is not a Profile is a ConfigError."""
    with pytest.raises(ConfigError):
        check_quality(None, {"x": [1]})  # type: ignore[arg-type]


# ============================================================================ reference checks
def test_same_data_has_no_issues(rng: np.random.Generator) -> None:
    """A fresh sample of the reference distribution raises nothing."""

    def make() -> Profile:
        return mlwatch.profile(
            {
                "x": rng.normal(size=20_000),
                "c": rng.choice(["a", "b", "c"], 20_000).tolist(),
                "id": [f"u{i}" for i in rng.integers(0, 10**9, 20_000)],
            }
        )

    report = check_quality(make(), make())
    assert report.ok, str(report)
    assert "no issues" in str(report)


def test_missing_share_change_beyond_tolerance(rng: np.random.Generator) -> None:
    """Missing share moving by more than 5 points either way is flagged; less is not."""

    def with_missing(share: float) -> Profile:
        x = rng.normal(size=10_000)
        x[: int(share * x.size)] = np.nan
        return mlwatch.profile({"x": x})

    ref = with_missing(0.10)
    assert "missing_share" not in checks(check_quality(ref, with_missing(0.14)))
    up = check_quality(ref, with_missing(0.20))
    issue = next(i for i in up.issues if i.check == "missing_share")
    assert issue.value == pytest.approx(0.20)
    assert issue.threshold == pytest.approx(0.15)
    assert "missing_share" in checks(check_quality(ref, with_missing(0.0)))
    assert "missing_share" not in checks(check_quality(ref, with_missing(0.20), missing_tolerance=0.2))


def test_type_mismatch_share(rng: np.random.Generator) -> None:
    """Strings in a numeric column beyond the tolerance are flagged, with or without a reference."""
    clean = rng.normal(size=1000).tolist()
    dirty = clean[:950] + ["oops"] * 50
    ref = mlwatch.profile({"x": clean})
    report = check_quality(ref, mlwatch.profile({"x": dirty}))
    issue = next(i for i in report.issues if i.check == "type_mismatch")
    assert issue.value == pytest.approx(0.05)
    assert issue.threshold == pytest.approx(0.01)
    assert "type_mismatch" in checks(check_quality(None, mlwatch.profile({"x": dirty})))
    assert report.ok is False


def test_kind_change_is_reported(rng: np.random.Generator) -> None:
    """A column whose kind changed gets one kind_changed issue."""
    ref = mlwatch.profile({"x": rng.normal(size=100)})
    cur = mlwatch.profile({"x": ["a", "b"] * 50})
    assert "kind_changed" in checks(check_quality(ref, cur))


def test_out_of_range_and_outliers(rng: np.random.Generator) -> None:
    """Values beyond the reference range and its extreme quantiles are flagged with their share."""
    ref = mlwatch.profile({"x": rng.normal(size=50_000)})
    cur_x = rng.normal(size=50_000)
    cur_x[:1500] = rng.uniform(10, 20, 1500)  # 3 % far outside
    report = check_quality(ref, mlwatch.profile({"x": cur_x}))
    assert {"out_of_range", "outliers"} <= checks(report)
    share = report.measurements["x"]["out_of_range_share"]
    assert share == pytest.approx(0.03, abs=0.003)
    quiet = check_quality(ref, mlwatch.profile({"x": rng.normal(size=50_000)}))
    assert quiet.ok, str(quiet)


@pytest.mark.parametrize("n_cur", [100_000, 3_000])
def test_shares_within_kll_rank_error(rng: np.random.Generator, n_cur: int) -> None:
    """Out-of-range and outlier shares are within the rank-error bound of the exact shares."""
    ref_x = rng.lognormal(0, 1, 100_000)
    cur_x = rng.lognormal(0.2, 1.1, n_cur)
    ref, cur = mlwatch.profile({"x": ref_x}), mlwatch.profile({"x": cur_x})
    m = check_quality(ref, cur).measurements["x"]
    assert cur.columns["x"].numeric is not None
    eps = cur.columns["x"].numeric.kll.normalized_rank_error()
    lo, hi = ref_x.min(), ref_x.max()
    exact_range = float(np.mean((cur_x < lo) | (cur_x > hi)))
    assert abs(m["out_of_range_share"] - exact_range) <= 2 * eps
    q_lo, q_hi = m["outlier_bounds"]
    exact_tails = float(np.mean((cur_x < q_lo) | (cur_x > q_hi)))
    assert abs(m["outlier_share"] - exact_tails) <= 2 * eps
    # the bounds themselves are reference quantiles within the reference's rank error
    ref_eps = ref.columns["x"].numeric.kll.normalized_rank_error()  # type: ignore[union-attr]
    assert abs(np.mean(ref_x < q_lo) - 0.005) <= ref_eps
    assert abs(np.mean(ref_x > q_hi) - 0.005) <= ref_eps


def test_shares_exact_when_extremes_cover_them(rng: np.random.Generator) -> None:
    """Few values outside the bounds: they are among the exact extremes, so the share is exact."""
    ref_x = rng.normal(size=10_000)  # 0.5 % of 10k = 50 values per tail: inside the 64 exact extremes
    cur_x = rng.normal(size=50_000)  # about 5 values per side beyond the reference range, plus 40 and 30
    cur_x[:40] = 100.0
    cur_x[40:70] = -100.0
    m = check_quality(mlwatch.profile({"x": ref_x}), mlwatch.profile({"x": cur_x})).measurements["x"]
    q_lo, q_hi = m["outlier_bounds"]
    s = np.sort(ref_x)
    assert (q_lo, q_hi) == (s[49], s[-51])  # exact order statistics: ranks 50 and 9,950 of 10,000
    exact_range = float(np.mean((cur_x < ref_x.min()) | (cur_x > ref_x.max())))
    assert m["out_of_range_share"] == pytest.approx(exact_range, abs=1e-12)


def test_distinct_count_jump_but_not_for_id_columns(rng: np.random.Generator) -> None:
    """More categories per value is flagged; an ID column over a bigger window is not."""
    ref = mlwatch.profile({"c": rng.integers(0, 20, 10_000).astype(str), "id": np.arange(10_000).astype(str)})
    cur = mlwatch.profile({"c": rng.integers(0, 100, 10_000).astype(str), "id": np.arange(10_000, 60_000).astype(str)})
    report = check_quality(ref, cur, new_category_tolerance=1.0)
    assert checks(report, "c") == {"distinct_count"}
    assert checks(report, "id") == set()
    fewer = check_quality(
        ref, mlwatch.profile({"c": rng.integers(0, 5, 10_000).astype(str), "id": np.arange(10_000).astype(str)})
    )
    assert "distinct_count" in checks(fewer, "c")


def test_new_categories(rng: np.random.Generator) -> None:
    """Categories never seen in an exact reference are flagged with their share."""
    ref = mlwatch.profile({"c": rng.choice(["a", "b"], 1000).tolist()})
    cur = mlwatch.profile({"c": ["a"] * 900 + ["z"] * 60 + ["y"] * 40})
    issue = next(i for i in check_quality(ref, cur).issues if i.check == "new_categories")
    assert issue.value == pytest.approx(0.1)
    assert "'z'" in issue.message
    assert "new_categories" not in checks(check_quality(ref, cur, new_category_tolerance=0.2))


def test_missing_and_new_columns(rng: np.random.Generator) -> None:
    """A reference column absent now, and a new column, are both reported."""
    ref = mlwatch.profile({"a": rng.normal(size=10), "gone": rng.normal(size=10)})
    cur = mlwatch.profile({"a": rng.normal(size=10), "fresh": rng.normal(size=10)})
    report = check_quality(ref, cur)
    assert checks(report, "gone") == {"missing_column"}
    assert checks(report, "fresh") == {"new_column"}


# ============================================================================ constraints
def test_constraints_on_current_alone(rng: np.random.Generator) -> None:
    """min/max/allowed/not_null/max_missing_share are checked without a reference."""
    x = rng.uniform(0, 10, 1000)
    x[:5] = -1.0
    x[5:8] = np.nan
    x[8] = 10.0
    cur = mlwatch.profile({"x": x, "c": ["a"] * 990 + ["bad"] * 10})
    report = check_quality(
        None,
        cur,
        constraints={
            "x": Constraint(min=0, max=9.99, not_null=True, max_missing_share=0.001),
            "c": Constraint(allowed={"a", "b"}),
            "absent": Constraint(not_null=True),
        },
    )
    assert checks(report, "x") == {"below_min", "above_max", "not_null", "max_missing_share"}
    below = next(i for i in report.issues if i.check == "below_min")
    assert below.value == -1.0
    assert below.threshold == 0.0
    assert report.measurements["x"]["below_min_share"] == pytest.approx(5 / 997)
    not_allowed = next(i for i in report.issues if i.check == "not_allowed")
    assert not_allowed.value == pytest.approx(0.01)
    assert "'bad'" in not_allowed.message
    assert checks(report, "absent") == {"missing_column"}
    passing = check_quality(
        None, cur, constraints={"x": Constraint(min=-5, max=20), "c": Constraint(allowed=["a", "bad"])}
    )
    assert passing.ok


def test_constraint_shares_within_rank_error(rng: np.random.Generator) -> None:
    """The share below a constraint's minimum is within the KLL rank error of the exact share."""
    x = rng.normal(size=100_000)
    cur = mlwatch.profile({"x": x})
    report = check_quality(None, cur, constraints={"x": Constraint(min=-1.0, max=1.5)})
    eps = cur.columns["x"].numeric.kll.normalized_rank_error()  # type: ignore[union-attr]
    assert abs(report.measurements["x"]["below_min_share"] - np.mean(x < -1.0)) <= eps
    assert abs(report.measurements["x"]["above_max_share"] - np.mean(x > 1.5)) <= eps


# ============================================================================ report and robustness
def test_report_shapes(rng: np.random.Generator) -> None:
    """issues are QualityIssue; to_dict() is strict JSON; str() is a table; outputs are named."""
    ref = mlwatch.profile({"x": rng.normal(size=500)}, outputs={"p": rng.uniform(size=500)})
    cur = mlwatch.profile({"x": [np.nan] * 500}, outputs={"p": rng.uniform(5, 6, size=500)})
    report = check_quality(ref, cur)
    assert all(isinstance(i, QualityIssue) for i in report.issues)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ok"] is False
    assert data["n_issues"] == len(report.issues)
    text = str(report)
    assert text.splitlines()[1].split() == ["column", "check", "value", "threshold", "message"]
    assert "p (output)" in text
    assert {i.role for i in report.issues} == {"input", "output"}
    assert "QualityReport(" in repr(report)
    assert [i.column for i in check_quality(ref, cur, include_outputs=False).issues] == ["x"]
    assert check_quality(ref, cur, columns=["p"]).columns_with_issues == ["p"]


def test_empty_profiles() -> None:
    """Profiles without columns: no issues, no errors."""
    assert check_quality(Profile("m"), Profile("m")).ok
    assert check_quality(None, Profile("m")).ok




_constraints = st.dictionaries(
    st.sampled_from(["a", "b", "z"]),
    st.builds(
        Constraint,
        min=st.one_of(st.none(), st.floats(-10, 0)),
        max=st.one_of(st.none(), st.floats(1, 10)),
        allowed=st.one_of(st.none(), st.sets(st.sampled_from(["a", "b", 1, True]), min_size=1)),
        not_null=st.booleans(),
        max_missing_share=st.one_of(st.none(), st.floats(0, 1)),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), small_profiles()), small_profiles(), _constraints)
def test_check_quality_never_raises(ref: Profile | None, cur: Profile, constraints: dict[str, Constraint]) -> None:
    """Any small profiles and constraints give a report whose dict is strict JSON."""
    report = check_quality(ref, cur, constraints=constraints)
    json.dumps(report.to_dict(), allow_nan=False)
    str(report)
    assert report.ok == (not report.issues)
