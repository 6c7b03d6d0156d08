"""What `@mlwatch.monitor` costs per call, against baselines measured in the same process.

For a predict function taking a dict of 10 numeric + 2 string features:

- baselines: the bare call, a wrapt FunctionWrapper passthrough, prometheus_client's
  ``Histogram.time()`` decorator (latency only), the OpenTelemetry SDK recording latency (one
  histogram record with one attribute) and latency + 12 feature records, and whylogs'
  ``DatasetProfile.track(row=)`` when whylogs is importable (run with ``benchmarks/.peers``);
- mlwatch hot path: CPU time of the calling thread only;
- mlwatch total: CPU time of the whole process (caller, aggregator thread, final flush) for the
  same calls: everything mlwatch does; in a tight loop, and with the caller idle between bursts
  of calls (as a serving thread waiting on I/O), when the aggregator keeps up.

CPU time (not wall time) is measured so that another process on the machine does not count.
Each figure is the median of several repetitions; mlwatch's ratios are medians of per-round ratios,
prometheus_client (and the OTel SDK, whylogs) measured in each round right beside mlwatch. Also: async functions, 1,000-row DataFrame
batches (cost per row), and with ``--memory`` the RSS growth over 10 million calls.

Usage: ``python benchmarks/bench_monitor.py [--quick] [--memory] [--json PATH] [--markdown PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import mlwatch
from mlwatch._runtime import RUNTIME
from mlwatch.testing import InMemoryExporter

FEATURES: dict[str, Any] = {f"num_{i}": float(i) * 1.5 for i in range(10)}
FEATURES.update(country="DE", plan="gold")


def _predict(features: dict[str, Any]) -> float:
    return 0.5


def _cpu_per_call(fn: Callable[[dict[str, Any]], Any], n: int, *, flush: bool = False) -> tuple[float, float]:
    """(caller-thread CPU ns per call, whole-process CPU ns per call incl. a final flush)."""
    feats = FEATURES
    gc.collect()
    p0, t0 = time.process_time_ns(), time.thread_time_ns()
    for _ in range(n):
        fn(feats)
    t1 = time.thread_time_ns()
    if flush:
        mlwatch.flush()
    p1 = time.process_time_ns()
    return (t1 - t0) / n, (p1 - p0) / n


def _median(fn: Callable[[], tuple[float, float]], reps: int) -> tuple[float, float]:
    runs = [fn() for _ in range(reps)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _otel_latency(duration: Any) -> Callable[[dict[str, Any]], float]:
    """The OTel SDK baseline: the call timed and one histogram point recorded, with one attribute."""
    attrs = {"model": "m"}

    def otel_latency(features: dict[str, Any]) -> float:
        t = time.perf_counter()
        r = _predict(features)
        duration.record(time.perf_counter() - t, attrs)
        return r

    return otel_latency


def _baselines(n: int, reps: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["bare call"] = _median(lambda: _cpu_per_call(_predict, n), reps)[1]

    import wrapt

    @wrapt.decorator
    def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    out["wrapt passthrough"] = _median(lambda: _cpu_per_call(passthrough(_predict), n), reps)[1]

    from prometheus_client import CollectorRegistry, Histogram

    hist = Histogram("predict_seconds", "latency", registry=CollectorRegistry())
    out["prometheus_client Histogram.time()"] = _median(lambda: _cpu_per_call(hist.time()(_predict), n), reps)[1]

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    duration = meter.create_histogram("predict.duration", unit="s")
    feature_hists = {k: meter.create_histogram(f"feature.{k}") for k in FEATURES if k.startswith("num")}
    attrs = {"model": "m"}

    otel_latency = _otel_latency(duration)

    def otel_features(features: dict[str, Any]) -> float:
        t = time.perf_counter()
        r = _predict(features)
        duration.record(time.perf_counter() - t, attrs)
        for k, h in feature_hists.items():
            h.record(features[k], attrs)
        return r

    out["OTel SDK latency record"] = _median(lambda: _cpu_per_call(otel_latency, n), reps)[1]
    out["OTel SDK latency + 10 feature records"] = _median(lambda: _cpu_per_call(otel_features, max(n // 10, 1000)), reps)[1]

    why = _whylogs_track()
    if why is None:
        print("whylogs not importable: run with benchmarks/.peers/bin/python for that baseline", file=sys.stderr)
    else:
        out["whylogs DatasetProfile.track(row=)"] = _median(lambda: _cpu_per_call(why, max(n // 100, 200)), reps)[1]
    return out


def _whylogs_track() -> Callable[[dict[str, Any]], float] | None:
    """The predict function with whylogs' ``DatasetProfile.track(row=)``, or None without whylogs."""
    try:
        from whylogs.core import DatasetProfile
    except ImportError:
        return None
    prof = DatasetProfile()

    def why(features: dict[str, Any]) -> float:
        r = _predict(features)
        prof.track(row=features)
        return r

    return why


