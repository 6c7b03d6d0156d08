"""Conformance of `mlwatch.spark` against a real local Spark session.

For every sketch family mlwatch writes (KLL doubles for numbers, text lengths and latency;
frequent strings; HLL), Python-built sketches merged in Spark must equal the Python merge
(counters exact, quantiles within the KLL bound, HLL estimates identical) and Spark-built sketches
must load into mlwatch. One session serves the whole module (local[2], no UI, 2 shuffle partitions).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark", reason='pyspark is not installed: pip install "mlwatch[spark]"')

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import mlwatch
from mlwatch import spark as ms
from mlwatch._sketches import FrequentSketch, HllSketch, KllSketch
from mlwatch.collector.store import ProfileRow, SeriesKey, open_store
from mlwatch.model_quality import QualitySketch
from mlwatch.profile import Profile

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

CITIES = ["berlin", "paris", "rome", "madrid", "oslo", "wien", "praha"]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One small local Spark session for the module."""
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlwatch-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _window(i: int, seed: int = 7, shift: float = 0.0) -> Profile:
    """A window profile with numeric, categorical and text inputs, an output, latency and errors."""
    rng = np.random.default_rng(seed + i)
    n = 400 + 50 * i
    data: dict[str, object] = {
        "x": (rng.normal(10.0 + shift, 2.0, n)).tolist(),
        "city": [CITIES[j] for j in rng.integers(0, len(CITIES) - (i % 2), n)],
        "note": ["word " * int(k) for k in rng.integers(21, 60, n)],
    }
    if i % 3 != 2:  # absent in some windows: must be padded as missing on merge
        data["age"] = [float(a) if a > 20 else None for a in rng.integers(18, 90, n)]
    p = mlwatch.profile(
        data,
        model="fraud",
        version="v1" if i < 2 else "v2",
        segment={"region": "eu" if i % 2 else "us", "tier": "gold"},
        outputs={"score": rng.uniform(0, 1, n).tolist()},
    )
    p.window_start, p.window_end = 60.0 * i, 60.0 * (i + 1)
    p.calls = n
    p.errors = {"ValueError": i, "KeyError": 1} if i % 2 else {"ValueError": 2}
    p.dropped = i
    p.record_latency(rng.exponential(0.01, n))
    if i != 1:  # model quality from outcomes, absent from one window; few enough that its sketches stay exact
        p.quality = QualitySketch()
        labels = rng.integers(0, 2, 30)
        p.quality.add_binary(labels.tolist(), rng.uniform(0, 1, 30).tolist())
        p.quality.add_regression(rng.normal(0, 1, 30), rng.normal(0, 1, 30))
    return p


@pytest.fixture(scope="module")
def windows() -> list[Profile]:
    """Six window profiles of one model over two versions and two segments."""
    return [_window(i) for i in range(6)]


def _assert_same_profile(a: Profile, b: Profile) -> None:
    """Counters exact, moments close, sketches within their bounds, HLL and categories identical."""
    assert (a.model, a.version, a.segment, a.window_start, a.window_end) == (b.model, b.version, b.segment, b.window_start, b.window_end)
    assert (a.rows, a.calls, a.dropped, a.errors) == (b.rows, b.calls, b.dropped, b.errors)
    assert a.latency is not None and b.latency is not None and a.latency.n == b.latency.n
    assert (a.quality is None) == (b.quality is None)
    if a.quality is not None and b.quality is not None:
        qa, qb = a.quality.to_dict(), b.quality.to_dict()
        assert qa.keys() == qb.keys()
        for key, value in qa.items():  # counts and sums exact; sketch figures (ROC AUC, error quantiles) within their error
            tolerance = 0.05 if "auc" in key or re.search(r"_p\d\d$", key) else 1e-9
            assert math.isclose(value, qb[key], rel_tol=tolerance, abs_tol=tolerance), (key, value, qb[key])
    for section in ("columns", "outputs"):
        ca, cb = getattr(a, section), getattr(b, section)
        assert ca.keys() == cb.keys()
        for name, x in ca.items():
            y = cb[name]
            for field in ("count", "missing", "non_finite", "n_numeric", "n_categorical", "n_text", "n_other"):
                assert getattr(x, field) == getattr(y, field), (section, name, field)
            assert x.kind == y.kind
            if x.numeric is not None:
                assert y.numeric is not None
                assert x.numeric.n == y.numeric.n
                assert math.isclose(x.numeric.mean, y.numeric.mean, rel_tol=1e-9)
                assert math.isclose(x.numeric.m2, y.numeric.m2, rel_tol=1e-9)
                assert (x.numeric.min, x.numeric.max) == (y.numeric.min, y.numeric.max)
                np.testing.assert_array_equal(x.numeric.low, y.numeric.low)
                np.testing.assert_array_equal(x.numeric.high, y.numeric.high)
                _assert_quantiles_close(x.numeric.kll, y.numeric.kll)
            if x.freq is not None:
                assert y.freq is not None and y.hll is not None and x.hll is not None
                assert x.freq.counts() == y.freq.counts()
                assert x.freq.total_weight == y.freq.total_weight
                assert x.hll.estimate() == y.hll.estimate()
            if x.text_length is not None:
                assert y.text_length is not None
                _assert_quantiles_close(x.text_length, y.text_length)


