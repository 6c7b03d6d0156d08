"""The profile wire format: versioned, checksummed, validated before any native code runs.

Layout (all integers little-endian)::

    0   4  magic  b"MLWP"
    4   2  format version (1; 2 when the profile carries model quality, see below)
    6   2  flags (bit 0: the trailer is an HMAC-SHA256 instead of a SHA-256)
    8   4  header length H
    12  H  header: UTF-8 JSON (identity, window, counters, columns, and for each sketch its
           [offset, length] in the blob area)
    ..     blob area: the sketches' own DataSketches bytes, back to back, in header order
    -32 32 trailer: SHA-256 (or HMAC-SHA256 with the key named in the header) of all bytes before it

Version 2 adds an optional ``quality`` object to the header (confusion counts, regression sums,
ranking sums, proxy metrics) whose KLL sketches (per-class scores, regression errors, metric
values) follow the output columns' sketches in the blob area. Writers use the lowest version
that can hold the profile (1 without quality), so older readers keep reading quality-free
profiles; this reader accepts 1 and 2.

Reading checks, in order and before anything reaches datasketches: total size and caps, magic,
version, flags, header length, the checksum or signature, the JSON header's every field and type,
that the sketches tile the blob area exactly, every sketch's parameters against the caps, and
each sketch's full structure (`mlwatch._validate`). Only then are sketches deserialized.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from mlwatch import _validate
from mlwatch._errors import ProfileFormatError
from mlwatch._json import loads as json_loads
from mlwatch._numeric import NumericSummary
from mlwatch._sketches import FrequentSketch, HllSketch, KllSketch
from mlwatch.column import KINDS, ColumnProfile
from mlwatch.model_quality import ClassificationState, MetricState, QualitySketch, RankingState, RegressionState
from mlwatch.profile import Profile

__all__ = ["FORMAT_VERSION", "MAGIC", "SUPPORTED_VERSIONS", "WireLimits", "decode", "encode"]

MAGIC = b"MLWP"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<4sHHI")
_TRAILER = 32
_FLAG_HMAC = 1


@dataclass(frozen=True)
class WireLimits:
    """Caps applied to untrusted profile bytes before parsing (the collector tightens these)."""

    max_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 16 * 1024 * 1024
    max_columns: int = 10_000
    max_kll_k: int = 1024
    max_freq_lg: int = 16
    max_hll_lg: int = 16
    max_extremes: int = 4096
    max_name_length: int = 1024
    max_quality_entries: int = 100_000  # confusion cells, score sketches and proxy metrics in a quality part


_DEFAULT_LIMITS = WireLimits()


# ---------------------------------------------------------------------------- encode
class _Blobs:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def _float_out(x: float) -> float | str:
    """JSON has no inf/NaN: they travel as strings."""
    return x if math.isfinite(x) else repr(x)


def _column_out(col: ColumnProfile, blobs: _Blobs) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": col.name,
        "declared_kind": col.declared_kind,
        "count": col.count,
        "missing": col.missing,
        "non_finite": col.non_finite,
        "n_numeric": col.n_numeric,
        "n_categorical": col.n_categorical,
        "n_text": col.n_text,
        "n_other": col.n_other,
        "kll_k": col._kll_k,
        "freq_lg": col._freq_lg,
        "hll_lg": col._hll_lg,
        "n_extremes": col.n_extremes,
        "max_category_length": col.max_category_length,
    }
    num = col.numeric
    if num is not None:
        out["numeric"] = {
            "n": num.n,
            "mean": _float_out(num.mean),
            "m2": _float_out(num.m2),
            "min": _float_out(num.min),
            "max": _float_out(num.max),
            "kll": blobs.add(num.kll.to_bytes()),
            "low": blobs.add(num.low.astype("<f8").tobytes()),
            "high": blobs.add(num.high.astype("<f8").tobytes()),
        }
    if col.freq is not None and col.hll is not None:
        out["freq"] = blobs.add(col.freq.to_bytes())
        out["hll"] = blobs.add(col.hll.to_bytes())
    if col.text_length is not None:
        out["text_length"] = blobs.add(col.text_length.to_bytes())
    return out


def encode(profile: Profile, *, hmac_key: bytes | None = None, key_id: str | None = None) -> bytes:
    blobs = _Blobs()
    header: dict[str, Any] = {
        "model": profile.model,
        "version": profile.version,
        "segment": profile.segment,
        "window_start": profile.window_start,
        "window_end": profile.window_end,
        "rows": profile.rows,
        "calls": profile.calls,
        "dropped": profile.dropped,
        "errors": profile.errors,
        "latency": blobs.add(profile.latency.to_bytes()) if profile.latency is not None else None,
        "columns": [_column_out(c, blobs) for c in profile.columns.values()],
        "outputs": [_column_out(c, blobs) for c in profile.outputs.values()],
    }
    version = 1
    if profile.quality is not None and not profile.quality.is_empty():
        header["quality"] = _quality_out(profile.quality, blobs)
        version = 2
    flags = 0
    if hmac_key is not None:
        flags |= _FLAG_HMAC
        header["signature"] = {"key_id": key_id or "default", "signed_at": time.time()}
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body = b"".join([_PREFIX.pack(MAGIC, version, flags, len(head)), head, *blobs.parts])
    if hmac_key is not None:
        trailer = hmac.new(hmac_key, body, hashlib.sha256).digest()
    else:
        trailer = hashlib.sha256(body).digest()
    return body + trailer


# ---------------------------------------------------------------------------- decode
class _Reader:
    """Typed access to the untrusted JSON header: every read states what it expects."""

    def __init__(self, blob: memoryview, limits: WireLimits, extremes: _Extremes | None) -> None:
        self.blob = blob
        self.limits = limits
        self.claimed: list[tuple[int, int]] = []
        self.column_params = _column_params(limits)
        #: Where numeric columns' extreme values go to be checked in one pass; None: each at once.
        self.extremes = extremes

    @staticmethod
    def int_(obj: Mapping[str, Any], key: str, where: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
        value = obj.get(key)
        if type(value) is not int or not lo <= value <= hi:
            raise ProfileFormatError(f"{where}: field {key!r} must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    @classmethod
    def ints(cls, obj: Mapping[str, Any], spec: _IntSpec, where: str) -> list[int]:
        """`int_` for each (key, lo, hi) of `spec`, in order, in one loop (a column reads a dozen)."""
        out: list[int] = []
        for key, lo, hi in spec:
            value = obj.get(key)
            if type(value) is not int or not lo <= value <= hi:
                value = cls.int_(obj, key, where, lo=lo, hi=hi)  # raises, with the message
            out.append(value)
        return out

    @staticmethod
    def float_(obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> float:
        value = obj.get(key)
        if type(value) is float:  # the common case, first
            return value
        if value is None and optional:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a JSON integer beyond float range
                raise ProfileFormatError(f"{where}: field {key!r} is beyond the float range") from None
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):
            return float(value)
        raise ProfileFormatError(f"{where}: field {key!r} must be a number, got {value!r}")

    def str_(self, obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
        value = obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > self.limits.max_name_length:
            raise ProfileFormatError(
                f"{where}: field {key!r} must be a string of at most {self.limits.max_name_length} characters"
            )
        return value

    def blob_view(self, obj: Mapping[str, Any], key: str, where: str) -> memoryview:
        ref = obj.get(key)
        if not isinstance(ref, list) or len(ref) != 2:
            raise ProfileFormatError(f"{where}: sketch reference {key!r} is not a valid [offset, length]: {ref!r}")
        offset, length = ref
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0 or offset + length > len(self.blob):
            raise ProfileFormatError(f"{where}: sketch reference {key!r} is not a valid [offset, length]: {ref!r}")
        self.claimed.append((offset, length))
        return self.blob[offset : offset + length]

    def blob_ref(self, obj: Mapping[str, Any], key: str, where: str) -> bytes:
        return bytes(self.blob_view(obj, key, where))

    def check_tiling(self) -> None:
        """Sketch references must cover the blob area exactly once, in order, with no gap."""
        pos = 0
        for offset, length in self.claimed:
            if offset != pos:
                raise ProfileFormatError(f"sketch at offset {offset} does not follow the previous one (expected {pos})")
            pos += length
        if pos != len(self.blob):
            raise ProfileFormatError(f"blob area has {len(self.blob)} bytes but sketches account for {pos}")


_IntSpec = tuple[tuple[str, int, int], ...]
_COUNTERS: _IntSpec = tuple(
    (key, 0, 2**63 - 1) for key in ("count", "missing", "non_finite", "n_numeric", "n_categorical", "n_text", "n_other")
)


@lru_cache(maxsize=16)
def _column_params(lim: WireLimits) -> _IntSpec:
    """A column's sketch parameters and their bounds under `lim`, in the order they are read."""
    return (
        ("kll_k", 8, lim.max_kll_k),
        ("freq_lg", 3, lim.max_freq_lg),
        ("hll_lg", 4, lim.max_hll_lg),
        ("n_extremes", 0, lim.max_extremes),
        ("max_category_length", 0, 2**31),
    )


