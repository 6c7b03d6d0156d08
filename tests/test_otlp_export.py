"""OTLP export: one log record per window profile, the attribute convention, resource and options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from otlp_receiver import HealthDelta, Receiver, any_value, window_profile

import mlwatch
from mlwatch import ConfigError, Profile, ProfileFormatError, Settings
from mlwatch._httpx_transport import HttpxTransport
from mlwatch._runtime import Runtime
from mlwatch.otlp import OtlpExporter


def _attrs(rec: object) -> dict[str, object]:
    return {kv.key: any_value(kv.value) for kv in rec.attributes}  # type: ignore[attr-defined]


def test_each_window_profile_is_one_log_record(runtime: Runtime) -> None:
    """configure(endpoint=...): each closed (window, segment) profile is one `mlwatch.profile` record."""
    with Receiver() as rx:
        mlwatch.configure(endpoint=rx.url)

        @mlwatch.monitor(model="otlp_seg", version="2", segment_by=["country"])
        def predict(row: dict[str, object]) -> float:
            return 1.0

        for i in range(30):
            predict({"country": "DE" if i % 3 else "FR", "x": float(i)})
        mlwatch.flush()
        records = list(rx.log_records())
    calls: dict[str, int] = {}
    keys = set()
    for _resource, rec in records:
        assert rec.event_name == "mlwatch.profile"
        p = Profile.from_bytes(rec.body.bytes_value)
        attrs = _attrs(rec)
        assert attrs == {
            "mlwatch.model": "otlp_seg",
            "mlwatch.model.version": "2",
            "mlwatch.segment": p.segment_key,
            "mlwatch.window.start": p.window_start,
            "mlwatch.window.end": p.window_end,
            "mlwatch.format.version": int.from_bytes(rec.body.bytes_value[4:6], "little"),  # the body's own version
            "mlwatch.profile.calls": p.calls,
            "mlwatch.profile.id": attrs["mlwatch.profile.id"],
        }
        assert len(str(attrs["mlwatch.profile.id"])) == 32
        assert rec.time_unix_nano == int((p.window_end or 0) * 1e9)
        calls[p.segment_key] = calls.get(p.segment_key, 0) + p.calls
        keys.add((p.segment_key, p.window_start))
    assert len(records) == len(keys)  # one record per profile, no duplicates
    assert calls == {"country=DE": 20, "country=FR": 10}


def test_standard_otel_environment_is_honoured(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT/_HEADERS, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply with no option."""
    with Receiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret123")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-api")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ml")
        mlwatch.configure()

        @mlwatch.monitor(model="otlp_env")
        def predict(x: float) -> float:
            return x

        predict(1.0)
        mlwatch.flush()
        (resource, rec), *_ = list(rx.log_records())
        assert rx.accepted()[0].headers.get("x-api-key") == "secret123"
    assert resource["service.name"] == "fraud-api"
    assert resource["deployment.environment"] == "test" and resource["team"] == "ml"
    assert len(str(resource["service.instance.id"])) >= 32
    assert _attrs(rec)["mlwatch.model"] == "otlp_env"


def test_otlp_is_chosen_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an endpoint (option or variable) the embedded default, local files, stays in place."""
    assert not Settings().otlp_enabled
    assert Settings(endpoint="http://collector:4318").otlp_enabled
    assert Settings(use_global_providers=True).otlp_enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert Settings().otlp_enabled


@pytest.mark.parametrize(
    "options",
    [
        {"endpoint": "collector:4318"},
        {"endpoint": "ftp://collector"},
        {"headers": {"x": 1}},
        {"hmac_key": b"short"},
        {"hmac_key_id": ""},
        {"reference": {"fraud": "/nonexistent/ref.mlw"}},
        {"max_pending_windows": 0},
        {"max_pending_bytes": 10},
        {"export_timeout": 0},
        {"use_global_providers": "yes"},
    ],
)
def test_wrong_export_options_raise_at_configure(options: dict[str, object]) -> None:
    """Every export option is validated when configuring, with a precise ConfigError."""
    with pytest.raises(ConfigError):
        Settings().updated(options)


def test_from_settings_maps_every_option(tmp_path: object) -> None:
    """configure() options reach the exporter; the exporter's drain leaves the runtime's bound room."""
    s = Settings(
        endpoint="http://c:4318",
        headers={"a": "b"},
        export_timeout=3.0,
        export_metrics=False,
        hmac_key=b"k" * 32,
        hmac_key_id="k1",
        max_pending_bytes=4096,
        max_pending_windows=3,
        shutdown_timeout=2.0,
    )
    exp = OtlpExporter.from_settings(s)
    assert (exp.endpoint, exp.headers, exp.timeout, exp.metrics) == ("http://c:4318", {"a": "b"}, 3.0, False)
    assert (exp.hmac_key, exp.hmac_key_id, exp.max_pending_bytes, exp.max_pending_windows) == (b"k" * 32, "k1", 4096, 3)
    assert exp.shutdown_timeout < s.shutdown_timeout
    assert "k" * 32 not in repr(s)  # secrets stay out of reprs and logs


def test_hmac_signed_payloads() -> None:
    """With hmac_key, bodies verify with that key only, and records name the key id."""
    key = b"0123456789abcdef0123456789abcdef"
    with Receiver() as rx:
        exp = OtlpExporter(rx.url, metrics=False, hmac_key=key, hmac_key_id="k1")
        exp.export([window_profile("signed", 4)])
        assert exp.force_flush(5)
        exp.shutdown()
        [(_, rec)] = list(rx.log_records())
    assert _attrs(rec)["mlwatch.signature.key_id"] == "k1"
    assert Profile.from_bytes(rec.body.bytes_value, hmac_keys={"k1": key}).calls == 4
    with pytest.raises(ProfileFormatError):
        Profile.from_bytes(rec.body.bytes_value, hmac_keys={"k1": b"x" * 32})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_new_service_instance_id_after_fork() -> None:
    """A forked child exports with its own service.instance.id, so a collector merges rather than overwrites."""
    with Receiver() as rx:
        exp = OtlpExporter(rx.url, metrics=False)
        exp.export([window_profile("fork_parent")])
        assert exp.force_flush(5)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                exp.export([window_profile("fork_child")])
                code = 0 if exp.force_flush(5) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        exp.shutdown()
        ids = {_attrs(rec)["mlwatch.model"]: res["service.instance.id"] for res, rec in rx.log_records()}
    assert set(ids) == {"fork_parent", "fork_child"}
    assert ids["fork_parent"] != ids["fork_child"]


_FORK_SCRIPT = """
import os, sys, time, mlwatch
from mlwatch._runtime import RUNTIME
mlwatch.configure(endpoint=sys.argv[1], window_seconds=3600, export_metrics=False)

