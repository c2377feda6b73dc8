"""IAM grants on the SageMaker resources the release controller owns (``{project}-*``)."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

from stacks.common import acknowledge
from stacks.config import Config
from stacks.constructs.lambda_access import nag_arn
from stacks.training_stack import SAGEMAKER_PRINCIPAL, TrainingStack, sagemaker_arn


def rollback_alarm_names(config: Config) -> list[str]:
    """The endpoint alarms guarded updates roll back on (created with these names by the monitoring stack)."""
    return [f"{config.project_name}-endpoint-5xx", f"{config.project_name}-endpoint-latency-p99"]


def grant_endpoint_cleanup(role: iam.Role, *, config: Config) -> None:
    """List, describe and delete the project's endpoints, endpoint configs and models (nothing else)."""
    _own_resources(role, config, create=False)
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "SageMaker List* actions support no resource-level permissions (the handler keeps only names with the "
        "project prefix); X-Ray trace upload has none either.",
    )


def grant_endpoint_release(role: iam.Role, *, config: Config, training: TrainingStack) -> None:
    """Everything the release controller does: create/update/delete the project's endpoint resources, read
    the registry group, pass the model execution role to SageMaker, read the rollback alarms."""
    project = config.project_name
    group = config.model_package_group_name
    _own_resources(role, config, create=True)
    role.add_to_policy(
        iam.PolicyStatement(
            sid="TagOwnResources",
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
            sid="ReadRegistryGroup",
            actions=["sagemaker:DescribeModelPackageGroup"],
            resources=[training.model_package_group_arn],
        )
    )
    package_arn = sagemaker_arn(f"model-package/{group}/*")
    role.add_to_policy(
        iam.PolicyStatement(
            sid="ReadModelPackages",
            actions=["sagemaker:DescribeModelPackage"],
            resources=[package_arn],
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="PassModelExecutionRole",
            actions=["iam:PassRole"],
            resources=[training.model_execution_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}},
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="ReadRollbackAlarms",
            actions=["cloudwatch:DescribeAlarms"],
            resources=[
                f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:{name}"
                for name in rollback_alarm_names(config)
            ],
        )
    )
    acknowledge(
        role,
        f"AwsSolutions-IAM5[Resource::{nag_arn(package_arn)}]",
        "Model package versions are numbered by SageMaker at registration; the ARN is scoped to this group.",
    )
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "sagemaker:List* (endpoint configs, models, model packages) support no resource-level permissions; "
        "X-Ray trace upload has none either.",
    )


def _own_resources(role: iam.Role, config: Config, *, create: bool) -> None:
    project = config.project_name
    endpoint_actions = ["sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint"]
    config_actions = ["sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig"]
    model_actions = ["sagemaker:DescribeModel", "sagemaker:DeleteModel"]
    list_actions = ["sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels"]
    if create:
        endpoint_actions += [
            "sagemaker:CreateEndpoint",
            "sagemaker:UpdateEndpoint",
            "sagemaker:UpdateEndpointWeightsAndCapacities",
        ]
        config_actions += ["sagemaker:CreateEndpointConfig"]
        model_actions += ["sagemaker:CreateModel"]
        list_actions += ["sagemaker:ListModelPackages"]
    owned = {
        "Endpoints": (endpoint_actions, sagemaker_arn(f"endpoint/{project}-*")),
        "EndpointConfigs": (config_actions, sagemaker_arn(f"endpoint-config/{project}-*")),
        "Models": (model_actions, sagemaker_arn(f"model/{project}-*")),
    }
    for sid, (actions, arn) in owned.items():
        role.add_to_policy(iam.PolicyStatement(sid=f"Own{sid}", actions=sorted(actions), resources=[arn]))
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{nag_arn(arn)}]",
            "The controller creates these resources with generated names; every name starts with the project "
            "prefix, which this ARN pattern pins.",
        )
    role.add_to_policy(
        iam.PolicyStatement(sid="ListResources", actions=sorted(list_actions), resources=["*"])
    )
