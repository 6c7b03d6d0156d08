"""The mergeable summary of a numeric column: KLL quantiles, exact moments, exact extremes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mlwatch._errors import ProfileMergeError
from mlwatch._sketches import DEFAULT_KLL_K, KllSketch

__all__ = ["DEFAULT_EXTREMES", "NumericSummary"]

#: Exact smallest and largest values kept per column. KLL's rank error is uniform, so in a heavy
#: tail a 1 % rank error can be a huge value error; the exact extremes make the tail's share of
#: the Wasserstein distance (and the outlier share) exact.
DEFAULT_EXTREMES = 64

_EMPTY = np.empty(0, dtype=np.float64)
#: Below this magnitude a batch's sum and squared deviations cannot overflow float64 (any realistic n).
_SAFE = 1e100


class NumericSummary:
    """Finite numeric values of one column: quantile sketch, count, mean, M2, min, max, extremes.

    The moments merge exactly (Chan et al.'s parallel update), so mean and variance of merged
    profiles equal those of the union up to float rounding.
    """

    __slots__ = ("high", "kll", "low", "m2", "max", "mean", "min", "n", "n_extremes")

    def __init__(self, k: int = DEFAULT_KLL_K, n_extremes: int = DEFAULT_EXTREMES) -> None:
        self.kll = KllSketch(k)
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.n_extremes = n_extremes
        self.low: npt.NDArray[np.float64] = _EMPTY  # ascending, at most n_extremes
        self.high: npt.NDArray[np.float64] = _EMPTY  # ascending, at most n_extremes

    def update(self, values: npt.NDArray[np.float64]) -> None:
        """Add finite values (the caller has removed NaN and inf).

        The batch is sorted once: the sort hands over min, max and both exact extremes, and KLL
        compacts a sorted stream about twice as fast (its level buffers arrive sorted), which
        more than pays for the sort. KLL's error bound holds for every input order.
        """
        n_b = int(values.shape[0])
        if n_b == 0:
            return
        ordered = np.sort(values)
        lo, hi = float(ordered[0]), float(ordered[-1])
        if lo > -_SAFE and hi < _SAFE:  # no overflow possible: skip errstate's cost (~2 µs a batch)
            mean_b = float(ordered.mean())
            centred = ordered - mean_b
            m2_b = float((centred * centred).sum())  # not np.dot: BLAS wakes its spinning threads
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                mean_b = float(ordered.mean())
                if not np.isfinite(mean_b):  # sum overflowed: scale down to keep the moments finite
                    mean_b = float((ordered / n_b).sum())
                m2_b = float(np.square(ordered - mean_b).sum())
        self._combine(n_b, mean_b, m2_b, lo, hi)
        self.kll.update(ordered)
        e = self.n_extremes
        if e > 0:
            # In a steady stream most batches hold no new extreme: skip the merge's two sorts.
            low_b = ordered[:e] if self.low.shape[0] < e or lo < self.low[-1] else _EMPTY
            high_b = ordered[max(0, n_b - e) :] if self.high.shape[0] < e or hi > self.high[0] else _EMPTY
            if low_b.shape[0] or high_b.shape[0]:
                self._merge_extremes(low_b, high_b)

    def _combine(self, n_b: int, mean_b: float, m2_b: float, min_b: float, max_b: float) -> None:
        n_a = self.n
        n = n_a + n_b
        if n_a == 0:  # not by the formula: for |mean| > 1e154 its 0 * inf cross term is NaN
            self.mean, self.m2 = mean_b, m2_b
        else:
            delta = mean_b - self.mean
            with np.errstate(over="ignore", invalid="ignore"):
                self.mean += delta * (n_b / n)
                self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.n = n
        self.min = min(self.min, min_b)
        self.max = max(self.max, max_b)

    def _merge_extremes(self, low_b: npt.NDArray[np.float64], high_b: npt.NDArray[np.float64]) -> None:
        e = self.n_extremes
        if low_b.shape[0]:
            self.low = np.sort(np.concatenate((self.low, low_b)))[:e]
        if high_b.shape[0]:
            high = np.sort(np.concatenate((self.high, high_b)))
            self.high = high[max(0, high.shape[0] - e) :]

    def merge(self, other: NumericSummary) -> None:
        """Fold another summary into this one (counts exact, sketches within their bounds)."""
        if other.n == 0:
            return
        if self.kll.k != other.kll.k:
            raise ProfileMergeError(f"cannot merge numeric summaries with KLL k={self.kll.k} and k={other.kll.k}")
        self._combine(other.n, other.mean, other.m2, other.min, other.max)
        self.kll.merge(other.kll)
        self.n_extremes = min(self.n_extremes, other.n_extremes)
        self._merge_extremes(other.low, other.high)

    @property
    def variance(self) -> float:
        """Population variance of the finite values (NaN when there are none)."""
        return self.m2 / self.n if self.n else float("nan")

    @property
    def std(self) -> float:
        return float(np.sqrt(self.variance)) if self.n else float("nan")

    def extremes_exact(self) -> bool:
        """True when low/high hold every value (so they are the whole sample, sorted)."""
        return self.n <= self.n_extremes
