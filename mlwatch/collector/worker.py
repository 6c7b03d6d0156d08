"""The supervised worker processes that run every native sketch operation.

datasketches' deserializers and merges are C++ code; a payload that slips past the Python
validators could crash the process that runs them. So the HTTP server never calls them: it sends
bytes to a worker process through a pipe and waits with a timeout. When the worker dies (a
segfault, an abort) or overruns its timeout, the supervisor counts it, starts a fresh process and
fails only that one call with `WorkerCrashed`/`WorkerTimeout`; the server keeps serving.

Workers are started with the ``spawn`` method (no inherited threads or locks) and are stateless:
every call carries the bytes it needs and returns plain data (dicts, bytes), so a restart loses
nothing but the call in flight. Operations (`OPS`): ``ingest`` (validate and decode one untrusted
profile, return its identity; ``ingest_batch`` for a request's records at once), ``describe`` (the same for an uploaded reference), ``merge`` (stored parts into one profile's bytes), ``summary``,
``drift``, ``quality`` (over merged parts, against merged reference parts) and the per-window
``drift_windows``/``quality_windows``; for alert rules, ``alert_metrics`` (every alertable metric
of each window), ``calibrate`` (thresholds from reference windows) and ``health_summary``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from mlwatch._errors import MlwatchError
from mlwatch._wire import WireLimits

__all__ = [
    "CRASH_MODEL",
    "HANG_MODEL",
    "OPS",
    "Worker",
    "WorkerCrashed",
    "WorkerError",
    "WorkerPool",
    "WorkerSettings",
    "WorkerTimeout",
]

logger = logging.getLogger("mlwatch.collector")

#: With test hooks on, a profile of this model makes the worker abort after decoding (a stand-in
#: for a native crash); one of `HANG_MODEL` makes it hang. Never honoured otherwise.
CRASH_MODEL = "__mlwatch_test_crash__"
HANG_MODEL = "__mlwatch_test_hang__"


class WorkerError(Exception):
    """The worker rejected the call's data (a malformed or unmergeable profile): a client error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WorkerCrashed(Exception):
    """The worker process died during the call; it has been replaced."""


class WorkerTimeout(WorkerCrashed):
    """The call overran its timeout; the worker was killed and replaced."""


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker process is started with (picklable)."""

    hmac_keys: Mapping[str, bytes] | None
    limits: WireLimits
    test_hooks: bool = False


# ============================================================================ child side
def _decode(data: bytes) -> Any:
    """A stored (already validated once) profile; still fully validated: storage is not trusted blindly."""
    from mlwatch.profile import Profile

    return Profile.from_bytes(data)


def _merge_parts(parts: Sequence[bytes]) -> Any:
    from mlwatch.profile import merge

    if not parts:
        raise WorkerError("no_data", "no profiles to merge")
    return merge(_decode(p) for p in parts)


def _identity(p: Any) -> dict[str, Any]:
    return {
        "model": p.model,
        "version": p.version,
        "segment": dict(p.segment),
        "segment_key": p.segment_key,
        "window_start": p.window_start,
        "window_end": p.window_end,
    }


def _summary(p: Any) -> dict[str, Any]:
    out = _identity(p)
    out.update(rows=p.rows, calls=p.calls, errors=dict(p.errors), dropped=p.dropped)
    if p.latency is not None and not p.latency.is_empty():
        q = p.latency.quantiles([0.5, 0.9, 0.99])
        out["latency_seconds"] = {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": p.latency.max}
    out["columns"] = {n: {k: _jsonable(v) for k, v in c.summary().items()} for n, c in p.columns.items()}
    out["outputs"] = {n: {k: _jsonable(v) for k, v in c.summary().items()} for n, c in p.outputs.items()}
    return out


def _jsonable(value: Any) -> Any:
    """Plain JSON data: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _compact_drift(report: Any) -> dict[str, Any]:
    return {
        "dataset_drift": report.dataset_drift,
        "share": report.share,
        "n_columns": report.n_columns,
        "n_drifted": report.n_drifted,
        "drifted_columns": report.drifted_columns,
        "columns": {
            c.column: {"method": c.method, "value": d["value"], "p_value": d["p_value"], "drifted": c.drifted, "status": c.status}
            for c, d in ((c, c.to_dict()) for c in report.columns)
        },
    }


