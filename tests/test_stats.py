"""Drift statistics from sketches: p-values against scipy, accuracy against exact values on raw data."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from scipy import spatial, special, stats

from mlwatch import _stats
from mlwatch._stats import (
    OTHER,
    SketchDistribution,
    bin_masses,
    categorical_drift,
    category_table,
    chi2_sf,
    chisquare_homogeneity,
    gammaincc,
    joint_edges,
    kolmogorov_sf,
    ks_2samp_pvalue,
    kstwo_sf,
    numeric_drift,
    psi,
    reference_edges,
    smirnov_sf,
)
from mlwatch.column import ColumnProfile

Array = npt.NDArray[np.float64]
N = 100_000


# ============================================================================ helpers
def summary_dist(values: Array) -> SketchDistribution:
    """Profile values the way mlwatch does (in batches) and return the sketch distribution."""
    col = ColumnProfile("x")
    for chunk in np.array_split(values, 4):
        col.update(chunk)
    assert col.numeric is not None
    dist = SketchDistribution.from_summary(col.numeric)
    assert dist is not None
    return dist


def raw_masses(values: Array, edges: Array) -> Array:
    """Exact shares of raw values in the right-closed bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(edges, values, side="left")
    counts = np.bincount(idx, minlength=edges.shape[0] + 1).astype(np.float64)
    return np.asarray(counts / values.shape[0], dtype=np.float64)


def raw_psi(ref: Array, cur: Array, edges: Array) -> float:
    """PSI from raw data on the given bins, with Evidently's 1e-4 floor for empty bins."""
    p = np.maximum(raw_masses(ref, edges), 1e-4)
    q = np.maximum(raw_masses(cur, edges), 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def raw_hellinger(p: Array, q: Array) -> float:
    """Hellinger distance of two share vectors, written independently of mlwatch."""
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


def pareto_with_outliers(rng: np.random.Generator, n: int, scale: float) -> Array:
    """Pareto(2.5) values with 20 injected outliers two orders of magnitude out."""
    x = (rng.pareto(2.5, n) + 1.0) * scale
    x[rng.choice(n, 20, replace=False)] = rng.uniform(50.0, 500.0, 20) * scale
    return x


Case = Callable[[np.random.Generator], tuple[Array, Array]]
CASES: dict[str, Case] = {
    "normal-identical": lambda r: (r.normal(0, 1, N), r.normal(0, 1, N)),
    "normal-shifted": lambda r: (r.normal(0, 1, N), r.normal(0.3, 1, N)),
    "normal-scaled": lambda r: (r.normal(0, 1, N), r.normal(0, 1.5, N)),
    "normal-far": lambda r: (r.normal(0, 1, N), r.normal(4, 1, N)),
    "lognormal-identical": lambda r: (r.lognormal(0, 1, N), r.lognormal(0, 1, N)),
    "lognormal-shifted": lambda r: (r.lognormal(0, 1, N), r.lognormal(0.3, 1.2, N)),
    "lognormal-heavy": lambda r: (r.lognormal(0, 2, N), r.lognormal(0.2, 2, N)),
    "pareto-outliers-stable": lambda r: (pareto_with_outliers(r, N, 1.0), pareto_with_outliers(r, N, 1.0)),
    "pareto-outliers-scaled": lambda r: (pareto_with_outliers(r, N, 1.0), pareto_with_outliers(r, N, 1.2)),
    "pareto-infinite-variance": lambda r: (r.pareto(1.1, N), r.pareto(1.1, N) * 1.3),
    "zero-inflated-lognormal": lambda r: (
        np.where(r.uniform(size=N) < 0.3, 0.0, r.lognormal(0, 1, N)),
        np.where(r.uniform(size=N) < 0.4, 0.0, r.lognormal(0, 1, N)),
    ),
    "poisson-integers": lambda r: (r.poisson(3, N).astype(float), r.poisson(3.5, N).astype(float)),
    "few-integer-levels": lambda r: (r.integers(0, 4, N).astype(float), r.integers(0, 5, N).astype(float)),
}


# ============================================================================ p-values
@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 60, 140, 141, 400, 1000, 5000])
def test_kstwo_sf_matches_scipy(n: int) -> None:
    """kstwo_sf equals scipy.stats.kstwo.sf over the whole range of d, small and large n."""
    d = np.concatenate((np.linspace(0.001, 0.999, 120), np.geomspace(1e-4, 0.3, 60)))
    expected = stats.kstwo.sf(d, n)
    got = np.array([kstwo_sf(float(v), n) for v in d])
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12)


