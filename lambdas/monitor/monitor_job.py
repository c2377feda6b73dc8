"""The prediction-monitoring job: per variant and model version, what the last window of traffic looked like.

Warehouse-agnostic: it gets a ``WarehouseQuery`` (Redshift Data API on AWS, DuckDB locally) and boto3
clients for CloudWatch, SageMaker (the registry, for each version's ``baseline_uri``) and S3 (the baseline).

Metrics, per ``EndpointName`` / ``VariantName`` / ``ModelVersion``, namespace ``Trainserve/Predictions``. Every
one describes the run's window (the last ``window_minutes``, 60 by default), re-read whole at each run, so
late rows count and a second run over the same window publishes the same values again. The counts are
therefore gauges ("predictions in the last N minutes"), not increments: read them with Maximum or Average;
their Sum over several runs counts the same predictions several times.

- ``RequestCount``: logged predictions in the window;
- ``PositiveRate``: share of those with label 1;
- ``ScorePSI``: population stability index of their scores against that version's training baseline
  (``drift.py``); published when the version's baseline could be read and the window holds at least
  ``min_predictions`` scored predictions of the variant (below that, PSI measures the sample's noise: the
  record says ``n < min`` in ``psi_note`` and no datapoint is published, which the alarm treats as not
  breaching);
- ``FeaturePSI``: the largest per-feature PSI of the variant's inputs against the baseline's feature bins
  (the feature is named in the record's ``feature_psi_feature``), computed from a sample of at most
  ``FEATURE_SAMPLE_ROWS`` of the window's predictions per variant; same minimum count;
- ``LabelledCount`` / ``OnlineAccuracy``: outcomes received in the window (feedback ``event_time``) joined to
  their predictions, whenever those were made; published when there is at least one.

Predictions logged without a variant or a model version (the proxy could not tell which variant answered)
belong to no series: they are counted in the result's ``unattributed`` and a warning, never published
with a made-up dimension value.

A failed or timed-out query raises (``WarehouseQueryError``): a broken warehouse is an error, never "zero
traffic". A missing baseline is not fatal: the job still publishes the other metrics and lists a warning.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import drift
import warehouse_sql

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "Trainserve/Predictions"
MAX_METRICS_PER_CALL = 20
# Fewest predictions of a variant in the window for its PSI (score and features). Unshifted traffic of n
# predictions has a PSI of about 9/n over 10 bins, above the default 0.2 threshold with chance 2% at n = 100
# and 1e-5 at n = 200 (chi-square, 9 degrees of freedom). Config: drift_min_predictions.
DEFAULT_MIN_PREDICTIONS = 200
# Predictions per variant and model version whose features are read for FeaturePSI: bounds the rows the job
# fetches and parses (a PSI over 10 bins from 1,000 values has a noise of about 0.01).
FEATURE_SAMPLE_ROWS = 1000
_baseline_cache: dict[str, dict] = {}


BASELINE_UNREADABLE = "baseline unreadable: see the warnings"  # a record's psi_note when its baseline failed


class BaselineUnavailable(RuntimeError):
    """A model version's training baseline cannot be found or read."""


def _utc_naive(ts: datetime) -> datetime:
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def package_arn_for(sagemaker: Any, group: str, version: int) -> str:
    """The model package ARN of ``version`` in ``group`` (the group ARN with ``package`` and ``/version``)."""
    group_arn = sagemaker.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    return group_arn.replace(":model-package-group/", ":model-package/") + f"/{version}"


