"""`mlwatch.spark`: merge and analyse a fleet's stored profiles on Apache Spark, natively.

What: stored profiles (profile files, the collector's database, or the OTLP JSON lines that a
standard OpenTelemetry Collector's file exporter writes) become a Spark DataFrame with one row per
(model, version, segment, window, role, column) holding the exact counters, moments and extremes
and the column's DataSketches bytes. Any grouping (per day, per version, the whole fleet) is then
merged with Spark's own sketch aggregates, the merged rows come back as ordinary `Profile` objects
(through the same validation as any untrusted bytes), and per-window KS and PSI against a
reference are computed in Spark SQL from the sketches.

Why: profiles are monoids, so merging a year of a fleet's windows is a tree reduce; it belongs on
an existing distributed engine, not in one collector process. Spark >= 4.1 reads and writes the
same sketch bytes as the Python ``datasketches`` package (KLL doubles, HLL, frequent items), so
no sketch is ever re-encoded: Python-built sketches merge in the JVM and come back bit-compatible.

How each part merges (per group of rows with the same keys, role and column):

- counters: ``sum``; input columns absent from some profiles are padded with those profiles' rows
  as missing values, exactly like `mlwatch.merge`;
- numeric moments: Chan's parallel formula (the group mean from a window, then
  ``M2 = sum(m2 + n * (mean - group_mean)^2)``), exact up to float rounding; min/max exact;
  the exact extremes: the ``n_extremes`` smallest and largest of the group's extremes;
- KLL doubles (numeric values, text lengths, latency): ``kll_merge_agg_double``;
- HLL: ``hll_union_agg`` (identical estimates to the Python union);
- frequent strings: ``approx_top_k_combine`` on the stored bytes (the same DataSketches
  frequent-items serialization; Spark's aggregation state appends an 8-byte null count, always 0
  here, which is added before and stripped after; 1,536 items tracked, so the map keeps mlwatch's
  default size 2**11: columns configured with another ``freq_lg`` come back with 2**11);
- model quality (the profile's `quality` part): Spark has no aggregate for it, so each group's
  parts are merged by mlwatch's own `merge_in` in a Python UDF on the executors;
- identity: keys not grouped on become ``"*"`` when they differ (segments key by key), windows
  span the group, as in `Profile.merge_in`.

`import mlwatch` never imports this module, and this module imports pyspark only when a
function that needs it is called (install with ``pip install "mlwatch[spark]"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mlwatch._errors import ConfigError, ProfileFormatError
from mlwatch._numeric import NumericSummary
from mlwatch._sketches import DEFAULT_FREQ_LG, FrequentSketch, HllSketch, KllSketch
from mlwatch._wire import WireLimits
from mlwatch.column import KINDS, ColumnProfile
from mlwatch.profile import MIXED, Profile

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = [
    "IDENTITY",
    "JDBC_JAR_ENV",
    "PROFILE_ROLE",
    "ROW_SCHEMA",
    "collector_jdbc_url",
    "drift_by_window",
    "merge_rows",
    "profile_rows",
    "profiles_to_dataframe",
    "read_collector",
    "read_otlp_json",
    "read_payloads",
    "read_profile_files",
    "rows_to_profiles",
    "to_profiles",
]

#: Role of the one row per profile that carries the profile's own counters and latency sketch.
PROFILE_ROLE = "profile"
_ROLES = ("input", "output", PROFILE_ROLE)

#: The identity columns of a row; `merge_rows` groups by any of them (or by columns derived from them).
IDENTITY = ("model", "version", "segment", "segment_json", "window_start", "window_end")

#: One row per (model, version, segment, window, role, column). `segment` is the canonical
#: ``k=v,k2=v2`` key (for grouping and filtering), `segment_json` the lossless form. The profile
#: row (role ``"profile"``, column ``""``) holds rows/calls/dropped/errors, the latency KLL in
#: `kll` and the model-quality part in `quality` (an mlwatch profile body carrying only that part);
#: every row repeats its profile's `rows` (needed to pad absent input columns on merge).
ROW_SCHEMA = (
    "model string, version string, segment string, segment_json string, "
    "window_start double, window_end double, role string, column string, "
    "rows bigint, calls bigint, dropped bigint, errors map<string,bigint>, "
    "declared_kind string, kll_k int, freq_lg int, hll_lg int, n_extremes int, max_category_length int, "
    "count bigint, missing bigint, non_finite bigint, n_numeric bigint, n_categorical bigint, "
    "n_text bigint, n_other bigint, "
    "mean double, m2 double, min double, max double, low array<double>, high array<double>, "
    "kll binary, freq binary, hll binary, text_length binary, quality binary"
)
_FIELDS = [part.strip().split(" ", 1)[0] for part in ROW_SCHEMA.split(", ")]
_COUNTERS = ("count", "missing", "non_finite", "n_numeric", "n_categorical", "n_text", "n_other")
_SETTINGS = ("kll_k", "freq_lg", "hll_lg", "n_extremes", "max_category_length")

#: Items tracked by Spark's frequent-items merge: 3/4 of mlwatch's 2**11 map, so the merged sketch
#: keeps lg_max_map_size 11 (Spark takes this as a constant; without it the map grows to 2**21).
_FREQ_ITEMS = (1 << DEFAULT_FREQ_LG) * 3 // 4

_MISSING_SPARK = 'mlwatch.spark needs PySpark 4.1.2 or later: pip install "mlwatch[spark]"'


def _require_pyspark() -> None:
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_MISSING_SPARK) from exc
    parts = tuple(int(p) for p in pyspark.__version__.split(".")[:3] if p.isdigit())
    if parts < (4, 1, 2):
        raise ImportError(f"{_MISSING_SPARK} (found {pyspark.__version__})")


# ---------------------------------------------------------------------------- profile <-> rows
def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _column_row(base: dict[str, Any], role: str, col: ColumnProfile) -> dict[str, Any]:
    row = dict(base, role=role, column=col.name, declared_kind=col.declared_kind)
    row.update(
        kll_k=col._kll_k, freq_lg=col._freq_lg, hll_lg=col._hll_lg,
        n_extremes=col.n_extremes, max_category_length=col.max_category_length,
    )
    for name in _COUNTERS:
        row[name] = getattr(col, name)
    num = col.numeric
    if num is not None:
        row.update(
            mean=float(num.mean), m2=float(num.m2), min=_finite_or_none(num.min), max=_finite_or_none(num.max),
            low=num.low.tolist(), high=num.high.tolist(), kll=num.kll.to_bytes(),
        )
    if col.freq is not None and col.hll is not None:
        row.update(freq=col.freq.to_bytes(), hll=col.hll.to_bytes())
    if col.text_length is not None:
        row["text_length"] = col.text_length.to_bytes()
    return row


def profile_rows(profile: Profile) -> list[dict[str, Any]]:
    """The rows of one profile: its profile row, then one row per input and per output column."""
    base: dict[str, Any] = dict.fromkeys(_FIELDS)
    base.update(
        model=profile.model,
        version=profile.version,
        segment=profile.segment_key,
        segment_json=json.dumps(profile.segment, sort_keys=True, separators=(",", ":")),
        window_start=profile.window_start,
        window_end=profile.window_end,
        rows=profile.rows,
    )
    head = dict(base, role=PROFILE_ROLE, column="", calls=profile.calls, dropped=profile.dropped,
                errors=dict(profile.errors))
    if profile.latency is not None:
        head["kll"] = profile.latency.to_bytes()
    if profile.quality is not None and not profile.quality.is_empty():
        carrier = Profile(profile.model)
        carrier.quality = profile.quality
        head["quality"] = carrier.to_bytes()
    out = [head]
    out.extend(_column_row(base, "input", c) for c in profile.columns.values())
    out.extend(_column_row(base, "output", c) for c in profile.outputs.values())
    return out


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return row[name]  # pyspark Row


def _int(row: Any, name: str, where: str, default: int | None = None) -> int:
    value = _get(row, name)
    if value is None and default is not None:
        return default
    if type(value) is not int or value < 0:
        raise ProfileFormatError(f"{where}: {name!r} must be a non-negative integer, got {value!r}")
    return value


def _bytes(row: Any, name: str) -> bytes | None:
    value = _get(row, name)
    return None if value is None else bytes(value)


def _column_from_row(row: Any, lim: WireLimits) -> ColumnProfile:
    name = _get(row, "column")
    where = f"row {name!r}"
    declared = _get(row, "declared_kind")
    if declared is not None and declared not in KINDS:
        raise ProfileFormatError(f"{where}: unknown declared kind {declared!r}")
    col = ColumnProfile(
        str(name), kind=declared,
        kll_k=_int(row, "kll_k", where), freq_lg=_int(row, "freq_lg", where), hll_lg=_int(row, "hll_lg", where),
        n_extremes=_int(row, "n_extremes", where), max_category_length=_int(row, "max_category_length", where),
    )
    for field in _COUNTERS:
        setattr(col, field, _int(row, field, where))
    parts = sum(getattr(col, f) for f in _COUNTERS[1:])
    if parts != col.count:
        raise ProfileFormatError(f"{where}: value counts add up to {parts}, not to count={col.count}")
    kll = _bytes(row, "kll")
    if kll is not None:
        summary = NumericSummary(col._kll_k, col.n_extremes)
        summary.kll = KllSketch.from_bytes(kll, max_k=lim.max_kll_k)
        if summary.kll.n != col.n_numeric:
            raise ProfileFormatError(f"{where}: numeric sketch holds n={summary.kll.n}, n_numeric={col.n_numeric}")
        summary.n = col.n_numeric
        for field in ("mean", "m2"):
            value = _get(row, field)
            setattr(summary, field, float(value) if value is not None else 0.0)
        lo, hi = _get(row, "min"), _get(row, "max")
        summary.min = float(lo) if lo is not None else math.inf
        summary.max = float(hi) if hi is not None else -math.inf
        for field in ("low", "high"):
            arr = np.asarray(_get(row, field) or [], dtype=np.float64)
            if arr.shape[0] > col.n_extremes or not np.all(np.isfinite(arr)) or np.any(np.diff(arr) < 0):
                raise ProfileFormatError(f"{where}: {field!r} extremes must be at most n_extremes sorted finite values")
            setattr(summary, field, arr)
        col.numeric = summary
    elif col.n_numeric:
        raise ProfileFormatError(f"{where}: n_numeric={col.n_numeric} but no numeric sketch")
    freq, hll = _bytes(row, "freq"), _bytes(row, "hll")
    if (freq is None) != (hll is None):
        raise ProfileFormatError(f"{where}: the frequent-items and HLL sketches travel together")
    if freq is not None and hll is not None:
        col.freq = FrequentSketch.from_bytes(freq, max_lg_map_size=lim.max_freq_lg)
        col.hll = HllSketch.from_bytes(hll, max_lg_k=lim.max_hll_lg)
        if col.freq.total_weight != col.n_categorical:
            raise ProfileFormatError(f"{where}: category sketch weight {col.freq.total_weight} != n_categorical={col.n_categorical}")
    text = _bytes(row, "text_length")
    if text is not None:
        col.text_length = KllSketch.from_bytes(text, max_k=lim.max_kll_k)
        if col.text_length.n != col.n_text:
            raise ProfileFormatError(f"{where}: text length sketch n={col.text_length.n} != n_text={col.n_text}")
    return col


def _float_opt(value: Any) -> float | None:
    return None if value is None else float(value)


def rows_to_profiles(rows: Iterable[Any], *, limits: WireLimits | None = None) -> list[Profile]:
    """Rebuild profiles from rows (dicts or Spark `Row`s); every sketch is validated before loading.

    Rows are grouped by (model, version, segment_json, window_start, window_end); each group
    needs its profile row. Spark's bytes are untrusted: they go through the same structural
    validators as profile files before any native deserializer sees them.
    """
    lim = limits or WireLimits()
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple(_get(row, k) for k in ("model", "version", "segment_json", "window_start", "window_end"))
        groups.setdefault(key, []).append(row)
    out: list[Profile] = []
    for (model, version, seg_json, ws, we), members in groups.items():
        segment = json.loads(seg_json) if seg_json else {}
        if not isinstance(segment, dict):
            raise ProfileFormatError(f"segment_json must be an object, got {seg_json!r}")
        p = Profile(str(model), version=version, segment=segment, window_start=_float_opt(ws), window_end=_float_opt(we))
        heads = [r for r in members if _get(r, "role") == PROFILE_ROLE]
        if len(heads) != 1:
            raise ProfileFormatError(f"profile {model!r} window {ws}: expected one profile row, found {len(heads)}")
        head = heads[0]
        p.rows = _int(head, "rows", "profile row")
        p.calls = _int(head, "calls", "profile row", default=0)
        p.dropped = _int(head, "dropped", "profile row", default=0)
        errors = _get(head, "errors") or {}
        p.errors = {str(k): int(v) for k, v in dict(errors).items()}
        latency = _bytes(head, "kll")
        if latency is not None:
            p.latency = KllSketch.from_bytes(latency, max_k=lim.max_kll_k)
        quality = _bytes(head, "quality")
        if quality is not None:
            p.quality = Profile.from_bytes(quality, limits=lim).quality
        for r in members:
            role = _get(r, "role")
            if role == PROFILE_ROLE:
                continue
            if role not in _ROLES:
                raise ProfileFormatError(f"unknown role {role!r}")
            target = p.columns if role == "input" else p.outputs
            col = _column_from_row(r, lim)
            if col.name in target:
                raise ProfileFormatError(f"column {col.name!r} appears twice in one profile's {role} rows")
            target[col.name] = col
        out.append(p)
    return out


def to_profiles(df: DataFrame, *, limits: WireLimits | None = None) -> list[Profile]:
    """Collect (merged) rows to the driver as validated `Profile`s, ready for `drift`/`check_quality`."""
    cols = [c for c in _FIELDS if c in df.columns]
    return rows_to_profiles(df.select(*cols).toLocalIterator(), limits=limits)


# ---------------------------------------------------------------------------- reading into Spark
def _arrow_schema() -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    schema = StructType.fromDDL(ROW_SCHEMA)
    assert isinstance(schema, StructType)
    return to_arrow_schema(schema)


def _arrow_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    for r in rows:
        if r.get("errors") is not None:
            r["errors"] = list(r["errors"].items())
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def profiles_to_dataframe(spark: SparkSession, profiles: Iterable[Profile]) -> DataFrame:
    """A DataFrame of the rows of in-memory profiles (built on the driver: for tests and small sets)."""
    _require_pyspark()
    rows = [r for p in profiles for r in profile_rows(p)]
    return spark.createDataFrame([tuple(r[f] for f in _FIELDS) for r in rows], ROW_SCHEMA)


def read_payloads(
    df: DataFrame,
    column: str = "payload",
    *,
    hmac_keys: Mapping[str, bytes] | None = None,
    limits: WireLimits | None = None,
) -> DataFrame:
    """Decode a binary column of profile bodies into rows, on the executors.

    Every body goes through `Profile.from_bytes` (checksum or HMAC, caps, structural validation)
    where it is read; a malformed body fails the job with its `ProfileFormatError`. Bodies reach
    the Python workers in Arrow batches of ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows
    (10,000 by default): with profiles of tens of KB, set it to a few hundred (and, for bodies
    stored in Parquet, ``spark.sql.parquet.columnarReaderBatchSize`` too, or the JVM reads 4,096
    bodies per vector).
    """
    _require_pyspark()
    keys = dict(hmac_keys) if hmac_keys is not None else None
    lim = limits
    schema = _arrow_schema()  # on the driver: executors have no JVM to parse the DDL

    def decode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows: list[dict[str, Any]] = []
            for body in batch.column(0).to_pylist():
                if body is None:
                    continue
                rows.extend(profile_rows(Profile.from_bytes(bytes(body), hmac_keys=keys, limits=lim)))
            yield _arrow_rows(rows, schema)

    return df.select(column).mapInArrow(decode, ROW_SCHEMA)


def read_profile_files(spark: SparkSession, path: str | Sequence[str], *, pattern: str = "*.mlw", **kwargs: Any) -> DataFrame:
    """Rows of every profile file under `path` (directories are searched recursively; any Hadoop
    file system Spark can read: local, s3a://, gs://, abfs://)."""
    _require_pyspark()
    paths = [path] if isinstance(path, str) else list(path)
    files = (
        spark.read.format("binaryFile").option("pathGlobFilter", pattern).option("recursiveFileLookup", "true").load(paths)
    )
    return read_payloads(files, "content", **kwargs)


#: The parts of an OTLP JSON ``ExportLogsServiceRequest`` that carry mlwatch profiles.
_OTLP_SCHEMA = (
    "resourceLogs array<struct<scopeLogs: array<struct<logRecords: array<struct<"
    "eventName: string, attributes: array<struct<key: string, value: struct<stringValue: string>>>, "
    "body: struct<bytesValue: string>>>>>>>"
)


def read_otlp_json(spark: SparkSession, path: str | Sequence[str], **kwargs: Any) -> DataFrame:
    """Rows of every mlwatch profile in OTLP JSON lines files, as an OpenTelemetry Collector's
    ``file`` exporter writes them (one ExportLogsServiceRequest per line, bytes bodies base64).

    Parsing is Spark's own (``from_json``); records whose event name (or ``event.name``
    attribute) is not ``mlwatch.profile``, or whose body is not bytes, are ignored, as the mlwatch
    collector does. The bodies are then validated and decoded by `read_payloads`.
    """
    _require_pyspark()
    from pyspark.sql import functions as F

    from mlwatch._convention import EVENT_NAME

    paths = [path] if isinstance(path, str) else list(path)
    lines = spark.read.option("recursiveFileLookup", "true").text(paths).where(F.length("value") > 0)
    records = lines.select(F.from_json("value", _OTLP_SCHEMA).alias("r")).select(
        F.explode(F.expr("flatten(transform(r.resourceLogs, rl -> flatten(transform(rl.scopeLogs, sl -> sl.logRecords))))")).alias("rec")
    )
    event = F.expr("coalesce(rec.eventName, filter(rec.attributes, a -> a.key = 'event.name')[0].value.stringValue)")
    bodies = records.where((event == F.lit(EVENT_NAME)) & F.col("rec.body.bytesValue").isNotNull()).select(
        F.unbase64("rec.body.bytesValue").alias("payload")
    )
    return read_payloads(bodies, "payload", **kwargs)


_COLLECTOR_QUERY = "SELECT payload FROM profiles"

#: Environment variable naming the JDBC driver jar(s) for `read_collector` (``os.pathsep``-separated).
JDBC_JAR_ENV = "MLWATCH_SPARK_JDBC_JAR"

#: The JDBC drivers of the collector's two databases: URL prefix -> (driver class, Debian package,
#: the jar that package installs, Maven coordinate for ``spark.jars.packages``).
_JDBC_DRIVERS = {
    "jdbc:postgresql:": ("org.postgresql.Driver", "libpostgresql-jdbc-java", "/usr/share/java/postgresql.jar", "org.postgresql:postgresql"),
    "jdbc:sqlite:": ("org.sqlite.JDBC", "libxerial-sqlite-jdbc-java", "/usr/share/java/sqlite-jdbc.jar", "org.xerial:sqlite-jdbc"),
}


def collector_jdbc_url(database: str) -> tuple[str, dict[str, str]]:
    """The JDBC URL and connection options (user, password) for a collector database URL.

    ``postgresql://user:secret@host:5432/db?sslmode=require`` (the form ``mlwatch collector --db``
    takes) becomes ``jdbc:postgresql://host:5432/db?sslmode=require`` with ``user`` and
    ``password`` as options (query parameters pass through: the PostgreSQL JDBC driver reads
    ``sslmode`` and ``options`` like libpq, plus its own, e.g. ``currentSchema``); a ``jdbc:`` URL
    is returned as it is.
    """
    if database.startswith("jdbc:"):
        return database, {}
    if not database.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"not a JDBC or PostgreSQL URL: {database!r} (a SQLite file is read as jdbc:sqlite:/path/to/file.db)")
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(database)
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    url = f"jdbc:postgresql://{host}:{parts.port or 5432}{parts.path or '/'}"
    if parts.query:
        url += f"?{parts.query}"
    options: dict[str, str] = {}
    if parts.username is not None:
        options["user"] = unquote(parts.username)
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    return url, options


