"""The service `mlwatch demo` runs: a fraud model (scikit-learn) served by FastAPI under uvicorn, watched by mlwatch.

What: `transactions()` makes card transactions and their true labels (the demo's client plays the
bank: it sends the transactions and, later, the labels); `train()` fits a gradient-boosted
classifier on healthy ones; `create_app()` serves it with mlwatch's middleware:

- ``POST /predict``: one transaction (JSON) -> ``{"score": p, "prediction": 0|1}``. The middleware
  records it as a call of the model ``fraud`` (request fields are the features, segmented by
  ``country``) and sends the prediction's id back in the ``X-Prediction-Id`` header;
- ``POST /feedback``: ``{"labels": [{"prediction_id": ..., "label": 0|1}, ...]}`` -> each label is
  joined to its prediction with `mlwatch.log_outcome` (model quality per window and segment);
- ``GET /healthz`` (not recorded).

``python -m mlwatch._demo_app --port P --collector URL --dir D`` trains the model and serves it on
127.0.0.1 under uvicorn, exporting one-second windows to the collector over OTLP/HTTP.

The trouble `troubled=True` injects: ``amount`` arrives in cents instead of euros (an upstream
unit change), a new ``country`` (BR), ``device_age`` missing in 35 % of transactions instead of
2 %, and in France fraud changes pattern (night-time shoppers are now legitimate, fraudsters moved
to the daytime): nothing in the inputs shows that one, only the labels do.

Only numpy is imported at module level (the demo's client uses `transactions`); scikit-learn,
FastAPI and uvicorn are imported by the functions that need them (``pip install "mlwatch[demo]"``).
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at runtime,
# and the request models are defined inside `create_app` (pydantic and FastAPI are imported only there).
import argparse
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["CHANNELS", "COUNTRIES", "HEADER", "MODEL", "NEW_COUNTRY", "QUALITY_SEGMENT", "create_app", "features", "main",
           "train", "transactions"]

MODEL = "fraud"
COUNTRIES = ("DE", "FR", "IT", "ES")
NEW_COUNTRY = "BR"
CHANNELS = ("web", "app", "pos")
#: The segment whose fraud pattern changes halfway (its model quality drops once labels arrive).
QUALITY_SEGMENT = "FR"
HEADER = "X-Prediction-Id"
WINDOW_SECONDS = 1.0


def transactions(rng: np.random.Generator, n: int, *, troubled: bool = False) -> tuple[list[dict[str, Any]], list[int]]:
    """`n` transactions as the bank's systems send them (JSON-ready dicts) and whether each was fraud."""
    amount = rng.lognormal(3.5, 1.0, n)  # euros
    countries = [*COUNTRIES, NEW_COUNTRY] if troubled else list(COUNTRIES)
    shares = [0.26, 0.21, 0.21, 0.17, 0.15] if troubled else [0.3, 0.25, 0.25, 0.2]
    country = rng.choice(countries, n, p=shares)
    channel = rng.choice(CHANNELS, n, p=[0.45, 0.4, 0.15])
    device_age = rng.gamma(1.5, 150.0, n)  # days since the card was first used on this device
    hour = rng.integers(0, 24, n)
    n_txn_24h = rng.poisson(3, n)
    night = hour < 6
    # The truth: new devices, the night, the web channel and bursts of transactions are risky.
    pattern = np.full(n, 3.0) * night
    if troubled:  # in France, night shoppers are now legitimate and fraudsters work in the daytime
        france = country == QUALITY_SEGMENT
        pattern = np.where(france, -1.0 * night + 2.5 * ~night, pattern)
    logit = (-5.5 + 0.5 * np.log(amount / 30.0) + 4.5 * (device_age < 20) + pattern + 1.5 * (channel == "web")
             + 0.9 * (n_txn_24h - 3))
    fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    missing = rng.random(n) < (0.35 if troubled else 0.02)
    sent_amount = amount * (100.0 if troubled else 1.0)  # cents after the upstream change
    rows = [
        {
            "amount": round(float(sent_amount[i]), 2),
            "country": str(country[i]),
            "channel": str(channel[i]),
            "device_age": None if missing[i] else round(float(device_age[i]), 1),
            "hour": int(hour[i]),
            "n_txn_24h": int(n_txn_24h[i]),
        }
        for i in range(n)
    ]
    return rows, [int(f) for f in fraud]


def features(rows: list[dict[str, Any]]) -> np.ndarray:
    """The model's input matrix: numbers as they come (missing device_age as NaN), one-hot country and channel."""
    out = np.empty((len(rows), 4 + len(COUNTRIES) + len(CHANNELS)))
    for i, r in enumerate(rows):
        age = r.get("device_age")
        out[i, :4] = (r["amount"], np.nan if age is None else age, r["hour"], r["n_txn_24h"])
        out[i, 4:] = [r["country"] == c for c in COUNTRIES] + [r["channel"] == c for c in CHANNELS]
    return out


def train(seed: int = 7, n: int = 20_000) -> Any:
    """A `HistGradientBoostingClassifier` fitted on `n` healthy transactions (about half a second)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rows, labels = transactions(np.random.default_rng(seed), n)
    model = HistGradientBoostingClassifier(max_iter=80, max_leaf_nodes=15, random_state=seed)
    return model.fit(features(rows), labels)


def create_app(model: Any) -> "FastAPI":
    """The FastAPI app serving `model`, instrumented with `mlwatch.integrations.fastapi.instrument_app`."""
    import importlib

    from fastapi import FastAPI
    from pydantic import BaseModel

    import mlwatch

    # mlwatch.integrations lives in integrations/ (a package-dir mapping mypy does not follow): imported by name.
    instrument_app = importlib.import_module("mlwatch.integrations.fastapi").instrument_app

    class Transaction(BaseModel):
        amount: float
        country: str
        channel: str
        device_age: float | None = None
        hour: int
        n_txn_24h: int

    class Label(BaseModel):
        prediction_id: str
        label: int

    class Feedback(BaseModel):
        labels: list[Label]

    app = FastAPI(title="mlwatch demo: fraud model")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(tx: Transaction) -> dict[str, Any]:
        score = float(model.predict_proba(features([tx.model_dump()]))[0, 1])
        return {"score": round(score, 4), "prediction": int(score >= 0.5)}

    @app.post("/feedback")
    def feedback(body: Feedback) -> dict[str, int]:
        counted = sum(mlwatch.log_outcome(model=MODEL, prediction_id=x.prediction_id, label=x.label) for x in body.labels)
        return {"counted": counted, "not_counted": len(body.labels) - counted}

    instrument_app(
        app,
        model_routes={"/predict": {"model": MODEL, "version": "1.0", "segment_by": ["country"], "categorical": ["country", "channel"]}},
        exclude_paths=["/healthz"],
        prediction_id_header=HEADER,
    )
    return app


def main(argv: list[str] | None = None) -> None:
    """Train, then serve on 127.0.0.1:`--port` under uvicorn, exporting to `--collector` (until SIGTERM/SIGINT)."""
    parser = argparse.ArgumentParser(prog="python -m mlwatch._demo_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--collector", required=True, help="the collector's base URL (OTLP/HTTP)")
    parser.add_argument("--dir", required=True, help="the demo's directory (named here so its processes can be found)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one row per call: OpenMP's thread start-up costs more than the work

    import uvicorn

    import mlwatch

    mlwatch.configure(endpoint=args.collector, service_name="mlwatch-demo", window_seconds=WINDOW_SECONDS, flush_interval=0.2,
                      export_metrics=False)
    app = create_app(train(args.seed))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
