"""The supervised worker: data errors come back as errors, crashes and hangs cost one call and a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlwatch._wire import WireLimits
from mlwatch.collector.worker import HANG_MODEL, Worker, WorkerCrashed, WorkerError, WorkerSettings, WorkerTimeout

from .conftest import make_profile


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    """One worker with test hooks on."""
    w = Worker(WorkerSettings(hmac_keys=None, limits=WireLimits(), test_hooks=True))
    yield w
    w.stop()


def test_ingest_and_errors(worker: Worker) -> None:
    """A valid profile yields its identity; garbage yields a WorkerError, not a dead worker."""
    meta = worker.call("ingest", (make_profile(120.0, version="v3", segment={"country": "DE"}).to_bytes(),), 60)
    assert (meta["model"], meta["version"], meta["segment_key"], meta["window_start"]) == ("fraud", "v3", "country=DE", 120.0)
    assert ("input", "f0", "numeric") in meta["features"]
    with pytest.raises(WorkerError) as info:
        worker.call("ingest", (b"garbage",), 60)
    assert info.value.kind == "malformed"
    with pytest.raises(WorkerError, match="unknown worker operation"):
        worker.call("os.system", (), 60)


def test_crash_and_timeout_restart_the_worker(worker: Worker) -> None:
    """A killed worker and a hung one each fail their call; the next call is served by a new process."""
    assert worker.process is not None
    pid = worker.call("ping", (), 60)
    worker.process.kill()
    worker.process.join(5)
    assert worker.call("ping", (), 60) != pid  # found dead, replaced before the call
    pid = worker.call("ping", (), 60)
    with pytest.raises(WorkerTimeout):
        worker.call("ingest", (make_profile(0.0, model=HANG_MODEL).to_bytes(),), 1.0)
    assert worker.call("ping", (), 60) != pid
    assert issubclass(WorkerTimeout, WorkerCrashed)
