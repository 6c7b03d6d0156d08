"""The collector's alerts file: rules, channels and a scheduled summary, validated at start-up.

```toml
grace = "30s"            # wait this long after a window ends before evaluating it (late replicas)

[channels.slack]
type = "webhook"         # POST Slack-compatible JSON: {"text": ..., "alerts": [...]}
url = "${SLACK_WEBHOOK_URL}"           # ${NAME}: read from the environment at start-up
timeout = 5
retries = 3

[channels.oncall]
type = "email"
host = "smtp.example.org"
port = 587
starttls = true
sender = "mlwatch@example.org"
recipients = ["oncall@example.org"]
username = "mlwatch"
password = "${SMTP_PASSWORD}"

[[rules]]
name = "input drift"
metric = "drift.psi"
features = "all"         # per feature (each its own episode); omit for model-level metrics
above = 0.2
for_windows = 3
cooldown = "1h"
channels = ["slack"]     # default: every channel

[[rules]]
name = "unusual drift"
metric = "drift.js"
features = "all"
calibrate = { k = 4, windows = 30 }    # above mean + k·sigma over 30 stored windows

[[freshness]]
name = "no traffic"      # model omitted: every model
signal = "traffic"       # or "labels"
windows = 3

[summary]
interval = "7d"
channels = ["oncall"]
```

Everything wrong raises `ConfigError` naming the file, the table and the key: unknown keys and
metrics, thresholds that are not finite numbers, per-feature metrics without ``features``,
unknown channel names, malformed URLs, missing environment variables. Secrets (``${NAME}``
values) are never printed: messages show the reference, and delivery errors are redacted.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from mlwatch._errors import ConfigError
from mlwatch.alerts import AlertRule, FreshnessRule, metric_scope
from mlwatch.notify import Email, Webhook

__all__ = [
    "AlertsConfig",
    "Calibration",
    "FreshnessConfig",
    "RuleConfig",
    "SummaryConfig",
    "load_alerts_config",
    "parse_alerts_config",
    "parse_duration",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Channel = Webhook | Email


@dataclass(frozen=True)
class Calibration:
    """A threshold from stored windows: mean + `k`·sigma of the metric over `windows` windows.

    Without `start`/`end` the windows are the latest ones before the first window the rule
    evaluates for a model (the rule waits until that many exist); with them, the latest `windows`
    windows starting in [start, end).
    """

    k: float = 4.0
    windows: int = 20
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class RuleConfig:
    """A threshold rule and where its alerts go (`rule.above` is a placeholder when calibrated)."""

    rule: AlertRule
    channels: tuple[str, ...]
    calibration: Calibration | None = None


@dataclass(frozen=True)
class FreshnessConfig:
    """A freshness rule and where its alerts go."""

    rule: FreshnessRule
    channels: tuple[str, ...]


@dataclass(frozen=True)
class SummaryConfig:
    """Every model's health over the last `period` seconds, sent every `interval` seconds.

    Sends are aligned to the epoch plus `offset` (a weekly summary goes out Thursdays 00:00 UTC
    with offset 0), so a restart does not postpone it.
    """

    interval: float
    channels: tuple[str, ...]
    period: float
    offset: float = 0.0
    title: str = "mlwatch summary"


@dataclass(frozen=True)
class AlertsConfig:
    """The validated alerts file (see the module docstring)."""

    rules: tuple[RuleConfig, ...] = ()
    freshness: tuple[FreshnessConfig, ...] = ()
    channels: Mapping[str, Channel] = field(default_factory=dict)
    summary: SummaryConfig | None = None
    grace: float = 30.0
    history: int = 500
    queue_size: int = 100
    source: str = "<alerts>"
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:  # channels hold secrets: never print them
        summary = "none" if self.summary is None else f"every {self.summary.interval:g}s"
        return (f"AlertsConfig({self.source}: {len(self.rules)} rules, {len(self.freshness)} freshness rules, "
                f"channels {sorted(self.channels)}, summary {summary})")

    def redact(self, text: str) -> str:
        """`text` with every secret read from the environment replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


