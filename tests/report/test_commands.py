"""``trainserve report ab`` and ``trainserve monitor run`` against a local cloud stand-in: a moto server
(registry, endpoint, S3, CloudWatch) on 127.0.0.1 and a generated DuckDB warehouse file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import duckdb
import pytest
from click.testing import CliRunner
from warehouse_fixture import UNIFORM_BASELINE, Arm, create_endpoint, create_schema, fill, register_versions

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
    assert rep["recommendation"]["action"] == "nothing to act on"
    assert "does not exist" in rep["recommendation"]["reason"]
    assert any("weights and SRM unavailable" in n for n in rep["notes"])


def test_report_ab_table_and_plot(local_target, tmp_path):
    png = tmp_path / "ab.png"
    result = _invoke("report", "ab", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert "PROMOTE" in result.stdout and "trainserve traffic promote v2" in result.stdout
    assert "Challengers vs champion" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "no training baseline" not in result.output


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
