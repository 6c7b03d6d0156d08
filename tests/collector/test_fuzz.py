"""Fuzz: mutated and random payloads through the whole decode path; the server answers 4xx and keeps serving.

Two levels: OTLP protobuf bytes (random, truncated, bit-flipped) and profile bytes inside a valid
OTLP request, mutated then re-checksummed so the validators behind the checksum are exercised
(flipped bits, overwritten bytes, truncations, spliced sketches, edited JSON headers). A fixed
seed keeps failures reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct

import httpx

from .conftest import PROTOBUF_HEADERS, RunningCollector, make_profile, otlp_request

_PREFIX = struct.Struct("<4sHHI")


def _rechecksum(body: bytes) -> bytes:
    """Replace the SHA-256 trailer so a mutation gets past the checksum to the validators."""
    return body + hashlib.sha256(body).digest()


def _mutate_profile(rng: random.Random, data: bytes) -> bytes:
    body = bytearray(data[:-32])
    magic, version, flags, head_len = _PREFIX.unpack_from(body, 0)
    blob_start = _PREFIX.size + head_len
    choice = rng.randrange(6)
    if choice == 0:  # flip bits in the sketch area
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(blob_start, len(body))
            body[i] ^= 1 << rng.randrange(8)
    elif choice == 1:  # overwrite a run of sketch bytes
        i = rng.randrange(blob_start, len(body))
        for j in range(i, min(len(body), i + rng.randint(1, 16))):
            body[j] = rng.randrange(256)
    elif choice == 2:  # truncate the sketch area (header still claims the old layout)
        del body[rng.randrange(blob_start, len(body)) :]
    elif choice == 3:  # edit a number in the JSON header
        header = json.loads(bytes(body[_PREFIX.size : blob_start]))
        cols = header["columns"]
        col = cols[rng.randrange(len(cols))]
        field = rng.choice(["count", "missing", "kll_k", "freq_lg", "hll_lg", "n_numeric", "n_categorical"])
        col[field] = rng.choice([0, -1, 1, 2**31, 2**63, 10**30, 3.5, "x", None])
        head = json.dumps(header).encode()
        body = bytearray(_PREFIX.pack(magic, version, flags, len(head)) + head + body[blob_start:])
    elif choice == 4:  # random bytes in the header region
        i = rng.randrange(_PREFIX.size, blob_start)
        body[i] = rng.randrange(256)
    else:  # swap two halves of the sketch area
        mid = rng.randrange(blob_start, len(body))
        body = body[:blob_start] + body[mid:] + body[blob_start:mid]
    return _rechecksum(bytes(body))


def _mutate_otlp(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if choice == 1:
        return data[: rng.randrange(len(data))]
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def test_fuzzed_payloads_get_4xx_and_server_keeps_serving(shared_collector: RunningCollector, client: httpx.Client) -> None:
    """Hundreds of mutated requests: every answer is 2xx or 4xx, the worker never crashes, a valid request still works."""
    rng = random.Random(20261128)
    seeds = [make_profile(0.0, model="m-fuzz", features=f, n=n, seed=s).to_bytes() for f, n, s in ((2, 300, 1), (4, 2000, 2), (3, 20, 3))]
    crashes_before = client.get("/health").json()["workers"]["ingest"]["crashes"]
    statuses: dict[int, int] = {}
    for i in range(150):
        seed = seeds[i % len(seeds)]
        body = _mutate_otlp(rng, otlp_request([seed])) if i % 3 == 0 else otlp_request([_mutate_profile(rng, seed)])
        r = client.post("/v1/logs", content=body, headers=PROTOBUF_HEADERS)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (i, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["status"] == r.status_code
    assert statuses.get(400, 0) > 90
    assert client.get("/health").json()["workers"]["ingest"]["crashes"] == crashes_before
    ok = client.post("/v1/logs", content=otlp_request([make_profile(0.0, model="m-fuzz-after").to_bytes()]), headers=PROTOBUF_HEADERS)
    assert ok.status_code == 200
