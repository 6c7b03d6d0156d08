"""The wire format: lossless round trip, and untrusted bytes rejected with ProfileFormatError."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlwatch
from mlwatch import ProfileFormatError, WireLimits
from mlwatch._wire import FORMAT_VERSION, MAGIC


def _sample() -> mlwatch.Profile:
    rng = np.random.default_rng(7)
    p = mlwatch.profile(
        {
            "x": np.concatenate([rng.normal(size=5000), [np.nan, np.inf]]),
            "c": rng.choice(["a", "b", "c"], 5002).tolist(),
            "t": ["long text " * 30] * 5002,
        },
        model="fraud",
        version="3.2",
        segment={"country": "DE"},
        outputs={"score": rng.random(5002)},
    )
    p.window_start, p.window_end = 1_700_000_000.0, 1_700_000_060.0
    p.calls, p.errors, p.dropped = 5002, {"ValueError": 3}, 1
    p.record_latency(rng.exponential(0.01, 5002))
    return p


def _reseal(body: bytes) -> bytes:
    """Recompute the SHA-256 trailer so a test reaches the checks behind the checksum."""
    return body + hashlib.sha256(body).digest()


def _split(data: bytes) -> tuple[dict[str, object], bytes]:
    head_len = struct.unpack_from("<I", data, 8)[0]
    return json.loads(data[12 : 12 + head_len]), data[12 + head_len : -32]


def _join(header: dict[str, object], blob: bytes, version: int = FORMAT_VERSION) -> bytes:
    head = json.dumps(header).encode()
    return _reseal(struct.pack("<4sHHI", MAGIC, version, 0, len(head)) + head + blob)


def test_round_trip_is_lossless() -> None:
    """Every counter, identity field and sketch survives to_bytes/from_bytes."""
    p = _sample()
    q = mlwatch.Profile.from_bytes(p.to_bytes())
    assert (q.model, q.version, q.segment, q.window_start, q.window_end) == ("fraud", "3.2", {"country": "DE"}, p.window_start, p.window_end)
    assert (q.rows, q.calls, q.errors, q.dropped) == (p.rows, p.calls, p.errors, p.dropped)
    for name, col in p.columns.items():
        assert q.columns[name].summary() == col.summary()
    assert q.outputs["score"].summary() == p.outputs["score"].summary()
    assert q.latency is not None and p.latency is not None and q.latency.to_bytes() == p.latency.to_bytes()
    assert q.to_bytes() == p.to_bytes()


def test_save_and_load(tmp_path: object) -> None:
    """save() writes atomically and mlwatch.load() reads it back."""
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "ref.mlw"
    _sample().save(path)
    assert mlwatch.load(str(path)).rows == 5002
    assert not list(path.parent.glob("*.tmp-*"))


def test_hmac_signature() -> None:
    """Signed profiles verify with the right key and are rejected when forged or unsigned."""
    data = _sample().to_bytes(hmac_key=b"secret", key_id="k1")
    assert mlwatch.Profile.from_bytes(data, hmac_keys={"k1": b"secret"}).rows == 5002
    with pytest.raises(ProfileFormatError, match="signature does not verify"):
        mlwatch.Profile.from_bytes(data, hmac_keys={"k1": b"wrong"})
    with pytest.raises(ProfileFormatError, match="unknown key id"):
        mlwatch.Profile.from_bytes(data, hmac_keys={"k2": b"secret"})
    with pytest.raises(ProfileFormatError, match="not signed"):
        mlwatch.Profile.from_bytes(_sample().to_bytes(), hmac_keys={"k1": b"secret"})
    tampered = bytearray(data)
    tampered[40] ^= 1
    with pytest.raises(ProfileFormatError):
        mlwatch.Profile.from_bytes(bytes(tampered), hmac_keys={"k1": b"secret"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:20], "too short"),
        (lambda d: b"XXXX" + d[4:], "not an mlwatch profile"),
        (lambda d: d[:4] + struct.pack("<H", 99) + d[6:], "unsupported profile format version 99"),
        (lambda d: d[:6] + struct.pack("<H", 4) + d[8:], "unknown flags"),
        (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "checksum mismatch"),
        (lambda d: d[:-1], "checksum mismatch"),
    ],
)
def test_envelope_errors(mutate: object, message: str) -> None:
    """Truncation, wrong magic, unknown versions and flags, and corruption get clear errors."""
    data = _sample().to_bytes()
    with pytest.raises(ProfileFormatError, match=message):
        mlwatch.Profile.from_bytes(mutate(data))  # type: ignore[operator]


@pytest.fixture(params=["orjson", "stdlib"])
def header_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Headers parsed by orjson (when installed; the standard library decides what it refuses) or by the standard library alone."""
    import mlwatch._json

    if request.param == "orjson":
        pytest.importorskip("orjson")
        assert mlwatch._json.fast_loads is not None
    else:
        monkeypatch.setattr(mlwatch._json, "fast_loads", None)
    return str(request.param)


