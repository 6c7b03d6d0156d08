"""The names mlwatch uses on OpenTelemetry data: one place for the exporter and the collector.

What: the event name, log-record attribute keys and instrumentation scope of the profile log
records, and the attribute keys of mlwatch's metrics. ``docs/otel-convention.md`` documents
them for people writing their own receivers.

Why a module: these names are a public wire contract (a collector, a Spark job or a vendor
pipeline filters and routes on them); keeping them as constants in one place stops the
exporter and the collector from drifting apart.
"""

from __future__ import annotations

__all__ = [
    "ATTR_CALLS",
    "ATTR_DRIFT_METHOD",
    "ATTR_FEATURE",
    "ATTR_FORMAT_VERSION",
    "ATTR_KEY_ID",
    "ATTR_METRIC",
    "ATTR_MODEL",
    "ATTR_MODEL_VERSION",
    "ATTR_PAYLOAD_ID",
    "ATTR_QUANTILE",
    "ATTR_REASON",
    "ATTR_SEGMENT",
    "ATTR_STAGE",
    "ATTR_WINDOW_END",
    "ATTR_WINDOW_START",
    "EVENT_NAME",
    "SCOPE_NAME",
]

#: The log record's event name: the record's body is one serialized `mlwatch.Profile`.
EVENT_NAME = "mlwatch.profile"
#: The instrumentation scope of every log record and metric mlwatch emits.
SCOPE_NAME = "mlwatch"

#: Model name (string). Always present.
ATTR_MODEL = "mlwatch.model"
#: Model version (string). Absent when the model has no version.
ATTR_MODEL_VERSION = "mlwatch.model.version"
#: Segment, canonical form ``key=value,key2=value2`` with keys sorted; ``""`` when unsegmented.
ATTR_SEGMENT = "mlwatch.segment"
#: Window start and end, seconds since the Unix epoch (double); the window is ``[start, end)``.
ATTR_WINDOW_START = "mlwatch.window.start"
ATTR_WINDOW_END = "mlwatch.window.end"
#: The profile wire-format version of the body (int), `mlwatch.FORMAT_VERSION` when written.
ATTR_FORMAT_VERSION = "mlwatch.format.version"
#: Monitored calls in the profile (int): for routing and dashboards only, never trusted by a merger.
ATTR_CALLS = "mlwatch.profile.calls"
#: The HMAC key id (string), present when the body is signed with HMAC-SHA256.
ATTR_KEY_ID = "mlwatch.signature.key_id"
#: A random id of these body bytes (32 hex digits), the same on every retry of the same bytes:
#: delivery is at-least-once, so a receiver may drop a payload id it already accepted.
ATTR_PAYLOAD_ID = "mlwatch.profile.id"

#: Metric attributes.
ATTR_FEATURE = "mlwatch.feature"
ATTR_QUANTILE = "mlwatch.quantile"
ATTR_DRIFT_METHOD = "mlwatch.drift.method"
#: The model-quality metric of ``mlwatch.model.quality`` (accuracy, roc_auc, mae, ...).
ATTR_METRIC = "mlwatch.metric"
ATTR_REASON = "mlwatch.reason"
ATTR_STAGE = "mlwatch.stage"