def _jdbc_driver(url: str) -> tuple[str, str, str, str] | None:
    return next((d for prefix, d in _JDBC_DRIVERS.items() if url.startswith(prefix)), None)


def _missing_driver(url: str, reason: str) -> ConfigError:
    driver = _jdbc_driver(url)
    scheme = url.split(":", 2)[1] if url.count(":") >= 2 else url
    if driver is None:
        return ConfigError(
            f"no JDBC driver for {scheme!r} URLs on Spark's classpath ({reason}): pass jdbc_jar=/path/to/driver.jar, "
            f"set {JDBC_JAR_ENV}, or start Spark with spark.jars"
        )
    cls, package, jar, maven = driver
    return ConfigError(
        f"the {scheme} JDBC driver ({cls}) is not on Spark's classpath ({reason}): install Debian's {package} "
        f"(apt-get install {package}; it installs {jar}), or pass jdbc_jar=/path/to/driver.jar, set {JDBC_JAR_ENV}, "
        f"or start Spark with spark.jars.packages={maven}:<version>"
    )


def _jdbc_jars(url: str, jdbc_jar: str | Sequence[str] | None) -> list[str]:
    """The jar(s) to add: `jdbc_jar`, else $MLWATCH_SPARK_JDBC_JAR, else the Debian package's jar if installed."""
    if jdbc_jar is not None:
        jars, source = ([jdbc_jar] if isinstance(jdbc_jar, str) else list(jdbc_jar)), "jdbc_jar"
    elif os.environ.get(JDBC_JAR_ENV):
        jars, source = [j for j in os.environ[JDBC_JAR_ENV].split(os.pathsep) if j], JDBC_JAR_ENV
    else:
        driver = _jdbc_driver(url)
        return [driver[2]] if driver is not None and os.path.isfile(driver[2]) else []
    for jar in jars:
        if not os.path.isfile(jar):
            raise _missing_driver(url, f"{source} names {jar!r}, which is not a file")
    return jars


