"""The monitoring stack's alarms in the local cloud: created in the local CloudWatch (moto) with the base
resources, and set by the local monitoring after each run, so that any AWS SDK's ``DescribeAlarms`` shows
what ``trainserve local status`` shows: drift on scores and on input features, no alarm on a sample below
``drift_min_predictions``, and the endpoint 5XX rate as SageMaker would count it (the local runtime's
answers, up to the run, not the prediction API's kill-switch 503s)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from warehouse_fixture import Arm, create_schema, fill, register_versions  # noqa: E402

from trainserve.local.monitoring import LocalWarehouseQuery, MonitoringComponent  # noqa: E402
from trainserve.local.resources import create_base_resources, local_alarms  # noqa: E402

DECILES = {"bin_edges": [i / 10 for i in range(11)], "fractions": [0.1] * 10}
FEATURES = ("mean_area", "mean_radius")
BASELINE = {
    "score": DECILES,
    "features": {name: DECILES for name in FEATURES},
    "positive_rate": 0.5,
    "n": 1000,
}
ALARMS = ("trainserve-endpoint-5xx", "trainserve-prediction-drift", "trainserve-feature-drift")


def set_features(con, scale: dict[str, float]) -> None:
    """Features as the proxy logs them (JSON text): uniform on [0, 1) from the request id, times the
    variant's ``scale``."""
    whens = " ".join(f"WHEN '{v}' THEN {k!r}" for v, k in scale.items())
    parts = [
        f"'\"{name}\": ' || CAST(((hash(request_id, {salt}) % 1000000) / 1000000.0)"
        f" * (CASE variant_name {whens} ELSE 1.0 END) AS VARCHAR)"
        for salt, name in zip((31, 37), FEATURES, strict=True)
    ]
    con.execute("UPDATE prediction_log SET features = '{' || " + " || ', ' || ".join(parts) + " || '}'")


@pytest.fixture(autouse=True)
def _clear_baseline_cache():
    """The job caches baselines by package ARN, which a reset moto hands out again (to other baselines)."""
    import monitor_job

    monitor_job._baseline_cache.clear()
    yield
    monitor_job._baseline_cache.clear()


