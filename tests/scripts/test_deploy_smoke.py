"""``scripts/deploy_smoke.py``: the real ``cdk bootstrap``, ``cdk deploy`` and ``cdk destroy`` of the app into a
moto server on 127.0.0.1 (the CDK CLI from node_modules; about 35 s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_deploy_path_into_moto_gets_as_far_as_moto_allows(tmp_path):
    assert shutil.which("npx") or (ROOT / "node_modules" / ".bin" / "cdk").exists(), (
        "make setup installs the CLI"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deploy_smoke.py"), "--json", "--keep-output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["bootstrap"]["exit_code"] == 0
    assert report["synth"]["exit_code"] == 0
    stacks = {s["stack"]: s for s in report["stacks"]}
    # every stack of the app was tried, in dependency order
    assert list(stacks) == [
        "TrainserveData",
        "TrainserveTraining",
        "TrainserveWarehouse",
        "TrainserveServing",
        "TrainserveMonitoring",
    ]
    data, training = stacks["TrainserveData"], stacks["TrainserveTraining"]
    assert data["status"] == training["status"] == "CREATE_COMPLETE"
    assert data["deploy_exit_code"] == training["deploy_exit_code"] == 0
    # the training stack imports the data stack's bucket ARNs: the exports are there
    assert {"TrainserveData-ArtifactsBucketArn", "TrainserveData-DataBucketArn"} <= set(data["exports"])
    assert (
        data["resources_created"] >= 12
    )  # key, alias, 4 buckets, their auto-delete resources, role, function
    assert "AWS::SageMaker::ModelPackageGroup" in training["types_skipped"]  # moto's CloudFormation skips it
    # a stack moto cannot create is reported with CloudFormation's reason, not hidden
    for name in ("TrainserveWarehouse", "TrainserveServing", "TrainserveMonitoring"):
        if stacks[name]["deploy_exit_code"] != 0:
            assert stacks[name]["error"]
    # after destroy nothing of the app's stacks is left: no stack, no bucket
    assert report["left_after_destroy"] == {"stacks": {}, "buckets": {}}
    assert "cdk deploy" in (tmp_path / "cdk.log").read_text()
    assert proc.returncode == (
        0 if report["deploy"]["exit_code"] == report["destroy"]["exit_code"] == 0 else 1
    )
