"""A live endpoint in moto for the proxy's tests: a model package group with one approved package per
variant (the feature names in the metadata, as training registers them), and an endpoint whose production
variants carry the given weights."""

from __future__ import annotations

import json
from typing import Any


def create_live_endpoint(
    sm: Any, group: str, endpoint: str, features: list[str], weights: dict[str, float]
) -> None:
    """``weights``: variant name -> initial weight, one approved model package each."""
    sm.create_model_package_group(ModelPackageGroupName=group)
    for _ in weights:
        sm.create_model_package(
            ModelPackageGroupName=group,
            ModelApprovalStatus="Approved",
            CustomerMetadataProperties={"feature_names": json.dumps(features)},
            InferenceSpecification={
                "Containers": [{"Image": "img"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )
    sm.create_model(
        ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/r", PrimaryContainer={"Image": "i"}
    )
    sm.create_endpoint_config(
        EndpointConfigName="ec",
        ProductionVariants=[
            {
                "VariantName": name,
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": w,
            }
            for name, w in weights.items()
        ],
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName="ec")
