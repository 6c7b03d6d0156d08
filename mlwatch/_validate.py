"""Structural validators for serialized Apache DataSketches (datasketches 5.2.0) sketches.

The native deserializers in ``datasketches`` trust most of what they read: a
corrupted level boundary in a KLL sketch, a coupon count larger than the list
it describes in an HLL sketch, or an HLL_4 register that points at a missing
exception table is enough to read or write out of bounds and kill the whole
process with a segmentation fault.  Profiles can arrive from untrusted places
(disk, network, other tenants), so every sketch image is checked here, in pure
Python, *before* it is handed to the native code.

Each validator mirrors every check of the corresponding C++ deserializer and
adds the consistency checks that the C++ code skips (level boundaries, weights
and counts that must agree with each other, register tables that must agree
with their summary fields, ...).  The check is exact: the validators accept
the bytes that ``datasketches`` itself produces and reject anything that is
structurally inconsistent, raising :class:`~mlwatch._errors.ProfileFormatError`
with a message that names the field, the expected value and the value found.

Only the layouts written by datasketches-cpp 5.x (the engine of the
``datasketches`` Python package) are accepted:

* ``kll_doubles_sketch.serialize()``
* ``frequent_strings_sketch.serialize()``
* ``hll_sketch.serialize_compact()`` and ``hll_sketch.serialize_updatable()``
  (HLL_4, HLL_6 and HLL_8 in LIST, SET and HLL mode, including union results)

Validation is side-effect free and never raises anything but
``ProfileFormatError`` for bad bytes (``TypeError`` for a non-bytes argument,
``ConfigError`` for a bad limit keyword).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from mlwatch._errors import ConfigError, ProfileFormatError

__all__ = ["kll_doubles_all_valid", "validate_frequent_strings", "validate_hll", "validate_kll_doubles"]

_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F64_PAIR = struct.Struct("<dd")

# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------


def _as_bytes(data: object, what: str) -> bytes:
    """Return ``data`` as ``bytes``; accept the bytes-like types only."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what}: expected bytes, got {type(data).__name__}")


def _fail(what: str, field: str, expected: object, found: object) -> NoReturn:
    """Raise the one error type callers have to handle, with a uniform message."""
    raise ProfileFormatError(f"{what}: {field}: expected {expected}, found {found}")


def _expect_eq(what: str, field: str, expected: int, found: int) -> None:
    if found != expected:
        _fail(what, field, expected, found)


def _expect_range(what: str, field: str, low: int, high: int, found: int) -> None:
    if not low <= found <= high:
        _fail(what, field, f"a value in [{low}, {high}]", found)


def _expect_length(what: str, expected: int, found: int) -> None:
    if found != expected:
        _fail(what, "total length", f"exactly {expected} bytes", f"{found} bytes")


def _expect_min_length(what: str, needed: int, found: int, part: str) -> None:
    if found < needed:
        _fail(what, "total length", f"at least {needed} bytes to hold the {part}", f"{found} bytes")


