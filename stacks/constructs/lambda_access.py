"""Least-privilege Lambda roles: no managed policies, only the function's own log group plus explicit grants."""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.common import acknowledge
from stacks.config import Config


def function_role(scope: Construct, construct_id: str, *, config: Config, what: str) -> iam.Role:
    """A Lambda execution role with no managed policy (instead of AWSLambdaBasicExecutionRole)."""
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{config.project_name}: {what} Lambda",
    )


def allow_own_logs(role: iam.Role, fn: lambda_.Function) -> None:
    """Write access to the function's own log group only.

    Also acknowledges cdk-nag's "latest runtime" rule: the runtime is chosen once for every function of the
    project in ``stacks.common.LAMBDA_RUNTIME``."""
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OwnLogGroup",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[fn.log_group.log_group_arn],
        )
    )
    acknowledge(
        fn,
        "AwsSolutions-L1",
        f"The project pins one Lambda runtime ({fn.runtime.name}) for all functions in stacks/common.py, "
        "so that the handlers run on the Python version they are tested with.",
    )


def fail_to_queue(
    fn: lambda_.Function,
    role: iam.Role,
    queue: sqs.Queue,
    *,
    retry_attempts: int,
    max_event_age: Duration,
    sends: str,
) -> None:
    """Asynchronous invocations of ``fn`` retry ``retry_attempts`` times, then go to the KMS-encrypted
    ``queue`` (its on-failure destination); acknowledges the data-key actions CDK's grant adds to ``role``
    (``sends``: what goes to the queue, for the reason)."""
    fn.configure_async_invoke(
        retry_attempts=retry_attempts,
        max_event_age=max_event_age,
        on_failure=destinations.SqsDestination(queue),
    )
    for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Action::{action}]",
            "Added by CDK's SQS on-failure destination grant: data-key actions on the project key only, "
            f"needed to send {sends}.",
        )


def nag_arn(arn: str) -> str:
    """How cdk-nag prints an ARN built from pseudo parameters (``<AWS::Region>`` etc.) in a finding."""
    return (
        arn.replace(Aws.PARTITION, "<AWS::Partition>")
        .replace(Aws.REGION, "<AWS::Region>")
        .replace(Aws.ACCOUNT_ID, "<AWS::AccountId>")
    )