def _rounds(run: Callable[[], tuple[float, float]], n: int, reps: int, others: dict[str, Callable[[], float]]) -> dict[str, float]:
    """mlwatch's (hot, total) CPU per call from `run`, with prometheus_client's ``Histogram.time()``
    (`n` calls) and each of `others` (CPU ns per call) measured right beside it, `reps` rounds.

    Returns the medians of mlwatch's figures and of prometheus_client's, the medians of each
    round's ``hot_ratio`` and ``total_ratio`` to prometheus_client, and of each round's
    ``other / total`` for `others`: this machine's speed drifts between separately taken medians.
    """
    from prometheus_client import CollectorRegistry, Histogram

    prom = Histogram("rounds_seconds", "latency", registry=CollectorRegistry()).time()(_predict)
    got: dict[str, list[float]] = {k: [] for k in ("prometheus", "hot", "total", "hot_ratio", "total_ratio", *others)}
    for _ in range(reps):
        p_ns = _cpu_per_call(prom, n)[1]
        hot, total = run()
        got["prometheus"].append(p_ns)
        got["hot"].append(hot)
        got["total"].append(total)
        got["hot_ratio"].append(hot / p_ns)
        got["total_ratio"].append(total / p_ns)
        for name, other in others.items():
            got[name].append(other() / total)
    return {k: statistics.median(v) for k, v in got.items()}


