"""End to end: the demo's flow on a real local cloud (its own state folder and ports), asserted on the result.

Nothing is stubbed: the daemon runs moto, the runtime with one model server per variant, the approval
watcher feeding the real release controller, the proxy behind the local API, Firehose staging, the warehouse
loader and the monitoring job. The test runs ``trainserve demo --json`` (one run: the demo takes half a
minute), keeps what ``trainserve.demo.run_demo`` returned to it, and then checks the command's output (one
JSON document on stdout, the progress and tables on stderr), the registry, the endpoint after each step, the
warehouse and the report.
"""

from __future__ import annotations

import json

import boto3
import click
import pytest
from click.testing import CliRunner

from trainserve.demo import DEFAULT_REQUESTS, DEFAULT_USERS
from trainserve.local.warehouse import query

REQUESTS = DEFAULT_REQUESTS  # the demo's own traffic: the test runs what `trainserve demo` runs
USERS = DEFAULT_USERS


def _free_base() -> int:
    """base, base+1 and base+2 free, below the ephemeral port range (``trainserve.local.ports``)."""
    from trainserve.local.ports import free_ports

    return free_ports(3)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("trainserve-home")
    mp.setenv("TRAINSERVE_HOME", str(home))
    mp.setenv("TRAINSERVE_PORT_BASE", str(_free_base()))
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        mp.delenv(key, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")

    from trainserve.cli import cli
    from trainserve.commands import demo as demo_cmd
    from trainserve.commands.local import stop
    from trainserve.target import resolve

    returned = []  # what run_demo returned to the command

    def run_demo(**kwargs):
        returned.append(real_run_demo(**kwargs))
        return returned[-1]

    real_run_demo = demo_cmd.run_demo
    mp.setattr(demo_cmd, "run_demo", run_demo)
    try:
        args = ["demo", "--requests", str(REQUESTS), "--users", str(USERS), "--json"]
        printed = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert printed.exit_code == 0, printed.output
        (result,) = returned
        target = resolve(local=True)
        yield result, target, printed
    finally:
        with click.Context(stop) as ctx:
            ctx.invoke(stop, timeout=20.0)
        mp.undo()


def test_demo_json_prints_one_json_document_on_stdout_and_the_rest_on_stderr(demo_run):
    result, target, printed = demo_run
    out = json.loads(printed.stdout)  # the whole of stdout: nothing before or after the document
    assert out["baseline_version"] == result.baseline_version == 1
    assert out["candidate_version"] == result.candidate_version == 2
    assert out["predictions"] == REQUESTS and out["feedback"] == result.feedback
    assert out["recommendation"]["action"] == "promote" and out["plot"] == result.plot
    # what is printed for people (the local cloud, the endpoint after each change, the monitoring, the A/B
    # report, the closing summary) is on stderr
    said = " ".join(printed.stderr.split())
    assert target.aws_endpoint_url in said
    assert "PROMOTE:" in said and "next: trainserve traffic promote v2" in said
    assert "Try next:" in said and "trainserve local stop" in said


def _weights(state):
    return {v["variant"]: round(v["desired_weight"], 6) for v in state["variants"] if v["desired_weight"] > 0}


def test_registry_has_both_versions_approved_with_metrics(demo_run):
    result, target, _ = demo_run
    sm = target.client("sagemaker")
    packages = sm.list_model_packages(
        ModelPackageGroupName=target.names.model_package_group, ModelApprovalStatus="Approved"
    )["ModelPackageSummaryList"]
    versions = sorted(p["ModelPackageVersion"] for p in packages)
    assert versions == [result.baseline_version, result.candidate_version] == [1, 2]
    for p in packages:
        described = sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
        props = described["CustomerMetadataProperties"]
        assert props["n_features"] == "30"  # the metadata survived the approval
        bucket, _, key = props["features_uri"].removeprefix("s3://").partition("/")
        features = json.loads(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        assert len(features["feature_names"]) == 30
        assert float(props["quality_value"]) >= target.config.quality_threshold
        assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("evaluation.json")


def test_endpoint_after_each_step(demo_run):
    result, target, _ = demo_run
    snaps = result.snapshots
    assert _weights(snaps["baseline"]) == {"v1": 1.0}
    assert snaps["baseline"]["champion"] == "v1"
    w = target.config.challenger_weight
    assert _weights(snaps["challenger"]) == {"v1": round(1 - w, 6), "v2": round(w, 6)}
    assert _weights(snaps["ramped"]) == {"v1": 0.5, "v2": 0.5}
    # the candidate is truly better, so the report says promote and the demo acts on it
    assert _weights(snaps["final"]) == {"v2": 1.0}
    assert snaps["final"]["champion"] == "v2"
    # each variant serves its own model version
    for snap in snaps.values():
        for v in snap["variants"]:
            assert v["model_package_arn"].endswith(f"/{v['variant'][1:]}")


def test_warehouse_has_one_row_per_prediction_with_variant_and_version(demo_run):
    result, target, _ = demo_run
    path = target.warehouse["path"]
    since = result.traffic_started_at.strftime("%Y-%m-%d %H:%M:%S.%f")
    _, rows = query(
        path,
        "SELECT variant_name, model_version, COUNT(*), COUNT(DISTINCT request_id) FROM prediction_log_dedup "
        "WHERE event_time >= ? GROUP BY 1, 2 ORDER BY 1",
        [since],
    )
    assert {r[0]: r[1] for r in rows} == {"v1": 1, "v2": 2}
    assert {r[0]: r[2] for r in rows} == result.by_variant
    assert all(r[2] == r[3] for r in rows)
    assert sum(r[2] for r in rows) == REQUESTS == result.predictions
    _, joined = query(
        path,
        "SELECT COUNT(*) FROM prediction_log_dedup p JOIN prediction_feedback_dedup f USING (request_id) "
        "WHERE p.event_time >= ?",
        [since],
    )
    assert joined[0][0] == result.feedback
    assert 0.8 * REQUESTS < result.feedback < REQUESTS


def test_report_recommends_promoting_the_better_candidate(demo_run):
    result, _, _ = demo_run
    rep = result.report
    assert result.recommendation["action"] == "promote"
    assert result.recommendation["command"] == "trainserve traffic promote v2"
    variants = {v["variant_name"]: v for v in rep["variants"]}
    assert variants["v2"]["accuracy"] > variants["v1"]["accuracy"]
    assert not rep["srm"]["mismatch"]
    # the traffic started once the proxy followed the 50/50 ramp, so the split check applies to all of it
    assert rep["srm"]["applicable"] is not False
    assert not rep["window"]["weights_changed_inside"]
    assert not rep.get("warnings")
    assert sum(v["requests"] for v in rep["variants"]) == REQUESTS


def test_monitoring_published_metrics_to_the_local_cloudwatch(demo_run):
    _, target, _ = demo_run
    cw = boto3.client("cloudwatch", endpoint_url=target.aws_endpoint_url, region_name=target.region)
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="Trainserve/Predictions")["Metrics"]}
    assert {"RequestCount", "OnlineAccuracy", "ScorePSI"} <= names
