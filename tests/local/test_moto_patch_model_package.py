"""The local cloud's fix of moto's UpdateModelPackage: an approval keeps the package's metadata (as on AWS)."""

from __future__ import annotations

import boto3
import pytest
from moto.server import ThreadedMotoServer

from trainserve.local import moto_patches


@pytest.fixture
def sagemaker():
    moto_patches.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield boto3.client("sagemaker", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
    finally:
        server.stop()


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
