"""The local cloud's fixes of moto's model packages: an approval keeps the package's metadata (as on AWS), and
CustomerMetadataProperties outside SageMaker's constraints are refused (as on AWS)."""

from __future__ import annotations

import uuid

import boto3
import pytest


@pytest.fixture
def sagemaker(moto_url):
    return boto3.client("sagemaker", endpoint_url=moto_url, region_name="us-east-1")


def _package(sm) -> str:
    sm.create_model_package_group(ModelPackageGroupName="g")
    return sm.create_model_package(
        ModelPackageGroupName="g",
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={
            "features_uri": "s3://b/features.json",
            "baseline_uri": "s3://b/baseline.json",
        },
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_approval_keeps_customer_metadata_and_description(sagemaker):
    arn = _package(sagemaker)
    sagemaker.update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="ok"
    )
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "ok"
    assert described["CustomerMetadataProperties"] == {
        "features_uri": "s3://b/features.json",
        "baseline_uri": "s3://b/baseline.json",
    }


def test_given_metadata_is_merged_and_removal_still_works(sagemaker):
    arn = _package(sagemaker)
    sagemaker.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={"note": "x"},
        CustomerMetadataPropertiesToRemove=["baseline_uri"],
    )
    props = sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert props == {"features_uri": "s3://b/features.json", "note": "x"}


INFERENCE = {
    "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
    "SupportedContentTypes": ["text/csv"],
    "SupportedResponseMIMETypes": ["application/json"],
}


@pytest.mark.parametrize(
    ("props", "named"),
    [
        ({"feature_names": '["a", "b"]'}, "customerMetadataProperties.feature_names"),
        ({"metrics": '{"accuracy": 0.9}'}, "customerMetadataProperties.metrics"),
        ({"long": "x" * 257}, "customerMetadataProperties.long"),
        ({"bad,key": "v"}, "Key 'bad,key'"),
    ],
)
def test_create_refuses_metadata_sagemaker_refuses(sagemaker, props, named):
    from botocore.exceptions import ClientError

    group = "refused-" + uuid.uuid4().hex[:8]
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError) as err:
        sagemaker.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties={"ok": "fine value 1.0", **props},
            InferenceSpecification=INFERENCE,
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert named in err.value.response["Error"]["Message"]
    listed = sagemaker.list_model_packages(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval"
    )
    assert listed["ModelPackageSummaryList"] == []


def test_update_refuses_an_invalid_value_and_keeps_the_package(sagemaker):
    from botocore.exceptions import ClientError

    arn = _package(sagemaker)
    with pytest.raises(ClientError) as err:
        sagemaker.update_model_package(
            ModelPackageArn=arn, CustomerMetadataProperties={"metrics": '{"f1": 0.9}'}
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "customerMetadataProperties.metrics" in err.value.response["Error"]["Message"]
    props = sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert "metrics" not in props


def test_valid_unicode_and_allowed_punctuation_accepted(sagemaker):
    group = "accepted-" + uuid.uuid4().hex[:8]
    sagemaker.create_model_package_group(ModelPackageGroupName=group)
    value = "accuracy=0.95 f1=0.93 roc_auc=nan s3://b/x-y/z_1.json user@example Größe +1"
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={"metrics": value, "x" * 128: "v" * 256},
        InferenceSpecification=INFERENCE,
    )["ModelPackageArn"]
    props = sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert props["metrics"] == value
