"""Body limits before parsing: caps after decompression, streaming gunzip, gzip bombs, concurrency."""

from __future__ import annotations

import asyncio
import gzip
import struct
import time
import zlib
from collections.abc import AsyncIterator, Sequence

import pytest

from mlwatch.collector.errors import HttpError
from mlwatch.collector.limits import ConcurrencyLimiter, read_body


async def _chunks(parts: Sequence[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def _read(headers: dict[str, str], parts: Sequence[bytes], limit: int) -> bytes:
    return asyncio.run(read_body(headers, _chunks(parts), limit))


def _status(headers: dict[str, str], parts: Sequence[bytes], limit: int) -> int:
    with pytest.raises(HttpError) as info:
        _read(headers, parts, limit)
    return info.value.status


def test_plain_and_gzip_bodies() -> None:
    """Bodies under the cap come back whole, gzip or not, however they are chunked."""
    data = bytes(range(256)) * 100
    assert _read({}, [data[:1000], data[1000:]], len(data)) == data
    z = gzip.compress(data)
    assert _read({"content-encoding": "gzip"}, [z[i : i + 7] for i in range(0, len(z), 7)], len(data)) == data


def test_caps() -> None:
    """Over the cap is 413 (declared length, plain, inflated); bad gzip is 400; other encodings 415."""
    assert _status({"content-length": "101"}, [], 100) == 413
    assert _status({}, [b"x" * 60, b"x" * 60], 100) == 413
    assert _status({"content-encoding": "gzip"}, [gzip.compress(b"x" * 101)], 100) == 413
    assert _status({"content-encoding": "gzip"}, [b"not gzip at all"], 100) == 400
    assert _status({"content-encoding": "gzip"}, [gzip.compress(b"abc")[:-4]], 100) == 400
    assert _status({"content-encoding": "gzip"}, [gzip.compress(b"abc") + b"junk"], 100) == 400
    assert _status({"content-encoding": "zstd"}, [b""], 100) == 415
    assert _status({"content-length": "nan"}, [b""], 100) == 400


def _gzip_of_zeros(mib: int) -> bytes:
    """A valid gzip stream of `mib` MiB of zeros, built in well under a second: after a full flush
    the compressor's output for the next MiB of zeros is the same bytes every time, so it is
    repeated instead of compressing a gigabyte (about 8 s); CRC and size trailer are the real ones."""
    block = b"\x00" * (1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    head = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    body = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    end = comp.flush()[:-8]  # the final block, without the trailer of the two MiB compressed
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    return head + body * (mib - 1) + end + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def test_gzip_of_zeros_is_what_it_says() -> None:
    data = zlib.decompress(_gzip_of_zeros(3), 16 + zlib.MAX_WBITS)
    assert len(data) == 3 << 20 and data.count(0) == len(data)


def test_gzip_bomb_stops_at_the_cap() -> None:
    """A 1 GB gzip bomb is refused after inflating about the cap, in well under a second."""
    bomb = _gzip_of_zeros(1024)
    assert len(bomb) < 2_000_000
    t0 = time.perf_counter()
    assert _status({"content-encoding": "gzip"}, [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)], 1 << 20) == 413
    assert time.perf_counter() - t0 < 1.0


def test_concurrency_limiter() -> None:
    """Beyond the limit a holder gets 429 with Retry-After at once; slots are given back."""
    lim = ConcurrencyLimiter(1)
    with lim.slot():
        with pytest.raises(HttpError) as info, lim.slot():
            pass
        assert info.value.status == 429 and info.value.headers == {"Retry-After": "1"}
    with lim.slot():
        assert lim.active == 1
    assert lim.active == 0 and lim.rejected == 1
