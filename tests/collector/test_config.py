"""Collector settings: safe defaults, refusal of unsafe binds, secrets from files and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwatch._errors import ConfigError
from mlwatch._wire import WireLimits
from mlwatch.collector.auth import TokenAuth
from mlwatch.collector.config import CollectorConfig, is_loopback, load_hmac_keys, load_tokens
from mlwatch.collector.errors import HttpError


def test_loopback_by_default_and_network_needs_tokens() -> None:
    """The default binds 127.0.0.1; any other address without a token is refused."""
    assert CollectorConfig().host == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        CollectorConfig(host="0.0.0.0")
    assert CollectorConfig(host="0.0.0.0", tokens=("x" * 20,)).host == "0.0.0.0"
    assert is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_invalid_settings_are_rejected(tmp_path: Path) -> None:
    """TLS needs both files; limits may only be tightened; counts are bounded."""
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="both"):
        CollectorConfig(certfile=str(cert))
    with pytest.raises(ConfigError, match="readable"):
        CollectorConfig(certfile=str(cert), keyfile=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="tightened"):
        CollectorConfig(limits=WireLimits(max_kll_k=4096))
    with pytest.raises(ConfigError, match="workers"):
        CollectorConfig(workers=0)
    with pytest.raises(ConfigError, match=r"query_workers must be an integer in \[1, 64\]"):
        CollectorConfig(query_workers=65)


def test_tokens_and_keys_from_file_and_env(tmp_path: Path) -> None:
    """Tokens and HMAC keys load from files (comments skipped) and env vars; short tokens are refused."""
    f = tmp_path / "tokens"
    f.write_text("# ops\nfile-token-0123456789\n\n")
    env = {"MLWATCH_COLLECTOR_TOKENS": "env-token-0123456789, file-token-0123456789"}
    assert load_tokens(str(f), env) == ("file-token-0123456789", "env-token-0123456789")
    with pytest.raises(ConfigError, match="at least"):
        load_tokens(None, {"MLWATCH_COLLECTOR_TOKENS": "short"})
    k = tmp_path / "keys"
    k.write_text("k1=secret one\n")
    assert load_hmac_keys(str(k), {"MLWATCH_COLLECTOR_HMAC_KEYS": "k2=two"}) == {"k1": b"secret one", "k2": b"two"}
    assert load_hmac_keys(None, {}) is None
    with pytest.raises(ConfigError, match="key_id=secret"):
        load_hmac_keys(None, {"MLWATCH_COLLECTOR_HMAC_KEYS": "nokey"})


def test_token_auth() -> None:
    """Bearer tokens are checked against every configured token; failures are 401 with a challenge."""
    auth = TokenAuth(["a" * 20, "b" * 20])
    assert auth.verify("b" * 20) and not auth.verify("c" * 20)
    auth.check({"authorization": "Bearer " + "a" * 20})
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer " + "z" * 20}):
        with pytest.raises(HttpError) as info:
            auth.check(headers)
        assert info.value.status == 401 and "WWW-Authenticate" in info.value.headers
    TokenAuth([]).check({})
