"""The in-process pipeline behind `@monitor`: bounded buffers, the aggregator thread, windows.

Hot path (the caller's thread): `Recorder.record` appends one tuple of references and copies to
a bounded deque. Nothing else: no lock, no sketch update, no I/O.

Aggregator (one daemon thread per process): every `flush_interval`, or sooner when a buffer
fills up, drains each buffer, groups records by epoch-aligned window and segment, and profiles
them in batches. Windows close once their end has passed; closed profiles of the same identity
and window are merged and handed to the exporters outside the aggregation lock.

Fork safety: `os.register_at_fork` takes the aggregation lock before a fork (so no child inherits
a half-updated profile), releases it in the parent, and in the child drops the parent's records
and open windows and lets the first new record start a fresh worker thread, which starts the
child's own exporters (`Runtime.start_exporters`) before its first window closes.
"""

from __future__ import annotations

import atexit
import math
import operator
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from itertools import count, islice, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from mlwatch import _fast
from mlwatch._extract import PREDICTION, Binding, CallInputs, apply_rows, split_by_segment, split_inputs, split_outputs
from mlwatch._extract import SCALAR_TYPES as _SCALAR_TYPES
from mlwatch._gil import offer
from mlwatch._health import HEALTH, logger
from mlwatch._snapshot import IMMUTABLE as _IMMUTABLE
from mlwatch._snapshot import snapshot, snapshot_args
from mlwatch.config import Exporter, Settings
from mlwatch.profile import Profile
from mlwatch.profiling import ProfileConfig, update_profile_batches

__all__ = ["RUNTIME", "Recorder", "Runtime"]

_FIRST = operator.itemgetter(0)
_RESULT = operator.itemgetter(4)  # a record's result
OTHER_SEGMENT = "__other__"
MISSING_SEGMENT = "__missing__"

# A record: (start perf ns, duration ns, args, kwargs or None, result, error type or None, kept), where
# kept is 0 (no data kept: sampled out or uncopyable), ONE_ARG (args is the only positional argument
# itself) or ARGS (args is the tuple of positional arguments). ONE_ARG keeps the common record a
# flat tuple of untracked objects, which the garbage collector untracks at its first pass instead
# of promoting it to older generations (that promotion triggered full collections: ~1.6 µs/call).
Record = tuple[int, int, Any, Any, Any, str | None, int]
ONE_ARG = 2
ARGS = 1


def args_of(rec: Record) -> tuple[Any, ...]:
    return (rec[2],) if rec[6] == ONE_ARG else rec[2] or ()


