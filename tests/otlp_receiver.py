"""Loopback OTLP/HTTP servers for the export tests: a scriptable receiver and a blackhole.

`Receiver` is a minimal OTLP/HTTP endpoint (``POST /v1/logs``, ``POST /v1/metrics``) on
127.0.0.1 and an ephemeral port. It decodes requests with ``opentelemetry-proto`` and answers
200, or, when scripted, a sequence of bad answers (status, headers, delay). `Blackhole` accepts
TCP connections and never answers. Both stop when their ``with`` block ends.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from mlwatch import Profile

__all__ = ["Blackhole", "HealthDelta", "Receiver", "Reply", "Request", "any_value", "window_profile"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, extra headers, and a delay before answering."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request the receiver got (body already decompressed) and the status it answered."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float
    status: int


def any_value(v: Any) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


class Receiver:
    """A loopback OTLP/HTTP receiver recording every request; scripted replies come first."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                body = (
                    gzip.decompress(raw)
                    if encoding == "gzip"
                    else zlib.decompress(raw)
                    if encoding == "deflate"
                    else raw
                )
                reply = receiver._next()
                if reply.delay:
                    time.sleep(reply.delay)
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, dict(self.headers), body, time.monotonic(), reply.status)
                    )
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to configure (``/v1/logs`` is appended by the exporter)."""
        return f"http://127.0.0.1:{self.port}"

    def _next(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding
    def accepted(self, path: str = "/v1/logs") -> list[Request]:
        """Requests to `path` that were answered 2xx."""
        with self._lock:
            return [r for r in self.requests if r.path == path and 200 <= r.status < 300]

    def log_records(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """(resource attributes, LogRecord) of every accepted log record."""
        for r in self.accepted("/v1/logs"):
            req = ExportLogsServiceRequest()
            req.ParseFromString(r.body)
            for rl in req.resource_logs:
                resource = {kv.key: any_value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        yield resource, rec

    def payload_ids(self) -> list[tuple[int, list[str]]]:
        """(status answered, ``mlwatch.profile.id`` of each record) of every request to /v1/logs, accepted or not."""
        out = []
        with self._lock:
            requests = [r for r in self.requests if r.path == "/v1/logs"]
        for r in requests:
            req = ExportLogsServiceRequest()
            req.ParseFromString(r.body)
            ids = [
                str(any_value(kv.value))
                for rl in req.resource_logs
                for sl in rl.scope_logs
                for rec in sl.log_records
                for kv in rec.attributes
                if kv.key == "mlwatch.profile.id"
            ]
            out.append((r.status, ids))
        return out

    def profiles(self, hmac_keys: Mapping[str, bytes] | None = None) -> list[Profile]:
        """Every accepted profile, decoded and validated."""
        return [Profile.from_bytes(rec.body.bytes_value, hmac_keys=hmac_keys) for _, rec in self.log_records()]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> every accepted Metric message with that name, in arrival order."""
        out: dict[str, list[Any]] = {}
        for r in self.accepted("/v1/metrics"):
            req = ExportMetricsServiceRequest()
            req.ParseFromString(r.body)
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out.setdefault(m.name, []).append(m)
        return out

    def wait_for(self, n: int, path: str = "/v1/logs", timeout: float = 10.0) -> list[Request]:
        """Wait until `n` requests to `path` were answered 2xx."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.accepted(path)
            if len(got) >= n:
                return got
            time.sleep(0.01)
        raise AssertionError(f"expected {n} accepted requests to {path}, got {len(self.accepted(path))}")


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)  # keep it open, read nothing, answer nothing

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- shared test helpers
def window_profile(
    model: str = "m",
    calls: int = 10,
    *,
    window: float = 0.0,
    width: float = 60.0,
    version: str | None = None,
    segment: Mapping[str, str] | None = None,
    latency: float = 0.001,
) -> Profile:
    """A closed window profile of `calls` calls with one numeric feature ``a`` (values 0..calls-1)."""
    import mlwatch

    p = mlwatch.profile({"a": [float(i) for i in range(calls)]}, model=model, version=version, segment=segment)
    p.calls = calls
    p.window_start, p.window_end = window, window + width
    p.record_latency([latency] * calls)
    return p


class HealthDelta:
    """mlwatch's health counters relative to when this object was made (HEALTH is process-wide)."""

    def __init__(self) -> None:
        from mlwatch._health import HEALTH

        self._health = HEALTH
        self.before = HEALTH.snapshot()

    def _get(self, section: str, key: str) -> int:
        now: dict[str, int] = self._health.snapshot()[section]
        return now.get(key, 0) - self.before[section].get(key, 0)

    def dropped(self, reason: str) -> int:
        return self._get("dropped", reason)

    def failures(self, reason: str) -> int:
        return self._get("export_failures", reason)

    def exported(self, name: str) -> int:
        return self._get("exported", name)

    def errors(self) -> dict[str, int]:
        now: dict[str, int] = self._health.snapshot()["internal_errors"]
        return {k: v - self.before["internal_errors"].get(k, 0) for k, v in now.items() if v != self.before["internal_errors"].get(k, 0)}
