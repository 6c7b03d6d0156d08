"""The `mlwatch` command line: profile files, compare profiles, show a profile."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from mlwatch._errors import MlwatchError
from mlwatch._progress import Progress

__all__ = ["main"]

#: Rows read per chunk when profiling a file: bounds memory whatever the file's size.
CHUNK_ROWS = 200_000


def _read_chunks(path: str) -> Iterator[tuple[Any, float]]:
    """Yield (chunk, fraction of the file done) for CSV and Parquet files."""
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MlwatchError('reading Parquet needs pyarrow: pip install "mlwatch[parquet]"') from None
        pf = pq.ParquetFile(path)
        total = max(pf.metadata.num_rows, 1)
        done = 0
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
            done += batch.num_rows
            yield batch, done / total
        return
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        try:
            import pandas as pd
        except ImportError:
            raise MlwatchError('reading CSV needs pandas: pip install "mlwatch[pandas]"') from None
        size = max(os.path.getsize(path), 1)
        sep = "\t" if lower.endswith(".tsv") else ","
        with open(path, "rb") as fh:
            for chunk in pd.read_csv(fh, sep=sep, chunksize=CHUNK_ROWS, compression="infer" if lower.endswith(".gz") else None):
                yield chunk, min(fh.tell() / size, 1.0)
        return
    raise MlwatchError(f"unsupported file type: {path} (expected .csv, .tsv, .csv.gz or .parquet)")


def _cmd_profile(args: argparse.Namespace) -> int:
    from mlwatch.profile import Profile
    from mlwatch.profiling import ProfileConfig, update_profile

    config = ProfileConfig.build(categorical=args.categorical or None, text=args.text or None, exclude=args.exclude or None)
    prof = Profile(args.model, version=args.version)
    with Progress(f"profiling {os.path.basename(args.data)}", enabled=not args.quiet) as bar:
        for chunk, fraction in _read_chunks(args.data):
            update_profile(prof, chunk, config)
            bar.update(fraction, f"{prof.rows:,} rows")
    prof.save(args.output)
    if not args.quiet:
        print(f"wrote {args.output}: {prof.rows:,} rows, {len(prof.columns)} columns", file=sys.stderr)
    return 0


def _cmd_drift(args: argparse.Namespace) -> int:
    from mlwatch.drift import drift
    from mlwatch.profile import Profile

    ref = Profile.load(args.reference)
    cur = Profile.load(args.current)
    report = drift(ref, cur, method=args.method, drift_share=args.drift_share)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    return 1 if args.fail_on_drift and report.dataset_drift else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from mlwatch.profile import Profile

    prof = Profile.load(args.profile)
    if args.json:
        print(json.dumps(_profile_dict(prof), indent=2, default=str))
        return 0
    print(prof)
    if prof.window_start is not None:
        print(f"window: {prof.window_start} .. {prof.window_end}")
    if prof.calls:
        print(f"calls: {prof.calls:,}  errors: {prof.error_count:,}  dropped: {prof.dropped:,}")
        if prof.latency is not None:
            q = prof.latency.quantiles([0.5, 0.9, 0.99])
            print(f"latency p50/p90/p99: {q[0] * 1e3:.3f} / {q[1] * 1e3:.3f} / {q[2] * 1e3:.3f} ms")
    for section, cols in (("inputs", prof.columns), ("outputs", prof.outputs)):
        if cols:
            print(f"\n{section}:")
            print(_columns_table(cols))
    return 0


def _profile_dict(prof: Any) -> dict[str, Any]:
    return {
        "model": prof.model,
        "version": prof.version,
        "segment": prof.segment,
        "window_start": prof.window_start,
        "window_end": prof.window_end,
        "rows": prof.rows,
        "calls": prof.calls,
        "errors": prof.errors,
        "dropped": prof.dropped,
        "columns": {n: c.summary() for n, c in prof.columns.items()},
        "outputs": {n: c.summary() for n, c in prof.outputs.items()},
    }


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _columns_table(cols: dict[str, Any]) -> str:
    head = ["column", "kind", "count", "missing", "mismatch", "mean", "p50", "min", "max", "distinct"]
    rows = [head]
    for name, col in cols.items():
        s = col.summary()
        rows.append([
            name, s["kind"], f"{s['count']:,}", f"{s['missing_share']:.1%}", f"{s['type_mismatch']:,}",
            _fmt(s.get("mean", "")), _fmt(s.get("p50", "")), _fmt(s.get("min", "")), _fmt(s.get("max", "")),
            _fmt(s.get("distinct", "")),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _cmd_report(args: argparse.Namespace) -> int:
    from mlwatch.profile import Profile
    from mlwatch.report import load_profiles, write_report

    ref = Profile.load(args.reference)
    current = load_profiles(args.current, model=args.model or ref.model, token=args.token)
    path = write_report(args.output, ref, current, title=args.title, drift_share=args.drift_share, method=args.method)
    if not args.quiet:
        print(f"wrote {path} ({len(current)} current profile(s))", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mlwatch.demo import run_demo

    return run_demo(
        calls=args.calls, out=args.out, report=args.report, keep_running=args.keep_running, phase_seconds=args.phase_seconds,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlwatch", description="Watch ML models where they run.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="profile a CSV or Parquet file into a .mlw profile")
    p.add_argument("data", help="input file (.csv, .tsv, .csv.gz, .parquet)")
    p.add_argument("-o", "--output", required=True, help="profile file to write")
    p.add_argument("--model", default="default", help="model name stored in the profile")
    p.add_argument("--version", default=None, help="model version stored in the profile")
    p.add_argument("--categorical", action="append", metavar="COLUMN", help="treat COLUMN as categorical (repeatable)")
    p.add_argument("--text", action="append", metavar="COLUMN", help="treat COLUMN as free text: lengths only (repeatable)")
    p.add_argument("--exclude", action="append", metavar="COLUMN", help="skip COLUMN (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_profile)

    d = sub.add_parser("drift", help="compare a current profile with a reference profile")
    d.add_argument("reference")
    d.add_argument("current")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--method", default="auto", help="drift method (auto, ks, psi, js, wasserstein, hellinger, chisquare)")
    d.add_argument("--drift-share", type=float, default=0.5, help="share of drifted columns that means dataset drift")
    d.add_argument("--fail-on-drift", action="store_true", help="exit 1 when dataset drift is found")
    d.set_defaults(func=_cmd_drift)

    r = sub.add_parser("report", help="write a self-contained HTML report of drift, data quality, latency and errors")
    r.add_argument("--reference", required=True, help="reference profile (.mlw)")
    r.add_argument("--current", required=True, help="a .mlw file, a directory of window files, or a collector URL")
    r.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    r.add_argument("--model", default=None, help="model to read from a directory or collector (default: the reference's)")
    r.add_argument("--token", default=os.environ.get("MLWATCH_TOKEN"), help="collector bearer token (default: $MLWATCH_TOKEN)")
    r.add_argument("--title", default=None, help="page title")
    r.add_argument("--method", default="auto", help="drift method (auto, ks, psi, js, wasserstein, hellinger, chisquare)")
    r.add_argument("--drift-share", type=float, default=0.5, help="share of drifted columns that means dataset drift")
    r.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    r.set_defaults(func=_cmd_report)

    m = sub.add_parser("demo", help="serve a model over HTTP, inject trouble halfway, and show mlwatch finding it")
    m.add_argument("--calls", type=int, default=4_000, help="predictions to request, half before the trouble, half after")
    m.add_argument("--out", default=None, help="directory for the collector's database, logs and report (default: a temporary one)")
    m.add_argument("--report", default=None, help="HTML report to write (default: report.html in the output directory)")
    m.add_argument("--phase-seconds", type=float, default=10.0, help="spread each half of the traffic over this many seconds (0: as fast as served)")
    m.add_argument("--keep-running", action="store_true", help="leave the model service and the collector's dashboard up until Ctrl-C")
    m.set_defaults(func=_cmd_demo)

    s = sub.add_parser("show", help="summarise a profile")
    s.add_argument("profile")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_cmd_show)

    # Listed for --help; `main` hands everything after "collector" to mlwatch.collector.cli.
    sub.add_parser("collector", help="run the OTLP collector (mlwatch collector --help), or manage its references", add_help=False)
    return parser


def _cmd_collector(argv: Sequence[str]) -> int:
    try:
        from mlwatch.collector.cli import main as collector_main
    except ImportError as exc:
        print(f'mlwatch: the collector needs its extra: pip install "mlwatch[collector]" ({exc})', file=sys.stderr)
        return 2
    return collector_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["collector"]:
        return _cmd_collector(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (MlwatchError, OSError) as exc:
        print(f"mlwatch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
