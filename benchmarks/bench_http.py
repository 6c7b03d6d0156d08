"""HTTP overhead: the same trivial FastAPI app under uvicorn, plain, with mlwatch, and with OpenTelemetry.

What: three uvicorn servers on loopback serve one model endpoint (``POST /predict``, a small JSON
body in, a small JSON answer out): ``plain`` (no instrumentation), ``mlwatch``
(`mlwatch.integrations.fastapi.instrument_app` with ``/predict`` as a model route: request
telemetry plus the model's features and outputs) and ``otel`` (the official
``opentelemetry-instrumentation-fastapi`` with SDK tracer and meter providers whose exporters
drop everything, so what is measured is the in-process cost). wrk (Debian's ``wrk``) drives each
server with the same closed-loop load in interleaved rounds whose order alternates (plain,
mlwatch, otel, then otel, mlwatch, plain, ...), so slow drifts of a shared machine hit every
variant alike. Each variant's latency and rate are medians over rounds; each added latency is the
median over rounds of the ratio to the plain run of the same round. The 1-minute load average is
recorded before and after. Each server runs on its own CPU and wrk on the other (``taskset``;
``--no-pin`` to let the scheduler decide): unpinned on 2 cores, a server sometimes shares a core
with wrk and its latency doubles, which swamps the differences measured here. A second, in-process measurement calls the three apps directly (no
server, no network) in alternating batches, with mlwatch's aggregation and OpenTelemetry's span
export flushed inside each batch: the added microseconds per request, which a shared machine's
noise disturbs far less than end-to-end latencies.

Why closed loop: with a fixed number of connections, latency is per-request server work plus
queueing, so the latency ratio is the added CPU per request, which is what the middleware costs.

Run: ``python benchmarks/bench_http.py`` (about three minutes; ``--quick`` for a smoke run; writes
``benchmarks/results/http.{json,md}`` unless ``--no-write``). Servers are started and stopped by
the harness (the same file is the app module: ``uvicorn --factory benchmarks.bench_http:create_plain``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import (
    load_average,
    machine_info,
    render_markdown,
    render_text,
    split_cpus,
    tree_cpu_seconds,
    wait_for_quiet,
    write_results,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = ["VARIANTS", "create_mlwatch", "create_otel", "create_plain", "main", "parse_wrk"]

VARIANTS = ("plain", "mlwatch", "otel")
BODY = {"amount": 42.5, "country": "DE", "age": 37, "device": "ios", "items": 3, "new_user": False}


# --------------------------------------------------------------------------- the apps (run inside uvicorn)
def _app() -> Any:
    from fastapi import FastAPI, Request

    app = FastAPI()

    async def predict(request: Request) -> dict[str, Any]:
        features = await request.json()
        score = min(1.0, float(features.get("amount", 0.0)) / 100.0)
        return {"score": score, "label": "fraud" if score > 0.5 else "ok"}

    # This module's annotations are strings (PEP 563) and `Request` is a local name FastAPI cannot
    # resolve from the module's globals: unresolved, it took `request` for a required query
    # parameter and answered every request 422. Give it the class itself.
    predict.__annotations__["request"] = Request
    app.post("/predict")(predict)
    return app


def create_plain() -> Any:
    """The app without instrumentation."""
    return _app()


def create_mlwatch() -> Any:
    """The app with mlwatch's middleware and ``/predict`` as the model route of ``fraud``."""
    import mlwatch
    from mlwatch.integrations.fastapi import instrument_app

    mlwatch.configure(data_dir=os.environ.get("BENCH_MLWATCH_DIR", tempfile.mkdtemp(prefix="mlwatch-bench-")))
    app = _app()
    instrument_app(app, model_routes={"/predict": "fraud"})
    return app


def create_otel() -> Any:
    """The app with opentelemetry-instrumentation-fastapi and SDK providers that export nowhere."""
    from collections.abc import Sequence as Seq

    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DropSpans(SpanExporter):
        def export(self, spans: Seq[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=60_000)])
    app = _app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    app._mlwatch_bench_tracer = tracer_provider  # the in-process measurement flushes its spans
    return app


