"""The local cloud's CloudFormation additions to moto: ``cdk deploy`` creates stacks through change sets,
and one stack imports another's exports (``scripts/deploy_smoke.py`` runs the real deploy)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from trainserve.local import moto_patches

EXPORTING = {
    "Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}},
    "Outputs": {
        "BucketName": {"Value": {"Ref": "Bucket"}},
        "BucketArn": {"Value": {"Fn::GetAtt": ["Bucket", "Arn"]}, "Export": {"Name": "Data-BucketArn"}},
    },
}
IMPORTING = {
    "Resources": {
        "Topic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"DisplayName": {"Fn::ImportValue": "Data-BucketArn"}},
        }
    },
    "Outputs": {"Shown": {"Value": {"Fn::ImportValue": "Data-BucketArn"}}},
}


@pytest.fixture
def aws():
    moto_patches.install()
    with mock_aws():
        yield (
            boto3.client("cloudformation", region_name="us-east-1"),
            boto3.client("s3", region_name="us-east-1"),
        )


def deploy(cfn, name: str, template: dict, change_set: str = "c1", kind: str = "CREATE") -> None:
    cfn.create_change_set(
        StackName=name, ChangeSetName=change_set, ChangeSetType=kind, TemplateBody=json.dumps(template)
    )
    cfn.execute_change_set(ChangeSetName=change_set, StackName=name)


def outputs(cfn, name: str) -> dict[str, tuple[str, str | None]]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: (o["OutputValue"], o.get("ExportName")) for o in stack.get("Outputs", [])}


def test_a_stack_made_by_a_change_set_has_its_outputs_and_exports(aws):
    cfn, s3 = aws
    deploy(cfn, "Data", EXPORTING)
    [bucket] = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert outputs(cfn, "Data") == {
        "BucketName": (bucket, None),
        "BucketArn": (f"arn:aws:s3:::{bucket}", "Data-BucketArn"),
    }
    assert [(e["Name"], e["Value"]) for e in cfn.list_exports()["Exports"]] == [
        ("Data-BucketArn", f"arn:aws:s3:::{bucket}")
    ]


def test_a_change_set_resolves_another_stack_s_export(aws):
    cfn, s3 = aws
    deploy(cfn, "Data", EXPORTING)
    deploy(cfn, "Uses", IMPORTING)
    [bucket] = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert outputs(cfn, "Uses") == {"Shown": (f"arn:aws:s3:::{bucket}", None)}
    assert cfn.describe_stacks(StackName="Uses")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"


def test_an_update_by_change_set_replaces_the_stack_s_exports(aws):
    cfn, _ = aws
    deploy(cfn, "Data", EXPORTING)
    renamed = json.loads(json.dumps(EXPORTING))
    renamed["Outputs"]["BucketArn"]["Export"]["Name"] = "Data-Renamed"
    deploy(cfn, "Data", renamed, change_set="c2", kind="UPDATE")
    assert [e["Name"] for e in cfn.list_exports()["Exports"]] == ["Data-Renamed"]


def test_describing_a_deleted_stack_does_not_make_its_resources_again(aws):
    cfn, s3 = aws
    deploy(cfn, "Data", EXPORTING)
    stack_id = cfn.describe_stacks(StackName="Data")["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName="Data")
    deleted = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]  # as `cdk destroy` follows the deletion
    assert deleted["StackStatus"] == "DELETE_COMPLETE"
    assert deleted.get("Outputs") is None
    assert s3.list_buckets()["Buckets"] == []
    assert cfn.list_exports()["Exports"] == []