def test_kstwo_sf_matches_scipy_for_large_n() -> None:
    """n = 100,000 (Durbin, Pelz-Good, gridded Smirnov sum): close to scipy at typical p-values."""
    n = 100_000
    d = np.array([0.3, 1.0, 1.36, 1.63, 2.0, 3.0, 6.0]) / np.sqrt(n)
    expected = stats.kstwo.sf(d, n)
    got = np.array([kstwo_sf(float(v), n) for v in d])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_gridded_smirnov_sum_matches_full_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    """For n in the millions the summand is summed on a grid: within 1e-6 of the full O(n) sum."""
    n = 2_000_000
    xs = [float(np.sqrt(v / n)) for v in (2.2, 10.0, 100.0)]
    gridded = [smirnov_sf(n, x) for x in xs]
    monkeypatch.setattr(_stats, "_SMIRNOV_TERMS", 10**8)
    full = [smirnov_sf(n, x) for x in xs]
    np.testing.assert_allclose(gridded, full, rtol=1e-6)


def test_ks_2samp_pvalue_matches_scipy_asymp(rng: np.random.Generator) -> None:
    """The two-sample p-value equals ks_2samp(method='asymp') for unequal sample sizes."""
    for n1, n2, shift in [(50, 80, 0.0), (300, 1000, 0.1), (1000, 1000, 0.2), (5000, 700, 0.05), (20, 20000, 0.5)]:
        a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
        res = stats.ks_2samp(a, b, method="asymp")
        assert ks_2samp_pvalue(float(res.statistic), n1, n2) == pytest.approx(res.pvalue, rel=1e-8, abs=1e-12)


def test_kolmogorov_sf_matches_kstwobign() -> None:
    """kolmogorov_sf equals scipy.stats.kstwobign.sf (the n -> infinity limit)."""
    z = np.linspace(0.0, 4.0, 401)
    got = np.array([kolmogorov_sf(float(v)) for v in z])
    np.testing.assert_allclose(got, stats.kstwobign.sf(z), rtol=1e-10, atol=1e-14)


def test_smirnov_sf_matches_scipy() -> None:
    """The exact one-sided tail equals scipy.special.smirnov."""
    for n in (5, 50, 500, 5000):
        for x in np.linspace(0.02, 0.98, 25):
            assert smirnov_sf(n, float(x)) == pytest.approx(special.smirnov(n, x), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 49, 200, 1535])
def test_chi2_sf_matches_scipy(df: int) -> None:
    """chi2_sf equals scipy.stats.chi2.sf, deep into the tail, for small and large degrees of freedom."""
    x = np.concatenate((np.linspace(0.0, 6.0 * df + 40.0, 150), [df - 1.0, float(df), df + 1.0]))
    expected = stats.chi2.sf(x, df)
    got = np.array([chi2_sf(float(v), df) for v in x])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-300)


def test_gammaincc_matches_scipy() -> None:
    """The regularized upper incomplete gamma equals scipy.special.gammaincc (series and fraction)."""
    for a in (0.1, 0.5, 1.0, 2.5, 30.0, 700.0):
        for x in (1e-6, 0.3, a, a + 1.0, 2.0 * a + 5.0, 10.0 * a + 50.0):
            assert gammaincc(a, x) == pytest.approx(special.gammaincc(a, x), rel=1e-10, abs=1e-300)


def test_p_value_edge_cases() -> None:
    """Degenerate inputs give the limits, never an exception."""
    assert kstwo_sf(0.0, 10) == 1.0
    assert kstwo_sf(1.0, 10) == 0.0
    assert np.isnan(ks_2samp_pvalue(0.5, 0, 10))
    assert chi2_sf(0.0, 3) == 1.0
    assert chi2_sf(5.0, 0) == 0.0
    assert gammaincc(2.0, float("inf")) == 0.0


def test_import_does_not_load_scipy() -> None:
    """`import mlwatch` and the analysis modules never import scipy (an optional extra)."""
    code = "import sys, mlwatch, mlwatch._stats, mlwatch.drift, mlwatch.quality_checks; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ============================================================================ the sketch distribution