def _add_jars(spark: SparkSession, jars: Sequence[str]) -> None:
    """``ADD JAR`` each jar the session does not have yet (works on a running session)."""
    if not jars:
        return
    have = {str(r[0]).rsplit("/", 1)[-1] for r in spark.sql("LIST JARS").collect()}
    for jar in jars:
        path = os.path.realpath(jar)
        if os.path.basename(path) not in have:
            quoted = path.replace("\\", "\\\\").replace("'", "\\'")
            spark.sql(f"ADD JAR '{quoted}'")


def _default_parallelism(spark: SparkSession) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        return 1


def read_collector(
    spark: SparkSession,
    database: str,
    *,
    query: str = _COLLECTOR_QUERY,
    jdbc_options: Mapping[str, str] | None = None,
    jdbc_jar: str | Sequence[str] | None = None,
    partitions: int | None = None,
    batch_size: int = 1000,
    **kwargs: Any,
) -> DataFrame:
    """Rows of the profiles stored by `mlwatch collector` (raw payloads; table ``profiles``).

    `database` is one of:

    - the collector's PostgreSQL URL (``postgresql://user:secret@db:5432/mlwatch``) or any
      ``jdbc:`` URL (``jdbc:postgresql://...``, ``jdbc:sqlite:/var/lib/mlwatch/collector.db``):
      read by Spark's JDBC source in the JVM. The driver jar is found in this order: `jdbc_jar`
      (a path or several), the ``MLWATCH_SPARK_JDBC_JAR`` environment variable
      (``os.pathsep``-separated), the jar of Debian's package (``libpostgresql-jdbc-java``:
      ``/usr/share/java/postgresql.jar``; ``libxerial-sqlite-jdbc-java``:
      ``/usr/share/java/sqlite-jdbc.jar``), else Spark's own classpath (``spark.jars``,
      ``spark.jars.packages``); it is added to the running session with ``ADD JAR``. Without any,
      a `ConfigError` names the package to install. SQLite is opened read-only. One connection
      fetches the rows (``fetchsize`` 100 unless `jdbc_options` sets it); the payloads are then
      spread over `partitions` partitions (default: Spark's default parallelism) so their
      decoding runs in parallel. To fetch in parallel too, select the row id and pass Spark's
      ``partitionColumn``, ``lowerBound``, ``upperBound`` and ``numPartitions`` in `jdbc_options`.
    - a SQLite file path: read on the driver with Python's ``sqlite3``, `batch_size` payloads at
      a time (no jar needed; for small stores and tests).

    `query` must select the payload column as ``payload``; filter there
    (``... WHERE model = 'fraud' AND window_start >= ...``). The other keyword arguments
    (`hmac_keys`, `limits`) go to `read_payloads`, which validates every body.
    """
    _require_pyspark()
    if partitions is not None and partitions < 1:
        raise ConfigError(f"read_collector: partitions must be >= 1, got {partitions}")
    if database.startswith(("jdbc:", "postgresql://", "postgres://")):
        url, options = collector_jdbc_url(database)
        options.update(jdbc_options or {})
        options.setdefault("fetchsize", "100")
        driver = _jdbc_driver(url)
        if driver is not None:
            options.setdefault("driver", driver[0])
        if url.startswith("jdbc:sqlite:"):
            options.setdefault("open_mode", "1")  # SQLITE_OPEN_READONLY: never create or change the store
            path = url.removeprefix("jdbc:sqlite:")
            if not path.startswith(("file:", ":")) and not os.path.isfile(path):
                raise ConfigError(f"read_collector: no SQLite database at {path!r}")
        _add_jars(spark, _jdbc_jars(url, jdbc_jar))
        reader = spark.read.format("jdbc").option("url", url)
        if "partitionColumn" in options:  # Spark refuses `query` together with partitioning options
            reader = reader.option("dbtable", f"({query}) mlwatch_profiles")
        else:
            reader = reader.option("query", query)
        for k, v in options.items():
            reader = reader.option(k, v)
        try:
            payloads = reader.load()
        except Exception as exc:
            cls = options.get("driver", "")
            for line in str(exc).splitlines():
                if ("ClassNotFoundException" in line and cls and cls in line) or "No suitable driver" in line:
                    raise _missing_driver(url, line.strip().lstrip(": ")[:200]) from exc
            raise
        if "partitionColumn" not in options:
            payloads = payloads.repartition(partitions or _default_parallelism(spark))
        elif partitions is not None:
            payloads = payloads.repartition(partitions)
        return read_payloads(payloads, "payload", **kwargs)
    import sqlite3

    path = database.removeprefix("sqlite:///") if database.startswith("sqlite:///") else database
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        frames: list[DataFrame] = []
        cur = conn.execute(query)
        while True:
            chunk = cur.fetchmany(batch_size)
            if not chunk:
                break
            frames.append(spark.createDataFrame([(bytes(r[0]),) for r in chunk], "payload binary"))
    finally:
        conn.close()
    if not frames:
        return spark.createDataFrame([], ROW_SCHEMA)
    payloads = frames[0]
    for f in frames[1:]:
        payloads = payloads.unionAll(f)
    if partitions is not None:
        payloads = payloads.repartition(partitions)
    return read_payloads(payloads, "payload", **kwargs)


