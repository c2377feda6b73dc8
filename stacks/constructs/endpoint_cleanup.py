"""Endpoint cleanup: a custom resource that, when the serving stack is deleted, removes what the release
controller created outside CloudFormation: the endpoint (its configured name), then the endpoint configs
``{project}-ec-{yyyymmddHHMMSS}-{4 hex}`` and models ``{project}-v{N}-{6 hex}`` (exact patterns).

The serving stack makes every resource of the release controller depend on ``resource``, so they are deleted
before it runs."""

from __future__ import annotations

from aws_cdk import CustomResource, Duration
from constructs import Construct

from stacks.common import python_function
from stacks.config import Config
from stacks.constructs.endpoint_access import grant_endpoint_cleanup
from stacks.constructs.lambda_access import allow_own_logs, function_role
from stacks.data_stack import DataStack


class EndpointCleanup(Construct):
    """A plain Lambda-backed custom resource (``lambdas/cleanup``: it answers CloudFormation itself).

    Attributes: ``function``, ``role``, ``resource``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, data: DataStack) -> None:
        super().__init__(scope, construct_id)
        self.role = function_role(self, "Role", config=config, what="endpoint cleanup")
        self.function = python_function(
            self,
            "Function",
            config=config,
            code_dir="cleanup",
            handler="cleanup_handler.handler",
            description="On stack deletion removes the controller-created endpoint, endpoint configs and models",
            environment={"PROJECT_NAME": config.project_name, "ENDPOINT_NAME": config.endpoint_name},
            timeout=Duration.minutes(15),  # an endpoint deletion takes minutes; the handler waits for it
            key=data.key,
            role=self.role,
        )
        allow_own_logs(self.role, self.function)
        grant_endpoint_cleanup(self.role, config=config)
        self.resource = CustomResource(
            self,
            "Resource",
            service_token=self.function.function_arn,
            resource_type="Custom::EndpointCleanup",
            properties={"ProjectName": config.project_name, "EndpointName": config.endpoint_name},
        )
        # The role's policy must outlive the custom resource's Delete.
        self.resource.node.add_dependency(self.role)
