"""``trainserve report ab`` and ``trainserve monitor run`` against a local cloud stand-in: a moto server
(registry, endpoint, S3, CloudWatch) on 127.0.0.1 and a generated DuckDB warehouse file."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import duckdb
import pytest
from click.testing import CliRunner
from warehouse_fixture import (
    UNIFORM_BASELINE,
    Arm,
    create_endpoint,
    create_schema,
    fill,
    register_versions,
    set_endpoint_changed_at,
)

from trainserve.cli import cli
from trainserve.commands import monitor as monitor_cmd
from trainserve.commands import options
from trainserve.console import UserError
from trainserve.target import Names, Target


@pytest.fixture
def local_target(moto_url, tmp_path, config, monkeypatch):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    monkeypatch.setenv("TRAINSERVE_HOME", str(tmp_path / "no-local-cloud"))  # never a real cloud's status
    target = Target(
        mode="local",
        region="us-east-1",
        config=config,
        names=Names.local(config),
        aws_endpoint_url=moto_url,
        runtime_url=moto_url,
        warehouse={"path": str(tmp_path / "warehouse.duckdb")},
    )
    monkeypatch.setattr(options, "resolve_target", lambda local: target)
    sm, s3 = target.client("sagemaker"), target.client("s3")
    register_versions(sm, s3, [UNIFORM_BASELINE, UNIFORM_BASELINE])
    create_endpoint(sm, {"v1": 0.5, "v2": 0.5})
    con = duckdb.connect(target.warehouse["path"])
    create_schema(con)
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=50)
    set_endpoint_changed_at(start - timedelta(minutes=1))  # the weights were set before this traffic
    # v2 is both clearly more accurate and drifted (scores shifted by 0.3) against its training baseline
    fill(
        con,
        [Arm("v1", 1, 0.5, 0.80), Arm("v2", 2, 0.5, 0.90, score_shift=0.3)],
        6_000,
        start=start,
        seconds=2400,
    )
    con.close()
    return target


def _invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_report_ab_json_recommends_promoting_the_better_challenger(local_target):
    result = _invoke("report", "ab", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert rep["champion"] == "v1"
    assert {v["variant_name"]: v["weight"] for v in rep["variants"]} == {"v1": 0.5, "v2": 0.5}
    assert rep["recommendation"]["command"] == "trainserve traffic promote v2"
    assert rep["srm"]["mismatch"] is False


def test_report_ab_without_endpoint_reads_the_logs_but_recommends_nothing(local_target):
    local_target.client("sagemaker").delete_endpoint(EndpointName=local_target.names.endpoint_name)
    result = _invoke("report", "ab", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert {v["variant_name"] for v in rep["variants"]} == {"v1", "v2"}  # what was logged is still there
    rec = rep["recommendation"]
    assert rec["action"] == "nothing to act on" and rec["command"] == "trainserve endpoint status"
    assert rec["reason"] == (
        f"no endpoint {local_target.names.endpoint_name} exists: the figures are of the predictions logged "
        "by an endpoint of that name that is gone"
    )
    assert any("weights and SRM unavailable" in n for n in rep["notes"])


def test_report_ab_on_a_fresh_local_cloud_says_no_endpoint_exists(local_target):
    """No endpoint and nothing in the warehouse (a fresh local cloud): it said 'the figures are of the
    predictions logged before it went', of an endpoint that never existed and predictions there are none."""
    local_target.client("sagemaker").delete_endpoint(EndpointName=local_target.names.endpoint_name)
    con = duckdb.connect(local_target.warehouse["path"])
    con.execute("DELETE FROM prediction_log")
    con.execute("DELETE FROM prediction_feedback")
    con.close()
    result = _invoke("report", "ab", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert rep["variants"] == [] and rep["window"] is None
    rec = rep["recommendation"]
    assert rec["action"] == "nothing to act on" and rec["command"] == "trainserve endpoint status"
    assert rec["reason"].startswith(
        f"no endpoint {local_target.names.endpoint_name} exists and the warehouse holds no prediction of one"
    )
    assert "before it went" not in rec["reason"] and "gone" not in rec["reason"]
    said = _said(_invoke("report", "ab").stdout)
    assert f"NOTHING TO ACT ON: no endpoint {local_target.names.endpoint_name} exists and" in said


def test_report_ab_table_and_plot(local_target, tmp_path):
    png = tmp_path / "ab.png"
    result = _invoke("report", "ab", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert "PROMOTE" in result.stdout and "trainserve traffic promote v2" in result.stdout
    assert "Challengers vs champion" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "no training baseline" not in result.output


def _said(text: str) -> str:
    return " ".join(text.split())


def test_report_ab_with_a_challenger_drained_to_zero(local_target, tmp_path):
    """`traffic set v1=1 v2=0`, as a rollback's first step leaves the endpoint: no crash; v2 is draining."""
    assert _invoke("traffic", "set", "v1=1", "v2=0").exit_code == 0
    result = _invoke("report", "ab", "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    by = {v["variant_name"]: v for v in rep["variants"]}
    assert (by["v1"]["role"], by["v2"]["role"]) == ("champion", "draining") and by["v2"]["weight"] == 0.0
    assert rep["window"]["basis"] == "endpoint_changed"  # from the `traffic set` on: nothing logged since
    (cmp,) = rep["comparisons"]
    assert cmp["decision"] == "draining" and cmp["min_sample"] is None and cmp["still_needed"] == {}
    assert rep["recommendation"]["action"] == "nothing to act on"
    assert rep["recommendation"]["command"] == "trainserve endpoint status"
    # over the traffic before the change, what v2 collected is shown, with the caveat on the split
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    rep = json.loads(_invoke("report", "ab", "--json", "--since", since).stdout)
    by = {v["variant_name"]: v for v in rep["variants"]}
    assert by["v2"]["requests"] > 2_000 and by["v2"]["accuracy"] > 0.85
    assert rep["window"]["weights_changed_inside"] is True and len(rep["warnings"]) == 1
    assert rep["srm"]["mismatch"] is False and rep["recommendation"]["action"] == "nothing to act on"
    text = _invoke("report", "ab", "--since", since)
    assert text.exit_code == 0, text.output
    said = _said(text.stdout)
    assert "│ v2 │ 2 │ draining │ 0.0% │" in said
    assert "warning: the endpoint's weights or variants changed at" in said
    assert "sample-ratio check not flagged (at 0% but in the window: v2 got" in said
    assert "NOTHING TO ACT ON: v2 at 0%: draining" in said and "next: trainserve endpoint status" in said
    png = tmp_path / "ab.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty window plots without matplotlib's complaints
        default = _invoke("report", "ab", "--plot", str(png))
    assert default.exit_code == 0, default.output
    said = _said(default.stdout)
    assert "window: since the endpoint last changed at" in said and "NOTHING TO ACT ON" in said
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_ab_just_after_a_promote_says_there_is_nothing_to_compare(local_target):
    """`traffic promote v2` leaves v2 alone: not 'keep collecting' (more data decides nothing with one
    variant) but nothing to act on, with the command that adds a challenger."""
    result = _invoke("traffic", "promote", "v2")
    assert result.exit_code == 0, result.output
    rep = json.loads(_invoke("report", "ab", "--json").stdout)
    assert [v["variant_name"] for v in rep["variants"]] == ["v2"] and rep["comparisons"] == []
    rec = rep["recommendation"]
    assert rec["action"] == "nothing to act on" and rec["command"] == "trainserve models approve V"
    assert rec["reason"].startswith("only v2 is live (one variant): there is nothing to compare")
    said = _said(_invoke("report", "ab").stdout)
    assert "NOTHING TO ACT ON: only v2 is live (one variant): there is nothing to compare" in said
    assert "next: trainserve models approve V" in said and "KEEP COLLECTING" not in said


def test_report_ab_after_an_operator_ramp_compares_from_the_change(local_target):
    """90/10 for two hours before `traffic set v1=0.5 v2=0.5` (the fixture's endpoint changed a minute before
    its 50/50 traffic): no sample-ratio mismatch, the window starts at the change."""
    sm = local_target.client("sagemaker")
    changed = sm.describe_endpoint(EndpointName=local_target.names.endpoint_name)["LastModifiedTime"]
    changed = changed.astimezone(UTC).replace(tzinfo=None)
    con = duckdb.connect(local_target.warehouse["path"])
    fill(
        con,
        [Arm("v1", 1, 0.9, 0.80), Arm("v2", 2, 0.1, 0.90, score_shift=0.3)],
        20_000,
        start=changed - timedelta(hours=2),
        seconds=7_100,
        offset=1_000_000,
        salt=7,
    )
    con.close()
    rep = json.loads(_invoke("report", "ab", "--json").stdout)
    assert rep["window"]["start"] == (changed + timedelta(seconds=5)).isoformat()
    assert rep["window"]["basis"] == "endpoint_changed" and rep["warnings"] == []
    assert rep["srm"]["mismatch"] is False and rep["srm"]["applicable"] is True
    assert rep["recommendation"]["command"] == "trainserve traffic promote v2"
    since = (changed - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    rep = json.loads(_invoke("report", "ab", "--json", "--since", since).stdout)
    assert rep["srm"]["p_value"] < 0.001 and rep["srm"]["mismatch"] is False  # shown, not flagged
    (warning,) = rep["warnings"]
    assert "inside the window" in warning and "not meaningful" in warning
    said = _said(_invoke("report", "ab", "--since", since).stdout)
    assert "warning: the endpoint's weights or variants changed at" in said
    assert "sample-ratio check not flagged (chi-square on requests" in said
    assert "SAMPLE RATIO MISMATCH" not in said


def test_report_ab_since_in_the_future_or_after_the_data_is_an_error(local_target, tmp_path):
    png = tmp_path / "ab.png"
    for args in (("--json",), ("--plot", str(png))):
        result = _invoke("report", "ab", "--since", "2030-01-01", *args)
        assert result.exit_code == 1 and result.stdout == ""
        assert _said(result.stderr).startswith(
            "error: --since 2030-01-01 00:00:00 is in the future (now: "
        ), result.stderr
        assert "Traceback" not in result.output and not png.exists()
    recent = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    result = _invoke("report", "ab", "--since", recent, "--plot", str(png))
    assert result.exit_code == 1 and result.stdout == "" and not png.exists()
    said = _said(result.stderr)
    assert (
        f"error: --since {recent} is after the last logged prediction (last logged prediction of the live "
        in said
    )
    assert "the window would be empty" in said


def test_report_ab_since_takes_iso_8601_with_z_or_an_offset_as_utc(local_target):
    """The times the CLI itself prints (``...Z`` in notes, ``...+00:00`` in generated_at) are accepted, an
    offset converted to UTC; without one the time is UTC, as before."""
    since = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0, tzinfo=None)
    in_paris = (since + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00")  # the same instant
    starts = set()
    for given in (
        since.strftime("%Y-%m-%d %H:%M:%S"),
        since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        since.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        since.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        in_paris,
    ):
        result = _invoke("report", "ab", "--json", "--since", given)
        assert result.exit_code == 0, (given, result.output)
        rep = json.loads(result.stdout)
        assert rep["window"]["basis"] == "given", given
        starts.add(rep["window"]["start"])
    assert starts == {since.isoformat()}


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("2030-01-01T01:00:00+01:00", "error: --since 2030-01-01 00:00:00 is in the future"),
        ("2030-01-01T00:00:00Z", "error: --since 2030-01-01 00:00:00 is in the future"),
        ("2030-01-01", "error: --since 2030-01-01 00:00:00 is in the future"),
    ],
)
def test_report_ab_since_in_the_future_is_said_in_utc(given, said):
    """Checked before any target is resolved: no local cloud needed."""
    result = _invoke("report", "ab", "--since", given)
    assert result.exit_code == 1 and result.stdout == ""
    assert _said(result.stderr).startswith(said), result.stderr


@pytest.mark.parametrize("given", ["yesterday", "2026-13-01", "2026-12-05T25:00:00Z", "12/05/2026", ""])
def test_report_ab_since_that_is_not_a_time_is_a_usage_error_naming_the_option(given):
    result = _invoke("report", "ab", "--since", given)
    assert result.exit_code == 2 and result.stdout == ""
    said = _said(result.stderr)
    assert "Invalid value for '--since'" in said and "is not an ISO 8601 date or time" in said, said
    assert "2026-12-05T23:44:00Z" in said  # the forms it takes


def test_utc_datetime_param_type():
    convert = options.UTC_DATETIME.convert
    assert convert("2026-12-05T23:44:00Z", None, None) == datetime(2026, 12, 5, 23, 44)
    assert convert("2026-12-06T00:44:00+01:00", None, None) == datetime(2026, 12, 5, 23, 44)
    assert convert("2026-12-05T18:44:00-05:00", None, None) == datetime(2026, 12, 5, 23, 44)
    assert convert("2026-12-05 23:44:00.250000", None, None) == datetime(2026, 12, 5, 23, 44, 0, 250_000)
    assert convert("2026-12-05", None, None) == datetime(2026, 12, 5)
    aware = datetime(2026, 12, 5, 23, 44, tzinfo=UTC)
    assert convert(aware, None, None) == datetime(2026, 12, 5, 23, 44)  # a default given as a datetime


def test_monitor_run_publishes_and_prints_metrics(local_target):
    result = _invoke("monitor", "run", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    by = {r["variant_name"]: r for r in out["variants"]}
    assert by["v1"]["request_count"] + by["v2"]["request_count"] == 6_000
    assert by["v2"]["score_psi"] > 0.2 > by["v1"]["score_psi"]
    metrics = local_target.client("cloudwatch").list_metrics(
        Namespace="Trainserve/Predictions", MetricName="ScorePSI"
    )
    assert {m["Dimensions"][1]["Value"] for m in metrics["Metrics"]} == {"v1", "v2"}
    table = _invoke("monitor", "run")
    assert table.exit_code == 0 and "score PSI" in table.stdout and "metric(s) published" in table.stdout


def test_monitor_run_goes_through_the_local_clouds_monitoring_component(
    local_target, tmp_path, monkeypatch, config, moto_url, local_context
):
    """With the local cloud's monitoring component running, ``monitor run`` has it run the job: the run and
    its drift alarm show in ``local status`` too, and the command prints the alarm."""
    import os
    from datetime import UTC, datetime

    from trainserve.local.monitoring import MonitoringComponent

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TRAINSERVE_HOME", str(home))
    ctx = local_context(
        config, home, moto_url, warehouse_path=Path(local_target.warehouse["path"]), runtime_url=moto_url
    )
    comp = MonitoringComponent(interval_s=3600)
    comp.start(ctx)
    try:
        # the files a running daemon keeps: its state (a live pid) and its status snapshot with that pid
        (home / "local.json").write_text(json.dumps({"pid": os.getpid()}))
        status = {"updated_at": datetime.now(UTC).isoformat(timespec="seconds"), "pid": os.getpid()}
        status["components"] = {"monitoring": comp.status()}
        (home / "status.json").write_text(json.dumps(status))
        result = _invoke("monitor", "run")
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())
        assert "ALARM trainserve-prediction-drift: ScorePSI" in said and "on v2" in said
        assert comp.runs == 1 and comp.status()["alarms"][0]["name"] == "trainserve-prediction-drift"
    finally:
        comp.stop()
    # a status left by a daemon that is gone (another pid): the job runs in this process, alarm still shown
    status["pid"] = os.getpid() + 1_000_000
    (home / "status.json").write_text(json.dumps(status))
    out = json.loads(_invoke("monitor", "run", "--json").stdout)
    assert [a["name"] for a in out["alarms"]] == ["trainserve-prediction-drift"] and comp.runs == 1


def test_report_on_aws_without_warehouse_outputs_names_them(config, monkeypatch):
    target = Target(mode="aws", region="us-east-1", config=config, names=Names.local(config), warehouse={})
    monkeypatch.setattr(options, "resolve_target", lambda local: target)
    result = CliRunner().invoke(cli, ["report", "ab", "--aws"])
    assert result.exit_code == 1
    assert "WarehouseWorkgroup/WarehouseCluster" in result.output and "WarehouseSecretArn" in result.output


class _Payload:
    def __init__(self, body):
        self.body = body

    def read(self):
        return self.body


def test_monitor_run_on_aws_reports_a_failed_invocation(config, monkeypatch):
    calls = []

    class FakeLambda:
        def invoke(self, **kw):
            calls.append(kw)
            body = {
                "errorType": "WarehouseQueryError",
                "errorMessage": "Redshift statement s1 ended FAILED: boom",
            }
            return {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": _Payload(json.dumps(body).encode()),
            }

    target = Target(mode="aws", region="us-east-1", config=config, names=Names.local(config))
    monkeypatch.setattr(Target, "client", lambda self, service: FakeLambda())
    with pytest.raises(
        UserError, match=r"trainserve-monitor failed: WarehouseQueryError: Redshift statement s1 ended FAILED"
    ):
        monitor_cmd.run_aws(target)
    assert (
        calls[0]["FunctionName"] == "trainserve-monitor" and calls[0]["InvocationType"] == "RequestResponse"
    )


def test_boto3_is_not_used_against_real_aws_here():
    # the moto server fixture above is local; this guards the fake credentials set by conftest
    assert boto3.session.Session().get_credentials().access_key == "testing"
