"""The collector's alerts file: a full example loads; every mistake is a precise ConfigError at start-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlwatch._errors import ConfigError
from mlwatch.collector.alerts_config import load_alerts_config, parse_alerts_config, parse_duration
from mlwatch.collector.cli import main
from mlwatch.collector.config import CollectorConfig
from mlwatch.notify import Email, Webhook

EXAMPLE = """
grace = "10s"

[channels.slack]
type = "webhook"
url = "https://hooks.slack.com/services/${SLACK_TOKEN}"
timeout = 2.5
retries = 1

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
features = "all"
above = 0.2
for_windows = 3
cooldown = "1h"
channels = ["slack"]

[[rules]]
name = "accuracy"
metric = "quality.accuracy"
below = 0.9

[[rules]]
name = "unusual drift"
metric = "drift.js"
features = ["amount"]
calibrate = { k = 3, windows = 30 }

[[freshness]]
name = "no labels"
model = "fraud"
signal = "labels"
windows = 6

[summary]
interval = "7d"
period = "1d"
channels = ["oncall"]
"""
ENV = {"SLACK_TOKEN": "T000/B000/sekrit-token", "SMTP_PASSWORD": "hunter2-password"}


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    load_alerts_config(str(path), env=ENV if env is None else env)


def test_full_example_loads_with_secrets_from_the_environment(tmp_path: Path) -> None:
    """Rules, channels and the summary are built; secrets come from the environment and never show in repr."""
    path = tmp_path / "alerts.toml"
    path.write_text(EXAMPLE)
    cfg = load_alerts_config(str(path), env=ENV)
    slack, mail = cfg.channels["slack"], cfg.channels["oncall"]
    assert isinstance(slack, Webhook) and slack.url.endswith("/T000/B000/sekrit-token") and slack.retries == 1
    assert isinstance(mail, Email) and mail.password == "hunter2-password" and mail.port == 587 and mail.starttls
    drift, acc, unusual = cfg.rules
    assert drift.rule.features == "all" and drift.rule.cooldown == 3600 and drift.channels == ("slack",)
    assert acc.rule.below == 0.9 and acc.channels == ("slack", "oncall")  # default: every channel
    assert unusual.calibration is not None and unusual.calibration.k == 3 and unusual.calibration.windows == 30
    assert cfg.freshness[0].rule.signal == "labels" and cfg.grace == 10
    assert cfg.summary is not None and cfg.summary.interval == 7 * 86400 and cfg.summary.period == 86400
    shown = repr(cfg) + repr(CollectorConfig(alerts=cfg))
    assert "sekrit" not in shown and "hunter2" not in shown
    assert cfg.redact("POST https://hooks.slack.com/services/T000/B000/sekrit-token failed") == "POST https://hooks.slack.com/services/*** failed"
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration(5) == 5


@pytest.mark.parametrize(("text", "message"), [
    ('[[rules]]\nname = "x"\nmetric = "drift.psx"\nfeatures = "all"\nabove = 1',
     r"rules\[0\] \('x'\)\.metric: unknown metric 'drift\.psx'.*drift scores: .*psi"),
    ('[[rules]]\nname = "x"\nmetric = "latency.p42"\nabove = 1', r"rules\[0\] \('x'\)\.metric: unknown metric 'latency\.p42'"),
    ('[[rules]]\nname = "x"\nmetric = "error_rate"\nabove = "0.2"', r"rules\[0\] \('x'\): .*thresholds must be finite numbers, got '0\.2'"),
    ('[[rules]]\nname = "x"\nmetric = "error_rate"\nabove = inf', r"thresholds must be finite numbers, got inf"),
    ('[[rules]]\nname = "x"\nmetric = "error_rate"', r"rules\[0\] \('x'\): give above = \.\.\., below = \.\.\. or calibrate"),
    ('[[rules]]\nname = "x"\nmetric = "drift.psi"\nabove = 0.2', r"rules\[0\] \('x'\)\.features: 'drift\.psi' is a per-feature metric"),
    ('[[rules]]\nname = "x"\nmetric = "calls"\nbelow = 1\nfeatures = "all"', r"\.features: 'calls' is a model-level metric"),
    ('[[rules]]\nname = "x"\nmetric = "calls"\nbelow = 1\nchannels = ["slak"]', r"\.channels: unknown channel 'slak' \(channels: none are defined\)"),
    ('[[rules]]\nname = "x"\nmetric = "calls"\nbelow = 1\nabove_ = 2', r"rules\[0\] \('x'\): unknown key\(s\) 'above_'"),
    ('[[rules]]\nname = "x"\nmetric = "calls"\nbelow = 1\ncooldown = "soon"', r"\.cooldown: must be seconds or a duration"),
    ('[[rules]]\nname = "x"\nmetric = "drift.js"\nfeatures = "all"\nabove = 1\ncalibrate = {k = 4}', r"give either above/below or calibrate"),
    ('[[rules]]\nname = "x"\nmetric = "drift.js"\nfeatures = "all"\ncalibrate = {windows = 1}', r"calibrate\.windows: must be an integer in \[2, 10000\]"),
    ('[[rules]]\nname = "x"\nmetric = "calls"\nbelow = 1\n[[freshness]]\nname = "x"', r"rule names must be unique: 'x'"),
    ('[[freshness]]\nname = "f"\nsignal = "clicks"', r"freshness\[0\] \('f'\): .*signal must be 'traffic' or 'labels'"),
    ('[channels.h]\ntype = "webhook"\nurl = "ftp://example.org/hook"\n[summary]\ninterval = 60',
     r"channels\.h\.url: must be an http:// or https:// URL, got 'ftp://example\.org/…'"),
    ('[channels.h]\ntype = "webhook"\nurl = "http:///no-host"\n[summary]\ninterval = 60', r"channels\.h\.url: malformed URL"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://example.org:99999/x"\n[summary]\ninterval = 60', r"channels\.h\.url: malformed URL"),
    ('[channels.h]\ntype = "webhook"\nurl = "${NOPE_HOOK}"\n[summary]\ninterval = 60',
     r"channels\.h\.url: environment variable NOPE_HOOK is not set"),
    ('[channels.h]\ntype = "pager"\n[summary]\ninterval = 60', r"channels\.h\.type: must be \"webhook\" or \"email\", got 'pager'"),
    ('[channels.m]\ntype = "email"\nhost = "h"\nsender = "a@b"\nrecipients = []\n[summary]\ninterval = 60', r"channels\.m\.recipients: must be a non-empty list"),
    ('[channels.m]\ntype = "email"\nhost = "h"\nsender = "a@b"\nrecipients = ["c@d"]\npassword = "p"\n[summary]\ninterval = 60',
     r"channels\.m\.password: a password needs a username"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/x"\ntimeout = 0\n[summary]\ninterval = 60', r"channels\.h\.timeout: must be a finite number > 0"),
    ('[summary]\ninterval = "weekly"', r"summary\.interval: must be seconds or a duration"),
    ('[summary]\ninterval = "7d"', r"summary\.channels: a summary needs at least one channel"),
    ('grace = 1', r"declares no \[\[rules\]\], no \[\[freshness\]\] and no \[summary\]"),
    ('[[rules]\nname = "x"', r"not valid TOML"),
])
def test_config_errors_are_precise(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake names the file, the table and the key, and says what is expected."""
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, text)
    assert str(tmp_path / "alerts.toml") in str(info.value)


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    """A malformed URL read from the environment is reported by its ${NAME}, not its value."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[channels.h]\ntype = "webhook"\nurl = "${HOOK}"\n[summary]\ninterval = 60', env={"HOOK": "ftp://tok-3141"})
    assert "${HOOK}" in str(info.value) and "tok-3141" not in str(info.value)


def test_collector_refuses_alerts_without_evaluator_and_cli_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Alerts need the evaluator; `mlwatch collector --alerts` exits 2 with the precise message."""
    cfg = parse_alerts_config({"freshness": [{"name": "quiet"}]})
    with pytest.raises(ConfigError, match="evaluate_interval must be > 0"):
        CollectorConfig(alerts=cfg, evaluate_interval=0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nmetric = "accuracy"\nbelow = 0.9\n')
    assert main(["--db", str(tmp_path / "c.db"), "--alerts", str(bad)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"bad\.toml: rules\[0\] \('x'\)\.metric: unknown metric 'accuracy'", err), err
    assert main(["--db", str(tmp_path / "c.db"), "--alerts", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the alerts file" in capsys.readouterr().err
