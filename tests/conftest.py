"""Shared fixtures: seeded random data for profiling tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator so failures reproduce."""
    return np.random.default_rng(20261128)
