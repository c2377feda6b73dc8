"""The monitoring job end to end on a generated DuckDB warehouse and moto (registry, S3, CloudWatch), and
the handler's configuration and failure behaviour: score and feature PSI against the baseline, no PSI below
the minimum count, window counts that repeated runs do not inflate, and no "None" dimensions."""

from __future__ import annotations

import hashlib
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
import warehouse_sql  # noqa: E402
from warehouse_fixture import ENDPOINT, Arm, create_schema, fill  # noqa: E402
from warehouse_query import DuckDBQuery, WarehouseQueryError  # noqa: E402

TEST_GROUP = "trainserve-models"
TEST_BUCKET = "trainserve-artifacts"
START = datetime(2026, 3, 1, 12, 0, 0)
NOW = START + timedelta(hours=1)
DECILES = {"bin_edges": [i / 10 for i in range(11)], "fractions": [0.1] * 10}
FEATURES = ("mean_area", "mean_radius")
# uniform scores and features on [0, 1): the generated traffic's own distribution
UNIFORM_BASELINE = {
    "score": DECILES,
    "features": {name: DECILES for name in FEATURES},
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


def set_features(con, scale: dict[str, float] | None = None) -> None:
    """Give every logged prediction the features ``mean_area`` and ``mean_radius`` as the proxy logs them (a
    JSON object as text): uniform on [0, 1) from the request id, times ``scale[variant]`` (default 1)."""
    factor = "1.0"
    if scale:
        whens = " ".join(f"WHEN '{v}' THEN {k!r}" for v, k in scale.items())
        factor = f"(CASE variant_name {whens} ELSE 1.0 END)"
    parts = []
    for salt, name in zip((31, 37), FEATURES, strict=True):
        value = f"((hash(request_id, {salt}) % 1000000) / 1000000.0) * {factor}"
        parts.append(f"'\"{name}\": ' || CAST({value} AS VARCHAR)")
    con.execute("UPDATE prediction_log SET features = '{' || " + " || ', ' || ".join(parts) + " || '}'")


def _warehouse(feature_scale: dict[str, float] | None = None, score_shift: float = 0.3):
    con = duckdb.connect()
    create_schema(con)
    # v1: uniform scores (no drift); v2: scores shifted up by 0.3 (clear drift). Half an hour before the window
    # a batch that must not be counted; then 2,000 predictions inside the last hour.
    arms = [Arm("v1", 1, 0.75, 0.9), Arm("v2", 2, 0.25, 0.7, score_shift=score_shift)]
    fill(con, arms, 500, start=START - timedelta(minutes=40), seconds=600, offset=0)
    fill(con, arms, 2000, start=START + timedelta(minutes=1), seconds=3000, offset=10_000, salt=17)
    set_features(con, feature_scale)
    return con


def _run(aws, con, **kw):
    return monitor_job.run_monitor(
        DuckDBQuery(connection=con),
        aws["cloudwatch"],
        aws["sagemaker"],
        aws["s3"],
        endpoint_name=ENDPOINT,
        group=TEST_GROUP,
        window_minutes=kw.pop("window_minutes", 60),
        now=kw.pop("now", NOW),
        **kw,
    )


def _dims(variant: str, version: int) -> list[dict]:
    return [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": variant},
        {"Name": "ModelVersion", "Value": str(version)},
    ]


def _stats(cw, metric: str, variant: str, version: int) -> list[dict]:
    return cw.get_metric_statistics(
        Namespace="Trainserve/Predictions",
        MetricName=metric,
        Dimensions=_dims(variant, version),
        StartTime=NOW - timedelta(hours=2),
        EndTime=NOW + timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum", "Minimum", "SampleCount", "Sum"],
    )["Datapoints"]


def test_job_publishes_per_variant_metrics_to_cloudwatch(aws):
    arns = _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, UNIFORM_BASELINE])
    assert arns[0].endswith(f"model-package/{TEST_GROUP}/1")  # the ARN the proxy logs
    con = _warehouse()
    result = _run(aws, con)
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
    assert sum(truth.values()) == 2000 and min(truth.values()) >= monitor_job.DEFAULT_MIN_PREDICTIONS
    v1, v2 = by_variant["v1"], by_variant["v2"]
    assert v1["model_version"] == 1 and v2["model_version"] == 2
    assert v1["score_psi"] < 0.05 < 0.2 < v2["score_psi"]
    assert v1["psi_note"] is None and v2["psi_note"] is None
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
    # the inputs are unshifted on both variants: small feature PSIs, each naming its feature
    assert v1["feature_psi"] < 0.05 and v2["feature_psi"] < 0.05
    assert {v1["feature_psi_feature"], v2["feature_psi_feature"]} <= set(FEATURES)
    assert v1["online_accuracy"] == pytest.approx(0.9, abs=0.03) and v2["online_accuracy"] == pytest.approx(
        0.7, abs=0.05
    )
    assert 0.7 * 1500 < v1["labelled_count"] < 0.9 * 1500
    assert result["warnings"] == [] and result["unattributed"] == {"requests": 0, "labelled": 0}
    assert result["metrics_published"] == 12 and result["put_metric_data_calls"] == 1
    assert result["window_minutes"] == 60 and result["min_predictions"] == monitor_job.DEFAULT_MIN_PREDICTIONS

    cw = aws["cloudwatch"]
    listed = cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    assert {m["MetricName"] for m in listed} == {
        "RequestCount",
        "PositiveRate",
        "ScorePSI",
        "FeaturePSI",
        "LabelledCount",
        "OnlineAccuracy",
    }
    (psi,) = _stats(cw, "ScorePSI", "v2", 2)
    assert psi["Maximum"] == pytest.approx(v2["score_psi"])
    (feature,) = _stats(cw, "FeaturePSI", "v2", 2)
    assert feature["Maximum"] == pytest.approx(v2["feature_psi"])
    (req,) = _stats(cw, "RequestCount", "v2", 2)
    assert req["Maximum"] == float(truth["v2"])


