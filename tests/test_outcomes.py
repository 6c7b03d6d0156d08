"""Outcomes: the id join, direct outcomes, the bounded TTL store, window export, never raising."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import mlwatch
from mlwatch._health import HEALTH
from mlwatch._runtime import Runtime
from mlwatch.outcomes import BOOK, LAST_CALL, PredictionStore
from mlwatch.testing import capture


@pytest.fixture(autouse=True)
def _clean_book(runtime: Runtime) -> Iterator[None]:
    """Each test starts with no outcomes and no health counts."""
    BOOK.reset()
    HEALTH.reset()
    yield
    BOOK.reset()


def test_join_by_id_per_segment_and_window() -> None:
    """Labels joined by id land in the prediction's segment and window, exported with its profile."""

    @mlwatch.monitor(model="fraud_ids", prediction_ids=True, segment_by=["country"])
    def predict(row: dict[str, Any]) -> float:
        return 0.9 if row["amount"] > 5 else 0.2

    with capture() as cap:
        ids = []
        for i in range(10):
            predict({"amount": i, "country": "DE" if i % 2 else "FR"})
            ids.append(mlwatch.current_prediction_id())
        assert mlwatch.current_prediction_id() == ids[-1]  # the same call keeps its id
        assert all(mlwatch.log_outcome(model="fraud_ids", prediction_id=pid, label=int(i > 4)) for i, pid in enumerate(ids))
        profiles = cap.profiles("fraud_ids")
    q = mlwatch.quality(model="fraud_ids")
    assert q.to_dict()["accuracy"] == 0.9
    assert set(q.segments()) == {"country=DE", "country=FR"}
    assert q.segments()["country=FR"]["accuracy"] == 1.0
    merged = mlwatch.quality(profiles)
    assert merged.to_dict() == q.to_dict()
    with_calls = {p.segment_key for p in profiles if p.calls and p.quality is not None}
    assert with_calls == {"country=DE", "country=FR"}  # quality merged into the window's own profile


def test_unknown_and_expired_ids_are_counted(runtime: Runtime) -> None:
    """Unknown, expired and evicted ids are counted in health, never raised."""
    mlwatch.configure(prediction_ttl=0.05, prediction_store_size=2)

    @mlwatch.monitor(model="ttl_model", prediction_ids=True)
    def predict(x: float) -> int:
        return 1

    predict(1.0)
    old = mlwatch.current_prediction_id()
    assert old is not None
    time.sleep(0.08)
    assert mlwatch.log_outcome(model="ttl_model", prediction_id=old, label=1) is False
    assert mlwatch.log_outcome(model="ttl_model", prediction_id="no-such-id", label=1) is False
    for _ in range(3):
        predict(1.0)
        mlwatch.current_prediction_id()
    dropped = mlwatch.health()["dropped"]
    assert dropped["outcome_expired"] == 1 and dropped["outcome_unknown_id"] == 1
    assert dropped["prediction_evicted"] == 1
    assert len(BOOK.store) == 2


def test_no_prediction_ids_no_context() -> None:
    """Without prediction_ids=True a monitored call leaves no id behind (nothing on the hot path)."""
    LAST_CALL.set(None)

    @mlwatch.monitor(model="plain_model")
    def predict(x: float) -> float:
        return x

    predict(1.0)
    assert mlwatch.current_prediction_id() is None


def test_direct_outcomes_infer_task() -> None:
    """Probabilities against 0/1 labels are binary classification; floats are regression."""
    for score, label in ((0.9, 1), (0.2, 0), (0.7, 0), (0.4, 1)):
        assert mlwatch.log_outcome(model="direct_cls", prediction=score, label=label, segment={"country": "DE"})
    d = mlwatch.quality(model="direct_cls").to_dict()
    assert d["accuracy"] == 0.5 and d["roc_auc"] == 0.75
    for pred, y in ((10.0, 12.0), (3.5, 3.0)):
        mlwatch.log_outcome(model="direct_reg", prediction=pred, label=y)
    assert mlwatch.quality(model="direct_reg").to_dict()["mae"] == pytest.approx(1.25)


def test_log_outcome_never_raises() -> None:
    """Bad arguments return False and are counted under internal_errors['outcome']."""
    assert mlwatch.log_outcome(model="bad", label=1) is False  # neither id nor prediction
    assert mlwatch.log_outcome(model="bad", label=1.5, prediction="x", task="regression") is False
    assert mlwatch.log_outcome(model="bad", label=1, prediction=1, task="nonsense") is False
    assert mlwatch.log_ranking_outcome(model="bad") is False
    assert mlwatch.log_metric(model="bad", name="", value=1.0) is False
    assert mlwatch.health()["internal_errors"]["outcome"] == 5