def _check_limit(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int in [{low}, {high}], got {value!r}")


# --------------------------------------------------------------------------------------
# KLL (kll_doubles_sketch)
# --------------------------------------------------------------------------------------

_KLL = "KLL sketch"
_KLL_FAMILY = 15
_KLL_PREAMBLE_INTS_SHORT = 2
_KLL_PREAMBLE_INTS_FULL = 5
_KLL_SERIAL_VERSION_1 = 1  # empty and full sketches
_KLL_SERIAL_VERSION_2 = 2  # single-item sketches
_KLL_FLAG_EMPTY = 1
_KLL_FLAG_LEVEL_ZERO_SORTED = 2
_KLL_FLAG_SINGLE_ITEM = 4
_KLL_KNOWN_FLAGS = _KLL_FLAG_EMPTY | _KLL_FLAG_LEVEL_ZERO_SORTED | _KLL_FLAG_SINGLE_ITEM
_KLL_M = 8  # the only M the C++ accepts
_KLL_MIN_K = 8
_KLL_MAX_K = 0xFFFF
_KLL_MAX_LEVELS = 61  # kll_helper::int_cap_aux throws for a depth above 60
# kll_helper::ub_on_num_levels, used by every merge, never returns once n reaches 2^63; a cap far
# above any real stream (2^52 items is 140 years at a million items a second) leaves room for
# thousands of merges of maximal sketches before that point
_KLL_MAX_N = 1 << 52
_KLL_HEADER = struct.Struct("<BBBBHBB")  # preamble ints, ser ver, family, flags, k, m, unused
_KLL_FULL_HEADER = struct.Struct("<QHBB")  # n, min_k, num_levels, unused
_KLL_DATA_START_SINGLE = 8
_KLL_DATA_START = 20
_KLL_LEVELS = tuple(struct.Struct(f"<{n}I") for n in range(_KLL_MAX_LEVELS + 1))  # boundaries by num_levels
_POWERS_OF_THREE: tuple[int, ...] = tuple(3**i for i in range(31))


def _kll_int_cap_aux_aux(k: int, depth: int) -> int:
    # kll_helper::int_cap_aux_aux: round(k * (2/3)^depth), computed in integers
    tmp = ((k << 1) << depth) // _POWERS_OF_THREE[depth]
    return (tmp + 1) >> 1


def _kll_int_cap_aux(k: int, depth: int) -> int:
    if depth <= 30:
        return _kll_int_cap_aux_aux(k, depth)
    half = depth // 2
    return _kll_int_cap_aux_aux(_kll_int_cap_aux_aux(k, half), depth - half)


@lru_cache(maxsize=4096)
def _kll_total_capacity(k: int, m: int, num_levels: int) -> int:
    """kll_helper::compute_total_capacity: the item-array size implied by k, m, num_levels."""
    return sum(max(m, _kll_int_cap_aux(k, num_levels - h - 1)) for h in range(num_levels))


def validate_kll_doubles(data: bytes, *, max_k: int = 1024) -> None:
    """Check that ``data`` is a well-formed ``kll_doubles_sketch.serialize()`` image.

    Mirrors ``kll_sketch::deserialize`` and adds the consistency checks it skips
    (monotone level boundaries ending at the capacity implied by k and the number
    of levels, n equal to the total weight of the retained items, no NaN, sorted
    levels, items within [min, max]) because violating them makes the native
    code read or write outside its buffers.  ``max_k`` bounds the accepted k.
    Raises ``ProfileFormatError`` on any inconsistency; returns None otherwise.
    """
    layout = _kll_layout(data, max_k)
    if layout is not None:
        _kll_check_items(layout)


def kll_doubles_all_valid(images: Sequence[bytes], *, max_k: int = 1024) -> bool:
    """Whether `validate_kll_doubles` accepts every image: the same checks, with those of the items
    (no NaN, within [min, max], sorted levels) run for all images in a dozen numpy calls instead
    of ten per image. Never raises: False says only that `validate_kll_doubles` rejects some image
    (or argument), and calling it on each names the image and its defect.
    """
    try:
        layouts = [_kll_layout(image, max_k) for image in images]
    except (ProfileFormatError, ConfigError, TypeError):
        return False
    regions: list[memoryview] = []
    bounds: list[float] = []  # each sketch's min then max
    starts: list[int] = []  # each sketch's first item in the concatenation
    checked: list[bool] = []  # runs of neighbour pairs: must they ascend?
    runs: list[int] = []
    total = 0
    for layout in layouts:
        if layout is None:
            continue
        buf, items_start, levels, level_zero_sorted = layout
        min_value, max_value = _F64_PAIR.unpack_from(buf, items_start)
        if not min_value <= max_value:  # also when either is NaN
            return False
        bounds += (min_value, max_value)
        regions.append(memoryview(buf)[items_start + 16 :])  # the items fill the rest (length checked)
        starts.append(total)
        total += levels[-1] - levels[0]
        for i in range(len(levels) - 1):
            length = levels[i + 1] - levels[i]
            if i == 0 and not level_zero_sorted:
                checked.append(False)
                runs.append(length)
            elif length:
                # the pairs within the level ascend; the one into the next level (or sketch) may descend
                checked += (True, False)
                runs += (length - 1, 1)
    if not starts:
        return True
    items = np.frombuffer(b"".join(regions), dtype="<f8")
    limits = np.array(bounds).reshape(-1, 2)
    # a NaN item makes its sketch's reduction NaN, and a NaN fails every comparison
    if not (limits[:, 0] <= np.minimum.reduceat(items, starts)).all():
        return False
    if not (np.maximum.reduceat(items, starts) <= limits[:, 1]).all():
        return False
    return not (np.repeat(checked, runs)[:-1] & (items[1:] < items[:-1])).any()


#: (the image, where min, max and then the items begin, the level boundaries with the capacity
#: last, whether level 0 is sorted): a plain tuple, built once per sketch
_KllLayout = tuple[bytes, int, list[int], bool]


def _kll_layout(data: object, max_k: int) -> _KllLayout | None:
    """Every check of `validate_kll_doubles` up to the items' values; None when nothing is left to check."""
    _check_limit("max_k", max_k, _KLL_MIN_K, _KLL_MAX_K)
    buf = _as_bytes(data, _KLL)
    size = len(buf)
    _expect_min_length(_KLL, 8, size, "preamble")
    preamble_ints, serial_version, family, flags, k, m, unused = _KLL_HEADER.unpack_from(buf, 0)

    _expect_eq(_KLL, "family id", _KLL_FAMILY, family)
    if serial_version not in (_KLL_SERIAL_VERSION_1, _KLL_SERIAL_VERSION_2):
        _fail(_KLL, "serial version", f"{_KLL_SERIAL_VERSION_1} or {_KLL_SERIAL_VERSION_2}", serial_version)
    if flags & ~_KLL_KNOWN_FLAGS:
        _fail(_KLL, "flags", f"only bits {_KLL_KNOWN_FLAGS:#04x}", f"{flags:#04x}")
    is_empty = bool(flags & _KLL_FLAG_EMPTY)
    is_single = bool(flags & _KLL_FLAG_SINGLE_ITEM)
    level_zero_sorted = bool(flags & _KLL_FLAG_LEVEL_ZERO_SORTED)
    if is_empty and is_single:
        _fail(_KLL, "flags", "empty and single-item flags not both set", f"{flags:#04x}")
    _expect_eq(_KLL, "m", _KLL_M, m)
    _expect_range(_KLL, "k", _KLL_MIN_K, max_k, k)
    _expect_eq(_KLL, "unused preamble byte 7", 0, unused)

    if is_empty:
        _expect_eq(_KLL, "preamble ints (empty sketch)", _KLL_PREAMBLE_INTS_SHORT, preamble_ints)
        _expect_eq(_KLL, "serial version (empty sketch)", _KLL_SERIAL_VERSION_1, serial_version)
        _expect_length(_KLL + " (empty)", 8, size)
        return None
    if is_single:
        _expect_eq(_KLL, "preamble ints (single-item sketch)", _KLL_PREAMBLE_INTS_SHORT, preamble_ints)
        _expect_eq(_KLL, "serial version (single-item sketch)", _KLL_SERIAL_VERSION_2, serial_version)
        _expect_length(_KLL + " (single item)", _KLL_DATA_START_SINGLE + 8, size)
        (item,) = _F64.unpack_from(buf, _KLL_DATA_START_SINGLE)
        if math.isnan(item):
            _fail(_KLL, "single item", "a number", "NaN")
        return None

    _expect_eq(_KLL, "preamble ints (sketch with 2+ items)", _KLL_PREAMBLE_INTS_FULL, preamble_ints)
    _expect_eq(_KLL, "serial version (sketch with 2+ items)", _KLL_SERIAL_VERSION_1, serial_version)
    _expect_min_length(_KLL, _KLL_DATA_START, size, "full preamble")
    n, min_k, num_levels, unused2 = _KLL_FULL_HEADER.unpack_from(buf, 8)
    _expect_eq(_KLL, "unused preamble byte 19", 0, unused2)
    if n < 2:
        _fail(_KLL, "n", "at least 2 for a sketch that is neither empty nor single-item", n)
    if n > _KLL_MAX_N:
        _fail(_KLL, "n", f"at most 2^52 = {_KLL_MAX_N}", n)
    _expect_range(_KLL, "min_k", _KLL_MIN_K, k, min_k)
    # the top level is never empty, so n >= 2^(num_levels-1); the C++ merge sizes its
    # work arrays on that bound and overflows them when it does not hold
    _expect_range(_KLL, "num_levels", 1, min(_KLL_MAX_LEVELS, n.bit_length()), num_levels)

    items_start = _KLL_DATA_START + 4 * num_levels
    if size < items_start + 16:
        _expect_min_length(_KLL, items_start + 16, size, f"{num_levels} level boundaries, min and max")
    levels = list(_KLL_LEVELS[num_levels].unpack_from(buf, _KLL_DATA_START))
    capacity = _kll_total_capacity(k, _KLL_M, num_levels)
    levels.append(capacity)  # the last boundary is implied, not serialized
    for i in range(num_levels):
        if levels[i] > levels[i + 1]:
            _fail(_KLL, f"level boundary {i}", f"<= boundary {i + 1} ({levels[i + 1]}, capacity {capacity})", levels[i])
    num_retained = capacity - levels[0]
    _expect_length(_KLL, items_start + 16 + 8 * num_retained, size)
    total_weight = 0
    for i in range(num_levels):
        total_weight += (levels[i + 1] - levels[i]) << i
    if total_weight != n:
        _fail(_KLL, "n", f"{total_weight} (the weight of the retained items)", n)
    return buf, items_start, levels, level_zero_sorted


def _kll_check_items(layout: _KllLayout) -> None:
    """No NaN, items within [min, max], every level sorted (level 0 only when flagged so)."""
    buf, items_start, levels, level_zero_sorted = layout
    num_retained = levels[-1] - levels[0]
    values = np.frombuffer(buf, dtype="<f8", count=2 + num_retained, offset=items_start)
    min_value, max_value = _F64_PAIR.unpack_from(buf, items_start)
    items = values[2:]
    lowest = float(items.min())  # NaN when any item is NaN
    highest = float(items.max())
    if not (min_value <= max_value and min_value <= lowest and highest <= max_value):  # a NaN fails them all
        _kll_range_failure(values, lowest, highest)
    # every level above 0 is sorted (and level 0 too when its flag says so): a descent between
    # neighbours is allowed only where a new level starts
    first = 0 if level_zero_sorted else levels[1] - levels[0]
    checked = items[first:]
    if checked.shape[0] > 1:
        descent = checked[1:] < checked[:-1]
        descent[_kll_level_joins(tuple(levels), first)] = False
        if descent.any():
            idx = int(np.flatnonzero(descent)[0]) + first
            level = int(np.searchsorted(np.asarray(levels[:-1], dtype=np.intp) - levels[0], idx, side="right") - 1)
            _fail(_KLL, f"level {level}", "items in ascending order", f"item {idx + 1} < item {idx}")


def _kll_range_failure(values: npt.NDArray[np.float64], lowest: float, highest: float) -> NoReturn:
    """Name the first NaN, else the violated bound, of min, max and the items in ``values``."""
    min_value, max_value = float(values[0]), float(values[1])
    if math.isnan(min_value) or math.isnan(max_value) or math.isnan(lowest):
        nan_at = int(np.flatnonzero(np.isnan(values))[0])
        _fail(_KLL, ("min", "max")[nan_at] if nan_at < 2 else f"item {nan_at - 2}", "a number", "NaN")
    if min_value > max_value:
        _fail(_KLL, "min", f"<= max ({max_value!r})", min_value)
    if lowest < min_value:
        _fail(_KLL, "items", f"none below min ({min_value!r})", lowest)
    _fail(_KLL, "items", f"none above max ({max_value!r})", highest)


@lru_cache(maxsize=1024)
def _kll_level_joins(levels: tuple[int, ...], first: int) -> npt.NDArray[np.intp]:
    """Where a new level starts among the neighbour pairs of ``items[first:]``: a descent is allowed there.

    Depends on the boundaries only, which repeat from one profile to the next: cached, it saves
    the five numpy calls that derive it.
    """
    pairs = levels[-1] - levels[0] - first - 1
    joins = np.asarray(levels[1:-1], dtype=np.intp) - (levels[0] + first) - 1
    joins = joins[(joins >= 0) & (joins < pairs)]
    joins.flags.writeable = False  # shared by every caller
    return joins


# --------------------------------------------------------------------------------------
# frequent items (frequent_strings_sketch)
# --------------------------------------------------------------------------------------

_FI = "frequent strings sketch"
_FI_FAMILY = 10
_FI_SERIAL_VERSION = 1
_FI_PREAMBLE_LONGS_EMPTY = 1
_FI_PREAMBLE_LONGS_NONEMPTY = 4
_FI_EMPTY_FLAGS = (1, 4, 5)  # C++ writes both bit 0 and bit 2; Java only bit 2
_FI_LG_MIN_MAP_SIZE = 3
_FI_HEADER = struct.Struct("<BBBBBBH")  # preamble longs, ser ver, family, lg max, lg cur, flags, unused
_FI_BODY_HEADER = struct.Struct("<IIQQ")  # num items, unused, total weight, offset
_FI_DATA_START = 32


def validate_frequent_strings(
    data: bytes, *, max_lg_map_size: int = 16, max_string_bytes: int = 1 << 20
) -> None:
    """Check that ``data`` is a well-formed ``frequent_strings_sketch.serialize()`` image.

    Mirrors ``frequent_items_sketch::deserialize`` and adds what it skips: the
    number of items must fit the declared hash map (<= 0.75 x 2^lg_cur_map_size,
    lg_cur <= lg_max <= ``max_lg_map_size``), weights must be positive with
    total weight >= sum of weights + offset, and the strings must be distinct
    valid UTF-8 of at most ``max_string_bytes`` bytes that fill the buffer
    exactly.  Raises ``ProfileFormatError`` on any inconsistency.
    """
    _check_limit("max_lg_map_size", max_lg_map_size, _FI_LG_MIN_MAP_SIZE, 30)
    _check_limit("max_string_bytes", max_string_bytes, 0, (1 << 32) - 1)
    buf = _as_bytes(data, _FI)
    size = len(buf)
    _expect_min_length(_FI, 8, size, "preamble")
    preamble_longs, serial_version, family, lg_max, lg_cur, flags, unused16 = _FI_HEADER.unpack_from(buf, 0)

    _expect_eq(_FI, "family id", _FI_FAMILY, family)
    _expect_eq(_FI, "serial version", _FI_SERIAL_VERSION, serial_version)
    if flags not in (0, *_FI_EMPTY_FLAGS):
        _fail(_FI, "flags", "0x00 (non-empty) or 0x05 (empty)", f"{flags:#04x}")
    is_empty = flags != 0
    _expect_range(_FI, "lg_max_map_size", _FI_LG_MIN_MAP_SIZE, max_lg_map_size, lg_max)
    _expect_range(_FI, "lg_cur_map_size", _FI_LG_MIN_MAP_SIZE, lg_max, lg_cur)
    _expect_eq(_FI, "unused preamble bytes 6-7", 0, unused16)
    if is_empty:
        _expect_eq(_FI, "preamble longs (empty sketch)", _FI_PREAMBLE_LONGS_EMPTY, preamble_longs)
        _expect_length(_FI + " (empty)", 8, size)
        return

    _expect_eq(_FI, "preamble longs (non-empty sketch)", _FI_PREAMBLE_LONGS_NONEMPTY, preamble_longs)
    _expect_min_length(_FI, _FI_DATA_START, size, "full preamble")
    num_items, unused32, total_weight, offset = _FI_BODY_HEADER.unpack_from(buf, 8)
    _expect_eq(_FI, "unused preamble bytes 12-15", 0, unused32)
    map_capacity = (3 << lg_cur) >> 2  # reverse_purge_hash_map: 0.75 * 2^lg_cur_size
    _expect_range(_FI, f"number of active items (lg_cur_map_size {lg_cur})", 1, map_capacity, num_items)
    strings_start = _FI_DATA_START + 8 * num_items
    _expect_min_length(_FI, strings_start + 4 * num_items, size, f"{num_items} weights and string lengths")

    # Python ints: an exact sum, and no per-call numpy overhead (the per-string loop below dominates anyway)
    weights = struct.unpack_from(f"<{num_items}Q", buf, _FI_DATA_START)
    if 0 in weights:
        _fail(_FI, f"weight of item {weights.index(0)}", "a positive count", 0)
    weight_sum = sum(weights)
    if total_weight < weight_sum + offset:
        _fail(_FI, "total weight", f">= sum of item weights + offset ({weight_sum} + {offset})", total_weight)

    items: list[bytes] = []
    append = items.append
    unpack_length = _U32.unpack_from
    pos = strings_start
    for i in range(num_items):
        if pos + 4 > size:
            _fail(_FI, f"length of string {i}", f"4 bytes at offset {pos}", f"{size - pos} bytes left")
        (length,) = unpack_length(buf, pos)
        pos += 4
        if length > max_string_bytes:
            _fail(_FI, f"length of string {i}", f"at most {max_string_bytes} bytes", length)
        end = pos + length
        if end > size:
            _fail(_FI, f"string {i}", f"{length} bytes at offset {pos}", f"{size - pos} bytes left")
        append(buf[pos:end])
        pos = end
    _expect_length(_FI, pos, size)
    # NUL cannot continue a multi-byte sequence, so the joined text is valid UTF-8 iff every item is
    try:
        b"\0".join(items).decode("utf-8")
    except UnicodeDecodeError:
        for i, item in enumerate(items):
            try:
                item.decode("utf-8")
            except UnicodeDecodeError as exc:
                _fail(_FI, f"string {i}", "valid UTF-8", f"invalid byte at position {exc.start}")
    if len(set(items)) != num_items:
        seen: set[bytes] = set()
        for i, item in enumerate(items):
            if item in seen:
                _fail(_FI, f"string {i}", "distinct items", "a duplicate")
            seen.add(item)


# --------------------------------------------------------------------------------------
# HLL (hll_sketch)
# --------------------------------------------------------------------------------------

_HLL = "HLL sketch"
_HLL_FAMILY = 7
_HLL_SERIAL_VERSION = 1
_HLL_FLAG_EMPTY = 4
_HLL_FLAG_COMPACT = 8
_HLL_FLAG_OUT_OF_ORDER = 16
_HLL_FLAG_FULL_SIZE = 32
_HLL_KNOWN_FLAGS = _HLL_FLAG_EMPTY | _HLL_FLAG_COMPACT | _HLL_FLAG_OUT_OF_ORDER | _HLL_FLAG_FULL_SIZE
_HLL_MODE_LIST, _HLL_MODE_SET, _HLL_MODE_HLL = 0, 1, 2
_HLL_MODE_NAMES = ("LIST", "SET", "HLL")
_HLL_4, _HLL_6, _HLL_8 = 0, 1, 2
_HLL_TYPE_NAMES = ("HLL_4", "HLL_6", "HLL_8")
_HLL_PREINTS = (2, 3, 10)  # by mode
_HLL_MIN_LG_K = 4
_HLL_MAX_LG_K = 21
_HLL_LG_INIT_LIST_SIZE = 3
_HLL_LG_INIT_SET_SIZE = 5
_HLL_LIST_START = 8
_HLL_SET_START = 12
_HLL_ARRAY_START = 40
_HLL_KEY_BITS = 26
_HLL_KEY_MASK = (1 << _HLL_KEY_BITS) - 1
_HLL_MIN_COUPON = 1 << _HLL_KEY_BITS  # a coupon's value (top 6 bits) is 1..63
_HLL_MAX_VALUE = 63
_HLL_AUX_TOKEN = 15
_HLL_LG_AUX_ARR_INTS = (0, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12, 13)
_HLL_ARRAY_HEADER = struct.Struct("<dddII")  # hip accum, kxq0, kxq1, num at cur min, aux count

_U32Array = npt.NDArray[np.uint32]
_U8Array = npt.NDArray[np.uint8]


def _hll_array_bytes(tgt_type: int, lg_k: int) -> int:
    if tgt_type == _HLL_4:
        return 1 << (lg_k - 1)
    if tgt_type == _HLL_6:
        return (((1 << lg_k) * 3) >> 2) + 1
    return 1 << lg_k


@lru_cache(maxsize=32)
def _hll6_unpack_index(lg_k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.uint16]]:
    bits = np.arange(1 << lg_k, dtype=np.intp) * 6
    return bits >> 3, (bits & 7).astype(np.uint16)


