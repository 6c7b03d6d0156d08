"""Instructions per HTTP request of the ASGI middleware, counted by valgrind's callgrind.

Why: on this shared 2-core virtual machine the CPU time of the same request loop swings by up to
2x within minutes, far more than the differences being tuned; instruction counts of the same
binary and inputs repeat. Each variant runs in its own process under ``valgrind --tool=callgrind``
twice (a short and a long loop, same start-up, fixed ``PYTHONHASHSEED``); the difference divided
by the extra requests is the cost of one request. The request is `bench_http_cpu`'s model route
(``POST /predict``, a small JSON body in, a small JSON answer out) called in-process on the minimal
ASGI app, so the figures are the middleware's own work, without a server:

- bare: the app alone;
- path: wrapped in `MlwatchASGIMiddleware` with ``/predict`` as a model route, the buffers cleared
  unread (what a request costs on the server's thread);
- total: the same, each batch aggregated on the same thread (the aggregator thread's work too);
- otel: wrapped in OpenTelemetry's ASGI middleware (what ``opentelemetry-instrumentation-fastapi``
  installs) with SDK tracer and meter providers whose exporters drop everything.

    python benchmarks/bench_http_instructions.py     # needs valgrind (Debian: valgrind)

Instructions are not nanoseconds (a cache miss costs many): a proxy for CPU cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import callgrind_args, callgrind_per_item

VARIANTS = ("bare", "path", "total", "otel")
#: (short, long) loop lengths: the long loop's extra requests are what is counted. OpenTelemetry's
#: requests cost ~20x mlwatch's, so fewer of them give as stable a figure in a tolerable time.
_LOOPS = {"bare": (2048, 10240), "path": (2048, 10240), "total": (2048, 10240), "otel": (512, 2560)}

_CHILD = r'''
import asyncio, gc, sys, tempfile
sys.path.insert(0, {root!r})
from benchmarks import bench_http_cpu as b
which, n = sys.argv[1], int(sys.argv[2])
app = b.bare_asgi
clear = aggregate = None
if which in ("path", "total"):
    import mlwatch
    from mlwatch._runtime import RUNTIME
    from mlwatch.integrations.asgi import MlwatchASGIMiddleware
    from mlwatch.testing import InMemoryExporter
    mlwatch.configure(exporters=[InMemoryExporter()], flush_interval=60.0)
    batch = RUNTIME.batch_size
    RUNTIME.batch_size = 10**9  # the aggregator thread stays asleep: batches are handled inline
    app = MlwatchASGIMiddleware(b.bare_asgi, model_routes={{"/predict": "fraud"}})
    if which == "path":
        def clear():
            for rec in RUNTIME.recorders:
                rec.queue.clear()
    else:
        def clear():
            RUNTIME.process(close_all=False)
elif which == "otel":
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    tracer_provider = TracerProvider()
    spans = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = OpenTelemetryMiddleware(b.bare_asgi, tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    batch = 1024
    def clear():
        spans.clear()
step = 1024 if clear is None or which == "path" or which == "otel" else batch
def run(n):
    done = 0
    while done < n:
        k = min(step, n - done)
        b._asgi_loop(app, "POST /predict", k)()
        if clear is not None:
            clear()
        done += k
run(512 if which == "otel" else 2048)
gc.collect()
gc.disable()
run(n)
'''


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = callgrind_args(argv, __doc__, VARIANTS)
    per_request = callgrind_per_item(args.python, _CHILD, {v: _LOOPS[v] for v in args.variants}, "request")
    bare = per_request.get("bare")
    if bare is not None:
        for v in ("path", "total", "otel"):
            if v in per_request:
                print(f"{v} adds {per_request[v] - bare:,} instructions per request")
        if "total" in per_request and "otel" in per_request and per_request["otel"] > bare:
            print(f"mlwatch total / OpenTelemetry, added instructions = {(per_request['total'] - bare) / (per_request['otel'] - bare):.2f}x")
    return per_request


if __name__ == "__main__":
    main()
