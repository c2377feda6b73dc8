"""The local cloud's fix of moto's UpdateModelPackage: an approval keeps the package's metadata (as on AWS)."""

from __future__ import annotations

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
        CustomerMetadataProperties={"feature_names": '["a", "b"]', "baseline_uri": "s3://b/baseline.json"},
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
        "feature_names": '["a", "b"]',
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
    assert props == {"feature_names": '["a", "b"]', "note": "x"}
