"""The release controller: model approval/rejection events -> a Lambda that reshapes the endpoint."""

from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.common import PROJECT_ROOT, acknowledge, python_function
from stacks.config import Config
from stacks.constructs.endpoint_access import grant_endpoint_release, rollback_alarm_names
from stacks.constructs.lambda_access import allow_own_logs, fail_to_queue, function_role
from stacks.data_stack import DataStack
from stacks.training_stack import DATA_CAPTURE_PREFIX, TrainingStack

RELEASE_EVENT_PATTERN_FILE = PROJECT_ROOT / "lambdas" / "release_controller" / "event_pattern.json"
RETRY_ATTEMPTS = 2
MAX_EVENT_AGE = Duration.hours(6)


def release_event_pattern(model_package_group: str) -> events.EventPattern:
    """The rule's pattern: ``lambdas/release_controller/event_pattern.json`` (the controller's own statement
    of the events it handles) narrowed to this model package group."""
    pattern = json.loads(RELEASE_EVENT_PATTERN_FILE.read_text())
    detail = {**pattern.get("detail", {}), "ModelPackageGroupName": [model_package_group]}
    return events.EventPattern(source=pattern["source"], detail_type=pattern["detail-type"], detail=detail)


def controller_environment(
    config: Config, *, data: DataStack, training: TrainingStack, serving_image_uri: str
) -> dict[str, str]:
    """The controller's settings (``release_planner.ReleaseSettings.from_env`` reads exactly these)."""
    return {
        "PROJECT_NAME": config.project_name,
        "ENDPOINT_NAME": config.endpoint_name,
        "MODEL_PACKAGE_GROUP": config.model_package_group_name,
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
        "SERVING_IMAGE_URI": serving_image_uri,
        # the project key: the endpoint's ML storage volumes and captured data (sagemaker_adapter._deploy)
        "KMS_KEY_ARN": data.key.key_arn,
    }


class ReleaseController(Construct):
    """EventBridge rule on "SageMaker Model Package State Change" (Approved/Rejected, this group only) ->
    the release controller Lambda (2 retries, then the KMS-encrypted, TLS-only on-failure queue, whose alarm
    ``{project}-release-dlq-not-empty`` the monitoring stack owns and sends to its SNS topic).

    Attributes: ``function``, ``role``, ``rule``, ``dlq``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        data: DataStack,
        training: TrainingStack,
        serving_image_uri: str,
    ) -> None:
        super().__init__(scope, construct_id)
        project = config.project_name
        group = config.model_package_group_name

        self.dlq = sqs.Queue(
            self,
            "Failures",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=data.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dlq,
            "AwsSolutions-SQS3",
            "This queue is itself the on-failure destination (dead-letter queue) of the release controller.",
        )
        self.role = function_role(self, "Role", config=config, what="release controller")
        self.function = python_function(
            self,
            "Function",
            config=config,
            code_dir="release_controller",
            handler="release_handler.handler",
            description="Applies model approvals/rejections to the endpoint's production variants",
            environment=controller_environment(
                config, data=data, training=training, serving_image_uri=serving_image_uri
            ),
            # Lambda's longest: the handler waits for a busy endpoint (creating: 5-10 min; a guarded
            # blue/green update: its waits plus the new fleet) until a minute before it, and each of the 2
            # retries waits as long, so an approval during an update is applied, not dead-lettered
            timeout=Duration.minutes(15),
            key=data.key,
            role=self.role,
        )
        allow_own_logs(self.role, self.function)
        grant_endpoint_release(self.role, config=config, training=training)
        # CreateEndpointConfig with KmsKeyId: SageMaker creates grants on the key for the endpoint's volumes
        # with the caller's permissions (only grants for an AWS resource)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ProjectKeyForEndpointVolumes",
                actions=["kms:CreateGrant", "kms:DescribeKey"],
                resources=[data.key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        fail_to_queue(
            self.function,
            self.role,
            self.dlq,
            retry_attempts=RETRY_ATTEMPTS,
            max_event_age=MAX_EVENT_AGE,
            sends="failed events to the KMS-encrypted dead-letter queue",
        )

        self.rule = events.Rule(
            self,
            "ModelPackageStateChange",
            description=f"{project}: approval/rejection of a model in {group} -> release controller",
            event_pattern=release_event_pattern(group),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    retry_attempts=RETRY_ATTEMPTS,
                    max_event_age=MAX_EVENT_AGE,
                    dead_letter_queue=self.dlq,  # events EventBridge could not deliver: kept, and alarmed
                )
            ],
        )
