"""Serving stack: release controller (approval events -> endpoint), endpoint cleanup, prediction API.

The stack composes three constructs (``stacks/constructs/``) and wires them to the data, training and
warehouse stacks; the SageMaker endpoint itself is created and changed by the release controller, not by
CloudFormation, and removed by the cleanup custom resource when the stack is deleted. The endpoint's log group
(``/aws/sagemaker/Endpoints/{endpoint}``, which SageMaker would otherwise create unencrypted and never
expiring) is the stack's own.

Deletion order (CloudFormation deletes in reverse dependency order): everything of the release controller
(rule, its permission, the function, its async invoke config, its role policy) first, so nothing can create an
endpoint any more; then the cleanup, which deletes the endpoint and waits for it to be gone; then the
endpoint's log group, which nothing writes to any more.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks import common
from stacks.common import PROJECT_ROOT
from stacks.config import Config
from stacks.constructs.endpoint_access import rollback_alarm_names
from stacks.constructs.endpoint_cleanup import EndpointCleanup
from stacks.constructs.prediction_api import PROXY_METRICS_NAMESPACE, PredictionApi
from stacks.constructs.release_controller import ReleaseController, release_event_pattern
from stacks.data_stack import DataStack
from stacks.training_stack import TrainingStack

INFERENCE_DIR = PROJECT_ROOT / "inference"

__all__ = ["ServingStack", "release_event_pattern", "rollback_alarm_names"]


class ServingStack(Stack):
    """Approval events drive the release controller; the prediction API fronts the endpoint it owns.

    Attributes: ``endpoint_name``, ``endpoint_log_group``, ``release`` (``ReleaseController``),
    ``release_function``, ``release_rule``, ``release_dlq``, ``cleanup`` (``EndpointCleanup``),
    ``cleanup_function``, ``prediction_api`` (``PredictionApi``), ``proxy_function``, ``api`` (RestApi),
    ``api_key``, ``usage_plan``, ``serving_image`` (``DockerImageAsset`` or ``None``), ``serving_image_uri``
    (``""`` for the scikit-learn container), ``metrics_namespace`` (the proxy's custom metrics).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        data: DataStack,
        training: TrainingStack,
        warehouse: Any | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.endpoint_name = config.endpoint_name
        self.metrics_namespace = PROXY_METRICS_NAMESPACE

        self.serving_image: ecr_assets.DockerImageAsset | None = None
        self.serving_image_uri = ""
        if config.serving_image == "fast":
            # Synthesized (files copied into the cloud assembly); built and pushed by `cdk deploy`.
            self.serving_image = ecr_assets.DockerImageAsset(
                self, "ServingImage", directory=str(INFERENCE_DIR), exclude=["__pycache__", "*.pyc"]
            )
            self.serving_image_uri = self.serving_image.image_uri
            self.serving_image.repository.grant_pull(training.model_execution_role)

        self.release = ReleaseController(
            self,
            "ReleaseController",
            config=config,
            data=data,
            training=training,
            serving_image_uri=self.serving_image_uri,
        )
        self.release_function = self.release.function
        self.release_rule = self.release.rule
        self.release_dlq = self.release.dlq

        # SageMaker writes the endpoint's container logs here; created before any endpoint can exist.
        self.endpoint_log_group = logs.LogGroup(
            self,
            "EndpointLogs",
            log_group_name=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
            retention=common._retention(config.log_retention_days),
            encryption_key=data.key,
            removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
        )

        self.cleanup = EndpointCleanup(self, "EndpointCleanup", config=config, data=data)
        self.cleanup_function = self.cleanup.function
        # Deleted after the endpoint is gone (else SageMaker would recreate it, unencrypted, for late logs).
        self.cleanup.resource.node.add_dependency(self.endpoint_log_group)
        # Every resource of the controller (rule, permission, function, invoke config, role and policy) depends
        # on the cleanup resource: on stack deletion they all go BEFORE the cleanup deletes the endpoint, so
        # no approval event, queued retry or running invocation can recreate it afterwards.
        self.release.node.add_dependency(self.cleanup.resource)

        self.prediction_api = PredictionApi(
            self, "PredictionApi", config=config, data=data, warehouse=warehouse
        )
        self.proxy_function = self.prediction_api.function
        self.api = self.prediction_api.api
        self.api_key = self.prediction_api.api_key
        self.usage_plan = self.prediction_api.usage_plan

        outputs = {
            "EndpointName": (self.endpoint_name, "SageMaker endpoint (created by the release controller)"),
            "ReleaseFunction": (self.release_function.function_name, "Release controller Lambda"),
            "ProxyFunction": (self.proxy_function.function_name, "Prediction proxy Lambda"),
            "ReleaseDlq": (self.release_dlq.queue_name, "Release events that failed after retries"),
            "PredictionApiUrl": (self.api.url, "Prediction API base URL"),
            "PredictionApiKeyId": (
                self.api_key.key_id,
                "API key id (aws apigateway get-api-key --include-value)",
            ),
        }
        for key, (value, description) in outputs.items():
            CfnOutput(self, key, value=value, description=description)