def _check_coupons(coupons: _U32Array, field: str) -> None:
    """Every coupon is (value << 26) | address with value in 1..63, no duplicates."""
    invalid = np.flatnonzero(coupons < _HLL_MIN_COUPON)
    if invalid.size:
        i = int(invalid[0])
        _fail(_HLL, f"{field} {i}", "a coupon with a value in 1..63", f"{int(coupons[i]):#010x}")
    if np.unique(coupons).size != coupons.size:
        _fail(_HLL, field + "s", "distinct coupons", "a duplicate")


def _check_coupon_list(coupons: tuple[int, ...], field: str) -> None:
    """`_check_coupons` for a handful of coupons held as Python ints."""
    for i, coupon in enumerate(coupons):
        if coupon < _HLL_MIN_COUPON:
            _fail(_HLL, f"{field} {i}", "a coupon with a value in 1..63", f"{coupon:#010x}")
    if len(set(coupons)) != len(coupons):
        _fail(_HLL, field + "s", "distinct coupons", "a duplicate")


def _check_probe_positions(table: _U32Array, lg_arr: int, slot_of: _U32Array, field: str) -> None:
    """Each occupied cell must be reachable by the C++ open-addressing probe of its key."""
    mask = (1 << lg_arr) - 1
    where = np.flatnonzero(table).astype(np.int64)
    keys = slot_of[where].astype(np.int64)
    probe = keys & mask
    stride = ((keys & _HLL_KEY_MASK) >> lg_arr) | 1
    pending = probe != where
    for _ in range(1 << lg_arr):
        if not pending.any():
            return
        probe = np.where(pending, (probe + stride) & mask, probe)
        hit_empty = pending & (table[probe] == 0)
        if hit_empty.any():
            i = int(where[np.flatnonzero(hit_empty)[0]])
            _fail(_HLL, f"{field} at index {i}", "reachable by hash probing", "an entry past an empty cell")
        pending &= probe != where
    if pending.any():
        _fail(_HLL, field + "s", "every entry reachable by hash probing", "an unreachable entry")


