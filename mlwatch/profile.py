"""`Profile`: the mergeable summary of a model's inputs, outputs and health over one window."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from mlwatch._errors import ProfileMergeError
from mlwatch._sketches import DEFAULT_KLL_K, KllSketch
from mlwatch.column import ColumnProfile
from mlwatch.model_quality import QualitySketch

__all__ = ["Profile", "merge"]

#: The segment value shown for merged profiles whose segments (or versions) differ.
MIXED = "*"


class Profile:
    """Identity, window, counters, latency and one `ColumnProfile` per input and output column.

    Profiles are monoids: `merge` is associative and commutative, exact on counters, and within
    the sketches' documented bounds on distributions. Merging the profiles of N replicas equals
    profiling the union of their traffic.
    """

    __slots__ = (
        "calls",
        "columns",
        "dropped",
        "errors",
        "latency",
        "model",
        "outputs",
        "quality",
        "rows",
        "segment",
        "version",
        "window_end",
        "window_start",
    )

    def __init__(
        self,
        model: str,
        *,
        version: str | None = None,
        segment: Mapping[str, str] | None = None,
        window_start: float | None = None,
        window_end: float | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.segment: dict[str, str] = dict(sorted((str(k), str(v)) for k, v in (segment or {}).items()))
        self.window_start = window_start
        self.window_end = window_end
        self.rows = 0  # rows of input data profiled
        self.calls = 0  # monitored calls (0 for batch profiles)
        self.errors: dict[str, int] = {}  # exception type name -> count
        self.dropped = 0  # records dropped before profiling (full buffer)
        self.latency: KllSketch | None = None  # seconds per call
        self.columns: dict[str, ColumnProfile] = {}
        self.outputs: dict[str, ColumnProfile] = {}
        #: Model quality from outcomes logged for this window's predictions (`mlwatch.model_quality`).
        self.quality: QualitySketch | None = None

    # ------------------------------------------------------------------ derived
    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def segment_key(self) -> str:
        """The segment as one stable string, e.g. ``country=DE,tier=gold`` ("" for none)."""
        return ",".join(f"{k}={v}" for k, v in self.segment.items())

    def __repr__(self) -> str:
        window = "" if self.window_start is None else f", window=[{self.window_start}, {self.window_end})"
        seg = f", segment={self.segment_key!r}" if self.segment else ""
        version = f", version={self.version!r}" if self.version is not None else ""
        return (
            f"Profile(model={self.model!r}{version}{seg}{window}, rows={self.rows}, calls={self.calls}, "
            f"columns={len(self.columns)}, outputs={len(self.outputs)})"
        )

    # ------------------------------------------------------------------ merge
    def merge(self, other: Profile) -> Profile:
        """A new profile holding both; neither input is changed."""
        result = self.copy()
        result.merge_in(other)
        return result

    def merge_in(self, other: Profile) -> None:
        """Fold `other` into this profile in place."""
        if other.model != self.model:
            raise ProfileMergeError(
                f"cannot merge profiles of different models: {self.model!r} and {other.model!r}"
            )
        if other.version != self.version:
            self.version = MIXED
        if other.segment != self.segment:
            self.segment = {k: (v if other.segment.get(k) == v else MIXED) for k, v in self.segment.items()}
            for k in other.segment.keys() - self.segment.keys():
                self.segment[k] = MIXED
            self.segment = dict(sorted(self.segment.items()))
        self.window_start = _min_opt(self.window_start, other.window_start)
        self.window_end = _max_opt(self.window_end, other.window_end)
        # An input column a profile never saw was missing in each of its rows: pad before adding,
        # so merging equals profiling the union (where absent keys count as missing).
        _merge_columns(self.columns, other.columns, pad_self=self.rows, pad_other=other.rows)
        _merge_columns(self.outputs, other.outputs)
        self.rows += other.rows
        self.calls += other.calls
        self.dropped += other.dropped
        for name, n in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + n
        if other.latency is not None:
            if self.latency is None:
                self.latency = other.latency.copy()
            else:
                self.latency.merge(other.latency)
        if other.quality is not None:
            if self.quality is None:
                self.quality = other.quality.copy()
            else:
                self.quality.merge_in(other.quality)

    def copy(self) -> Profile:
        clone = Profile(
            self.model,
            version=self.version,
            segment=self.segment,
            window_start=self.window_start,
            window_end=self.window_end,
        )
        clone.rows = self.rows
        clone.calls = self.calls
        clone.dropped = self.dropped
        clone.errors = dict(self.errors)
        clone.latency = self.latency.copy() if self.latency is not None else None
        clone.columns = {name: col.copy() for name, col in self.columns.items()}
        clone.outputs = {name: col.copy() for name, col in self.outputs.items()}
        clone.quality = self.quality.copy() if self.quality is not None else None
        return clone

    def record_latency(self, seconds: Iterable[float], k: int = DEFAULT_KLL_K) -> None:
        import numpy as np

        # An array is taken as it is: fromiter would walk it as one numpy scalar object per value.
        arr = np.asarray(seconds, dtype=np.float64) if isinstance(seconds, np.ndarray) else np.fromiter(seconds, dtype=np.float64)
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.shape[0]:
            if self.latency is None:
                self.latency = KllSketch(k)
            self.latency.update(np.sort(arr))  # KLL takes a sorted batch about twice as fast

    # ------------------------------------------------------------------ bytes and files
    def to_bytes(self, *, hmac_key: bytes | None = None, key_id: str | None = None) -> bytes:
        """The versioned wire format (see `mlwatch._wire`); signed with HMAC-SHA256 when a key is given."""
        from mlwatch._wire import encode

        return encode(self, hmac_key=hmac_key, key_id=key_id)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        hmac_keys: Mapping[str, bytes] | None = None,
        limits: Any = None,
    ) -> Profile:
        """Parse and validate untrusted bytes; raises `ProfileFormatError` on anything malformed.

        With `hmac_keys` ({key id: key}) only payloads signed by one of those keys are accepted.
        `limits` is a `mlwatch.WireLimits` capping sizes before any parsing.
        """
        from mlwatch._wire import decode

        return decode(data, hmac_keys=hmac_keys, limits=limits)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile atomically (a reader never sees a half-written file)."""
        target = os.fspath(path)
        tmp = f"{target}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(self.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> Profile:
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read(), **kwargs)


def _merge_columns(
    into: dict[str, ColumnProfile], other: Mapping[str, ColumnProfile], *, pad_self: int = 0, pad_other: int = 0
) -> None:
    for name, col in into.items():
        if name not in other and pad_other:
            col.add_missing(pad_other)
    for name, col in other.items():
        mine = into.get(name)
        if mine is None:
            mine = into[name] = col.copy()
            if pad_self:
                mine.add_missing(pad_self)
        else:
            mine.merge(col)


def _min_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def merge(profiles: Iterable[Profile]) -> Profile:
    """Merge any number of profiles of one model (a tree reduce would give the same result)."""
    it = iter(profiles)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("merge() needs at least one profile") from None
    result = first.copy()
    for p in it:
        result.merge_in(p)
    return result
