"""``mlwatch collector``: serve, or manage reference profiles in the collector's database.

    mlwatch collector [--host 127.0.0.1] [--port 4318] [--db PATH | postgresql://...] [--alerts alerts.toml] [...]
    mlwatch collector reference add ref.mlw --model fraud [--db ...]
    mlwatch collector reference show --model fraud [--db ...]
    mlwatch collector reference delete --model fraud [--db ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from mlwatch._errors import MlwatchError
from mlwatch._wire import WireLimits
from mlwatch.collector.config import (
    DEFAULT_PORT,
    ENV_HMAC_KEYS,
    ENV_TEST_HOOKS,
    ENV_TOKENS,
    CollectorConfig,
    load_hmac_keys,
    load_tokens,
)

__all__ = ["build_parser", "config_from_args", "main"]

ENV_DB = "MLWATCH_COLLECTOR_DB"
ENV_ALERTS = "MLWATCH_COLLECTOR_ALERTS"


def _db_default() -> str:
    return os.environ.get(ENV_DB, "mlwatch-collector.db")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlwatch collector",
        description="OTLP/HTTP receiver for mlwatch profiles: merges, stores and serves drift.",
        epilog=f"Secrets: bearer tokens in --token-file or {ENV_TOKENS}; HMAC keys (key_id=secret) in "
        f"--hmac-key-file or {ENV_HMAC_KEYS}.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (non-loopback needs tokens)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 4318, the OTLP/HTTP port)")
    parser.add_argument("--db", default=_db_default(), help=f"SQLite file or postgresql:// URL (default: ${ENV_DB} or mlwatch-collector.db)")
    parser.add_argument("--token-file", help="file of accepted bearer tokens, one per line")
    parser.add_argument("--hmac-key-file", help="file of key_id=secret lines; only signed profiles are accepted then")
    parser.add_argument("--cert", help="TLS certificate (PEM)")
    parser.add_argument("--key", help="TLS private key (PEM)")
    parser.add_argument("--workers", type=int, default=1, help="ingest worker processes (default 1)")
    parser.add_argument("--query-workers", type=int, default=1,
                        help="worker processes merging stored profiles for queries; a cold range's rollups are built on all of them (default 1)")
    parser.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="request body cap after decompression")
    parser.add_argument("--max-profile-bytes", type=int, default=8 * 1024 * 1024, help="cap on one profile's bytes")
    parser.add_argument("--max-columns", type=int, default=2000, help="cap on columns per profile section")
    parser.add_argument("--max-concurrency", type=int, default=4, help="ingest requests decoded at once before 429")
    parser.add_argument("--evaluate-interval", type=float, default=60.0, help="seconds between drift evaluations for /metrics and rollups of the last hour and day (0: off, background roll-ups too)")
    parser.add_argument("--moving-reference-windows", type=int, default=60, help="windows in the moving reference")
    parser.add_argument("--alerts", default=os.environ.get(ENV_ALERTS),
                        help=f"alerts TOML file: rules, channels, summary (default: ${ENV_ALERTS}); see docs/collector.md")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command")
    ref = sub.add_parser("reference", help="manage the reference profile of a model")
    ref_sub = ref.add_subparsers(dest="action", required=True)
    add = ref_sub.add_parser("add", help="store a profile file as the model's reference")
    add.add_argument("profile", help="a .mlw profile file (e.g. from `mlwatch profile`)")
    for p in (add, ref_sub.add_parser("show", help="describe the model's reference"),
              ref_sub.add_parser("delete", help="remove the model's reference")):
        p.add_argument("--model", required=True)
        p.add_argument("--db", default=argparse.SUPPRESS, help="as for the collector")
    return parser


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    """Validated settings from parsed arguments and the environment (raises `ConfigError`)."""
    alerts = None
    if args.alerts:
        from mlwatch.collector.alerts_config import load_alerts_config

        alerts = load_alerts_config(args.alerts)
    return CollectorConfig(
        host=args.host,
        port=args.port,
        db=args.db,
        tokens=load_tokens(args.token_file),
        certfile=args.cert,
        keyfile=args.key,
        hmac_keys=load_hmac_keys(args.hmac_key_file),
        max_body_bytes=args.max_body_bytes,
        max_concurrent_ingest=args.max_concurrency,
        limits=WireLimits(max_bytes=args.max_profile_bytes, max_columns=args.max_columns),
        workers=args.workers,
        query_workers=args.query_workers,
        evaluate_interval=args.evaluate_interval,
        moving_reference_windows=args.moving_reference_windows,
        test_hooks=os.environ.get(ENV_TEST_HOOKS) == "1",
        alerts=alerts,
    )


def _reference(args: argparse.Namespace) -> int:
    from mlwatch.collector.store import ReferenceRow, open_store

    store = open_store(args.db)
    try:
        if args.action == "add":
            from mlwatch.profile import Profile

            with open(args.profile, "rb") as fh:
                data = fh.read()
            p = Profile.from_bytes(data, limits=WireLimits(max_bytes=64 * 1024 * 1024))
            summary = {"model": p.model, "version": p.version, "segment": p.segment, "rows": p.rows,
                       "calls": p.calls, "columns": list(p.columns), "outputs": list(p.outputs),
                       "window_start": p.window_start, "window_end": p.window_end}
            store.set_reference(ReferenceRow(args.model, data, time.time(), f"file:{os.path.basename(args.profile)}", summary))
            print(f"reference for model {args.model!r}: {p.rows:,} rows, {len(p.columns)} columns ({store.url})")
        elif args.action == "show":
            ref = store.get_reference(args.model)
            if ref is None:
                print(f"model {args.model!r} has no reference", file=sys.stderr)
                return 1
            print(json.dumps({"model": ref.model, "uploaded_at": ref.uploaded_at, "source": ref.source, **ref.summary}, indent=2))
        else:
            if not store.delete_reference(args.model):
                print(f"model {args.model!r} has no reference", file=sys.stderr)
                return 1
            print(f"removed the reference of model {args.model!r}")
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "reference":
            return _reference(args)
        config = config_from_args(args)
        from mlwatch.collector.server import serve

        print(f"mlwatch collector listening on {config.scheme}://{config.host}:{config.port} (db: {args.db})", file=sys.stderr)
        serve(config, log_level=args.log_level)
        return 0
    except (MlwatchError, OSError) as exc:
        print(f"mlwatch collector: error: {exc}", file=sys.stderr)
        return 2
