"""Batch profiling speed and memory: mlwatch against whylogs and Evidently, in one process.

Cases (issue "Speed ... batch profiling"):

1. ``mlwatch.profile(df, model="bench")`` of a 1,000,000-row pandas frame with 15 float64 columns
   (normal, lognormal, integer-valued) and 5 object-string columns (cardinalities 5..1000): values
   per second (goal >= 10 M/s on one core), and against ``whylogs.log(pandas=df)`` on the same
   frame (goal >= 20x faster per value).
2. Profile a reference and a drifted current frame (100k x 12 each) and compare them with
   ``mlwatch.drift.drift``, against Evidently's ``Report(metrics=[DataDriftPreset()])`` run on the
   same raw frames (goal >= 30x faster).
3. Memory: peak RSS growth while profiling the 1M frame (and tracemalloc's peak), and the size of
   the serialized profile.

Each figure is the median of several repetitions after an untimed warm-up. The peers are never
mlwatch dependencies: they live in the git-ignored venv built by ``benchmarks/setup_peers.sh``::

    bash benchmarks/setup_peers.sh
    benchmarks/.peers/bin/python benchmarks/bench_profile.py            # writes benchmarks/results/
    python benchmarks/bench_profile.py --quick --no-peers                # smoke run, writes nothing

Without the peers installed, their rows say so and the mlwatch figures are still measured.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

# The peers phone home on import unless told not to; this machine has no network anyway.
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
os.environ.setdefault("DO_NOT_TRACK", "1")

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

import mlwatch
from benchmarks import _harness as h

__all__ = ["Config", "main", "make_batch_frame", "make_drift_frames", "run"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Goals from the issue.
GOAL_VALUES_PER_S = 10e6
GOAL_VS_WHYLOGS = 20.0
GOAL_VS_EVIDENTLY = 30.0

#: Cardinalities of the batch frame's five string columns, and of the drift frames' four.
BATCH_CARDINALITIES = (5, 20, 100, 300, 1000)
DRIFT_CARDINALITIES = (5, 20, 100, 500)
#: Features changed in the drifted current frame (the other six keep their distribution).
PLANTED_DRIFT = ("normal_0", "normal_1", "lognormal_0", "int_0", "cat_0", "cat_2")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    """Sizes, repetitions and switches of one run (see ``--help``)."""

    rows: int = 1_000_000
    drift_rows: int = 100_000
    reps: int = 5
    peer_reps: int = 3
    whylogs_rows: int | None = None  # None: the whole batch frame
    peers: bool = True
    drift: bool = True
    memory: bool = True
    quick: bool = False
    seed: int = 0


QUICK = Config(rows=100_000, drift_rows=20_000, reps=3, peer_reps=1, quick=True)


# --------------------------------------------------------------------------- data
def _categorical(rng: np.random.Generator, prefix: str, cardinality: int, rows: int, *, reverse: bool = False,
                 new_share: float = 0.0) -> pd.Series:
    """Object strings with Zipf (1/rank) frequencies; `reverse` flips the ranks, `new_share` of
    the rows get labels never seen in the reference."""
    labels = np.array([f"{prefix}_{j:04d}" for j in range(cardinality)], dtype=object)
    weights = 1.0 / np.arange(1, cardinality + 1)
    if reverse:
        weights = weights[::-1]
    values = labels[rng.choice(cardinality, size=rows, p=weights / weights.sum())]
    if new_share > 0:
        new = rng.random(rows) < new_share
        values[new] = np.array([f"{prefix}_new_{j}" for j in range(10)], dtype=object)[rng.integers(0, 10, int(new.sum()))]
    return pd.Series(values, dtype=object)


def make_batch_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """The issue's frame: 15 float64 columns (5 normal, 5 lognormal, 5 integer-valued; 1 % NaN in two
    of them) and 5 object-string columns with cardinalities 5, 20, 100, 300 and 1000."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {}
    for i in range(5):
        cols[f"normal_{i}"] = rng.normal(10.0 * i, 1.0 + i, rows)
    for i in range(5):
        cols[f"lognormal_{i}"] = rng.lognormal(0.0, 0.5 + 0.25 * i, rows)
    for i in range(5):
        cols[f"int_{i}"] = rng.integers(0, 10 ** (i + 1), rows).astype(np.float64)
    for name in ("normal_1", "lognormal_1"):
        cols[name][rng.random(rows) < 0.01] = np.nan
    for i, card in enumerate(BATCH_CARDINALITIES):
        cols[f"cat_{i}"] = _categorical(rng, f"c{i}", card, rows)
    df = pd.DataFrame(cols)
    kinds = df.dtypes.astype(str).value_counts().to_dict()
    assert kinds == {"float64": 15, "object": 5}, kinds
    return df


