"""Spark benchmark: merge N stored window profiles of 20 features with Spark and with one Python process.

What is timed, on the same stored data (N profile bodies, 20 features each: 16 numeric, 4
categorical, 300 rows per window, merged into one profile per model, the "whole fleet" merge):

- ``python``: one Python process reads each body with `Profile.from_bytes` (checksum, structural
  validation, native decode) and folds it into the result with `Profile.merge_in`;
- ``spark_payloads``: Spark local[2] reads the same bodies from Parquet, decodes them on the
  executors (`mlwatch.spark.read_payloads`, the same validation), merges them with the native sketch
  aggregates (`merge_rows`) and returns the merged profile to the driver (`to_profiles`);
- ``spark_rows``: the production layout, where bodies were decoded once into rows stored as
  Parquet: Spark reads the rows and merges them in the JVM only (no Python on the executors).

The session start (JVM, ~10-20 s here) and a first warm-up round are excluded from the timings. Figures on
this 2-core machine shared with other work are indicative; the crossover line gives where Spark
local[2] overtakes one Python process, extrapolated linearly from the measured sizes (each path's
cost is a fixed part plus a per-profile part, fitted by least squares).

    python benchmarks/bench_spark.py --sizes 2000 10000 25000   # what was run for the results
    python benchmarks/bench_spark.py --sizes 100000             # the full issue figure (slow here)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mlwatch  # noqa: E402
from mlwatch.profile import Profile  # noqa: E402

__all__ = ["main", "make_bodies"]

N_NUMERIC = 16
N_CATEGORICAL = 4
ROWS = 300
POOL = 64  # distinct windows generated; the N stored bodies cycle through them
WARMUP = 200  # a first small round warms the JVM and the Python workers; not reported


def make_bodies(n: int, seed: int = 1) -> list[bytes]:
    """`n` stored window bodies of one model, 20 features each (a pool of distinct windows reused)."""
    rng = np.random.default_rng(seed)
    pool: list[bytes] = []
    for i in range(min(n, POOL)):
        data: dict[str, Any] = {f"num_{j}": rng.normal(j, 1 + j / 10, ROWS) for j in range(N_NUMERIC)}
        for j in range(N_CATEGORICAL):
            data[f"cat_{j}"] = [f"v{int(k)}" for k in rng.zipf(1.5, ROWS) % (20 + 10 * j)]
        p = mlwatch.profile(data, model="bench", version="v1", categorical=[f"cat_{j}" for j in range(N_CATEGORICAL)])
        p.window_start, p.window_end = 60.0 * i, 60.0 * (i + 1)
        pool.append(p.to_bytes())
    return [pool[i % len(pool)] for i in range(n)]


def python_merge(bodies: Sequence[bytes]) -> Profile:
    """The single-process baseline: validate, decode and fold every body."""
    result = Profile.from_bytes(bodies[0])
    for body in bodies[1:]:
        result.merge_in(Profile.from_bytes(body))
    return result


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _fit(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_profile * n`` (fixed clamped at 0)."""
    if len(sizes) == 1:
        return 0.0, seconds[0] / sizes[0]
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float), 1)
    return max(0.0, float(intercept)), max(float(slope), 1e-12)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 25000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from mlwatch import spark as ms

    t_start, spark = _timed(
        lambda: SparkSession.builder.master(f"local[{args.cores}]")
        .appName("mlwatch-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(args.cores))
        .config("spark.driver.memory", "2g")
        # ~50 KB bodies: keep each Arrow batch sent to a Python worker near 25 MB, not 10,000 rows.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
        .config("spark.sql.parquet.columnarReaderBatchSize", "256")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    log(f"spark session start: {t_start:.1f} s (excluded); load average {os.getloadavg()}")
    cases: dict[str, list[dict[str, float]]] = {"python": [], "spark_payloads": [], "spark_rows": []}
    payload: dict[str, Any] = {
        "benchmark": "spark",
        "features": N_NUMERIC + N_CATEGORICAL,
        "rows_per_window": ROWS,
        "cores": args.cores,
        "session_start_s": t_start,
        "cases": cases,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in [WARMUP, *args.sizes]:
            bodies = make_bodies(n)
            payload_dir = f"{tmp}/payloads-{n}"
            rows_dir = f"{tmp}/rows-{n}"
            # The stored bodies: Parquet files of one binary column, written without Spark.
            os.makedirs(payload_dir)
            per_file = 2000
            for part, start in enumerate(range(0, n, per_file)):
                table = pa.table({"payload": pa.array(bodies[start : start + per_file], type=pa.binary())})
                pq.write_table(table, f"{payload_dir}/part-{part:05d}.parquet", row_group_size=200)
            ms.read_payloads(spark.read.parquet(payload_dir)).write.parquet(rows_dir)

            t_py, merged_py = _timed(lambda b=bodies: python_merge(b))
            t_sp, merged_sp = _timed(
                lambda d=payload_dir: ms.to_profiles(ms.merge_rows(ms.read_payloads(spark.read.parquet(d)), by=["model"]))
            )
            t_rows, merged_rows = _timed(lambda d=rows_dir: ms.to_profiles(ms.merge_rows(spark.read.parquet(d), by=["model"])))
            for got in (merged_sp[0], merged_rows[0]):
                assert got.rows == merged_py.rows == n * ROWS
                assert got.columns["num_0"].numeric is not None and merged_py.columns["num_0"].numeric is not None
                assert got.columns["num_0"].numeric.n == merged_py.columns["num_0"].numeric.n
            label = "warm-up (excluded)" if n == WARMUP else ""
            log(f"n={n:>7}: python {t_py:7.2f} s   spark(payloads) {t_sp:7.2f} s   spark(rows) {t_rows:7.2f} s   "
                f"load {os.getloadavg()[0]:.1f} {label}")
            if n == WARMUP:
                continue
            for name, t in (("python", t_py), ("spark_payloads", t_sp), ("spark_rows", t_rows)):
                cases[name].append({"profiles": n, "seconds": t, "profiles_per_s": n / t, "load_average": os.getloadavg()[0]})
            (args.out_dir / "spark.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    spark.stop()

    sizes = args.sizes
    fits = {name: _fit(sizes, [r["seconds"] for r in runs]) for name, runs in cases.items()}
    summary: dict[str, Any] = {"fits": {k: {"fixed_s": a, "per_profile_s": b} for k, (a, b) in fits.items()}}
    lines = []
    for name in ("spark_payloads", "spark_rows"):
        fixed_s, per_s = fits[name]
        fixed_p, per_p = fits["python"]
        est = {k: fits[k][0] + fits[k][1] * 100_000 for k in fits}
        if per_s < per_p:
            cross = max(0.0, (fixed_s - fixed_p) / (per_p - per_s))
            lines.append(f"{name}: faster than one Python process from about {cross:,.0f} profiles")
        else:
            cross = float("inf")
            lines.append(f"{name}: no crossover on {args.cores} cores (per-profile cost {per_s * 1e3:.2f} ms vs {per_p * 1e3:.2f} ms)")
        summary[f"crossover_{name}"] = cross
        summary["estimate_100k_s"] = est
    for line in lines:
        log(line)
    log("100k estimate (linear fit): " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["estimate_100k_s"].items()))
    payload["summary"] = summary
    (args.out_dir / "spark.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return payload


if __name__ == "__main__":
    main()