@mlwatch.monitor(model="forked")
def predict(x):
    return x

predict(1.0)  # the master's own call, as a --preload app module's warm-up
pid = os.fork()
if pid == 0:  # a worker recycled within its first window: that window closes at exit
    for i in range(7):
        predict(float(i))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the child's aggregator starts its exporters; no window has closed
        exporters = RUNTIME._exporters or []
        if exporters and exporters[0]._pipe is not None and not exporters[0]._pending.nbytes:
            break
        time.sleep(0.01)
    else:
        sys.exit(3)
    sys.exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_starts_its_exporters_with_its_aggregator(tmp_path: object) -> None:
    """A process forked after configure() (gunicorn --preload) sets its own OTLP pipeline up when its
    aggregator starts, not at exit (where OpenTelemetry can no longer start threads): its last window arrives."""
    with Receiver() as rx:
        out = subprocess.run(
            [sys.executable, "-c", _FORK_SCRIPT, rx.url], capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=_child_env()
        )
        assert out.returncode == 0, out.stderr
        got = [(res["service.instance.id"], Profile.from_bytes(rec.body.bytes_value).calls) for res, rec in rx.log_records()]
    assert sorted(calls for _, calls in got) == [1, 7]  # the child's 7 calls (exported at its exit) and the master's 1
    assert len({instance for instance, _ in got}) == 2


def test_application_providers_instead_of_mlwatch_own() -> None:
    """Given the application's LoggerProvider and MeterProvider, records and metrics go through them."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    logs = InMemoryLogRecordExporter()
    lp = LoggerProvider(shutdown_on_exit=False)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    exp = OtlpExporter(logger_provider=lp, meter_provider=mp)
    exp.export([window_profile("app_providers", 7)])
    assert exp.force_flush(5)
    exp.shutdown()
    [record] = logs.get_finished_logs()
    assert record.log_record.event_name == "mlwatch.profile"
    assert Profile.from_bytes(record.log_record.body).calls == 7  # type: ignore[arg-type]
    data = reader.get_metrics_data()
    assert data is not None
    calls = [
        dp.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "mlwatch.prediction.calls"
        for dp in m.data.data_points
    ]
    assert calls == [7]


_GLOBAL_SCRIPT = """
import json, mlwatch
from opentelemetry import _logs, metrics
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

logs = InMemoryLogRecordExporter()
lp = LoggerProvider()
lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
_logs.set_logger_provider(lp)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
mlwatch.configure(use_global_providers=True)

@mlwatch.monitor(model="global")
def predict(x):
    return x

for i in range(5):
    predict(float(i))
mlwatch.flush()
names = sorted({m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
print(json.dumps({"records": len(logs.get_finished_logs()), "metrics": names}))
"""


def test_use_global_providers_option(tmp_path: object) -> None:
    """configure(use_global_providers=True) emits into the application's global providers (own process)."""
    out = subprocess.run([sys.executable, "-c", _GLOBAL_SCRIPT], capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=_child_env())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["records"] == 1
    assert "mlwatch.prediction.calls" in result["metrics"] and "process.cpu.time" in result["metrics"]


def test_unset_global_logger_provider_counts_drops() -> None:
    """Global providers requested but never set by the application: the records are counted as dropped."""
    d = HealthDelta()
    exp = OtlpExporter(use_global_providers=True, metrics=False)
    exp.export([window_profile("no_global", 3)])
    exp.force_flush(5)
    exp.shutdown()
    assert d.dropped("export_no_logger_provider") == 3


def test_httpx_transport_registered_for_otlp_exporters() -> None:
    """The httpx transport is found under the `opentelemetry_http_transport` entry-point group."""
    from opentelemetry.exporter.http.transport import _load_http_transport_factory

    try:
        factory = _load_http_transport_factory("httpx")
    except ValueError:
        pytest.skip("mlwatch was not reinstalled since the entry point was added (pip install -e .)")
    assert factory is HttpxTransport
    transport = factory(verify=True, cert=None)
    transport.close()


def test_import_stays_cheap() -> None:
    """`import mlwatch` loads no OTLP exporter, protobuf or requests (only configuring OTLP does)."""
    code = "import sys, mlwatch; print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.exporter', 'google.protobuf', 'requests'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
