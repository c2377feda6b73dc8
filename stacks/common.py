"""Shared building blocks of every stack: the one Lambda factory and the acknowledgment helper for cdk-nag."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import Config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = PROJECT_ROOT / "lambdas"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
LAMBDA_ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache"]


def lambda_code(name: str) -> lambda_.Code:
    """The plain-folder asset of ``lambdas/<name>/`` (no bundling: no Docker on the build machines)."""
    path = LAMBDAS_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"Lambda folder {path} does not exist")
    return lambda_.Code.from_asset(str(path), exclude=LAMBDA_ASSET_EXCLUDES)


def python_function(
    scope: Construct,
    construct_id: str,
    *,
    config: Config,
    code_dir: str,
    handler: str,
    description: str,
    environment: dict[str, str] | None = None,
    timeout: Duration | None = None,
    memory_size: int = 256,
    key: kms.IKey | None = None,
    role: iam.IRole | None = None,
    **kwargs,
) -> lambda_.Function:
    """Every Lambda of the project: one runtime, arm64, X-Ray tracing, its own encrypted log group with the
    configured retention, environment encrypted with the project key.

    CloudWatch Logs may use ``key`` for the log group through the key policy of the data stack (this
    account's log groups only), so ``key`` must be the project key or carry the same statement."""
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=_retention(config.log_retention_days),
        encryption_key=key,
        removal_policy=RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY,
    )
    fn = lambda_.Function(
        scope,
        construct_id,
        runtime=LAMBDA_RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        code=lambda_code(code_dir),
        handler=handler,
        description=description,
        environment={**(environment or {}), "POWERTOOLS_SERVICE_NAME": config.project_name},
        environment_encryption=key,
        timeout=timeout or Duration.seconds(30),
        memory_size=memory_size,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        role=role,
        **kwargs,
    )
    # No key grant to CloudWatch Logs here: the key policy's conditioned AllowCloudWatchLogsOfThisAccount
    # statement (stacks/data_stack.py) covers every log group of this account, and an unconditioned grant
    # would cancel its confused-deputy guard.
    return fn


_RETENTION_BY_DAYS = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    3653: "TEN_YEARS",
}


def _retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention enum member for ``days`` (validated in stacks.config)."""
    return getattr(logs.RetentionDays, _RETENTION_BY_DAYS[days])


def acknowledge(scope: Construct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (``AwsSolutions-XYZ[finding]``) on ``scope`` with a specific reason."""
    if len(reason) < 20:
        raise ValueError(f"cdk-nag acknowledgment of {rule} needs a specific reason, got {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))
