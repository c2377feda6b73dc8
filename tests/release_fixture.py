"""A local target for the release commands' tests: a moto server on 127.0.0.1 (reset), the commands pointed at
it, the release controller's settings in the environment so its handler can run in-process against the same
server (as the local cloud's approval watcher runs it), registered model packages, and release events."""

from __future__ import annotations

import copy
import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import release_handler
from moto.core import DEFAULT_ACCOUNT_ID
from release_planner import ReleaseSettings

from trainserve.commands import options
from trainserve.target import Names, Target

REGION = "us-east-1"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
SAMPLE_EVENT = json.loads(
    (Path(__file__).parent / "lambdas" / "events" / "model_package_state_change.json").read_text()
)


def release_target(moto_url: str, config: Any, monkeypatch: Any) -> Target:
    """A fresh registry (with its model package group) on ``moto_url``, as the commands' local target."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    names = Names.local(config)
    local = Target(mode="local", region=REGION, config=config, names=names, aws_endpoint_url=moto_url)
    monkeypatch.setattr(options, "resolve_target", lambda _local: local)
    # the local endpoint lock of the traffic commands: one folder for these tests, not the project's .trainserve
    monkeypatch.setenv("TRAINSERVE_HOME", str(Path(tempfile.gettempdir()) / "trainserve-release-tests"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)  # the release handler's boto3 clients
    settings = ReleaseSettings(
        project_name=config.project_name,
        endpoint_name=names.endpoint_name,
        model_package_group=names.model_package_group,
        challenger_weight=0.1,
        max_live_variants=2,
        guardrail_wait_seconds=0,
        model_execution_role_arn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/model",
    )
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    local.client("sagemaker").create_model_package_group(ModelPackageGroupName=names.model_package_group)
    return local


def register(target: Target, n: int, inputs: str | None = None) -> list[str]:
    """``n`` model packages, pending approval (with ``inputs`` as their ``features_sha256`` metadata); their
    ARNs."""
    sm = target.client("sagemaker")
    metadata = {"CustomerMetadataProperties": {"features_sha256": inputs}} if inputs else {}
    return [
        sm.create_model_package(
            **metadata,
            ModelPackageGroupName=target.names.model_package_group,
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={
                "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://a/{i}/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )["ModelPackageArn"]
        for i in range(n)
    ]


def release(target: Target, version: int, status: str) -> dict:
    """What the approval watcher does after a registry change: the state change event -> the handler."""
    event = copy.deepcopy(SAMPLE_EVENT)
    event["detail"].update(
        ModelPackageGroupName=target.names.model_package_group,
        ModelPackageVersion=version,
        ModelApprovalStatus=status,
    )
    event["detail"].pop("ModelPackageArn")
    return release_handler.handler(event, None)
