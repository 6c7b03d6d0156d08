"""`CollectorConfig`: every collector setting, validated once at start-up with a precise error.

Secrets come from files or environment variables, never from the command line (which other users
can read in the process list): bearer tokens from ``--token-file`` / ``MLWATCH_COLLECTOR_TOKENS``,
HMAC keys from ``--hmac-key-file`` / ``MLWATCH_COLLECTOR_HMAC_KEYS``. Binding anything other than
a loopback address without a token is refused: an open collector on a network accepts anyone's data.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlwatch._errors import ConfigError
from mlwatch._wire import WireLimits

if TYPE_CHECKING:
    from mlwatch.collector.alerts_config import AlertsConfig

__all__ = [
    "DEFAULT_PORT",
    "ENV_HMAC_KEYS",
    "ENV_TEST_HOOKS",
    "ENV_TOKENS",
    "CollectorConfig",
    "is_loopback",
    "load_hmac_keys",
    "load_tokens",
]

DEFAULT_PORT = 4318
ENV_TOKENS = "MLWATCH_COLLECTOR_TOKENS"
ENV_HMAC_KEYS = "MLWATCH_COLLECTOR_HMAC_KEYS"
#: Set to "1" only by mlwatch's own tests: lets a profile ask the worker to crash (see `worker`).
ENV_TEST_HOOKS = "MLWATCH_COLLECTOR_TEST_HOOKS"
_MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; anything else counts as a network address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def load_tokens(path: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Tokens from a file (one per line, ``#`` comments) and from ``MLWATCH_COLLECTOR_TOKENS`` (comma-separated)."""
    env = os.environ if env is None else env
    tokens: list[str] = []
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                tokens.extend(_secret_lines(fh.read()))
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc}") from None
    tokens.extend(t.strip() for t in env.get(ENV_TOKENS, "").split(",") if t.strip())
    short = [t for t in tokens if len(t) < _MIN_TOKEN_LENGTH]
    if short:
        raise ConfigError(f"bearer tokens must be at least {_MIN_TOKEN_LENGTH} characters ({len(short)} too short)")
    return tuple(dict.fromkeys(tokens))


def load_hmac_keys(path: str | None = None, env: Mapping[str, str] | None = None) -> dict[str, bytes] | None:
    """``key_id=secret`` pairs from a file (one per line) and ``MLWATCH_COLLECTOR_HMAC_KEYS`` (comma-separated).

    The secret's UTF-8 bytes are the key, as with ``mlwatch.configure(hmac_key="...")``. None when no
    key is configured (profiles are then checked against their SHA-256 checksum only).
    """
    env = os.environ if env is None else env
    entries: list[str] = []
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                entries.extend(_secret_lines(fh.read()))
        except OSError as exc:
            raise ConfigError(f"cannot read the HMAC key file {path}: {exc}") from None
    entries.extend(e.strip() for e in env.get(ENV_HMAC_KEYS, "").split(",") if e.strip())
    keys: dict[str, bytes] = {}
    for entry in entries:
        key_id, sep, secret = entry.partition("=")
        if not sep or not key_id.strip() or not secret:
            raise ConfigError("HMAC keys are written key_id=secret (one per line, or comma-separated in the env var)")
        keys[key_id.strip()] = secret.encode("utf-8")
    return keys or None


@dataclass(frozen=True)
class CollectorConfig:
    """Collector settings; `__post_init__` rejects unsafe or impossible combinations.

    - ``host``/``port``: where to listen (loopback by default; any other address needs ``tokens``).
    - ``db``: a SQLite file path or a ``postgresql://`` DSN.
    - ``tokens``: accepted bearer tokens (empty: no auth, loopback only).
    - ``certfile``/``keyfile``: serve HTTPS.
    - ``hmac_keys``: ``{key id: key}``; when set, only profiles signed with one of them are accepted.
    - ``max_body_bytes``: request body cap *after* decompression; ``max_concurrent_ingest``: requests
      decoded at once before answering 429.
    - ``limits``: caps applied to every profile before its sketches are parsed.
    - ``workers``: ingest worker processes; ``query_workers``: worker processes merging stored profiles
      for queries (a cold range's rollups are built on all of them at once); ``worker_timeout``/
      ``query_timeout``: seconds one native operation may take before the worker is killed and restarted.
    - ``evaluate_interval``: seconds between drift evaluations exported on ``/metrics``, which also roll
      up the last complete hour and day (0: off, and with it the rolling up of late hours as they arrive).
    - ``moving_reference_windows``: windows merged into the moving reference when a model has no uploaded one.
    - ``max_windows_per_query``: cap on per-window drift/quality series in one request.
    - ``alerts``: alert rules, channels and summary (`mlwatch.collector.alerts_config.load_alerts_config`),
      evaluated every ``evaluate_interval`` seconds; None: no alerts.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: str = "mlwatch-collector.db"
    tokens: tuple[str, ...] = field(default=(), repr=False)
    certfile: str | None = None
    keyfile: str | None = None
    hmac_keys: Mapping[str, bytes] | None = field(default=None, repr=False)
    max_body_bytes: int = 32 * 1024 * 1024
    max_concurrent_ingest: int = 4
    limits: WireLimits = field(default_factory=lambda: WireLimits(max_bytes=8 * 1024 * 1024, max_columns=2000))
    workers: int = 1
    query_workers: int = 1
    worker_timeout: float = 30.0
    query_timeout: float = 300.0
    evaluate_interval: float = 60.0
    moving_reference_windows: int = 60
    max_windows_per_query: int = 240
    test_hooks: bool = False
    alerts: AlertsConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port!r}")
        if not self.is_loopback and not self.tokens:
            raise ConfigError(
                f"refusing to listen on {self.host} without authentication: give bearer tokens with "
                f"--token-file or {ENV_TOKENS} (or bind 127.0.0.1)"
            )
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("TLS needs both --cert and --key")
        for name in ("certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{name} {path!r} is not a readable file")
        for name, lo, hi in (
            ("max_body_bytes", 1024, 1 << 34),
            ("max_concurrent_ingest", 1, 1024),
            ("workers", 1, 64),
            ("query_workers", 1, 64),
            ("moving_reference_windows", 1, 100_000),
            ("max_windows_per_query", 1, 100_000),
        ):
            value = getattr(self, name)
            if type(value) is not int or not lo <= value <= hi:
                raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        for name in ("worker_timeout", "query_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 86400:
                raise ConfigError(f"{name} must be a number of seconds in (0, 86400], got {value!r}")
        if not isinstance(self.evaluate_interval, (int, float)) or not 0 <= self.evaluate_interval <= 86400:
            raise ConfigError(f"evaluate_interval must be in [0, 86400] seconds, got {self.evaluate_interval!r}")
        if self.alerts is not None:
            from mlwatch.collector.alerts_config import AlertsConfig

            if not isinstance(self.alerts, AlertsConfig):
                raise ConfigError(f"alerts must be an AlertsConfig (load_alerts_config(path)), got {type(self.alerts).__name__}")
            if self.evaluate_interval == 0:
                raise ConfigError("alert rules are evaluated by the evaluator: evaluate_interval must be > 0 when alerts are configured")
        if self.limits.max_kll_k > 1024 or self.limits.max_freq_lg > 16 or self.limits.max_hll_lg > 16:
            raise ConfigError("sketch limits may only be tightened (KLL k <= 1024, frequent-items and HLL lg <= 16)")

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"
