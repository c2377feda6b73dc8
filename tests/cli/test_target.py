"""Which cloud a command talks to, when neither is reachable: the error says what to do."""

from __future__ import annotations

import os

import pytest

from trainserve.target import TargetError, aws_target


def test_no_local_cloud_and_no_credentials_says_both(monkeypatch, tmp_path, config):
    """No credentials anywhere (and no instance metadata lookup: nothing leaves the machine): the error names
    the missing credentials and the local cloud, not botocore's 'Unable to locate credentials' alone."""
    for key in list(os.environ):
        if key.startswith(
            ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION", "AWS_CONTAINER", "AWS_WEB_IDENTITY")
        ):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with pytest.raises(TargetError) as err:
        aws_target(config)
    said = str(err.value)
    assert "no local cloud is running, and no AWS credentials were found for us-east-1" in said
    assert "trainserve local start" in said


def test_the_deployed_target_reads_only_this_project_s_stacks(monkeypatch, config):
    """Another project in the same account (project_name trainserve-b: stacks TrainserveB*) shares the name
    prefix of trainserve's stacks: its outputs must not be taken for this project's."""
    import json

    import boto3
    from moto import mock_aws

    from stacks.config import Config
    from trainserve.target import STACK_PARTS

    def template(project: str) -> str:
        outputs = {
            "ModelPackageGroup": {"Value": f"{project}-models"},
            "EndpointName": {"Value": f"{project}-endpoint"},
        }
        return json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs})

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        cfn.create_stack(StackName="TrainserveTraining", TemplateBody=template("trainserve"))
        cfn.create_stack(StackName="TrainserveBTraining", TemplateBody=template("trainserve-b"))
        mine = aws_target(config)
        assert (mine.names.model_package_group, mine.names.endpoint_name) == (
            "trainserve-models",
            "trainserve-endpoint",
        )
        other = aws_target(Config.from_mapping({**config.as_dict(), "project_name": "trainserve-b"}))
        assert other.names.endpoint_name == "trainserve-b-endpoint"
    assert "Training" in STACK_PARTS


def test_no_region_says_which_variable_sets_it(monkeypatch, tmp_path, config):
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    with pytest.raises(
        TargetError, match="no AWS region configured for the deployed stacks: set AWS_DEFAULT_REGION"
    ):
        aws_target(config)