def _floats(data: bytes, where: str, limit: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    if len(data) % 8 or len(data) // 8 > limit:
        raise ProfileFormatError(f"{where}: extreme values block has an invalid size {len(data)}")
    arr = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not _ascending_finite(arr.tolist()):  # a few dozen values: plain Python beats numpy's per-call overhead
        raise ProfileFormatError(f"{where}: extreme values must be finite and sorted")
    return arr


class _Extremes:
    """Numeric columns' extreme-value blocks, checked like `_floats` and split in one numpy pass."""

    def __init__(self) -> None:
        self.summaries: list[NumericSummary] = []
        self.blocks: list[memoryview] = []  # each summary's low, then its high

    def add(self, summary: NumericSummary, low: memoryview, high: memoryview) -> None:
        self.summaries.append(summary)
        self.blocks += (low, high)

    def attach(self) -> None:
        """Set every summary's low and high; a ProfileFormatError (saying only that some block is
        malformed: `_floats` names it) when a block is not a whole, finite, ascending array of at
        most n_extremes values."""
        starts = [0]
        for i, block in enumerate(self.blocks):
            if len(block) % 8 or len(block) // 8 > self.summaries[i // 2].n_extremes:
                raise ProfileFormatError("an extreme values block has an invalid size")
            starts.append(starts[-1] + len(block) // 8)
        if starts[-1] == 0:
            return
        values = np.frombuffer(b"".join(self.blocks), dtype="<f8").astype(np.float64)
        descent = values[1:] < values[:-1]
        descent[[i - 1 for i in starts[1:-1] if 0 < i < starts[-1]]] = False  # from one block into the next
        if not np.isfinite(values).all() or descent.any():
            raise ProfileFormatError("extreme values must be finite and sorted")
        for i, summary in enumerate(self.summaries):
            summary.low = values[starts[2 * i] : starts[2 * i + 1]]
            summary.high = values[starts[2 * i + 1] : starts[2 * i + 2]]


def _ascending_finite(values: list[float]) -> bool:
    """All finite and in ascending order, in three C-speed passes instead of a per-item comparison."""
    if not values:
        return True
    total = sum(values)
    # NaN only from a NaN or from inf + -inf (finite values overflow to +-inf, never to NaN); then
    # finite ends and no NaN make every value finite, and a stable sort of ascending values is a no-op.
    return total == total and -math.inf < values[0] and values[-1] < math.inf and sorted(values) == values


def _column_in(obj: Any, r: _Reader, where: str) -> tuple[ColumnProfile, list[tuple[str, bytes]]]:
    """Parse one column's header; returns it with its sketch bytes still to be validated."""
    if not isinstance(obj, dict):
        raise ProfileFormatError(f"{where}: column entry must be an object")
    name = r.str_(obj, "name", where)
    assert name is not None
    where = f"{where} {name!r}"
    declared = obj.get("declared_kind")
    if declared is not None and declared not in KINDS:
        raise ProfileFormatError(f"{where}: unknown declared kind {declared!r}")
    kll_k, freq_lg, hll_lg, n_extremes, max_category_length = r.ints(obj, r.column_params, where)
    col = ColumnProfile(
        name, kind=declared, kll_k=kll_k, freq_lg=freq_lg, hll_lg=hll_lg, n_extremes=n_extremes,
        max_category_length=max_category_length,
    )
    counts = r.ints(obj, _COUNTERS, where)
    col.count, col.missing, col.non_finite, col.n_numeric, col.n_categorical, col.n_text, col.n_other = counts
    parts = sum(counts) - col.count
    if parts != col.count:
        raise ProfileFormatError(f"{where}: value counts add up to {parts}, not to count={col.count}")
    sketches: list[tuple[str, bytes]] = []
    num = obj.get("numeric")
    if num is not None:
        if not isinstance(num, dict):
            raise ProfileFormatError(f"{where}: 'numeric' must be an object")
        summary = NumericSummary(col._kll_k, col.n_extremes)
        summary.n = r.int_(num, "n", where)
        if summary.n != col.n_numeric:
            raise ProfileFormatError(f"{where}: numeric n={summary.n} differs from n_numeric={col.n_numeric}")
        summary.mean = r.float_(num, "mean", where)
        summary.m2 = r.float_(num, "m2", where)
        summary.min = r.float_(num, "min", where)
        summary.max = r.float_(num, "max", where)
        sketches.append(("kll", r.blob_ref(num, "kll", where)))
        if r.extremes is None:
            summary.low = _floats(r.blob_ref(num, "low", where), where, col.n_extremes)
            summary.high = _floats(r.blob_ref(num, "high", where), where, col.n_extremes)
        else:
            r.extremes.add(summary, r.blob_view(num, "low", where), r.blob_view(num, "high", where))
        col.numeric = summary
    elif col.n_numeric:
        raise ProfileFormatError(f"{where}: n_numeric={col.n_numeric} but no numeric summary")
    if "freq" in obj or "hll" in obj:
        sketches.append(("freq", r.blob_ref(obj, "freq", where)))
        sketches.append(("hll", r.blob_ref(obj, "hll", where)))
    if "text_length" in obj:
        sketches.append(("text_length", r.blob_ref(obj, "text_length", where)))
    return col, sketches


def _attach_sketches(
    col: ColumnProfile, sketches: list[tuple[str, bytes]], lim: WireLimits, where: str, *, kll_validated: bool
) -> None:
    """Validate each sketch's structure (KLL's already when `kll_validated`), then deserialize and cross-check it with the counters."""
    for kind, data in sketches:
        if kind == "kll":
            kll = KllSketch.from_bytes(data, max_k=lim.max_kll_k, validated=kll_validated)
            assert col.numeric is not None
            if kll.n != col.numeric.n or kll.k != col._kll_k:
                raise ProfileFormatError(f"{where}: numeric sketch holds n={kll.n}, k={kll.k}; header says n={col.numeric.n}, k={col._kll_k}")
            col.numeric.kll = kll
        elif kind == "freq":
            col.freq = FrequentSketch.from_bytes(data, max_lg_map_size=lim.max_freq_lg)
            if col.freq.total_weight != col.n_categorical:
                raise ProfileFormatError(
                    f"{where}: category sketch weight {col.freq.total_weight} differs from n_categorical={col.n_categorical}"
                )
        elif kind == "hll":
            col.hll = HllSketch.from_bytes(data, max_lg_k=lim.max_hll_lg)
        else:
            col.text_length = KllSketch.from_bytes(data, max_k=lim.max_kll_k, validated=kll_validated)
            if col.text_length.n != col.n_text:
                raise ProfileFormatError(f"{where}: text length sketch n={col.text_length.n} differs from n_text={col.n_text}")


def decode(data: bytes, *, hmac_keys: Mapping[str, bytes] | None = None, limits: WireLimits | None = None) -> Profile:
    lim = limits or _DEFAULT_LIMITS
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProfileFormatError(f"profile data must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) > lim.max_bytes:
        raise ProfileFormatError(f"profile is {len(view)} bytes, over the {lim.max_bytes}-byte limit")
    if len(view) < _PREFIX.size + _TRAILER:
        raise ProfileFormatError(f"profile is {len(view)} bytes: too short to be an mlwatch profile")
    magic, version, flags, head_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise ProfileFormatError(f"not an mlwatch profile (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version not in SUPPORTED_VERSIONS:
        raise ProfileFormatError(
            f"unsupported profile format version {version}; this mlwatch reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    if flags & ~_FLAG_HMAC:
        raise ProfileFormatError(f"unknown flags 0x{flags:04x} in profile header")
    if head_len > lim.max_header_bytes or _PREFIX.size + head_len > len(view) - _TRAILER:
        raise ProfileFormatError(f"header length {head_len} does not fit in a {len(view)}-byte profile")
    body = view[: len(view) - _TRAILER]
    trailer = bytes(view[len(view) - _TRAILER :])
    signed = bool(flags & _FLAG_HMAC)
    if hmac_keys is not None and not signed:
        raise ProfileFormatError("profile is not signed, but a signature is required")
    if not signed and not hmac.compare_digest(hashlib.sha256(body).digest(), trailer):
        raise ProfileFormatError("profile checksum mismatch: the bytes are corrupted or truncated")
    try:  # orjson when installed: 2-4x faster on a header
        header = json_loads(bytes(view[_PREFIX.size : _PREFIX.size + head_len]))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProfileFormatError(f"profile header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProfileFormatError("profile header must be a JSON object")
    if signed:
        sig = header.get("signature")
        key_id = sig.get("key_id") if isinstance(sig, dict) else None
        if hmac_keys is None:
            # Without keys a signed profile can only be checked for the header's integrity: accept
            # it (a local file, say) but the payload's authenticity is not established.
            pass
        elif not isinstance(key_id, str) or key_id not in hmac_keys:
            raise ProfileFormatError(f"profile is signed with an unknown key id {key_id!r}")
        else:
            expected = hmac.new(hmac_keys[key_id], body, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, trailer):
                raise ProfileFormatError("profile signature does not verify: forged or corrupted")
    blob = body[_PREFIX.size + head_len :]
    if version < 2 and "quality" in header:
        raise ProfileFormatError("profile format version 1 cannot carry a 'quality' part")
    extremes = _Extremes()
    try:
        return _profile_from_header(header, blob, lim, extremes)
    except Exception:
        if not extremes.blocks:  # no check was deferred before the one that failed: it is the first
            raise
        # Read again with every check in header order, so that what is raised is what that order
        # meets first, as if the extreme values had not been checked in a batch.
        return _profile_from_header(header, blob, lim, None)


#: Window bounds are epoch seconds: anything this large (or inf, NaN, or a JSON integer beyond float
#: range, which math.isfinite would raise OverflowError on) is not one.
_WINDOW_LIMIT = 1e15


def _profile_from_header(header: dict[str, Any], blob: memoryview, lim: WireLimits, extremes: _Extremes | None) -> Profile:
    r = _Reader(blob, lim, extremes)
    model = r.str_(header, "model", "profile")
    assert model is not None
    segment = header.get("segment")
    if not isinstance(segment, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in segment.items()):
        raise ProfileFormatError("profile: 'segment' must be an object of strings")
    ws, we = header.get("window_start"), header.get("window_end")
    for key, w in (("window_start", ws), ("window_end", we)):
        if w is not None and (type(w) not in (int, float) or not -_WINDOW_LIMIT < w < _WINDOW_LIMIT):
            raise ProfileFormatError(f"profile: {key!r} must be epoch seconds (a finite number below 1e15 in magnitude) or null")
    p = Profile(
        model,
        version=r.str_(header, "version", "profile", optional=True),
        segment=segment,
        window_start=None if ws is None else float(ws),
        window_end=None if we is None else float(we),
    )
    p.rows = r.int_(header, "rows", "profile")
    p.calls = r.int_(header, "calls", "profile")
    p.dropped = r.int_(header, "dropped", "profile")
    errors = header.get("errors")
    if not isinstance(errors, dict) or len(errors) > lim.max_columns:
        raise ProfileFormatError("profile: 'errors' must be an object of counts")
    for name in errors:
        r.str_({"e": name}, "e", "profile error type")
        p.errors[name] = r.int_(errors, name, "profile errors")
    pending: list[tuple[ColumnProfile, list[tuple[str, bytes]], str]] = []
    latency_bytes = r.blob_ref(header, "latency", "profile latency") if header.get("latency") is not None else None
    for section, target in (("columns", p.columns), ("outputs", p.outputs)):
        entries = header.get(section)
        if not isinstance(entries, list) or len(entries) > lim.max_columns:
            raise ProfileFormatError(f"profile: {section!r} must be a list of at most {lim.max_columns} columns")
        for i, entry in enumerate(entries):
            col, sketches = _column_in(entry, r, f"{section}[{i}]")
            if col.name in target:
                raise ProfileFormatError(f"profile: column {col.name!r} appears twice in {section!r}")
            target[col.name] = col
            pending.append((col, sketches, f"{section} {col.name!r}"))
    if extremes is not None:
        extremes.attach()
    quality_pending = _quality_in(header["quality"], r) if header.get("quality") is not None else None
    r.check_tiling()
    # Only now, with every reference and counter consistent, does any sketch reach native code.
    # The KLL sketches' items are checked in one batch; when it finds a defect, each sketch is
    # validated on its own as it is attached, which names the first defect.
    kll_validated = _validate.kll_doubles_all_valid(
        _kll_images(latency_bytes, pending, quality_pending), max_k=lim.max_kll_k
    )
    if latency_bytes is not None:
        p.latency = KllSketch.from_bytes(latency_bytes, max_k=lim.max_kll_k, validated=kll_validated)
    for col, sketches, where in pending:
        _attach_sketches(col, sketches, lim, where, kll_validated=kll_validated)
    if quality_pending is not None:
        p.quality = _attach_quality(*quality_pending, lim, kll_validated=kll_validated)
    return p


def _kll_images(
    latency: bytes | None,
    pending: list[tuple[ColumnProfile, list[tuple[str, bytes]], str]],
    quality: tuple[QualitySketch, list[_QualityBlob]] | None,
) -> list[bytes]:
    """Every KLL sketch image of a profile."""
    images = [] if latency is None else [latency]
    images += [data for _, sketches, _ in pending for kind, data in sketches if kind in ("kll", "text_length")]
    if quality is not None:
        images += [data for _, _, _, data in quality[1]]
    return images


# ---------------------------------------------------------------------------- model quality (version 2)
def _quality_out(q: QualitySketch, blobs: _Blobs) -> dict[str, Any]:
    out: dict[str, Any] = {"k": q.k}
    c = q.classification
    if c is not None:
        out["classification"] = {
            "k": c.k,
            "confusion": [[lab, pred, n] for (lab, pred), n in c.confusion.items()],
            "scores": [[cls, side, blobs.add(sk.to_bytes())]
                       for side, sketches in (("pos", c.pos_scores), ("neg", c.neg_scores))
                       for cls, sk in sketches.items()],
        }
    g = q.regression
    if g is not None:
        out["regression"] = {
            "n": g.n,
            **{name: _float_out(getattr(g, name)) for name in _REGRESSION_FLOATS},
            "errors": blobs.add(g.errors.to_bytes()),
        }
    rk = q.ranking
    if rk is not None:
        out["ranking"] = {"k": rk.k, "n": rk.n, **{name: _float_out(getattr(rk, name)) for name in _RANKING_FLOATS}}
    if q.metrics:
        out["metrics"] = [[name, m.n, _float_out(m.total), blobs.add(m.kll.to_bytes())] for name, m in q.metrics.items()]
    return out


_REGRESSION_FLOATS = ("sum_err", "sum_abs", "sum_sq", "sum_ape", "y_mean", "y_m2")
_RANKING_FLOATS = ("sum_ndcg", "sum_precision", "sum_recall", "sum_ap")

# (what the sketch is, where it goes, the count it must hold or -1 for "at most the labeled rows")
_QualityBlob = tuple[str, str, int, bytes]


def _quality_in(obj: Any, r: _Reader) -> tuple[QualitySketch, list[_QualityBlob]]:
    """Parse the quality header; its sketch bytes are validated and attached after the tiling check."""
    where = "profile quality"
    if not isinstance(obj, dict):
        raise ProfileFormatError(f"{where}: must be an object")
    lim = r.limits
    q = QualitySketch(r.int_(obj, "k", where, lo=8, hi=lim.max_kll_k))
    blobs: list[_QualityBlob] = []
    cls_obj = obj.get("classification")
    if cls_obj is not None:
        w = f"{where} classification"
        if not isinstance(cls_obj, dict):
            raise ProfileFormatError(f"{w}: must be an object")
        state = ClassificationState(r.int_(cls_obj, "k", w, lo=8, hi=lim.max_kll_k))
        confusion, scores = cls_obj.get("confusion"), cls_obj.get("scores")
        if not isinstance(confusion, list) or not isinstance(scores, list) or len(confusion) + len(scores) > lim.max_quality_entries:
            raise ProfileFormatError(f"{w}: 'confusion' and 'scores' must be lists of at most {lim.max_quality_entries} entries")
        for cell in confusion:
            if not isinstance(cell, list) or len(cell) != 3:
                raise ProfileFormatError(f"{w}: a confusion cell must be [label, predicted, count]")
            entry = {"label": cell[0], "predicted": cell[1], "n": cell[2]}
            pair = (r.str_(entry, "label", w) or "", r.str_(entry, "predicted", w) or "")
            if pair in state.confusion:
                raise ProfileFormatError(f"{w}: confusion cell {pair!r} appears twice")
            state.confusion[pair] = r.int_(entry, "n", w)
        seen: set[tuple[str, str]] = set()
        for item in scores:
            if not isinstance(item, list) or len(item) != 3 or item[1] not in ("pos", "neg"):
                raise ProfileFormatError(f"{w}: a score sketch must be [class, 'pos' or 'neg', [offset, length]]")
            cls = r.str_({"c": item[0]}, "c", w) or ""
            if (cls, item[1]) in seen:
                raise ProfileFormatError(f"{w}: score sketch {cls!r}/{item[1]} appears twice")
            seen.add((cls, item[1]))
            blobs.append(("score", f"{item[1]}:{cls}", -1, r.blob_ref({"ref": item[2]}, "ref", w)))
        q.classification = state
    reg = obj.get("regression")
    if reg is not None:
        w = f"{where} regression"
        if not isinstance(reg, dict):
            raise ProfileFormatError(f"{w}: must be an object")
        g = RegressionState(q.k)
        g.n = r.int_(reg, "n", w)
        for name in _REGRESSION_FLOATS:
            setattr(g, name, r.float_(reg, name, w))
        blobs.append(("errors", "", g.n, r.blob_ref(reg, "errors", w)))
        q.regression = g
    rank = obj.get("ranking")
    if rank is not None:
        w = f"{where} ranking"
        if not isinstance(rank, dict):
            raise ProfileFormatError(f"{w}: must be an object")
        rk = RankingState(r.int_(rank, "k", w, lo=1, hi=2**31))
        rk.n = r.int_(rank, "n", w)
        for name in _RANKING_FLOATS:
            setattr(rk, name, r.float_(rank, name, w))
        q.ranking = rk
    metrics = obj.get("metrics")
    if metrics is not None:
        w = f"{where} metrics"
        if not isinstance(metrics, list) or len(metrics) > lim.max_quality_entries:
            raise ProfileFormatError(f"{w}: must be a list of at most {lim.max_quality_entries} metrics")
        for item in metrics:
            if not isinstance(item, list) or len(item) != 4:
                raise ProfileFormatError(f"{w}: a metric must be [name, count, sum, [offset, length]]")
            entry = {"name": item[0], "n": item[1], "total": item[2]}
            name = r.str_(entry, "name", w) or ""
            if name in q.metrics:
                raise ProfileFormatError(f"{w}: metric {name!r} appears twice")
            m = MetricState(q.k)
            m.n = r.int_(entry, "n", w)
            m.total = r.float_(entry, "total", w)
            q.metrics[name] = m
            blobs.append(("metric", name, m.n, r.blob_ref({"ref": item[3]}, "ref", w)))
    return q, blobs


def _attach_quality(
    q: QualitySketch, blobs: list[_QualityBlob], lim: WireLimits, *, kll_validated: bool
) -> QualitySketch:
    """Validate (`_validate` via `KllSketch.from_bytes`, unless `kll_validated`), deserialize and cross-check the quality sketches."""
    labeled = q.classification.n if q.classification is not None else 0
    for kind, name, expected_n, data in blobs:
        sk = KllSketch.from_bytes(data, max_k=lim.max_kll_k, validated=kll_validated)
        where = f"profile quality {kind} {name!r}"
        if expected_n >= 0 and sk.n != expected_n:
            raise ProfileFormatError(f"{where}: sketch holds n={sk.n}, header says n={expected_n}")
        if kind == "score":
            assert q.classification is not None
            if sk.n > labeled or sk.k != q.classification.k:
                raise ProfileFormatError(f"{where}: sketch n={sk.n}, k={sk.k} does not fit {labeled} labeled rows at k={q.classification.k}")
            side, cls = name.split(":", 1)
            (q.classification.pos_scores if side == "pos" else q.classification.neg_scores)[cls] = sk
        elif kind == "errors":
            assert q.regression is not None
            q.regression.errors = sk
        else:
            q.metrics[name].kll = sk
    return q
