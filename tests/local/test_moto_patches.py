"""The local cloud's additions to moto, over HTTP with plain boto3 (as the release controller calls them)."""

from __future__ import annotations

import boto3
import moto
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from trainserve.local import moto_patches

# one worker runs this module (its tests share module fixtures) under `pytest -n 2 --dist loadgroup`
pytestmark = pytest.mark.xdist_group("test_moto_patches")

TEST_ROLE = "arn:aws:iam::123456789012:role/model-execution"
GUARDRAILS = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "WaitIntervalInSeconds": 300,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
        },
        "TerminationWaitInSeconds": 300,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "trainserve-errors"}]},
}


@pytest.fixture(scope="module")
def sm():
    moto_patches.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    client = boto3.client(
        "sagemaker",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for name in ("patch-m1", "patch-m2"):
        client.create_model(
            ModelName=name,
            ExecutionRoleArn=TEST_ROLE,
            PrimaryContainer={"Image": "image", "ModelDataUrl": f"s3://bucket/{name}/model.tar.gz"},
        )
    yield client
    server.stop()


def _config(sm, name: str, variants: list[tuple[str, str, float, int]]) -> None:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": m,
                "InitialVariantWeight": w,
                "InitialInstanceCount": n,
                "InstanceType": "ml.m5.large",
            }
            for v, m, w, n in variants
        ],
    )


def _variants(sm, endpoint: str) -> dict[str, dict]:
    return {v["VariantName"]: v for v in sm.describe_endpoint(EndpointName=endpoint)["ProductionVariants"]}


def test_internals_the_patches_rely_on_are_there():
    """Fails when a moto upgrade moves what the patches use: re-check them against the new moto."""
    assert moto.__version__ == moto_patches.MOTO_VERSION_TESTED
    moto_patches.check_internals()


def test_install_is_idempotent():
    from moto.sagemaker.models import SageMakerModelBackend

    moto_patches.install()
    first = SageMakerModelBackend.update_endpoint_weights_and_capacities
    moto_patches.install()
    assert SageMakerModelBackend.update_endpoint_weights_and_capacities is first


def test_update_endpoint_switches_config_variants_and_weights(sm):
    _config(sm, "patch-c1", [("v1", "patch-m1", 1.0, 1)])
    sm.create_endpoint(EndpointName="patch-e1", EndpointConfigName="patch-c1")
    _config(sm, "patch-c2", [("v1", "patch-m1", 0.7, 1), ("v2", "patch-m2", 0.3, 2)])

    arn = sm.update_endpoint(
        EndpointName="patch-e1",
        EndpointConfigName="patch-c2",
        DeploymentConfig=GUARDRAILS,
        RetainAllVariantProperties=False,
    )["EndpointArn"]

    assert arn.endswith(":endpoint/patch-e1")
    desc = sm.describe_endpoint(EndpointName="patch-e1")
    assert desc["EndpointConfigName"] == "patch-c2"
    assert desc["EndpointStatus"] == "InService"
    variants = _variants(sm, "patch-e1")
    assert {k: v["CurrentWeight"] for k, v in variants.items()} == {"v1": 0.7, "v2": 0.3}
    assert {k: v["DesiredWeight"] for k, v in variants.items()} == {"v1": 0.7, "v2": 0.3}
    assert variants["v2"]["CurrentInstanceCount"] == 2


def test_update_endpoint_errors_are_validation_exceptions(sm):
    _config(sm, "patch-c3", [("v1", "patch-m1", 1.0, 1)])
    with pytest.raises(ClientError) as err:
        sm.update_endpoint(EndpointName="patch-missing", EndpointConfigName="patch-c3")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    sm.create_endpoint(EndpointName="patch-e3", EndpointConfigName="patch-c3")
    with pytest.raises(ClientError) as err:
        sm.update_endpoint(EndpointName="patch-e3", EndpointConfigName="patch-no-such-config")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert sm.describe_endpoint(EndpointName="patch-e3")["EndpointConfigName"] == "patch-c3"


def test_weights_only_update_keeps_instance_counts_and_zero_weights(sm):
    _config(sm, "patch-c4", [("v1", "patch-m1", 0.9, 2), ("v2", "patch-m2", 0.0, 1)])
    sm.create_endpoint(EndpointName="patch-e4", EndpointConfigName="patch-c4")
    # a challenger created at weight 0 shows weight 0 (moto dropped it)
    assert _variants(sm, "patch-e4")["v2"]["CurrentWeight"] == 0.0

    sm.update_endpoint_weights_and_capacities(
        EndpointName="patch-e4",
        DesiredWeightsAndCapacities=[
            {"VariantName": "v1", "DesiredWeight": 0.0},
            {"VariantName": "v2", "DesiredWeight": 1.0},
        ],
    )
    variants = _variants(sm, "patch-e4")
    assert variants["v1"]["CurrentWeight"] == 0.0 and variants["v2"]["CurrentWeight"] == 1.0
    assert variants["v1"]["CurrentInstanceCount"] == 2 and variants["v1"]["DesiredInstanceCount"] == 2
    assert variants["v2"]["CurrentInstanceCount"] == 1

    sm.update_endpoint_weights_and_capacities(
        EndpointName="patch-e4",
        DesiredWeightsAndCapacities=[{"VariantName": "v2", "DesiredInstanceCount": 3}],
    )
    variants = _variants(sm, "patch-e4")
    assert variants["v2"]["CurrentInstanceCount"] == 3 and variants["v2"]["CurrentWeight"] == 1.0


def test_update_model_package_keeps_what_the_request_leaves_out(sm):
    sm.create_model_package_group(ModelPackageGroupName="patch-group")
    arn = sm.create_model_package(
        ModelPackageGroupName="patch-group",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "image", "ModelDataUrl": "s3://bucket/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        CustomerMetadataProperties={
            "features_uri": "s3://bucket/features.json",
            "baseline_uri": "s3://bucket/baseline.json",
        },
    )["ModelPackageArn"]

    sm.update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="looks good"
    )
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert desc["ModelApprovalStatus"] == "Approved"
    assert (
        desc["CustomerMetadataProperties"]["features_uri"] == "s3://bucket/features.json"
    )  # moto wiped these

    sm.update_model_package(
        ModelPackageArn=arn,
        CustomerMetadataProperties={"reviewed_by": "alice"},
        CustomerMetadataPropertiesToRemove=["baseline_uri"],
    )
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert desc["ModelApprovalStatus"] == "Approved"  # an update without a status keeps it
    assert desc["ApprovalDescription"] == "looks good"
    assert desc["CustomerMetadataProperties"] == {
        "features_uri": "s3://bucket/features.json",
        "reviewed_by": "alice",
    }
