"""Tests of mlwatch._validate: no false rejects on real sketches, and a crash-proof fuzz.

Every accepted input is handed to the native datasketches code in long-lived child
processes (this file, run as a script, is the worker), so a segmentation fault shows up
as a test failure naming the input instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import datasketches as ds
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwatch._errors import ConfigError, ProfileFormatError
from mlwatch._validate import (
    kll_doubles_all_valid,
    validate_frequent_strings,
    validate_hll,
    validate_kll_doubles,
)

KLL, FI, HLL = 0, 1, 2
KIND_NAMES = ("kll", "frequent_strings", "hll")
VALIDATORS: tuple[Callable[[bytes], None], ...] = (validate_kll_doubles, validate_frequent_strings, validate_hll)
HLL_TYPES = (ds.HLL_4, ds.HLL_6, ds.HLL_8)
FUZZ_SEED = 20261128
# 20,000 cases in all; MLWATCH_FUZZ_SCALE=20 turns the test into a 400,000-case campaign
FUZZ_SCALE = float(os.environ.get("MLWATCH_FUZZ_SCALE", "1"))
FUZZ_CASES = {kind: int(n * FUZZ_SCALE) for kind, n in ((0, 7000), (1, 5000), (2, 8000))}
WORKERS = 2

# --------------------------------------------------------------------------------------
# real sketches
# --------------------------------------------------------------------------------------


def _murmur3_int64(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MurmurHash3_x64_128 of int64 keys with the HLL seed 9001, as hll_sketch.update(int) computes it."""

    def fmix(k: np.ndarray) -> np.ndarray:
        k = k ^ (k >> np.uint64(33))
        k = k * np.uint64(0xFF51AFD7ED558CCD)
        k = k ^ (k >> np.uint64(33))
        k = k * np.uint64(0xC4CEB9FE1A85EC53)
        out: np.ndarray = k ^ (k >> np.uint64(33))
        return out

    with np.errstate(over="ignore"):
        k1 = keys.astype(np.uint64) * np.uint64(0x87C37B91114253D5)
        k1 = (k1 << np.uint64(31)) | (k1 >> np.uint64(33))
        k1 = k1 * np.uint64(0x4CF5AD432745937F)
        h1 = (np.uint64(9001) ^ k1) ^ np.uint64(8)
        h2 = np.full_like(h1, np.uint64(9001 ^ 8))
        h1 = h1 + h2
        h2 = h2 + h1
        h1 = fmix(h1)
        h2 = fmix(h2)
        h1 = h1 + h2
        h2 = h2 + h1
    return h1, h2


def _high_value_keys(num_candidates: int) -> tuple[list[int], list[int]]:
    """Keys whose HLL register value is >= 15 (rare: 2^-14), to build HLL_4 exception tables."""
    keys = np.arange(10**9, 10**9 + num_candidates, dtype=np.int64)
    _, h2 = _murmur3_int64(keys)
    high = h2 < np.uint64(1 << 50)  # at least 14 leading zeros
    picked = keys[high]
    h = h2[high]
    values = [min(64 - int(x).bit_length(), 62) + 1 for x in h.tolist()]
    return picked.tolist(), values


def _hll(lg_k: int, tgt: Any, keys: Iterable[Any], *, full: bool = False) -> Any:
    sk = ds.hll_sketch(lg_k, tgt, full)
    for key in keys:
        sk.update(key)
    return sk


def build_corpus(seed: int, *, scale: float = 1.0) -> list[list[bytes]]:
    """Real serialized sketches of every kind and mode; ``scale`` < 1 shrinks the big ones."""
    rng = np.random.default_rng(seed)
    kll: list[bytes] = []
    for k in (8, 9, 33, 200, 1024):
        for n in (0, 1, 2, 3, 7, 8, 9, k - 1, k, k + 1, 3 * k, 5000):
            sk = ds.kll_doubles_sketch(k)
            sk.update(rng.normal(size=n))
            kll.append(sk.serialize())
            if n:
                sk.get_quantile(0.5)  # sets the level-zero-sorted flag
                kll.append(sk.serialize())
    for k, n in ((8, 1_000_000), (200, 2_000_000), (1024, 300_000)):
        sk = ds.kll_doubles_sketch(k)
        sk.update(rng.standard_cauchy(size=int(n * scale)))
        kll.append(sk.serialize())
    for values in (
        np.array([np.inf, -np.inf, 1.0, np.nan]),
        np.full(3000, 7.0),
        np.arange(5000.0),
        np.array([-0.0, 0.0] * 600),
        np.concatenate([np.full(500, -np.inf), rng.normal(size=500)]),
    ):
        for k in (8, 200):
            sk = ds.kll_doubles_sketch(k)
            sk.update(values)
            kll.append(sk.serialize())
    for ka, kb, na, nb in ((200, 8, 5000, 7000), (50, 1000, 100000, 3), (16, 16, 1, 1), (200, 100, 150, 150), (8, 8, 0, 900)):
        a = ds.kll_doubles_sketch(ka)
        a.update(rng.normal(size=na))
        b = ds.kll_doubles_sketch(kb)
        b.update(rng.exponential(size=nb))
        a.merge(b)
        kll.append(a.serialize())
        b.merge(a)
        kll.append(b.serialize())
    acc = ds.kll_doubles_sketch(64)
    for _ in range(12):
        part = ds.kll_doubles_sketch(int(rng.integers(8, 300)))
        part.update(rng.normal(size=int(rng.integers(0, 3000))))
        acc.merge(part)
        kll.append(acc.serialize())

    fi: list[bytes] = []
    odd_words = ["", "a", "é", "日本語", "🙂 emoji", "x" * 700, "\x00nul", "tab\tnew\nline"]
    for lg in (3, 4, 6, 10, 12):
        for distinct in (0, 1, 5, 6, 7, 40, 2000):
            sk = ds.frequent_strings_sketch(lg)
            for i in range(distinct):
                sk.update(f"item-{i}", int(rng.integers(1, 50)))
            fi.append(sk.serialize())
            for word in odd_words:
                sk.update(word)
            fi.append(sk.serialize())
            for z in rng.zipf(1.3, size=1500).tolist():
                sk.update(str(z))
            fi.append(sk.serialize())
    big = ds.frequent_strings_sketch(5)
    big.update("big", 2**40)
    big.update("bigger", 2**62)
    fi.append(big.serialize())
    for la, lb in ((3, 8), (10, 10), (4, 12)):
        a = ds.frequent_strings_sketch(la)
        b = ds.frequent_strings_sketch(lb)
        for _ in range(400):
            a.update(str(int(rng.integers(0, 300))))
            b.update(str(int(rng.integers(0, 30))), int(rng.integers(1, 9)))
        a.merge(b)
        fi.append(a.serialize())
        b.merge(a)
        fi.append(b.serialize())

    hll: list[Any] = []
    next_key = iter(range(1, 1 << 62, 7919))
    for lg_k in (4, 5, 8, 11, 12, 16):
        for tgt in HLL_TYPES:
            for n in (0, 1, 7, 8, 9, 100, 400, 3000, 20000):
                hll.append(_hll(lg_k, tgt, (next(next_key) for _ in range(n))))
            for n in (0, 5, 800):
                hll.append(_hll(lg_k, tgt, (f"s{i}" for i in range(n)), full=True))
    # HLL_4 exception tables: natural ones (large lg_k, curMin still 0) and crafted ones
    hll.append(_hll(16, ds.HLL_4, range(int(150_000 * scale))))
    high_keys, high_values = _high_value_keys(int(3_000_000 * scale))
    for lg_k, n_high, n_plain in ((10, 120, 0), (10, 20, 300), (12, 60, 2000), (4, 16, 20), (5, 40, 60), (8, 60, 5000)):
        keys = list(range(5_000_000, 5_000_000 + n_plain)) + high_keys[:n_high]
        hll.append(_hll(lg_k, ds.HLL_4, keys))
    # curMin > 0 with exceptions: values >= curMin + 15 on a tiny sketch
    plain4 = _hll(4, ds.HLL_4, range(100))
    cur_min = plain4.serialize_compact()[6]
    for key, value in zip(high_keys, high_values, strict=True):
        if value >= cur_min + 15:
            plain4.update(key)
    hll.append(plain4)
    for lg_union in (4, 8, 12, 16):
        for (la, na), (lb, nb) in (((8, 5), (12, 7)), ((12, 100), (8, 3000)), ((16, 50000), (4, 10)), ((10, 0), (10, 20)), ((4, 1000), (10, 1000))):
            union = ds.hll_union(lg_union)
            union.update(_hll(la, ds.HLL_8, (next(next_key) for _ in range(na))))
            union.update(_hll(lb, ds.HLL_4, (next(next_key) for _ in range(nb))))
            union.update(_hll(min(la, lb), ds.HLL_4, high_keys[:30]))
            hll.extend(union.get_result(t) for t in HLL_TYPES)
    hll_bytes = [b for sk in hll for b in (sk.serialize_compact(), sk.serialize_updatable())]
    return [kll, fi, hll_bytes]


