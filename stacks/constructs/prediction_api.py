"""The prediction API: API Gateway REST API (API key + usage plan, validated JSON bodies) -> proxy Lambda."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.common import _retention, acknowledge, python_function
from stacks.config import Config
from stacks.constructs.lambda_access import allow_own_logs, function_role, nag_arn
from stacks.data_stack import DataStack
from stacks.training_stack import grant_evaluation_file, sagemaker_arn

# The namespace the proxy publishes its custom metrics in (lambdas/proxy/prediction_log.py METRIC_NAMESPACE).
PROXY_METRICS_NAMESPACE = "Trainserve/Proxy"
STAGE_NAME = "prod"

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
BAD_REQUEST_BODY_TEMPLATE = (
    '{"error": "$context.error.validationErrorString", "message": $context.error.messageString}'
)

_FEEDBACK_ITEM = apigw.JsonSchema(
    type=apigw.JsonSchemaType.OBJECT,
    required=["request_id", "outcome"],
    properties={
        "request_id": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128),
        "outcome": apigw.JsonSchema(type=apigw.JsonSchemaType.INTEGER, enum=[0, 1]),
    },
)
# The three forms the proxy takes (``proxy_logic.parse_feedback_body``): one item, ``{"feedback": [items]}``,
# or a list of items. The proxy checks the rest (unknown fields, byte lengths, repeated ids) and names it.
FEEDBACK_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="FeedbackRequest",
    one_of=[
        _FEEDBACK_ITEM,
        apigw.JsonSchema(
            type=apigw.JsonSchemaType.OBJECT,
            required=["feedback"],
            properties={
                "feedback": apigw.JsonSchema(
                    type=apigw.JsonSchemaType.ARRAY, min_items=1, items=_FEEDBACK_ITEM
                )
            },
        ),
        apigw.JsonSchema(type=apigw.JsonSchemaType.ARRAY, min_items=1, items=_FEEDBACK_ITEM),
    ],
)


def proxy_environment(config: Config, *, predictions_stream: str, feedback_stream: str) -> dict[str, str]:
    """The proxy's parameters (``trainserve params set`` changes them live on the function)."""
    return {
        "ENDPOINT_NAME": config.endpoint_name,
        "MODEL_PACKAGE_GROUP": config.model_package_group_name,
        "PREDICTIONS_STREAM": predictions_stream,
        "FEEDBACK_STREAM": feedback_stream,
        "SERVING_ENABLED": "true",
        "TARGET_VARIANT": "",
        "DECISION_THRESHOLD": str(config.decision_threshold),
        "LOG_SAMPLE_RATE": str(config.log_sample_rate),
        "STICKY_ASSIGNMENT": "true" if config.sticky_assignment else "false",
    }


class PredictionApi(Construct):
    """``POST /predict`` and ``POST /feedback`` (API key required, JSON bodies validated against models,
    throttled by a usage plan, X-Ray traced, access-logged to an encrypted log group) -> the proxy Lambda,
    which invokes the endpoint and sends prediction/feedback records to the warehouse's Firehose streams.

    ``warehouse``: anything with ``predictions_stream_name``/``_arn`` and ``feedback_stream_name``/``_arn``
    (the warehouse stack), or ``None`` (records are then not shipped; the proxy still serves).

    Attributes: ``function``, ``role``, ``api`` (RestApi), ``api_key``, ``usage_plan``, ``access_logs``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: Config, data: DataStack, warehouse: Any | None
    ) -> None:
        super().__init__(scope, construct_id)
        group = config.model_package_group_name
        self.role = function_role(self, "Role", config=config, what="prediction proxy")
        self.function = python_function(
            self,
            "Function",
            config=config,
            code_dir="proxy",
            handler="proxy_handler.handler",
            description="Prediction API: routes to the endpoint's variants, logs predictions and feedback",
            environment=proxy_environment(
                config,
                predictions_stream=warehouse.predictions_stream_name if warehouse is not None else "",
                feedback_stream=warehouse.feedback_stream_name if warehouse is not None else "",
            ),
            timeout=Duration.seconds(29),  # API Gateway's integration limit
            memory_size=512,
            key=data.key,
            role=self.role,
        )
        allow_own_logs(self.role, self.function)
        self._grant(config, group, warehouse, data)

        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=_retention(config.log_retention_days),
            encryption_key=data.key,
            removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{config.project_name}-predictions",
            description=f"{config.project_name}: predictions and feedback (API key required)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                tracing_enabled=True,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
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
            self, "Validator", rest_api=self.api, validate_request_body=True, validate_request_parameters=True
        )
        integration = apigw.LambdaIntegration(self.function)
        for path, schema in (("predict", PREDICT_SCHEMA), ("feedback", FEEDBACK_SCHEMA)):
            name = path.capitalize()
            model = self.api.add_model(
                f"{name}Model", content_type="application/json", model_name=f"{name}Request", schema=schema
            )
            self.api.root.add_resource(path).add_method(
                "POST",
                integration,
                api_key_required=True,
                request_validator=validator,
                request_models={"application/json": model},
            )
        # A body the models refuse: API Gateway's own 400 says only "Invalid request body"; this one names
        # what does not match (for example the missing "instances"), as the proxy's errors name the field.
        # Gateway responses take $context variables only (no VTL). messageString is documented as the quoted
        # message; validationErrorString is the bare text (with its own quotes escaped), so it is quoted here.
        self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={"application/json": BAD_REQUEST_BODY_TEMPLATE},
        )
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            name=f"{config.project_name}-predictions",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api_throttle_rate, burst_limit=config.api_throttle_burst
            ),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.api_key = self.api.add_api_key("ApiKey", description=f"{config.project_name} prediction API")
        self.usage_plan.add_api_key(self.api_key)
        self._acknowledge_api()

    def _grant(self, config: Config, group: str, warehouse: Any | None, data: DataStack) -> None:
        role = self.role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeEndpoint",
                actions=["sagemaker:InvokeEndpoint", "sagemaker:DescribeEndpoint"],
                resources=[sagemaker_arn(f"endpoint/{config.endpoint_name}")],
            )
        )
        package_arn = sagemaker_arn(f"model-package/{group}/*")
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadModelPackages", actions=["sagemaker:DescribeModelPackage"], resources=[package_arn]
            )
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_arn(package_arn)}]",
            "The proxy reads the feature schema of whichever registered version is live; scoped to this group.",
        )
        # the feature list of a registered version (its features_uri): features.json beside baseline.json in the
        # Evaluate step's output, under the pipeline execution's own prefix; only those objects
        grant_evaluation_file(role, data, "features.json", "FeatureLists")
        if warehouse is not None:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="LogToFirehose",
                    actions=["firehose:PutRecordBatch", "firehose:PutRecord"],
                    resources=[warehouse.predictions_stream_arn, warehouse.feedback_stream_arn],
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ProxyMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": PROXY_METRICS_NAMESPACE}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData and X-Ray trace upload support no resource-level permissions; metrics are "
            "limited to the proxy's namespace by a condition.",
        )

    def _acknowledge_api(self) -> None:
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