# ---------------------------------------------------------------------------- merge in Spark
def _same_or_mixed(name: str) -> Column:
    from pyspark.sql import functions as F

    marker = F.coalesce(F.col(name), F.lit("\x00null"))
    return F.when(F.min(marker) == F.max(marker), F.first(name, ignorenulls=False)).otherwise(F.lit(MIXED))


_SEGMENT_MERGE = """
    map_from_arrays(
        array_sort(array_distinct(flatten(transform(_segs, m -> map_keys(m))))),
        transform(
            array_sort(array_distinct(flatten(transform(_segs, m -> map_keys(m))))),
            k -> CASE WHEN size(array_distinct(transform(_segs, m -> coalesce(m[k], '\\u0000')))) = 1
                      THEN _segs[0][k] ELSE '{mixed}' END))
""".replace("{mixed}", MIXED)


def _merge_quality(parts: Sequence[bytes]) -> bytes | None:
    """Merge the quality carriers of one group with mlwatch's own merge (each validated first)."""
    result: Profile | None = None
    for part in parts:
        carrier = Profile.from_bytes(bytes(part))
        if result is None:
            result = carrier
        elif carrier.quality is not None:
            if result.quality is None:
                result.quality = carrier.quality
            else:
                result.quality.merge_in(carrier.quality)
    return None if result is None else result.to_bytes()