def _drift_frame(rows: int, rng: np.random.Generator, *, drifted: bool) -> pd.DataFrame:
    d = drifted
    cols: dict[str, Any] = {
        "normal_0": rng.normal(0.5 if d else 0.0, 1.0, rows),  # mean +0.5 sd
        "normal_1": rng.normal(0.1 if d else 0.0, 1.0, rows),  # mean +0.1 sd: subtle
        "normal_2": rng.normal(5.0, 2.0, rows),
        "lognormal_0": rng.lognormal(0.0, 0.65 if d else 0.5, rows),  # spread x1.3
        "lognormal_1": rng.lognormal(1.0, 0.75, rows),
        "lognormal_2": rng.lognormal(-1.0, 1.0, rows),
        "int_0": rng.integers(0, 120 if d else 100, rows).astype(np.float64),  # range +20 %
        "int_1": rng.integers(0, 1000, rows).astype(np.float64),
    }
    for i, card in enumerate(DRIFT_CARDINALITIES):
        cols[f"cat_{i}"] = _categorical(rng, f"d{i}", card, rows, reverse=d and i == 0, new_share=0.1 if d and i == 2 else 0.0)
    return pd.DataFrame(cols)


def make_drift_frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a current frame of 12 columns; `PLANTED_DRIFT` names the six that drift."""
    rng = np.random.default_rng(seed + 1)
    return _drift_frame(rows, rng, drifted=False), _drift_frame(rows, rng, drifted=True)


# --------------------------------------------------------------------------- peers and drift
def _import_peer(name: str, enabled: bool) -> tuple[ModuleType | None, str]:
    """(module, "") or (None, why it is unavailable); peers are optional everywhere."""
    if not enabled:
        return None, "disabled (--no-peers)"
    try:
        return importlib.import_module(name), ""
    except ImportError as exc:
        return None, f"not installed ({exc}); run `bash benchmarks/setup_peers.sh` and use benchmarks/.peers/bin/python"


def _load_drift() -> tuple[Callable[[Any, Any], Any] | None, str]:
    try:
        module = importlib.import_module("mlwatch.drift")
    except ModuleNotFoundError as exc:
        if exc.name == "mlwatch.drift":
            return None, "mlwatch/drift.py does not exist yet"
        return None, f"mlwatch.drift failed to import: {exc!r}"
    except Exception as exc:  # a half-written module must not stop the other cases
        return None, f"mlwatch.drift failed to import: {exc!r}"
    fn = getattr(module, "drift", None)
    if not callable(fn):
        return None, "mlwatch.drift has no callable drift()"
    return fn, ""


def _drift_summary(report: Any) -> dict[str, Any]:
    """Counts and drifted columns of a `mlwatch.drift.DriftReport`, read defensively (a young API)."""
    out: dict[str, Any] = {"type": type(report).__name__}
    for attr in ("n_columns", "n_drifted", "share", "dataset_drift", "drifted_columns"):
        value = getattr(report, attr, None)
        if value is not None and not callable(value):
            out[attr] = value
    methods: dict[str, str] = {}
    for col in getattr(report, "columns", ()):
        name, method = getattr(col, "column", None), getattr(col, "method", None)
        if isinstance(name, str) and method is not None:
            methods[name] = str(method)
    if methods:
        out["methods"] = sorted(set(methods.values()))
    return out


def _evidently_summary(snapshot: Any) -> dict[str, Any]:
    """Drifted-column count, drifted columns and per-column scores from an Evidently 0.7 snapshot."""
    out: dict[str, Any] = {}
    try:
        metrics = snapshot.dict()["metrics"]
    except Exception as exc:
        return {"error": repr(exc)}
    scores: dict[str, dict[str, Any]] = {}
    for m in metrics:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("DriftedColumnsCount"):
            count = m["value"].get("count")
            out["n_drifted"] = int(count) if isinstance(count, (int, float)) else count
            out["share"] = m["value"].get("share")
        elif "column" in cfg:
            method, threshold, value = str(cfg.get("method")), cfg.get("threshold"), m.get("value")
            # Evidently's convention: tests report a p-value (drift below the threshold), distances a
            # score (drift at or above it).
            drifted = None
            if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
                drifted = value < threshold if "p_value" in method else value >= threshold
            scores[cfg["column"]] = {"method": method, "threshold": threshold, "value": value, "drifted": drifted}
    out["drifted_columns"] = [name for name, s in scores.items() if s["drifted"]]
    out["methods"] = sorted({s["method"] for s in scores.values()})
    out["columns"] = scores
    return out


# --------------------------------------------------------------------------- cases
def _check_profile(p: mlwatch.Profile, rows: int, columns: int) -> None:
    """A benchmark of a profile that silently dropped data would be worthless."""
    assert p.rows == rows, (p.rows, rows)
    assert len(p.columns) == columns, sorted(p.columns)
    bad = {name: c.count for name, c in p.columns.items() if c.count != rows}
    assert not bad, bad


def _rep_logger(log: Log, what: str, reps: int) -> Callable[[int, float], None]:
    return lambda i, wall: log(f"  {what} rep {i + 1}/{reps}: {wall:.3f} s")


def bench_batch(cfg: Config, df: pd.DataFrame, log: Log) -> dict[str, Any]:
    """Case 1 (mlwatch side) and case 3: time, RSS growth, tracemalloc peak, profile bytes."""
    rows, ncols = df.shape
    values = rows * ncols
    log(f"mlwatch.profile on {rows:,} x {ncols} ({values:,} values), {cfg.reps} reps after a warm-up")

    def run() -> mlwatch.Profile:
        return mlwatch.profile(df, model="bench")

    load0 = h.load_average()[0]
    timing, p = h.measure(run, reps=cfg.reps, on_rep=_rep_logger(log, "mlwatch", cfg.reps))
    _check_profile(p, rows, ncols)
    out: dict[str, Any] = {
        "rows": rows, "columns": ncols, "values": values, "load_1min_start": load0,
        "load_1min_end": h.load_average()[0], **timing.as_dict(),
        "values_per_s": values / timing.wall_median,
        "s_per_value": timing.wall_median / values,
    }
    if cfg.memory:
        out["tracemalloc_peak_bytes"] = h.tracemalloc_peak(run)
    try:
        blob = p.to_bytes()
    except Exception as exc:  # the wire format is someone else's work in progress
        out["profile_bytes"] = None
        out["profile_bytes_error"] = repr(exc)
    else:
        out["profile_bytes"] = len(blob)
    return out


def bench_batch_whylogs(cfg: Config, df: pd.DataFrame, why: ModuleType, log: Log) -> dict[str, Any]:
    """Case 1 (peer side): ``whylogs.log(pandas=df)`` on the frame or on its first `whylogs_rows`."""
    n = min(cfg.whylogs_rows or len(df), len(df))
    data = df if n == len(df) else df.iloc[:n].copy()
    values = n * df.shape[1]
    warm = df.iloc[: min(n, 10_000)].copy()
    log(f"whylogs.log on {n:,} x {df.shape[1]} ({values:,} values), {cfg.peer_reps} reps after a 10k-row warm-up")
    load0 = h.load_average()[0]
    timing, result = h.measure(
        lambda: why.log(pandas=data), reps=cfg.peer_reps, warmup=lambda: why.log(pandas=warm),
        on_rep=_rep_logger(log, "whylogs", cfg.peer_reps),
    )
    view = result.view()
    cols = view.get_columns()
    assert len(cols) == df.shape[1], sorted(cols)
    counts = {name: int(c.get_metric("counts").n.value) for name, c in cols.items()}
    assert all(v == n for v in counts.values()), counts
    return {
        "version": getattr(why, "__version__", None),
        "rows": n, "columns": df.shape[1], "values": values, "sliced": n < len(df),
        "load_1min_start": load0, "load_1min_end": h.load_average()[0], **timing.as_dict(),
        "values_per_s": values / timing.wall_median, "s_per_value": timing.wall_median / values,
        "profile_bytes": len(view.serialize()),
    }


def bench_drift(cfg: Config, drift_fn: Callable[[Any, Any], Any], ref: pd.DataFrame, cur: pd.DataFrame,
                log: Log) -> dict[str, Any]:
    """Case 2 (mlwatch side): profile both frames and compare them."""
    values = ref.size + cur.size
    log(f"mlwatch profile x2 + drift on 2 x {len(ref):,} x {ref.shape[1]} ({values:,} values), {cfg.reps} reps")
    split: dict[str, list[float]] = {"profile_s": [], "drift_s": []}

    def run() -> Any:
        t0 = time.perf_counter()
        p_ref = mlwatch.profile(ref, model="bench")
        p_cur = mlwatch.profile(cur, model="bench")
        t1 = time.perf_counter()
        report = drift_fn(p_ref, p_cur)
        split["profile_s"].append(t1 - t0)
        split["drift_s"].append(time.perf_counter() - t1)
        return report

    load0 = h.load_average()[0]
    timing, report = h.measure(run, reps=cfg.reps, on_rep=_rep_logger(log, "mlwatch+drift", cfg.reps))
    timed = slice(1, None)  # the first entry is the warm-up's
    return {
        "values": values, "rows": len(ref), "columns": ref.shape[1], "load_1min_start": load0,
        "load_1min_end": h.load_average()[0], **timing.as_dict(),
        "s_per_value": timing.wall_median / values,
        "profile_median_s": float(np.median(split["profile_s"][timed])),
        "drift_median_s": float(np.median(split["drift_s"][timed])),
        "summary": _drift_summary(report),
    }


def bench_drift_evidently(cfg: Config, ev: ModuleType, ref: pd.DataFrame, cur: pd.DataFrame,
                          log: Log) -> dict[str, Any]:
    """Case 2 (peer side): Evidently's data-drift preset on the same raw frames."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    values = ref.size + cur.size
    warm_ref, warm_cur = ref.iloc[:2000].copy(), cur.iloc[:2000].copy()
    log(f"evidently DataDriftPreset on the same frames, {cfg.peer_reps} reps after a 2k-row warm-up")

    def run(r: pd.DataFrame, c: pd.DataFrame) -> Any:
        return Report(metrics=[DataDriftPreset()]).run(current_data=c, reference_data=r)

    load0 = h.load_average()[0]
    timing, snapshot = h.measure(
        lambda: run(ref, cur), reps=cfg.peer_reps, warmup=lambda: run(warm_ref, warm_cur),
        on_rep=_rep_logger(log, "evidently", cfg.peer_reps),
    )
    summary = _evidently_summary(snapshot)
    assert len(summary.get("columns", {})) == ref.shape[1], summary
    return {
        "version": getattr(ev, "__version__", None), "values": values, "load_1min_start": load0,
        "load_1min_end": h.load_average()[0], **timing.as_dict(),
        "s_per_value": timing.wall_median / values, "summary": summary,
    }


