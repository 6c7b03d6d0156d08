"""drift(): automatic method choice, verdicts against exact statistics, bad input, reports."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import spatial, stats
from strategies import small_profiles

import mlwatch
from mlwatch import ConfigError, Profile
from mlwatch.drift import DEFAULT_THRESHOLDS, DriftReport, drift

Array = npt.NDArray[np.float64]


# ============================================================================ exact rules
def exact_verdict(ref: Array, cur: Array) -> bool:
    """The automatic numeric rule applied to exact statistics computed by scipy on raw data."""
    if min(ref.size, cur.size) <= 1000:
        return bool(stats.ks_2samp(ref, cur, method="asymp").pvalue < 0.05)
    return bool(stats.wasserstein_distance(ref, cur) / ref.std() >= 0.1)


def exact_categorical_verdict(ref: list[str], cur: list[str]) -> bool:
    """The automatic categorical rule applied to exact statistics computed from raw counts."""
    labels = sorted(set(ref) | set(cur))
    r = np.array([ref.count(k) for k in labels], dtype=float)
    c = np.array([cur.count(k) for k in labels], dtype=float)
    if min(len(ref), len(cur)) <= 1000:
        return bool(stats.chi2_contingency(np.vstack((r, c)), correction=False)[1] < 0.05)
    return bool(spatial.distance.jensenshannon(r / r.sum(), c / c.sum(), base=2) >= 0.1)


NUMERIC_CASES: dict[str, tuple[int, int, Any, Any]] = {
    # name: (n_ref, n_cur, reference sampler, current sampler)
    "small-stable": (500, 400, lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0, 1, n)),
    "small-shifted": (500, 400, lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0.5, 1, n)),
    "small-ref-big-cur-scaled": (800, 50_000, lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0, 2, n)),
    "large-stable": (50_000, 50_000, lambda r, n: r.lognormal(0, 1, n), lambda r, n: r.lognormal(0, 1, n)),
    "large-shifted": (50_000, 50_000, lambda r, n: r.lognormal(0, 1, n), lambda r, n: r.lognormal(0.4, 1, n)),
    "large-integers-stable": (50_000, 20_000, lambda r, n: r.poisson(4, n), lambda r, n: r.poisson(4, n)),
    "large-integers-shifted": (50_000, 20_000, lambda r, n: r.poisson(4, n), lambda r, n: r.poisson(5, n)),
}


@pytest.mark.parametrize("case", list(NUMERIC_CASES))
def test_numeric_verdicts_match_exact_rule(case: str) -> None:
    """drift()'s verdict equals the same rule on exact statistics, for clearly stable/drifted data."""
    n_ref, n_cur, make_ref, make_cur = NUMERIC_CASES[case]
    r = np.random.default_rng(list(NUMERIC_CASES).index(case))
    ref, cur = np.asarray(make_ref(r, n_ref), float), np.asarray(make_cur(r, n_cur), float)
    report = drift(mlwatch.profile({"x": ref}), mlwatch.profile({"x": cur}))
    result = report["x"]
    assert result.method == ("ks" if min(n_ref, n_cur) <= 1000 else "wasserstein")
    assert result.drifted == exact_verdict(ref, cur) == ("shifted" in case or "scaled" in case)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "cur_p"),
    [
        (600, 500, [0.5, 0.3, 0.2]),
        (600, 500, [0.2, 0.3, 0.5]),
        (30_000, 20_000, [0.5, 0.3, 0.2]),
        (30_000, 20_000, [0.1, 0.3, 0.6]),
    ],
)
def test_categorical_verdicts_match_exact_rule(n_ref: int, n_cur: int, cur_p: list[float]) -> None:
    """Chi-square on small samples, Jensen-Shannon on large ones: same verdict as on raw counts."""
    r = np.random.default_rng(n_ref + n_cur + int(cur_p[0] * 10))
    ref = r.choice(["a", "b", "c"], n_ref, p=[0.5, 0.3, 0.2]).tolist()
    cur = r.choice(["a", "b", "c"], n_cur, p=cur_p).tolist()
    result = drift(mlwatch.profile({"c": ref}), mlwatch.profile({"c": cur}))["c"]
    assert result.method == ("chisquare" if min(n_ref, n_cur) <= 1000 else "js")
    assert result.drifted == exact_categorical_verdict(ref, cur) == (cur_p[0] != 0.5)


