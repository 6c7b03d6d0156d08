"""Deployment paths end to end: HTTPS, PostgreSQL storage, and the OpenTelemetry SDK's own OTLP exporter."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mlwatch.collector.config import CollectorConfig

from .conftest import (
    NO_POSTGRES,
    POSTGRES_DSN,
    PROTOBUF_HEADERS,
    RunningCollector,
    drop_schema,
    make_profile,
    otlp_request,
    postgres_url,
)


def test_tls(tmp_path: Path) -> None:
    """With --cert/--key the collector serves HTTPS (checked against the self-signed certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    config = CollectorConfig(db=str(tmp_path / "c.db"), certfile=str(cert), keyfile=str(key), evaluate_interval=0)
    with RunningCollector(config) as running, running.client(verify=ssl.create_default_context(cafile=str(cert))) as c:
        assert running.url.startswith("https://")
        assert c.get("/health").status_code == 200


def test_postgres_end_to_end(tmp_path: Path) -> None:
    """Ingest, idempotent retry, merged profile and drift with the store on PostgreSQL."""
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_url(schema)
    try:
        with RunningCollector(CollectorConfig(db=url, evaluate_interval=0)) as running, running.client() as c:
            body = otlp_request([make_profile(60.0 * i, seed=i).to_bytes() for i in range(4)])
            for _ in range(2):
                assert c.post("/v1/logs", content=body, headers=PROTOBUF_HEADERS).status_code == 200
            assert c.get("/health").json()["stored"]["profiles"] == 4
            prof = c.get("/api/models/fraud/profile", params={"start": 0, "end": 240}).json()["profile"]
            assert prof["rows"] == 1200
            d = c.get("/api/models/fraud/drift", params={"start": 180, "end": 240, "reference_windows": 3}).json()
            assert d["reference"]["kind"] == "moving" and d["drift"]["n_columns"] == 2
    finally:
        drop_schema(schema)


def test_opentelemetry_sdk_exporter(tmp_path: Path) -> None:
    """Profiles sent by the OTel SDK's OTLP/HTTP log exporter (bytes bodies, gzip) are stored."""
    otlp = pytest.importorskip("opentelemetry.exporter.otlp.proto.http._log_exporter")
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    with RunningCollector(CollectorConfig(db=str(tmp_path / "c.db"), evaluate_interval=0)) as running:
        exporter = otlp.OTLPLogExporter(endpoint=f"{running.url}/v1/logs", compression=otlp.Compression.Gzip)
        provider = LoggerProvider(resource=Resource.create({"service.name": "shop", "service.instance.id": "pod-1"}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        logger = provider.get_logger("mlwatch")
        payload = make_profile(0.0, model="sdk").to_bytes()
        logger.emit(event_name="mlwatch.profile", body=payload)
        provider.shutdown()
        with running.client() as c:
            deadline = time.monotonic() + 30
            while not c.get("/api/models").json()["models"] and time.monotonic() < deadline:
                time.sleep(0.1)
            services = c.get("/api/services").json()["services"]
            assert services[0]["service"] == "shop" and services[0]["instances"] == 1
            assert c.get("/api/models/sdk/profile", params={"start": 0, "end": 60}).json()["profile"]["rows"] == 300
