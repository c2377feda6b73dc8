"""Least-privilege Lambda roles: no managed policies, only the function's own log group plus explicit grants."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
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


def nag_arn(arn: str) -> str:
    """How cdk-nag prints an ARN built from pseudo parameters (``<AWS::Region>`` etc.) in a finding."""
    return (
        arn.replace(Aws.PARTITION, "<AWS::Partition>")
        .replace(Aws.REGION, "<AWS::Region>")
        .replace(Aws.ACCOUNT_ID, "<AWS::AccountId>")
    )