# --------------------------------------------------------------------------- the harness
_WRK_LATENCY = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:.*", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_wrk(text: str) -> dict[str, float]:
    """wrk's ``--latency`` report: p50/p75/p90/p99 in seconds and requests per second."""
    out = {f"p{q}": float(v) * _UNIT[u] for q, v, u in _WRK_LATENCY.findall(text)}
    rate = _WRK_RATE.search(text)
    if rate is None or "p50" not in out or "p99" not in out:
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    out["rps"] = float(rate.group(1))
    bad = _WRK_ERRORS.search(text)
    if bad:  # a benchmark of error answers measures the wrong thing
        raise RuntimeError(f"wrk saw failed requests ({bad.group(0).strip()}):\n{text}")
    out["errors"] = 0.0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinning(pin: bool) -> tuple[list[str], list[str]]:
    """Command prefixes putting the servers on the last CPU and wrk on the others (when possible)."""
    split = split_cpus() if pin else None
    if split is None:
        return [], []
    server, rest = split
    return ["taskset", "-c", str(server)], ["taskset", "-c", ",".join(map(str, rest))]


def _start(variant: str, log_dir: Path, prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["BENCH_MLWATCH_DIR"] = str(log_dir / "mlwatch-data")
    cmd = [
        *prefix, sys.executable, "-m", "uvicorn", f"benchmarks.bench_http:create_{variant}", "--factory", "--app-dir", str(ROOT),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]
    with open(log_dir / f"{variant}.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{variant} server exited: {(log_dir / f'{variant}.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{variant} server did not start")


_WRK_COUNT = re.compile(r"^\s*(\d+) requests in ", re.M)


def _wrk(port: int, seconds: int, connections: int, script: Path, prefix: Sequence[str] = (), server_pid: int | None = None) -> dict[str, float]:
    """One wrk run; with `server_pid`, also the server's CPU µs per request (every thread: the app,
    the event loop, mlwatch's aggregator), a figure a shared machine's other jobs barely move."""
    cmd = [*prefix, "wrk", "-t1", f"-c{connections}", f"-d{max(1, seconds)}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/predict"]
    measure_cpu = server_pid is not None and os.path.isdir("/proc")
    cpu0 = tree_cpu_seconds(server_pid) if measure_cpu else 0.0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    cpu1 = tree_cpu_seconds(server_pid) if measure_cpu else 0.0
    out = parse_wrk(done.stdout)
    count = _WRK_COUNT.search(done.stdout)
    if measure_cpu and count is not None and int(count.group(1)):
        out["cpu_us"] = (cpu1 - cpu0) / int(count.group(1)) * 1e6
    return out


def inprocess(apps: dict[str, Any], *, batches: int, per_batch: int, flush: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """Seconds per request of each ASGI app called directly (no server, no network), batch by batch.

    Each batch sends `per_batch` copies of the benchmark request through the app, then runs the
    variant's `flush` (mlwatch: aggregate everything buffered; OpenTelemetry: hand the spans to
    the exporter), so background work is paid inside the batch that caused it. Variants take turns
    batch by batch; on a shared machine the minimum over batches is the least disturbed figure.
    """
    import asyncio

    body = json.dumps(BODY, separators=(",", ":")).encode()
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"the benchmark app answered {message['status']}")

    async def run(app: Any) -> None:
        for _ in range(per_batch):
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": headers,
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            }
            await app(scope, receive, send)

    out: dict[str, list[float]] = {v: [] for v in apps}
    loop = asyncio.new_event_loop()
    try:
        for v, app in apps.items():  # warm-up: build the middleware stacks, fill the caches
            loop.run_until_complete(run(app))
            flush.get(v, lambda: None)()
        for _ in range(batches):
            for v, app in apps.items():
                t0 = time.perf_counter()
                loop.run_until_complete(run(app))
                flush.get(v, lambda: None)()
                out[v].append((time.perf_counter() - t0) / per_batch)
    finally:
        loop.close()
    return out


def mlwatch_health() -> dict[str, Any]:
    """mlwatch's own counters in this process (internal errors must stay empty for a fair figure)."""
    import mlwatch

    return mlwatch.health()