def test_ranking_and_metrics_logged() -> None:
    """log_ranking_outcome from ids and log_metric show up by plain name."""
    mlwatch.log_ranking_outcome(model="recs", ranked=["a", "b", "c"], relevant={"b"}, k=2)
    mlwatch.log_ranking_outcome(model="recs", relevance=[1, 0, 0], k=2)
    for v in (1.0, 0.0, 1.0, 1.0):
        mlwatch.log_metric(model="recs", name="clicks", value=v)
    d = mlwatch.quality(model="recs").to_dict()
    assert d["precision_at_k"] == 0.5 and d["map"] == pytest.approx(0.75)
    assert d["clicks.mean"] == 0.75 and d["clicks.count"] == 4


def test_quality_only_profiles_are_exported_with_window() -> None:
    """Outcomes logged with no monitored call are exported as quality-only profiles of their window."""
    with capture() as cap:
        mlwatch.log_outcome(model="late_labels", prediction=1, label=1, timestamp=120.0)
        profiles = cap.profiles("late_labels")
    assert len(profiles) == 1 and profiles[0].window_start == 120.0 - 120.0 % 60 and profiles[0].calls == 0
    assert profiles[0].quality is not None and profiles[0].quality.to_dict()["accuracy"] == 1.0


def test_store_is_bounded() -> None:
    """The store keeps at most its capacity, evicting the oldest."""
    store = PredictionStore(capacity=3, ttl=60.0)
    for i in range(5):
        store.put(str(i), "m", None, {}, 0.0, i)
    assert len(store) == 3 and store.pop("0") is None and store.pop("4") is not None


def test_bad_settings_raise_config_error() -> None:
    """Wrong outcome settings raise ConfigError at configure time."""
    with pytest.raises(mlwatch.ConfigError):
        mlwatch.configure(prediction_ttl=-1)
    with pytest.raises(mlwatch.ConfigError):
        mlwatch.monitor(model="x", prediction_ids="yes")  # type: ignore[call-overload]


def test_token_carries_window_and_segment_to_another_process(tmp_path: Any) -> None:
    """A prediction token logged in a fresh interpreter lands in the prediction's window and segment."""
    import subprocess
    import sys

    @mlwatch.monitor(model="tok_model", version="7", prediction_ids=True, segment_by=["country"])
    def predict(row: dict[str, Any]) -> float:
        return 0.8

    predict({"country": "DE"})
    token = mlwatch.prediction_token()
    assert token is not None
    out = tmp_path / "p.mlw"
    code = (
        "import mlwatch, sys\n"
        "from mlwatch.testing import capture\n"
        "with capture() as cap:\n"
        "    assert mlwatch.log_outcome(model='tok_model', token=sys.argv[1], label=1)\n"
        "    [p] = cap.profiles('tok_model')\n"
        "p.save(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, token, str(out)], check=True, timeout=120)
    p = mlwatch.load(out)
    assert (p.version, p.segment) == ("7", {"country": "DE"})
    assert p.window_start == time.time() // 60 * 60 or p.window_start == (time.time() // 60 - 1) * 60
    assert p.quality is not None and p.quality.to_dict()["recall"] == 1.0
    assert mlwatch.log_outcome(model="tok_model", token="not-a-token", label=1) is False


def test_observe_with_prediction_ids() -> None:
    """observe(prediction_ids=True) gives the block's prediction an id to join its label."""
    with mlwatch.observe(model="observed_ids", prediction_ids=True) as obs:
        obs.inputs({"amount": 3.0})
        obs.outputs(0.8)
    pid = mlwatch.current_prediction_id()
    assert pid is not None
    assert mlwatch.log_outcome(model="observed_ids", prediction_id=pid, label=1)
    assert mlwatch.quality(model="observed_ids").to_dict()["recall"] == 1.0


def test_concurrent_outcomes_all_counted() -> None:
    """Outcomes logged from several threads at once are all counted."""
    import threading

    def worker(seed: int) -> None:
        for i in range(500):
            mlwatch.log_outcome(model="threads", prediction=(i + seed) % 2, label=i % 2, segment={"t": str(seed)})

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q = mlwatch.quality(model="threads")
    assert q.to_dict()["n_labeled"] == 2000 and len(q.segments()) == 4
