"""Test doubles for users (and for mlwatch's own tests): an in-memory exporter and `capture()`.

```python
from mlwatch.testing import capture

def test_my_model_is_monitored():
    with capture() as cap:
        predict({"amount": 12.0, "country": "DE"})
    p = cap.merged("fraud")
    assert p.calls == 1 and "amount" in p.columns
```
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlwatch._runtime import RUNTIME
from mlwatch.config import Settings
from mlwatch.profile import Profile, merge

__all__ = ["Capture", "InMemoryExporter", "capture"]


class InMemoryExporter:
    """Keeps every exported profile in a list (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles: list[Profile] = []
        self.shut_down = False

    def export(self, profiles: Sequence[Profile]) -> None:
        with self._lock:
            self.profiles.extend(profiles)

    def shutdown(self) -> None:
        self.shut_down = True

    def clear(self) -> None:
        with self._lock:
            self.profiles.clear()


class Capture:
    """What `capture()` yields: the exporter plus helpers to read what a model recorded."""

    def __init__(self, exporter: InMemoryExporter) -> None:
        self.exporter = exporter

    def profiles(self, model: str | None = None) -> list[Profile]:
        """Profiles exported so far (flushing first), optionally for one model."""
        RUNTIME.flush()
        return [p for p in list(self.exporter.profiles) if model is None or p.model == model]

    def merged(self, model: str) -> Profile:
        """Every window and segment of `model` merged into one profile."""
        found = self.profiles(model)
        if not found:
            raise AssertionError(f"model {model!r} recorded nothing (models seen: {sorted({p.model for p in self.exporter.profiles})})")
        return merge(found)

    def assert_recorded(self, model: str, *, calls: int | None = None, features: Sequence[str] = (), outputs: Sequence[str] = (), errors: dict[str, int] | None = None) -> Profile:
        """Assert what `model` recorded; returns the merged profile for further checks."""
        p = self.merged(model)
        if calls is not None and p.calls != calls:
            raise AssertionError(f"model {model!r}: expected {calls} calls, recorded {p.calls}")
        missing = [f for f in features if f not in p.columns]
        if missing:
            raise AssertionError(f"model {model!r}: features {missing} not recorded (have {sorted(p.columns)})")
        missing = [o for o in outputs if o not in p.outputs]
        if missing:
            raise AssertionError(f"model {model!r}: outputs {missing} not recorded (have {sorted(p.outputs)})")
        if errors is not None and p.errors != errors:
            raise AssertionError(f"model {model!r}: expected errors {errors}, recorded {p.errors}")
        return p


@contextmanager
def capture(**settings: Any) -> Iterator[Capture]:
    """Route every closed window to memory for the block's duration, then restore the settings."""
    previous: Settings = RUNTIME.settings
    RUNTIME.flush()  # what was buffered before belongs to the previous exporters
    exporter = InMemoryExporter()
    RUNTIME.configure(previous.updated({**settings, "exporters": [exporter]}))
    RUNTIME.restart()
    try:
        yield Capture(exporter)
    finally:
        RUNTIME.flush()
        RUNTIME.configure(previous)