def test_small_sample_is_exact(rng: np.random.Generator) -> None:
    """Up to 2 * n_extremes values the distribution is the exact sample: statistics equal scipy's."""
    a, b = rng.lognormal(0, 1, 100), rng.lognormal(0.2, 1, 128)
    da, db = summary_dist(a), summary_dist(b)
    assert da.exact
    assert db.exact
    scores = numeric_drift(da, db)
    assert scores.ks == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert scores.wasserstein_raw == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
    assert scores.wasserstein == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=1e-9)
    assert scores.ks_resolution == 0.0


def test_uncompacted_kll_is_exact(rng: np.random.Generator) -> None:
    """Between 2 * n_extremes and k values KLL still holds every value: still exact."""
    a, b = rng.normal(0, 1, 190), rng.normal(0.5, 1, 150)
    da, db = summary_dist(a), summary_dist(b)
    assert da.exact
    assert db.exact
    assert numeric_drift(da, db).ks == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_cdf_quantile_and_extremes(rng: np.random.Generator) -> None:
    """CDF and quantiles agree with raw data within the rank error; tail ranks are exact."""
    x = rng.lognormal(0, 1.5, N)
    d = summary_dist(x)
    s = np.sort(x)
    assert (d.min, d.max) == (s[0], s[-1])
    # the 64 smallest and largest values are exact points of the CDF
    np.testing.assert_allclose(d.cdf(s[:64]), np.arange(1, 65) / N, atol=1e-12)
    np.testing.assert_allclose(d.cdf(s[-64:]), np.arange(N - 63, N + 1) / N, atol=1e-12)
    assert d.quantiles([0.0, 1.0]).tolist() == [s[0], s[-1]]
    probes = np.quantile(x, np.linspace(0.01, 0.99, 99))
    true_rank = np.searchsorted(s, probes, side="right") / N
    assert np.max(np.abs(d.cdf(probes) - true_rank)) <= d.rank_error
    ranks = np.linspace(0.01, 0.99, 99)
    true_rank_of_q = np.searchsorted(s, d.quantiles(ranks), side="right") / N
    assert np.max(np.abs(true_rank_of_q - ranks)) <= d.rank_error


def test_mean_matches_exact_mean_in_heavy_tail(rng: np.random.Generator) -> None:
    """The rank correction makes the distribution's mean the exact mean (Pareto, outliers)."""
    x = pareto_with_outliers(rng, N, 1.0)
    d = summary_dist(x)
    mean = float(np.dot(np.diff(d.f), 0.5 * (d.x[:-1] + d.x[1:])))
    assert mean == pytest.approx(x.mean(), rel=1e-6)