class Recorder:
    """One monitored function (or `observe` site): its buffer and its open windows."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        model: str,
        version: str | None,
        binding: Binding,
        config: ProfileConfig,
        output_config: ProfileConfig,
        segment_by: tuple[str, ...],
        sample_rate: float,
        window_seconds: float | None,
        feature_names: tuple[str, ...] | None = None,
    ) -> None:
        self.runtime = runtime
        self.feature_names = feature_names
        self.model = model
        self.version = version
        self.binding = binding
        self.config = config
        self.output_config = output_config
        self.segment_by = segment_by
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.queue: deque[Record] = deque()
        self.open: dict[tuple[float, str], Profile] = {}
        self.closed_upto = float("-inf")
        # Calls dropped on a full buffer: `next()` on the hot path (atomic under the GIL, no lock),
        # attributed to the model's window profile by `attribute_drops`.
        self.drops = count()
        self._drops_seen = 0
        self.record = self.make_record()

    # ------------------------------------------------------------------ hot path
    def make_record(self) -> Callable[[int, int, tuple[Any, ...], dict[str, Any] | None, Any, BaseException | None], None]:
        """The hot-path function for this recorder: a closure over everything it needs.

        Buffers one call; never raises, never blocks; a full buffer drops and counts. The common
        shape (one dict argument, a scalar result, no sampling) takes a copy-and-append fast path.
        """
        queue = self.queue  # the same deque for the recorder's life (reset() clears it in place)
        runtime = self.runtime
        drop = self.drops.__next__
        skip = self.binding.skip
        sample_rate = self.sample_rate
        immutable = _IMMUTABLE
        rand = random.random
        count_error = HEALTH.count_error

        def record(t0: int, duration: int, args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any, exc: BaseException | None) -> None:
            try:
                if len(queue) >= runtime.capacity:
                    drop()
                    HEALTH.count_dropped("buffer_full")
                    return
                if exc is None and not kwargs and sample_rate == 1.0 and len(args) == skip + 1 and type(result) in immutable:
                    first = args[skip]
                    if type(first) is dict:
                        queue.append((t0, duration, first.copy(), None, result, None, ONE_ARG))
                    else:
                        try:
                            kept = snapshot(first)
                        except Exception as copy_exc:  # cannot be copied: keep the call, lose its data
                            count_error("capture", copy_exc)
                            queue.append((t0, duration, None, None, None, None, 0))
                        else:
                            queue.append((t0, duration, kept, None, result, None, ONE_ARG))
                else:
                    err = None if exc is None else type(exc).__name__
                    if sample_rate < 1.0 and rand() >= sample_rate:
                        queue.append((t0, duration, None, None, None, err, 0))
                    else:
                        try:
                            kept_args = snapshot_args(args, skip)
                            kept_kwargs = {k: snapshot(v) for k, v in kwargs.items()} if kwargs else None
                            kept_result = snapshot(result) if exc is None else None
                        except Exception as copy_exc:  # an argument that cannot be copied: keep the call, lose its data
                            count_error("capture", copy_exc)
                            queue.append((t0, duration, None, None, None, err, 0))
                        else:
                            queue.append((t0, duration, kept_args, kept_kwargs, kept_result, err, ARGS))
                if len(queue) == runtime.batch_size:  # once, on crossing: Event.set() costs ~1 µs
                    runtime.wake.set()
                if not runtime.running:
                    runtime.start_worker()
            except Exception as e:
                count_error("capture", e)

        return record

    def plain_state(self) -> tuple[Any, ...] | None:
        """What `mlwatch._speedups.record_plain` needs to buffer this recorder's common call in C
        (None without the C loops, or when calls are sampled): the wrapper tries it first and
        calls `record` whenever it answers False."""
        if _fast.SPEEDUPS is None or self.sample_rate != 1.0:
            return None
        return (self.runtime, self.queue, self.queue.append, self.binding.skip, _IMMUTABLE, ONE_ARG)

    # ------------------------------------------------------------------ aggregation (worker thread)
    def drain(self) -> list[Record]:
        queue = self.queue
        return list(islice(iter(queue.popleft, None), len(queue)))  # n pops in C; records are never None

    def _segment_of(self, row: Mapping[str, Any] | None) -> dict[str, str]:
        if not self.segment_by:
            return {}
        if row is None:
            return dict.fromkeys(self.segment_by, MISSING_SEGMENT)
        out = {}
        for key in self.segment_by:
            value = row.get(key, MISSING_SEGMENT)
            out[key] = MISSING_SEGMENT if value is None else str(value)[:200]
        return out

    def _profile_for(self, window: float, segment: dict[str, str], width: float) -> Profile:
        key = (window, _segment_key(segment))
        prof = self.open.get(key)
        if prof is not None:
            return prof
        if segment and sum(1 for w, _ in self.open if w == window) >= self.runtime.settings.max_segments:
            segment = dict.fromkeys(segment, OTHER_SEGMENT)  # bounded memory whatever the cardinality
            key = (window, _segment_key(segment))
            prof = self.open.get(key)
            if prof is not None:
                return prof
        return self._new(key, window, segment, width)

    def _new(self, key: tuple[float, str], window: float, segment: dict[str, str], width: float) -> Profile:
        prof = Profile(self.model, version=self.version, segment=segment, window_start=window, window_end=window + width)
        self.open[key] = prof
        return prof

    def aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        """Fold drained records into their windows' profiles, batching per (window, segment)."""
        width = self.window_seconds or self.runtime.settings.window_seconds
        width_ns = int(width * 1e9)
        for w_ns, recs in by_window(records, wall_offset_ns, width_ns).items():
            window = w_ns / 1e9
            if window + width <= self.closed_upto:  # its window already went out: count it, keep it
                HEALTH.late_records += len(recs)
                window = self.closed_upto
            if not self.segment_by:
                self._fold(self._profile_for(window, {}, width), recs, None)
                continue
            groups: dict[str, tuple[Profile, list[Record], CallInputs]] = {}
            for rec in recs:
                inputs = CallInputs()
                if rec[6]:
                    split_inputs(self.binding, args_of(rec), rec[3], inputs)
                for segment, part in self._segments(inputs, rec):
                    prof = self._profile_for(window, segment, width)
                    group = groups.get(prof.segment_key)
                    if group is None:
                        group = groups[prof.segment_key] = (prof, [], CallInputs())
                    if part is None:  # the call as a whole belongs to this segment
                        group[1].append(rec)
                        group[2].rows.extend(inputs.rows)
                        group[2].batches.extend(inputs.batches)
                    else:  # some rows of a batch input belong to this segment
                        group[2].batches.append(part)
            for prof, seg_recs, seg_inputs in groups.values():
                self._fold(prof, seg_recs, seg_inputs)
        HEALTH.aggregated_records += len(records)

    def _segments(self, inputs: CallInputs, rec: Record) -> list[tuple[dict[str, str], Any]]:
        """Which segment a call belongs to; a batch whose rows carry the segment column is split."""
        row = inputs.rows[0] if inputs.rows else _kw_row(self.binding, rec)
        if not inputs.batches or (row is not None and all(k in row for k in self.segment_by)):
            return [(self._segment_of(row), None)]
        out: list[tuple[dict[str, str], Any]] = [(self._segment_of(row), None)]  # the call's own counters
        for batch in inputs.batches:
            out.extend(split_by_segment(batch, self.segment_by))
        inputs.batches.clear()
        return out

    def _fold(self, prof: Profile, recs: list[Record], inputs: CallInputs | None) -> None:
        """Add calls (and their inputs and outputs) to one profile, each column updated once.

        Records are transposed in C (`plain_calls` for the common shape: one argument, no error;
        else `zip(*recs)`), so that the common shapes (one dict argument, a scalar result) cost
        no per-record Python loop at all.
        """
        n = len(recs)
        if n:
            plain = _plain_calls(recs)
            if plain is not None:  # every call: one argument, no keywords, no error, kept
                lat, firsts, result_floats = plain
                all_args: Sequence[Any] = firsts
                all_kwargs: tuple[Any, ...] | None = None
                sampled: tuple[Any, ...] | None = None
                results: Sequence[Any] | None = None
            else:
                starts, durations, all_args, all_kwargs, results, errors, sampled = zip(*recs, strict=True)
                del starts
                result_floats = None
                floats = _floats(durations)
                lat = floats if floats is not None else np.array(durations, dtype=np.float64)
                if errors.count(None) != n:
                    for name, c in Counter(errors).items():
                        if name is not None:
                            prof.errors[name] = prof.errors.get(name, 0) + c
            prof.calls += n
            lat /= 1e9
            prof.record_latency(lat[lat >= 0], k=self.config.kll_k)
            offer()
        if inputs is None:  # unsegmented: split the inputs here
            inputs = CallInputs()
            if n:
                self._split_all(inputs, all_args, all_kwargs, sampled)
        apply_rows(prof, inputs.rows, self.config, "columns")
        update_profile_batches(prof, inputs.batches, self.config, feature_names=self.feature_names)
        if not n:
            return
        offer()
        out_rows: list[dict[str, Any]] = []
        out_batches: list[Any] = []
        if result_floats is None:
            if results is None:  # plain calls whose results are not all numbers
                results = list(map(_RESULT, recs))
            kept = results if sampled is None or all(sampled) else [r for r, s in zip(results, sampled, strict=True) if s]
            result_floats = _floats(kept)  # in C: what profiling a list of them would make of them
        if result_floats is not None:
            if result_floats.shape[0]:
                out_batches.append({PREDICTION: result_floats})
        elif (kinds := set(map(type, kept))) <= _SCALAR_TYPES:  # errors left None results: skipped as missing outputs
            scalars = list(kept) if type(None) not in kinds else [r for r in kept if r is not None]
            if scalars:
                out_batches.append({PREDICTION: scalars})
        elif kinds <= _DICT_OR_NONE and all(dicts := [r for r in kept if r is not None]) and _all_row_dicts(dicts):
            out_rows = dicts  # dicts of named outputs (as split_outputs reads them, without a call each)
        else:
            for r in kept:
                split_outputs(r, out_rows, out_batches)
        apply_rows(prof, out_rows, self.output_config, "outputs")
        update_profile_batches(prof, out_batches, self.output_config, section="outputs")

    def _split_all(
        self, inputs: CallInputs, all_args: Sequence[Any], all_kwargs: tuple[Any, ...] | None, kept: tuple[int, ...] | None
    ) -> None:
        """Inputs of many calls: one list of dict rows in the common case, per call otherwise.
        `kept` and `all_kwargs` None: every call had one argument and no keywords."""
        if kept is None or kept.count(ONE_ARG) == len(kept):
            firsts = all_args if type(all_args) is list else list(all_args)
            # Every dict must be a row (checked cheaply on its first value; see is_row_dict), not just
            # the first call's: a later call may pass a dict of columns.
            # All in C: each dict's first value (None for an empty dict), its type, a set lookup.
            if _all_row_dicts(firsts):
                inputs.rows.extend(firsts)
                return
        if kept is None or all_kwargs is None:  # plain calls: one argument each, no keywords
            kept, all_kwargs = (ONE_ARG,) * len(all_args), (None,) * len(all_args)
        binding = self.binding
        for args, kwargs, k in zip(all_args, all_kwargs, kept, strict=True):
            if k:
                split_inputs(binding, (args,) if k == ONE_ARG else args, kwargs, inputs)

    def close_due(self, now: float, *, everything: bool = False) -> list[Profile]:
        """Remove and return the profiles whose window has ended (all of them when flushing)."""
        grace = 2 * self.runtime.settings.flush_interval
        due = [k for k, p in self.open.items() if everything or (p.window_end or 0) + grace <= now]
        out = []
        for key in due:
            prof = self.open.pop(key)
            out.append(prof)
            if not everything:
                self.closed_upto = max(self.closed_upto, prof.window_end or self.closed_upto)
        return out

    def attribute_drops(self, now: float) -> None:
        """Add the calls dropped since the last pass to the model's current window (segment-less
        profile), so exported counts stay whole: calls + dropped = calls made. A drop is counted in
        the window open when it is noticed, at most one aggregation pass after it happened."""
        n = self._take_drops()
        if n:
            width = self.window_seconds or self.runtime.settings.window_seconds
            window = max(math.floor(now / width) * width, self.closed_upto)
            self._profile_for(window, {}, width).dropped += n

    def _take_drops(self) -> int:
        seen = next(self.drops)  # this read is itself one step of the counter
        n = seen - self._drops_seen
        self._drops_seen = seen + 1
        return n

    def reset(self) -> None:
        """Forget buffered records, open windows and uncounted drops (a forked child starts empty)."""
        self.queue.clear()
        self.open = {}
        self._take_drops()


