"""IAM grants on the SageMaker resources the release controller owns: the endpoint (its configured name) and
the endpoint configs and models it names (``lambdas/release_controller/sagemaker_adapter.py``:
``endpoint_config_name`` ``{project}-ec-{yyyymmddHHMMSS}-{4 hex}``, ``model_name`` ``{project}-v{N}-{6 hex}``).

IAM's ``?`` matches exactly one character and cdk-nag flags only ``*``: the endpoint-config ARN is exact
with ``?`` alone; the model ARN needs one ``*`` for the version's digits.
"""

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


def own_resource_arns(config: Config) -> dict[str, str]:
    """The ARNs of what the release controller creates, by SageMaker resource type.

    SageMaker writes resource names lower-case in ARNs (the project name is lower-case already)."""
    project = config.project_name.lower()
    return {
        "endpoint": sagemaker_arn(f"endpoint/{config.endpoint_name.lower()}"),
        # {project}-ec- + 14 digits (UTC yyyymmddHHMMSS) + "-" + 4 hex: every character accounted for.
        "endpoint-config": sagemaker_arn(f"endpoint-config/{project}-ec-{'?' * 14}-{'?' * 4}"),
        # {project}-v + the version (no fixed number of digits) + "-" + 6 hex.
        "model": sagemaker_arn(f"model/{project}-v*-{'?' * 6}"),
    }


def grant_endpoint_cleanup(role: iam.Role, *, config: Config) -> None:
    """List, describe and delete the project's endpoint, endpoint configs and models (nothing else)."""
    _own_resources(role, config, create=False)
    acknowledge(
        role,
        "AwsSolutions-IAM5[Resource::*]",
        "SageMaker List* actions support no resource-level permissions (the handler keeps only the names "
        "that match the controller's exact name patterns); X-Ray trace upload has none either.",
    )


def grant_endpoint_release(role: iam.Role, *, config: Config, training: TrainingStack) -> None:
    """Everything the release controller does: create/update/delete the project's endpoint resources, read
    the registry group, pass the model execution role to SageMaker, read the rollback alarms."""
    group = config.model_package_group_name
    _own_resources(role, config, create=True)
    role.add_to_policy(
        iam.PolicyStatement(
            sid="TagOwnResources",
            actions=["sagemaker:AddTags", "sagemaker:DeleteTags", "sagemaker:ListTags"],
            resources=list(own_resource_arns(config).values()),
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
    arns = own_resource_arns(config)
    owned = {
        "Endpoints": (endpoint_actions, arns["endpoint"]),
        "EndpointConfigs": (config_actions, arns["endpoint-config"]),
        "Models": (model_actions, arns["model"]),
    }
    for sid, (actions, arn) in owned.items():
        role.add_to_policy(iam.PolicyStatement(sid=f"Own{sid}", actions=sorted(actions), resources=[arn]))
    role.add_to_policy(
        iam.PolicyStatement(sid="ListResources", actions=sorted(list_actions), resources=["*"])
    )
    project = config.project_name
    acknowledge(
        role,
        f"AwsSolutions-IAM5[Resource::{nag_arn(arns['model'])}]",
        f"The release controller names models {project}-v{{N}}-{{6 hex}} (sagemaker_adapter.model_name). The "
        f"'*' stands for N, the model package version, which has no fixed number of digits, and IAM has no "
        f"wildcard for digits only; the six '?' are the hash. So the ARN covers every model named "
        f"{project}-v<anything>-<6 characters> in this account and region, which includes the models of "
        f"another project whose name starts with '{project}-v'; the handlers act only on names that match "
        f"the exact pattern.",
    )