def load_baseline(sagemaker: Any, s3: Any, package_arn: str, *, use_cache: bool = True) -> dict:
    """The ``baseline.json`` of a model package (``CustomerMetadataProperties.baseline_uri``), validated, cached."""
    if use_cache and package_arn in _baseline_cache:
        return _baseline_cache[package_arn]
    desc = sagemaker.describe_model_package(ModelPackageName=package_arn)
    uri = (desc.get("CustomerMetadataProperties") or {}).get("baseline_uri")
    if not uri:
        raise BaselineUnavailable(
            f"model package {package_arn} has no CustomerMetadataProperties.baseline_uri"
        )
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise BaselineUnavailable(
            f"model package {package_arn} has baseline_uri {uri!r}, not an s3://bucket/key URI"
        )
    try:
        body = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
        baseline = json.loads(body)
    except Exception as exc:  # noqa: BLE001 - S3 and JSON errors both mean "no usable baseline"
        raise BaselineUnavailable(f"cannot read the baseline {uri} of {package_arn}: {exc}") from exc
    try:
        drift.score_bins(baseline)
    except drift.BaselineError as exc:
        raise BaselineUnavailable(f"baseline {uri} of {package_arn}: {exc}") from exc
    _baseline_cache[package_arn] = baseline
    return baseline


def _attributed(row: dict) -> bool:
    """Whether a row names its variant and model version (the metrics' dimensions)."""
    return bool(row.get("variant_name")) and row.get("model_version") is not None


