"""The project's base resources in the local cloud, created (idempotently) when the daemon starts.

What the deployed stacks would have created and the product's code expects to find: the data, artifacts
and staging buckets, the model package group, the model execution role, the release controller's
on-failure queue, the release controller's Lambda function record, and the CloudWatch alarms of the
monitoring stack that the local cloud evaluates (``local_alarms``: the drift alarms and the endpoint 5XX
alarm, same names and definitions as ``stacks/monitoring_stack.py``; moto stores alarms but never evaluates
them, so ``trainserve.local.monitoring`` sets their state with ``SetAlarmState`` after each run, and any AWS
SDK's ``DescribeAlarms`` shows it). moto stores Lambda functions
without Docker (only invoking needs it); the record exists so the controller's environment variables can
be read and edited (``update_function_configuration``) exactly as on AWS. The approval watcher reads the
environment from this record before each call of the handler.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from botocore.exceptions import ClientError

from stacks.config import Config
from trainserve.target import LOCAL_ACCOUNT, Names

LAMBDA_RUNTIME = "python3.12"
RELEASE_HANDLER = "release_handler.handler"
LAMBDA_ROLE = "trainserve-local-lambda"  # the execution role every local Lambda function record names

# The monitoring stack's names and numbers for the alarms below (stacks are not imported here, DESIGN.md
# "Imports"; tests/stacks/test_monitoring_stack.py checks these definitions against the synthesized stack).
PREDICTIONS_NAMESPACE = "Trainserve/Predictions"
PREDICTION_DIMS = ("EndpointName", "ModelVersion", "VariantName")
SAGEMAKER_DIMS = ("EndpointName", "VariantName")
ALARM_PERIOD_SECONDS = 300
METRICS_INSIGHTS_MAX_MINUTES = 180

_LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
_SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def model_execution_role_name(cfg: Config) -> str:
    return f"{cfg.project_name}-model-execution"


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{name}"


def release_environment(cfg: Config, names: Names) -> dict[str, str]:
    """The release controller's environment variables (as the serving stack sets them on AWS)."""
    return {
        "PROJECT_NAME": cfg.project_name,
        "ENDPOINT_NAME": names.endpoint_name,
        "MODEL_PACKAGE_GROUP": names.model_package_group,
        "CHALLENGER_WEIGHT": str(cfg.challenger_weight),
        "MAX_LIVE_VARIANTS": str(cfg.max_live_variants),
        "INSTANCE_TYPE": cfg.serving_instance_type,
        "INSTANCE_COUNT": str(cfg.serving_instance_count),
        "DATA_CAPTURE_ENABLED": "true" if cfg.data_capture_enabled else "false",
        "DATA_CAPTURE_PERCENT": str(cfg.data_capture_sampling_percent),
        "DATA_CAPTURE_S3_URI": f"s3://{names.artifacts_bucket}/data-capture",
        "MODEL_EXECUTION_ROLE_ARN": role_arn(model_execution_role_name(cfg)),
        "ROLLBACK_ALARMS": "",  # comma-separated alarm names; none locally (moto never evaluates alarms)
        "TRAFFIC_ROUTING": cfg.traffic_routing,
        "GUARDRAIL_WAIT_SECONDS": str(cfg.guardrail_wait_seconds),
        "SERVING_IMAGE_URI": "",  # locally the runtime serves the model with inference/serve.py
    }


def _insights(function: str, metric: str, namespace: str, dimensions: tuple[str, ...], endpoint: str) -> str:
    schema = ", ".join((f'"{namespace}"', *dimensions))
    return f"SELECT {function}({metric}) FROM SCHEMA({schema}) WHERE EndpointName = '{endpoint}'"


def drift_alarm_name(cfg: Config) -> str:
    return f"{cfg.project_name}-prediction-drift"


def feature_drift_alarm_name(cfg: Config) -> str:
    return f"{cfg.project_name}-feature-drift"


def endpoint_5xx_alarm_name(cfg: Config) -> str:
    return f"{cfg.project_name}-endpoint-5xx"