def _validate_hll_list(buf: bytes, lg_k: int, lg_arr: int, flags: int, compact: bool) -> None:
    size = len(buf)
    if flags & _HLL_FLAG_FULL_SIZE:
        _fail(_HLL, "flags (LIST mode)", "start-full-size flag clear", f"{flags:#04x}")
    _expect_eq(_HLL, "lg_arr (LIST mode)", _HLL_LG_INIT_LIST_SIZE, lg_arr)
    count = buf[6]
    # the 8-slot list is promoted to a set (or HLL) as soon as it is full
    _expect_range(_HLL, "coupon count (LIST mode)", 0, (1 << _HLL_LG_INIT_LIST_SIZE) - 1, count)
    if bool(flags & _HLL_FLAG_EMPTY) != (count == 0):
        _fail(_HLL, "empty flag (LIST mode)", f"{'set' if count == 0 else 'clear'} with {count} coupons",
              f"flags {flags:#04x}")
    slots = count if compact else 1 << _HLL_LG_INIT_LIST_SIZE
    _expect_length(_HLL + " (LIST mode)", _HLL_LIST_START + 4 * slots, size)
    # at most 8 slots: Python ints beat numpy's per-call overhead
    table = struct.unpack_from(f"<{slots}I", buf, _HLL_LIST_START)
    _check_coupon_list(table[:count], "list coupon")
    if not compact and any(table[count:]):
        _fail(_HLL, "list slots after the coupons", "zero", "a non-zero value")


