"""The monitoring job end to end on a generated DuckDB warehouse and moto (registry, S3, CloudWatch), and
the handler's configuration and failure behaviour."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import duckdb
import pytest
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

import drift  # noqa: E402
import monitor_handler  # noqa: E402
import monitor_job  # noqa: E402
from warehouse_fixture import ENDPOINT, Arm, create_schema, fill  # noqa: E402
from warehouse_query import DuckDBQuery, WarehouseQueryError  # noqa: E402

TEST_GROUP = "trainserve-models"
TEST_BUCKET = "trainserve-artifacts"
START = datetime(2026, 3, 1, 12, 0, 0)
NOW = START + timedelta(hours=1)
UNIFORM_BASELINE = {
    "score": {"bin_edges": [i / 10 for i in range(11)], "fractions": [0.1] * 10},
    "features": {},
    "positive_rate": 0.5,
    "n": 1000,
}


@pytest.fixture(autouse=True)
def _clear_baseline_cache():
    monitor_job._baseline_cache.clear()
    yield
    monitor_job._baseline_cache.clear()


@pytest.fixture
def aws():
    with mock_aws():
        yield {s: boto3.client(s, region_name="us-east-1") for s in ("s3", "sagemaker", "cloudwatch")}


def _create_versions(sm, s3, baselines):
    """Register one model package per baseline (None: a package without baseline_uri)."""
    s3.create_bucket(Bucket=TEST_BUCKET)
    sm.create_model_package_group(ModelPackageGroupName=TEST_GROUP)
    arns = []
    for version, baseline in enumerate(baselines, start=1):
        meta = {"estimator": "logistic_regression"}
        if baseline is not None:
            key = f"models/v{version}/baseline.json"
            s3.put_object(Bucket=TEST_BUCKET, Key=key, Body=json.dumps(baseline).encode())
            meta["baseline_uri"] = f"s3://{TEST_BUCKET}/{key}"
        arn = sm.create_model_package(
            ModelPackageGroupName=TEST_GROUP,
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties=meta,
            InferenceSpecification={
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{TEST_BUCKET}/m{version}.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )["ModelPackageArn"]
        arns.append(arn)
    return arns


def _warehouse():
    con = duckdb.connect()
    create_schema(con)
    # v1: uniform scores (no drift); v2: scores shifted up by 0.3 (clear drift). Half an hour before the window
    # a batch that must not be counted; then 2,000 predictions inside the last hour.
    arms = [Arm("v1", 1, 0.75, 0.9), Arm("v2", 2, 0.25, 0.7, score_shift=0.3)]
    fill(con, arms, 500, start=START - timedelta(minutes=40), seconds=600, offset=0)
    fill(con, arms, 2000, start=START + timedelta(minutes=1), seconds=3000, offset=10_000, salt=17)
    return con


def test_job_publishes_per_variant_metrics_to_cloudwatch(aws):
    arns = _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, UNIFORM_BASELINE])
    assert arns[0].endswith(f"model-package/{TEST_GROUP}/1")  # the ARN the proxy logs
    con = _warehouse()
    result = monitor_job.run_monitor(
        DuckDBQuery(connection=con),
        aws["cloudwatch"],
        aws["sagemaker"],
        aws["s3"],
        endpoint_name=ENDPOINT,
        group=TEST_GROUP,
        window_minutes=60,
        now=NOW,
    )
    by_variant = {r["variant_name"]: r for r in result["variants"]}
    assert set(by_variant) == {"v1", "v2"}
    # ground truth straight from the tables
    truth = dict(
        con.execute(
            "SELECT variant_name, COUNT(*) FROM prediction_log WHERE event_time >= ? AND event_time < ? GROUP BY 1",
            [NOW - timedelta(hours=1), NOW],
        ).fetchall()
    )
    assert {v: r["request_count"] for v, r in by_variant.items()} == truth
    assert sum(truth.values()) == 2000
    v1, v2 = by_variant["v1"], by_variant["v2"]
    assert v1["model_version"] == 1 and v2["model_version"] == 2
    assert v1["score_psi"] < 0.05 < 0.2 < v2["score_psi"]
    scores = [
        s
        for (s,) in con.execute(
            "SELECT score FROM prediction_log WHERE variant_name='v2' AND event_time >= ?", [START]
        ).fetchall()
    ]
    assert v2["score_psi"] == pytest.approx(
        drift.psi(
            UNIFORM_BASELINE["score"]["fractions"],
            drift.bucket_counts(scores, UNIFORM_BASELINE["score"]["bin_edges"]),
        )
    )
    assert v1["online_accuracy"] == pytest.approx(0.9, abs=0.03) and v2["online_accuracy"] == pytest.approx(
        0.7, abs=0.05
    )
    assert 0.7 * 1500 < v1["labelled_count"] < 0.9 * 1500
    assert result["warnings"] == []
    assert result["metrics_published"] == 10 and result["put_metric_data_calls"] == 1

    cw = aws["cloudwatch"]
    listed = cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    assert {m["MetricName"] for m in listed} == {
        "RequestCount",
        "PositiveRate",
        "ScorePSI",
        "LabelledCount",
        "OnlineAccuracy",
    }
    dims = [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": "v2"},
        {"Name": "ModelVersion", "Value": "2"},
    ]
    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "psi",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "Trainserve/Predictions",
                        "MetricName": "ScorePSI",
                        "Dimensions": dims,
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            },
            {
                "Id": "req",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "Trainserve/Predictions",
                        "MetricName": "RequestCount",
                        "Dimensions": dims,
                    },
                    "Period": 60,
                    "Stat": "Sum",
                },
            },
        ],
        StartTime=NOW - timedelta(hours=2),
        EndTime=NOW + timedelta(hours=1),
    )["MetricDataResults"]
    got = {d["Id"]: d["Values"] for d in data}
    assert got["psi"] == [pytest.approx(v2["score_psi"])]
    assert got["req"] == [float(truth["v2"])]


def test_missing_baseline_is_a_warning_and_other_metrics_still_publish(aws):
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, None])
    result = monitor_job.run_monitor(
        DuckDBQuery(connection=_warehouse()),
        aws["cloudwatch"],
        aws["sagemaker"],
        aws["s3"],
        endpoint_name=ENDPOINT,
        group=TEST_GROUP,
        window_minutes=60,
        now=NOW.replace(tzinfo=UTC),
    )
    v2 = next(r for r in result["variants"] if r["variant_name"] == "v2")
    assert v2["score_psi"] is None and v2["request_count"] > 0
    assert (
        len(result["warnings"]) == 1
        and "model version 2" in result["warnings"][0]
        and "baseline_uri" in result["warnings"][0]
    )
    names = {
        (m["MetricName"], m["Dimensions"][1]["Value"])
        for m in aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    }
    assert ("ScorePSI", "v1") in names and ("ScorePSI", "v2") not in names and ("RequestCount", "v2") in names


def test_metrics_are_published_in_batches_of_at_most_20():
    calls = []

    class CW:
        def put_metric_data(self, Namespace, MetricData):
            calls.append(len(MetricData))

    records = [
        {
            "endpoint_name": "e",
            "variant_name": f"v{i}",
            "model_version": i,
            "request_count": 5,
            "positive_rate": 0.2,
            "score_psi": 0.1,
            "labelled_count": 3,
            "online_accuracy": 1.0,
        }
        for i in range(9)
    ]
    data = monitor_job.metric_data(records, NOW)
    assert len(data) == 45
    assert monitor_job.publish(CW(), "ns", data) == 3 and calls == [20, 20, 5]


class FailingQuery:
    dialect = "redshift"

    def query(self, sql, params):
        raise WarehouseQueryError("Redshift statement s-9 ended FAILED: permission denied")


def test_a_failed_query_fails_the_job_and_publishes_nothing(aws):
    with pytest.raises(WarehouseQueryError, match="FAILED"):
        monitor_job.run_monitor(
            FailingQuery(),
            aws["cloudwatch"],
            aws["sagemaker"],
            aws["s3"],
            endpoint_name=ENDPOINT,
            group=TEST_GROUP,
            window_minutes=60,
            now=NOW,
        )
    assert aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"] == []


HANDLER_ENV = {
    "ENDPOINT_NAME": ENDPOINT,
    "MODEL_PACKAGE_GROUP": TEST_GROUP,
    "WAREHOUSE_WORKGROUP": "trainserve-wg",
    "WAREHOUSE_DATABASE": "dev",
    "WAREHOUSE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:wh-AbCdEf",
    "WINDOW_MINUTES": "30",
    "QUERY_TIMEOUT_SECONDS": "0.3",
}


def test_handler_settings_name_the_bad_variable():
    s = monitor_handler.settings(HANDLER_ENV)
    assert s["window_minutes"] == 30 and s["workgroup"] == "trainserve-wg" and s["cluster"] is None
    assert s["namespace"] == "Trainserve/Predictions"
    with pytest.raises(monitor_handler.ConfigurationError, match="ENDPOINT_NAME"):
        monitor_handler.settings({**HANDLER_ENV, "ENDPOINT_NAME": ""})
    with pytest.raises(monitor_handler.ConfigurationError, match="exactly one of WAREHOUSE_WORKGROUP"):
        monitor_handler.settings({**HANDLER_ENV, "WAREHOUSE_CLUSTER": "c1"})
    with pytest.raises(monitor_handler.ConfigurationError, match="WINDOW_MINUTES='x'"):
        monitor_handler.settings({**HANDLER_ENV, "WINDOW_MINUTES": "x"})


def test_handler_invocation_fails_when_the_warehouse_query_never_finishes(aws, monkeypatch):
    # moto's redshift-data keeps every statement STARTED: the invocation must raise, not report zero traffic.
    for k, v in HANDLER_ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(WarehouseQueryError, match="timed out after 0.3 s in state STARTED"):
        monitor_handler.handler({"source": "aws.scheduler"}, None)
    assert aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"] == []


def test_an_unreadable_registry_costs_only_the_drift_metric(aws):
    # nothing registered: describe_model_package fails; the other metrics are still published
    result = monitor_job.run_monitor(
        DuckDBQuery(connection=_warehouse()),
        aws["cloudwatch"],
        aws["sagemaker"],
        aws["s3"],
        endpoint_name=ENDPOINT,
        group=TEST_GROUP,
        window_minutes=60,
        now=NOW,
    )
    assert len(result["warnings"]) == 2 and all("cannot read the registry" in w for w in result["warnings"])
    assert all(r["score_psi"] is None and r["request_count"] > 0 for r in result["variants"])
    names = {
        m["MetricName"] for m in aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    }
    assert names == {"RequestCount", "PositiveRate", "LabelledCount", "OnlineAccuracy"}