def merge_rows(
    df: DataFrame,
    by: Sequence[str] = ("model", "version", "segment", "window_start"),
    *,
    spread: int = 256,
) -> DataFrame:
    """Merge profile rows per group with Spark's native sketch aggregates.

    `by` names the grouping columns: any of `IDENTITY` or columns you derived from them, e.g.
    ``df.withColumn("day", F.floor(F.col("window_start") / 86400) * 86400)`` then
    ``by=["model", "version", "day"]``; ``by=["model"]`` merges each model's whole fleet and
    history. ``model`` is always added (different models never merge). Returns rows in
    `ROW_SCHEMA` (plus the extra `by` columns), one profile per group, readable by `to_profiles`.

    Merging is a two-level tree: each group's profiles are first merged within up to `spread`
    buckets (a hash of each profile's identity, so a profile's rows stay together), then the
    buckets are merged. Sketches merge in bounded memory either way, but the exact extremes are
    gathered per group, so one level would hold all of a group's extremes in one task (a
    one-level merge of 100,000 profiles of 20 features ran out of a 2 GB heap). ``spread=1``
    merges in one level.
    """
    _require_pyspark()
    from pyspark.sql import functions as F

    if spread < 1:
        raise ConfigError(f"merge_rows: spread must be >= 1, got {spread}")
    if spread == 1:
        return _merge_level(df, by)
    identity = [F.col(c) for c in ("model", "version", "segment_json", "window_start", "window_end")]
    bucketed = df.withColumn("_bucket", F.pmod(F.xxhash64(*identity), F.lit(spread)))
    return _merge_level(_merge_level(bucketed, [*by, "_bucket"]).drop("_bucket"), by)