def _assert_quantiles_close(a: KllSketch, b: KllSketch) -> None:
    """Same n; every quantile of one has a rank in the other within both sketches' rank error."""
    assert a.n == b.n and a.k == b.k
    ranks = np.linspace(0.01, 0.99, 99)
    bound = a.normalized_rank_error() + b.normalized_rank_error()
    points, where = np.unique(a.quantiles(ranks), return_inverse=True)
    upper = b.cdf(points.tolist())[:-1][where]  # share <= the quantile
    lower = b.cdf(points.tolist(), inclusive=False)[:-1][where]  # share < the quantile
    assert np.all(upper >= ranks - bound) and np.all(lower <= ranks + bound)


def test_importing_mlwatch_never_imports_pyspark() -> None:
    """`import mlwatch` (and even `import mlwatch.spark`) leaves pyspark unimported until a function needs it."""
    code = "import sys, mlwatch, mlwatch.spark; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rows_round_trip(spark: SparkSession, windows: list[Profile]) -> None:
    """Profiles -> DataFrame rows -> profiles gives back the same profiles."""
    df = ms.profiles_to_dataframe(spark, windows)
    assert df.count() == sum(1 + len(p.columns) + len(p.outputs) for p in windows)
    back = sorted(ms.to_profiles(df), key=lambda p: p.window_start or 0)
    for a, b in zip(windows, back, strict=True):
        _assert_same_profile(a, b)
        assert a.to_bytes()[:4] == b.to_bytes()[:4]


def test_merge_whole_fleet_equals_python_merge(spark: SparkSession, windows: list[Profile]) -> None:
    """Merging everything in Spark (versions, segments, windows), in two levels or one, equals `mlwatch.merge`."""
    rows = ms.profiles_to_dataframe(spark, windows)
    tree = ms.merge_rows(rows, by=["model"], spread=3).withColumn("levels", F.lit(2))
    flat = ms.merge_rows(rows, by=["model"], spread=1).withColumn("levels", F.lit(1))
    merged = tree.unionByName(flat).collect()
    want = mlwatch.merge(windows)
    for levels in (1, 2):
        (got,) = ms.rows_to_profiles(r for r in merged if r.levels == levels)
        assert got.version == "*" and got.segment == {"region": "*", "tier": "gold"}
        _assert_same_profile(want, got)
        # The padded column: windows without "age" count all their rows as missing.
        assert got.columns["age"].count == got.rows
    with pytest.raises(mlwatch.ConfigError, match="spread"):
        ms.merge_rows(rows, spread=0)


def test_merge_by_version_and_segment(spark: SparkSession, windows: list[Profile]) -> None:
    """A grouping by version and segment equals the Python merge of each group."""
    merged = ms.merge_rows(ms.profiles_to_dataframe(spark, windows), by=["model", "version", "segment"])
    got = {(p.version, p.segment_key): p for p in ms.to_profiles(merged)}
    groups: dict[tuple[str | None, str], list[Profile]] = {}
    for p in windows:
        groups.setdefault((p.version, p.segment_key), []).append(p)
    assert got.keys() == groups.keys()
    for key, members in groups.items():
        _assert_same_profile(mlwatch.merge(members), got[key])
    by_json = ms.to_profiles(ms.merge_rows(ms.profiles_to_dataframe(spark, windows), by=["segment_json"]))
    assert sorted(p.segment_key for p in by_json) == ["region=eu,tier=gold", "region=us,tier=gold"]