def test_both_header_parsers_read_the_same_profile(header_parser: str) -> None:
    p = _sample()
    assert mlwatch.Profile.from_bytes(p.to_bytes()).to_bytes() == p.to_bytes()
    header, blob = _split(p.to_bytes())
    header["window_start"] = float("nan")  # NaN: orjson refuses it, the standard library reads it, the check names it
    with pytest.raises(ProfileFormatError, match="'window_start' must be epoch seconds"):
        mlwatch.Profile.from_bytes(_join(header, blob))


def test_header_inconsistencies_rejected_behind_a_valid_checksum(header_parser: str) -> None:
    """With the checksum recomputed, the header's own checks still catch lies."""
    header, blob = _split(_sample().to_bytes())
    cases: list[tuple[dict[str, object], bytes, str]] = []
    h = json.loads(json.dumps(header))
    h["columns"][0]["count"] += 1  # type: ignore[index]
    cases.append((h, blob, "add up to"))
    h = json.loads(json.dumps(header))
    h["rows"] = -1
    cases.append((h, blob, "'rows' must be an integer"))
    h = json.loads(json.dumps(header))
    h["columns"][0]["numeric"]["kll"][1] += 1  # type: ignore[index]
    cases.append((h, blob, "does not follow|blob area"))
    cases.append((header, blob + b"\0", "blob area has"))
    h = json.loads(json.dumps(header))
    h["columns"][0]["kll_k"] = 5000  # type: ignore[index]
    cases.append((h, blob, "kll_k"))
    h = json.loads(json.dumps(header))
    h["columns"].append(h["columns"][0])  # type: ignore[attr-defined]
    cases.append((h, blob, "appears twice|does not follow"))
    h = json.loads(json.dumps(header))
    h["columns"][1]["n_categorical"] += 1  # type: ignore[index]
    h["columns"][1]["count"] += 1  # type: ignore[index]
    cases.append((h, blob, "category sketch weight"))
    h = json.loads(json.dumps(header))
    h["window_start"] = 10**400  # a JSON integer beyond float range: not an OverflowError
    cases.append((h, blob, "'window_start' must be epoch seconds"))
    h = json.loads(json.dumps(header))
    h["window_end"] = 1e300
    cases.append((h, blob, "'window_end' must be epoch seconds"))
    h = json.loads(json.dumps(header))
    numeric = next(c["numeric"] for c in h["columns"] if c.get("numeric"))  # type: ignore[attr-defined]
    numeric["mean"] = 10**400
    cases.append((h, blob, "'mean' is beyond the float range"))
    for header_case, blob_case, message in cases:
        with pytest.raises(ProfileFormatError, match=message):
            mlwatch.Profile.from_bytes(_join(header_case, blob_case))


def _with_double(blob: bytes, ref: list[int], index: int, value: float) -> bytes:
    pos = ref[0] + 8 * index
    return blob[:pos] + struct.pack("<d", value) + blob[pos + 8 :]


