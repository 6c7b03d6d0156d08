"""End-to-end: a real collector under uvicorn receives OTLP and serves the API (SQLite)."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mlwatch.collector.config import CollectorConfig
from mlwatch.collector.worker import CRASH_MODEL

from .conftest import JSON_HEADERS, PROTOBUF_HEADERS, TOKEN, RunningCollector, make_profile, otlp_request


def _post(client: httpx.Client, body: bytes, headers: dict[str, str] = PROTOBUF_HEADERS) -> httpx.Response:
    return client.post("/v1/logs", content=body, headers=headers)


def test_protobuf_ingest_then_api(client: httpx.Client) -> None:
    """Profiles sent as OTLP protobuf are stored and listed, merged and described by the API."""
    body = otlp_request([make_profile(60.0 * i, model="m-proto", seed=i).to_bytes() for i in range(3)])
    r = _post(client, body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    models = {m["model"]: m for m in client.get("/api/models").json()["models"]}
    assert models["m-proto"]["profiles"] == 3
    assert any(s["service"] == "svc" for s in client.get("/api/services").json()["services"])
    assert client.get("/api/models/m-proto/versions").json()["versions"][0]["rows"] == 900
    names = {f["name"] for f in client.get("/api/models/m-proto/features").json()["features"]}
    assert names == {"f0", "c"}
    merged = client.get("/api/models/m-proto/profile", params={"start": 0, "end": 180}).json()
    assert merged["profile"]["rows"] == 900 and merged["profile"]["columns"]["f0"]["count"] == 900
    wins = client.get("/api/models/m-proto/windows", params={"start": 0, "end": 180}).json()["windows"]
    assert [w["window_start"] for w in wins] == [0.0, 60.0, 120.0]


def test_json_gzip_ingest_and_other_records_ignored(client: httpx.Client) -> None:
    """OTLP JSON (base64 bytes bodies), gzip-encoded, is accepted; non-profile records are ignored."""
    body = otlp_request([make_profile(0.0, model="m-json").to_bytes()], as_json=True, other_records=3)
    r = _post(client, gzip.compress(body), {**JSON_HEADERS, "content-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert client.get("/api/models/m-json/versions").json()["versions"][0]["profiles"] == 1
    only_logs = otlp_request([], other_records=2)
    assert _post(client, only_logs).status_code == 200


def test_retry_is_idempotent_and_partial_windows_add_up(client: httpx.Client) -> None:
    """A retried export is stored once; two different payloads for one instance and window both count."""
    first = make_profile(0.0, model="m-idem", n=100, seed=1).to_bytes()
    second = make_profile(0.0, model="m-idem", n=50, seed=2).to_bytes()
    for _ in range(3):
        assert _post(client, otlp_request([first])).status_code == 200
    assert _post(client, otlp_request([second, second])).status_code == 200
    merged = client.get("/api/models/m-idem/profile", params={"start": 0, "end": 60}).json()["profile"]
    assert merged["rows"] == 150
    other_instance = otlp_request([first], instance="i-2")
    assert _post(client, other_instance).status_code == 200
    assert client.get("/api/models/m-idem/profile", params={"start": 0, "end": 60}).json()["profile"]["rows"] == 250


def test_bad_requests_get_json_errors(client: httpx.Client) -> None:
    """Malformed OTLP is 400, wrong content type 415, bad encoding 415, all with JSON bodies."""
    r = _post(client, b"\xff\x00garbage")
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    assert _post(client, b"{not json", JSON_HEADERS).status_code == 400
    r = _post(client, b"x", {"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["status"] == 415
    assert _post(client, b"x", {**PROTOBUF_HEADERS, "content-encoding": "br"}).status_code == 415
    assert _post(client, b"not gzip", {**PROTOBUF_HEADERS, "content-encoding": "gzip"}).status_code == 400
    r = client.get("/api/models/none-such/drift")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get("/api/models/x/drift", params={"start": "yesterday"}).status_code == 400


def test_invalid_profiles_rejected_and_partial_success(client: httpx.Client) -> None:
    """A corrupted profile is 400; next to a good one it is reported as an OTLP partial success."""
    good = make_profile(0.0, model="m-partial").to_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    r = _post(client, otlp_request([bytes(bad)]))
    assert r.status_code == 400 and "checksum" in r.json()["message"]
    r = _post(client, otlp_request([good, bytes(bad)], as_json=True), JSON_HEADERS)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    windowless = make_profile(0.0, model="m-partial")
    windowless.window_start = windowless.window_end = None
    assert _post(client, otlp_request([windowless.to_bytes()])).status_code == 400


def test_worker_crash_is_contained(shared_collector: RunningCollector, client: httpx.Client) -> None:
    """A profile that kills the worker gets a 500; the crash is counted and the next request succeeds."""
    before = client.get("/health").json()["workers"]["ingest"]["crashes"]
    r = _post(client, otlp_request([make_profile(0.0, model=CRASH_MODEL).to_bytes()]))
    assert r.status_code == 500 and r.json()["error"] == "worker_crashed"
    assert client.get("/health").json()["workers"]["ingest"]["crashes"] == before + 1
    r = _post(client, otlp_request([make_profile(0.0, model="m-after-crash").to_bytes()]))
    assert r.status_code == 200
    mixed = [make_profile(60.0, model="m-after-crash").to_bytes(), make_profile(0.0, model=CRASH_MODEL, seed=5).to_bytes()]
    r = _post(client, otlp_request(mixed, as_json=True), JSON_HEADERS)
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert client.get("/api/models/m-after-crash/versions").json()["versions"][0]["profiles"] == 2
    assert "mlwatch_collector_ingest_worker_crashes_total" in client.get("/metrics").text


def test_otlp_metrics_accepted(client: httpx.Client) -> None:
    """POST /v1/metrics answers success for valid OTLP, 400 for garbage."""
    assert client.post("/v1/metrics", content=b"", headers=PROTOBUF_HEADERS).status_code == 200
    assert client.post("/v1/metrics", content=b"{}", headers=JSON_HEADERS).json() == {}
    assert client.post("/v1/metrics", content=b"\xff\xff\xff", headers=PROTOBUF_HEADERS).status_code == 400


def test_reference_drift_and_quality(client: httpx.Client) -> None:
    """Uploaded and moving references drive drift and quality, over a range and per window."""
    body = otlp_request(
        [make_profile(60.0 * i, model="m-drift", seed=i).to_bytes() for i in range(4)]
        + [make_profile(60.0 * i, model="m-drift", shift=3.0, seed=i).to_bytes() for i in range(4, 6)]
    )
    assert _post(client, body).status_code == 200
    moving = client.get("/api/models/m-drift/drift", params={"start": 240, "end": 360, "reference_windows": 4}).json()
    assert moving["reference"]["kind"] == "moving" and moving["drift"]["drifted_columns"] == ["f0"]
    assert client.get("/api/models/m-drift/reference").status_code == 404
    ref = make_profile(model="anything", shift=3.0, n=2000, seed=9)
    ref.window_start = ref.window_end = None
    r = client.put("/api/models/m-drift/reference", content=ref.to_bytes())
    assert r.status_code == 201 and r.json()["reference"]["rows"] == 2000
    assert client.put("/api/models/m-drift/reference", content=b"junk").status_code == 400
    uploaded = client.get("/api/models/m-drift/drift", params={"start": 240, "end": 360}).json()
    assert uploaded["reference"]["kind"] == "uploaded" and uploaded["drift"]["drifted_columns"] == []
    per_window = client.get("/api/models/m-drift/drift/windows", params={"start": 0, "end": 360}).json()["windows"]
    assert [w["columns"]["f0"]["drifted"] for w in per_window] == [True] * 4 + [False] * 2
    quality = client.get("/api/models/m-drift/quality", params={"start": 0, "end": 240}).json()["quality"]
    assert quality["ok"] is False
    qw = client.get("/api/models/m-drift/quality/windows", params={"start": 240, "end": 360}).json()["windows"]
    assert len(qw) == 2
    assert client.get("/api/models/m-drift/reference", params={"format": "mlw"}).content == ref.to_bytes()
    assert client.delete("/api/models/m-drift/reference").status_code == 204
    assert client.delete("/api/models/m-drift/reference").status_code == 404
    raw = client.get("/api/models/m-drift/profile", params={"start": 0, "end": 360, "format": "mlw"}).content
    import mlwatch

    assert mlwatch.Profile.from_bytes(raw).rows == 1800


def test_openapi_matches_routes(shared_collector: RunningCollector, client: httpx.Client) -> None:
    """Every route is described in /openapi.json with its methods, and nothing else is."""
    from mlwatch.collector.app import ROUTES

    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    described = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = {(r.path, m) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    assert described == routed
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"] and op["responses"], path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """A collector with bearer tokens, an HMAC key, small limits and one ingest slot."""
    from mlwatch._wire import WireLimits

    db = tmp_path_factory.mktemp("secured") / "c.db"
    config = CollectorConfig(
        db=str(db), tokens=(TOKEN,), hmac_keys={"k1": b"secret-key"}, max_body_bytes=200_000,
        max_concurrent_ingest=1, limits=WireLimits(max_bytes=5_000, max_columns=5), evaluate_interval=0.3,
    )
    with RunningCollector(config) as running:
        yield running


def test_auth_required(secured: RunningCollector) -> None:
    """Without a valid bearer token every route but /health answers 401."""
    with secured.client() as c:
        body = otlp_request([make_profile(0.0).to_bytes(hmac_key=b"secret-key", key_id="k1")])
        r = c.post("/v1/logs", content=body, headers=PROTOBUF_HEADERS)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/models", headers={"authorization": "Bearer wrong-token-xxxxxxxx"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200


def test_hmac_and_limits(secured: RunningCollector) -> None:
    """Unsigned or wrongly signed profiles, oversized bodies and profiles are refused."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    with secured.client(headers=auth) as c:
        signed = make_profile(0.0).to_bytes(hmac_key=b"secret-key", key_id="k1")
        assert c.post("/v1/logs", content=otlp_request([signed]), headers=PROTOBUF_HEADERS).status_code == 200
        unsigned = make_profile(60.0).to_bytes()
        r = c.post("/v1/logs", content=otlp_request([unsigned]), headers=PROTOBUF_HEADERS)
        assert r.status_code == 400 and "signature" in r.json()["message"]
        forged = make_profile(60.0).to_bytes(hmac_key=b"other", key_id="k1")
        assert c.post("/v1/logs", content=otlp_request([forged]), headers=PROTOBUF_HEADERS).status_code == 400
        wide = make_profile(60.0, features=6, n=3).to_bytes(hmac_key=b"secret-key", key_id="k1")
        r = c.post("/v1/logs", content=otlp_request([wide]), headers=PROTOBUF_HEADERS)
        assert r.status_code == 400 and "at most 5 columns" in r.json()["message"]
        big = make_profile(60.0, n=5000).to_bytes(hmac_key=b"secret-key", key_id="k1")
        assert len(big) > 5_000
        r = c.post("/v1/logs", content=otlp_request([big]), headers=PROTOBUF_HEADERS)
        assert r.status_code == 413 and r.json()["error"] == "profile_too_large"
        r = c.post("/v1/logs", content=b"\x00" * 300_000, headers=PROTOBUF_HEADERS)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        bomb = gzip.compress(b"\x00" * 50_000_000, compresslevel=9)
        t0 = time.perf_counter()
        r = c.post("/v1/logs", content=bomb, headers={**PROTOBUF_HEADERS, "content-encoding": "gzip"})
        assert r.status_code == 413 and time.perf_counter() - t0 < 5


