"""Spark benchmark: merge N stored window profiles of 20 features with Spark and with one Python process.

What is timed, on the same stored data (N profile bodies, 20 features each: 16 numeric, 4
categorical, 300 rows per window, merged into one profile per model, the "whole fleet" merge):

- ``python``: one Python process reads each body with `Profile.from_bytes` (checksum, structural
  validation, native decode) and folds it into the result with `Profile.merge_in`;
- ``spark_payloads``: Spark local[2] reads the same bodies from Parquet, decodes them on the
  executors (`mlwatch.spark.read_payloads`, the same validation), merges them with the native sketch
  aggregates (`merge_rows`) and returns the merged profile to the driver (`to_profiles`);
- ``spark_rows``: the production layout, where bodies were decoded once into rows stored as
  Parquet (written here by pyarrow, see `write_rows`): Spark reads the rows and merges them in
  the JVM only (no Python on the executors, apart from the model-quality UDF's stage).

The session start (JVM, ~10-20 s here) and a first warm-up round are excluded from the timings.
Each case reports wall time and CPU time (this process and all its descendants: the JVM and
Spark's Python workers, read from /proc), since other work shares this 2-core machine. The
crossover line gives where Spark local[2] overtakes one Python process, from a least-squares fit
of each path's cost as a fixed part plus a per-profile part over the measured sizes. Results go to
``benchmarks/results/spark.json`` and ``spark.md``.

    nice -n 10 python benchmarks/bench_spark.py --sizes 10000 100000   # what was run for the results
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mlwatch  # noqa: E402
from benchmarks._harness import machine_info, tree_cpu_seconds  # noqa: E402
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


def write_rows(bodies: Sequence[bytes], out_dir: str, per_file: int) -> None:
    """The production layout for `spark_rows`: the bodies' rows (`mlwatch.spark.profile_rows`) in Parquet.

    Bodies cycle through a pool, so each distinct body is decoded once and its rows repeated: the
    files hold exactly what ``read_payloads(...).write.parquet(...)`` would write, without spending
    a full decode of N bodies on preparing the input.
    """
    from mlwatch import spark as ms

    os.makedirs(out_dir)
    schema = ms._arrow_schema()
    decoded: dict[bytes, list[dict[str, Any]]] = {}
    for part, start in enumerate(range(0, len(bodies), per_file)):
        rows: list[dict[str, Any]] = []
        for body in bodies[start : start + per_file]:
            if body not in decoded:
                decoded[body] = ms.profile_rows(Profile.from_bytes(body))
            rows.extend(dict(r) for r in decoded[body])
        batch = ms._arrow_rows(rows, schema)
        pq.write_table(pa.Table.from_batches([batch]), f"{out_dir}/part-{part:05d}.parquet", row_group_size=4200)


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of the whole process tree, and the result of `fn()`."""
    cpu0, start = tree_cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - start, tree_cpu_seconds() - cpu0, out