def test_extreme_values_checked_and_the_first_defect_named() -> None:
    """Extremes must be finite, ascending and at most n_extremes; of two defects the header's first is named."""
    header, blob = _split(_sample().to_bytes())
    low = header["columns"][0]["numeric"]["low"]  # type: ignore[index]
    out_high = header["outputs"][0]["numeric"]["high"]  # type: ignore[index]
    first = struct.unpack_from("<d", blob, low[0])[0]
    nan_low = _with_double(blob, low, 0, float("nan"))
    unsorted_high = _with_double(blob, out_high, 0, 1e9)
    few = json.loads(json.dumps(header))
    few["columns"][0]["n_extremes"] = 1  # type: ignore[index]
    miscounted_output = json.loads(json.dumps(header))
    miscounted_output["outputs"][0]["count"] += 1  # type: ignore[index]
    miscounted_input = json.loads(json.dumps(header))
    miscounted_input["columns"][0]["count"] += 1  # type: ignore[index]
    cases = [
        (header, nan_low, "columns\\[0\\] 'x': extreme values must be finite and sorted"),
        (header, _with_double(blob, low, 1, first - 1.0), "columns\\[0\\] 'x': extreme values must be finite and sorted"),
        (header, unsorted_high, "outputs\\[0\\] 'score': extreme values must be finite and sorted"),
        (few, blob, "columns\\[0\\] 'x': extreme values block has an invalid size"),
        (miscounted_output, nan_low, "columns\\[0\\] 'x': extreme values"),
        (miscounted_input, unsorted_high, "columns\\[0\\] 'x': value counts add up to"),
    ]
    for header_case, blob_case, message in cases:
        with pytest.raises(ProfileFormatError, match=message):
            mlwatch.Profile.from_bytes(_join(header_case, blob_case))
    q = mlwatch.Profile.from_bytes(_join(header, blob))
    assert q.columns["x"].numeric is not None and q.columns["x"].numeric.low[0] == first


def test_limits_applied_before_parsing() -> None:
    """Caps on size and column count reject oversized profiles early."""
    data = _sample().to_bytes()
    with pytest.raises(ProfileFormatError, match="over the"):
        mlwatch.Profile.from_bytes(data, limits=WireLimits(max_bytes=1000))
    with pytest.raises(ProfileFormatError, match="at most 1 columns"):
        mlwatch.Profile.from_bytes(data, limits=WireLimits(max_columns=1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_format_errors(data: bytes) -> None:
    """Arbitrary bytes never raise anything but ProfileFormatError."""
    with pytest.raises(ProfileFormatError):
        mlwatch.Profile.from_bytes(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_resealed_header_mutations_only_raise_format_errors(data: st.DataObject) -> None:
    """Random JSON edits behind a valid checksum are rejected cleanly (or parse to a valid profile)."""
    header, blob = _split(_sample().to_bytes())
    col = data.draw(st.sampled_from(header["columns"]))  # type: ignore[arg-type]
    key = data.draw(st.sampled_from(sorted(col)))
    col[key] = data.draw(st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=5), st.floats(), st.lists(st.integers(-3, 10), max_size=3)))
    with contextlib.suppress(ProfileFormatError):
        mlwatch.Profile.from_bytes(_join(header, blob))


def test_sketch_byte_corruption_never_crashes_the_process() -> None:
    """Bytes flipped inside the sketches (checksum recomputed) never reach native code unvalidated.

    Runs in a child process so a segfault in datasketches shows up as a failure, not a dead run.
    """
    script = textwrap.dedent(
        """
        import hashlib, random, struct, sys
        import numpy as np
        import mlwatch
        from mlwatch import ProfileFormatError
        rng = np.random.default_rng(3)
        p = mlwatch.profile({"x": rng.normal(size=20000), "c": rng.choice(["a", "b", "c"], 20000).tolist()},
                            outputs={"y": rng.random(20000)})
        p.record_latency(rng.random(3000))
        data = p.to_bytes()
        head_len = struct.unpack_from("<I", data, 8)[0]
        start, end = 12 + head_len, len(data) - 32
        r = random.Random(11)
        accepted = 0
        for i in range(3000):
            body = bytearray(data[:-32])
            for _ in range(r.choice((1, 1, 2, 4))):
                pos = r.randrange(start, end)
                if r.random() < 0.5:
                    body[pos] ^= 1 << r.randrange(8)
                else:
                    body[pos] = r.randrange(256)
            blob = bytes(body) + hashlib.sha256(bytes(body)).digest()
            try:
                q = mlwatch.Profile.from_bytes(blob)
                for c in list(q.columns.values()) + list(q.outputs.values()):
                    c.summary()
                accepted += 1
            except ProfileFormatError:
                pass
        print("ok", accepted)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("ok")