def _validate_hll_set(buf: bytes, lg_k: int, lg_arr: int, flags: int, compact: bool) -> None:
    size = len(buf)
    if lg_k < 8:
        _fail(_HLL, "lg_k (SET mode)", "at least 8 (smaller sketches go from LIST to HLL)", lg_k)
    if flags & (_HLL_FLAG_FULL_SIZE | _HLL_FLAG_EMPTY):
        _fail(_HLL, "flags (SET mode)", "empty and start-full-size flags clear", f"{flags:#04x}")
    _expect_eq(_HLL, "byte 6 (SET mode)", 0, buf[6])
    _expect_min_length(_HLL, _HLL_SET_START, size, "SET preamble")
    (count,) = _U32.unpack_from(buf, 8)
    _expect_range(_HLL, "lg_arr (SET mode)", _HLL_LG_INIT_SET_SIZE, lg_k - 3, lg_arr)
    # a set starts from a full 8-coupon list and grows before it is 3/4 full
    _expect_range(_HLL, f"coupon count (SET mode, lg_arr {lg_arr})", 1 << _HLL_LG_INIT_LIST_SIZE,
                  (3 << lg_arr) >> 2, count)
    slots = count if compact else 1 << lg_arr
    _expect_length(_HLL + " (SET mode)", _HLL_SET_START + 4 * slots, size)
    table = np.frombuffer(buf, dtype="<u4", count=slots, offset=_HLL_SET_START)
    if compact:
        _check_coupons(table, "set coupon")
        return
    occupied = table[table != 0]
    if occupied.size != count:
        _fail(_HLL, "coupon count (SET mode)", f"{occupied.size} (occupied hash set cells)", count)
    _check_coupons(occupied, "set coupon")
    _check_probe_positions(table, lg_arr, table, "set coupon")


