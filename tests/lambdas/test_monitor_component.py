"""The local cloud's MonitoringComponent: scheduled runs against the warehouse file, metrics in the local
CloudWatch (a moto server), and the alarms it evaluates itself (drift, 5XX rate, a failing job)."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from warehouse_fixture import UNIFORM_BASELINE, Arm, create_schema, fill, register_versions  # noqa: E402

from trainserve.local import monitoring  # noqa: E402
from trainserve.local.monitoring import LocalWarehouseQuery, MonitoringComponent  # noqa: E402


@pytest.fixture
def ctx(moto_url, tmp_path, config, local_context):
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    context = local_context(config, tmp_path, moto_url, runtime_url=moto_url, api_url=moto_url)
    target = context.target()
    register_versions(target.client("sagemaker"), target.client("s3"), [UNIFORM_BASELINE, UNIFORM_BASELINE])
    con = duckdb.connect(str(context.warehouse_path))
    create_schema(con)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=30)
    fill(
        con,
        [Arm("v1", 1, 0.8, 0.8), Arm("v2", 2, 0.2, 0.8, score_shift=0.35)],
        3_000,
        start=start,
        seconds=1200,
    )
    con.close()
    return context


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_scheduled_run_publishes_metrics_and_raises_the_drift_alarm(ctx):
    counts = {"requests": 0, "errors": 0}
    comp = MonitoringComponent(interval_s=0.2, error_counts=lambda: dict(counts))
    comp.start(ctx)
    try:
        assert _wait(lambda: comp.runs >= 1 and comp.last_result is not None)
        status = comp.status()
        assert status["running"] and status["metrics_published"] > 0 and "last_error" not in status
        (drift,) = status["alarms"]
        assert drift["name"] == "trainserve-prediction-drift" and drift["state"] == "ALARM"
        assert "on v2 (model version 2)" in drift["reason"]
        cw = ctx.target().client("cloudwatch")
        names = {m["MetricName"] for m in cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]}
        assert {"RequestCount", "ScorePSI", "OnlineAccuracy"} <= names
        comp.stop()  # the schedule works; now run on demand only, so no scheduled run takes the deltas
        assert not comp.status()["running"]

        # 5XX rate above error_rate_alarm (0.05) since the previous run -> the error alarm joins
        counts.update(requests=200, errors=30)
        result = comp.run_now()
        assert result["error_rate"] == pytest.approx(0.15)
        assert {a["name"] for a in comp.status()["alarms"]} == {
            "trainserve-prediction-drift",
            "trainserve-endpoint-5xx",
        }
        # no new requests: the rate is not evaluated, the error alarm clears
        comp.run_now()
        assert {a["name"] for a in comp.status()["alarms"]} == {"trainserve-prediction-drift"}
    finally:
        comp.stop()


def test_no_drift_no_alarm_and_a_failing_job_is_an_alarm(ctx, tmp_path):
    comp = MonitoringComponent(interval_s=3600)
    comp.start(ctx)
    try:
        result = comp.run_now(window_minutes=1)  # the last minute holds no traffic: nothing to alarm on
        assert result["variants"] == [] and comp.status()["alarms"] == []
        comp.query = LocalWarehouseQuery(str(tmp_path / "empty.duckdb"))
        duckdb.connect(str(tmp_path / "empty.duckdb")).close()
        with pytest.raises(Exception, match="prediction_log_dedup"):
            comp.run_now()
        status = comp.status()
        assert status["alarms"][0]["name"] == "trainserve-monitoring-job"
        assert "prediction_log_dedup" in status["last_error"]
    finally:
        comp.stop()


def test_error_rate_from_the_local_runtimes_counters_in_the_daemon_status(ctx):
    """The 5XX alarm reads what SageMaker's Invocation5XXErrors counts: the local runtime's invocations of
    the endpoint and its server-side errors, not the prediction API's answers (its kill switch's 503s)."""
    status = ctx.state_dir / "status.json"

    def write(invocations, model_errors, api_5xx=0):
        runtime = {
            "invocations": {"trainserve-endpoint/v1": invocations, "other-endpoint/v1": 999},
            "errors": {"ModelError": model_errors, "ValidationError": 7},
        }
        api = {"url": "http://127.0.0.1:1", "requests": invocations + api_5xx, "4xx": 1, "5xx": api_5xx}
        status.write_text(json.dumps({"components": {"runtime": runtime, "api": api}}))

    write(100, 0)
    comp = MonitoringComponent(interval_s=3600, status_wait_s=0.2)
    comp.start(ctx)
    try:
        write(140, 10)  # 10 model errors in the 50 invocations since the start
        result = comp.run_now()
        assert result["error_rate"] == pytest.approx(0.2)
        assert "trainserve-endpoint-5xx" in {a["name"] for a in comp.status()["alarms"]}
        write(239, 11)  # 1 of 100: under error_rate_alarm (5%)
        assert comp.run_now()["error_rate"] == pytest.approx(0.01)
        assert "trainserve-endpoint-5xx" not in {a["name"] for a in comp.status()["alarms"]}
        # the kill switch: the API answers 400 requests with its own 503, the endpoint is never called
        write(239, 11, api_5xx=400)
        assert comp.run_now()["error_rate"] is None
        assert "trainserve-endpoint-5xx" not in {a["name"] for a in comp.status()["alarms"]}
    finally:
        comp.stop()


def test_a_run_on_request_counts_and_raises_alarms_like_a_scheduled_one(ctx, tmp_path):
    """``trainserve monitor run`` asks the component (``request_run``): the run shows in its status and its
    alarms, and the asker gets the result, or the job's error."""
    # a request left by a previous local cloud is not run again by this one
    (ctx.state_dir / monitoring.RUN_REQUEST).write_text('{"token": "old", "window_minutes": null}')
    comp = MonitoringComponent(interval_s=3600)
    comp.start(ctx)
    try:
        time.sleep(0.5)
        assert comp.runs == 0
        answer = monitoring.request_run(ctx.state_dir, None, timeout=30)
        assert answer is not None and "error" not in answer
        result = answer["result"]
        assert {r["variant_name"] for r in result["variants"]} == {"v1", "v2"}
        assert [a["name"] for a in result["alarms"]] == ["trainserve-prediction-drift"]
        status = comp.status()
        assert status["runs"] == 1 and status["last_run"] is not None
        assert [a["name"] for a in status["alarms"]] == ["trainserve-prediction-drift"]
        answer = monitoring.request_run(ctx.state_dir, 1, timeout=30)  # the last minute: no traffic
        assert answer is not None and answer["result"]["variants"] == [] and comp.status()["alarms"] == []

        comp.query = LocalWarehouseQuery(str(tmp_path / "empty.duckdb"))
        duckdb.connect(str(tmp_path / "empty.duckdb")).close()
        answer = monitoring.request_run(ctx.state_dir, None, timeout=30)
        assert answer is not None and "prediction_log_dedup" in answer["error"]
        assert comp.status()["alarms"][0]["name"] == "trainserve-monitoring-job" and comp.runs == 3
    finally:
        comp.stop()
    assert monitoring.request_run(ctx.state_dir, None, timeout=0.3) is None  # nobody answers: None