def test_from_values_is_the_empirical_distribution() -> None:
    """from_values gives the exact step CDF, with ties as jumps."""
    d = SketchDistribution.from_values([3.0, 1.0, 1.0, 2.0, np.nan, np.inf])
    assert d is not None
    assert d.exact
    assert d.n == 4
    np.testing.assert_allclose(d.cdf([0.5, 1.0, 1.5, 2.0, 3.0]), [0.0, 0.5, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(d.cdf_below([1.0, 2.0, 3.5]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(d.quantiles([0.0, 0.5, 0.51, 0.75, 1.0]), [1.0, 1.0, 2.0, 2.0, 3.0])
    assert SketchDistribution.from_values([np.nan]) is None


def test_text_length_distribution_from_bare_kll(rng: np.random.Generator) -> None:
    """A bare KLL sketch (text lengths) gives a distribution with approximate moments."""
    lengths = rng.integers(101, 400, 20_000).astype(float)  # longer than 100 characters: text
    col = ColumnProfile("t")
    col.update(["x" * int(k) for k in lengths[:5000]])
    col.update(["x" * int(k) for k in lengths[5000:]])
    d = SketchDistribution.from_kll(col.text_length)
    assert d is not None
    assert d.n == 20_000
    assert d.mean == pytest.approx(lengths.mean(), rel=0.01)
    assert d.std == pytest.approx(lengths.std(), rel=0.03)
    assert SketchDistribution.from_kll(None) is None


# ============================================================================ accuracy on 100k rows
@pytest.fixture(scope="module")
def accuracy() -> dict[str, dict[str, float]]:
    """Sketch statistics and exact statistics on raw data for every case (computed once)."""
    out: dict[str, dict[str, float]] = {}
    for i, (name, make) in enumerate(CASES.items()):
        ref, cur = make(np.random.default_rng(1000 + i))
        d_ref, d_cur = summary_dist(ref), summary_dist(cur)
        scores = numeric_drift(d_ref, d_cur)
        edges = reference_edges(d_ref)
        jedges = joint_edges(d_ref, d_cur)
        p, q = raw_masses(ref, jedges), raw_masses(cur, jedges)
        out[name] = {
            "ks": scores.ks,
            "ks_exact": float(stats.ks_2samp(ref, cur).statistic),
            "psi": scores.psi,
            "psi_exact": raw_psi(ref, cur, edges),
            "js": scores.js,
            "js_exact": float(spatial.distance.jensenshannon(p, q, base=2)),
            "hellinger": scores.hellinger,
            "hellinger_exact": raw_hellinger(p, q),
            "wasserstein": scores.wasserstein,
            "wasserstein_exact": float(stats.wasserstein_distance(ref, cur) / ref.std()),
        }
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_ks_within_0_015(accuracy: dict[str, dict[str, float]], case: str) -> None:
    """|KS - scipy.stats.ks_2samp| <= 0.015 on 100k rows."""
    r = accuracy[case]
    assert abs(r["ks"] - r["ks_exact"]) <= 0.015


@pytest.mark.parametrize("case", list(CASES))
def test_psi_within_0_03(accuracy: dict[str, dict[str, float]], case: str) -> None:
    """|PSI - exact PSI on the same bins| <= 0.03 where the exact PSI is below 1."""
    r = accuracy[case]
    if r["psi_exact"] < 1.0:
        assert abs(r["psi"] - r["psi_exact"]) <= 0.03
    else:
        assert r["psi"] >= 0.5  # still unmistakably drifted


@pytest.mark.parametrize("case", list(CASES))
def test_js_within_0_03(accuracy: dict[str, dict[str, float]], case: str) -> None:
    """|JS - exact JS (scipy.spatial.distance.jensenshannon, base 2) on the same bins| <= 0.03."""
    r = accuracy[case]
    assert abs(r["js"] - r["js_exact"]) <= 0.03


@pytest.mark.parametrize("case", list(CASES))
def test_hellinger_within_0_03(accuracy: dict[str, dict[str, float]], case: str) -> None:
    """|Hellinger - exact Hellinger on the same bins| <= 0.03."""
    r = accuracy[case]
    assert abs(r["hellinger"] - r["hellinger_exact"]) <= 0.03


@pytest.mark.parametrize("case", list(CASES))
def test_wasserstein_within_0_05_std(accuracy: dict[str, dict[str, float]], case: str) -> None:
    """|W/std_ref - scipy.stats.wasserstein_distance/std_ref| <= 0.05, heavy tails included."""
    r = accuracy[case]
    assert abs(r["wasserstein"] - r["wasserstein_exact"]) <= 0.05


def test_identical_profiles_score_zero(rng: np.random.Generator) -> None:
    """A profile compared with itself scores 0 everywhere and p = 1."""
    d = summary_dist(rng.lognormal(0, 1, N))
    s = numeric_drift(d, d)
    assert (s.ks, s.psi, s.js, s.wasserstein, s.hellinger) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert s.ks_p_value == 1.0


def test_disjoint_distributions_reach_one(rng: np.random.Generator) -> None:
    """Disjoint supports: KS, JS and Hellinger are 1, Wasserstein is the gap in std units."""
    a, b = rng.uniform(0, 1, N), rng.uniform(10, 11, N)
    s = numeric_drift(summary_dist(a), summary_dist(b))
    assert s.ks == 1.0
    assert s.js == pytest.approx(1.0)
    assert s.hellinger == pytest.approx(1.0)
    assert s.wasserstein == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), abs=0.05)


def test_reference_bins_deduplicate_ties(rng: np.random.Generator) -> None:
    """Discrete data: equal deciles collapse, bins stay right-closed and shares stay exact-ish."""
    ref = rng.choice([0.0, 1.0, 2.0], N, p=[0.55, 0.3, 0.15])  # CDF 0.55, 0.85, 1: far from any decile
    d = summary_dist(ref)
    edges = reference_edges(d)
    assert edges.tolist() == [0.0, 1.0, 2.0]
    np.testing.assert_allclose(bin_masses(d, edges), raw_masses(ref, edges), atol=d.rank_error)


def test_constant_reference_does_not_divide_by_zero() -> None:
    """A constant reference falls back to the current spread (then to the means) for Wasserstein."""
    const = summary_dist(np.full(1000, 5.0))
    other = summary_dist(np.full(1000, 6.0))
    s = numeric_drift(const, other)
    assert np.isfinite(s.wasserstein)
    assert s.wasserstein > 0
    assert numeric_drift(const, const).wasserstein == 0.0


# ============================================================================ categorical
def _cat_column(values: list[str]) -> ColumnProfile:
    """A categorical column profile of the given values."""
    col = ColumnProfile("c")
    col.update(values)
    return col


def test_categorical_statistics_are_exact(rng: np.random.Generator) -> None:
    """While the sketches are exact, chi2/p/PSI/JS equal the values computed from raw counts."""
    cats = [f"c{i}" for i in range(8)]
    ref_vals = rng.choice(cats, 20_000, p=np.full(8, 1 / 8)).tolist()
    cur_vals = rng.choice([*cats[1:], "new"], 5_000, p=[0.2, *[0.1] * 6, 0.2]).tolist()
    table = category_table(_cat_column(ref_vals).freq, _cat_column(cur_vals).freq)
    assert table.exact
    assert table.new == ["new"]
    assert table.vanished == ["c0"]
    labels = table.labels
    r = np.array([ref_vals.count(k) for k in labels], dtype=float)
    c = np.array([cur_vals.count(k) for k in labels], dtype=float)
    np.testing.assert_array_equal(table.reference, r)
    np.testing.assert_array_equal(table.current, c)
    scores = categorical_drift(table)
    chi2, p, dof, _ = stats.chi2_contingency(np.vstack((r, c)), correction=False)
    assert scores.chi2 == pytest.approx(chi2, rel=1e-12)
    assert scores.chi2_p_value == pytest.approx(p, rel=1e-9, abs=1e-300)
    assert scores.dof == dof
    p_r, p_c = r / r.sum(), c / c.sum()
    expected_psi = float(
        np.sum((np.maximum(p_c, 1e-4) - np.maximum(p_r, 1e-4)) * np.log(np.maximum(p_c, 1e-4) / np.maximum(p_r, 1e-4)))
    )
    assert scores.psi == pytest.approx(expected_psi, rel=1e-12)
    assert scores.js == pytest.approx(spatial.distance.jensenshannon(p_r, p_c, base=2), rel=1e-9)
    assert scores.hellinger == pytest.approx(raw_hellinger(p_r, p_c), rel=1e-9)


def test_chisquare_two_categories_is_z_test_squared() -> None:
    """With two categories the homogeneity test equals the two-proportion z-test."""
    r, c = np.array([480.0, 520.0]), np.array([300.0, 200.0])
    stat, p, dof = chisquare_homogeneity(r, c)
    p1, p2 = r[0] / r.sum(), c[0] / c.sum()
    pooled = (r[0] + c[0]) / (r.sum() + c.sum())
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / r.sum() + 1 / c.sum()))
    assert stat == pytest.approx(z * z, rel=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert dof == 1


def test_chisquare_degenerate_tables() -> None:
    """One category, or an empty side: statistic 0 and p-value 1."""
    assert chisquare_homogeneity(np.array([10.0]), np.array([5.0])) == (0.0, 1.0, 0)
    assert chisquare_homogeneity(np.array([10.0, 0.0]), np.array([0.0, 0.0]))[1] == 1.0


def test_inexact_sketch_uses_other_bucket_and_no_new_categories(rng: np.random.Generator) -> None:
    """Past the exact capacity, leftover mass goes to <other> and new categories are not claimed."""
    col = ColumnProfile("c", freq_lg=4)  # keeps about 12 values exactly
    col.update(rng.integers(0, 60, 5000).astype(str).tolist())
    assert col.freq is not None
    assert not col.freq.is_exact()
    small = _cat_column(["a", "b", "a"])
    table = category_table(col.freq, small.freq)
    assert not table.exact
    assert table.labels[-1] == OTHER
    assert table.reference.sum() == pytest.approx(5000)
    assert table.new == []  # the reference no longer lists every category
    assert sorted(table.vanished) == table.vanished  # cur exact: vanished are certain heavy hitters
    scores = categorical_drift(table)
    assert not scores.exact
    assert 0.0 <= scores.js <= 1.0


def test_psi_floor_and_symmetry() -> None:
    """Empty bins are floored at 1e-4; PSI is symmetric in its arguments."""
    e, a = np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])
    assert psi(e, a) == pytest.approx(psi(a, e))
    assert np.isfinite(psi(e, a))