def _hll_aux_entries(buf: bytes, lg_k: int, lg_arr: int, aux_count: int, compact: bool,
                     aux_start: int) -> tuple[_U32Array, _U32Array]:
    """Check the HLL_4 exception table layout; return its (slots, values)."""
    size = len(buf)
    min_lg_aux = _HLL_LG_AUX_ARR_INTS[lg_k]
    if aux_count == 0:
        _expect_eq(_HLL, "lg_arr (HLL_4 without exceptions)", 0, lg_arr)
        if compact:
            _expect_length(_HLL + " (compact HLL_4)", aux_start, size)
        else:
            _expect_length(_HLL + " (updatable HLL_4)", aux_start + (4 << min_lg_aux), size)
            if any(buf[aux_start:]):
                _fail(_HLL, "unused exception table", "all zero", "non-zero bytes")
        empty = np.zeros(0, dtype=np.uint32)
        return empty, empty
    # the table holds at most k entries and grows before it is 3/4 full
    _expect_range(_HLL, "lg_arr (HLL_4 exception table)", min_lg_aux, lg_k + 1, lg_arr)
    _expect_range(_HLL, f"exception count (lg_arr {lg_arr})", 1, min(1 << lg_k, (3 << lg_arr) >> 2), aux_count)
    slots = aux_count if compact else 1 << lg_arr
    _expect_length(_HLL + (" (compact HLL_4)" if compact else " (updatable HLL_4)"), aux_start + 4 * slots, size)
    table = np.frombuffer(buf, dtype="<u4", count=slots, offset=aux_start)
    entries = table if compact else table[table != 0]
    if entries.size != aux_count:
        _fail(_HLL, "exception count", f"{entries.size} (occupied exception table cells)", aux_count)
    aux_slots = entries & np.uint32(_HLL_KEY_MASK)
    aux_values = entries >> np.uint32(_HLL_KEY_BITS)
    too_big = np.flatnonzero(aux_slots >= (1 << lg_k))
    if too_big.size:
        _fail(_HLL, "exception slot", f"< k = {1 << lg_k}", int(aux_slots[int(too_big[0])]))
    if np.unique(aux_slots).size != aux_slots.size:
        _fail(_HLL, "exception slots", "distinct slots", "a duplicate")
    if not compact:
        _check_probe_positions(table, lg_arr, table & np.uint32(_HLL_KEY_MASK), "exception entry")
    return aux_slots, aux_values