def _fit(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_profile * n`` (fixed clamped at 0)."""
    if len(sizes) == 1:
        return 0.0, seconds[0] / sizes[0]
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float), 1)
    return max(0.0, float(intercept)), max(float(slope), 1e-12)


CASES = {
    "python": "one Python process: `Profile.from_bytes` + `merge_in` per body",
    "spark_payloads": "Spark local: bodies from Parquet, decoded on the executors (`read_payloads`), `merge_rows`, `to_profiles`",
    "spark_rows": "Spark local: rows already decoded into Parquet, merged in the JVM only (`merge_rows`, `to_profiles`)",
}


def _command(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "python benchmarks/bench_spark.py" + "".join(" " + shlex.quote(a) for a in args)


def _markdown(payload: dict[str, Any]) -> str:
    """The results as the Markdown page `benchmarks/results/spark.md`."""
    info = payload["machine"]
    lines = [
        "# Spark merge benchmark",
        "",
        f"Produced by `benchmarks/bench_spark.py` on {payload['date']}.",
        f"Command: `{payload['command']}` (run under `nice -n 10`; other jobs shared the machine, see the load column).",
        "",
        f"- CPU: {info['cpu']}; {info['cores']} cores ({info['usable_cores']} usable); {info['memory_gib']} GiB; {info['os']}",
        f"- {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()) + f"; mlwatch git {info['git']}",
        f"- Spark local[{payload['cores']}], session start {payload['session_start_s']:.1f} s (excluded), "
        f"a warm-up round of {WARMUP} profiles (excluded)",
        "",
        f"Task: merge N stored window profiles of one model ({payload['features']} features: {N_NUMERIC} numeric, "
        f"{N_CATEGORICAL} categorical; {payload['rows_per_window']} rows per window; ~{payload['body_kib']:.0f} KiB per body) "
        "into one profile (the whole-fleet merge); every path returns the same merged profile (row and value counts checked).",
        "",
        "| profiles | path | wall | CPU (process tree) | wall per profile | profiles/s | load (1 min) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    sizes = sorted({r["profiles"] for runs in payload["cases"].values() for r in runs})
    for n in sizes:
        for name in CASES:
            for r in payload["cases"][name]:
                if r["profiles"] == n:
                    lines.append(
                        f"| {n:,} | {name} | {r['seconds']:.1f} s | {r['cpu_s']:.1f} s | {r['seconds'] / n * 1e3:.2f} ms "
                        f"| {r['profiles_per_s']:,.0f} | {r['load_average']:.1f} |"
                    )
    lines += ["", "Paths:", ""]
    lines += [f"- `{name}`: {text}" for name, text in CASES.items()]
    summary = payload.get("summary")
    if summary:
        lines += ["", "## Fit and crossover", ""]
        for name, fit in summary["fits"].items():
            lines.append(f"- `{name}`: {fit['fixed_s']:.1f} s + {fit['per_profile_s'] * 1e3:.2f} ms per profile (least squares over the measured sizes)")
        lines += [f"- {line}" for line in summary["crossover_lines"]]
        lines.append("- A crossover is where two fitted lines cross, not a measured run; the table's rows are all measured.")
        measured = 100_000 in sizes
        lines.append(
            "- 100,000 profiles: measured (see the table)." if measured else
            "- 100,000 profiles: NOT measured; the fit gives " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["estimate_100k_s"].items())
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from mlwatch import spark as ms

    t_start, _, spark = _timed(
        lambda: SparkSession.builder.master(f"local[{args.cores}]")
        .appName("mlwatch-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(args.cores))
        .config("spark.driver.memory", "2g")
        # ~50 KB bodies: keep each Arrow batch sent to a Python worker near 25 MB, not 10,000 rows.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
        .config("spark.sql.parquet.columnarReaderBatchSize", "256")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    log(f"spark session start: {t_start:.1f} s (excluded); load average {os.getloadavg()}")
    cases: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    payload: dict[str, Any] = {
        "benchmark": "spark",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": _command(argv),
        "machine": machine_info(["pyspark", "pyarrow", "numpy", "datasketches"], ROOT),
        "features": N_NUMERIC + N_CATEGORICAL,
        "rows_per_window": ROWS,
        "body_kib": 0.0,
        "cores": args.cores,
        "session_start_s": t_start,
        "cases": cases,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        (args.out_dir / "spark.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        (args.out_dir / "spark.md").write_text(_markdown(payload), encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        for n in [WARMUP, *args.sizes]:
            bodies = make_bodies(n)
            payload["body_kib"] = sum(len(b) for b in bodies[:POOL]) / min(n, POOL) / 1024
            payload_dir = f"{tmp}/payloads-{n}"
            rows_dir = f"{tmp}/rows-{n}"
            # The stored bodies: Parquet files of one binary column, written without Spark.
            os.makedirs(payload_dir)
            per_file = 2000
            for part, start in enumerate(range(0, n, per_file)):
                table = pa.table({"payload": pa.array(bodies[start : start + per_file], type=pa.binary())})
                pq.write_table(table, f"{payload_dir}/part-{part:05d}.parquet", row_group_size=200)
            write_rows(bodies, rows_dir, per_file)

            t_py, cpu_py, merged_py = _timed(partial(python_merge, bodies))

            def from_payloads(d: str = payload_dir) -> list[Profile]:
                return ms.to_profiles(ms.merge_rows(ms.read_payloads(spark.read.parquet(d)), by=["model"]))

            def from_rows(d: str = rows_dir) -> list[Profile]:
                return ms.to_profiles(ms.merge_rows(spark.read.parquet(d), by=["model"]))

            t_sp, cpu_sp, merged_sp = _timed(from_payloads)
            t_rows, cpu_rows, merged_rows = _timed(from_rows)
            for got in (merged_sp[0], merged_rows[0]):
                assert got.rows == merged_py.rows == n * ROWS
                assert got.columns["num_0"].numeric is not None and merged_py.columns["num_0"].numeric is not None
                assert got.columns["num_0"].numeric.n == merged_py.columns["num_0"].numeric.n
            label = "warm-up (excluded)" if n == WARMUP else ""
            log(f"n={n:>7}: python {t_py:7.1f} s (cpu {cpu_py:7.1f})   spark(payloads) {t_sp:7.1f} s (cpu {cpu_sp:7.1f})   "
                f"spark(rows) {t_rows:7.1f} s (cpu {cpu_rows:7.1f})   load {os.getloadavg()[0]:.1f} {label}")
            shutil.rmtree(payload_dir)
            shutil.rmtree(rows_dir)
            if n == WARMUP:
                continue
            for name, t, c in (("python", t_py, cpu_py), ("spark_payloads", t_sp, cpu_sp), ("spark_rows", t_rows, cpu_rows)):
                cases[name].append(
                    {"profiles": n, "seconds": t, "cpu_s": c, "profiles_per_s": n / t, "load_average": os.getloadavg()[0]}
                )
            write()
    spark.stop()

    sizes = args.sizes
    fits = {name: _fit(sizes, [r["seconds"] for r in runs]) for name, runs in cases.items()}
    lines = []
    for name in ("spark_payloads", "spark_rows"):
        fixed_s, per_s = fits[name]
        fixed_p, per_p = fits["python"]
        if per_s < per_p:
            cross = max(0.0, (fixed_s - fixed_p) / (per_p - per_s))
            lines.append(f"{name}: faster than one Python process from about {cross:,.0f} profiles (wall time, {args.cores} cores)")
        else:
            lines.append(
                f"{name}: no crossover on {args.cores} cores (wall per profile {per_s * 1e3:.2f} ms vs {per_p * 1e3:.2f} ms in one Python process)"
            )
    for line in lines:
        log(line)
    payload["summary"] = {
        "fits": {k: {"fixed_s": a, "per_profile_s": b} for k, (a, b) in fits.items()},
        "crossover_lines": lines,
        "estimate_100k_s": {k: a + b * 100_000 for k, (a, b) in fits.items()},
    }
    write()
    return payload


if __name__ == "__main__":
    main()