def test_merge_by_derived_day_column(spark: SparkSession, windows: list[Profile]) -> None:
    """Grouping by a column derived from the window (here: 3-minute buckets) keeps that column."""
    df = ms.profiles_to_dataframe(spark, windows).withColumn("bucket", F.floor(F.col("window_start") / 180) * 180)
    merged = ms.merge_rows(df, by=["model", "bucket"])
    assert sorted(r.bucket for r in merged.where("role = 'profile'").collect()) == [0, 180]
    got = sorted(ms.to_profiles(merged), key=lambda p: p.window_start or 0)
    _assert_same_profile(mlwatch.merge(windows[:3]), got[0])
    _assert_same_profile(mlwatch.merge(windows[3:]), got[1])


def test_merged_profiles_feed_drift_and_quality(spark: SparkSession, windows: list[Profile]) -> None:
    """Profiles read back from Spark run through `drift` and `check_quality` like any other."""
    merged = ms.merge_rows(ms.profiles_to_dataframe(spark, windows), by=["model", "version"])
    profiles = {p.version: p for p in ms.to_profiles(merged)}
    report = mlwatch.drift(profiles["v1"], profiles["v2"])
    assert {c.column for c in report.columns} >= {"x", "city", "note", "age", "score"}
    assert mlwatch.check_quality(profiles["v1"], profiles["v2"]) is not None


def test_spark_built_sketches_load_into_mlwatch(spark: SparkSession) -> None:
    """KLL, HLL and frequent-items sketches built by Spark load through mlwatch's validators."""
    rng = np.random.default_rng(3)
    xs = rng.normal(0, 1, 5000)
    words = [f"w{j}" for j in rng.integers(0, 300, 5000)]
    df = spark.createDataFrame([(float(x), w) for x, w in zip(xs, words, strict=True)], "x double, w string")
    row = df.agg(
        F.expr("kll_sketch_agg_double(x, 200)").alias("kll"),
        F.expr("hll_sketch_agg(w, 12)").alias("hll"),
        F.expr("approx_top_k_accumulate(w, 1536)").alias("top"),
    ).collect()[0]
    kll = KllSketch.from_bytes(bytes(row.kll))
    ref = KllSketch(200)
    ref.update(xs)
    assert kll.n == 5000
    _assert_quantiles_close(ref, kll)
    hll = HllSketch.from_bytes(bytes(row.hll))
    py_hll = HllSketch(12)
    py_hll.update_distinct(sorted(set(words)))
    assert hll.estimate() == py_hll.estimate()
    state = bytes(row.top.sketch)  # Spark's state: the sketch, then an 8-byte count of nulls
    assert state[-8:] == bytes(8)
    freq = FrequentSketch.from_bytes(state[:-8])
    py_freq = FrequentSketch(11)
    py_freq.update_counts({w: words.count(w) for w in set(words)})
    assert freq.counts() == py_freq.counts() and freq.total_weight == 5000


def test_sketch_bytes_from_spark_are_validated(spark: SparkSession, windows: list[Profile]) -> None:
    """A corrupted sketch in a row is rejected by the validators, never handed to native code."""
    row = next(r for r in ms.profile_rows(windows[0]) if r["column"] == "x")
    bad = bytearray(row["kll"])
    bad[0] = 0x7F  # preamble ints out of range
    rows = [dict(r) for r in ms.profile_rows(windows[0])]
    for r in rows:
        if r["column"] == "x":
            r["kll"] = bytes(bad)
    with pytest.raises(mlwatch.ProfileFormatError):
        ms.rows_to_profiles(rows)