def _check_kxq(kxq0: float, kxq1: float, counts: list[int]) -> None:
    # kxq0 = sum of 2^-v over registers with v < 32, kxq1 the same for v >= 32
    want0 = math.fsum(c * math.ldexp(1.0, -v) for v, c in enumerate(counts[:32]) if c)
    want1 = math.fsum(c * math.ldexp(1.0, -v) for v, c in enumerate(counts[32:], start=32) if c)
    if not math.isclose(kxq0, want0, rel_tol=1e-9, abs_tol=0.0):
        _fail(_HLL, "kxq0", f"{want0!r} (from the registers)", repr(kxq0))
    if not math.isclose(kxq1, want1, rel_tol=1e-9, abs_tol=2.0**-80):
        _fail(_HLL, "kxq1", f"{want1!r} (from the registers)", repr(kxq1))


def _validate_hll_array(buf: bytes, lg_k: int, lg_arr: int, flags: int, compact: bool, tgt_type: int) -> None:
    size = len(buf)
    k = 1 << lg_k
    _expect_min_length(_HLL, _HLL_ARRAY_START, size, "HLL preamble")
    cur_min = buf[6]
    hip, kxq0, kxq1, num_at_cur_min, aux_count = _HLL_ARRAY_HEADER.unpack_from(buf, 8)
    for name, value in (("hip accumulator", hip), ("kxq0", kxq0), ("kxq1", kxq1)):
        if not (math.isfinite(value) and value >= 0.0):
            _fail(_HLL, name, "a finite non-negative number", repr(value))
    array_bytes = _hll_array_bytes(tgt_type, lg_k)
    aux_start = _HLL_ARRAY_START + array_bytes
    _expect_min_length(_HLL, aux_start, size, f"{_HLL_TYPE_NAMES[tgt_type]} register array")
    raw = np.frombuffer(buf, dtype=np.uint8, count=array_bytes, offset=_HLL_ARRAY_START)

    if tgt_type == _HLL_4:
        aux_slots, aux_values = _hll_aux_entries(buf, lg_k, lg_arr, aux_count, compact, aux_start)
        nibbles = np.empty(k, dtype=np.uint8)
        nibbles[0::2] = raw & 0x0F
        nibbles[1::2] = raw >> 4
        tokens = np.flatnonzero(nibbles == _HLL_AUX_TOKEN)
        if tokens.size != aux_slots.size or not np.array_equal(tokens, np.sort(aux_slots)):
            _fail(_HLL, "HLL_4 exception table", f"one entry per register holding {_HLL_AUX_TOKEN} "
                  f"({tokens.size} registers)", f"{aux_slots.size} entries, not matching")
        zeros = int(np.count_nonzero(nibbles == 0))
        _expect_eq(_HLL, "num_at_cur_min (registers at cur_min)", zeros, num_at_cur_min)
        plain = nibbles[nibbles != _HLL_AUX_TOKEN]
        top = cur_min + (int(plain.max()) if plain.size else 0)
        if top > _HLL_MAX_VALUE:
            _fail(_HLL, "cur_min + register", f"<= {_HLL_MAX_VALUE}", top)
        if aux_values.size:
            low = int(aux_values.min())
            high = int(aux_values.max())
            if low < cur_min + _HLL_AUX_TOKEN:
                _fail(_HLL, "exception value", f">= cur_min + 15 = {cur_min + _HLL_AUX_TOKEN}", low)
            if high > _HLL_MAX_VALUE:
                _fail(_HLL, "exception value", f"<= {_HLL_MAX_VALUE}", high)
        counts = np.bincount(plain, minlength=16).tolist()
        value_counts = [0] * (_HLL_MAX_VALUE + 1)
        for nib, c in enumerate(counts[:_HLL_AUX_TOKEN]):
            if c:
                value_counts[cur_min + nib] += c
        for v, c in enumerate(np.bincount(aux_values, minlength=1).tolist()):
            value_counts[v] += c
    else:
        _expect_eq(_HLL, f"cur_min ({_HLL_TYPE_NAMES[tgt_type]})", 0, cur_min)
        _expect_eq(_HLL, f"exception count ({_HLL_TYPE_NAMES[tgt_type]})", 0, aux_count)
        _expect_eq(_HLL, f"lg_arr ({_HLL_TYPE_NAMES[tgt_type]})", 0, lg_arr)
        _expect_length(_HLL + f" ({_HLL_TYPE_NAMES[tgt_type]})", aux_start, size)
        if tgt_type == _HLL_6:
            byte_idx, shift = _hll6_unpack_index(lg_k)
            wide = raw.astype(np.uint16)
            values = ((wide[byte_idx] | (wide[byte_idx + 1] << np.uint16(8))) >> shift) & np.uint16(0x3F)
            if raw[-1]:
                _fail(_HLL, "HLL_6 padding byte", 0, int(raw[-1]))
        else:
            values = raw
            high = int(values.max())
            if high > _HLL_MAX_VALUE:
                _fail(_HLL, "HLL_8 register", f"<= {_HLL_MAX_VALUE}", high)
        value_counts = np.bincount(values, minlength=_HLL_MAX_VALUE + 1).tolist()
        _expect_eq(_HLL, "num_at_cur_min (registers at zero)", value_counts[0], num_at_cur_min)

    empty = cur_min == 0 and num_at_cur_min == k
    if bool(flags & _HLL_FLAG_EMPTY) != empty:
        _fail(_HLL, "empty flag (HLL mode)", "set" if empty else "clear", f"flags {flags:#04x}")
    _check_kxq(kxq0, kxq1, value_counts)


