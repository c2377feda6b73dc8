"""A live endpoint in moto for the proxy's tests: a model package group with one approved package per
variant (the feature names in a ``features.json`` in S3 named by the ``features_uri`` metadata, as training
registers them), and an endpoint whose production variants carry the given weights."""

from __future__ import annotations

import contextlib
import json
from typing import Any


def create_live_endpoint(
    sm: Any, group: str, endpoint: str, features: list[str], weights: dict[str, float]
) -> None:
    """``weights``: variant name -> initial weight, one approved model package each."""
    import boto3

    endpoint_url = sm.meta.endpoint_url
    s3 = boto3.client(
        "s3",
        region_name=sm.meta.region_name,
        **(
            {}
            if endpoint_url.endswith(".amazonaws.com")  # moto in-process (mock_aws sets credentials)
            else {
                "endpoint_url": endpoint_url,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
            }
        ),
    )
    bucket = f"{group}-features"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    sm.create_model_package_group(ModelPackageGroupName=group)
    for n, _ in enumerate(weights, start=1):
        key = f"v{n}/features.json"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"feature_names": features}).encode())
        sm.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={
                "features_uri": f"s3://{bucket}/{key}",
                "n_features": str(len(features)),
            },
            InferenceSpecification={
                "Containers": [{"Image": "img"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )
    sm.create_model(
        ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/r", PrimaryContainer={"Image": "i"}
    )
    create_endpoint_config(sm, "ec", weights)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName="ec")


def create_endpoint_config(sm: Any, name: str, weights: dict[str, float]) -> None:
    """An endpoint config serving model "m" as the variants of ``weights`` (name -> initial weight)."""
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": w,
            }
            for variant, w in weights.items()
        ],
    )