def _new_record(endpoint_name: str, key: tuple[str, int]) -> dict:
    return {
        "endpoint_name": endpoint_name,
        "variant_name": key[0],
        "model_version": key[1],
        "model_package_arn": None,
        "request_count": 0,
        "positive_rate": None,
        "score_psi": None,
        "feature_psi": None,
        "feature_psi_feature": None,
        "psi_note": None,
        "labelled_count": 0,
        "online_accuracy": None,
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def feature_psi(
    bins: dict[str, tuple[list[float], list[float]]], rows: list[Any], min_values: int
) -> tuple[float, str] | None:
    """The largest per-feature PSI of ``rows`` (feature objects: name -> value) against ``bins``, and its
    feature; a feature with fewer than ``min_values`` numeric values is left out; None if every one is."""
    values: dict[str, list[float]] = {name: [] for name in bins}
    for row in rows:
        if not isinstance(row, dict):
            continue
        for name, column in values.items():
            x = row.get(name)
            if _numeric(x):
                column.append(float(x))
    best: tuple[float, str] | None = None
    for name, column in values.items():
        if len(column) < min_values:
            continue
        edges, fractions = bins[name]
        value = drift.psi(fractions, drift.bucket_counts(column, edges))
        if best is None or value > best[0]:
            best = (value, name)
    return best


def collect(
    query: Any,
    sagemaker: Any,
    s3: Any,
    *,
    endpoint_name: str,
    group: str,
    since: datetime,
    until: datetime,
    min_predictions: int = DEFAULT_MIN_PREDICTIONS,
) -> tuple[list[dict], list[str], dict[str, int]]:
    """Query the window and compute one record per (variant, model version), the warnings, and the counts
    of unattributed rows (``{"requests", "labelled"}``: no variant or model version)."""
    params = {"endpoint_name": endpoint_name, "since": _utc_naive(since), "until": _utc_naive(until)}
    summary = query.query(warehouse_sql.monitor_summary_sql(), params)
    feedback = query.query(warehouse_sql.monitor_feedback_sql(), params)
    records: dict[tuple[str, int], dict] = {}
    unattributed = {"requests": 0, "labelled": 0}
    for row in summary:
        requests = int(row["requests"] or 0)
        if not _attributed(row):
            unattributed["requests"] += requests
            continue
        key = (str(row["variant_name"]), int(row["model_version"]))
        rec = records.setdefault(key, _new_record(endpoint_name, key))
        rec["model_package_arn"] = row.get("model_package_arn")
        rec["request_count"] = requests
        rec["positive_rate"] = (int(row["positives"] or 0) / requests) if requests else None
    for row in feedback:
        labelled = int(row["labelled"] or 0)
        if not _attributed(row):
            unattributed["labelled"] += labelled
            continue
        key = (str(row["variant_name"]), int(row["model_version"]))
        rec = records.setdefault(key, _new_record(endpoint_name, key))
        rec["labelled_count"] = labelled
        rec["online_accuracy"] = (int(row["correct"] or 0) / labelled) if labelled else None

    warnings: list[str] = []
    if unattributed["requests"] or unattributed["labelled"]:
        warnings.append(
            f"{unattributed['requests']} prediction(s) and {unattributed['labelled']} outcome(s) in the window "
            "have no variant or model version: left out of the per-variant metrics"
        )
    # PSI only where the window holds enough predictions: fewer measure the sample's noise, not drift
    for rec in records.values():
        if rec["request_count"] < min_predictions:
            rec["psi_note"] = f"n < min: {rec['request_count']} < {min_predictions} predictions"
    eligible = {key: rec for key, rec in records.items() if rec["psi_note"] is None}
    baselines: dict[int, dict] = {}
    failed: set[int] = set()
    for (_, version), rec in eligible.items():
        if version in baselines or version in failed:
            continue
        try:
            arn = rec["model_package_arn"] or package_arn_for(sagemaker, group, version)
            baselines[version] = load_baseline(sagemaker, s3, arn)
        except BaselineUnavailable as exc:
            failed.add(version)
            warnings.append(f"no ScorePSI or FeaturePSI for model version {version}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a registry error costs the drift metrics, not the others
            failed.add(version)
            warnings.append(
                f"no ScorePSI or FeaturePSI for model version {version}: cannot read the registry: {exc}"
            )
    for (_, version), rec in eligible.items():
        if version in failed:
            rec["psi_note"] = BASELINE_UNREADABLE
    if not baselines:
        return _sorted(records), warnings, unattributed

    edges = {v: drift.score_bins(b)[0] for v, b in baselines.items()}
    counts: dict[tuple[str, int], list[int]] = {}
    for row in query.query(warehouse_sql.monitor_psi_buckets_sql(edges), params):
        if not _attributed(row):
            continue
        version, bucket = int(row["model_version"]), int(row["bucket"])
        if version not in edges or not 0 <= bucket < len(edges[version]) - 1:
            continue
        hist = counts.setdefault((str(row["variant_name"]), version), [0] * (len(edges[version]) - 1))
        hist[bucket] += int(row["n"])
    for key, rec in eligible.items():
        hist = counts.get(key)
        if key[1] not in baselines:
            continue
        scored = sum(hist) if hist else 0
        if scored < min_predictions:
            rec["psi_note"] = f"n < min: {scored} < {min_predictions} scored predictions"
            continue
        rec["score_psi"] = drift.score_psi(baselines[key[1]], hist)

    feature_bins: dict[int, dict[str, tuple[list[float], list[float]]]] = {}
    for version, baseline in sorted(baselines.items()):
        try:
            feature_bins[version] = drift.feature_bins(baseline)
        except drift.BaselineError as exc:
            warnings.append(f"no FeaturePSI for model version {version}: {exc}")
    wanted = {key for key, rec in eligible.items() if key[1] in feature_bins and rec["psi_note"] is None}
    if wanted:
        sample_sql = warehouse_sql.monitor_feature_sample_sql(
            sorted({v for _, v in wanted}), FEATURE_SAMPLE_ROWS
        )
        sampled: dict[tuple[str, int], list[Any]] = {key: [] for key in wanted}
        for row in query.query(sample_sql, params):
            if not _attributed(row):
                continue
            key = (str(row["variant_name"]), int(row["model_version"]))
            if key in sampled:
                try:
                    sampled[key].append(json.loads(row["features"]))
                except (TypeError, ValueError):
                    sampled[key].append(None)
        for key, rows in sorted(sampled.items()):
            best = feature_psi(feature_bins[key[1]], rows, min(min_predictions, FEATURE_SAMPLE_ROWS))
            if best is None:
                warnings.append(
                    f"no FeaturePSI for {key[0]} (model version {key[1]}): none of the baseline's features has "
                    f"{min(min_predictions, FEATURE_SAMPLE_ROWS)} numeric values in the {len(rows)} sampled "
                    "predictions"
                )
                continue
            records[key]["feature_psi"], records[key]["feature_psi_feature"] = best
    return _sorted(records), warnings, unattributed


def _sorted(records: dict[tuple[str, int], dict]) -> list[dict]:
    return [records[key] for key in sorted(records)]


def metric_data(records: list[dict], timestamp: datetime) -> list[dict]:
    """CloudWatch ``MetricData`` entries for the records. A record without a variant or a model version has
    no series of its own and publishes nothing (``collect`` counts such rows as unattributed)."""
    data = []
    for rec in records:
        if not _attributed(rec):
            continue
        dims = [
            {"Name": "EndpointName", "Value": rec["endpoint_name"]},
            {"Name": "VariantName", "Value": str(rec["variant_name"])},
            {"Name": "ModelVersion", "Value": str(int(rec["model_version"]))},
        ]
        values = [
            ("RequestCount", rec["request_count"], "Count"),
            ("PositiveRate", rec["positive_rate"], "None"),
            ("ScorePSI", rec["score_psi"], "None"),
            ("FeaturePSI", rec.get("feature_psi"), "None"),
            ("LabelledCount", rec["labelled_count"], "Count"),
            ("OnlineAccuracy", rec["online_accuracy"], "None"),
        ]
        for name, value, unit in values:
            if value is None or (name == "LabelledCount" and not value):
                continue
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": dims,
                    "Timestamp": timestamp,
                    "Value": float(value),
                    "Unit": unit,
                }
            )
    return data