def test_repeated_runs_publish_the_window_again_not_more_requests(aws):
    """Each run publishes the window's counts as they are (gauges): two runs over the same window give two
    datapoints of the same value, so the Maximum the dashboard plots is the window's count, whatever the
    number of runs (only a Sum, which the dashboard does not use, would add them up)."""
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, UNIFORM_BASELINE])
    con = _warehouse()
    first = _run(aws, con)
    second = _run(aws, con)
    assert first["variants"] == second["variants"]
    truth = dict(
        con.execute(
            "SELECT variant_name, COUNT(*) FROM prediction_log WHERE event_time >= ? AND event_time < ? GROUP BY 1",
            [NOW - timedelta(hours=1), NOW],
        ).fetchall()
    )
    labelled = {r["variant_name"]: r["labelled_count"] for r in first["variants"]}
    for variant, version in (("v1", 1), ("v2", 2)):
        (req,) = _stats(aws["cloudwatch"], "RequestCount", variant, version)
        assert req["SampleCount"] == 2
        assert req["Maximum"] == req["Minimum"] == float(truth[variant])
        (lab,) = _stats(aws["cloudwatch"], "LabelledCount", variant, version)
        assert lab["Maximum"] == lab["Minimum"] == float(labelled[variant]) > 0


def _small_window(n: int):
    """A warehouse whose last minute holds ``n`` unshifted predictions (uniform scores and features)."""
    con = duckdb.connect()
    create_schema(con)
    fill(
        con, [Arm("v1", 1, 1.0, 0.9)], n, start=NOW - timedelta(seconds=59), seconds=58, offset=50_000, salt=3
    )
    set_features(con)
    return con


def test_a_small_sample_of_unshifted_traffic_publishes_no_psi(aws, capsys):
    """20 predictions of the baseline's own distribution: their PSI would be noise far above the threshold
    (empty deciles are floored at 1e-4), so the job computes none, says why, and publishes no datapoint, which
    the drift alarm treats as not breaching."""
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE])
    con = _small_window(20)
    scores = [s for (s,) in con.execute("SELECT score FROM prediction_log").fetchall()]
    noise = drift.psi(DECILES["fractions"], drift.bucket_counts(scores, DECILES["bin_edges"]))
    assert noise > 0.2  # what the alarm used to see

    result = _run(aws, con, window_minutes=1)
    (v1,) = result["variants"]
    assert v1["request_count"] == 20 and v1["positive_rate"] is not None
    assert v1["score_psi"] is None and v1["feature_psi"] is None
    assert v1["psi_note"] == "n < min: 20 < 200 predictions"
    assert result["warnings"] == []
    names = {
        m["MetricName"] for m in aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    }
    assert "RequestCount" in names and not names & {"ScorePSI", "FeaturePSI"}

    # what `trainserve monitor run` prints: the cells say n < min, and a line says why
    from trainserve.commands.monitor import print_result

    print_result(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert "│ v1 │ 1 │ 20 │" in printed and printed.count("n < min") == 3
    assert "no PSI for v1 (model version 1): n < min: 20 < 200 predictions (drift_min_predictions)" in printed

    # the same 20 with the minimum lowered to 20: the PSI is computed (and is the noise above)
    monitor_job._baseline_cache.clear()
    low = _run(aws, con, window_minutes=1, min_predictions=20)["variants"][0]
    assert low["psi_note"] is None and low["score_psi"] == pytest.approx(noise)


def test_at_the_minimum_count_unshifted_traffic_stays_under_the_threshold(aws):
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE])
    con = _small_window(monitor_job.DEFAULT_MIN_PREDICTIONS)
    (v1,) = _run(aws, con, window_minutes=1)["variants"]
    assert v1["request_count"] == monitor_job.DEFAULT_MIN_PREDICTIONS and v1["psi_note"] is None
    assert 0 < v1["score_psi"] < 0.2 and 0 < v1["feature_psi"] < 0.2


