"""Typed adapters over Apache DataSketches: the only module that touches the native library.

Every sketch type mlwatch keeps has one small class here with the operations the rest of the
package needs: batched updates (chunked so one native call never holds the GIL for long),
merge, and serialization. Deserialization always runs the pure-Python structural validator
first, because datasketches' native deserializers can crash the process on corrupted bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import datasketches as _ds
import numpy as np
import numpy.typing as npt

from mlwatch import _validate
from mlwatch._errors import ProfileFormatError, ProfileMergeError
from mlwatch._gil import offer

__all__ = [
    "CHUNK",
    "DEFAULT_FREQ_LG",
    "DEFAULT_HLL_LG",
    "DEFAULT_KLL_K",
    "FrequentSketch",
    "HllSketch",
    "KllSketch",
]

#: Values handed to one native update call; datasketches never releases the GIL, and 10k values
#: take about 0.2 ms (the GIL is offered to waiting threads between chunks).
CHUNK = 10_000
DEFAULT_KLL_K = 200
#: 2**11 map slots keep up to 0.75 * 2048 = 1536 distinct values exactly (the goal is 1,000).
DEFAULT_FREQ_LG = 11
DEFAULT_HLL_LG = 12

_NO_FALSE_NEGATIVES = _ds.frequent_items_error_type.NO_FALSE_NEGATIVES


class KllSketch:
    """A KLL doubles quantile sketch (64-bit floats, so integers below 2**53 stay exact)."""

    __slots__ = ("_sk",)

    def __init__(self, k: int = DEFAULT_KLL_K, *, _sketch: _ds.kll_doubles_sketch | None = None) -> None:
        self._sk = _sketch if _sketch is not None else _ds.kll_doubles_sketch(k)

    @property
    def k(self) -> int:
        return int(self._sk.k)

    @property
    def n(self) -> int:
        return int(self._sk.n)

    def is_empty(self) -> bool:
        return bool(self._sk.is_empty())

    def update(self, values: npt.NDArray[np.float64]) -> None:
        """Add finite float64 values (the caller filters NaN and inf), in GIL-friendly chunks."""
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if not arr.flags.writeable:  # the binding refuses read-only views (pandas copy-on-write)
            arr = arr.copy()
        for start in range(0, arr.shape[0], CHUNK):
            if start:
                offer()
            self._sk.update(arr[start : start + CHUNK])

    def merge(self, other: KllSketch) -> None:
        if other.k != self.k:
            raise ProfileMergeError(f"cannot merge KLL sketches with k={self.k} and k={other.k}")
        self._sk.merge(other._sk)

    def copy(self) -> KllSketch:
        return KllSketch(_sketch=_ds.kll_doubles_sketch.deserialize(self._sk.serialize()))

    def quantiles(self, ranks: Sequence[float]) -> npt.NDArray[np.float64]:
        if self.is_empty():
            return np.full(len(ranks), np.nan)
        return np.asarray(self._sk.get_quantiles(list(ranks)), dtype=np.float64)

    def quantile(self, rank: float) -> float:
        return float(self.quantiles([rank])[0])

    def cdf(self, split_points: Sequence[float], *, inclusive: bool = True) -> npt.NDArray[np.float64]:
        """Estimated share of values <= each split point (< with ``inclusive=False``), then 1.0."""
        if self.is_empty():
            return np.full(len(split_points) + 1, np.nan)
        return np.asarray(self._sk.get_cdf(list(split_points), inclusive), dtype=np.float64)

    def items(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The retained items and their weights (a few hundred pairs), sorted by item."""
        pairs = np.array(list(self._sk), dtype=np.float64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        return pairs[order, 0], pairs[order, 1]

    def normalized_rank_error(self) -> float:
        """KLL's a-priori single-rank error bound (99% confidence) for this k."""
        return float(self._sk.normalized_rank_error(False))

    @property
    def min(self) -> float:
        return float("nan") if self.is_empty() else float(self._sk.get_min_value())

    @property
    def max(self) -> float:
        return float("nan") if self.is_empty() else float(self._sk.get_max_value())

    def to_bytes(self) -> bytes:
        return bytes(self._sk.serialize())

    @classmethod
    def from_bytes(cls, data: bytes, *, max_k: int = 1024, validated: bool = False) -> KllSketch:
        """Validate, then deserialize; ``validated=True`` only when `_validate` already accepted these
        very bytes at this ``max_k`` (`mlwatch._wire` checks a profile's KLL sketches in one batch)."""
        if not validated:
            _validate.validate_kll_doubles(data, max_k=max_k)
        try:
            return cls(_sketch=_ds.kll_doubles_sketch.deserialize(data))
        except Exception as exc:  # the validator should have caught it; never leak a native error type
            raise ProfileFormatError(f"KLL sketch rejected by datasketches: {exc}") from exc


class FrequentSketch:
    """A frequent-strings sketch: exact counts while the distinct values fit, heavy hitters after."""

    __slots__ = ("_sk",)

    def __init__(self, lg_max_map_size: int = DEFAULT_FREQ_LG, *, _sketch: _ds.frequent_strings_sketch | None = None) -> None:
        self._sk = _sketch if _sketch is not None else _ds.frequent_strings_sketch(lg_max_map_size)

    def update_counts(self, counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        """Add pre-counted values: one native call per distinct value, whatever the batch size."""
        update = self._sk.update
        items = counts.items() if isinstance(counts, Mapping) else counts
        for value, weight in items:
            update(value, int(weight))

    def merge(self, other: FrequentSketch) -> None:
        self._sk.merge(other._sk)

    @property
    def total_weight(self) -> int:
        return int(self._sk.total_weight)

    @property
    def num_active_items(self) -> int:
        return int(self._sk.num_active_items)

    @property
    def max_error(self) -> int:
        """Upper bound on any count's error: 0 while every distinct value is kept exactly."""
        items = self._sk.get_frequent_items(_NO_FALSE_NEGATIVES, 0)
        return max((int(ub) - int(lb) for _, _, lb, ub in items), default=0)

    def is_exact(self) -> bool:
        """True while no purge happened, i.e. every distinct value is kept with its exact count."""
        items = self._sk.get_frequent_items(_NO_FALSE_NEGATIVES, 0)
        exact = all(int(lb) == int(ub) for _, _, lb, ub in items)
        return exact and sum(int(lb) for _, _, lb, _ in items) == self.total_weight

    def counts(self) -> dict[str, int]:
        """Estimated count per kept value (exact while the sketch has not purged)."""
        return {str(item): int(est) for item, est, _, _ in self._sk.get_frequent_items(_NO_FALSE_NEGATIVES, 0)}

    def is_empty(self) -> bool:
        return bool(self._sk.is_empty())

    def to_bytes(self) -> bytes:
        return bytes(self._sk.serialize())

    def copy(self) -> FrequentSketch:
        return FrequentSketch(_sketch=_ds.frequent_strings_sketch.deserialize(self._sk.serialize()))

    @classmethod
    def from_bytes(cls, data: bytes, *, max_lg_map_size: int = 16) -> FrequentSketch:
        _validate.validate_frequent_strings(data, max_lg_map_size=max_lg_map_size)
        try:
            return cls(_sketch=_ds.frequent_strings_sketch.deserialize(data))
        except Exception as exc:
            raise ProfileFormatError(f"frequent-items sketch rejected by datasketches: {exc}") from exc


class HllSketch:
    """A HyperLogLog distinct-count sketch (HLL_8 while updating, compact on the wire)."""

    __slots__ = ("_sk",)

    def __init__(self, lg_k: int = DEFAULT_HLL_LG, *, _sketch: _ds.hll_sketch | None = None) -> None:
        self._sk = _sketch if _sketch is not None else _ds.hll_sketch(lg_k, _ds.HLL_8)

    @property
    def lg_k(self) -> int:
        return int(self._sk.lg_config_k)

    def update_distinct(self, values: Iterable[str]) -> None:
        """Add each distinct value once; callers deduplicate per batch because each call costs ~0.5 µs."""
        update = self._sk.update
        for value in values:
            update(value)

    def merge(self, other: HllSketch) -> None:
        union = _ds.hll_union(max(self.lg_k, other.lg_k))
        union.update(self._sk)
        union.update(other._sk)
        self._sk = union.get_result(_ds.HLL_8)

    def estimate(self) -> float:
        return float(self._sk.get_estimate())

    def bounds(self, num_std_dev: int = 2) -> tuple[float, float]:
        return float(self._sk.get_lower_bound(num_std_dev)), float(self._sk.get_upper_bound(num_std_dev))

    def is_empty(self) -> bool:
        return bool(self._sk.is_empty())

    def to_bytes(self) -> bytes:
        return bytes(self._sk.serialize_compact())

    def copy(self) -> HllSketch:
        return HllSketch(_sketch=_ds.hll_sketch.deserialize(self._sk.serialize_updatable()))

    @classmethod
    def from_bytes(cls, data: bytes, *, max_lg_k: int = 16) -> HllSketch:
        _validate.validate_hll(data, max_lg_k=max_lg_k)
        try:
            return cls(_sketch=_ds.hll_sketch.deserialize(data))
        except Exception as exc:
            raise ProfileFormatError(f"HLL sketch rejected by datasketches: {exc}") from exc
