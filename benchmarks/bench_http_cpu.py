"""CPU per request of the HTTP middleware, in-process: no server, no network, no wall clock.

What: a minimal ASGI app (reads its body, sets ``scope["route"]`` as Starlette's router does,
answers a small JSON body) and a minimal WSGI app are called directly in a loop, bare and wrapped
in mlwatch's middleware, for two kinds of request: ``GET /items/{id}`` (request telemetry only)
and ``POST /predict`` (a model route: request telemetry plus the model's features and outputs).
For each it reports, in CPU microseconds per request:

- ``request path``: the calling thread's CPU time (``time.thread_time``) with the middleware
  minus without it: what a request pays, on the server's thread;
- ``aggregation``: the CPU time of mlwatch's background work for those requests (draining the
  buffers and folding them into window profiles), run on the calling thread right after the loop
  with the aggregator thread held off, so nothing of it leaks into the request path figure.

Why CPU time: on a shared 2-core machine wall-clock latencies swing by tens of percent with other
jobs; a thread's CPU time does not (min over repetitions). The latency goal itself (≤ 5 % added
under uvicorn) is `bench_http.py`'s, run at a quiet moment.

Run: ``python benchmarks/bench_http_cpu.py`` (~20 s; ``--requests``, ``--reps``, ``--profile``
to print a cProfile of the wrapped ASGI loop).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["main"]

BODY = json.dumps({"amount": 42.5, "country": "DE", "age": 37, "device": "ios", "items": 3, "new_user": False}, separators=(",", ":")).encode()
ANSWER = json.dumps({"score": 0.425, "label": "ok"}, separators=(",", ":")).encode()
KINDS = ("GET /items/{id}", "POST /predict")


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path


_ROUTES = {"/items/7": _Route("/items/{id}"), "/predict": _Route("/predict")}
_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]}
_BODY_MSG = {"type": "http.response.body", "body": ANSWER, "more_body": False}


async def bare_asgi(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
    """The least an ASGI app does: route, read the body of a POST, answer JSON."""
    scope["route"] = _ROUTES[scope["path"]]
    if scope["method"] == "POST":
        await receive()
    await send(_START)
    await send(_BODY_MSG)


def bare_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The least a WSGI app does: route, read the body of a POST, answer JSON."""
    environ["mlwatch.route"] = _ROUTES[environ["PATH_INFO"]].path
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]


def _asgi_loop(app: Any, kind: str, n: int) -> Callable[[], None]:
    post = kind.startswith("POST")
    path = "/predict" if post else "/items/7"
    headers = [(b"host", b"bench"), (b"user-agent", b"bench")]
    if post:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    request = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        return None

    async def run() -> None:
        for _ in range(n):
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST" if post else "GET",
                "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            }
            await app(scope, receive, send)

    loop = asyncio.new_event_loop()

    def go() -> None:
        loop.run_until_complete(run())

    return go


def _wsgi_loop(app: Any, kind: str, n: int) -> Callable[[], None]:
    import io

    post = kind.startswith("POST")
    path = "/predict" if post else "/items/7"

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        return lambda data: None

    def go() -> None:
        for _ in range(n):
            environ = {
                "REQUEST_METHOD": "POST" if post else "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                "SERVER_NAME": "bench", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(BODY if post else b""), "CONTENT_LENGTH": str(len(BODY)) if post else "",
                "HTTP_HOST": "bench",
            }
            if post:
                environ["CONTENT_TYPE"] = "application/json"
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return go


def _cpu(go: Callable[[], None], n: int, reps: int, after: Callable[[], float] | None = None) -> tuple[float, float]:
    """(min request-path µs, min aggregation µs) per request over `reps` runs of `go`."""
    path, agg = [], []
    for _ in range(reps):
        t0 = time.thread_time()
        go()
        path.append((time.thread_time() - t0) / n * 1e6)
        if after is not None:
            agg.append(after() / n * 1e6)
    return min(path), (min(agg) if agg else 0.0)


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Measure; returns {"asgi GET ...": {"bare": µs, "request_path": µs, "aggregation": µs}, ...}."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=5000, help="requests per repetition")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the wrapped ASGI loops")
    args = ap.parse_args(argv)

    import mlwatch
    from mlwatch._runtime import RUNTIME

    previous, batch_size = RUNTIME.settings, RUNTIME.batch_size
    data_dir = tempfile.TemporaryDirectory(prefix="mlwatch-cpu-")
    mlwatch.configure(data_dir=data_dir.name, flush_interval=60.0, buffer_size=10 * args.requests)
    RUNTIME.batch_size = 1 << 60  # the aggregator thread sleeps: its work is measured apart, below
    try:
        return _measure(args, log)
    finally:
        RUNTIME.flush()
        RUNTIME.configure(previous)
        RUNTIME.restart()
        RUNTIME.batch_size = batch_size
        data_dir.cleanup()


def _measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    import mlwatch
    from mlwatch._runtime import RUNTIME
    from mlwatch.integrations.asgi import MlwatchASGIMiddleware
    from mlwatch.integrations.wsgi import MlwatchWSGIMiddleware

    errors_before = dict(mlwatch.health()["internal_errors"])
    routes = {"/predict": "fraud"}
    apps = {
        "asgi": (bare_asgi, MlwatchASGIMiddleware(bare_asgi, model_routes=routes), _asgi_loop),
        "wsgi": (bare_wsgi, MlwatchWSGIMiddleware(bare_wsgi, model_routes=routes), _wsgi_loop),
    }

    def aggregate() -> float:
        t0 = time.thread_time()
        RUNTIME.process(close_all=False)
        return time.thread_time() - t0

    n = args.requests
    out: dict[str, dict[str, float]] = {}
    for name, (bare, wrapped, loop_of) in apps.items():
        for kind in KINDS:
            plain_go, watched_go = loop_of(bare, kind, n), loop_of(wrapped, kind, n)
            plain_go(), watched_go(), aggregate()  # warm-up
            base, _ = _cpu(plain_go, n, args.reps)
            with_mw, agg = _cpu(watched_go, n, args.reps, aggregate)
            out[f"{name} {kind}"] = {"bare": base, "request_path": with_mw - base, "aggregation": agg}
            log(f"{name} {kind:16s} bare app {base:6.2f} µs   + middleware on the request path {with_mw - base:6.2f} µs   + aggregation {agg:6.2f} µs  (CPU per request)")
            if args.profile and name == "asgi":
                prof = cProfile.Profile()
                prof.runcall(watched_go)
                pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    errors = {k: n - errors_before.get(k, 0) for k, n in mlwatch.health()["internal_errors"].items() if n != errors_before.get(k, 0)}
    if errors:
        log(f"WARNING: mlwatch counted internal errors during the run: {errors}")
    return out


if __name__ == "__main__":
    main()
