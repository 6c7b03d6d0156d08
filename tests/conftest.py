"""Shared fixtures: seeded random data, a clean OTel environment, the runtime restored after a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from mlwatch._runtime import RUNTIME, Runtime

_OTEL_VARS = [v for v in os.environ if v.startswith("OTEL_")]


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator so failures reproduce."""
    return np.random.default_rng(20261128)


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variable of the machine running the tests leaks into them."""
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    """The process-wide runtime, with its settings restored (and its exporters shut down) afterwards."""
    previous = RUNTIME.settings
    RUNTIME.flush()
    yield RUNTIME
    RUNTIME.flush()
    RUNTIME.configure(previous)
    RUNTIME.restart()