def _overhead(value: float, base: float) -> float:
    return value / base - 1.0


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; returns (and unless ``--no-write`` writes) the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration per round and variant (whole seconds)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2, help="untimed wrk run per variant first (whole seconds)")
    ap.add_argument("--inprocess-batches", type=int, default=15, help="batches of the in-process measurement (0: skip it)")
    ap.add_argument("--inprocess-requests", type=int, default=2000, help="requests per in-process batch")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the servers to one CPU and wrk to the others")
    ap.add_argument("--quick", action="store_true", help="1 s rounds, 1 round, no waiting, nothing written")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-minute load to drop below this first")
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.warmup, args.max_wait, args.no_write = 1, 1, 1, 0.0, True
        args.inprocess_batches, args.inprocess_requests = min(args.inprocess_batches, 2), 200
    load_before = wait_for_quiet(args.max_load, args.max_wait, log=log) if args.max_wait > 0 else load_average()[0]
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        tmp_dir = Path(tmp)
        script = tmp_dir / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(BODY, separators=(',', ':')))}\n"
        )
        server_cpu, wrk_cpu = _pinning(not args.no_pin)
        servers = {v: _start(v, tmp_dir, server_cpu) for v in VARIANTS}
        try:
            for v in VARIANTS:
                _wrk(servers[v][1], args.warmup, args.connections, script, wrk_cpu)
            rounds: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                for v in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):  # ABC, CBA, ...: drifts hit all alike
                    got = _wrk(servers[v][1], args.seconds, args.connections, script, wrk_cpu, servers[v][0].pid)
                    rounds[v].append(got)
                    cpu = f"  server CPU {got['cpu_us']:.0f} us/request" if "cpu_us" in got else ""
                    log(f"round {r + 1} {v:8s} p50 {got['p50'] * 1e3:.3f} ms  p99 {got['p99'] * 1e3:.3f} ms  {got['rps']:.0f} req/s{cpu}")
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _ in servers.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    direct: dict[str, list[float]] = {}
    if args.inprocess_batches > 0:
        from mlwatch._runtime import RUNTIME

        apps = {"plain": create_plain(), "mlwatch": create_mlwatch(), "otel": create_otel()}
        otel_flush = getattr(getattr(apps["otel"], "_mlwatch_bench_tracer", None), "force_flush", None)
        # mlwatch: what its aggregator thread does every flush interval (drain, aggregate), now
        flushes: dict[str, Callable[[], object]] = {"mlwatch": lambda: RUNTIME.process(close_all=False)}
        if callable(otel_flush):
            flushes["otel"] = otel_flush
        direct = inprocess(apps, batches=args.inprocess_batches, per_batch=args.inprocess_requests, flush=flushes)
        health = mlwatch_health()
        if health["internal_errors"] or health["aggregated_records"] == 0:
            log(f"WARNING: mlwatch did not aggregate cleanly during the in-process run: {health}")
        for v in VARIANTS:
            log(f"in-process {v:8s} min {min(direct[v]) * 1e6:.1f} us  median {statistics.median(direct[v]) * 1e6:.1f} us per request")
    load_after = load_average()[0]
    summary: dict[str, dict[str, float]] = {}
    for v, rs in rounds.items():
        summary[v] = {k: statistics.median(x[k] for x in rs) for k in ("p50", "p75", "p90", "p99", "rps")}
        summary[v]["errors"] = max(x["errors"] for x in rs)
        if all("cpu_us" in x for x in rs):
            summary[v]["cpu_us"] = statistics.median(x["cpu_us"] for x in rs)
    # Overheads are medians of per-round ratios: each variant against the plain run of its own round.
    over = {
        v: {q: statistics.median(_overhead(a[q], b[q]) for a, b in zip(rounds[v], rounds["plain"], strict=True)) for q in ("p50", "p99")}
        for v in VARIANTS if v != "plain"
    }
    vs_otel = {
        q: (over["mlwatch"][q] / over["otel"][q]) if over["otel"][q] > 0 else float("nan") for q in ("p50", "p99")
    }
    has_cpu = all("cpu_us" in summary[v] for v in VARIANTS)
    headers = ["variant", "median", "p99", "req/s", "added to median", "added to p99", *(["server CPU per request", "added CPU"] if has_cpu else [])]
    rows = []
    for v in VARIANTS:
        s = summary[v]
        added = ("", "") if v == "plain" else (f"{over[v]['p50'] * 100:+.1f}%", f"{over[v]['p99'] * 100:+.1f}%")
        cpu: list[str] = []
        if has_cpu:
            base = summary["plain"]["cpu_us"]
            cpu = [f"{s['cpu_us']:.0f} us", "" if v == "plain" else f"{s['cpu_us'] - base:+.0f} us ({(s['cpu_us'] / base - 1) * 100:+.1f}%)"]
        rows.append([v, f"{s['p50'] * 1e3:.3f} ms", f"{s['p99'] * 1e3:.3f} ms", f"{s['rps']:.0f}", *added, *cpu])
    note = (
        f"Added latency: median over rounds of each round's ratio to plain. "
        f"Server CPU: the server process's user + system time (all threads, mlwatch's aggregator included) over wrk's request count, median over rounds. "
        f"mlwatch overhead / OpenTelemetry overhead: median {vs_otel['p50']:.2f}x, p99 {vs_otel['p99']:.2f}x. "
        f"uvicorn (h11, asyncio), 1 process{', pinned to its own CPU (taskset), wrk on the other' if server_cpu else ''}; wrk -t1 -c{args.connections}, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per variant, medians over rounds; load average {load_before:.2f} before, {load_after:.2f} after."
    )
    added_us: dict[str, dict[str, float]] = {}
    if direct:
        base_min, base_med = min(direct["plain"]), statistics.median(direct["plain"])
        for v in VARIANTS:
            if v != "plain":
                added_us[v] = {"min": (min(direct[v]) - base_min) * 1e6, "median": (statistics.median(direct[v]) - base_med) * 1e6}
        ratio = added_us["mlwatch"]["min"] / added_us["otel"]["min"] if added_us["otel"]["min"] > 0 else float("nan")
        note += (
            f" In-process (the app called directly, no server: {args.inprocess_batches} batches of {args.inprocess_requests} requests, "
            f"background work flushed inside each batch): plain {min(direct['plain']) * 1e6:.1f} us per request; mlwatch adds "
            f"{added_us['mlwatch']['min']:.1f} us (median over batches {added_us['mlwatch']['median']:.1f} us), OpenTelemetry adds "
            f"{added_us['otel']['min']:.1f} us ({added_us['otel']['median']:.1f} us): mlwatch/OpenTelemetry {ratio:.2f}x; "
            f"that is {added_us['mlwatch']['min'] * summary['plain']['rps'] / 1e6 * 100:.1f}% of the plain server's time per request "
            f"under wrk (1 / {summary['plain']['rps']:.0f} req/s), which is what a closed loop adds to every latency percentile."
        )
    log(render_text(headers, rows))
    log(note)
    payload = {
        "benchmark": "http",
        "machine": machine_info(["mlwatch", "fastapi", "starlette", "uvicorn", "opentelemetry-sdk", "opentelemetry-instrumentation-fastapi"], ROOT),
        "settings": {"pinned": bool(server_cpu), "seconds": args.seconds, "rounds": args.rounds, "connections": args.connections, "warmup": args.warmup, "body": BODY},
        "load_average": {"before": load_before, "after": load_after},
        "rounds": rounds,
        "summary": summary,
        "overhead": over,
        "mlwatch_vs_otel_overhead": vs_otel,
        "inprocess_seconds_per_request": direct,
        "inprocess_added_us": added_us,
        "inprocess_mlwatch_health": mlwatch_health() if direct else None,
    }
    if not args.no_write:
        md = "### HTTP overhead (FastAPI under uvicorn, wrk)\n\n" + render_markdown(headers, rows) + "\n" + note + "\n"
        paths = write_results(args.out_dir, "http", payload, md)
        log(f"wrote {paths[0]} and {paths[1]}")
    return payload


if __name__ == "__main__":
    main()
