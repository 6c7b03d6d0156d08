"""The mlwatch collector: an OTLP/HTTP receiver that merges a fleet's profiles, stores them, serves drift.

Run it with ``mlwatch collector`` (or ``python -m mlwatch.collector``); it needs the ``collector``
extra (``pip install "mlwatch[collector]"``, plus ``mlwatch[postgres]`` for PostgreSQL). This package
is never imported by ``import mlwatch``: the SDK stays free of web frameworks and database drivers.

Modules, one job each: `config` (validated settings), `auth` (bearer tokens), `limits` (body caps,
gzip, concurrency), `otlp_decode` (OTLP logs in protobuf/JSON), `worker` (the supervised process
that runs every native sketch operation), `store`/`migrations`/`sql_store`/`sqlite_store`/
`postgres_store` (storage), `query` (range planning and rollups), `ingest` and `api` (HTTP routes),
`metrics` and `evaluator` (Prometheus exposition and periodic drift), `alerts_config` and `alerting`
(alert rules, channels and summary), `openapi`, `app`, `server`, `cli`.
"""

from __future__ import annotations

from mlwatch.collector.config import CollectorConfig

__all__ = ["CollectorConfig"]
