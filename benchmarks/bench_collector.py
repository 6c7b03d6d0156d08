"""Collector benchmark: profiles ingested per second over real OTLP/HTTP, and a day's drift.

Two figures per store (SQLite, and PostgreSQL when ``--postgres DSN`` or
``MLWATCH_TEST_POSTGRES_DSN`` is given), each through a real collector under uvicorn on 127.0.0.1
with one ingest worker:

- ingest: OTLP protobuf requests of `--batch` profiles each (20 and 100 features, a few hundred
  rows per window) to `mlwatch collector` run as its own process (its ingest worker a child of
  it), pinned with taskset to one CPU while the senders run on the others: so the rate is what
  one core ingests. Sent back to back by one sender, then by `--clients` concurrent senders (a
  fleet: each its own instance; one sender leaves the core idle while it waits for each
  answer). profiles/s = stored profiles / wall time; the collector's CPU per profile (server and
  workers, from /proc) is printed too. Once more with the evaluator on: these windows lie in past
  hours, so its background task rolls them up as they arrive, on the same CPU. Every profile goes through the full path: body cap, OTLP
  decode, duplicate check, the worker's checksum + structural validation + native decode, and
  the insert.
- day drift: 1,440 minute windows of a 100-feature model stored for one UTC day, then
  ``GET /api/models/{model}/drift`` for that day against an uploaded reference: cold (a backfill
  queried before the collector's evaluator rolled it up: the hourly and daily rollups are built
  from 1,440 raw rows), warm (the day rollup is fresh: one stored profile; median of `--reps`),
  and after one late window (the day's rollup extended with that row); with one query worker
  and with two (`--query-workers`: a cold day's hours are built on all of them at once). Then
  the backfill again with the evaluator on (its default interval): how long after the last
  request the late hours and their day are rolled up (by the backfill task, as they arrive),
  and the first drift query after that.

Goals (issue 5): >= 500 profiles/s of 20 features on one core; a day's drift for 100 features < 2 s.

    python benchmarks/bench_collector.py                 # full run
    python benchmarks/bench_collector.py --quick         # small sizes, a minute or so
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

if __package__ in (None, ""):  # run as a file: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlwatch
from benchmarks._harness import split_cpus, tree_cpu_seconds, wait_for_quiet
from mlwatch.collector.config import CollectorConfig
from mlwatch.collector.server import build_server

__all__ = ["main"]

DAY = 86400.0 * 20_000  # an aligned UTC day (2024-10-04) for the drift figure


def _profile(n_features: int, rows: int, seed: int, shift: float = 0.0) -> mlwatch.Profile:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(n_features):
        if i % 5 == 4:
            data[f"c{i}"] = rng.choice(["a", "b", "c", "d", "e", "f"], rows).tolist()
        else:
            data[f"f{i}"] = rng.normal(shift, 1.0, rows)
    return mlwatch.profile(data, model=f"bench{n_features}")


def _encode(base: mlwatch.Profile, starts: Sequence[float]) -> list[bytes]:
    out = []
    for ws in starts:
        base.window_start, base.window_end = ws, ws + 60.0
        out.append(base.to_bytes())
    return out


def _otlp(payloads: Sequence[bytes], instance: str) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([
        KeyValue(key="service.name", value=AnyValue(string_value="bench")),
        KeyValue(key="service.instance.id", value=AnyValue(string_value=instance)),
    ])
    sl = rl.scope_logs.add()
    for p in payloads:
        sl.log_records.add(event_name="mlwatch.profile", body=AnyValue(bytes_value=p))
    return bytes(req.SerializeToString())


class _Server:
    def __init__(self, db: str, query_workers: int = 1, evaluate_interval: float = 0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        cfg = CollectorConfig(
            db=db, port=port, evaluate_interval=evaluate_interval, max_body_bytes=256 * 1024 * 1024, query_workers=query_workers
        )
        self.server = build_server(replace(cfg), log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=600)
        self.client.post("/v1/logs", content=_otlp([], "warm"), headers={"content-type": "application/x-protobuf"})
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def _post(client: httpx.Client, body: bytes) -> None:
    r = client.post("/v1/logs", content=body, headers={"content-type": "application/x-protobuf"})
    if r.status_code != 200 or r.content:
        raise RuntimeError(f"ingest failed: {r.status_code} {r.text[:200]}")


class _CollectorProcess:
    """`mlwatch collector` in its own process (its ingest worker is a child of it), optionally on one CPU."""

    def __init__(self, db: str, cpu: int | None, clients: int, evaluate_interval: float = 0) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.cmd = [
            *pin, sys.executable, "-m", "mlwatch.collector", "--db", db, "--port", str(self.port), "--evaluate-interval", str(evaluate_interval),
            "--max-body-bytes", str(256 * 1024 * 1024), "--max-concurrency", str(max(4, clients)), "--log-level", "warning",
        ]

    def __enter__(self) -> _CollectorProcess:
        self.proc = subprocess.Popen(self.cmd)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the collector exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the collector did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_ingest(
    db: str, n_features: int, n_profiles: int, batch: int, clients: int, pin: bool, log: Callable[[str], None], evaluate_interval: float = 0
) -> dict[str, Any]:
    """Profiles/s through a collector process (on one CPU when `pin`), from `clients` concurrent senders
    (a fleet: each its own instance), and the collector's CPU (server + workers) per profile. With
    `evaluate_interval`, the evaluator runs too: these windows are all in past hours, so the
    background task rolls them up while they arrive, in the query worker on the same CPU."""
    payloads = _encode(_profile(n_features, 500, seed=n_features), [60.0 * i for i in range(n_profiles)])
    bodies = [_otlp(payloads[i : i + batch], f"i-{(i // batch) % clients}") for i in range(0, n_profiles, batch)]
    split = split_cpus() if pin else None
    cpu, sender_cpus = (split[0], set(split[1])) if split is not None else (None, None)
    before = os.sched_getaffinity(0) if sender_cpus else None
    with _CollectorProcess(db, cpu, clients, evaluate_interval) as collector:
        url = f"http://127.0.0.1:{collector.port}"
        with httpx.Client(base_url=url, timeout=600) as warm:  # the worker's imports and first decode, untimed
            _post(warm, _otlp(payloads[:batch], "warm-up"))
        if sender_cpus:
            os.sched_setaffinity(0, sender_cpus)
        try:
            queue = list(reversed(bodies))
            lock = threading.Lock()
            failures: list[BaseException] = []

            def send() -> None:
                with httpx.Client(base_url=url, timeout=600) as client:
                    while True:
                        with lock:
                            if not queue:
                                return
                            body = queue.pop()
                        try:
                            _post(client, body)
                        except BaseException as exc:  # reported after the run
                            failures.append(exc)
                            return

            senders = [threading.Thread(target=send) for _ in range(clients)]
            c0, t0 = tree_cpu_seconds(collector.proc.pid), time.perf_counter()
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            wall, used = time.perf_counter() - t0, tree_cpu_seconds(collector.proc.pid) - c0
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
        if failures:
            raise RuntimeError(f"ingest failed: {failures[0]}")
        stored = httpx.get(f"{url}/health", timeout=60).json()["stored"]["profiles"]
    if stored != n_profiles + min(batch, n_profiles):
        raise RuntimeError(f"stored {stored} of {n_profiles} (+ the warm-up's)")
    rate = n_profiles / wall
    where = f"collector pinned to CPU {cpu}" if cpu is not None else "collector unpinned"
    rolling = f", evaluator on ({evaluate_interval:g} s): late hours rolled up meanwhile" if evaluate_interval else ""
    log(f"  ingest {n_features:>3} features, {clients} sender(s){rolling}: {rate:8.0f} profiles/s  ({n_profiles} profiles of {len(payloads[0]) / 1024:.0f} KiB, "
        f"{batch} per request, {wall:.2f} s wall; {where}; collector CPU (server + workers) {used / n_profiles * 1e3:.2f} ms per profile)")
    return {
        "features": n_features, "profiles": n_profiles, "profile_bytes": len(payloads[0]), "clients": clients, "pinned_cpu": cpu,
        "evaluate_interval": evaluate_interval, "seconds": wall, "profiles_per_second": rate, "collector_cpu_ms_per_profile": used / n_profiles * 1e3,
    }


def _day_payloads(n_windows: int) -> tuple[list[bytes], bytes, list[mlwatch.Profile]]:
    """A day of 100-feature minute windows (four alternating bases), a reference, and the bases."""
    bases = [_profile(100, 300, seed=s) for s in range(4)]
    starts = [DAY + 60.0 * i for i in range(n_windows)]
    payloads = [p for j, base in enumerate(bases) for p in _encode(base, starts[j::4])]
    ref = _profile(100, 5000, seed=99, shift=0.1)
    ref.model = "bench100"
    return payloads, ref.to_bytes(), bases


def _timed_drift(client: httpx.Client) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = client.get("/api/models/bench100/drift", params={"start": DAY, "end": DAY + 86400.0})
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"drift failed: {r.status_code} {r.text[:300]}")
    body: dict[str, Any] = r.json()
    return elapsed, body


def bench_day_drift(db: str, n_windows: int, reps: int, query_workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    payloads, ref, bases = _day_payloads(n_windows)
    with _Server(db, query_workers) as client:
        for i in range(0, len(payloads), 100):
            _post(client, _otlp(payloads[i : i + 100], "i-1"))
        assert client.put("/api/models/bench100/reference", content=ref).status_code == 201
        cold, body = _timed_drift(client)
        n_cols = body["drift"]["n_columns"]
        warm = statistics.median(_timed_drift(client)[0] for _ in range(reps))
        # One late window (another replica catching up) in one hour: the day's rollup is merged
        # with that one row (extended), not rebuilt from its hours.
        late_ws = DAY + 60.0 * min(n_windows - 1, 300)
        _post(client, _otlp(_encode(bases[0], [late_ws]), "i-late"))
        late = _timed_drift(client)[0]
    log(f"  day drift, {n_cols} features over {n_windows} windows, {query_workers} query worker(s): cold {cold:6.2f} s "
        f"(backfill queried before any rollup), warm {warm:5.2f} s, after one late window {late:5.2f} s")
    return {
        "windows": n_windows, "features": n_cols, "query_workers": query_workers, "cold_seconds": cold, "warm_seconds": warm,
        "late_window_seconds": late,
    }


def _metric(client: httpx.Client, name: str) -> float:
    """One unlabelled sample from the collector's Prometheus text."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} not on /metrics")


