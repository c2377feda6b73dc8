"""The prediction-monitoring job: per variant and model version, what the last window of traffic looked like.

Warehouse-agnostic: it gets a ``WarehouseQuery`` (Redshift Data API on AWS, DuckDB locally) and boto3
clients for CloudWatch, SageMaker (the registry, for each version's ``baseline_uri``) and S3 (the baseline).

Metrics, per ``EndpointName`` / ``VariantName`` / ``ModelVersion``, namespace ``Trainserve/Predictions``:

- ``RequestCount``: logged predictions in the window;
- ``PositiveRate``: share of those with label 1;
- ``ScorePSI``: population stability index of their scores against that version's training baseline
  (``drift.py``); published when the version's baseline could be read and the window has scores;
- ``LabelledCount`` / ``OnlineAccuracy``: outcomes received in the window (feedback ``event_time``) joined to
  their predictions, whenever those were made; published when there is at least one.

A failed or timed-out query raises (``WarehouseQueryError``): a broken warehouse is an error, never "zero
traffic". A missing baseline is not fatal: the job still publishes the other metrics and lists a warning.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import drift
import warehouse_sql

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "Trainserve/Predictions"
MAX_METRICS_PER_CALL = 20
_baseline_cache: dict[str, dict] = {}


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


def collect(
    query: Any,
    sagemaker: Any,
    s3: Any,
    *,
    endpoint_name: str,
    group: str,
    since: datetime,
    until: datetime,
) -> tuple[list[dict], list[str]]:
    """Query the window and compute one record per (variant, model version), plus warnings."""
    params = {"endpoint_name": endpoint_name, "since": _utc_naive(since), "until": _utc_naive(until)}
    summary = query.query(warehouse_sql.monitor_summary_sql(), params)
    feedback = query.query(warehouse_sql.monitor_feedback_sql(), params)
    records: dict[tuple[str, int | None], dict] = {}
    for row in summary:
        key = (row["variant_name"], None if row["model_version"] is None else int(row["model_version"]))
        requests = int(row["requests"] or 0)
        records[key] = {
            "endpoint_name": endpoint_name,
            "variant_name": key[0],
            "model_version": key[1],
            "model_package_arn": row.get("model_package_arn"),
            "request_count": requests,
            "positive_rate": (int(row["positives"] or 0) / requests) if requests else None,
            "score_psi": None,
            "labelled_count": 0,
            "online_accuracy": None,
        }
    for row in feedback:
        key = (row["variant_name"], None if row["model_version"] is None else int(row["model_version"]))
        rec = records.setdefault(
            key,
            {
                "endpoint_name": endpoint_name,
                "variant_name": key[0],
                "model_version": key[1],
                "model_package_arn": None,
                "request_count": 0,
                "positive_rate": None,
                "score_psi": None,
                "labelled_count": 0,
                "online_accuracy": None,
            },
        )
        labelled = int(row["labelled"] or 0)
        rec["labelled_count"] = labelled
        rec["online_accuracy"] = (int(row["correct"] or 0) / labelled) if labelled else None

    warnings: list[str] = []
    baselines: dict[int, dict] = {}
    for (_, version), rec in records.items():
        if version is None or version in baselines or rec["request_count"] == 0:
            continue
        try:
            arn = rec["model_package_arn"] or package_arn_for(sagemaker, group, version)
            baselines[version] = load_baseline(sagemaker, s3, arn)
        except BaselineUnavailable as exc:
            warnings.append(f"no ScorePSI for model version {version}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a registry error costs the drift metric, not the others
            warnings.append(f"no ScorePSI for model version {version}: cannot read the registry: {exc}")
    if baselines:
        edges = {v: drift.score_bins(b)[0] for v, b in baselines.items()}
        counts: dict[tuple[str, int], list[int]] = {}
        for row in query.query(warehouse_sql.monitor_psi_buckets_sql(edges), params):
            version, bucket = int(row["model_version"]), int(row["bucket"])
            if version not in edges or not 0 <= bucket < len(edges[version]) - 1:
                continue
            hist = counts.setdefault((row["variant_name"], version), [0] * (len(edges[version]) - 1))
            hist[bucket] += int(row["n"])
        for (variant, version), hist in counts.items():
            if sum(hist) and (variant, version) in records:
                records[(variant, version)]["score_psi"] = drift.score_psi(baselines[version], hist)
    out = sorted(records.values(), key=lambda r: (r["variant_name"] or "", r["model_version"] or 0))
    return out, warnings


def metric_data(records: list[dict], timestamp: datetime) -> list[dict]:
    """CloudWatch ``MetricData`` entries for the records."""
    data = []
    for rec in records:
        dims = [
            {"Name": "EndpointName", "Value": rec["endpoint_name"]},
            {"Name": "VariantName", "Value": str(rec["variant_name"])},
            {"Name": "ModelVersion", "Value": str(rec["model_version"])},
        ]
        values = [
            ("RequestCount", rec["request_count"], "Count"),
            ("PositiveRate", rec["positive_rate"], "None"),
            ("ScorePSI", rec["score_psi"], "None"),
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
) -> dict:
    """Compute the window's metrics, publish them to CloudWatch, and return them (JSON-able)."""
    if not isinstance(window_minutes, int) or isinstance(window_minutes, bool) or window_minutes < 1:
        raise ValueError(f"window_minutes must be a positive integer, got {window_minutes!r}")
    if not endpoint_name:
        raise ValueError("endpoint_name is required")
    until = _utc_naive(now or datetime.now(UTC))
    since = until - timedelta(minutes=window_minutes)
    records, warnings = collect(
        query, sagemaker, s3, endpoint_name=endpoint_name, group=group, since=since, until=until
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
        "variants": records,
        "metrics_published": len(data),
        "put_metric_data_calls": calls,
        "warnings": warnings,
    }