# --------------------------------------------------------------------------- run and report
def run(cfg: Config, log: Log = print) -> dict[str, Any]:
    """Run every case `cfg` enables; returns the results payload (also what goes to JSON)."""
    started = datetime.now(UTC)
    loads: list[float] = [h.load_average()[0]]
    payload: dict[str, Any] = {
        "benchmark": "profile",
        "started": started.isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "machine": h.machine_info(
            ["mlwatch", "numpy", "pandas", "datasketches", "whylogs", "evidently"], repo=ROOT
        ),
        "cases": {},
        "skipped": {},
    }
    cases: dict[str, Any] = payload["cases"]
    skipped: dict[str, str] = payload["skipped"]

    log(f"building the batch frame: {cfg.rows:,} rows x 20 columns")
    df = make_batch_frame(cfg.rows, cfg.seed)
    cases["batch_mlwatch"] = bench_batch(cfg, df, log)
    loads.append(h.load_average()[0])

    why, why_reason = _import_peer("whylogs", cfg.peers)
    if why is not None:
        cases["batch_whylogs"] = bench_batch_whylogs(cfg, df, why, log)
        loads.append(h.load_average()[0])
    else:
        skipped["batch_whylogs"] = f"whylogs {why_reason}"
        log(f"SKIP whylogs: {why_reason}")
    del df

    if cfg.drift:
        drift_fn, drift_reason = _load_drift()
        if drift_fn is None:
            skipped["drift"] = f"profile x2 + drift skipped: {drift_reason}"
            log(f"SKIP profile x2 + drift: {drift_reason}")
        else:
            ref, cur = make_drift_frames(cfg.drift_rows, cfg.seed)
            cases["drift_mlwatch"] = bench_drift(cfg, drift_fn, ref, cur, log)
            loads.append(h.load_average()[0])
            ev, ev_reason = _import_peer("evidently", cfg.peers)
            if ev is not None:
                cases["drift_evidently"] = bench_drift_evidently(cfg, ev, ref, cur, log)
                loads.append(h.load_average()[0])
            else:
                skipped["drift_evidently"] = f"evidently {ev_reason}"
                log(f"SKIP evidently: {ev_reason}")

    payload["load_1min"] = {"samples": loads, "max": max(loads)}
    payload["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    payload["tables"] = tables(payload)
    return payload


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def tables(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The speed and memory tables as headers + rows of strings (rendered as text and Markdown)."""
    c = payload["cases"]
    skipped = payload["skipped"]
    ml = c["batch_mlwatch"]
    shape = f"{ml['rows']:,}x{ml['columns']}"
    speed: list[list[str]] = []
    rate = ml["values_per_s"]
    speed.append([
        f"profile {shape} frame: throughput", h.fmt_seconds(ml["wall_median_s"]), "—", "—", "—",
        f"{h.fmt_per_value(ml['s_per_value'])} ({h.fmt_rate(rate)})", "—",
        f"≥ {GOAL_VALUES_PER_S / 1e6:.0f} M values/s, one core", _met(rate >= GOAL_VALUES_PER_S),
    ])
    wl = c.get("batch_whylogs")
    if wl is not None:
        ratio = wl["s_per_value"] / ml["s_per_value"]
        rows_note = f" ({wl['rows']:,}-row slice)" if wl["sliced"] else ""
        speed.append([
            f"profile {shape} frame: vs whylogs", h.fmt_seconds(ml["wall_median_s"]),
            f"whylogs {wl['version']} `why.log(pandas=df)`", h.fmt_seconds(wl["wall_median_s"]) + rows_note,
            f"{ratio:.1f}x", h.fmt_per_value(ml["s_per_value"]), h.fmt_per_value(wl["s_per_value"]),
            f"≥ {GOAL_VS_WHYLOGS:.0f}x", _met(ratio >= GOAL_VS_WHYLOGS),
        ])
    else:
        speed.append([f"profile {shape} frame: vs whylogs", h.fmt_seconds(ml["wall_median_s"]), "whylogs",
                      "skipped", "—", h.fmt_per_value(ml["s_per_value"]), "—", f"≥ {GOAL_VS_WHYLOGS:.0f}x",
                      "n/a (peer not run)"])
    dm, de = c.get("drift_mlwatch"), c.get("drift_evidently")
    drift_case = f"profile 2 x {payload['config']['drift_rows']:,}x12 + drift"
    if dm is None:
        speed.append([drift_case, "skipped", "evidently `DataDriftPreset`", "—", "—", "—", "—",
                      f"≥ {GOAL_VS_EVIDENTLY:.0f}x", f"n/a ({skipped.get('drift', 'not run')})"])
    elif de is None:
        speed.append([drift_case, h.fmt_seconds(dm["wall_median_s"]), "evidently", "skipped", "—",
                      h.fmt_per_value(dm["s_per_value"]), "—", f"≥ {GOAL_VS_EVIDENTLY:.0f}x", "n/a (peer not run)"])
    else:
        ratio = de["wall_median_s"] / dm["wall_median_s"]
        speed.append([
            drift_case, h.fmt_seconds(dm["wall_median_s"]), f"evidently {de['version']} `DataDriftPreset`",
            h.fmt_seconds(de["wall_median_s"]), f"{ratio:.1f}x", h.fmt_per_value(dm["s_per_value"]),
            h.fmt_per_value(de["s_per_value"]), f"≥ {GOAL_VS_EVIDENTLY:.0f}x", _met(ratio >= GOAL_VS_EVIDENTLY),
        ])

    memory: list[list[str]] = []
    wl_label = "—" if wl is None else f"whylogs {wl['version']}" + (f" ({wl['rows']:,} rows)" if wl["sliced"] else "")
    rss = ml["rss_growth_median_bytes"]
    rss_ratio = "—" if wl is None or wl["sliced"] or not rss else f"{wl['rss_growth_median_bytes'] / rss:.1f}x"
    memory.append([
        f"peak RSS growth while profiling {shape}", h.fmt_bytes(rss), wl_label,
        "—" if wl is None else h.fmt_bytes(wl["rss_growth_median_bytes"]), rss_ratio,
        "VmHWM reset before each run" if ml["rss_growth_exact"] else "ru_maxrss (lower bound)",
    ])
    if "tracemalloc_peak_bytes" in ml:
        memory.append([
            "tracemalloc peak while profiling (Python + numpy)", h.fmt_bytes(ml["tracemalloc_peak_bytes"]), "—", "—",
            "—", "native datasketches memory not traced",
        ])
    size = ml.get("profile_bytes")
    if size is None:
        memory.append(["serialized profile", "error", "—", "—", "—", ml.get("profile_bytes_error", "")])
    else:
        memory.append([
            f"serialized profile ({ml['columns']} columns)", h.fmt_bytes(size), wl_label,
            "—" if wl is None else h.fmt_bytes(wl["profile_bytes"]),
            "—" if wl is None else f"{wl['profile_bytes'] / size:.1f}x",
            f"{h.fmt_bytes(size / ml['columns'])} per column; `len(p.to_bytes())` vs `view().serialize()`",
        ])
    return {
        "speed": {"headers": ["case", "mlwatch time", "peer", "peer time", "ratio", "mlwatch per value",
                              "peer per value", "goal", "met"], "rows": speed},
        "memory": {"headers": ["measure", "mlwatch", "peer", "peer figure", "ratio (peer / mlwatch)", "note"],
                   "rows": memory},
    }


def _notes(payload: dict[str, Any]) -> list[str]:
    c = payload["cases"]
    cfg = payload["config"]
    ml = c["batch_mlwatch"]
    notes = [
        f"Batch frame: {ml['rows']:,} rows; 15 float64 columns (5 normal, 5 lognormal, 5 integer-valued; "
        f"1 % NaN in two) and 5 object-string columns (cardinalities {', '.join(map(str, BATCH_CARDINALITIES))}, "
        "Zipf frequencies). Call: `mlwatch.profile(df, model=\"bench\")`.",
        f"Times are medians of {cfg['reps']} run(s) (mlwatch) and {cfg['peer_reps']} run(s) (peers), each after an "
        "untimed warm-up; ratios are peer time ÷ mlwatch time per value.",
    ]
    cpu = [f"mlwatch {ml['cpu_median_s'] / ml['wall_median_s']:.2f}"]
    wl = c.get("batch_whylogs")
    if wl is not None:
        cpu.append(f"whylogs {wl['cpu_median_s'] / wl['wall_median_s']:.2f}")
        if wl["sliced"]:
            notes.append(f"whylogs was measured on the first {wl['rows']:,} rows of the frame (it takes "
                         f"{wl['s_per_value'] * 1e6:.2f} µs per value); its ratio compares per-value rates.")
    dm, de = c.get("drift_mlwatch"), c.get("drift_evidently")
    if dm is not None:
        notes.append(
            f"Drift frames: 2 x {dm['rows']:,} rows x 12 (8 float64, 4 object strings); planted drift in "
            f"{len(PLANTED_DRIFT)} features ({', '.join(PLANTED_DRIFT)}). mlwatch split: profiles "
            f"{h.fmt_seconds(dm['profile_median_s'])}, drift {h.fmt_seconds(dm['drift_median_s'])}."
        )
        sm = dm["summary"]
        notes.append(f"mlwatch flagged {sm.get('n_drifted')} of {sm.get('n_columns')} columns "
                     f"({', '.join(sm.get('drifted_columns', []))}; methods: {', '.join(sm.get('methods', []))}).")
        cpu.append(f"mlwatch+drift {dm['cpu_median_s'] / dm['wall_median_s']:.2f}")
    if de is not None:
        s = de["summary"]
        notes.append(f"Evidently flagged {s.get('n_drifted')} of {len(s.get('columns', {}))} columns "
                     f"({', '.join(s.get('drifted_columns', []))}; methods: {', '.join(s.get('methods', []))}).")
        cpu.append(f"evidently {de['cpu_median_s'] / de['wall_median_s']:.2f}")
    notes.append("CPU time ÷ wall time (above 1: more than one core busy; below 1: the process waited for a core "
                 "other jobs held): " + ", ".join(cpu) + ".")
    cpu_rate = ml["values"] / ml["cpu_median_s"]
    on_cpu = [f"mlwatch {h.fmt_rate(cpu_rate)}"]
    if wl is not None:
        on_cpu.append(f"{(wl['cpu_median_s'] / wl['values']) / (ml['cpu_median_s'] / ml['values']):.1f}x whylogs")
    if dm is not None and de is not None:
        on_cpu.append(f"{de['cpu_median_s'] / dm['cpu_median_s']:.1f}x evidently")
    notes.append("The same figures on CPU time instead of wall time (less sensitive to other jobs): "
                 + ", ".join(on_cpu) + ".")
    loads = payload["load_1min"]["samples"]
    notes.append(f"1-minute load average during the run: {min(loads):.2f}-{max(loads):.2f} (2 cores, shared).")
    notes += [f"Skipped: {why}" for why in payload["skipped"].values()]
    if cfg["quick"]:
        notes.append("QUICK run (--quick): smaller sizes, fewer repetitions; not the figures to quote.")
    return notes


def _machine_lines(payload: dict[str, Any]) -> list[str]:
    m = payload["machine"]
    pk = m["packages"]
    versions = ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None)
    return [
        f"CPU: {m['cpu']}; {m['cores']} cores ({m['usable_cores']} usable); {m['memory_gib']} GiB; {m['os']}",
        f"{m['python']}; {versions}; mlwatch git {m['git']}",
    ]


def render_text(payload: dict[str, Any]) -> str:
    t = payload["tables"]
    parts = ["", *_machine_lines(payload), "", "Speed", h.render_text(t["speed"]["headers"], t["speed"]["rows"]),
             "", "Memory", h.render_text(t["memory"]["headers"], t["memory"]["rows"]), ""]
    parts += [f"- {n}" for n in _notes(payload)]
    return "\n".join(parts)


def render_markdown(payload: dict[str, Any]) -> str:
    t = payload["tables"]
    parts = [
        "# Batch profiling benchmark",
        "",
        f"Produced by `benchmarks/bench_profile.py` on {payload['started']}; reproduce with "
        "`bash benchmarks/setup_peers.sh && benchmarks/.peers/bin/python benchmarks/bench_profile.py`.",
        f"Command: `{payload.get('command', '')}`",
        "",
        *[f"- {line}" for line in _machine_lines(payload)],
        "",
        "## Speed",
        "",
        h.render_markdown(t["speed"]["headers"], t["speed"]["rows"]),
        "",
        "## Memory",
        "",
        h.render_markdown(t["memory"]["headers"], t["memory"]["rows"]),
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in _notes(payload)],
    ]
    return "\n".join(parts) + "\n"


def _parse(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 100k-row frame, 20k-row drift frames, fewer reps; writes nothing unless --out-dir")
    ap.add_argument("--rows", type=int, help="rows of the batch frame (default 1,000,000)")
    ap.add_argument("--drift-rows", type=int, help="rows of each drift frame (default 100,000)")
    ap.add_argument("--reps", type=int, help="timed repetitions for mlwatch (default 5)")
    ap.add_argument("--peer-reps", type=int, help="timed repetitions for whylogs and Evidently (default 3)")
    ap.add_argument("--whylogs-rows", type=int, help="profile only this many rows with whylogs (it is slow); ratios use per-value rates")
    ap.add_argument("--no-peers", action="store_true", help="measure mlwatch only")
    ap.add_argument("--no-drift", action="store_true", help="skip the profile x2 + drift case")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, help=f"where profile.json and profile.md go (default {RESULTS.relative_to(ROOT)}; --quick: nowhere)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--max-load", type=float, help="before measuring, wait while the 1-min load average is above this (default 1.5; --quick: no wait)")
    ap.add_argument("--max-wait", type=float, default=600.0, help="seconds to wait for --max-load at most (default 600)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    overrides = {
        "rows": args.rows, "drift_rows": args.drift_rows, "reps": args.reps, "peer_reps": args.peer_reps,
        "whylogs_rows": args.whylogs_rows,
    }
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None}, seed=args.seed,
                  peers=not args.no_peers, drift=not args.no_drift, memory=not args.no_memory)
    for name in ("rows", "drift_rows", "reps", "peer_reps"):
        if getattr(cfg, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return cfg, args


def _executable() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return exe.name


def main(argv: Sequence[str] | None = None, log: Log = print) -> dict[str, Any]:
    """Parse arguments, wait for a quiet machine, run, print the tables and write the results."""
    cfg, args = _parse(argv)
    max_load = args.max_load if args.max_load is not None else (None if cfg.quick else 1.5)
    if max_load is not None:
        h.wait_for_quiet(max_load, args.max_wait, log=log)
    payload = run(cfg, log)
    shown = list(sys.argv[1:] if argv is None else argv)
    payload["command"] = shlex.join([_executable(), "benchmarks/bench_profile.py", *shown])
    log(render_text(payload))
    out_dir = args.out_dir if args.out_dir is not None else (None if cfg.quick else RESULTS)
    if out_dir is not None and not args.no_write:
        json_path, md_path = h.write_results(out_dir, "profile", payload, render_markdown(payload))
        log(f"\nwrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