# ---------------------------------------------------------------------------- value checks
class _Where:
    """Builds precise error messages: ``alerts.toml: rules[2] ('drift'): above: ...``."""

    def __init__(self, source: str, table: str) -> None:
        self.source, self.table = source, table

    def error(self, message: str, key: str | None = None) -> ConfigError:
        where = f"{self.table}.{key}" if key else self.table
        return ConfigError(f"{self.source}: {where}: {message}")

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str] = ()) -> None:
        if not isinstance(table, Mapping):
            raise self.error(f"must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.error(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in table:
                raise self.error(f"{key!r} is required")

    def string(self, table: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.error(f"must be a non-empty string, got {value!r}", key)
        return value

    def number(self, table: Mapping[str, Any], key: str, default: float, lo: float, hi: float = math.inf,
               *, lo_open: bool = False) -> float:
        value = table.get(key, default)
        if type(value) not in (int, float) or not math.isfinite(value) or value < lo or (lo_open and value == lo) or value > hi:
            bound = f"{'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi < math.inf else "")
            raise self.error(f"must be a finite number {bound}, got {value!r}", key)
        return float(value)

    def integer(self, table: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
        value = table.get(key, default)
        if type(value) is not int or not lo <= value <= hi:
            raise self.error(f"must be an integer in [{lo}, {hi}], got {value!r}", key)
        return value

    def duration(self, table: Mapping[str, Any], key: str, default: float | None, *, positive: bool = False) -> float:
        value = table.get(key, default)
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.error(str(exc), key) from None
        if positive and seconds <= 0:
            raise self.error(f"must be > 0, got {value!r}", key)
        return seconds

    def names(self, table: Mapping[str, Any], key: str, channels: Mapping[str, Any]) -> tuple[str, ...]:
        if key not in table:
            return tuple(channels)
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"must be a list of channel names, got {value!r}", key)
        for name in value:
            if name not in channels:
                known = ", ".join(sorted(channels)) or "none are defined"
                raise self.error(f"unknown channel {name!r} (channels: {known})", key)
        return tuple(dict.fromkeys(value))


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string such as ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"``."""
    if type(value) in (int, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be seconds >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"must be seconds or a duration such as '30s', '15m', '2h', '7d', '1w'; got {value!r}")


def _timestamp(value: Any, where: _Where, key: str) -> float:
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise where.error(f"must be epoch seconds or an ISO 8601 time, got {value!r}", key) from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise where.error(f"must be epoch seconds or an ISO 8601 time, got {value!r}", key)


# ---------------------------------------------------------------------------- secrets
class _Env:
    """``${NAME}`` references resolved from the environment; the values are remembered for redaction."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.secrets: list[str] = []

    def expand(self, value: str, where: _Where, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.env:
                raise where.error(f"environment variable {name} is not set (referenced as ${{{name}}})", key)
            secret = self.env[name]
            if secret:
                self.secrets.append(secret)
            return secret

        return _ENV_REF.sub(sub, value)


def _shown_url(template: str) -> str:
    """A URL for an error message: the ``${NAME}`` template, or the value without path and query."""
    if _ENV_REF.search(template):
        return repr(template)
    parts = urlsplit(template)
    if parts.scheme and parts.hostname:
        return repr(f"{parts.scheme}://{parts.hostname}/…")
    return repr(template[:16] + ("…" if len(template) > 16 else ""))


def _check_url(url: str, template: str, where: _Where, key: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise where.error(f"malformed URL {_shown_url(template)}", key) from None
    if parts.scheme not in ("http", "https"):
        raise where.error(f"must be an http:// or https:// URL, got {_shown_url(template)}", key)
    if not parts.hostname or any(c.isspace() for c in url) or (port is not None and port == 0):
        raise where.error(f"malformed URL {_shown_url(template)} (no host, a bad port or spaces)", key)


# ---------------------------------------------------------------------------- sections
_WEBHOOK_KEYS = ("type", "url", "timeout", "retries", "backoff", "headers")
_EMAIL_KEYS = ("type", "host", "port", "sender", "recipients", "username", "password", "starttls", "timeout")


def _channel(name: str, table: Any, env: _Env, source: str) -> Channel:
    where = _Where(source, f"channels.{name}")
    if not isinstance(table, Mapping):
        raise where.error("must be a table such as [channels.NAME] with type = \"webhook\" or \"email\"")
    kind = table.get("type")
    if kind == "webhook":
        where.keys(table, _WEBHOOK_KEYS, ("url",))
        template = where.string(table, "url")
        assert template is not None
        url = env.expand(template, where, "url")
        _check_url(url, template, where, "url")
        headers = table.get("headers", {})
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise where.error("must be a table of string header values", "headers")
        return Webhook(
            url,
            timeout=where.number(table, "timeout", 5.0, 0.0, 300.0, lo_open=True),
            retries=where.integer(table, "retries", 3, 0, 20),
            backoff=where.number(table, "backoff", 0.5, 0.0, 60.0),
            headers={k: env.expand(v, where, f"headers.{k}") for k, v in headers.items()},
        )
    if kind == "email":
        where.keys(table, _EMAIL_KEYS, ("host", "sender", "recipients"))
        host = env.expand(where.string(table, "host") or "", where, "host")
        sender = env.expand(where.string(table, "sender") or "", where, "sender")
        if "@" not in sender:
            raise where.error(f"must be an e-mail address, got {sender!r}", "sender")
        recipients = table["recipients"]
        if isinstance(recipients, str):
            recipients = [recipients]
        if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            raise where.error(f"must be a non-empty list of e-mail addresses, got {table['recipients']!r}", "recipients")
        username = where.string(table, "username")
        password = table.get("password")
        if password is not None and not isinstance(password, str):
            raise where.error("must be a string (use \"${NAME}\" to read it from the environment)", "password")
        if password is not None and username is None:
            raise where.error("a password needs a username", "password")
        starttls = table.get("starttls", False)
        if not isinstance(starttls, bool):
            raise where.error(f"must be true or false, got {starttls!r}", "starttls")
        return Email(
            host,
            sender,
            [env.expand(r, where, "recipients") for r in recipients],
            port=where.integer(table, "port", 25, 1, 65535),
            username=None if username is None else env.expand(username, where, "username"),
            password=None if password is None else env.expand(password, where, "password"),
            starttls=starttls,
            timeout=where.number(table, "timeout", 10.0, 0.0, 300.0, lo_open=True),
        )
    raise where.error(f"must be \"webhook\" or \"email\", got {kind!r}", "type")


_RULE_KEYS = ("name", "metric", "above", "below", "for_windows", "features", "model", "cooldown", "channels", "calibrate")
_CALIBRATE_KEYS = ("k", "windows", "start", "end")


def _rule(i: int, table: Any, channels: Mapping[str, Channel], source: str) -> RuleConfig:
    name = table.get("name") if isinstance(table, Mapping) else None
    where = _Where(source, f"rules[{i}]" + (f" ({name!r})" if isinstance(name, str) else ""))
    where.keys(table, _RULE_KEYS, ("name", "metric"))
    if not isinstance(name, str) or not name:
        raise where.error(f"must be a non-empty string, got {name!r}", "name")
    metric = table["metric"]
    if not isinstance(metric, str):
        raise where.error(f"must be a metric name such as 'drift.psi', got {metric!r}", "metric")
    try:
        scope = metric_scope(metric)
    except ConfigError as exc:
        raise where.error(str(exc), "metric") from None
    features = table.get("features")
    if scope == "feature" and features is None:
        raise where.error(f"{metric!r} is a per-feature metric: set features = \"all\" or a list of feature names", "features")
    if scope == "model" and features is not None:
        raise where.error(f"{metric!r} is a model-level metric: remove features", "features")
    if features is not None and features != "all" and (
        not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features)
    ):
        raise where.error(f"must be \"all\" or a non-empty list of feature names, got {features!r}", "features")
    calibration: Calibration | None = None
    above, below = table.get("above"), table.get("below")
    if "calibrate" in table:
        if above is not None or below is not None:
            raise where.error("give either above/below or calibrate (the calibrated threshold is an upper bound)", "calibrate")
        cal = table["calibrate"]
        cw = _Where(source, f"{where.table}.calibrate")
        cw.keys(cal, _CALIBRATE_KEYS)
        calibration = Calibration(
            k=cw.number(cal, "k", 4.0, 0.0, 100.0, lo_open=True),
            windows=cw.integer(cal, "windows", 20, 2, 10_000),
            start=_timestamp(cal["start"], cw, "start") if "start" in cal else None,
            end=_timestamp(cal["end"], cw, "end") if "end" in cal else None,
        )
        if (calibration.start is None) != (calibration.end is None):
            raise cw.error("give both start and end (or neither: the windows before evaluation starts)")
        if calibration.start is not None and calibration.end is not None and calibration.start >= calibration.end:
            raise cw.error("start must be before end")
        above = 0.0  # placeholder, replaced per model and feature once calibrated
    elif above is None and below is None:
        raise where.error("give above = ..., below = ... or calibrate = { k = ..., windows = ... }")
    model = table.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise where.error(f"must be a model name, got {model!r}", "model")
    try:
        rule = AlertRule(
            name,
            metric,
            above=above,
            below=below,
            for_windows=table.get("for_windows", 1),
            features=features,
            model=model,
            cooldown=where.duration(table, "cooldown", 0.0),
        )
    except ConfigError as exc:
        raise where.error(str(exc)) from None
    return RuleConfig(rule, where.names(table, "channels", channels), calibration)


def _freshness(i: int, table: Any, channels: Mapping[str, Channel], source: str) -> FreshnessConfig:
    name = table.get("name") if isinstance(table, Mapping) else None
    where = _Where(source, f"freshness[{i}]" + (f" ({name!r})" if isinstance(name, str) else ""))
    where.keys(table, ("name", "model", "signal", "windows", "channels"), ("name",))
    if not isinstance(name, str) or not name:
        raise where.error(f"must be a non-empty string, got {name!r}", "name")
    try:
        rule = FreshnessRule(name, model=table.get("model"), signal=table.get("signal", "traffic"), windows=table.get("windows", 3))
    except ConfigError as exc:
        raise where.error(str(exc)) from None
    return FreshnessConfig(rule, where.names(table, "channels", channels))


def _summary(table: Any, channels: Mapping[str, Channel], source: str) -> SummaryConfig:
    where = _Where(source, "summary")
    where.keys(table, ("interval", "channels", "period", "offset", "title"), ("interval",))
    interval = where.duration(table, "interval", None, positive=True)
    names = where.names(table, "channels", channels)
    if not names:
        raise where.error("a summary needs at least one channel", "channels")
    return SummaryConfig(
        interval=interval,
        channels=names,
        period=where.duration(table, "period", interval, positive=True),
        offset=where.duration(table, "offset", 0.0),
        title=where.string(table, "title", "mlwatch summary") or "mlwatch summary",
    )


def parse_alerts_config(doc: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<alerts>") -> AlertsConfig:
    """Validate a parsed alerts document (`load_alerts_config` reads the TOML file)."""
    top = _Where(source, "(top level)")
    top.keys(doc, ("grace", "history", "queue_size", "rules", "freshness", "channels", "summary"))
    resolver = _Env(os.environ if env is None else env)
    raw_channels = doc.get("channels", {})
    if not isinstance(raw_channels, Mapping):
        raise top.error("must be tables such as [channels.slack]", "channels")
    channels = {name: _channel(name, t, resolver, source) for name, t in raw_channels.items()}
    raw_rules, raw_fresh = doc.get("rules", []), doc.get("freshness", [])
    for key, value in (("rules", raw_rules), ("freshness", raw_fresh)):
        if not isinstance(value, list):
            raise top.error(f"must be an array of tables ([[{key}]])", key)
    rules = tuple(_rule(i, t, channels, source) for i, t in enumerate(raw_rules))
    fresh = tuple(_freshness(i, t, channels, source) for i, t in enumerate(raw_fresh))
    seen: set[str] = set()
    for name in [r.rule.name for r in rules] + [f.rule.name for f in fresh]:
        if name in seen:
            raise ConfigError(f"{source}: rule names must be unique: {name!r} is used twice")
        seen.add(name)
    summary = _summary(doc["summary"], channels, source) if "summary" in doc else None
    if not rules and not fresh and summary is None:
        raise top.error("declares no [[rules]], no [[freshness]] and no [summary]: nothing to do")
    return AlertsConfig(
        rules=rules,
        freshness=fresh,
        channels=channels,
        summary=summary,
        grace=top.duration(doc, "grace", 30.0),
        history=top.integer(doc, "history", 500, 1, 100_000),
        queue_size=top.integer(doc, "queue_size", 100, 1, 100_000),
        source=source,
        secrets=tuple(sorted(set(resolver.secrets), key=len, reverse=True)),
    )


def load_alerts_config(path: str, *, env: Mapping[str, str] | None = None) -> AlertsConfig:
    """Read and validate an alerts TOML file; `ConfigError` says what is wrong and where."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the alerts file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_alerts_config(doc, env=env, source=path)