def _merge_level(df: DataFrame, by: Sequence[str]) -> DataFrame:
    """One level of `merge_rows`: every group of `by` merged in one aggregation."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    keys = list(dict.fromkeys(["model", *by]))
    missing_cols = [k for k in keys if k not in df.columns]
    if missing_cols:
        raise ConfigError(f"merge_rows: unknown grouping columns {missing_cols}; the rows have {df.columns}")
    if "segment" in keys and "segment_json" not in keys:
        keys.append("segment_json")  # the same segment, keyed losslessly
    part = [*keys, "role", "column"]
    # Chan's M2 needs each group's mean first: a window over the same partitioning as the
    # aggregation (one scan; measured faster here than a separate aggregate joined back, which
    # reads, and for `read_payloads` decodes, the input twice).
    per_column = Window.partitionBy(*part)
    n = F.coalesce(F.col("n_numeric"), F.lit(0))
    numeric = F.col("mean").isNotNull()
    weighted = F.sum(F.when(numeric, n * F.col("mean"))).over(per_column)
    total = F.sum(F.when(numeric, n)).over(per_column)
    prepared = df.withColumn("_gmean", F.when(total > 0, weighted / total).otherwise(F.lit(0.0)))

    aggs: list[Column] = []
    if "version" not in keys:
        aggs.append(_same_or_mixed("version").alias("version"))
    if "segment_json" not in keys:
        aggs.append(F.collect_set("segment_json").alias("_seg_set"))
    elif "segment" not in keys:
        aggs.append(F.first("segment").alias("segment"))  # one segment_json, one segment
    if "window_start" not in keys:
        aggs.append(F.min("window_start").alias("window_start"))
    if "window_end" not in keys:
        aggs.append(F.max("window_end").alias("window_end"))
    kind = F.col("declared_kind")
    e = F.min("n_extremes")
    dev = F.col("mean") - F.col("_gmean")
    aggs += [
        F.sum("rows").alias("rows"),
        F.sum("calls").alias("calls"),
        F.sum("dropped").alias("dropped"),
        F.expr(
            "aggregate(collect_list(errors), cast(map() as map<string,bigint>),"
            " (acc, m) -> map_zip_with(acc, m, (k, a, b) -> coalesce(a, 0L) + coalesce(b, 0L)))"
        ).alias("errors"),
        F.when(
            F.min(kind) != F.max(kind),
            F.raise_error(F.concat(F.lit("column declared with different kinds: "), F.first("column"))),
        ).otherwise(F.max(kind)).alias("declared_kind"),
        *[F.min(s).alias(s) for s in _SETTINGS],
        *[F.sum(c).alias(c) for c in _COUNTERS],
        F.max(F.when(numeric, F.col("_gmean"))).alias("mean"),
        F.sum(F.when(numeric, F.col("m2") + n * dev * dev)).alias("m2"),
        F.min("min").alias("min"),
        F.max("max").alias("max"),
        F.slice(F.array_sort(F.flatten(F.collect_list("low"))), 1, e).alias("low"),
        F.flatten(F.collect_list("high")).alias("_high_all"),
        F.when(F.count("kll") > 0, F.expr("kll_merge_agg_double(kll)")).alias("kll"),
        F.expr(
            "approx_top_k_combine(named_struct('sketch', concat(freq, x'0000000000000000'),"
            f" 'maxItemsTracked', {_FREQ_ITEMS}, 'itemDataType', cast(null as string),"
            f" 'itemDataTypeDDL', 'item string not null'), {_FREQ_ITEMS}) FILTER (WHERE freq IS NOT NULL)"
        ).alias("_freq"),
        F.when(F.count("hll") > 0, F.expr("hll_union_agg(hll, true)")).alias("hll"),
        F.when(F.count("text_length") > 0, F.expr("kll_merge_agg_double(text_length)")).alias("text_length"),
        F.count("kll").alias("_n_kll"),
        F.count("freq").alias("_n_freq"),
        F.collect_list("quality").alias("_quality_parts"),
    ]
    merged = prepared.groupBy(*part).agg(*aggs)
    # Model quality (confusion counts, error sums, ranking sums) has no Spark aggregate: its parts are
    # merged by mlwatch itself, in Python on the executors, once per group.
    merge_quality = F.udf(lambda parts: _merge_quality(parts), BinaryType())
    merged = merged.withColumn("quality", F.when(F.size("_quality_parts") > 0, merge_quality("_quality_parts")))
    high_sorted = F.array_sort(F.col("_high_all"))
    has_num = F.col("_n_kll") > 0
    merged = (
        merged.withColumn("high", F.when(has_num, F.slice(high_sorted, F.greatest(F.size(high_sorted) - F.col("n_extremes") + 1, F.lit(1)), F.col("n_extremes"))))
        .withColumn("low", F.when(has_num, F.col("low")))
        .withColumn("freq", F.when(F.col("_n_freq") > 0, F.expr("substring(_freq.sketch, 1, length(_freq.sketch) - 8)")))
    )
    if "segment_json" not in keys:
        segs = F.expr("transform(array_sort(_seg_set), s -> from_json(s, 'map<string,string>'))")
        seg_map = F.expr(_SEGMENT_MERGE.replace("_segs", "_segs_arr"))
        merged = merged.withColumn("_segs_arr", segs).withColumn("_seg_map", seg_map)
        merged = merged.withColumn("segment_json", F.to_json("_seg_map")).withColumn(
            "segment",
            F.array_join(F.transform(F.map_entries("_seg_map"), lambda kv: F.concat(kv["key"], F.lit("="), kv["value"])), ","),
        )
    # The group's identity is its profile row's (a column absent from some profiles saw fewer
    # windows, versions or segments), and an input column a profile never saw was missing in each
    # of that profile's rows.
    ident = [c for c in ("version", "segment", "segment_json", "window_start", "window_end") if c not in keys]
    head = F.struct(*[F.col(c) for c in ident], F.col("rows").alias("_group_rows"))
    merged = merged.withColumn("_head", F.max(F.when(F.col("role") == PROFILE_ROLE, head)).over(Window.partitionBy(*keys)))
    for c in ident:
        merged = merged.withColumn(c, F.col("_head")[c])
    pad = F.when(F.col("role") == "input", F.col("_head._group_rows") - F.col("rows")).otherwise(F.lit(0))
    merged = merged.withColumn("_pad", F.coalesce(pad, F.lit(0)))
    merged = merged.withColumn("count", F.col("count") + F.col("_pad")).withColumn("missing", F.col("missing") + F.col("_pad"))
    merged = merged.withColumn("rows", F.coalesce(F.col("_head._group_rows"), F.col("rows")))
    extra = [k for k in keys if k not in _FIELDS]
    return merged.select(*extra, *_FIELDS)


# ---------------------------------------------------------------------------- drift in Spark
def drift_by_window(
    current: DataFrame,
    reference: DataFrame,
    *,
    bins: int = 10,
    grid: int = 1000,
    epsilon: float = 1e-4,
) -> DataFrame:
    """Per window and numeric column: KS and PSI of `current` rows against `reference` rows, in Spark SQL.

    `reference` holds one row per (role, column) (e.g. ``merge_rows(ref_rows, by=["model"])``);
    every row of `current` with a numeric sketch is compared with the reference row of the same
    role and column, all windows at once, in the JVM.

    Spark's ``kll_sketch_get_rank_double`` only takes constant split points, so one sketch cannot
    be ranked at the other's quantiles; instead each sketch gives its quantiles at `grid` equally
    spaced ranks (``kll_sketch_get_quantile_double``), and its CDF at any point is the share of
    those quantiles at or below it: within ``1/grid`` plus the KLL rank error of the sketch's CDF.

    - PSI: `bins` equal-mass reference bins (edges: the reference's quantiles at ``i/bins``,
      deduplicated; right-closed; shares floored at `epsilon`), as `mlwatch.drift` does;
    - KS: the largest gap between the two grid CDFs (a sorted sweep over both grids);
    - ``ks_pvalue``: the asymptotic Kolmogorov p-value with ``n*m/(n+m)``.

    Categorical drift is not computed here: read windows back with `to_profiles` and use
    `mlwatch.drift`.
    """
    _require_pyspark()
    from pyspark.sql import functions as F

    if bins < 2 or grid < 10:
        raise ConfigError(f"drift_by_window: bins must be >= 2 and grid >= 10, got bins={bins}, grid={grid}")
    ref = reference.where(F.col("kll").isNotNull() & (F.col("role") != PROFILE_ROLE) & (F.col("n_numeric") > 0)).select(
        "role", "column", F.col("kll").alias("_ref_kll"), F.col("n_numeric").alias("n_reference")
    )
    cur = current.where(F.col("kll").isNotNull() & (F.col("role") != PROFILE_ROLE) & (F.col("n_numeric") > 0))
    joined = cur.join(ref, ["role", "column"])
    psi_ranks = ", ".join(repr(i / bins) for i in range(1, bins))
    grid_ranks = ", ".join(repr((i + 0.5) / grid) for i in range(grid))
    share = f"{epsilon!r}D"

    def cdf_at_edges(q: str) -> str:
        return f"concat(array(0D), transform(_edges, e -> size(filter({q}, v -> v <= e)) / {grid}D), array(1D))"

    def mass(c: str) -> str:
        return f"greatest({c}[i] - {c}[i - 1], {share})"

    out = (
        joined.withColumn("_qr", F.expr(f"kll_sketch_get_quantile_double(_ref_kll, array({grid_ranks}))"))
        .withColumn("_qc", F.expr(f"kll_sketch_get_quantile_double(kll, array({grid_ranks}))"))
        .withColumn("_edges", F.expr(f"array_distinct(kll_sketch_get_quantile_double(_ref_kll, array({psi_ranks})))"))
        .withColumn("_ref_cdf", F.expr(cdf_at_edges("_qr")))
        .withColumn("_cur_cdf", F.expr(cdf_at_edges("_qc")))
        .withColumn(
            "psi",
            F.expr(
                "aggregate(sequence(1, size(_edges) + 1), 0D, (acc, i) -> acc + "
                f"({mass('_cur_cdf')} - {mass('_ref_cdf')}) * ln({mass('_cur_cdf')} / {mass('_ref_cdf')}))"
            ),
        )
        .withColumn(
            "ks",
            F.expr(
                "aggregate(array_sort(concat(transform(_qr, v -> named_struct('x', v, 'w', 1)),"
                " transform(_qc, v -> named_struct('x', v, 'w', -1)))),"
                " named_struct('cum', 0, 'best', 0, 'prev', cast(null as double)),"
                " (acc, e) -> named_struct('cum', acc.cum + e.w,"
                "   'best', CASE WHEN acc.prev IS NULL OR e.x > acc.prev THEN greatest(acc.best, abs(acc.cum)) ELSE acc.best END,"
                "   'prev', e.x),"
                f" acc -> acc.best / {grid}D)"
            ),
        )
        .withColumn("_en", F.sqrt(F.col("n_numeric") * F.col("n_reference") / (F.col("n_numeric") + F.col("n_reference"))))
        .withColumn("_lambda", (F.col("_en") + 0.12 + 0.11 / F.col("_en")) * F.col("ks"))
        .withColumn(
            "ks_pvalue",
            F.expr(
                "CASE WHEN _lambda < 0.3D THEN 1D ELSE least(1D, greatest(0D, 2D * aggregate(sequence(1, 100), 0D,"
                " (acc, j) -> acc + power(-1D, j - 1) * exp(-2D * j * j * _lambda * _lambda)))) END"
            ),
        )
    )
    return out.select(
        "model", "version", "segment", "window_start", "window_end", "role", "column",
        F.col("n_numeric").alias("n_current"), "n_reference", "ks", "ks_pvalue", "psi",
    )
