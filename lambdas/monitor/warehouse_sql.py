"""The SQL of the A/B report and the monitoring job, portable between Redshift and DuckDB.

All queries read the de-duplicated views of the agreed schema (``lambdas/warehouse_setup/schema.sql``):
``prediction_log_dedup`` (one row per request_id) and ``prediction_feedback_dedup`` (latest outcome per
request_id), joined by ``request_id``. Parameters are ``:name`` (see ``warehouse_query``); timestamps are
passed as values and cast in SQL. Rates are computed in Python from integer sums, because Redshift's AVG of
an INTEGER column is an INTEGER.

The only dialect difference is the latency percentiles (``DIALECTS``): both engines accept
``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY x)``, but DuckDB's ``quantile_cont(x, [q1, q2, q3])`` sorts once
for all three and is about 3x faster at 10^7 rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from drift import bucket_case_sql

LOG_VIEW = "prediction_log_dedup"
FEEDBACK_VIEW = "prediction_feedback_dedup"
PERCENTILES = ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99"))
TIME_GRAINS = ("minute", "hour", "day")
HISTOGRAM_BINS = 20


def _redshift_percentiles(column: str) -> tuple[str, str]:
    inner = ", ".join(f"PERCENTILE_CONT({q}) WITHIN GROUP (ORDER BY {column}) AS {a}" for q, a in PERCENTILES)
    outer = ", ".join(a for _, a in PERCENTILES)
    return inner, outer


def _duckdb_percentiles(column: str) -> tuple[str, str]:
    qs = ", ".join(str(q) for q, _ in PERCENTILES)
    inner = f"quantile_cont({column}, [{qs}]) AS latency_q"
    outer = ", ".join(f"latency_q[{i + 1}] AS {a}" for i, (_, a) in enumerate(PERCENTILES))
    return inner, outer


# dialect name -> percentiles(column) -> (aggregate expression(s) in the GROUP BY query, outer select list)
DIALECTS = {"redshift": _redshift_percentiles, "duckdb": _duckdb_percentiles}


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")


def _window(alias: str) -> str:
    return (
        f"{alias}.endpoint_name = :endpoint_name"
        f" AND {alias}.event_time >= CAST(:since AS TIMESTAMP) AND {alias}.event_time < CAST(:until AS TIMESTAMP)"
    )


# ---------------------------------------------------------------------------------------------- report


def variant_first_seen_sql() -> str:
    """First and last logged event per variant (raw table: the minimum needs no de-duplication)."""
    return (
        "SELECT variant_name, MIN(event_time) AS first_seen, MAX(event_time) AS last_seen"
        " FROM prediction_log WHERE endpoint_name = :endpoint_name GROUP BY variant_name"
    )


def _inner_percentiles(dialect: str, column: str) -> tuple[str, str]:
    _check_dialect(dialect)
    return DIALECTS[dialect](column)


def report_sql(dialect: str, grain: str, bins: int = HISTOGRAM_BINS) -> str:
    """The whole report in one statement, so the de-duplicating views are computed once (they dominate).

    ``j`` = the window's de-duplicated predictions LEFT JOIN their de-duplicated outcomes. Two kinds of rows:

    - ``kind = 'bucket'``: per time bucket (``DATE_TRUNC(grain)``), variant and score bin ``hb`` (equal-width
      bins of [0, 1], ``-1`` = no score): requests, labelled, correct, positives, min/max model version;
      summing over ``hb`` gives the traffic per bucket, over buckets the score histogram (grouping by the
      bin is cheaper than one conditional sum per bin);
    - ``kind = 'variant'``: per variant: requests and the latency percentiles ``latency_p50/p95/p99``;
    - ``kind = 'units'``: per variant, the randomisation units of the sample-ratio check (sticky assignment
      assigns users, not requests): ``requests`` holds the distinct ``user_id`` count and ``labelled`` the
      requests without a ``user_id`` (each its own unit).
    """
    if grain not in TIME_GRAINS:
        raise ValueError(f"time grain {grain!r} not in {TIME_GRAINS}")
    if not isinstance(bins, int) or not 1 <= bins <= 100:
        raise ValueError(f"bins must be an integer in 1..100, got {bins!r}")
    inner_pct, outer_pct = _inner_percentiles(dialect, "latency_ms")
    hb = (
        f"CASE WHEN p.score IS NULL THEN -1 WHEN p.score >= 1 THEN {bins - 1} WHEN p.score < 0 THEN 0"
        f" ELSE CAST(FLOOR(p.score * {bins}) AS INTEGER) END"
    )
    null_pct = ", ".join(f"CAST(NULL AS DOUBLE PRECISION) AS {a}" for _, a in PERCENTILES)
    return (
        "WITH j AS ("
        f"SELECT p.variant_name AS variant_name, p.model_version AS model_version, p.label AS label,"
        f" p.latency_ms AS latency_ms, p.user_id AS user_id, DATE_TRUNC('{grain}', p.event_time) AS bucket,"
        f" {hb} AS hb,"
        " f.outcome AS outcome"
        f" FROM {LOG_VIEW} p LEFT JOIN {FEEDBACK_VIEW} f ON f.request_id = p.request_id"
        f" WHERE {_window('p')})"
        " SELECT 'bucket' AS kind, bucket, variant_name, hb, COUNT(*) AS requests, COUNT(outcome) AS labelled,"
        " SUM(CASE WHEN outcome IS NOT NULL AND label = outcome THEN 1 ELSE 0 END) AS correct,"
        " SUM(CASE WHEN label = 1 THEN 1 ELSE 0 END) AS positives,"
        f" MIN(model_version) AS min_version, MAX(model_version) AS max_version, {null_pct}"
        " FROM j GROUP BY bucket, variant_name, hb"
        " UNION ALL"
        " SELECT 'variant' AS kind, CAST(NULL AS TIMESTAMP) AS bucket, variant_name, CAST(NULL AS INTEGER) AS hb,"
        " requests,"
        " CAST(NULL AS BIGINT) AS labelled, CAST(NULL AS BIGINT) AS correct, CAST(NULL AS BIGINT) AS positives,"
        f" CAST(NULL AS INTEGER) AS min_version, CAST(NULL AS INTEGER) AS max_version, {outer_pct}"
        f" FROM (SELECT variant_name, COUNT(*) AS requests, {inner_pct} FROM j GROUP BY variant_name) s"
        " UNION ALL"
        " SELECT 'units' AS kind, CAST(NULL AS TIMESTAMP) AS bucket, variant_name, CAST(NULL AS INTEGER) AS hb,"
        " COUNT(DISTINCT user_id) AS requests, SUM(CASE WHEN user_id IS NULL THEN 1 ELSE 0 END) AS labelled,"
        " CAST(NULL AS BIGINT) AS correct, CAST(NULL AS BIGINT) AS positives,"
        f" CAST(NULL AS INTEGER) AS min_version, CAST(NULL AS INTEGER) AS max_version, {null_pct}"
        " FROM j GROUP BY variant_name"
    )


# --------------------------------------------------------------------------------------------- monitor


def monitor_summary_sql() -> str:
    """Per variant and model version in the window: requests, positives, the model package ARN."""
    return (
        "SELECT p.variant_name AS variant_name, p.model_version AS model_version,"
        " MAX(p.model_package_arn) AS model_package_arn, COUNT(*) AS requests,"
        " SUM(CASE WHEN p.label = 1 THEN 1 ELSE 0 END) AS positives"
        f" FROM {LOG_VIEW} p WHERE {_window('p')} GROUP BY p.variant_name, p.model_version"
    )


def monitor_feedback_sql() -> str:
    """Outcomes received in the window, joined to their predictions (any time), per variant and version."""
    return (
        "SELECT p.variant_name AS variant_name, p.model_version AS model_version, COUNT(*) AS labelled,"
        " SUM(CASE WHEN p.label = f.outcome THEN 1 ELSE 0 END) AS correct"
        f" FROM {FEEDBACK_VIEW} f JOIN {LOG_VIEW} p ON p.request_id = f.request_id"
        " WHERE p.endpoint_name = :endpoint_name"
        " AND f.event_time >= CAST(:since AS TIMESTAMP) AND f.event_time < CAST(:until AS TIMESTAMP)"
        " GROUP BY p.variant_name, p.model_version"
    )


def monitor_psi_buckets_sql(edges_by_version: dict[int, Sequence[float]]) -> str:
    """Score counts per variant, version and baseline bin; each version is binned with its own baseline edges."""
    if not edges_by_version:
        raise ValueError("no baseline bin edges given")
    whens = []
    for version, edges in sorted(edges_by_version.items()):
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"model version {version!r} is not an integer")
        whens.append(f"WHEN p.model_version = {version} THEN {bucket_case_sql('p.score', edges)}")
    bucket = "CASE " + " ".join(whens) + " ELSE -1 END"
    versions = ", ".join(str(v) for v in sorted(edges_by_version))
    return (
        f"SELECT p.variant_name AS variant_name, p.model_version AS model_version, {bucket} AS bucket,"
        f" COUNT(*) AS n FROM {LOG_VIEW} p WHERE {_window('p')} AND p.score IS NOT NULL"
        f" AND p.model_version IN ({versions})"
        f" GROUP BY p.variant_name, p.model_version, {bucket}"
    )


def monitor_feature_sample_sql(versions: Sequence[int], rows_per_variant: int) -> str:
    """The ``features`` text of at most ``rows_per_variant`` predictions per variant and model version in the
    window (only ``versions``): a sample drawn by ``MD5(request_id)`` order, which does not depend on the
    features and gives the same rows on every run over the same window. The feature PSI parses and counts them
    in Python (feature names are the models' own, so no JSON path of theirs is written into SQL). ``MD5`` and
    ``ROW_NUMBER`` read the same on Redshift and DuckDB."""
    if not versions:
        raise ValueError("no model versions given")
    for version in versions:
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"model version {version!r} is not an integer")
    if isinstance(rows_per_variant, bool) or not isinstance(rows_per_variant, int) or rows_per_variant < 1:
        raise ValueError(f"rows_per_variant must be a positive integer, got {rows_per_variant!r}")
    listed = ", ".join(str(v) for v in sorted(set(versions)))
    return (
        "SELECT variant_name, model_version, features FROM ("
        "SELECT p.variant_name AS variant_name, p.model_version AS model_version, p.features AS features,"
        " ROW_NUMBER() OVER (PARTITION BY p.variant_name, p.model_version ORDER BY MD5(p.request_id)) AS rn"
        f" FROM {LOG_VIEW} p WHERE {_window('p')} AND p.features IS NOT NULL AND p.variant_name IS NOT NULL"
        f" AND p.model_version IN ({listed})"
        f") s WHERE rn <= {rows_per_variant}"
    )


def params_in_window_sql() -> str:
    """Predictions per variant, logged decision threshold and proxy parameters in the window, with the time
    of the last one of each. ``params`` is the proxy's parameters as JSON text (``ProxyParams.as_json``):
    grouped by that text and read in Python (``trainserve.report.params_mix``), so the statement needs no JSON function and
    is the same on Redshift and DuckDB (their JSON functions differ); the distinct texts are few (one per
    ``params set``). It reads the raw table with ``COUNT(DISTINCT request_id)`` (the proxy's request ids are
    unique, and a duplicated delivery repeats its record): the counts of ``prediction_log_dedup`` without
    computing the de-duplicating view a second time on Redshift."""
    return (
        "SELECT variant_name, threshold, params, COUNT(DISTINCT request_id) AS predictions,"
        " MAX(event_time) AS last_seen FROM prediction_log"
        " WHERE endpoint_name = :endpoint_name"
        " AND event_time >= CAST(:since AS TIMESTAMP) AND event_time < CAST(:until AS TIMESTAMP)"
        " GROUP BY variant_name, threshold, params"
    )