@pytest.fixture
def ctx(moto_url, tmp_path, config, local_context):
    """A local cloud's context with the base resources made as the daemon makes them, two registered
    versions with score and feature baselines, and a warehouse: 3,000 predictions in the last 30 minutes,
    v2's scores shifted by 0.35 and its mean_area / mean_radius ten times larger."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    context = local_context(config, tmp_path, moto_url, runtime_url=moto_url, api_url=moto_url)
    target = context.target()
    create_base_resources(target)
    register_versions(target.client("sagemaker"), target.client("s3"), [BASELINE, BASELINE])
    con = duckdb.connect(str(context.warehouse_path))
    create_schema(con)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=30)
    arms = [Arm("v1", 1, 0.8, 0.8), Arm("v2", 2, 0.2, 0.8, score_shift=0.35)]
    fill(con, arms, 3_000, start=start, seconds=1200)
    set_features(con, {"v2": 10.0})
    con.close()
    return context


def _alarms(ctx) -> dict[str, dict]:
    cw = ctx.target().client("cloudwatch")
    return {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=list(ALARMS))["MetricAlarms"]}


def test_the_base_resources_hold_the_monitoring_stacks_alarms(ctx):
    alarms = _alarms(ctx)
    assert set(alarms) == set(ALARMS)
    for definition in local_alarms(ctx.config, ctx.names):
        got = alarms[definition["AlarmName"]]
        assert got["StateValue"] == "INSUFFICIENT_DATA"  # as a new alarm starts on AWS
        assert got["Threshold"] == definition["Threshold"] and got["TreatMissingData"] == "notBreaching"
        (query,) = got["Metrics"]
        assert query["Expression"] == definition["Metrics"][0]["Expression"]
        assert "WHERE EndpointName = 'trainserve-endpoint'" in query["Expression"]
    assert alarms["trainserve-prediction-drift"]["Threshold"] == ctx.config.drift_psi_threshold
    assert alarms["trainserve-feature-drift"]["Threshold"] == ctx.config.feature_psi_threshold
    assert alarms["trainserve-endpoint-5xx"]["Threshold"] == ctx.config.error_rate_alarm
    # made again (a second start of the component, say): they keep their state
    cw = ctx.target().client("cloudwatch")
    cw.set_alarm_state(AlarmName="trainserve-prediction-drift", StateValue="ALARM", StateReason="test")
    create_base_resources(ctx.target())
    assert _alarms(ctx)["trainserve-prediction-drift"]["StateValue"] == "ALARM"


def test_a_run_sets_the_drift_alarms_in_the_local_cloudwatch(ctx):
    comp = MonitoringComponent(interval_s=3600, error_counts=lambda: {"requests": 0, "errors": 0})
    comp.start(ctx)
    try:
        result = comp.run_now()
        by = {r["variant_name"]: r for r in result["variants"]}
        assert by["v2"]["feature_psi"] > ctx.config.feature_psi_threshold > by["v1"]["feature_psi"]
        assert {a["name"] for a in comp.status()["alarms"]} == {
            "trainserve-prediction-drift",
            "trainserve-feature-drift",
        }
        alarms = _alarms(ctx)
        drift, feature = alarms["trainserve-prediction-drift"], alarms["trainserve-feature-drift"]
        assert drift["StateValue"] == "ALARM" and "ScorePSI" in drift["StateReason"]
        assert "on v2 (model version 2)" in drift["StateReason"]
        assert feature["StateValue"] == "ALARM"
        assert f"feature {by['v2']['feature_psi_feature']}" in feature["StateReason"]
        assert alarms["trainserve-endpoint-5xx"]["StateValue"] == "OK"
        assert "no endpoint invocations" in alarms["trainserve-endpoint-5xx"]["StateReason"]

        # the last minute holds no traffic: no datapoint, which does not breach
        comp.run_now(window_minutes=1)
        assert comp.status()["alarms"] == []
        alarms = _alarms(ctx)
        for name in ("trainserve-prediction-drift", "trainserve-feature-drift"):
            assert alarms[name]["StateValue"] == "OK"
            assert "no predictions in the window" in alarms[name]["StateReason"]
            assert "missing data is not breaching" in alarms[name]["StateReason"]
    finally:
        comp.stop()


def test_a_small_sample_raises_no_drift_alarm_and_says_why(ctx):
    """20 predictions in the last minute, scores and features as far off as v2's: below
    drift_min_predictions (200) there is no PSI, so no alarm; the reason names the count."""
    con = duckdb.connect(str(ctx.warehouse_path))
    now = datetime.now(UTC).replace(tzinfo=None)
    arm = Arm("v2", 2, 1.0, 0.8, score_shift=0.35)
    fill(con, [arm], 20, start=now - timedelta(seconds=50), seconds=30, offset=900_000, salt=5)
    set_features(con, {"v2": 10.0})
    con.close()
    comp = MonitoringComponent(interval_s=3600, error_counts=lambda: {"requests": 0, "errors": 0})
    comp.start(ctx)
    try:
        result = comp.run_now(window_minutes=1)
        (v2,) = result["variants"]
        assert v2["request_count"] == 20 and v2["score_psi"] is None and v2["feature_psi"] is None
        assert v2["psi_note"] == "n < min: 20 < 200 predictions"
        assert result["alarms"] == [] and comp.status()["alarms"] == []
        alarms = _alarms(ctx)
        for name in ("trainserve-prediction-drift", "trainserve-feature-drift"):
            assert alarms[name]["StateValue"] == "OK"
            assert "v2: n < min: 20 < 200 predictions" in alarms[name]["StateReason"]
        cw = ctx.target().client("cloudwatch")
        names = {m["MetricName"] for m in cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]}
        assert "RequestCount" in names and not names & {"ScorePSI", "FeaturePSI"}
    finally:
        comp.stop()


def test_a_failed_job_leaves_the_drift_alarms_without_data(ctx, tmp_path):
    comp = MonitoringComponent(interval_s=3600, error_counts=lambda: {"requests": 0, "errors": 0})
    comp.start(ctx)
    try:
        comp.run_now()
        assert _alarms(ctx)["trainserve-prediction-drift"]["StateValue"] == "ALARM"
        comp.query = LocalWarehouseQuery(str(tmp_path / "empty.duckdb"))
        duckdb.connect(str(tmp_path / "empty.duckdb")).close()
        with pytest.raises(Exception, match="prediction_log_dedup"):
            comp.run_now()
        assert [a["name"] for a in comp.status()["alarms"]] == ["trainserve-monitoring-job"]
        drift = _alarms(ctx)["trainserve-prediction-drift"]
        assert drift["StateValue"] == "OK" and "the monitoring job failed" in drift["StateReason"]
    finally:
        comp.stop()


def _write_status(
    path: Path, invocations: int, model_errors: int, api_5xx: int = 0, age_s: float = 0
) -> None:
    """The daemon's status snapshot (``status.json``) with the runtime's and the API's counters, written
    ``age_s`` seconds ago."""
    doc = {
        "pid": os.getpid(),
        "components": {
            "runtime": {
                "invocations": {"trainserve-endpoint/v1": invocations},
                "errors": {"ModelError": model_errors},
            },
            "api": {
                "requests": invocations + model_errors + api_5xx,
                "4xx": 0,
                "5xx": model_errors + api_5xx,
            },
        },
    }
    tmp = path.with_name(".status.json.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


def test_the_5xx_alarm_counts_errors_up_to_the_run_and_not_the_kill_switch(ctx):
    """A run waits for the daemon's next status snapshot (written every 2 s) when the one on disk predates
    it, so the endpoint errors of its last seconds count. The prediction API's own 503s (kill switch) are not
    endpoint invocations: on AWS they never reach Invocation5XXErrors, and locally they raise no alarm."""
    status = ctx.state_dir / "status.json"
    _write_status(status, 100, 0, age_s=10)
    comp = MonitoringComponent(interval_s=3600, status_wait_s=10)
    comp.start(ctx)
    try:
        # the snapshot on disk when the run starts is from before it: no new error in it
        _write_status(status, 150, 0, age_s=5)
        cw = ctx.target().client("cloudwatch")

        def daemon_writes_the_next_snapshot() -> None:
            # after the job has published (so a run reading the old snapshot would have read it by now):
            # 10 model errors in the last seconds
            while not cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]:
                time.sleep(0.02)
            time.sleep(0.5)
            _write_status(status, 190, 10)

        writer = threading.Thread(target=daemon_writes_the_next_snapshot)
        writer.start()
        result = comp.run_now()
        writer.join()
        assert result["error_rate"] == pytest.approx(10 / 100)
        alarm = _alarms(ctx)["trainserve-endpoint-5xx"]
        assert (
            alarm["StateValue"] == "ALARM"
            and "5XX rate 10.0% > 5.0% over 100 requests" in alarm["StateReason"]
        )

        # the kill switch: 500 requests answered 503 by the proxy, none reached the endpoint
        _write_status(status, 190, 10, api_5xx=500)
        result = comp.run_now()
        assert result["error_rate"] is None
        assert "trainserve-endpoint-5xx" not in {a["name"] for a in comp.status()["alarms"]}
        alarm = _alarms(ctx)["trainserve-endpoint-5xx"]
        assert alarm["StateValue"] == "OK" and "no endpoint invocations" in alarm["StateReason"]
    finally:
        comp.stop()