def test_read_files_otlp_json_and_collector_db(spark: SparkSession, windows: list[Profile], tmp_path: Path) -> None:
    """Profile files, OTLP JSON lines from a Collector file exporter and a SQLite store give the same rows."""
    exporter = mlwatch.LocalFileExporter(tmp_path / "files")
    exporter.export(windows)
    records = [
        {"eventName": "mlwatch.profile", "body": {"bytesValue": base64.b64encode(p.to_bytes()).decode()}} for p in windows
    ]
    other = {"body": {"stringValue": "an unrelated log line"}}
    line = {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {"name": "mlwatch"}, "logRecords": [*records, other]}]}]}
    (tmp_path / "otlp").mkdir()
    (tmp_path / "otlp" / "logs.jsonl").write_text(json.dumps(line) + "\n")
    db = tmp_path / "collector.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE profiles (id INTEGER PRIMARY KEY, model TEXT, payload BLOB)")
        conn.executemany("INSERT INTO profiles (model, payload) VALUES (?, ?)", [(p.model, p.to_bytes()) for p in windows])
    sources = {
        "files": ms.read_profile_files(spark, str(tmp_path / "files")),
        "otlp": ms.read_otlp_json(spark, str(tmp_path / "otlp")),
        "sqlite": ms.read_collector(spark, str(db), query="SELECT payload FROM profiles WHERE model = 'fraud'"),
    }
    frames = [df.withColumn("source", F.lit(name)) for name, df in sources.items()]
    both = frames[0].unionByName(frames[1]).unionByName(frames[2])
    merged = ms.merge_rows(both, by=["model", "source"]).collect()
    assert {r.source for r in merged} == set(sources)
    want = mlwatch.merge(windows)
    for name in sources:
        (got,) = ms.rows_to_profiles(r for r in merged if r.source == name)
        _assert_same_profile(want, got)


def test_drift_by_window_matches_mlwatch_drift(spark: SparkSession) -> None:
    """Spark-side KS and PSI per window agree with `mlwatch.drift` within the sketches' error."""
    reference = [_window(i, seed=100) for i in range(3)]
    current = [_window(i, seed=200, shift=shift) for i, shift in enumerate([0.0, 0.5, 2.0])]
    ref_rows = ms.merge_rows(ms.profiles_to_dataframe(spark, reference), by=["model"])
    result = ms.drift_by_window(ms.profiles_to_dataframe(spark, current), ref_rows).where("column = 'x'")
    rows = sorted(result.collect(), key=lambda r: r.window_start)
    assert len(rows) == 3
    ref = mlwatch.merge(reference)
    for r, cur in zip(rows, current, strict=True):
        col = mlwatch.drift(ref, cur, method="psi")["x"]
        ks = mlwatch.drift(ref, cur, method="ks")["x"]
        assert r.n_current == cur.columns["x"].n_numeric
        assert abs(r.ks - ks.scores["ks"]) <= 0.03, (r.ks, ks.scores)
        assert abs(r.psi - col.scores["psi"]) <= 0.05 + 0.1 * col.scores["psi"], (r.psi, col.scores)
    assert rows[0].psi < 0.1 and rows[2].psi > 0.5 and rows[2].ks_pvalue < 1e-6


# ---------------------------------------------------------------------------- the collector's database over JDBC
POSTGRES_DSN = os.environ.get("MLWATCH_TEST_POSTGRES_DSN")


def _stored(p: Profile, instance: str) -> ProfileRow:
    """The row the collector stores for a profile received from one instance."""
    payload = p.to_bytes()
    assert p.window_start is not None and p.window_end is not None
    return ProfileRow(
        service="svc", instance=instance, key=SeriesKey("svc", p.model, p.version or "", p.segment_key),
        window_start=p.window_start, window_end=p.window_end, content_hash=hashlib.sha256(payload).hexdigest(),
        n_rows=p.rows, calls=p.calls, errors=sum(p.errors.values()), payload=payload,
    )


def _need_driver(url: str) -> None:
    """Skip when the JDBC driver jar is neither installed from Debian nor named by the environment (.ci/run installs both)."""
    driver = ms._jdbc_driver(url)
    assert driver is not None
    if not os.path.isfile(driver[2]) and not os.environ.get(ms.JDBC_JAR_ENV):
        pytest.skip(f"{driver[2]} is missing: apt-get install {driver[1]} (.ci/run installs it)")