def _mlwatch_sync(n: int, reps: int) -> dict[str, float]:
    """The tight loop with the aggregator thread live (all threads, final flush), in rounds with
    prometheus_client, the OTel SDK's latency record and whylogs (a hundredth of the calls)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monitored = mlwatch.monitor(model="bench_sync")(_predict)
    _cpu_per_call(monitored, n // 10, flush=True)  # warm-up: first windows, sketches allocated
    otel = _otel_latency(MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("rounds").create_histogram("d", unit="s"))
    others: dict[str, Callable[[], float]] = {"otel": lambda: _cpu_per_call(otel, n // 2)[1]}
    why = _whylogs_track()
    if why is not None:
        others["whylogs"] = lambda: _cpu_per_call(why, max(n // 100, 200))[1]
    return _rounds(lambda: _cpu_per_call(monitored, n, flush=True), n, reps, others)


def _mlwatch_inline(n: int, reps: int) -> float:
    """Whole-process CPU per call when the batches are aggregated on the caller's thread every
    `RUNTIME.batch_size` calls (what wakes the aggregator thread): the same work, without two
    CPU-bound threads contending for the GIL."""
    monitored = mlwatch.monitor(model="bench_inline")(_predict)
    old_batch, old_interval = RUNTIME.batch_size, RUNTIME.settings.flush_interval
    mlwatch.configure(flush_interval=60.0)
    RUNTIME.batch_size = 10**9  # the worker stays asleep

    def run() -> tuple[float, float]:
        feats = FEATURES
        gc.collect()
        p0 = time.process_time_ns()
        for i in range(n):
            monitored(feats)
            if i % old_batch == old_batch - 1:
                RUNTIME.process(close_all=False)
        RUNTIME.process(close_all=True)
        return 0.0, (time.process_time_ns() - p0) / n

    try:
        run()
        return _median(run, reps)[1]
    finally:
        RUNTIME.batch_size = old_batch
        mlwatch.configure(flush_interval=old_interval)


def _paired(n: int, reps: int) -> dict[str, float]:
    """Ratios from back-to-back rounds, steadier than ratios of separately taken medians.

    Each round measures, one right after the other, prometheus_client's ``Histogram.time()``,
    mlwatch's hot path alone (its buffer cleared every batch, nothing aggregated), mlwatch's whole
    work on one thread (each batch of `RUNTIME.batch_size` calls aggregated inline, as the
    aggregator thread takes them), the OTel SDK's latency record
    and, where whylogs is importable, its ``track(row=)`` (for a hundredth of the calls).
    The figures are medians over rounds of each round's ratio: a machine whose speed drifts between
    the cases (this shared virtual machine's does, by up to 2x within an hour) moves them far less.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, Histogram

    prom = Histogram("paired_seconds", "latency", registry=CollectorRegistry()).time()(_predict)
    otel = _otel_latency(MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("paired").create_histogram("d", unit="s"))
    monitored = mlwatch.monitor(model="bench_paired")(_predict)
    queue = monitored.__mlwatch_recorder__.queue  # type: ignore[attr-defined]
    old_batch, old_interval = RUNTIME.batch_size, RUNTIME.settings.flush_interval
    mlwatch.configure(flush_interval=60.0)
    RUNTIME.batch_size = 10**9  # the worker stays asleep

    def loop(fn: Callable[[dict[str, Any]], Any], every: Callable[[], object] | None) -> float:
        feats = FEATURES
        gc.collect()
        p0 = time.process_time_ns()
        for i in range(n):
            fn(feats)
            if every is not None and i % old_batch == old_batch - 1:
                every()
        if every is not None:
            every()
        return (time.process_time_ns() - p0) / n

    def aggregate() -> None:
        RUNTIME.process(close_all=False)

    why = _whylogs_track()
    ratios: dict[str, list[float]] = {"hot": [], "total": [], "otel": []}
    if why is not None:
        ratios["whylogs"] = []
    try:
        loop(monitored, aggregate)  # warm-up
        for _ in range(reps):
            p_ns = loop(prom, None)
            hot_ns = loop(monitored, queue.clear)
            total_ns = loop(monitored, aggregate)
            otel_ns = loop(otel, None)
            ratios["hot"].append(hot_ns / p_ns)
            ratios["total"].append(total_ns / p_ns)
            ratios["otel"].append(otel_ns / total_ns)
            if why is not None:  # ~400 µs a call: a hundredth of the calls
                ratios["whylogs"].append(_cpu_per_call(why, max(n // 100, 200))[1] / total_ns)
        RUNTIME.process(close_all=True)
    finally:
        RUNTIME.batch_size = old_batch
        mlwatch.configure(flush_interval=old_interval)
    return {k: statistics.median(v) for k, v in ratios.items()}


def _with_gaps(reps: int, bursts: int) -> dict[str, float]:
    """Whole-process CPU per call, all threads, when the caller idles between bursts of calls.

    A serving thread waits on I/O between requests; mlwatch's aggregator thread works in those
    gaps, on the other core, so nothing is dropped (a tight loop never lets it keep up). Bursts of
    64 calls, then 0.2 ms asleep; each round measures the bare function, prometheus_client and
    mlwatch (flushed at the end) in the same loop, and each one's cost is its CPU above the bare
    loop's. The figure is the median over rounds of each round's mlwatch / prometheus_client.
    """
    from prometheus_client import CollectorRegistry, Histogram

    prom = Histogram("gaps_seconds", "latency", registry=CollectorRegistry()).time()(_predict)
    monitored = mlwatch.monitor(model="bench_gaps")(_predict)
    burst = 64

    def run(fn: Callable[[dict[str, Any]], Any], flush: bool = False) -> float:
        feats = FEATURES
        gc.collect()
        p0 = time.process_time_ns()
        for _ in range(bursts):
            for _ in range(burst):
                fn(feats)
            time.sleep(0.0002)
        if flush:
            mlwatch.flush()
        return (time.process_time_ns() - p0) / (burst * bursts)

    run(monitored, True)  # warm-up
    dropped = sum(mlwatch.health()["dropped"].values())
    ratios, proms, mons = [], [], []
    for _ in range(reps):
        bare = run(_predict)
        p_ns, m_ns = run(prom) - bare, run(monitored, True) - bare
        proms.append(p_ns)
        mons.append(m_ns)
        ratios.append(m_ns / p_ns)
    return {"prometheus": statistics.median(proms), "mlwatch": statistics.median(mons), "ratio": statistics.median(ratios),
            "dropped": sum(mlwatch.health()["dropped"].values()) - dropped}


def _mlwatch_async(n: int, reps: int) -> tuple[float, dict[str, float]]:
    async def apredict(features: dict[str, Any]) -> float:
        return 0.5

    monitored = mlwatch.monitor(model="bench_async")(apredict)

    async def loop(fn: Callable[[dict[str, Any]], Any]) -> None:
        feats = FEATURES
        for _ in range(n):
            await fn(feats)

    def run(fn: Callable[[dict[str, Any]], Any], flush: bool) -> tuple[float, float]:
        gc.collect()
        p0, t0 = time.process_time_ns(), time.thread_time_ns()
        asyncio.run(loop(fn))
        t1 = time.thread_time_ns()
        if flush:
            mlwatch.flush()
        return (t1 - t0) / n, (time.process_time_ns() - p0) / n

    bare = _median(lambda: run(apredict, False), reps)[1]
    return bare, _rounds(lambda: run(monitored, True), n, reps, {})


def _mlwatch_frames(reps: int) -> tuple[float, float, float]:
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"num_{i}": rng.normal(size=1000) for i in range(10)})
    frame["country"] = rng.choice(["DE", "FR", "IT"], 1000)
    frame["plan"] = rng.choice(["free", "gold"], 1000)

    def predict(x: Any) -> Any:
        return np.zeros(len(x))

    monitored = mlwatch.monitor(model="bench_frame")(predict)
    calls = 200

    def run(fn: Callable[[Any], Any], flush: bool) -> tuple[float, float]:
        gc.collect()
        p0, t0 = time.process_time_ns(), time.thread_time_ns()
        for _ in range(calls):
            fn(frame)
        t1 = time.thread_time_ns()
        if flush:
            mlwatch.flush()
        rows = calls * len(frame)
        return (t1 - t0) / rows, (time.process_time_ns() - p0) / rows

    bare = _median(lambda: run(predict, False), reps)[1]
    hot, total = _median(lambda: run(monitored, True), reps)
    return bare, hot, total


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory(calls: int) -> dict[str, float]:
    """RSS growth over `calls` calls in a tight loop, with the default buffer (the CPU cases above
    use a buffer of a million records so that nothing is dropped: that buffer alone is ~700 MB)."""
    from mlwatch.config import Settings

    mlwatch.configure(buffer_size=Settings().buffer_size)
    monitored = mlwatch.monitor(model="bench_memory")(_predict)
    feats = FEATURES
    for _ in range(200_000):  # warm-up
        monitored(feats)
    mlwatch.flush()
    gc.collect()
    start = _rss_mb()
    peak = start
    for i in range(calls):
        monitored(feats)
        if i % 1_000_000 == 0:
            peak = max(peak, _rss_mb())
    mlwatch.flush()
    gc.collect()
    end = _rss_mb()
    dropped = mlwatch.health()["dropped"].get("buffer_full", 0)
    return {"calls": calls, "rss_start_mb": start, "rss_peak_mb": max(peak, end), "rss_growth_mb": max(peak, end) - start,
            "buffer_size": Settings().buffer_size, "dropped_buffer_full": dropped}


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--memory", action="store_true", help="also measure RSS growth over 10 million calls")
    parser.add_argument("--json", type=Path, help="write results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the results table as Markdown")
    args = parser.parse_args(argv)
    n, reps = (2_000, 1) if args.quick else (200_000, 5)

    exporter = InMemoryExporter()
    mlwatch.configure(exporters=[exporter], buffer_size=1_000_000)
    try:
        base = _baselines(n, reps)
        sync = _mlwatch_sync(n, 7 if not args.quick else 1)
        exporter.clear()
        inline = _mlwatch_inline(n, reps)
        exporter.clear()
        paired = _paired(n // 4, 2 if args.quick else 9)
        exporter.clear()
        gaps = _with_gaps(2 if args.quick else 7, 30 if args.quick else 3000)
        exporter.clear()
        abare, asyn = _mlwatch_async(n, reps)
        exporter.clear()
        fbare, fhot, ftotal = _mlwatch_frames(1 if args.quick else 3)
        exporter.clear()
        memory = _memory(20_000 if args.quick else 10_000_000) if args.memory or args.quick else None
    finally:
        mlwatch.configure(exporters=None)
    calls = sum(p.calls for p in exporter.profiles)
    del calls

    prom = base["prometheus_client Histogram.time()"]
    rows: list[tuple[str, float, str]] = [(name, ns, "") for name, ns in base.items()]
    rows.append(("mlwatch hot path (caller thread)", sync["hot"], f"{sync['hot_ratio']:.2f}x prometheus (goal <= 0.5)"))
    rows.append(("mlwatch total (all threads, incl. flush)", sync["total"], f"{sync['total_ratio']:.2f}x prometheus (goal <= 1.0)"))
    rows.append(("mlwatch total, batches aggregated inline (one thread)", inline, f"{inline / prom:.2f}x prometheus"))
    rows.append(("", float("nan"), f"OTel latency / mlwatch total = {sync['otel']:.1f}x (goal >= 3)"))
    if "whylogs" in sync:
        rows.append(("", float("nan"), f"whylogs / mlwatch total = {sync['whylogs']:.0f}x (goal >= 100)"))
    rows.append(("", float("nan"), f"back-to-back rounds (median of per-round ratios): hot path {paired['hot']:.2f}x prometheus, "
                 f"total on one thread {paired['total']:.2f}x prometheus, OTel latency / that total {paired['otel']:.1f}x"
                 + (f", whylogs / that total {paired['whylogs']:.0f}x" if "whylogs" in paired else "")))
    rows.append(("caller idle between bursts of 64 calls: prometheus_client", gaps["prometheus"], ""))
    rows.append(("caller idle between bursts of 64 calls: mlwatch total (all threads, incl. flush)", gaps["mlwatch"],
                 f"{gaps['ratio']:.2f}x prometheus (median of per-round ratios; {gaps['dropped']} dropped)"))
    rows.append(("async: bare await", abare, ""))
    rows.append(("async: mlwatch hot path", asyn["hot"], f"{asyn['hot_ratio']:.2f}x prometheus"))
    rows.append(("async: mlwatch total", asyn["total"], f"{asyn['total_ratio']:.2f}x prometheus"))
    rows.append(("1,000-row DataFrame, per row: bare", fbare, ""))
    rows.append(("1,000-row DataFrame, per row: mlwatch hot", fhot, ""))
    rows.append(("1,000-row DataFrame, per row: mlwatch total", ftotal, f"{ftotal:.0f} ns/row = {1e9 / ftotal / 1e6:.2f} M rows/s"))

    lines = [f"Machine: {_machine()}; load average at start {os.getloadavg()[0]:.2f}", "",
             "| case | CPU ns per call | ratio |", "|---|---:|---|"]
    for name, ns, note in rows:
        lines.append(f"| {name} | {'' if ns != ns else f'{ns:,.0f}'} | {note} |")
    if memory:
        lines.append("")
        lines.append(
            f"Memory: {memory['calls']:,} calls grew RSS by {memory['rss_growth_mb']:.1f} MB "
            f"(start {memory['rss_start_mb']:.1f} MB, peak {memory['rss_peak_mb']:.1f} MB; goal < 30 MB) with the default "
            f"buffer of {memory['buffer_size']:,} records; in this tight loop {memory['dropped_buffer_full']:,} records were "
            "dropped (counted) when the buffer was full: the caller outruns the aggregator thread's share of the GIL"
        )
    table = "\n".join(lines)
    print(table)
    result = {"machine": _machine(), "rows": [{"case": r[0], "cpu_ns": r[1], "note": r[2]} for r in rows], "memory": memory}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