class _Handler:
    """Runs one operation in the worker process; every data problem becomes a `WorkerError`."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def ingest(self, payload: bytes) -> dict[str, Any]:
        from mlwatch.profile import Profile

        p = Profile.from_bytes(payload, hmac_keys=self.settings.hmac_keys, limits=self.settings.limits)
        if self.settings.test_hooks and p.model == CRASH_MODEL:
            os.abort()
        if self.settings.test_hooks and p.model == HANG_MODEL:
            time.sleep(3600)
        if p.window_start is None or p.window_end is None:
            raise WorkerError("malformed", "profile has no window: the collector stores window profiles only")
        out = _identity(p)
        out.update(
            rows=p.rows, calls=p.calls, errors=p.error_count,
            features=[("input", n, c.kind) for n, c in p.columns.items()]
            + [("output", n, c.kind) for n, c in p.outputs.items()],
        )
        return out

    def ingest_batch(self, payloads: Sequence[bytes]) -> list[tuple[Any, ...]]:
        """`ingest` for each payload of one request: ("ok", identity) or ("error", kind, message) each."""
        out: list[tuple[Any, ...]] = []
        for payload in payloads:
            try:
                out.append(("ok", self.ingest(payload)))
            except WorkerError as exc:
                out.append(("error", exc.kind, str(exc)))
            except MlwatchError as exc:
                out.append(("error", "malformed", str(exc)))
        return out

    def describe(self, payload: bytes) -> dict[str, Any]:
        """Validate an uploaded reference (windowless batch profiles welcome; no signature needed)."""
        from mlwatch.profile import Profile

        p = Profile.from_bytes(payload, limits=self.settings.limits)
        out = _identity(p)
        out.update(rows=p.rows, calls=p.calls, columns=list(p.columns), outputs=list(p.outputs))
        return out

    def merge(self, parts: Sequence[bytes]) -> bytes:
        return bytes(_merge_parts(parts).to_bytes())

    def summary(self, parts: Sequence[bytes]) -> dict[str, Any]:
        return _summary(_merge_parts(parts))

    def drift(self, reference: Sequence[bytes], current: Sequence[bytes], options: Mapping[str, Any]) -> dict[str, Any]:
        from mlwatch.drift import drift

        out: dict[str, Any] = drift(_merge_parts(reference), _merge_parts(current), **options).to_dict()
        return out

    def quality(self, reference: Sequence[bytes], current: Sequence[bytes], options: Mapping[str, Any]) -> dict[str, Any]:
        from mlwatch.quality_checks import check_quality

        ref = _merge_parts(reference) if reference else None
        out: dict[str, Any] = check_quality(ref, _merge_parts(current), **options).to_dict()
        return out

    def drift_windows(
        self, reference: Sequence[bytes], windows: Sequence[tuple[float, float, Sequence[bytes]]], options: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        from mlwatch.drift import drift

        ref = _merge_parts(reference)
        out = []
        for start, end, parts in windows:
            report = drift(ref, _merge_parts(parts), **options)
            out.append({"window_start": start, "window_end": end, **_compact_drift(report)})
        return out

    def quality_windows(
        self, reference: Sequence[bytes], windows: Sequence[tuple[float, float, Sequence[bytes]]], options: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        from mlwatch.quality_checks import check_quality

        ref = _merge_parts(reference) if reference else None
        out = []
        for start, end, parts in windows:
            report = check_quality(ref, _merge_parts(parts), **options)
            issues = [i.to_dict() for i in report.issues]
            out.append({"window_start": start, "window_end": end, "ok": report.ok, "n_issues": len(issues), "issues": issues})
        return out

    def latency_windows(self, windows: Sequence[tuple[float, float, Sequence[bytes]]]) -> list[dict[str, Any]]:
        """Latency quantiles (seconds) of each window merged across series; None for a window without latency."""
        out = []
        for start, end, parts in windows:
            p = _merge_parts(parts)
            latency = None
            if p.latency is not None and not p.latency.is_empty():
                q = p.latency.quantiles([0.5, 0.9, 0.99])
                latency = {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(p.latency.max)}
            out.append({"window_start": start, "window_end": end, "latency_seconds": latency})
        return out

    def model_quality(self, parts: Sequence[bytes]) -> dict[str, Any]:
        """Model quality from outcomes over the parts (kept apart, so segments and versions stay visible)."""
        from mlwatch.outcomes import quality

        if not parts:
            raise WorkerError("no_data", "no profiles")
        mq = quality([_decode(p) for p in parts])

        def clean(d: Mapping[str, float]) -> dict[str, float | None]:
            return {k: (v if v == v and abs(v) != float("inf") else None) for k, v in d.items()}

        return {"overall": clean(mq.to_dict()), "segments": {k: clean(v) for k, v in mq.segments().items()},
                "versions": {k: clean(v) for k, v in mq.versions().items()}}

    def alert_metrics(
        self, reference: Sequence[bytes], windows: Sequence[tuple[float, float, Sequence[bytes]]]
    ) -> list[dict[str, Any]]:
        """`mlwatch.alerts.window_metrics` of each window merged across series (drift against `reference` if any)."""
        from mlwatch.alerts import window_metrics

        ref = _merge_parts(reference) if reference else None
        out = []
        for start, end, parts in windows:
            p = _merge_parts(parts)
            labeled = p.quality.to_dict().get("n_labeled", 0.0) if p.quality is not None else 0.0
            out.append({"window_start": start, "window_end": end, "calls": max(p.calls, p.rows), "labeled": labeled,
                        "metrics": window_metrics(p, ref)})
        return out

    def calibrate(
        self, reference: Sequence[bytes], windows: Sequence[Sequence[bytes]], metric: str, k: float
    ) -> dict[str, float]:
        """mean + k·sigma of `metric` over the windows, per feature (``""``: model level); features with too few values are left out."""
        from mlwatch.alerts import calibrate, reference_metric_table

        ref = _merge_parts(reference) if reference else None
        table = reference_metric_table(metric, [_merge_parts(parts) for parts in windows], reference=ref)
        out: dict[str, float] = {}
        for feature, values in table.items():
            if sum(1 for v in values if math.isfinite(v)) >= 2:
                out[feature] = calibrate(values, k)
        return out

    def health_summary(self, parts: Sequence[bytes], title: str) -> str:
        """`mlwatch.notify.summary_text` over stored parts of any models."""
        from mlwatch.notify import summary_text

        return summary_text((_decode(p) for p in parts), title=title)

    def ping(self) -> int:
        return os.getpid()


OPS = (
    "ingest", "ingest_batch", "describe", "merge", "summary", "drift", "quality", "drift_windows", "quality_windows", "latency_windows",
    "model_quality", "alert_metrics", "calibrate", "health_summary", "ping",
)


def _child_main(conn: multiprocessing.connection.Connection, settings: WorkerSettings) -> None:
    """The worker loop: receive (op, args), answer ("ok", result) or ("error", kind, message)."""
    # Pay the import cost at start, not on the first call.
    import mlwatch.drift
    import mlwatch.profile
    import mlwatch.quality_checks  # noqa: F401

    handler = _Handler(settings)
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if op not in OPS:
                raise WorkerError("internal", f"unknown worker operation {op!r}")
            reply: tuple[Any, ...] = ("ok", getattr(handler, op)(*args))
        except WorkerError as exc:
            reply = ("error", exc.kind, str(exc))
        except MlwatchError as exc:
            reply = ("error", "malformed", str(exc))
        except Exception as exc:  # a bug or an unexpected native error: report it, keep the worker
            reply = ("error", "internal", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


# ============================================================================ parent side
class Worker:
    """One supervised worker process; `call` is blocking (run it in a thread)."""

    def __init__(self, settings: WorkerSettings, *, on_restart: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self.process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.start()

    def start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_child_main, args=(child, self.settings), name="mlwatch-collector-worker", daemon=True)
        proc.start()
        child.close()
        self.process, self._conn = proc, parent

    def _replace(self, reason: str) -> None:
        proc = self.process
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        if self._conn is not None:
            self._conn.close()
        logger.warning("mlwatch collector: worker %s (%s); starting a new one", reason, proc.pid if proc else "?")
        if self._on_restart is not None:
            self._on_restart(reason)
        self.start()

    def call(self, op: str, args: tuple[Any, ...], timeout: float) -> Any:
        """Run `op` in the worker; raises `WorkerError`, `WorkerCrashed` or `WorkerTimeout`."""
        with self._lock:
            assert self._conn is not None and self.process is not None
            if not self.process.is_alive():
                self._replace("found dead")
                assert self._conn is not None
            conn = self._conn
            try:
                conn.send((op, args))
                if not conn.poll(timeout):
                    self._replace("timed out")
                    raise WorkerTimeout(f"worker operation {op!r} took longer than {timeout:g}s; the worker was restarted")
                reply = conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                assert self.process is not None
                self.process.join(2)
                code = self.process.exitcode
                self._replace("crashed")
                raise WorkerCrashed(f"the worker process died (exit code {code}) during {op!r}; it was restarted") from None
        if reply[0] == "ok":
            return reply[1]
        raise WorkerError(reply[1], reply[2])

    def stop(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self.process is not None:
                self.process.join(2)
                if self.process.is_alive():
                    self.process.kill()
                    self.process.join(2)


class WorkerPool:
    """A fixed set of workers shared by async handlers; counts calls, crashes and timeouts."""

    def __init__(self, settings: WorkerSettings, size: int, timeout: float, name: str) -> None:
        self.name = name
        self.timeout = timeout
        self.crashes = 0
        self.timeouts = 0
        self.calls = 0
        self._workers = [Worker(settings, on_restart=self._restarted) for _ in range(size)]
        self._idle: asyncio.Queue[Worker] | None = None

    def _restarted(self, reason: str) -> None:
        if reason == "timed out":
            self.timeouts += 1
        else:
            self.crashes += 1

    @property
    def size(self) -> int:
        return len(self._workers)

    def _queue(self) -> asyncio.Queue[Worker]:
        if self._idle is None:  # created lazily, inside the server's event loop
            self._idle = asyncio.Queue()
            for w in self._workers:
                self._idle.put_nowait(w)
        return self._idle

    async def call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        """Run `op` on the next free worker without blocking the event loop."""
        queue = self._queue()
        worker = await queue.get()
        self.calls += 1
        try:
            return await anyio.to_thread.run_sync(worker.call, op, args, timeout or self.timeout)
        finally:
            queue.put_nowait(worker)

    def call_sync(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        """Blocking call on the first worker (for command-line use outside an event loop)."""
        return self._workers[0].call(op, args, timeout or self.timeout)

    def stop(self) -> None:
        for w in self._workers:
            w.stop()