def local_alarms(cfg: Config, names: Names) -> list[dict[str, Any]]:
    """``PutMetricAlarm`` arguments of the monitoring stack's alarms that the local cloud evaluates: the score
    and feature drift alarms and the endpoint 5XX alarm (same names, queries, thresholds and periods as on
    AWS; no actions, as there is no alarm topic locally)."""
    endpoint = names.endpoint_name
    drift_period = 60 * min(cfg.monitoring_interval_minutes, METRICS_INSIGHTS_MAX_MINUTES)
    at_least = f"(variants with at least {cfg.drift_min_predictions} predictions in the job's window)"

    def alarm(
        name: str, description: str, expression: str, label: str, period: int, threshold: float, n: int
    ) -> dict[str, Any]:
        return {
            "AlarmName": name,
            "AlarmDescription": description,
            "ActionsEnabled": False,
            "Metrics": [
                {"Id": "m", "Expression": expression, "Label": label, "Period": period, "ReturnData": True}
            ],
            "Threshold": float(threshold),
            "ComparisonOperator": "GreaterThanThreshold",
            "EvaluationPeriods": n,
            "DatapointsToAlarm": n,
            "TreatMissingData": "notBreaching",
        }

    return [
        alarm(
            endpoint_5xx_alarm_name(cfg),
            f"5XX rate of {endpoint} over all variants above {cfg.error_rate_alarm} (deployment guardrail)",
            _insights("AVG", "Invocation5XXErrors", "AWS/SageMaker", SAGEMAKER_DIMS, endpoint),
            "5XX rate",
            ALARM_PERIOD_SECONDS,
            cfg.error_rate_alarm,
            2,
        ),
        alarm(
            drift_alarm_name(cfg),
            f"Score PSI of a live model version against its training baseline above {cfg.drift_psi_threshold} "
            + at_least,
            _insights("MAX", "ScorePSI", PREDICTIONS_NAMESPACE, PREDICTION_DIMS, endpoint),
            "max ScorePSI",
            drift_period,
            cfg.drift_psi_threshold,
            1,
        ),
        alarm(
            feature_drift_alarm_name(cfg),
            "Largest feature PSI of a live model version against its training baseline above "
            f"{cfg.feature_psi_threshold} {at_least}",
            _insights("MAX", "FeaturePSI", PREDICTIONS_NAMESPACE, PREDICTION_DIMS, endpoint),
            "max FeaturePSI",
            drift_period,
            cfg.feature_psi_threshold,
            1,
        ),
    ]


def ensure_alarms(cloudwatch: Any, cfg: Config, names: Names) -> list[str]:
    """Create the ``local_alarms`` that do not exist yet, in state INSUFFICIENT_DATA as a new alarm starts on
    AWS (an existing one keeps its state); returns every local alarm's name."""
    wanted = local_alarms(cfg, names)
    alarm_names = [a["AlarmName"] for a in wanted]
    existing = {
        a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNames=alarm_names).get("MetricAlarms", [])
    }
    for definition in wanted:
        if definition["AlarmName"] in existing:
            continue
        cloudwatch.put_metric_alarm(**definition)
        cloudwatch.set_alarm_state(
            AlarmName=definition["AlarmName"],
            StateValue="INSUFFICIENT_DATA",
            StateReason="created by the local cloud; the local monitoring has not evaluated it yet",
        )
    return alarm_names


def _placeholder_zip(handler: str) -> bytes:
    """A tiny deployment package: the local cloud runs the handler from lambdas/ in-process instead."""
    buf = io.BytesIO()
    module = handler.split(".", 1)[0]
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{module}.py", "# placeholder: the local cloud runs lambdas/ in-process\n")
    return buf.getvalue()


def ensure_function(
    lambda_client: Any, name: str, handler: str, environment: dict[str, str], description: str = ""
) -> None:
    """Create the Lambda function record ``name`` unless it exists (an existing one keeps its edits)."""
    try:
        lambda_client.get_function_configuration(FunctionName=name)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    lambda_client.create_function(
        FunctionName=name,
        Runtime=LAMBDA_RUNTIME,
        Role=role_arn(LAMBDA_ROLE),
        Handler=handler,
        Code={"ZipFile": _placeholder_zip(handler)},
        Description=description,
        Timeout=300,
        MemorySize=512,
        Environment={"Variables": environment},
    )


def function_environment(lambda_client: Any, name: str) -> dict[str, str]:
    """The current environment variables of the Lambda function record ``name``."""
    conf = lambda_client.get_function_configuration(FunctionName=name)
    return dict(conf.get("Environment", {}).get("Variables", {}))


def _ensure_role(iam: Any, name: str, trust: dict) -> None:
    try:
        iam.get_role(RoleName=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchEntity":
            raise
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))


def create_base_resources(target: Any) -> dict[str, Any]:
    """Create the base resources on the local cloud ``target`` (a ``trainserve.target.Target``)."""
    cfg, names = target.config, target.names
    s3 = target.client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (names.data_bucket, names.artifacts_bucket, names.staging_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)

    sm = target.client("sagemaker")
    try:
        sm.describe_model_package_group(ModelPackageGroupName=names.model_package_group)
    except ClientError:
        sm.create_model_package_group(
            ModelPackageGroupName=names.model_package_group,
            ModelPackageGroupDescription=f"{cfg.project_name}: approved models are served by the endpoint",
        )

    iam = target.client("iam")
    _ensure_role(iam, model_execution_role_name(cfg), _SAGEMAKER_TRUST)
    _ensure_role(iam, LAMBDA_ROLE, _LAMBDA_TRUST)

    sqs = target.client("sqs")
    queue_url = sqs.create_queue(QueueName=names.release_dlq)["QueueUrl"]

    lam = target.client("lambda")
    ensure_function(
        lam,
        names.release_function,
        RELEASE_HANDLER,
        release_environment(cfg, names),
        "Release controller: makes the endpoint match the registry's approved versions",
    )
    alarms = ensure_alarms(target.client("cloudwatch"), cfg, names)
    return {"release_dlq_url": queue_url, "alarms": alarms}
