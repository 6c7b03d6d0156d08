"""Instructions per monitored call, counted by valgrind's callgrind: a figure other jobs cannot move.

Wall-clock and even CPU-time figures on a shared 2-core machine swing with whatever else runs;
instruction counts of the same binary and inputs repeat exactly. Each variant runs in its own
process under ``valgrind --tool=callgrind`` twice (a short and a long loop, same start-up, fixed
``PYTHONHASHSEED``); the difference divided by the extra calls is the cost of one call:

- bare: the undecorated function; prometheus: ``Histogram.time()``; otel: the OTel SDK's latency
  histogram record;
- mlwatch hot: the caller's side of ``@monitor`` (the buffer is cleared, never aggregated);
- mlwatch total: hot path plus aggregation, each batch (`RUNTIME.batch_size` calls) aggregated on the same thread
  (the aggregator thread's work, without two threads contending for the GIL).

    python benchmarks/bench_monitor_instructions.py            # needs valgrind (Debian: valgrind)

Instructions are not nanoseconds (a cache miss costs many), so ratios are a proxy for CPU cost;
`bench_monitor.py` has the CPU-time figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VARIANTS = ("bare", "prometheus", "otel", "hot", "total")
_SHORT, _LONG = 4096, 36864

_CHILD = r'''
import gc, sys, time
sys.path.insert(0, {root!r})
which, n = sys.argv[1], int(sys.argv[2])
from benchmarks.bench_monitor import FEATURES, _predict
feats = FEATURES
if which == "bare":
    f = _predict
elif which == "prometheus":
    from prometheus_client import CollectorRegistry, Histogram
    f = Histogram("predict_seconds", "latency", registry=CollectorRegistry()).time()(_predict)
elif which == "otel":
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    duration = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench").create_histogram("d", unit="s")
    attrs = {{"model": "m"}}
    def f(features):
        t = time.perf_counter(); r = _predict(features); duration.record(time.perf_counter() - t, attrs); return r
else:
    import mlwatch
    from mlwatch._runtime import RUNTIME
    from mlwatch.testing import InMemoryExporter
    mlwatch.configure(exporters=[InMemoryExporter()], flush_interval=60.0)
    f = mlwatch.monitor(model="instructions")(_predict)
    batch = RUNTIME.batch_size
    RUNTIME.batch_size = 10**9  # the aggregator thread stays asleep: batches are aggregated inline
    queue = f.__mlwatch_recorder__.queue
if which in ("bare", "prometheus", "otel"):
    def run(n):
        for _ in range(n):
            f(feats)
elif which == "hot":
    def run(n):
        for i in range(n):
            f(feats)
            if (i & 1023) == 1023:
                queue.clear()
else:
    def run(n):
        for i in range(n):
            f(feats)
            if i % batch == batch - 1:
                RUNTIME.process(close_all=False)
run(4096)
gc.collect()
gc.disable()
run(n)
'''


def _instructions(python: str, script: Path, variant: str, n: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, str(script), variant, str(n)],
        capture_output=True, text=True, env=env, check=True,
    )
    match = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total for {variant}: {out.stderr[-500:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.realpath(sys.executable), help="interpreter to run (the real binary, not a shim)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    root = Path(__file__).resolve().parent.parent
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlwatch_instructions_{os.getpid()}.py"
    script.write_text(_CHILD.format(root=str(root)))
    per_call: dict[str, int] = {}
    try:
        for v in args.variants:
            short = _instructions(args.python, script, v, _SHORT)
            long = _instructions(args.python, script, v, _LONG)
            per_call[v] = (long - short) // (_LONG - _SHORT)
            print(f"{v:>10}: {per_call[v]:>8,} instructions per call", flush=True)
    finally:
        script.unlink(missing_ok=True)
    prom = per_call.get("prometheus")
    if prom:
        for v in ("hot", "total"):
            if v in per_call:
                print(f"mlwatch {v} / prometheus_client = {per_call[v] / prom:.2f}x")
    if "otel" in per_call and "total" in per_call:
        print(f"OTel latency record / mlwatch total = {per_call['otel'] / per_call['total']:.2f}x")
    return per_call


if __name__ == "__main__":
    main()