@pytest.fixture(scope="module")
def corpus() -> list[list[bytes]]:
    return build_corpus(7)


# --------------------------------------------------------------------------------------
# mutations
# --------------------------------------------------------------------------------------

U32_SPECIALS = (0, 1, 2, 7, 8, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
DOUBLE_SPECIALS = (math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, 5e-324, -0.0)


def _put(buf: bytearray, fmt: str, offset: int, value: Any) -> None:
    size = struct.calcsize(fmt)
    if offset >= 0 and offset + size <= len(buf):
        if fmt[-1] in "BHIQ":
            value &= (1 << (8 * size)) - 1
        struct.pack_into(fmt, buf, offset, value)


def _get(buf: bytes | bytearray, fmt: str, offset: int, default: int = 0) -> Any:
    if offset >= 0 and offset + struct.calcsize(fmt) <= len(buf):
        return struct.unpack_from(fmt, buf, offset)[0]
    return default


def _tweak_int(r: random.Random, old: int, bits: int) -> int:
    mask = (1 << bits) - 1
    choice = r.randrange(5)
    if choice == 0:
        return (old + r.choice((-3, -2, -1, 1, 2, 3))) & mask
    if choice == 1:
        return r.choice(U32_SPECIALS) & mask
    if choice == 2:
        return old ^ (1 << r.randrange(bits))
    if choice == 3:
        return r.randrange(1 << min(bits, 12))
    return r.getrandbits(bits)


def mutate_generic(data: bytes, r: random.Random, peers: Sequence[bytes]) -> bytes:
    """Bit flips, byte/word overwrites, truncations, extensions, random bytes, splices."""
    buf = bytearray(data)
    choice = r.randrange(9)
    if choice <= 2 and buf:
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            pos = r.randrange(len(buf) * 8)
            buf[pos >> 3] ^= 1 << (pos & 7)
    elif choice == 3 and buf:
        for _ in range(r.choice((1, 2, 4))):
            buf[r.randrange(len(buf))] = r.choice((0, 1, 0x7F, 0x80, 0xFF, r.randrange(256)))
    elif choice == 4 and len(buf) >= 4:
        pos = r.randrange(0, len(buf) - 3)
        pos -= pos % 4 if r.random() < 0.7 else 0
        _put(buf, "<I", pos, _tweak_int(r, _get(buf, "<I", pos), 32))
    elif choice == 5:
        del buf[r.randrange(len(buf) + 1) if r.random() < 0.5 else max(0, len(buf) - r.randrange(1, 17)) :]
    elif choice == 6:
        extra = r.choice((1, 4, 8, 16, r.randrange(1, 300)))
        buf += bytes(extra) if r.random() < 0.5 else r.randbytes(extra)
    elif choice == 7:
        keep = r.randrange(min(len(buf), 40) + 1)
        buf = buf[:keep] + bytearray(r.randbytes(r.randrange(0, 200)))
    else:
        other = r.choice(peers)
        cut = r.randrange(len(buf) + 1)
        buf = buf[:cut] + bytearray(other[r.randrange(len(other) + 1) :])
    return bytes(buf)


def _kll_levels(buf: bytearray) -> tuple[int, list[int]]:
    num_levels = buf[18] if len(buf) > 18 else 0
    return num_levels, [_get(buf, "<I", 20 + 4 * i) for i in range(num_levels)]


def _kll_fix_n(buf: bytearray) -> None:
    """Rewrite n so it matches the (possibly corrupted) level boundaries."""
    num_levels, levels = _kll_levels(buf)
    if num_levels == 0 or len(buf) < 20 + 4 * num_levels:
        return
    k = _get(buf, "<H", 4)
    capacity = _capacity(k, num_levels)
    bounds = [*levels, capacity]
    n = sum((bounds[i + 1] - bounds[i]) << i for i in range(num_levels))
    _put(buf, "<Q", 8, n % (1 << 64))


def _capacity(k: int, num_levels: int) -> int:
    total = 0
    for h in range(num_levels):
        depth = min(num_levels - h - 1, 60)
        total += max(8, (((2 * k) << depth) // 3**depth + 1) >> 1) if depth <= 30 else 8
    return total


def mutate_kll(data: bytes, r: random.Random) -> bytes:
    buf = bytearray(data)
    if len(buf) < 8:
        return bytes(buf)
    full = len(buf) >= 20 and buf[0] == 5
    choice = r.randrange(10)
    if choice == 0:
        buf[r.choice((0, 1, 2, 3, 3, 3, 6, 7))] ^= 1 << r.randrange(8)
    elif choice == 1:
        _put(buf, "<H", 4, _tweak_int(r, _get(buf, "<H", 4), 16))
    elif not full:
        if len(buf) >= 16:
            _put(buf, "<d", 8, r.choice(DOUBLE_SPECIALS))
        else:
            buf[3] ^= 1 << r.randrange(3)
    elif choice <= 4:  # level boundaries, n kept consistent half of the time
        num_levels, levels = _kll_levels(buf)
        if num_levels:
            i = r.randrange(num_levels)
            _put(buf, "<I", 20 + 4 * i, _tweak_int(r, levels[i], 32))
            if r.random() < 0.5:
                _kll_fix_n(buf)
    elif choice == 5:  # n
        _put(buf, "<Q", 8, _tweak_int(r, _get(buf, "<Q", 8), 64))
    elif choice == 6:  # num_levels / min_k, with a boundary added or removed to keep lengths plausible
        if r.random() < 0.5:
            buf[18] = _tweak_int(r, buf[18], 8)
        else:
            _put(buf, "<H", 16, _tweak_int(r, _get(buf, "<H", 16), 16))
        if r.random() < 0.3:
            pos = 20 + 4 * r.randrange(max(1, buf[18]))
            if r.random() < 0.5:
                buf[pos:pos] = struct.pack("<I", _get(buf, "<I", pos))
            else:
                del buf[pos : pos + 4]
            _kll_fix_n(buf)
    elif choice <= 8:  # item values: NaN, inf, order inside levels, min/max
        num_levels = buf[18]
        start = 20 + 4 * num_levels
        count = (len(buf) - start) // 8
        if count >= 2:
            i, j = r.randrange(count), r.randrange(count)
            if r.random() < 0.5:
                _put(buf, "<d", start + 8 * i, r.choice(DOUBLE_SPECIALS))
            else:
                a, b = _get(buf, "<d", start + 8 * i), _get(buf, "<d", start + 8 * j)
                _put(buf, "<d", start + 8 * i, b)
                _put(buf, "<d", start + 8 * j, a)
    else:  # move a boundary and resize the item area so only the deep checks can tell
        num_levels, levels = _kll_levels(buf)
        if num_levels:
            i = r.randrange(num_levels)
            delta = r.choice((-2, -1, 1, 2))
            _put(buf, "<I", 20 + 4 * i, (levels[i] + delta) & 0xFFFFFFFF)
            if i == 0:
                if delta > 0:
                    del buf[-8 * delta :]
                else:
                    buf += struct.pack("<d", 0.5) * -delta
            _kll_fix_n(buf)
    return bytes(buf)


def _fi_strings(buf: bytes | bytearray) -> list[tuple[int, int]]:
    """(offset of the length field, length) of each string, as far as the buffer allows."""
    n = _get(buf, "<I", 8)
    pos = 32 + 8 * n
    out = []
    for _ in range(min(n, 100000)):
        length = _get(buf, "<I", pos, -1)
        if length < 0 or pos + 4 + length > len(buf):
            break
        out.append((pos, length))
        pos += 4 + length
    return out


def mutate_fi(data: bytes, r: random.Random) -> bytes:
    buf = bytearray(data)
    if len(buf) < 8:
        return bytes(buf)
    nonempty = len(buf) >= 32
    choice = r.randrange(9)
    if choice == 0 or not nonempty:
        buf[r.choice((0, 1, 2, 3, 4, 5, 6, 7))] = _tweak_int(r, buf[r.randrange(8)], 8)
        if r.random() < 0.5:
            buf[r.choice((3, 4))] = r.randrange(0, 40)
    elif choice == 1:
        _put(buf, "<I", 8, _tweak_int(r, _get(buf, "<I", 8), 32))
    elif choice == 2:
        _put(buf, "<Q", r.choice((16, 24)), _tweak_int(r, _get(buf, "<Q", 16), 64))
    elif choice == 3:
        n = _get(buf, "<I", 8)
        if n:
            pos = 32 + 8 * r.randrange(min(n, 10000))
            _put(buf, "<Q", pos, r.choice((0, 1, 2**63, 2**64 - 1, _get(buf, "<Q", pos) + 1)))
    else:
        strings = _fi_strings(buf)
        if not strings:
            buf[r.randrange(len(buf))] ^= 0xFF
        elif choice <= 5:
            pos, length = r.choice(strings)
            _put(buf, "<I", pos, _tweak_int(r, length, 32))
        elif choice == 6:  # invalid UTF-8 inside a string
            pos, length = r.choice(strings)
            if length:
                buf[pos + 4 + r.randrange(length)] = r.choice((0xFF, 0xC0, 0x80, 0xED))
        else:  # duplicate an item (same length) or swap in another one
            (pa, la), (pb, lb) = r.choice(strings), r.choice(strings)
            if la == lb:
                buf[pa + 4 : pa + 4 + la] = buf[pb + 4 : pb + 4 + lb]
            else:
                buf[pa : pa + 4 + la] = buf[pb : pb + 4 + lb]
    return bytes(buf)


def _hll_registers(buf: bytes | bytearray) -> tuple[int, int, int, int]:
    """(lg_k, type, register bytes, register area end) of an HLL-mode image."""
    lg_k = min(max(buf[3], 4), 21)
    tgt = (buf[7] >> 2) & 3
    nbytes = (1 << (lg_k - 1)) if tgt == 0 else ((3 << lg_k) >> 2) + 1 if tgt == 1 else 1 << lg_k
    return lg_k, tgt, nbytes, 40 + nbytes


def hll_fix_summary(data: bytes | bytearray) -> bytes:
    """Recompute num_at_cur_min, kxq0/kxq1 and the empty flag of an HLL-mode image from its registers."""
    buf = bytearray(data)
    lg_k, tgt, _, end = _hll_registers(buf)
    if len(buf) < end or buf[0] != 10 or tgt == 3:
        return bytes(buf)
    k = 1 << lg_k
    raw = np.frombuffer(bytes(buf[40:end]), dtype=np.uint8)
    if tgt == 0:
        nib = np.empty(k, dtype=np.int64)
        nib[0::2] = raw & 15
        nib[1::2] = raw >> 4
        at_min = int(np.count_nonzero(nib == 0))
        values = nib + buf[6]
        aux_count = _get(buf, "<I", 36)
        slots = aux_count if buf[5] & 8 else 1 << min(buf[4], 22)
        if len(buf) >= end + 4 * slots:
            entries = np.frombuffer(bytes(buf[end : end + 4 * slots]), dtype="<u4").astype(np.int64)
            entries = entries[entries != 0]
            slot = entries & ((1 << 26) - 1)
            ok = slot < k
            values[slot[ok]] = np.where(nib[slot[ok]] == 15, entries[ok] >> 26, values[slot[ok]])
    else:
        if tgt == 1:
            bits = np.arange(k) * 6
            wide = raw.astype(np.uint16)
            values = (((wide[bits >> 3] | (wide[(bits >> 3) + 1] << 8)) >> (bits & 7).astype(np.uint16)) & 63).astype(np.int64)
        else:
            values = raw.astype(np.int64)
        at_min = int(np.count_nonzero(values == 0))
    counts = np.bincount(values, minlength=64).tolist()
    _put(buf, "<d", 16, math.fsum(c * 2.0**-v for v, c in enumerate(counts[:32]) if c))
    _put(buf, "<d", 24, math.fsum(c * 2.0**-v for v, c in enumerate(counts[32:], start=32) if c))
    _put(buf, "<I", 32, at_min)
    buf[5] = (buf[5] | 4) if (buf[6] == 0 and at_min == k) else (buf[5] & ~4)
    return bytes(buf)


def mutate_hll(data: bytes, r: random.Random) -> bytes:
    buf = bytearray(data)
    if len(buf) < 8:
        return bytes(buf)
    mode = buf[7] & 3
    choice = r.randrange(10)
    if choice == 0:  # preamble bytes: preInts, lgK, lgArr, flags, mode/type
        pos = r.choice((0, 3, 4, 5, 5, 5, 6, 7, 7))
        buf[pos] = _tweak_int(r, buf[pos], 8) if r.random() < 0.5 else buf[pos] ^ (1 << r.randrange(8))
    elif mode in (0, 1):
        start = 8 if mode == 0 else 12
        count = (len(buf) - start) // 4
        if choice <= 2:  # counts and table size
            if mode == 0:
                buf[6] = _tweak_int(r, buf[6], 8)
            else:
                _put(buf, "<I", 8, _tweak_int(r, _get(buf, "<I", 8), 32))
            if r.random() < 0.3:
                buf[4] = _tweak_int(r, buf[4], 8)
        elif count > 0:
            i, j = r.randrange(count), r.randrange(count)
            old = _get(buf, "<I", start + 4 * i)
            kind = r.randrange(4)
            if kind == 0:  # value bits cleared or set to something else
                new = (old & ((1 << 26) - 1)) | (r.randrange(64) << 26)
            elif kind == 1:
                new = _get(buf, "<I", start + 4 * j)  # duplicate
            elif kind == 2:
                new = 0
            else:
                new = old ^ (1 << r.randrange(32))
            _put(buf, "<I", start + 4 * i, new)
            if kind == 3 and r.random() < 0.5:  # move a coupon elsewhere in the hash table
                _put(buf, "<I", start + 4 * j, old)
                _put(buf, "<I", start + 4 * i, _get(buf, "<I", start + 4 * j) if i != j else old)
    else:
        lg_k, tgt, nbytes, end = _hll_registers(buf)
        fix = r.random() < 0.5  # keep the summary consistent so only deeper checks (or nothing) can tell
        if choice <= 3:  # registers
            for _ in range(r.choice((1, 1, 2, 5))):
                pos = 40 + r.randrange(max(1, nbytes))
                if pos < len(buf):
                    if tgt == 0:
                        nib = r.choice((15, 0, 1, r.randrange(16)))
                        buf[pos] = (buf[pos] & 0xF0) | nib if r.random() < 0.5 else (buf[pos] & 0x0F) | (nib << 4)
                    else:
                        buf[pos] = r.choice((0, 1, 62, 63, 64, 255, r.randrange(256)))
        elif choice == 4:
            buf[6] = _tweak_int(r, buf[6], 8)
        elif choice == 5:
            _put(buf, "<I", 32, _tweak_int(r, _get(buf, "<I", 32), 32))
            fix = False
        elif choice == 6:
            _put(buf, "<I", 36, _tweak_int(r, _get(buf, "<I", 36), 32))
            if r.random() < 0.5:
                buf[4] = _tweak_int(r, buf[4], 8)
        elif choice == 7:  # estimator doubles
            _put(buf, "<d", r.choice((8, 16, 24)), r.choice((*DOUBLE_SPECIALS, r.random() * 1000)))
            fix = False
        else:  # exception table entries
            entries = (len(buf) - end) // 4
            if entries > 0:
                pos = end + 4 * r.randrange(entries)
                old = _get(buf, "<I", pos)
                new = r.choice((
                    old ^ (1 << r.randrange(26, 32)),
                    old | (1 << r.randrange(lg_k, 26)),
                    (old & ((1 << 26) - 1)) | (r.randrange(64) << 26),
                    _get(buf, "<I", end + 4 * r.randrange(entries)),
                    0,
                ))
                _put(buf, "<I", pos, new)
            else:
                _put(buf, "<I", 36, 1)
                buf += struct.pack("<I", (r.randrange(15, 64) << 26) | r.randrange(1 << lg_k))
        if fix:
            return hll_fix_summary(buf)
    return bytes(buf)


def _random_values(r: random.Random, n: int) -> list[float]:
    pool = (r.gauss(0.0, 1.0), r.uniform(-1e300, 1e300), math.inf, -math.inf, 0.0, -0.0, 5e-324, float(r.randrange(5)))
    return [r.choice(pool) if r.random() < 0.2 else r.gauss(0.0, 10.0) for _ in range(n)]


def synth_kll(r: random.Random) -> bytes:
    """A self-consistent KLL image with arbitrary level populations (often far from what updates produce)."""
    k = r.choice((8, 9, 20, 200, 1024))
    num_levels = r.choice((1, 2, 3, 5, 9, 15, r.randint(1, 61)))
    capacity = _capacity(k, num_levels)
    bounds = [*sorted(r.randint(0, capacity) for _ in range(num_levels)), capacity]
    if r.random() < 0.3:  # keep the top level populated, as real sketches do
        bounds[num_levels - 1] = min(bounds[num_levels - 1], capacity - 1)
        bounds[: num_levels - 1] = [min(b, bounds[num_levels - 1]) for b in bounds[: num_levels - 1]]
    n = sum((bounds[i + 1] - bounds[i]) << i for i in range(num_levels))
    sorted_flag = r.random() < 0.5
    items: list[float] = []
    for i in range(num_levels):
        level = _random_values(r, bounds[i + 1] - bounds[i])
        items += level if (i == 0 and not sorted_flag) else sorted(level)
    low = min(items, default=0.0)
    high = max(items, default=0.0)
    low = r.choice((low, low, -math.inf, low - 1.0))
    high = r.choice((high, high, math.inf, high + 1.0))
    head = struct.pack("<BBBBHBBQHBB", 5, 1, 15, 2 if sorted_flag else 0, k, 8, 0, n % (1 << 64), r.randint(8, k), num_levels, 0)
    return head + struct.pack(f"<{num_levels}I", *bounds[:-1]) + struct.pack(f"<{2 + len(items)}d", low, high, *items)


def synth_fi(r: random.Random) -> bytes:
    """A self-consistent frequent-strings image with arbitrary weights and strings."""
    lg_max = r.randint(3, 12)
    lg_cur = r.randint(3, lg_max)
    num = r.randint(1, (3 << lg_cur) >> 2)
    words = list({r.choice(("", "é", "x" * r.randrange(50), str(r.random()), f"w{r.randrange(10**6)}")) + str(i) for i in range(num)})
    weights = [r.choice((1, 2, r.randrange(1, 1 << 20), r.randrange(1, 1 << 62))) for _ in words]
    offset = r.choice((0, 0, 1, r.randrange(1 << 40)))
    total = sum(weights) + offset + r.choice((0, 0, 5, r.randrange(1 << 40)))
    if total >= 1 << 64:
        weights = [1 + w % (1 << 20) for w in weights]
        total, offset = sum(weights), 0
    body = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    head = struct.pack("<BBBBBBHIIQQ", 4, 1, 10, lg_max, lg_cur, 0, 0, len(words), 0, total, offset)
    return head + struct.pack(f"<{len(words)}Q", *weights) + body


def _hash_insert(table: list[int], lg_arr: int, key: int, entry: int) -> None:
    """Insert like CouponHashSet::find / AuxHashMap::find: start at key & mask, odd stride from the key's high bits."""
    mask = (1 << lg_arr) - 1
    probe = key & mask
    stride = ((key & ((1 << 26) - 1)) >> lg_arr) | 1
    while table[probe]:
        probe = (probe + stride) & mask
    table[probe] = entry


def synth_hll(r: random.Random) -> bytes:
    """A self-consistent HLL image in any mode and type, with arbitrary registers and tables."""
    lg_k = r.choice((4, 5, 7, 8, 10, 12, 16))
    tgt = r.randrange(3)
    compact = r.random() < 0.5
    flags = (8 if compact else 0) | (16 if r.random() < 0.3 else 0)
    mode = r.choice((0, 1, 2, 2)) if lg_k >= 8 else r.choice((0, 2))
    if mode == 0:
        count = r.randint(0, 7)
        coupons = list({(r.randint(1, 63) << 26) | r.getrandbits(26) for _ in range(count)})
        flags |= 4 if not coupons else 0
        cells = coupons + ([] if compact else [0] * (8 - len(coupons)))
        return bytes([2, 1, 7, lg_k, 3, flags, len(coupons), tgt << 2]) + struct.pack(f"<{len(cells)}I", *cells)
    if mode == 1:
        lg_arr = r.randint(5, lg_k - 3)
        count = r.randint(8, (3 << lg_arr) >> 2)
        coupons = list({(r.randint(1, 63) << 26) | r.getrandbits(26) for _ in range(count)})
        if len(coupons) < 8:
            return synth_hll(r)
        table = [0] * (1 << lg_arr)
        for c in coupons:
            _hash_insert(table, lg_arr, c, c)
        cells = coupons if compact else table
        head = bytes([3, 1, 7, lg_k, lg_arr, flags, 0, 1 | (tgt << 2)]) + struct.pack("<I", len(coupons))
        return head + struct.pack(f"<{len(cells)}I", *cells)
    k = 1 << lg_k
    flags |= 32 if r.random() < 0.2 else 0
    g = np.random.default_rng(r.getrandbits(64))
    filled = g.random(k) < r.random()
    aux: dict[int, int] = {}
    lg_aux = 0
    tail = b""
    if tgt == 0:
        cur_min = r.choice((0, 0, 1, 5, r.randint(0, 48)))
        nibbles = np.where(filled, g.integers(0, 15, k), 0).clip(0, 63 - cur_min)
        nibbles[r.randrange(k)] = 0
        if cur_min + 15 <= 63:
            for slot in r.sample(range(k), r.choice((0, 0, 1, 3, min(k, r.randint(0, 300))))):
                if nibbles[slot]:
                    nibbles[slot] = 15
                    aux[slot] = r.randint(cur_min + 15, 63)
        registers = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
        min_lg_aux = (0, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12, 13)[lg_k]
        if aux:
            lg_aux = max(min_lg_aux, math.ceil(math.log2(len(aux) * 4 / 3 + 1e-9)))
            lg_aux = min(lg_aux + r.choice((0, 0, 1)), lg_k + 1)
            if compact:
                tail = struct.pack(f"<{len(aux)}I", *((v << 26) | s for s, v in aux.items()))
            else:
                table = [0] * (1 << lg_aux)
                for s_, v in aux.items():
                    _hash_insert(table, lg_aux, s_, (v << 26) | s_)
                tail = struct.pack(f"<{len(table)}I", *table)
        elif not compact:
            tail = bytes(4 << min_lg_aux)
    else:
        cur_min = 0
        values = np.where(filled, g.integers(0, 64, k), 0).astype(np.uint64)
        if tgt == 2:
            registers = values.astype(np.uint8).tobytes()
        else:  # pack 6-bit registers, 4 to every 3 bytes, plus one padding byte
            quads = values.reshape(-1, 4)
            word = (
                quads[:, 0]
                | (quads[:, 1] << np.uint64(6))
                | (quads[:, 2] << np.uint64(12))
                | (quads[:, 3] << np.uint64(18))
            )
            registers = (
                np.stack([(word >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(3)], axis=1)
                .astype(np.uint8)
                .tobytes()
                + b"\0"
            )
    head = bytes([10, 1, 7, lg_k, lg_aux, flags, cur_min, 2 | (tgt << 2)])
    head += struct.pack("<dddII", r.choice((0.0, r.random() * 1e6)), 0.0, 0.0, 0, len(aux))
    return hll_fix_summary(head + registers + tail)


STRUCTURED = (mutate_kll, mutate_fi, mutate_hll)
SYNTHESIZERS = (synth_kll, synth_fi, synth_hll)


def make_case(kind: int, corpus: Sequence[bytes], r: random.Random) -> bytes:
    """A corrupted real sketch, or a synthetic self-consistent one, possibly corrupted too."""
    data = SYNTHESIZERS[kind](r) if r.random() < 0.15 else r.choice(corpus)
    for _ in range(r.choice((0, 1, 1, 1, 2, 3)) if r.random() < 0.5 else r.choice((1, 1, 2, 3))):
        data = STRUCTURED[kind](data, r) if r.random() < 0.6 else mutate_generic(data, r, corpus)
    return data


def fuzz_cases(corpus: list[list[bytes]], counts: dict[int, int], seed: int) -> Iterator[tuple[int, bytes]]:
    r = random.Random(seed)
    for kind, n in counts.items():
        for _ in range(n):
            yield kind, make_case(kind, corpus[kind], r)


def validate(kind: int, data: bytes) -> bool:
    """True when the validator accepts; any exception other than ProfileFormatError propagates."""
    try:
        VALIDATORS[kind](data)
    except ProfileFormatError:
        return False
    return True


# --------------------------------------------------------------------------------------
# the worker: deserialize and use sketches natively, in a child process
# --------------------------------------------------------------------------------------

OK, DESERIALIZE_RAISED, USE_RAISED = 0, 1, 2
# what nanobind turns C++ exceptions into (invalid_argument, out_of_range, logic/runtime errors, bad_alloc)
NATIVE_ERRORS = (ArithmeticError, LookupError, MemoryError, RuntimeError, TypeError, ValueError)
CRASH_KIND = 99  # makes a worker segfault on purpose, to test the harness itself


def _use_kll(sk: Any) -> None:
    _ = (sk.n, sk.k, sk.num_retained, sk.is_empty(), sk.is_estimation_mode(), sk.normalized_rank_error(True))
    if not sk.is_empty():
        _ = (sk.get_min_value(), sk.get_max_value(), sk.get_quantile(0.5), sk.get_rank(0.0))
        _ = (sk.get_quantiles([0.0, 0.1, 0.99, 1.0]), sk.get_pmf([-1.0, 0.0, 1.0]), sk.get_cdf([0.0]))
    sk.to_string(True, True)
    acc = ds.kll_doubles_sketch(200)
    acc.update(np.linspace(-3.0, 3.0, 1000))
    acc.merge(sk)
    acc.get_quantile(0.3)
    sk.merge(acc)
    sk.update(np.linspace(-5.0, 5.0, 2500))  # compactions on top of the deserialized levels
    sk.get_quantile(0.7)
    ds.kll_doubles_sketch.deserialize(sk.serialize()).get_quantile(0.2)


def _use_fi(sk: Any) -> None:
    for err in (ds.NO_FALSE_POSITIVES, ds.NO_FALSE_NEGATIVES):
        sk.get_frequent_items(err)
    _ = (sk.get_estimate("a"), sk.get_lower_bound("1"), sk.get_upper_bound(""), sk.total_weight, sk.num_active_items)
    sk.to_string(True)
    acc = ds.frequent_strings_sketch(6)
    for i in range(60):
        acc.update(str(i), i + 1)
    acc.merge(sk)
    acc.get_frequent_items(ds.NO_FALSE_POSITIVES)
    sk.merge(acc)
    for i in range(300):  # forces purges of the deserialized map
        sk.update(f"u{i}")
    ds.frequent_strings_sketch.deserialize(sk.serialize()).get_frequent_items(ds.NO_FALSE_NEGATIVES)


def _use_hll(sk: Any) -> None:
    _ = (sk.get_estimate(), sk.is_empty(), sk.is_compact(), sk.lg_config_k, sk.tgt_type)
    for d in (1, 2, 3):
        _ = (sk.get_lower_bound(d), sk.get_upper_bound(d))
    _ = (sk.get_compact_serialization_bytes(), sk.get_updatable_serialization_bytes())
    sk.to_string(True, True, True, True)
    for lg in (4, sk.lg_config_k, 12):
        union = ds.hll_union(lg)
        union.update(sk)
        union.update(_hll(10, ds.HLL_4, range(300)))
        union.update(sk)
        for tgt in HLL_TYPES:
            union.get_result(tgt).get_estimate()
    ds.hll_sketch.deserialize(sk.serialize_updatable()).get_estimate()
    for i in range(3000):  # promotions, curMin shifts and exception-table updates on the deserialized sketch
        sk.update(i)
    ds.hll_sketch.deserialize(sk.serialize_compact()).get_estimate()
    ds.hll_sketch.deserialize(sk.serialize_updatable()).get_upper_bound(2)


DESERIALIZERS: tuple[Callable[[bytes], Any], ...] = (
    ds.kll_doubles_sketch.deserialize,
    ds.frequent_strings_sketch.deserialize,
    ds.hll_sketch.deserialize,
)
USERS: tuple[Callable[[Any], None], ...] = (_use_kll, _use_fi, _use_hll)


def exercise(kind: int, data: bytes) -> int:
    """Deserialize natively and use the sketch; the status says what raised (a crash never returns)."""
    try:
        sk = DESERIALIZERS[kind](data)
    except NATIVE_ERRORS:
        return DESERIALIZE_RAISED
    try:
        USERS[kind](sk)
    except NATIVE_ERRORS:
        return USE_RAISED
    return OK


def worker_main() -> None:
    """Serve cases from stdin: <kind:u8><len:u32><bytes> in, one status byte out, until EOF."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(5)
        if len(head) < 5:
            return
        kind, size = struct.unpack("<BI", head)
        data = stdin.read(size)
        if kind == CRASH_KIND:
            faulthandler._sigsegv()  # type: ignore[attr-defined]
        stdout.write(bytes([exercise(kind, data)]))
        stdout.flush()


class WorkerCrashError(AssertionError):
    """A native call killed (or hung) a worker process."""


class WorkerPool:
    """A few long-lived worker processes that each run many cases and report one status per case."""

    def __init__(self, size: int, *, case_timeout: float = 120.0) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        self._timeout = case_timeout
        self._logs = [self._anonymous_log() for _ in range(size)]  # a crashed worker's backtrace lands here
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=root,
            )
            for log in self._logs
        ]

    @staticmethod
    def _anonymous_log() -> int:
        fd, path = tempfile.mkstemp(prefix="mlwatch-worker-", suffix=".log")
        os.unlink(path)
        return fd

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in self._logs:
            os.close(fd)

    def _ask(self, proc: subprocess.Popen[bytes], kind: int, data: bytes) -> bytes | None:
        """Send one case: the one-byte answer, b"" if the worker died, None if it hung (it is then killed)."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(struct.pack("<BI", kind, len(data)) + data)
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self._timeout)
            if not ready:
                proc.kill()
                return None
            return proc.stdout.read(1)
        except OSError:
            return b""

    def run(self, cases: Sequence[tuple[int, bytes]]) -> list[int]:
        """Statuses in case order; raises WorkerCrashError naming the input that killed a worker."""
        statuses = [-1] * len(cases)
        crashes: list[str] = []
        lock = threading.Lock()
        next_index = iter(range(len(cases)))

        def drive(proc: subprocess.Popen[bytes], log: int) -> None:
            while True:
                with lock:
                    i = None if crashes else next(next_index, None)
                if i is None:
                    return
                kind, data = cases[i]
                answer = self._ask(proc, kind, data)
                if answer:
                    statuses[i] = answer[0]
                    continue
                code = proc.wait()
                os.lseek(log, 0, os.SEEK_SET)
                trace = os.read(log, 1 << 20).decode(errors="replace")[-3000:]
                name = KIND_NAMES[kind] if kind < len(KIND_NAMES) else str(kind)
                what = f"hung for {self._timeout:g} s" if answer is None else f"died (exit code {code})"
                with lock:
                    crashes.append(f"worker {what} on {name} case #{i}: {data.hex()}\n{trace}")
                return

        threads = [threading.Thread(target=drive, args=pair) for pair in zip(self._procs, self._logs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if crashes:
            raise WorkerCrashError("\n".join(crashes))
        return statuses


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_real_sketches_pass_and_deserialize(corpus: list[list[bytes]]) -> None:
    cases = []
    for kind, images in enumerate(corpus):
        for data in images:
            VALIDATORS[kind](data)  # raises on a false reject
            cases.append((kind, data))
    with WorkerPool(WORKERS) as pool:
        statuses = pool.run(cases)
    assert statuses == [OK] * len(cases)


def test_corpus_covers_every_mode(corpus: list[list[bytes]]) -> None:
    kll, fi, hll = corpus
    assert {b[3] & 5 for b in kll} == {0, 1, 4}  # full, empty, single item
    assert any(b[18] > 10 for b in kll if b[0] == 5)  # estimation mode, many levels
    assert {b[5] for b in fi} == {0, 5}
    assert any(struct.unpack_from("<I", b, 8)[0] > 1000 for b in fi if len(b) > 8)
    seen = set()
    for b in hll:
        mode, tgt, compact = b[7] & 3, b[7] >> 2, bool(b[5] & 8)
        has_aux = mode == 2 and struct.unpack_from("<I", b, 36)[0] > 0
        seen.add((mode, tgt, compact, has_aux, mode == 2 and b[6] > 0))
    for mode in (0, 1, 2):
        for tgt in (0, 1, 2):
            for compact in (False, True):
                assert (mode, tgt, compact, False, False) in seen
    for compact in (False, True):
        assert (2, 0, compact, True, False) in seen  # HLL_4 exception table, curMin 0
        assert (2, 0, compact, True, True) in seen  # HLL_4 exception table, curMin > 0
        assert (2, 0, compact, False, True) in seen


def test_hll_lg_k_21_with_raised_limit() -> None:
    sk = _hll(21, ds.HLL_4, range(5000))
    for data in (sk.serialize_compact(), sk.serialize_updatable()):
        validate_hll(data, max_lg_k=21)
        with pytest.raises(ProfileFormatError, match="lg_k"):
            validate_hll(data)


def test_limits_are_enforced() -> None:
    kll = ds.kll_doubles_sketch(2000)
    kll.update(np.arange(10.0))
    with pytest.raises(ProfileFormatError, match="k: expected a value in \\[8, 1024\\], found 2000"):
        validate_kll_doubles(kll.serialize())
    validate_kll_doubles(kll.serialize(), max_k=2000)
    fi = ds.frequent_strings_sketch(14)
    fi.update("x" * 100)
    with pytest.raises(ProfileFormatError, match="lg_max_map_size"):
        validate_frequent_strings(fi.serialize(), max_lg_map_size=12)
    with pytest.raises(ProfileFormatError, match="at most 10 bytes"):
        validate_frequent_strings(fi.serialize(), max_string_bytes=10)
    with pytest.raises(ConfigError):
        validate_kll_doubles(kll.serialize(), max_k=7)
    with pytest.raises(ConfigError):
        validate_hll(b"", max_lg_k=22)
    with pytest.raises(TypeError):
        validate_hll("not bytes")  # type: ignore[arg-type]


def test_bytes_like_inputs_are_accepted(corpus: list[list[bytes]]) -> None:
    for kind, images in enumerate(corpus):
        data = images[-1]
        VALIDATORS[kind](bytearray(data))  # type: ignore[arg-type]
        VALIDATORS[kind](memoryview(data))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "mutation", "message"),
    [
        (KLL, lambda b: b[:20] + struct.pack("<I", struct.unpack_from("<I", b, 20)[0] ^ 0x40) + b[24:], "level boundary|length|n:"),
        (KLL, lambda b: b[:8] + struct.pack("<Q", struct.unpack_from("<Q", b, 8)[0] + 1) + b[16:], "n: expected"),
        (KLL, lambda b: b[:-8] + struct.pack("<d", math.nan), "NaN"),
        (KLL, lambda b: b[:-1], "total length"),
        (KLL, lambda b: b[:8] + struct.pack("<Q", 2**63) + b[16:], "n: expected at most 2\\^52"),
        (FI, lambda b: b[:8] + struct.pack("<I", 60000) + b[12:], "number of active items"),
        (FI, lambda b: b[:32] + bytes(8) + b[40:], "weight of item 0"),
        (FI, lambda b: b[:-1] + b"\xff", "valid UTF-8"),
        (HLL, lambda b: b[:6] + bytes([200]) + b[7:], "coupon count"),
        (HLL, lambda b: b[:8] + b[12:16] + b[12:], "distinct coupons"),
    ],
)
def test_targeted_corruptions_are_named(kind: int, mutation: Callable[[bytes], bytes], message: str) -> None:
    if kind == KLL:
        sk = ds.kll_doubles_sketch(200)
        sk.update(np.arange(100000.0))
        data = sk.serialize()
    elif kind == FI:
        sk = ds.frequent_strings_sketch(8)
        for i in range(50):
            sk.update(str(i), i + 1)
        data = sk.serialize()
    else:
        data = _hll(12, ds.HLL_8, range(5)).serialize_updatable()
    VALIDATORS[kind](data)
    with pytest.raises(ProfileFormatError, match=message):
        VALIDATORS[kind](mutation(data))


def test_hll4_register_without_exception_entry_is_rejected() -> None:
    # the native code dereferences a null exception table for this input
    data = bytearray(_hll(8, ds.HLL_4, range(1000)).serialize_compact())
    data[40] |= 0x0F
    with pytest.raises(ProfileFormatError, match="exception"):
        validate_hll(bytes(data))
    with pytest.raises(ProfileFormatError, match="exception"):
        validate_hll(hll_fix_summary(data))


def test_fuzz_never_crashes_the_native_code(corpus: list[list[bytes]]) -> None:
    """20,000 corrupted images; every one the validator accepts must deserialize and work natively."""
    accepted: list[tuple[int, bytes]] = []
    total = 0
    for kind, data in fuzz_cases(corpus, FUZZ_CASES, FUZZ_SEED):
        total += 1
        if validate(kind, data):
            accepted.append((kind, data))
    assert total >= 10_000 * min(FUZZ_SCALE, 1.0)
    # the fuzz must also reach the native code with odd-but-consistent images, not only real ones
    known = {data for images in corpus for data in images}
    assert sum(data not in known for _, data in accepted) >= total // 20
    with WorkerPool(WORKERS) as pool:
        statuses = pool.run(accepted)
    raised = [(KIND_NAMES[k], d.hex()) for (k, d), s in zip(accepted, statuses, strict=True) if s != OK]
    assert not raised, f"accepted inputs the native code rejected: {raised[:3]}"


def test_batch_kll_check_agrees_with_the_validator(corpus: list[list[bytes]]) -> None:
    """`kll_doubles_all_valid` accepts a batch exactly when `validate_kll_doubles` accepts each image."""
    cases = [data for kind, data in fuzz_cases(corpus, {KLL: FUZZ_CASES[KLL]}, FUZZ_SEED + 1)]
    r = random.Random(FUZZ_SEED)
    outcomes = set()
    pos = 0
    while pos < len(cases):
        size = r.choice((1, 1, 2, 3, 5))
        batch = cases[pos : pos + size] + r.sample(corpus[KLL], r.choice((0, 2)))
        pos += size
        expected = all(validate(KLL, data) for data in batch)
        assert kll_doubles_all_valid(batch) == expected, [data.hex() for data in batch]
        outcomes.add(expected)
    assert outcomes == {True, False}
    assert kll_doubles_all_valid([]) and not kll_doubles_all_valid([b"\x00"], max_k=7)


def test_worker_pool_reports_the_input_that_killed_a_worker() -> None:
    data = b"\xde\xad\xbe\xef"
    with WorkerPool(1) as pool, pytest.raises(WorkerCrashError, match=f"exit code -?\\d+.*#1: {data.hex()}"):
        pool.run([(KLL, b""), (CRASH_KIND, data), (KLL, b"")])


def test_list_overrun_is_rejected() -> None:
    # a LIST image claiming 255 coupons: the native deserializer copies them into an 8-slot array
    data = bytes([2, 1, 7, 12, 3, 0, 255, 8]) + bytes(255 * 4)
    with pytest.raises(ProfileFormatError, match="coupon count"):
        validate_hll(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from((KLL, FI, HLL)), data=st.binary(max_size=600))
def test_random_bytes_only_raise_profile_format_error(kind: int, data: bytes) -> None:
    validate(kind, data)


@settings(max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from((KLL, FI, HLL)),
    pick=st.integers(min_value=0),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    tail=st.binary(max_size=40),
)
def test_edited_real_sketches_only_raise_profile_format_error(
    kind: int, pick: int, edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    images = _SMALL_CORPUS[kind]
    buf = bytearray(images[pick % len(images)])
    for pos, value in edits:
        if buf:
            buf[pos % len(buf)] = value
    if cut is not None:
        del buf[cut % (len(buf) + 1) :]
    validate(kind, bytes(buf) + tail)


def _small_corpus() -> list[list[bytes]]:
    kll = []
    for n in (0, 1, 5, 1000):
        sk = ds.kll_doubles_sketch(16)
        sk.update(np.arange(float(n)))
        kll.append(sk.serialize())
    fi = []
    for n in (0, 3, 40):
        f = ds.frequent_strings_sketch(4)
        for i in range(n):
            f.update(f"w{i % 9}", i + 1)
        fi.append(f.serialize())
    hll = []
    for lg_k, tgt, n in ((8, ds.HLL_4, 3), (8, ds.HLL_8, 40), (4, ds.HLL_4, 500), (5, ds.HLL_6, 70)):
        sk = _hll(lg_k, tgt, range(n))
        hll += [sk.serialize_compact(), sk.serialize_updatable()]
    return [kll, fi, hll]


_SMALL_CORPUS = _small_corpus() if __name__ != "__main__" else []


if __name__ == "__main__":
    worker_main()
