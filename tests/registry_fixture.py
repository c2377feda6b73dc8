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
