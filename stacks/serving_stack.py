"""Serving stack: release controller (approval events -> endpoint), endpoint cleanup, prediction API.

The stack composes three constructs (``stacks/constructs/``) and wires them to the data, training and
warehouse stacks; the SageMaker endpoint itself is created and changed by the release controller, not by
CloudFormation, and removed by the cleanup custom resource when the stack is deleted.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

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

    Attributes: ``endpoint_name``, ``release`` (``ReleaseController``), ``release_function``,
    ``release_rule``, ``release_dlq``, ``release_dlq_alarm``, ``cleanup`` (``EndpointCleanup``),
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
        self.release_dlq_alarm = self.release.dlq_alarm

        self.cleanup = EndpointCleanup(self, "EndpointCleanup", config=config, data=data)
        self.cleanup_function = self.cleanup.function
        # On stack deletion the endpoint goes before the controller that could recreate it.
        self.cleanup.resource.node.add_dependency(self.release.function)

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
