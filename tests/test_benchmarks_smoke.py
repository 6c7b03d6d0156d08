"""The benchmark harnesses stay runnable: a tiny in-process `--quick` run of the batch-profiling
one's mlwatch part (peers off), and of the HTTP middleware's CPU one. Nothing here asserts speed;
only that every figure is produced and sane."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`benchmarks.bench_profile`, imported from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.bench_profile")


def test_quick_run_produces_every_mlwatch_figure(bench: ModuleType, tmp_path: Path) -> None:
    """A tiny quick run measures mlwatch, skips the peers, and writes readable JSON and Markdown."""
    lines: list[str] = []
    argv = ["--quick", "--rows", "2000", "--drift-rows", "500", "--reps", "2", "--no-peers", "--out-dir", str(tmp_path)]
    payload = bench.main(argv, log=lines.append)

    ml = payload["cases"]["batch_mlwatch"]
    assert (ml["rows"], ml["columns"], ml["values"]) == (2000, 20, 40_000)
    assert ml["reps"] == 2
    assert len(ml["wall_s"]) == 2
    assert ml["wall_median_s"] > 0
    assert ml["values_per_s"] == pytest.approx(40_000 / ml["wall_median_s"])
    assert ml["rss_growth_median_bytes"] >= 0
    assert ml["tracemalloc_peak_bytes"] > 0
    assert isinstance(ml["profile_bytes"], int)
    assert ml["profile_bytes"] > 0
    assert "batch_whylogs" not in payload["cases"]
    assert "disabled" in payload["skipped"]["batch_whylogs"]
    assert "drift_evidently" not in payload["cases"]
    if "drift_mlwatch" in payload["cases"]:  # mlwatch/drift.py exists
        assert payload["cases"]["drift_mlwatch"]["values"] == 2 * 500 * 12
    else:
        assert "drift" in payload["skipped"]["drift"]

    stored = json.loads((tmp_path / "profile.json").read_text(encoding="utf-8"))
    assert stored["cases"]["batch_mlwatch"]["values"] == 40_000
    assert stored["config"]["quick"] is True
    md = (tmp_path / "profile.md").read_text(encoding="utf-8")
    assert "| case | mlwatch time | peer | peer time | ratio |" in md
    assert "QUICK run" in md
    text = "\n".join(lines)
    assert "throughput" in text
    assert "SKIP whylogs" in text


def test_missing_peer_is_skipped_with_a_reason(bench: ModuleType) -> None:
    """A peer that is not installed is reported, not raised."""
    module, reason = bench._import_peer("mlwatch_benchmark_no_such_peer", True)
    assert module is None
    assert "not installed" in reason
    assert "setup_peers.sh" in reason


def test_frames_have_the_issue_shape(bench: ModuleType) -> None:
    """15 float64 + 5 object-string columns; drift frames are 12 columns with the same names."""
    df = bench.make_batch_frame(3000, seed=1)
    assert df.shape == (3000, 20)
    assert df.dtypes.astype(str).value_counts().to_dict() == {"float64": 15, "object": 5}
    cardinalities = sorted(df[c].nunique() for c in df.columns if df[c].dtype == "object")
    assert cardinalities[0] == 5
    assert cardinalities[-1] <= 1000
    ref, cur = bench.make_drift_frames(400)
    assert ref.shape == cur.shape == (400, 12)
    assert list(ref.columns) == list(cur.columns)
    assert set(bench.PLANTED_DRIFT) <= set(ref.columns)


def test_measure_takes_a_warmup_and_the_median(bench: ModuleType) -> None:
    """`measure` runs the warm-up once untimed, then exactly `reps` timed runs."""
    from benchmarks import _harness

    calls: list[str] = []

    def run() -> int:
        calls.append("run")
        return len(calls)

    timing, result = _harness.measure(run, reps=3, warmup=lambda: calls.append("warm"))
    assert calls == ["warm", "run", "run", "run"]
    assert result == 4
    assert len(timing.wall) == len(timing.cpu) == len(timing.rss_growth) == 3
    assert min(timing.wall) <= timing.wall_median <= max(timing.wall)
    table = _harness.render_markdown(["a", "b"], [["1", "x|y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]


def test_http_cpu_harness_measures_every_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_http_cpu: CPU per request of both middleware, both kinds of request; mlwatch's settings are restored after."""
    pytest.importorskip("fastapi")
    import mlwatch
    from mlwatch._runtime import RUNTIME

    monkeypatch.syspath_prepend(str(ROOT))
    http_cpu = importlib.import_module("benchmarks.bench_http_cpu")
    before = (RUNTIME.settings, RUNTIME.batch_size)
    errors = dict(mlwatch.health()["internal_errors"])
    lines: list[str] = []
    got = http_cpu.main(["--requests", "50", "--reps", "1"], log=lines.append)
    assert set(got) == {f"{iface} {kind}" for iface in ("asgi", "wsgi") for kind in http_cpu.KINDS}
    assert all(v["bare"] > 0 and v["aggregation"] > 0 for v in got.values())
    assert len(lines) == 4 and (RUNTIME.settings, RUNTIME.batch_size) == before
    assert mlwatch.health()["internal_errors"] == errors