def by_window(records: list[Any], wall_offset_ns: int, width_ns: int) -> dict[int, list[Any]]:
    """Buffered records (each starting with its call's start, perf-counter ns) by the wall-clock window,
    in ns, that their call started in. Records are buffered when calls end, so their starts are not
    in order: the usual case, one window, is told by the lowest and highest start."""
    starts = list(map(_FIRST, records))
    first, last = min(starts) + wall_offset_ns, max(starts) + wall_offset_ns
    if first - first % width_ns == last - last % width_ns:
        return {first - first % width_ns: records}
    at = np.array(starts, dtype=np.int64) + wall_offset_ns
    out: dict[int, list[Any]] = {}
    for w, rec in zip((at - at % width_ns).tolist(), records, strict=True):
        out.setdefault(w, []).append(rec)
    return out


_DICT_OR_NONE = frozenset({dict, type(None)})


def _floats(values: Sequence[Any]) -> npt.NDArray[np.float64] | None:
    """float64 of a list or tuple of floats and ints in one C pass; None when they are not all such."""
    fast = _fast.SPEEDUPS
    if fast is not None and type(values) in (list, tuple):
        out = np.empty(len(values))
        if fast.fill_floats(values, out):
            return out
    return None


def _plain_calls(recs: list[Record]) -> tuple[npt.NDArray[np.float64], list[Any], npt.NDArray[np.float64] | None] | None:
    """(durations in ns as float64, the arguments, the results as float64 or None when they are not
    all numbers) when every call of the batch is plain (one argument kept, no keywords, no error),
    read in one C pass; None otherwise (or without the C loops)."""
    fast = _fast.SPEEDUPS
    if fast is None:
        return None
    lat, results = np.empty(len(recs)), np.empty(len(recs))
    got = fast.plain_calls(recs, ONE_ARG, lat, results)
    if got is None:
        return None
    args, results_ok = got
    return lat, args, results if results_ok else None