def test_min_predictions_must_be_a_positive_integer(aws):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="min_predictions must be a positive integer"):
            _run(aws, _small_window(1), min_predictions=bad)


def _md5_sample(con, variant: str, rows: int) -> list[dict]:
    """The sample the job reads, drawn here independently: the window's first ``rows`` predictions of the
    variant in MD5(request_id) order."""
    found = con.execute(
        "SELECT request_id, features FROM prediction_log WHERE variant_name = ? AND event_time >= ? "
        "AND event_time < ?",
        [variant, NOW - timedelta(hours=1), NOW],
    ).fetchall()
    found.sort(key=lambda r: hashlib.md5(r[0].encode()).hexdigest())
    return [json.loads(f) for _, f in found[:rows]]


def test_input_drift_that_leaves_the_scores_alone_raises_feature_psi(aws):
    """mean_area and mean_radius ten times larger on v2, its scores unchanged: ScorePSI stays low, FeaturePSI
    (the largest per-feature PSI, computed from a bounded sample of the window's rows) is far above it."""
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, UNIFORM_BASELINE])
    con = _warehouse(feature_scale={"v2": 10.0}, score_shift=0.0)
    result = _run(aws, con)
    by = {r["variant_name"]: r for r in result["variants"]}
    v1, v2 = by["v1"], by["v2"]
    assert v1["score_psi"] < 0.05 and v2["score_psi"] < 0.05
    assert v1["feature_psi"] < 0.05 < 1.0 < v2["feature_psi"]
    assert v2["feature_psi_feature"] in FEATURES

    # v1 has more predictions than the sample holds: the job read FEATURE_SAMPLE_ROWS of them
    assert v1["request_count"] > monitor_job.FEATURE_SAMPLE_ROWS
    for rec in (v1, v2):
        sample = _md5_sample(con, rec["variant_name"], monitor_job.FEATURE_SAMPLE_ROWS)
        assert len(sample) == min(rec["request_count"], monitor_job.FEATURE_SAMPLE_ROWS)
        expected = {
            name: drift.psi(
                DECILES["fractions"], drift.bucket_counts([r[name] for r in sample], DECILES["bin_edges"])
            )
            for name in FEATURES
        }
        top = max(expected, key=expected.get)
        assert rec["feature_psi_feature"] == top and rec["feature_psi"] == pytest.approx(expected[top])

    (published,) = _stats(aws["cloudwatch"], "FeaturePSI", "v2", 2)
    assert published["Maximum"] == pytest.approx(v2["feature_psi"])


def test_the_feature_sample_query_bounds_rows_per_variant():
    con = _warehouse()
    params = {"endpoint_name": ENDPOINT, "since": NOW - timedelta(hours=1), "until": NOW}
    rows = DuckDBQuery(connection=con).query(warehouse_sql.monitor_feature_sample_sql([1, 2], 100), params)
    per = {}
    for r in rows:
        per[(r["variant_name"], r["model_version"])] = per.get((r["variant_name"], r["model_version"]), 0) + 1
    assert per == {("v1", 1): 100, ("v2", 2): 100}
    only_v2 = DuckDBQuery(connection=con).query(warehouse_sql.monitor_feature_sample_sql([2], 5), params)
    assert {r["variant_name"] for r in only_v2} == {"v2"} and len(only_v2) == 5
    for bad in ([], [True], ["1; DROP TABLE x"]):
        with pytest.raises(ValueError):
            warehouse_sql.monitor_feature_sample_sql(bad, 10)
    with pytest.raises(ValueError, match="rows_per_variant"):
        warehouse_sql.monitor_feature_sample_sql([1], 0)