def test_overload_answers_429(secured: RunningCollector) -> None:
    """With the only ingest slot held by a slow upload, the next request gets 429 and Retry-After."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    release = threading.Event()
    started = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"\x0a"
        started.set()
        release.wait(30)
        yield b"\x00"

    def upload() -> None:
        with secured.client(headers=auth) as c:
            c.post("/v1/logs", content=slow_body(), headers=PROTOBUF_HEADERS)

    t = threading.Thread(target=upload)
    t.start()
    try:
        assert started.wait(30)
        with secured.client(headers=auth) as c:
            deadline = time.monotonic() + 10
            while True:
                r = c.post("/v1/logs", content=otlp_request([]), headers=PROTOBUF_HEADERS)
                if r.status_code == 429 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded"
    finally:
        release.set()
        t.join(30)


def test_metrics_exports_drift(secured: RunningCollector) -> None:
    """The evaluator publishes per-feature drift on /metrics in Prometheus text format."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    with secured.client(headers=auth) as c:
        payloads = [make_profile(60.0 * i, model="m-metrics", seed=i).to_bytes(hmac_key=b"secret-key", key_id="k1") for i in range(3)]
        payloads.append(make_profile(180.0, model="m-metrics", shift=4.0).to_bytes(hmac_key=b"secret-key", key_id="k1"))
        for p in payloads:
            assert c.post("/v1/logs", content=otlp_request([p]), headers=PROTOBUF_HEADERS).status_code == 200
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = c.get("/metrics").text
            if 'mlwatch_drift_window_start_seconds{model="m-metrics"} 180.0' in text:
                break
            time.sleep(0.2)
        assert 'mlwatch_drift_detected{feature="f0",method="ks",model="m-metrics",role="input"} 1.0' in text
        assert 'mlwatch_dataset_drift{model="m-metrics"}' in text
        assert "mlwatch_collector_requests_total" in text
