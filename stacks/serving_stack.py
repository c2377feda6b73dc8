"""Serving stack: release controller (approval events -> endpoint), endpoint cleanup, prediction API."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Aws, CfnOutput, CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.common import PROJECT_ROOT, _retention, acknowledge, python_function
from stacks.config import Config
from stacks.data_stack import DataStack
from stacks.training_stack import DATA_CAPTURE_PREFIX, SAGEMAKER_PRINCIPAL, TrainingStack, sagemaker_arn

INFERENCE_DIR = PROJECT_ROOT / "inference"
RELEASE_EVENT_PATTERN_FILE = PROJECT_ROOT / "lambdas" / "release_controller" / "event_pattern.json"
RELEASE_MAX_EVENT_AGE = Duration.hours(6)
RELEASE_RETRY_ATTEMPTS = 2
# The namespace the proxy publishes its custom metrics in (lambdas/proxy/prediction_log.py METRIC_NAMESPACE).
PROXY_METRICS_NAMESPACE = "Trainserve/Proxy"

PREDICT_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="PredictRequest",
    type=apigw.JsonSchemaType.OBJECT,
    required=["instances"],
    properties={
        "instances": apigw.JsonSchema(type=apigw.JsonSchemaType.ARRAY, min_items=1),
        "user_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=256),
    },
)
FEEDBACK_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="FeedbackRequest",
    type=apigw.JsonSchemaType.OBJECT,
    required=["request_id", "outcome"],
    properties={
        "request_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128),
        "outcome": apigw.JsonSchema(type=apigw.JsonSchemaType.INTEGER, enum=[0, 1]),
    },
)


def release_event_pattern(model_package_group: str) -> events.EventPattern:
    """The release rule's pattern: ``lambdas/release_controller/event_pattern.json`` (the controller's own
    statement of the events it handles) narrowed to this model package group."""
    pattern = json.loads(RELEASE_EVENT_PATTERN_FILE.read_text())
    detail = {**pattern.get("detail", {}), "ModelPackageGroupName": [model_package_group]}
    return events.EventPattern(source=pattern["source"], detail_type=pattern["detail-type"], detail=detail)


def rollback_alarm_names(config: Config) -> list[str]:
    """The endpoint alarms guarded updates roll back on (created with these names by the monitoring stack)."""
    return [f"{config.project_name}-endpoint-5xx", f"{config.project_name}-endpoint-latency-p99"]


def metrics_namespace(config: Config) -> str:
    """The CloudWatch namespace the proxy publishes its custom metrics in (its PutMetricData condition)."""
    return PROXY_METRICS_NAMESPACE


class ServingStack(Stack):
    """Approval events drive the release controller; the prediction API fronts the endpoint it owns.

    Attributes: ``endpoint_name``, ``release_function``, ``release_rule``, ``release_dlq``,
    ``release_dlq_alarm``, ``cleanup_function``, ``proxy_function``, ``api`` (RestApi), ``api_key``,
    ``usage_plan``, ``serving_image`` (``DockerImageAsset`` or ``None``), ``serving_image_uri`` (``""`` for
    the scikit-learn container), ``metrics_namespace``.
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
        self.data = data
        self.training = training
        self.endpoint_name = config.endpoint_name
        self.metrics_namespace = metrics_namespace(config)
        self._endpoint_arn = sagemaker_arn(f"endpoint/{config.endpoint_name}")
        self._group = config.model_package_group_name

        self.serving_image: ecr_assets.DockerImageAsset | None = None
        self.serving_image_uri = ""
        if config.serving_image == "fast":
            self.serving_image = ecr_assets.DockerImageAsset(
                self, "ServingImage", directory=str(INFERENCE_DIR), exclude=["__pycache__", "*.pyc"]
            )
            self.serving_image_uri = self.serving_image.image_uri
            self.serving_image.repository.grant_pull(training.model_execution_role)

        self._release_controller()
        self._cleanup()
        self._prediction_api(warehouse)

        CfnOutput(
            self,
            "EndpointName",
            value=self.endpoint_name,
            description="SageMaker endpoint (controller-owned)",
        )
        CfnOutput(
            self,
            "ReleaseFunction",
            value=self.release_function.function_name,
            description="Release controller",
        )
        CfnOutput(
            self, "ProxyFunction", value=self.proxy_function.function_name, description="Prediction proxy"
        )
        CfnOutput(self, "ReleaseDlq", value=self.release_dlq.queue_name, description="Failed release events")
        CfnOutput(self, "PredictionApiUrl", value=self.api.url, description="Prediction API base URL")
        CfnOutput(
            self, "PredictionApiKeyId", value=self.api_key.key_id, description="API key id (get-api-key)"
        )

    # -------------------------------------------------------------------------------- release controller
    def _release_controller(self) -> None:
        config, data, training = self.config, self.data, self.training
        project = config.project_name
        self.release_dlq = sqs.Queue(
            self,
            "ReleaseFailures",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=data.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.release_dlq,
            "AwsSolutions-SQS3",
            "This queue is itself the on-failure destination (dead-letter queue) of the release controller.",
        )
        self.release_dlq_alarm = cloudwatch.Alarm(
            self,
            "ReleaseDlqAlarm",
            alarm_name=f"{project}-release-failures",
            alarm_description="A model approval/rejection event could not be applied to the endpoint",
            metric=self.release_dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        role = self._function_role("ReleaseControllerRole", "release controller")
        self.release_function = python_function(
            self,
            "ReleaseController",
            config=config,
            code_dir="release_controller",
            handler="release_handler.handler",
            description="Applies model approvals/rejections to the endpoint's production variants",
            environment={
                "PROJECT_NAME": project,
                "ENDPOINT_NAME": config.endpoint_name,
                "MODEL_PACKAGE_GROUP": self._group,
                "CHALLENGER_WEIGHT": str(config.challenger_weight),
                "MAX_LIVE_VARIANTS": str(config.max_live_variants),
                "INSTANCE_TYPE": config.serving_instance_type,
                "INSTANCE_COUNT": str(config.serving_instance_count),
                "DATA_CAPTURE_ENABLED": "true" if config.data_capture_enabled else "false",
                "DATA_CAPTURE_PERCENT": str(config.data_capture_sampling_percent),
                "DATA_CAPTURE_S3_URI": f"s3://{data.data_bucket.bucket_name}/{DATA_CAPTURE_PREFIX}",
                "MODEL_EXECUTION_ROLE_ARN": training.model_execution_role.role_arn,
                "ROLLBACK_ALARMS": ",".join(rollback_alarm_names(config)),
                "TRAFFIC_ROUTING": config.traffic_routing,
                "GUARDRAIL_WAIT_SECONDS": str(config.guardrail_wait_seconds),
                "SERVING_IMAGE_URI": self.serving_image_uri,
            },
            timeout=Duration.minutes(2),
            key=data.key,
            role=role,
        )
        self._allow_own_logs(role, self.release_function)
        self.release_function.configure_async_invoke(
            retry_attempts=RELEASE_RETRY_ATTEMPTS,
            max_event_age=RELEASE_MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.release_dlq),
        )
        self._grant_endpoint_management(role, with_create=True)
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                "Added by CDK's SQS on-failure destination grant: data-key actions on the project key only, "
                "needed to send failed events to the KMS-encrypted dead-letter queue.",
            )

        self.release_rule = events.Rule(
            self,
            "ModelPackageStateChangeRule",
            description=f"{project}: approval/rejection of a model in {self._group} -> release controller",
            event_pattern=release_event_pattern(self._group),
            targets=[
                targets.LambdaFunction(
                    self.release_function,
                    retry_attempts=RELEASE_RETRY_ATTEMPTS,
                    max_event_age=RELEASE_MAX_EVENT_AGE,
                )
            ],
        )

    def _grant_endpoint_management(self, role: iam.Role, *, with_create: bool) -> None:
        """SageMaker actions on the controller-owned ``{project}-*`` endpoints, configs and models."""
        project = self.config.project_name
        endpoint_actions = ["sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"]
        config_actions = ["sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig"]
        model_actions = ["sagemaker:DescribeModel", "sagemaker:DeleteModel"]
        if with_create:
            endpoint_actions += [
                "sagemaker:CreateEndpoint",
                "sagemaker:UpdateEndpoint",
                "sagemaker:UpdateEndpointWeightsAndCapacities",
            ]
            config_actions += ["sagemaker:CreateEndpointConfig"]
            model_actions += ["sagemaker:CreateModel"]
        resources = {
            "Endpoints": (endpoint_actions, sagemaker_arn(f"endpoint/{project}-*")),
            "EndpointConfigs": (config_actions, sagemaker_arn(f"endpoint-config/{project}-*")),
            "Models": (model_actions, sagemaker_arn(f"model/{project}-*")),
        }
        for sid, (actions, arn) in resources.items():
            role.add_to_policy(iam.PolicyStatement(sid=f"Own{sid}", actions=sorted(actions), resources=[arn]))
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::{_nag_arn(arn)}]",
                "The controller creates these resources with generated names; every name starts with the "
                "project prefix, which this ARN pattern pins.",
            )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListControllerResources",
                actions=["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"],
                resources=["*"],
            )
        )
        if not with_create:
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::*]",
                "SageMaker List* actions support no resource-level permissions; the handler filters the "
                "results to names with the project prefix.",
            )
            return
        role.add_to_policy(
            iam.PolicyStatement(
                sid="TagControllerResources",
                actions=["sagemaker:AddTags", "sagemaker:DeleteTags", "sagemaker:ListTags"],
                resources=[
                    sagemaker_arn(f"endpoint/{project}-*"),
                    sagemaker_arn(f"endpoint-config/{project}-*"),
                    sagemaker_arn(f"model/{project}-*"),
                ],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadRegistry",
                actions=["sagemaker:DescribeModelPackageGroup", "sagemaker:ListModelPackages"],
                resources=[self.training.model_package_group_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelPackages",
                actions=["sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages"],
                resources=[sagemaker_arn(f"model-package/{self._group}/*")],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ListModelPackages",
                actions=["sagemaker:ListModelPackages"],
                resources=["*"],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="PassModelExecutionRole",
                actions=["iam:PassRole"],
                resources=[self.training.model_execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RollbackAlarms",
                actions=["cloudwatch:DescribeAlarms"],
                resources=[
                    f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:{name}"
                    for name in rollback_alarm_names(self.config)
                ],
            )
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{_nag_arn(sagemaker_arn(f'model-package/{self._group}/*'))}]",
            "Model package versions are numbered by SageMaker at registration; the ARN is scoped to this group.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "sagemaker:List* (endpoints, configs, models, model packages) support no resource-level "
            "permissions; X-Ray trace upload has none either.",
        )

    # --------------------------------------------------------------------------------------------- cleanup
    def _cleanup(self) -> None:
        role = self._function_role("EndpointCleanupRole", "endpoint cleanup")
        self.cleanup_function = python_function(
            self,
            "EndpointCleanup",
            config=self.config,
            code_dir="cleanup",
            handler="cleanup_handler.handler",
            description="On stack deletion removes the controller-created endpoints, configs and models",
            environment={"PROJECT_NAME": self.config.project_name, "ENDPOINT_NAME": self.endpoint_name},
            timeout=Duration.minutes(15),
            key=self.data.key,
            role=role,
        )
        self._allow_own_logs(role, self.cleanup_function)
        self._grant_endpoint_management(role, with_create=False)
        self.cleanup_resource = CustomResource(
            self,
            "EndpointCleanupResource",
            service_token=self.cleanup_function.function_arn,
            resource_type="Custom::EndpointCleanup",
            properties={"ProjectName": self.config.project_name, "EndpointName": self.endpoint_name},
        )
        # Delete the endpoint before the controller that could recreate it is gone (reverse creation order).
        self.cleanup_resource.node.add_dependency(self.release_function)

    # ---------------------------------------------------------------------------------------- prediction API
    def _prediction_api(self, warehouse: Any | None) -> None:
        config, data = self.config, self.data
        predictions_stream = getattr(warehouse, "predictions_stream_name", "") if warehouse else ""
        feedback_stream = getattr(warehouse, "feedback_stream_name", "") if warehouse else ""

        role = self._function_role("ProxyRole", "prediction proxy")
        self.proxy_function = python_function(
            self,
            "PredictionProxy",
            config=config,
            code_dir="proxy",
            handler="proxy_handler.handler",
            description="Prediction API: routes to the endpoint's variants, logs predictions and feedback",
            environment={
                "ENDPOINT_NAME": config.endpoint_name,
                "MODEL_PACKAGE_GROUP": self._group,
                "PREDICTIONS_STREAM": predictions_stream,
                "FEEDBACK_STREAM": feedback_stream,
                "SERVING_ENABLED": "true",
                "TARGET_VARIANT": "",
                "DECISION_THRESHOLD": str(config.decision_threshold),
                "LOG_SAMPLE_RATE": str(config.log_sample_rate),
                "STICKY_ASSIGNMENT": "true" if config.sticky_assignment else "false",
            },
            timeout=Duration.seconds(29),
            memory_size=512,
            key=data.key,
            role=role,
        )
        self._allow_own_logs(role, self.proxy_function)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeEndpoint",
                actions=["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
                resources=[self._endpoint_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelPackages",
                actions=["sagemaker:DescribeModelPackage"],
                resources=[sagemaker_arn(f"model-package/{self._group}/*")],
            )
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{_nag_arn(sagemaker_arn(f'model-package/{self._group}/*'))}]",
            "The proxy reads the feature schema of whichever registered version is live; scoped to this group.",
        )
        stream_arns = [
            arn
            for arn in (
                getattr(warehouse, "predictions_stream_arn", None) if warehouse else None,
                getattr(warehouse, "feedback_stream_arn", None) if warehouse else None,
            )
            if arn
        ]
        if stream_arns:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="LogToFirehose",
                    actions=["firehose:PutRecordBatch", "firehose:PutRecord"],
                    resources=stream_arns,
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ProxyMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": self.metrics_namespace}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData and X-Ray trace upload support no resource-level permissions; metrics are "
            "limited to the project's namespace by a condition.",
        )

        access_logs = logs.LogGroup(
            self,
            "PredictionApiAccessLogs",
            retention=_retention(config.log_retention_days),
            encryption_key=data.key,
            removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "PredictionApi",
            rest_api_name=f"{config.project_name}-predictions",
            description=f"{config.project_name}: predictions and feedback (API key required)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name="prod",
                tracing_enabled=True,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
                throttling_rate_limit=config.api_throttle_rate,
                throttling_burst_limit=config.api_throttle_burst,
            ),
        )
        validator = apigw.RequestValidator(
            self,
            "PredictionApiValidator",
            rest_api=self.api,
            validate_request_body=True,
            validate_request_parameters=True,
        )
        integration = apigw.LambdaIntegration(self.proxy_function)
        for path, schema in (("predict", PREDICT_SCHEMA), ("feedback", FEEDBACK_SCHEMA)):
            model = self.api.add_model(
                f"{path.capitalize()}Model",
                content_type="application/json",
                model_name=f"{path.capitalize()}Request",
                schema=schema,
            )
            self.api.root.add_resource(path).add_method(
                "POST",
                integration,
                api_key_required=True,
                request_validator=validator,
                request_models={"application/json": model},
            )
        self.usage_plan = self.api.add_usage_plan(
            "PredictionApiUsagePlan",
            name=f"{config.project_name}-predictions",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api_throttle_rate, burst_limit=config.api_throttle_burst
            ),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.api_key = self.api.add_api_key(
            "PredictionApiKey", description=f"{config.project_name} prediction API"
        )
        self.usage_plan.add_api_key(self.api_key)

        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "No WAF web ACL by default: the API requires an API key and is throttled by a usage plan; attach a "
            "web ACL to the stage where the traffic warrants its cost.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG4",
            "Clients authenticate with an API key bound to a throttled usage plan; a user directory (Cognito, "
            "IAM) is outside this product's scope.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Clients authenticate with an API key bound to a throttled usage plan; no Cognito user pool.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG6",
            "Access logging is on (encrypted log group); execution logging needs the account-wide API Gateway "
            "CloudWatch role, which a project stack should not own (feature flag disableCloudWatchRole).",
        )

    # --------------------------------------------------------------------------------------------- helpers
    def _function_role(self, construct_id: str, what: str) -> iam.Role:
        """A Lambda role with no managed policies: each function gets only what it is granted here."""
        return iam.Role(
            self,
            construct_id,
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{self.config.project_name}: {what} Lambda",
        )

    @staticmethod
    def _allow_own_logs(role: iam.Role, fn: lambda_.Function) -> None:
        """Write access to the function's own log group only (instead of AWSLambdaBasicExecutionRole).

        Also acknowledges cdk-nag's "latest runtime" rule: the runtime is chosen once for every function of
        the project in ``stacks.common.LAMBDA_RUNTIME``."""
        acknowledge(
            fn,
            "AwsSolutions-L1",
            f"The project pins one Lambda runtime ({fn.runtime.name}) for all functions in stacks/common.py, "
            "so that the handlers run on the Python version they are tested with.",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="OwnLogGroup",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[fn.log_group.log_group_arn],
            )
        )


def _nag_arn(arn: str) -> str:
    """How cdk-nag prints an ARN built from pseudo parameters (``<AWS::Region>`` etc.)."""
    return (
        arn.replace(Aws.PARTITION, "<AWS::Partition>")
        .replace(Aws.REGION, "<AWS::Region>")
        .replace(Aws.ACCOUNT_ID, "<AWS::AccountId>")
    )
