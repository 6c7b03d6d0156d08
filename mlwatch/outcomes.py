"""Outcomes (labels that arrive later) joined to predictions, folded into mergeable model quality.

```python
@mlwatch.monitor(model="fraud", prediction_ids=True)
def predict(row): ...

score = predict(row)
pid = mlwatch.current_prediction_id()                       # right after the monitored call
...                                                          # hours later, in the same process:
mlwatch.log_outcome(model="fraud", prediction_id=pid, label=1)
mlwatch.log_outcome(model="fraud", prediction=0.93, label=1, segment={"country": "DE"})  # or give both
print(mlwatch.quality(model="fraud"))
```

Design (why it costs nothing on the hot path):

- Only functions monitored with ``prediction_ids=True`` do anything more per call, and then only
  one `ContextVar.set` of a small list (~100 ns). No id is minted and nothing is stored unless
  `current_prediction_id()` is called: it mints the id lazily (a random UUID), and puts the
  prediction (only the returned value, never the inputs) with its model, version, segment and
  window start in the `PredictionStore`.
- The store is bounded (``prediction_store_size``) and every entry has a TTL (``prediction_ttl``).
  Outcomes for expired, evicted or unknown ids are counted in `mlwatch.health()` under
  ``dropped`` (``outcome_expired``, ``prediction_evicted``, ``outcome_unknown_id``), never raised.
- An outcome is folded into a `QualitySketch` twice: into running totals per (model, version,
  segment) behind `quality(model=...)` (bounded: ``max_segments`` per model), and into a
  quality-only `Profile` for the *prediction's* window and segment. The aggregator exports those
  with the window profiles (same identity, so exporters and the collector merge them); late
  labels for an old window go out with the next window that closes.
- Labels that arrive in another process (or after a restart) use `prediction_token()`: a short
  URL-safe string carrying the prediction, model, version, segment and window (not the inputs).
  Keep it with the request (a response header, a queue message); `log_outcome(token=...)` in any
  process folds the label into the prediction's own window and segment, and the collector merges
  that window's quality parts from every process.
- The HTTP middleware (`mlwatch.integrations`, ``prediction_id_header=``) sends the id back in a
  response header. While it serves a model route it puts a `RequestCalls` in `REQUEST_CALLS`;
  a monitored call made anywhere in that request (the handler's worker thread included: its
  context is a copy holding the same object) notes itself there, so the middleware finds the
  id `current_prediction_id()` gives. A route the middleware records itself stores a
  `PendingPrediction` (`new_prediction`): the response body is read when the label arrives.
- Nothing here raises into the caller: a wrong argument is counted (``internal_errors["outcome"]``)
  and the call returns False.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np

from mlwatch._health import HEALTH
from mlwatch._runtime import EXIT_CLEANUPS, OTHER_SEGMENT, RUNTIME, Recorder
from mlwatch.model_quality import ModelQuality, QualitySketch, class_key
from mlwatch.profile import Profile

__all__ = [
    "BOOK",
    "PendingPrediction",
    "PredictionStore",
    "REQUEST_CALLS",
    "RequestCalls",
    "current_prediction_id",
    "log_metric",
    "log_outcome",
    "log_ranking_outcome",
    "new_prediction",
    "prediction_token",
    "quality",
    "request_prediction_id",
]

#: The last call of a function monitored with ``prediction_ids=True`` in this context:
#: (recorder, args, kwargs, result). Set on the hot path (a tuple: the cheapest thing to build).
LAST_CALL: ContextVar[tuple[Any, ...] | None] = ContextVar("mlwatch_last_call", default=None)
#: (that call's tuple, its id) once `current_prediction_id()` minted one, so asking twice gives one id.
_MINTED: ContextVar[tuple[Any, str] | None] = ContextVar("mlwatch_minted", default=None)


class RequestCalls:
    """The monitored calls (``prediction_ids=True``) of one HTTP request, by model, and the id minted last.

    The HTTP middleware puts one in `REQUEST_CALLS` around the app; copies of the context (a
    sync handler's worker thread) share the object, so what the handler's calls note reaches the
    middleware even where `LAST_CALL` (set in the copy) does not.
    """

    __slots__ = ("calls", "minted")

    def __init__(self) -> None:
        self.calls: dict[str, tuple[Any, ...]] = {}
        self.minted: tuple[tuple[Any, ...], str] | None = None


#: The request being served by the HTTP middleware with a prediction-id header (else None).
REQUEST_CALLS: ContextVar[RequestCalls | None] = ContextVar("mlwatch_request_calls", default=None)


class PendingPrediction:
    """A stored prediction whose value is read when its outcome arrives (the HTTP middleware's
    model routes: the response body is complete only after the id went out in a header)."""

    __slots__ = ()

    def value(self) -> Any:
        """The prediction, as `log_outcome` reads a monitored function's return value (None: unknown)."""
        return None

# (expires at monotonic, model, version, segment, window start, prediction)
_Entry = tuple[float, str, str | None, dict[str, str], float, Any]


class PredictionStore:
    """Bounded, TTL'd map from prediction id to the prediction (never the inputs).

    Capacity and TTL default to the ``prediction_store_size`` and ``prediction_ttl`` settings,
    read at each insertion so `mlwatch.configure()` applies at once.
    """

    def __init__(self, capacity: int | None = None, ttl: float | None = None) -> None:
        self._capacity = capacity
        self._ttl = ttl
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def capacity(self) -> int:
        return self._capacity if self._capacity is not None else RUNTIME.settings.prediction_store_size

    @property
    def ttl(self) -> float:
        return self._ttl if self._ttl is not None else RUNTIME.settings.prediction_ttl

    def put(self, pid: str, model: str, version: str | None, segment: dict[str, str], window: float, prediction: Any) -> None:
        now = time.monotonic()
        ttl, capacity = self.ttl, self.capacity
        with self._lock:
            items = self._items
            items[pid] = (now + ttl, model, version, segment, window, prediction)
            evicted = 0
            while len(items) > capacity:
                items.popitem(last=False)
                evicted += 1
            expired = 0
            while items:  # entries are in insertion order, so the oldest expire first
                first = next(iter(items.values()))
                if first[0] > now:
                    break
                items.popitem(last=False)
                expired += 1
        if evicted:
            HEALTH.count_dropped("prediction_evicted", evicted)
        if expired:
            HEALTH.count_dropped("prediction_expired", expired)

    def pop(self, pid: str) -> _Entry | None:
        """The entry of `pid`, removed; None (counted as unknown or expired) if it is not there."""
        with self._lock:
            entry = self._items.pop(pid, None)
        if entry is None:
            HEALTH.count_dropped("outcome_unknown_id")
        elif entry[0] <= time.monotonic():
            HEALTH.count_dropped("outcome_expired")
            return None
        return entry

    def peek(self, pid: str) -> _Entry | None:
        """The entry of `pid` if it is there and not expired, left in place."""
        with self._lock:
            entry = self._items.get(pid)
        return entry if entry is not None and entry[0] > time.monotonic() else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _window_of(ts: float) -> tuple[float, float]:
    width = RUNTIME.settings.window_seconds
    start = ts - ts % width
    return start, start + width


def _segment_key(segment: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(segment.items()))


def _clean_segment(segment: Mapping[str, Any] | None) -> dict[str, str]:
    if not segment:
        return {}
    if not isinstance(segment, Mapping):
        raise TypeError(f"segment must be a dict of strings, got {segment!r}")
    return {str(k): str(v)[:200] for k, v in segment.items()}


class OutcomeBook:
    """Running quality totals per model and the quality-only window profiles waiting for export."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, dict[tuple[str | None, str], tuple[dict[str, str], QualitySketch]]] = {}
        self.pending: dict[tuple[str, str | None, str, float], tuple[Profile, float]] = {}
        self.tasks: dict[str, str] = {}  # model -> "classification" | "regression" (first outcome decides)
        self.store = PredictionStore()
        os.register_at_fork(after_in_child=self._after_fork_child)

    def _after_fork_child(self) -> None:
        self.lock = threading.Lock()
        self.pending = {}
        self.store = PredictionStore()

    def sketches_for(self, model: str, version: str | None, segment: dict[str, str], window: float, width: float) -> list[QualitySketch]:
        """The running total and the window's pending sketch to fold one outcome into (lock held)."""
        per_model = self.totals.setdefault(model, {})
        key = (version, _segment_key(segment))
        if key not in per_model and segment and len(per_model) >= RUNTIME.settings.max_segments:
            segment = dict.fromkeys(segment, OTHER_SEGMENT)  # bounded memory whatever the cardinality
            key = (version, _segment_key(segment))
        if key not in per_model:
            per_model[key] = (segment, QualitySketch())
        total = per_model[key][1]
        pkey = (model, version, key[1], window)
        have = self.pending.get(pkey)
        if have is None:
            prof = Profile(model, version=version, segment=segment, window_start=window, window_end=window + width)
            prof.quality = QualitySketch()
            # Exported when the current window closes: with its own window's profile, or, for a late
            # label of an older window (or a timestamp in the future), with the next export.
            have = self.pending[pkey] = (prof, _window_of(time.time())[1])
        assert have[0].quality is not None
        return [total, have[0].quality]

    def due_profiles(self, now: float, everything: bool) -> list[Profile]:
        """Quality-only profiles whose window (or the window they were logged in) has closed."""
        grace = 2 * RUNTIME.settings.flush_interval
        with self.lock:
            due = [k for k, (_, end) in self.pending.items() if everything or end + grace <= now]
            return [self.pending.pop(k)[0] for k in due]

    def reset(self) -> None:
        """Forget everything (tests)."""
        with self.lock:
            self.totals.clear()
            self.pending.clear()
            self.tasks.clear()
        self.store.clear()


BOOK = OutcomeBook()
# Registered once, at import: registering lazily under BOOK.lock would invert the lock order
# with the aggregator (which holds the runtime's lock and then takes BOOK.lock).
RUNTIME.add_source(BOOK.due_profiles)
EXIT_CLEANUPS.append(BOOK.reset)


# ---------------------------------------------------------------------------- prediction ids
class _Ids:
    """Prediction ids: a random per-process prefix and a counter (a fork gets a new prefix)."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_IDS = _Ids()


def remember(call: tuple[Any, ...]) -> str:
    """Mint the id of a captured call and store its prediction (called lazily, once per call)."""
    rec: Recorder = call[0]
    pid = _IDS.next()
    _MINTED.set((call, pid))
    box = REQUEST_CALLS.get()
    if box is not None:
        box.minted = (call, pid)
    segment: dict[str, str] = {}
    if rec.segment_by:
        args, kwargs = call[1], call[2]
        rest = args[rec.binding.skip :]
        row: dict[str, Any] = {}
        if rest and isinstance(rest[0], Mapping):
            row.update(rest[0])
        for i, a in enumerate(rest):
            row.setdefault(rec.binding.name_of(i), a)
        row.update(kwargs or {})
        segment = rec._segment_of(row)
    BOOK.store.put(pid, rec.model, rec.version, segment, _window_of(time.time())[0], call[3])
    return pid


def current_prediction_id() -> str | None:
    """The id of the last prediction made in this context by a function monitored with
    ``prediction_ids=True`` (None if there is none). Pass it to `log_outcome` when the label arrives."""
    try:
        call = LAST_CALL.get()
        if call is None:
            return None
        minted = _MINTED.get()
        if minted is not None and minted[0] is call:
            return minted[1]
        box = REQUEST_CALLS.get()  # minted in another copy of this request's context (by the middleware)
        if box is not None and box.minted is not None and box.minted[0] is call:
            return box.minted[1]
        return remember(call)
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return None


def request_prediction_id(box: RequestCalls, model: str) -> str | None:
    """The id `current_prediction_id()` gives for `model`'s last call noted in `box` (None: no such call). Never raises."""
    try:
        call = box.calls.get(model)
        if call is None:
            return None
        minted = box.minted
        return minted[1] if minted is not None and minted[0] is call else remember(call)
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return None


def new_prediction(model: str, version: str | None, segment: dict[str, str], prediction: Any, timestamp: float) -> str | None:
    """Store a prediction made outside `@monitor` (the HTTP middleware's model routes) and return
    its id, for `log_outcome(prediction_id=...)`; `timestamp` (epoch seconds) places it in its
    window. Never raises (None on failure, counted)."""
    try:
        pid = _IDS.next()
        BOOK.store.put(pid, model, version, segment, _window_of(timestamp)[0], prediction)
        return pid
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return None


#: Longest token `log_outcome` accepts (it is untrusted input).
MAX_TOKEN = 4096


def prediction_token(prediction_id: str | None = None) -> str | None:
    """A self-contained token for the current prediction (or a stored `prediction_id`), to log its
    outcome from another process: ``log_outcome(model=..., token=t, label=...)``. None if unknown
    or the prediction is not plain JSON data (numbers, strings, lists, dicts)."""
    try:
        if prediction_id is None:
            prediction_id = current_prediction_id()
            if prediction_id is None:
                return None
        entry = BOOK.store.peek(prediction_id)
        if entry is None:
            return None
        _, model, version, segment, window, prediction = entry
        if isinstance(prediction, PendingPrediction):
            prediction = prediction.value()
        if isinstance(prediction, np.generic):
            prediction = prediction.item()
        doc = {"m": model, "v": version, "s": segment, "w": window, "p": prediction}
        raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return token if len(token) <= MAX_TOKEN else None
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return None


def _read_token(token: str) -> tuple[str, str | None, dict[str, str], float, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise ValueError(f"a prediction token is a string of at most {MAX_TOKEN} characters")
    doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    model, version, segment, window = doc.get("m"), doc.get("v"), doc.get("s"), doc.get("w")
    if (not isinstance(model, str) or not (version is None or isinstance(version, str))
            or not isinstance(segment, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in segment.items())
            or type(window) not in (int, float) or not math.isfinite(window)):
        raise ValueError("malformed prediction token")
    return model, version, segment, float(window), doc.get("p")


# ---------------------------------------------------------------------------- folding outcomes
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _unpack_prediction(prediction: Any, score: Any) -> tuple[Any, Any]:
    """A monitored function's return value as (predicted class or value, score or scores)."""
    if isinstance(prediction, Mapping):
        score = next((prediction[k] for k in ("score", "probability", "proba", "probabilities") if k in prediction), score)
        prediction = next((prediction[k] for k in ("predicted_class", "prediction", "label", "class") if k in prediction), None)
    if isinstance(prediction, (list, tuple, np.ndarray)) and score is None:
        score, prediction = prediction, None
    return prediction, score


def _task_of(model: str, prediction: Any, label: Any, score: Any, task: str | None) -> str:
    if task is not None:
        return task
    known = BOOK.tasks.get(model)
    if known is not None:
        return known
    if score is not None or isinstance(label, (str, bool, np.bool_)):
        return "classification"
    if _is_num(prediction) and _is_num(label):
        if float(label) in (0.0, 1.0) and 0.0 <= float(prediction) <= 1.0 and not float(prediction).is_integer():
            return "classification"  # a probability against a 0/1 label
        if isinstance(prediction, (int, np.integer)) and isinstance(label, (int, np.integer)):
            return "classification"
        return "regression"
    return "classification"


def _fold(q: QualitySketch, task: str, prediction: Any, label: Any, score: Any, threshold: float) -> None:
    if task == "regression":
        q.add_regression([float(prediction)], [float(label)])
        return
    if score is None and _is_num(prediction) and not float(prediction).is_integer() and class_key(label) in ("0", "1"):
        score, prediction = prediction, None  # prediction=0.93, label=1: a binary score
    if score is None:
        if prediction is None:
            raise TypeError("cannot tell the predicted class: give prediction= or score=")
        q.add_classification([label], [prediction])
    elif isinstance(score, Mapping):
        scores = {c: [float(v)] for c, v in score.items()}
        pred = prediction if prediction is not None else max(score, key=lambda c: score[c])
        q.add_classification([label], [pred], scores)
    elif isinstance(score, (list, tuple, np.ndarray)):
        arr = [float(v) for v in score]
        if len(arr) == 2 and class_key(label) in ("0", "1"):
            q.add_binary([label], [arr[1]], threshold) if prediction is None else q.add_classification([label], [prediction], {"1": [arr[1]]})
        else:
            pred = prediction if prediction is not None else int(np.argmax(arr))
            q.add_classification([label], [pred], {i: [v] for i, v in enumerate(arr)})
    elif prediction is None:
        q.add_binary([label], [float(score)], threshold)
    else:
        q.add_classification([label], [prediction], {"1": [float(score)]})


def _resolve(model: str, prediction_id: str | None, prediction: Any, segment: Mapping[str, Any] | None,
             version: str | None, timestamp: float | None, token: str | None = None) -> tuple[Any, str | None, dict[str, str], float] | None:
    if token is not None:
        t_model, t_version, t_segment, t_window, t_pred = _read_token(token)
        if t_model != model:
            HEALTH.count_dropped("outcome_wrong_model")
            return None
        return (t_pred if prediction is None else prediction), t_version, {**t_segment, **_clean_segment(segment)}, t_window
    if prediction_id is not None:
        entry = BOOK.store.pop(prediction_id)
        if entry is None:
            if prediction is None:
                return None
        else:
            _, stored_model, stored_version, stored_segment, window, stored_pred = entry
            if stored_model != model:
                HEALTH.count_dropped("outcome_wrong_model")
                return None
            if isinstance(stored_pred, PendingPrediction):
                stored_pred = stored_pred.value()
                if stored_pred is None and prediction is None:  # e.g. the response was not a JSON object
                    HEALTH.count_dropped("outcome_no_prediction")
                    return None
            seg = {**stored_segment, **_clean_segment(segment)}
            return (stored_pred if prediction is None else prediction), stored_version, seg, window
    if prediction is None:
        raise TypeError("log_outcome needs a prediction_id or a prediction")
    window = _window_of(time.time() if timestamp is None else float(timestamp))[0]
    return prediction, version, _clean_segment(segment), window


def log_outcome(
    *,
    model: str,
    label: Any,
    prediction_id: str | None = None,
    prediction: Any = None,
    score: Any = None,
    segment: Mapping[str, Any] | None = None,
    version: str | None = None,
    task: str | None = None,
    threshold: float = 0.5,
    timestamp: float | None = None,
    token: str | None = None,
) -> bool:
    """Record the true `label` of one prediction; returns whether it was counted. Never raises.

    Join by `prediction_id` (from `current_prediction_id()`; the stored prediction, version,
    segment and window are used), or give the `prediction` (a class, a value, or a probability
    against a 0/1 label) and optionally `score` (the positive class's probability, a list of
    class probabilities, or ``{class: probability}``) for ROC AUC. `task` ("classification" or
    "regression") overrides the inference; the model's first outcome fixes it otherwise.
    `timestamp` (epoch seconds) places a direct outcome in the window of its prediction.
    `token` (from `prediction_token()`, possibly in another process) carries the prediction,
    version, segment and window instead of an id.
    """
    try:
        if task not in (None, "classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if label is None or (isinstance(label, float) and math.isnan(label)):
            HEALTH.count_dropped("outcome_missing_label")
            return False
        found = _resolve(model, prediction_id, prediction, segment, version, timestamp, token)
        if found is None:
            return False
        pred, ver, seg, window = found
        pred, score = _unpack_prediction(pred, score)
        kind = _task_of(model, pred, label, score, task)
        if kind == "regression" and not (_is_num(pred) and _is_num(label)):
            raise TypeError(f"a regression outcome needs numeric prediction and label, got {pred!r} and {label!r}")
        with BOOK.lock:
            BOOK.tasks.setdefault(model, kind)
            for q in BOOK.sketches_for(model, ver, seg, window, RUNTIME.settings.window_seconds):
                _fold(q, kind, pred, label, score, threshold)
        return True
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return False


def log_ranking_outcome(
    *,
    model: str,
    relevance: Sequence[float] | None = None,
    ranked: Sequence[Any] | None = None,
    relevant: Iterable[Any] | Mapping[Any, float] | None = None,
    k: int = 10,
    segment: Mapping[str, Any] | None = None,
    version: str | None = None,
    timestamp: float | None = None,
) -> bool:
    """Record one ranked list's outcome: NDCG@k, precision@k, recall@k and average precision.

    Give `relevance` (the relevance of each item in the order shown), or `ranked` (the item ids
    shown, in order) with `relevant` (the ids that were relevant, or ``{id: graded relevance}``).
    Never raises; returns whether it was counted.
    """
    try:
        n_relevant = None
        if relevance is None:
            if ranked is None or relevant is None:
                raise TypeError("log_ranking_outcome needs relevance=, or ranked= with relevant=")
            grades = dict(relevant) if isinstance(relevant, Mapping) else dict.fromkeys(relevant, 1.0)
            relevance = [float(grades.get(item, 0.0)) for item in ranked]
            n_relevant = sum(1 for v in grades.values() if v > 0)
        if type(k) is not int or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        window = _window_of(time.time() if timestamp is None else float(timestamp))[0]
        with BOOK.lock:
            for q in BOOK.sketches_for(model, version, _clean_segment(segment), window, RUNTIME.settings.window_seconds):
                q.add_ranking(relevance, k=k, n_relevant=n_relevant)
        return True
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return False


def log_metric(
    *,
    model: str,
    name: str,
    value: float | Sequence[float],
    segment: Mapping[str, Any] | None = None,
    version: str | None = None,
    timestamp: float | None = None,
) -> bool:
    """Record a proxy metric or business KPI (clicks, conversion, revenue): sketched like a feature,
    reported by `quality()` as ``name.mean``, ``name.p95``, ... and alertable. Never raises."""
    try:
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        values = np.asarray(value, dtype=np.float64).reshape(-1)
        window = _window_of(time.time() if timestamp is None else float(timestamp))[0]
        with BOOK.lock:
            for q in BOOK.sketches_for(model, version, _clean_segment(segment), window, RUNTIME.settings.window_seconds):
                q.add_metric(name, values)
        return True
    except Exception as exc:
        HEALTH.count_error("outcome", exc)
        return False


# ---------------------------------------------------------------------------- reading quality
def quality(source: Profile | Iterable[Profile] | None = None, *, model: str | None = None) -> ModelQuality:
    """Model quality: ``quality(model="fraud")`` over everything this process logged since start,
    or ``quality(profile)`` / ``quality([profiles])`` for stored or merged profiles (per segment
    and version too)."""
    if source is None:
        if model is None:
            raise TypeError("quality() needs a model name or profiles")
        overall = QualitySketch()
        by_segment: dict[str, QualitySketch] = {}
        by_version: dict[str, QualitySketch] = {}
        with BOOK.lock:
            entries = list(BOOK.totals.get(model, {}).items())
            for (ver, seg_key), (_, q) in entries:
                overall.merge_in(q)
                by_segment.setdefault(seg_key, QualitySketch()).merge_in(q)
                by_version.setdefault(ver or "", QualitySketch()).merge_in(q)
        return ModelQuality(model, overall, by_segment, by_version)
    profiles = [source] if isinstance(source, Profile) else list(source)
    if model is not None:
        profiles = [p for p in profiles if p.model == model]
    name = model or (profiles[0].model if profiles else "")
    overall = QualitySketch()
    by_segment = {}
    by_version = {}
    for p in profiles:
        if p.quality is None:
            continue
        overall.merge_in(p.quality)
        by_segment.setdefault(p.segment_key, QualitySketch()).merge_in(p.quality)
        by_version.setdefault(p.version or "", QualitySketch()).merge_in(p.quality)
    return ModelQuality(name, overall, by_segment, by_version)