def test_a_baseline_without_usable_feature_bins_costs_only_feature_psi(aws):
    broken = {**UNIFORM_BASELINE, "features": {"mean_area": {"bin_edges": [0, 1], "fractions": [0.5, 0.5]}}}
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, broken])
    result = _run(aws, _warehouse())
    by = {r["variant_name"]: r for r in result["variants"]}
    assert by["v2"]["score_psi"] > 0.2 and by["v2"]["feature_psi"] is None
    assert by["v1"]["feature_psi"] is not None
    (warning,) = result["warnings"]
    assert (
        warning.startswith("no FeaturePSI for model version 2") and "features.mean_area.fractions" in warning
    )


def test_rows_without_a_variant_or_version_are_counted_never_published_as_none(aws):
    """Predictions logged without a variant (the proxy logs "" when the endpoint did not say) or a model
    version belong to no series: counted and reported, and no metric gets a "None" or empty dimension."""
    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, UNIFORM_BASELINE])
    con = _warehouse()
    con.execute(
        "INSERT INTO prediction_log (request_id, event_time, endpoint_name, variant_name, model_version, "
        "features, score, label) VALUES "
        "('x1', ?, ?, NULL, NULL, '{}', 0.5, 1), ('x2', ?, ?, '', NULL, '{}', 0.5, 1), "
        "('x3', ?, ?, 'v9', NULL, '{}', 0.5, 0), ('x4', ?, ?, NULL, 3, '{}', 0.5, 0)",
        [NOW - timedelta(minutes=5), ENDPOINT] * 4,
    )
    con.execute(
        "INSERT INTO prediction_feedback VALUES ('x1', ?, 1), ('x3', ?, 1)",
        [NOW - timedelta(minutes=4)] * 2,
    )
    result = _run(aws, con)
    assert {r["variant_name"] for r in result["variants"]} == {"v1", "v2"}
    assert result["unattributed"] == {"requests": 4, "labelled": 2}
    (warning,) = result["warnings"]
    assert warning.startswith(
        "4 prediction(s) and 2 outcome(s) in the window have no variant or model version"
    )
    for m in aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"]:
        dims = {d["Name"]: d["Value"] for d in m["Dimensions"]}
        assert dims["VariantName"] in ("v1", "v2") and dims["ModelVersion"] in ("1", "2"), m
    # and records the job is given without them publish nothing
    assert (
        monitor_job.metric_data(
            [
                {**result["variants"][0], "variant_name": None},
                {**result["variants"][0], "model_version": None},
            ],
            NOW,
        )
        == []
    )


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
    assert v2["psi_note"] == monitor_job.BASELINE_UNREADABLE and result["drift_unavailable"] == [2]


def test_the_scheduled_job_fails_after_publishing_when_a_live_versions_drift_cannot_be_measured(
    aws, monkeypatch
):
    """The drift alarms treat a missing PSI as not breaching, so an unreadable baseline (a narrowed S3 grant, a
    deleted object) would silence them: the Lambda publishes everything else, then fails the invocation
    (retried, then the failure queue; the monitor-errors alarm), naming the version and why."""
    import functools

    _create_versions(aws["sagemaker"], aws["s3"], [UNIFORM_BASELINE, None])
    for k, v in HANDLER_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("WINDOW_MINUTES", "60")
    monkeypatch.setattr(
        monitor_handler, "RedshiftDataQuery", lambda *a, **kw: DuckDBQuery(connection=_warehouse())
    )
    monkeypatch.setattr(
        monitor_handler.monitor_job,
        "run_monitor",
        functools.partial(monitor_job.run_monitor, now=NOW.replace(tzinfo=UTC)),
    )
    with pytest.raises(monitor_handler.DriftUnavailable, match="no drift metrics for model version.s. 2: "):
        monitor_handler.handler({"source": "aws.scheduler"}, None)
    names = {
        (m["MetricName"], m["Dimensions"][1]["Value"])
        for m in aws["cloudwatch"].list_metrics(Namespace="Trainserve/Predictions")["Metrics"]
    }
    assert ("ScorePSI", "v1") in names and ("RequestCount", "v2") in names  # published before it failed


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
    assert s["min_predictions"] == monitor_job.DEFAULT_MIN_PREDICTIONS  # not set: the job's default
    assert monitor_handler.settings({**HANDLER_ENV, "DRIFT_MIN_PREDICTIONS": "50"})["min_predictions"] == 50
    for bad, why in (("0", "must be > 0"), ("x", "is not a int"), ("2.5", "is not a int")):
        with pytest.raises(monitor_handler.ConfigurationError, match=f"DRIFT_MIN_PREDICTIONS='{bad}' {why}"):
            monitor_handler.settings({**HANDLER_ENV, "DRIFT_MIN_PREDICTIONS": bad})


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