def _all_row_dicts(dicts: list[Any]) -> bool:
    """Whether every item is a dict that is one row (its first value a scalar: `is_row_dict`'s rule), all in C."""
    fast = _fast.SPEEDUPS
    if fast is not None:
        return bool(fast.all_row_dicts(dicts, _SCALAR_TYPES))
    first_values = map(next, map(iter, map(dict.values, dicts)), repeat(None))
    return set(map(type, dicts)) <= {dict} and all(map(_SCALAR_TYPES.__contains__, map(type, first_values)))


def _segment_key(segment: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(segment.items()))


def _kw_row(binding: Binding, rec: Record) -> dict[str, Any] | None:
    if not rec[6]:
        return None
    row: dict[str, Any] = {binding.name_of(i): a for i, a in enumerate(args_of(rec))}
    if rec[3]:
        row.update(rec[3])
    return row


#: Records that wake the aggregator. Each column's sketches cost a fixed ~40 µs per batch on top
#: of their per-value cost, so larger batches are cheaper per call; memory stays bounded by the
#: buffer (`buffer_size`), which a batch never exceeds a quarter of.
BATCH_SIZE = 4096


def _batch_size(capacity: int) -> int:
    return max(1, min(BATCH_SIZE, capacity // 4))


class Runtime:
    """The process's single pipeline: settings, recorders, the worker thread, the exporters."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.capacity = self.settings.buffer_size
        self.batch_size = _batch_size(self.capacity)
        self.recorders: list[Recorder] = []
        self.lock = threading.Lock()  # held while aggregating and closing; never on the hot path
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.worker: threading.Thread | None = None
        self.worker_pid = -1
        self.running = False  # read on the hot path instead of os.getpid() (a syscall)
        self._exporters: list[Exporter] | None = None
        self._exporters_lock = threading.Lock()
        self._shut_down = False
        self._start_lock = threading.Lock()
        #: Other producers of window profiles (model quality from outcomes): called under the lock
        #: with (now, close everything?) and returning the profiles due for export.
        self.sources: list[Callable[[float, bool], list[Profile]]] = []
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_parent, after_in_child=self._after_fork_child)
        atexit.register(self.shutdown)

    # ------------------------------------------------------------------ configuration
    def configure(self, settings: Settings) -> None:
        with self.lock, self._exporters_lock:
            old = self._exporters
            self.settings = settings
            self.capacity = settings.buffer_size
            self.batch_size = _batch_size(self.capacity)
            self._exporters = None
        if old:
            for exp in old:
                try:
                    exp.shutdown()
                except Exception as exc:
                    HEALTH.count_error("export_shutdown", exc)

    def exporters(self) -> list[Exporter]:
        exporters = self._exporters
        if exporters is None:
            with self._exporters_lock:  # one set per process, whichever thread asks first
                exporters = self._exporters
                if exporters is None:
                    exporters = self._exporters = self._build_exporters()
        return exporters

    def _build_exporters(self) -> list[Exporter]:
        if self.settings.exporters is not None:
            return list(self.settings.exporters)
        if self.settings.otlp_enabled:
            from mlwatch.otlp import OtlpExporter

            return [OtlpExporter.from_settings(self.settings)]
        from mlwatch.local_export import LocalFileExporter

        return [LocalFileExporter(self.settings.data_dir, max_bytes=self.settings.max_disk_bytes)]

    def start_exporters(self) -> None:
        """Start this process's exporters now (OTLP: its OpenTelemetry pipeline and sender thread). Never raises.

        `configure()` calls it in the process that configures; the aggregator calls it when it
        starts in a process, which is what a forked child (a pre-fork server's worker, gunicorn
        ``--preload``) needs: it inherits no exporter (they hold the parent's threads and sockets),
        and one built only when its first window closes is, for a worker recycled within a window,
        built at interpreter exit, where the OpenTelemetry SDK can no longer start the threads it
        needs (its windows were lost). Exporters without a ``start()`` (local files, test doubles,
        most custom ones) are left as they are; local files are not even created here.
        """
        try:
            if self.settings.exporters is None and not self.settings.otlp_enabled:
                return
            for exp in self.exporters():
                start = getattr(exp, "start", None)
                if callable(start):
                    start()
        except Exception as exc:
            HEALTH.count_error("export_start", exc)

    def add_source(self, source: Callable[[float, bool], list[Profile]]) -> None:
        with self.lock:
            self.sources.append(source)

    def add_recorder(self, recorder: Recorder) -> None:
        with self.lock:
            self.recorders.append(recorder)

    # ------------------------------------------------------------------ worker
    def start_worker(self) -> None:
        with self._start_lock:
            pid = os.getpid()
            if self.worker_pid == pid or self._shut_down:
                return
            self.stop = threading.Event()
            self.worker = threading.Thread(target=self._run, name="mlwatch-aggregator", daemon=True)
            self.worker_pid = pid
            self.running = True
            self.worker.start()

    def _run(self) -> None:
        stop, wake = self.stop, self.wake
        self.start_exporters()  # in a forked child, its first chance to (see start_exporters)
        while not stop.is_set():
            wake.wait(self.settings.flush_interval)
            wake.clear()
            start = time.thread_time()
            try:
                self.process(close_all=False)
            except Exception as exc:  # the loop itself must survive anything
                HEALTH.count_error("worker", exc)
            HEALTH.worker_cpu_seconds += time.thread_time() - start

    def process(self, *, close_all: bool) -> int:
        """Drain, aggregate, close due windows, export. Returns the number of profiles exported."""
        with self.lock:
            offset = time.time_ns() - time.perf_counter_ns()
            now = time.time()
            closed: list[Profile] = []
            for rec in list(self.recorders):
                try:
                    records = rec.drain()
                    if records:
                        rec.aggregate(records, offset)
                    rec.attribute_drops(now)
                except Exception as exc:
                    HEALTH.count_error("aggregate", exc)
                try:
                    closed.extend(rec.close_due(now, everything=close_all))
                except Exception as exc:
                    HEALTH.count_error("window", exc)
            for source in self.sources:
                try:
                    closed.extend(source(now, close_all))
                except Exception as exc:
                    HEALTH.count_error("window", exc)
        if not closed:
            return 0
        merged = _merge_same_identity(closed)
        for exp in self.exporters():
            try:
                exp.export(merged)
                HEALTH.count_export(type(exp).__name__, len(merged))
            except Exception as exc:
                HEALTH.count_export_failure(type(exc).__name__, len(merged))
                HEALTH.count_error("export", exc)
        return len(merged)

    def flush(self) -> int:
        """Close every open window now and export it; returns the number of profiles exported."""
        try:
            return self.process(close_all=True)
        except Exception as exc:
            HEALTH.count_error("flush", exc)
            return 0

    def shutdown(self) -> None:
        """Stop the worker, flush once (bounded by `shutdown_timeout`), shut the exporters down."""
        if self._shut_down:
            return
        self._shut_down = True
        self.stop.set()
        self.wake.set()
        worker = self.worker
        if worker is not None and worker.is_alive() and self.worker_pid == os.getpid():
            worker.join(self.settings.shutdown_timeout)
        done = threading.Event()

        def final() -> None:
            self.flush()
            for exp in self._exporters or []:
                try:
                    exp.shutdown()
                except Exception as exc:
                    HEALTH.count_error("export_shutdown", exc)
            done.set()

        t = threading.Thread(target=final, name="mlwatch-shutdown", daemon=True)
        t.start()
        if not done.wait(self.settings.shutdown_timeout):
            logger.warning("mlwatch: final flush did not finish within %.1fs; its profiles are lost", self.settings.shutdown_timeout)

    def restart(self) -> None:
        """Undo `shutdown()` (tests, and applications that reconfigure after stopping)."""
        self._shut_down = False
        worker = self.worker
        if worker is None or not worker.is_alive() or self.worker_pid != os.getpid():
            self.worker_pid = -1
            self.running = False

    # ------------------------------------------------------------------ fork safety
    def _before_fork(self) -> None:
        self.lock.acquire()

    def _after_fork_parent(self) -> None:
        self.lock.release()

    def _after_fork_child(self) -> None:
        self.lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._exporters_lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.worker = None
        self.worker_pid = -1
        self.running = False
        for rec in self.recorders:
            rec.reset()
        self._exporters = None  # exporters hold threads and sockets of the parent
        HEALTH.reset()


def _merge_same_identity(profiles: list[Profile]) -> list[Profile]:
    """Profiles of one (model, version, segment, window) from several functions become one."""
    out: dict[tuple[Any, ...], Profile] = {}
    for p in profiles:
        key = (p.model, p.version, p.segment_key, p.window_start)
        have = out.get(key)
        if have is None:
            out[key] = p
        else:
            have.merge_in(p)
    return list(out.values())


#: Called at interpreter exit after the final flush, to release sketches held by module-level
#: state: datasketches' binding (nanobind) prints "leaked instances" warnings for every native
#: object still alive when its module is torn down.
EXIT_CLEANUPS: list[Callable[[], None]] = []


def _release_at_exit() -> None:
    for rec in RUNTIME.recorders:
        rec.open = {}
    for cleanup in EXIT_CLEANUPS:
        try:
            cleanup()
        except Exception as exc:
            HEALTH.count_error("exit_cleanup", exc)


atexit.register(_release_at_exit)  # registered before Runtime's shutdown hook, so it runs after it
RUNTIME = Runtime()
