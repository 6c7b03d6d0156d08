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

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import callgrind_args, callgrind_per_item

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


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = callgrind_args(argv, __doc__, VARIANTS)
    per_call = callgrind_per_item(args.python, _CHILD, dict.fromkeys(args.variants, (_SHORT, _LONG)), "call")
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