def publish(cloudwatch: Any, namespace: str, data: list[dict]) -> int:
    """``put_metric_data`` in calls of at most ``MAX_METRICS_PER_CALL``; returns the number of calls."""
    calls = 0
    for i in range(0, len(data), MAX_METRICS_PER_CALL):
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[i : i + MAX_METRICS_PER_CALL])
        calls += 1
    return calls


def run_monitor(
    query: Any,
    cloudwatch: Any,
    sagemaker: Any,
    s3: Any,
    *,
    endpoint_name: str,
    group: str,
    window_minutes: int,
    namespace: str = DEFAULT_NAMESPACE,
    now: datetime | None = None,
    min_predictions: int = DEFAULT_MIN_PREDICTIONS,
) -> dict:
    """Compute the window's metrics, publish them to CloudWatch, and return them (JSON-able)."""
    if not isinstance(window_minutes, int) or isinstance(window_minutes, bool) or window_minutes < 1:
        raise ValueError(f"window_minutes must be a positive integer, got {window_minutes!r}")
    if not isinstance(min_predictions, int) or isinstance(min_predictions, bool) or min_predictions < 1:
        raise ValueError(f"min_predictions must be a positive integer, got {min_predictions!r}")
    if not endpoint_name:
        raise ValueError("endpoint_name is required")
    until = _utc_naive(now or datetime.now(UTC))
    since = until - timedelta(minutes=window_minutes)
    records, warnings, unattributed = collect(
        query,
        sagemaker,
        s3,
        endpoint_name=endpoint_name,
        group=group,
        since=since,
        until=until,
        min_predictions=min_predictions,
    )
    data = metric_data(records, until.replace(tzinfo=UTC))
    calls = publish(cloudwatch, namespace, data)
    for w in warnings:
        log.warning(w)
    return {
        "endpoint_name": endpoint_name,
        "namespace": namespace,
        "window_start": since.isoformat() + "Z",
        "window_end": until.isoformat() + "Z",
        "window_minutes": window_minutes,
        "min_predictions": min_predictions,
        "variants": records,
        "unattributed": unattributed,
        "metrics_published": len(data),
        "put_metric_data_calls": calls,
        "warnings": warnings,
        # model versions with enough predictions whose drift could not be measured (their baseline could not
        # be read): the scheduled Lambda fails after publishing everything else (monitor_handler)
        "drift_unavailable": sorted(
            {int(r["model_version"]) for r in records if r.get("psi_note") == BASELINE_UNREADABLE}
        ),
    }
