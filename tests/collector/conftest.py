"""Collector test helpers: profiles, OTLP requests, stores (SQLite and PostgreSQL) and live servers."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

import mlwatch
from mlwatch.collector.config import CollectorConfig
from mlwatch.collector.server import build_server
from mlwatch.collector.store import Store, open_store

POSTGRES_DSN = os.environ.get("MLWATCH_TEST_POSTGRES_DSN")
NO_POSTGRES = "MLWATCH_TEST_POSTGRES_DSN is not set (.ci/run starts PostgreSQL and sets it)"
TOKEN = "test-token-0123456789abcdef"


def make_profile(
    ws: float = 0.0,
    *,
    model: str = "fraud",
    shift: float = 0.0,
    n: int = 300,
    features: int = 2,
    version: str | None = None,
    segment: dict[str, str] | None = None,
    seed: int = 0,
    width: float = 60.0,
) -> mlwatch.Profile:
    """A window profile with numeric features f0.. and one categorical feature 'c'."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {f"f{i}": rng.normal(shift, 1.0, n) for i in range(features - 1)}
    data["c"] = rng.choice(["a", "b", "c"], n).tolist()
    p = mlwatch.profile(data, model=model, version=version)
    p.segment = dict(segment or {})
    p.window_start, p.window_end = ws, ws + width
    return p


def otlp_request(
    payloads: Sequence[bytes],
    *,
    service: str = "svc",
    instance: str = "i-1",
    as_json: bool = False,
    other_records: int = 0,
) -> bytes:
    """An OTLP ExportLogsServiceRequest carrying each payload as an mlwatch.profile record."""
    if as_json:
        records: list[dict[str, Any]] = [
            {"eventName": "mlwatch.profile", "body": {"bytesValue": base64.b64encode(p).decode()}} for p in payloads
        ]
        records += [{"body": {"stringValue": "hello"}} for _ in range(other_records)]
        doc = {"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "service.instance.id", "value": {"stringValue": instance}},
            ]},
            "scopeLogs": [{"scope": {"name": "mlwatch"}, "logRecords": records}],
        }]}
        return json.dumps(doc).encode()
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([
        KeyValue(key="service.name", value=AnyValue(string_value=service)),
        KeyValue(key="service.instance.id", value=AnyValue(string_value=instance)),
    ])
    sl = rl.scope_logs.add()
    for p in payloads:
        sl.log_records.add(event_name="mlwatch.profile", body=AnyValue(bytes_value=p))
    for _ in range(other_records):
        sl.log_records.add(body=AnyValue(string_value="hello"))
    return bytes(req.SerializeToString())


PROTOBUF_HEADERS = {"content-type": "application/x-protobuf"}
JSON_HEADERS = {"content-type": "application/json"}


def postgres_url(schema: str) -> str:
    """The test DSN with its own search_path, so each test gets empty tables."""
    assert POSTGRES_DSN is not None
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    """Remove a test schema and everything in it."""
    assert POSTGRES_DSN is not None
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "collector.db")
        return
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_url(schema)
    try:
        yield url
    finally:
        drop_schema(schema)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An open store on a fresh database of each kind."""
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


class RunningCollector:
    """A real collector under uvicorn on 127.0.0.1 with an ephemeral port, in a thread."""

    def __init__(self, config: CollectorConfig) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.config = replace(config, port=self.port)
        self.server = build_server(self.config, log_level="warning")
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._sock = sock
        self.url = f"{self.config.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningCollector:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("collector did not start")
            time.sleep(0.02)
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server (generous timeout: the machine is shared)."""
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, **kwargs)

    @property
    def state(self) -> Any:
        """The app's CollectorState (after start-up)."""
        return self.server.config.app.state.collector

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self._sock.close()


@pytest.fixture(scope="session")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """One collector (SQLite, test hooks on) shared by tests that use distinct model names."""
    db = tmp_path_factory.mktemp("collector") / "shared.db"
    config = CollectorConfig(db=str(db), evaluate_interval=0, test_hooks=True, worker_timeout=20)
    with RunningCollector(config) as running:
        yield running


@pytest.fixture
def client(shared_collector: RunningCollector) -> Iterator[httpx.Client]:
    """A client of the shared collector."""
    with shared_collector.client() as c:
        yield c