def bench_background_rollup(db: str, n_windows: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The same backfill with the evaluator on, as configured by default (one query worker): how long
    after the last request the late hours and the day are rolled up, and what the first drift query then takes."""
    payloads, ref, _ = _day_payloads(n_windows)
    interval = CollectorConfig().evaluate_interval
    with _Server(db, 1, evaluate_interval=interval) as client:
        assert client.put("/api/models/bench100/reference", content=ref).status_code == 201
        t0 = time.perf_counter()
        for i in range(0, len(payloads), 100):
            _post(client, _otlp(payloads[i : i + 100], "i-1"))
        sent = time.perf_counter()
        written, changed = -1, sent
        while time.perf_counter() - changed < 5.0:  # settled: no rollup written (built or extended) for 5 s
            now_written = _metric(client, "mlwatch_collector_rollups_built_total")
            if now_written != written:
                written, changed = now_written, time.perf_counter()
            time.sleep(0.1)
        rollups = client.get("/health").json()["stored"]["rollups"]
        first, _ = _timed_drift(client)
    lag = max(0.0, changed - sent)
    log(f"  day drift after a backfill rolled up in the background: backfill sent in {sent - t0:5.2f} s, rolled up "
        f"{lag:5.2f} s after the last request ({rollups} rollups, {written:.0f} writes; evaluator every {interval:g} s), then the first query {first:5.2f} s")
    return {"windows": n_windows, "evaluate_interval": interval, "backfill_seconds": sent - t0, "rolled_up_after_seconds": lag,
            "rollups": rollups, "rollup_writes": written, "first_query_seconds": first}


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--profiles", type=int, default=None, help="profiles per ingest run (default 2000, quick 200)")
    parser.add_argument("--batch", type=int, default=50, help="profiles per OTLP request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders in the fleet run (the single-sender run is measured too)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the collector to one CPU and the senders to the others")
    parser.add_argument("--windows", type=int, default=None, help="windows in the day (default 1440, quick 120)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--query-workers", type=int, nargs="+", default=[1, 2],
                        help="the day's drift is measured with each of these numbers of query workers (default 1 and 2)")
    parser.add_argument("--only", choices=["ingest", "drift"], help="measure only ingest or only the day's drift")
    parser.add_argument("--postgres", default=os.environ.get("MLWATCH_TEST_POSTGRES_DSN"), help="PostgreSQL DSN (else SQLite only)")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for the 1-minute load to drop below this first")
    parser.add_argument("--max-wait", type=float, default=180.0, help="seconds to wait for that at most (0: do not wait)")
    args = parser.parse_args(argv)
    if args.max_wait > 0 and not args.quick:
        wait_for_quiet(args.max_load, args.max_wait, log=log)
    n_profiles = args.profiles or (200 if args.quick else 2000)
    n_windows = args.windows or (120 if args.quick else 1440)
    log(f"mlwatch collector benchmark (load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs)")
    results: dict[str, Any] = {}
    stores: list[tuple[str, Callable[[], tuple[str, Callable[[], None]]]]] = [("sqlite", _sqlite)]
    if args.postgres:
        stores.append(("postgresql", lambda: _postgres(args.postgres)))
    for name, make in stores:
        log(f"{name}:")
        out: dict[str, Any] = {"ingest": [], "day_drift": [], "background_rollup": None}
        runs = ((20, 1, 0.0), (20, args.clients, 0.0), (20, args.clients, 60.0), (100, args.clients, 0.0))
        for n_features, clients, interval in runs if args.only != "drift" else ():
            db, cleanup = make()
            try:
                n = n_profiles if n_features == 20 else n_profiles // 2
                out["ingest"].append(bench_ingest(db, n_features, n, args.batch, clients, not args.no_pin, log, interval))
            finally:
                cleanup()
        for query_workers in args.query_workers if args.only != "ingest" else ():
            db, cleanup = make()
            try:
                out["day_drift"].append(bench_day_drift(db, n_windows, args.reps, query_workers, log))
            finally:
                cleanup()
        if args.only != "ingest":
            db, cleanup = make()
            try:
                out["background_rollup"] = bench_background_rollup(db, n_windows, log)
            finally:
                cleanup()
        results[name] = out
    return results


def _sqlite() -> tuple[str, Callable[[], None]]:
    tmp = tempfile.TemporaryDirectory()
    return os.path.join(tmp.name, "bench.db"), tmp.cleanup


def _postgres(dsn: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}", drop


if __name__ == "__main__":
    main(sys.argv[1:])