def test_million_row_stable_case_is_not_flagged() -> None:
    """1,000,000 stable rows per side: no feature drifts (a p-value test would flag noise)."""
    r = np.random.default_rng(7)
    n = 1_000_000
    ref = mlwatch.profile({"x": r.normal(10, 2, n), "y": r.lognormal(0, 1, n), "c": r.integers(0, 5, n).astype(str)})
    cur = mlwatch.profile({"x": r.normal(10, 2, n), "y": r.lognormal(0, 1, n), "c": r.integers(0, 5, n).astype(str)})
    report = drift(ref, cur)
    assert report.drifted_columns == []
    assert not report.dataset_drift
    assert {c.method for c in report.columns} == {"wasserstein", "js"}
    # explicit p-value tests do not flag it either: KS stays within the sketches' resolution
    ks_report = drift(ref, cur, method="ks")
    assert not ks_report["x"].drifted
    assert not ks_report["y"].drifted


def test_explicit_methods_and_default_thresholds(rng: np.random.Generator) -> None:
    """Each explicit method is used with its default threshold; p-value methods report p."""
    ref = mlwatch.profile({"x": rng.normal(0, 1, 20_000)})
    cur = mlwatch.profile({"x": rng.normal(1, 1, 20_000)})
    for method in ("ks", "psi", "js", "wasserstein", "hellinger"):
        result = drift(ref, cur, method=method)["x"]
        assert result.method == method
        assert result.threshold == DEFAULT_THRESHOLDS[method]
        assert result.drifted
        assert (result.p_value is not None) == (method == "ks")
        assert result.threshold_on == ("p_value" if method == "ks" else "value")
        assert result.value == result.scores[method]


def test_method_not_applicable_falls_back_with_note(rng: np.random.Generator) -> None:
    """Chi-square on a numeric column and KS on a categorical one fall back to the automatic choice."""
    ref = mlwatch.profile({"x": rng.normal(0, 1, 500), "c": rng.choice(["a", "b"], 500).tolist()})
    res = drift(ref, ref, method="chisquare")
    assert res["x"].method == "ks"
    assert "does not apply" in res["x"].note
    assert res["c"].method == "chisquare"
    res = drift(ref, ref, method="wasserstein")
    assert res["c"].method == "chisquare"
    assert "does not apply" in res["c"].note