@pytest.fixture(params=["sqlite", "postgres"])
def collector_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(the URL the collector's store opens, the URL `read_collector` reads over JDBC) for an empty store of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "collector.db"
        _need_driver("jdbc:sqlite:")
        yield str(path), f"jdbc:sqlite:{path}"
        return
    if POSTGRES_DSN is None:
        pytest.skip("MLWATCH_TEST_POSTGRES_DSN is not set (.ci/run starts PostgreSQL and sets it)")
    _need_driver("jdbc:postgresql:")
    psycopg = pytest.importorskip("psycopg")
    schema = f"spark_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}options=-csearch_path%3D{schema}"
    try:
        yield url, url  # the collector's own postgresql:// URL, turned into a JDBC URL by read_collector
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_read_collector_store_over_jdbc(spark: SparkSession, windows: list[Profile], collector_db: tuple[str, str]) -> None:
    """Profiles stored by the collector's store (SQLite, PostgreSQL), read over JDBC and merged in Spark, equal the Python merge."""
    store_url, read_url = collector_db
    replicas = [_window(i, seed=50) for i in range(3)]  # a second instance reporting the same windows
    store = open_store(store_url)
    try:
        store.add_profiles([_stored(p, "i-1") for p in windows] + [_stored(p, "i-2") for p in replicas])
        other = mlwatch.profile({"y": [1.0, 2.0]}, model="other")
        other.window_start, other.window_end = 0.0, 60.0
        store.add_profiles([_stored(other, "i-1")])  # filtered out below
    finally:
        store.close()
    fraud = "WHERE model = 'fraud'"
    one_fetch = ms.read_collector(spark, read_url, query=f"SELECT payload FROM profiles {fraud}")
    in_parallel = ms.read_collector(  # the fetch split on the row id (Spark's partitionColumn)
        spark, read_url, query=f"SELECT id, payload FROM profiles {fraud}",
        jdbc_options={"partitionColumn": "id", "lowerBound": "1", "upperBound": "10", "numPartitions": "2"},
    )
    both = one_fetch.withColumn("read", F.lit("query")).unionByName(in_parallel.withColumn("read", F.lit("partitioned")))
    merged = ms.merge_rows(both, by=["model", "read"]).collect()
    want = mlwatch.merge([*windows, *replicas])
    for read in ("query", "partitioned"):
        (got,) = ms.rows_to_profiles(r for r in merged if r.read == read)
        _assert_same_profile(want, got)


def test_read_collector_names_the_missing_driver(spark: SparkSession, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without a driver jar, `read_collector` says which Debian package (or option) provides it."""
    monkeypatch.delenv(ms.JDBC_JAR_ENV, raising=False)
    with pytest.raises(mlwatch.ConfigError, match=r"apt-get install libpostgresql-jdbc-java.*jdbc_jar"):
        ms.read_collector(spark, "postgresql://u:p@127.0.0.1:1/db", jdbc_jar=str(tmp_path / "missing.jar"))
    monkeypatch.setenv(ms.JDBC_JAR_ENV, str(tmp_path / "missing.jar"))
    with pytest.raises(mlwatch.ConfigError, match=ms.JDBC_JAR_ENV):
        ms.read_collector(spark, "jdbc:postgresql://127.0.0.1:1/db")
    monkeypatch.delenv(ms.JDBC_JAR_ENV)
    # No jar anywhere and the driver class not on Spark's classpath: the load fails in the JVM.
    monkeypatch.setitem(
        ms._JDBC_DRIVERS, "jdbc:sqlite:",
        ("org.mlwatch.NoSuchDriver", "libxerial-sqlite-jdbc-java", str(tmp_path / "sqlite-jdbc.jar"), "org.xerial:sqlite-jdbc"),
    )
    (tmp_path / "x.db").touch()
    with pytest.raises(mlwatch.ConfigError, match=r"ClassNotFoundException: org\.mlwatch\.NoSuchDriver\): install Debian's libxerial-sqlite-jdbc-java"):
        ms.read_collector(spark, f"jdbc:sqlite:{tmp_path / 'x.db'}")
    with pytest.raises(mlwatch.ConfigError, match="no SQLite database"):
        ms.read_collector(spark, f"jdbc:sqlite:{tmp_path / 'absent.db'}")  # never created: opened read-only
    assert not (tmp_path / "absent.db").exists()


def test_collector_jdbc_url() -> None:
    """The collector's PostgreSQL URL becomes a JDBC URL with the credentials as options."""
    assert ms.collector_jdbc_url("postgresql://me:s%40cret@db.example:6432/mlwatch?sslmode=require") == (
        "jdbc:postgresql://db.example:6432/mlwatch?sslmode=require", {"user": "me", "password": "s@cret"},
    )
    assert ms.collector_jdbc_url("postgres://[::1]/m") == ("jdbc:postgresql://[::1]:5432/m", {})
    assert ms.collector_jdbc_url("jdbc:sqlite:/tmp/c.db") == ("jdbc:sqlite:/tmp/c.db", {})
    with pytest.raises(mlwatch.ConfigError):
        ms.collector_jdbc_url("/var/lib/mlwatch/collector.db")
