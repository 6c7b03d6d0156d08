"""The collector's model-quality route: labels from several processes and windows, merged over a range."""

from __future__ import annotations

import httpx

from mlwatch.model_quality import QualitySketch

from .conftest import PROTOBUF_HEADERS, make_profile, otlp_request


def test_model_quality_over_a_range(client: httpx.Client) -> None:
    """Quality parts of different windows and segments merge into overall, per-segment and per-version metrics."""
    payloads = []
    for i, (country, labels, preds) in enumerate([("DE", [1, 0, 1], [1, 0, 0]), ("FR", [1, 1], [1, 1]), ("DE", [0], [0])]):
        p = make_profile(60.0 * i, model="m-quality", version="1", segment={"country": country}, seed=i)
        p.quality = QualitySketch()
        p.quality.add_classification(labels, preds)
        payloads.append(p.to_bytes())
    assert client.post("/v1/logs", content=otlp_request(payloads), headers=PROTOBUF_HEADERS).status_code == 200
    body = client.get("/api/models/m-quality/model-quality", params={"start": 0, "end": 180}).json()
    assert body["overall"]["accuracy"] == 5 / 6 and body["overall"]["n_labeled"] == 6
    assert body["segments"]["country=DE"]["accuracy"] == 0.75 and body["segments"]["country=FR"]["accuracy"] == 1.0
    assert set(body["versions"]) == {"1"}
    assert client.get("/api/models/nope/model-quality").status_code == 404