def validate_hll(data: bytes, *, max_lg_k: int = 16) -> None:
    """Check that ``data`` is a well-formed ``hll_sketch`` compact or updatable image.

    Mirrors ``HllSketchImplFactory::deserialize`` (CouponList, CouponHashSet,
    HllArray, Hll4Array, AuxHashMap) and adds what it skips: lg_k within
    [4, ``max_lg_k``], coupon counts that fit the list or hash set they
    describe, valid and distinct coupons, exact lengths, register values,
    cur_min / num_at_cur_min / kxq consistent with the registers, and an HLL_4
    exception table that matches the registers holding the exception token.
    Raises ``ProfileFormatError`` on any inconsistency; returns None otherwise.
    """
    _check_limit("max_lg_k", max_lg_k, _HLL_MIN_LG_K, _HLL_MAX_LG_K)
    buf = _as_bytes(data, _HLL)
    size = len(buf)
    _expect_min_length(_HLL, 8, size, "preamble")
    preamble_ints, serial_version, family, lg_k, lg_arr, flags, _, mode_byte = buf[:8]

    _expect_eq(_HLL, "family id", _HLL_FAMILY, family)
    _expect_eq(_HLL, "serial version", _HLL_SERIAL_VERSION, serial_version)
    mode = mode_byte & 0x3
    tgt_type = (mode_byte >> 2) & 0x3
    if mode_byte >> 4 or mode == 3 or tgt_type == 3:
        _fail(_HLL, "mode byte", "a mode in LIST/SET/HLL and a type in HLL_4/HLL_6/HLL_8", f"{mode_byte:#04x}")
    _expect_eq(_HLL, f"preamble ints ({_HLL_MODE_NAMES[mode]} mode)", _HLL_PREINTS[mode], preamble_ints)
    _expect_range(_HLL, "lg_k", _HLL_MIN_LG_K, max_lg_k, lg_k)
    if flags & ~_HLL_KNOWN_FLAGS:
        _fail(_HLL, "flags", f"only bits {_HLL_KNOWN_FLAGS:#04x}", f"{flags:#04x}")
    compact = bool(flags & _HLL_FLAG_COMPACT)
    if mode == _HLL_MODE_LIST:
        _validate_hll_list(buf, lg_k, lg_arr, flags, compact)
    elif mode == _HLL_MODE_SET:
        _validate_hll_set(buf, lg_k, lg_arr, flags, compact)
    else:
        _validate_hll_array(buf, lg_k, lg_arr, flags, compact, tgt_type)