def test_thresholds_by_method_and_by_column(rng: np.random.Generator) -> None:
    """Thresholds override per method name and per column name (column wins)."""
    ref = mlwatch.profile({"x": rng.normal(0, 1, 5000), "y": rng.normal(0, 1, 5000)})
    cur = mlwatch.profile({"x": rng.normal(0.3, 1, 5000), "y": rng.normal(0.3, 1, 5000)})
    base = drift(ref, cur)
    assert base["x"].drifted
    assert base["y"].drifted
    report = drift(ref, cur, thresholds={"wasserstein": 0.5, "y": 0.05})
    assert report["x"].threshold == 0.5
    assert not report["x"].drifted
    assert report["y"].threshold == 0.05
    assert report["y"].drifted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "kl"},
        {"method": 3},
        {"drift_share": 1.5},
        {"drift_share": True},
        {"thresholds": {"nope": 0.1}},
        {"thresholds": {"psi": -1}},
        {"thresholds": {"ks": 2.0}},
        {"thresholds": {"psi": float("nan")}},
        {"columns": "x"},
        {"columns": [1, 2]},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, Any]) -> None:
    """Wrong arguments raise ConfigError (data never does)."""
    p = mlwatch.profile({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError):
        drift(p, p, **kwargs)


def test_non_profiles_raise_config_error() -> None:
    """Passing something other than a Profile is a ConfigError, not an AttributeError."""
    p = mlwatch.profile({"x": [1.0]})
    with pytest.raises(ConfigError):
        drift(p, {"x": [1.0]})  # type: ignore[arg-type]


# ============================================================================ bad data
def test_one_sided_empty_and_mismatched_columns(rng: np.random.Generator) -> None:
    """Columns on one side, without values, or of another kind are reported, never raised."""
    n = 2000
    ref = mlwatch.profile(
        {"both": rng.normal(size=n), "old": rng.normal(size=n), "empty": [None] * n, "kind": rng.normal(size=n)}
    )
    cur = mlwatch.profile(
        {"both": rng.normal(size=n), "new": rng.normal(size=n), "empty": [None] * n, "kind": ["a", "b"] * (n // 2)}
    )
    report = drift(ref, cur)
    status = {c.column: c.status for c in report.columns}
    assert status == {
        "both": "ok",
        "old": "missing_in_current",
        "empty": "no_data",
        "kind": "kind_mismatch",
        "new": "missing_in_reference",
    }
    assert report["kind"].drifted
    assert report["kind"].kind == "numeric->categorical"
    assert report.n_columns == 2
    assert report.n_drifted == 1
    assert report.share == 0.5
    assert report.dataset_drift


def test_all_missing_on_one_side_is_no_data(rng: np.random.Generator) -> None:
    """A column with values in the reference and none now is 'no_data', not compared."""
    ref = mlwatch.profile({"x": rng.normal(size=100)})
    cur = mlwatch.profile({"x": [float("nan")] * 100})
    result = drift(ref, cur)["x"]
    assert result.status == "no_data"
    assert not result.drifted
    assert drift(ref, cur).n_columns == 0
    assert not drift(ref, cur).dataset_drift


def test_only_infinities_is_no_data() -> None:
    """A numeric column holding only +-inf has no finite distribution to compare."""
    ref = mlwatch.profile({"x": [1.0, 2.0, 3.0]})
    cur = mlwatch.profile({"x": [float("inf"), float("-inf")]})
    assert drift(ref, cur)["x"].status == "no_data"


def test_empty_profiles() -> None:
    """Profiles without columns give an empty report without dataset drift."""
    report = drift(Profile("m"), Profile("m"))
    assert report.columns == ()
    assert report.n_columns == 0
    assert report.share == 0.0
    assert not report.dataset_drift
    assert "0 of 0" in str(report)
    assert drift(Profile("m"), Profile("m"), drift_share=0.0).dataset_drift is False


def test_profiles_of_different_models_compare(rng: np.random.Generator) -> None:
    """Profiles of different models (or versions) are compared column by column."""
    a = mlwatch.profile({"x": rng.normal(size=300)}, model="a", version="1")
    b = mlwatch.profile({"x": rng.normal(size=300)}, model="b", version="2")
    report = drift(a, b)
    assert report.reference["model"] == "a"
    assert report.current["model"] == "b"
    assert report["x"].status == "ok"


def test_text_columns_drift_on_length(rng: np.random.Generator) -> None:
    """Text columns are compared by their length distribution."""
    ref = mlwatch.profile({"t": ["x" * int(k) for k in rng.integers(150, 250, 3000)]})
    same = mlwatch.profile({"t": ["y" * int(k) for k in rng.integers(150, 250, 3000)]})
    longer = mlwatch.profile({"t": ["z" * int(k) for k in rng.integers(300, 500, 3000)]})
    assert drift(ref, same)["t"].kind == "text"
    assert not drift(ref, same)["t"].drifted
    result = drift(ref, longer)["t"]
    assert result.drifted
    assert "length" in result.note


def test_outputs_included_or_not(rng: np.random.Generator) -> None:
    """Model outputs are compared (and counted) unless include_outputs=False."""
    ref = mlwatch.profile({"x": rng.normal(size=3000)}, outputs={"score": rng.uniform(size=3000)})
    cur = mlwatch.profile({"x": rng.normal(size=3000)}, outputs={"score": rng.uniform(0.5, 1.5, size=3000)})
    report = drift(ref, cur)
    assert [(c.column, c.role) for c in report.columns] == [("x", "input"), ("score", "output")]
    assert report.drifted_columns == ["score"]
    assert report.dataset_drift
    assert [c.column for c in drift(ref, cur, include_outputs=False).columns] == ["x"]
    assert "score (output)" in str(report)


def test_columns_filter_and_not_found(rng: np.random.Generator) -> None:
    """`columns` restricts the comparison; names absent from both profiles are 'not_found'."""
    p = mlwatch.profile({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    report = drift(p, p, columns=["b", "zzz"])
    assert [(c.column, c.status) for c in report.columns] == [("b", "ok"), ("zzz", "not_found")]
    assert report.n_columns == 1


def test_dataset_share_rule(rng: np.random.Generator) -> None:
    """dataset_drift is share >= drift_share over compared columns."""
    ref = mlwatch.profile({k: rng.normal(size=3000) for k in "abcd"})
    cur = mlwatch.profile({"a": rng.normal(2, 1, 3000), **{k: rng.normal(size=3000) for k in "bcd"}})
    assert drift(ref, cur).share == 0.25
    assert not drift(ref, cur).dataset_drift
    assert drift(ref, cur, drift_share=0.25).dataset_drift


# ============================================================================ the report
def test_report_to_dict_is_json_and_str_is_a_table(rng: np.random.Generator) -> None:
    """to_dict() is strict JSON (no NaN/inf); str() is an aligned table naming every column."""
    ref = mlwatch.profile({"x": rng.normal(size=2000), "c": rng.choice(["a", "b"], 2000).tolist(), "e": [None] * 2000})
    cur = mlwatch.profile(
        {"x": rng.normal(1, 1, 2000), "c": rng.choice(["a", "b", "z"], 2000).tolist(), "e": [None] * 2000}
    )
    report = drift(ref, cur)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["drifted_columns"] == report.drifted_columns == ["x", "c"]
    assert data["columns"][1]["scores"]["new_categories"] == ["z"]
    assert set(data["columns"][0]["scores"]) >= {"ks", "ks_p_value", "psi", "js", "wasserstein", "hellinger"}
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith("Drift: 2 of 2 columns drifted")
    header = lines[1]
    assert header.index("method") == lines[3].index(report["x"].method or "")
    assert all(name in text for name in ("x", "c", "e"))
    assert isinstance(report, DriftReport)
    assert "DriftReport(" in repr(report)
    with pytest.raises(KeyError):
        report["missing"]


def test_non_finite_statistics_are_not_drift_and_json_safe() -> None:
    """Values near the float limit make Wasserstein overflow: no drift claimed, JSON stays valid."""
    ref = mlwatch.profile({"x": np.array([-1.7e308, 1.7e308] * 100)})
    cur = mlwatch.profile({"x": np.array([-1.7e308, 1.7e308, 0.0] * 100)})
    report = drift(ref, cur, method="wasserstein")
    json.dumps(report.to_dict(), allow_nan=False)
    result = report["x"]
    assert result.value is None or math.isfinite(result.value) or not result.drifted


# ============================================================================ properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    small_profiles(with_outputs=True),
    small_profiles(with_outputs=True),
    st.sampled_from(["auto", "ks", "psi", "js", "wasserstein", "hellinger", "chisquare"]),
)
def test_drift_never_raises_on_arbitrary_profiles(ref: Profile, cur: Profile, method: str) -> None:
    """Any two small profiles of mixed types give a report whose dict is strict JSON."""
    report = drift(ref, cur, method=method)
    json.dumps(report.to_dict(), allow_nan=False)
    str(report)
    assert 0.0 <= report.share <= 1.0
    for c in report.columns:
        if c.status == "ok":
            assert c.method is not None
            assert c.threshold is not None
