"""The project's configuration: read once (from ``cdk.json`` context, with ``-c`` overrides), validated, frozen.

This module is plain Python (no CDK import) so that the CLI and the local cloud read exactly the same
configuration, with the same validation, as ``cdk synth`` does.

Every key, its default and its allowed values are listed in ``FIELDS``; the README's configuration
reference lists the same (``tests/test_readme.py`` checks every key's row and default against ``FIELDS``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CONTEXT_KEY = "trainserve"

# Instance types the pipeline and the endpoint accept. Kept to general-purpose / compute CPU families the
# scikit-learn container supports; anything else fails synth with this list in the message.
TRAINING_INSTANCE_TYPES = (
    "ml.m5.large",
    "ml.m5.xlarge",
    "ml.m5.2xlarge",
    "ml.m5.4xlarge",
    "ml.c5.xlarge",
    "ml.c5.2xlarge",
    "ml.c5.4xlarge",
)
PROCESSING_INSTANCE_TYPES = ("ml.t3.medium", "ml.t3.large", *TRAINING_INSTANCE_TYPES)
SERVING_INSTANCE_TYPES = (
    "ml.t2.medium",
    "ml.t2.large",
    "ml.m5.large",
    "ml.m5.xlarge",
    "ml.m5.2xlarge",
    "ml.c5.large",
    "ml.c5.xlarge",
    "ml.c5.2xlarge",
)
QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
ESTIMATORS = ("logistic_regression", "random_forest", "gradient_boosting")
SKLEARN_FRAMEWORK_VERSIONS = ("1.2-1",)
TRAFFIC_ROUTING = ("ALL_AT_ONCE", "CANARY", "LINEAR")
SERVING_IMAGES = ("sklearn", "fast")
WAREHOUSE_TYPES = ("serverless", "provisioned")
ENVIRONMENTS = ("dev", "prod")
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653)
_PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# EventBridge Scheduler: rate(N unit) with N >= 1, or cron() with its six fields (minutes hours day-of-month
# month day-of-week year); anything else would pass synth and fail the deployment.
_SCHEDULE = re.compile(
    r"^(rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\)"
    r"|cron\([0-9A-Za-z*?,/#-]+( [0-9A-Za-z*?,/#-]+){5}\))$"
)
# A guarded (blue/green) endpoint update waits guardrail_wait_seconds after each traffic shift and once more
# before the old fleet goes; its MaximumExecutionTimeoutInSeconds (that waiting plus time for the new fleet)
# must fit in SageMaker's 28800 s. The release controller computes it (release_planner.TRAFFIC_SHIFTS,
# DEPLOYMENT_MARGIN_SECONDS); stacks never import lambdas, so the numbers are repeated here (a test keeps
# them in step) for the synth-time check.
GUARDRAIL_TRAFFIC_SHIFTS = {"ALL_AT_ONCE": 1, "CANARY": 2, "LINEAR": 4}
GUARDRAIL_NEW_FLEET_SECONDS = 1800
SAGEMAKER_MAX_DEPLOYMENT_SECONDS = 28800


def guardrail_deployment_seconds(traffic_routing: str, guardrail_wait_seconds: int) -> int:
    """The blue/green execution timeout a guarded update of this configuration needs."""
    waits = GUARDRAIL_TRAFFIC_SHIFTS[traffic_routing] + 1
    return guardrail_wait_seconds * waits + GUARDRAIL_NEW_FLEET_SECONDS


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Field:
    name: str
    default: Any
    kind: type | tuple[type, ...]
    allowed: str
    check: Callable[[Any], bool] | None = None
    doc: str = ""


def _one_of(options: tuple) -> Callable[[Any], bool]:
    return lambda v: v in options


def _between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def check(v: float) -> bool:
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return check


def _opt(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda v: v is None or bool(pattern.match(v))


FIELDS: tuple[Field, ...] = (
    Field(
        "project_name",
        "trainserve",
        str,
        "3-20 chars, lowercase letters, digits and '-', starting with a letter, not ending with '-'",
        lambda v: bool(_PROJECT_NAME.match(v)),
        "Prefix of every resource name the release controller creates.",
    ),
    Field(
        "environment",
        "dev",
        str,
        " | ".join(ENVIRONMENTS),
        _one_of(ENVIRONMENTS),
        "dev: buckets and data are destroyed with the stack; prod: retained.",
    ),
    Field(
        "sklearn_framework_version",
        "1.2-1",
        str,
        " | ".join(SKLEARN_FRAMEWORK_VERSIONS),
        _one_of(SKLEARN_FRAMEWORK_VERSIONS),
        "SageMaker scikit-learn container version; the local scikit-learn is pinned to match it.",
    ),
    Field(
        "training_instance_type",
        "ml.m5.large",
        str,
        " | ".join(TRAINING_INSTANCE_TYPES),
        _one_of(TRAINING_INSTANCE_TYPES),
        "Default of the pipeline's TrainingInstanceType parameter.",
    ),
    Field(
        "processing_instance_type",
        "ml.t3.medium",
        str,
        " | ".join(PROCESSING_INSTANCE_TYPES),
        _one_of(PROCESSING_INSTANCE_TYPES),
        "Default of the pipeline's ProcessingInstanceType parameter.",
    ),
    Field(
        "estimator",
        "logistic_regression",
        str,
        " | ".join(ESTIMATORS),
        _one_of(ESTIMATORS),
        "Default estimator hyperparameter of the training step.",
    ),
    Field(
        "quality_metric",
        "roc_auc",
        str,
        " | ".join(QUALITY_METRICS),
        _one_of(QUALITY_METRICS),
        "Metric the quality gate compares with quality_threshold.",
    ),
    Field(
        "quality_threshold",
        0.9,
        (int, float),
        "a number in 0..1",
        _between(0, 1),
        "A model is registered only if quality_metric >= this.",
    ),
    Field(
        "training_schedule",
        None,
        (str, type(None)),
        "null, rate(N unit) with N >= 1, or cron(...) with 6 fields",
        _opt(_SCHEDULE),
        "Optional EventBridge Scheduler expression that starts the pipeline.",
    ),
    Field(
        "challenger_weight",
        0.1,
        (int, float),
        "a number strictly between 0 and 1",
        _between(0, 1, True, True),
        "Traffic share a newly approved challenger starts with, taken from the champion.",
    ),
    Field(
        "max_live_variants",
        2,
        int,
        "an integer in 1..10",
        _between(1, 10),
        "Most production variants the endpoint serves at once (SageMaker allows 10).",
    ),
    Field(
        "serving_instance_type",
        "ml.m5.large",
        str,
        " | ".join(SERVING_INSTANCE_TYPES),
        _one_of(SERVING_INSTANCE_TYPES),
        "Instance type of each production variant.",
    ),
    Field(
        "serving_instance_count",
        1,
        int,
        "an integer in 1..10",
        _between(1, 10),
        "Instances per production variant.",
    ),
    Field(
        "serving_image",
        "sklearn",
        str,
        " | ".join(SERVING_IMAGES),
        _one_of(SERVING_IMAGES),
        "sklearn: the SageMaker scikit-learn container; fast: the project's serving app (inference/Dockerfile).",
    ),
    Field(
        "data_capture_enabled", False, bool, "true | false", None, "Endpoint data capture to the logs bucket."
    ),
    Field(
        "data_capture_sampling_percent",
        20,
        int,
        "an integer in 1..100",
        _between(1, 100),
        "Share of requests captured when data capture is on.",
    ),
    Field(
        "traffic_routing",
        "ALL_AT_ONCE",
        str,
        " | ".join(TRAFFIC_ROUTING),
        _one_of(TRAFFIC_ROUTING),
        "Blue/green traffic routing of guarded endpoint updates.",
    ),
    Field(
        "guardrail_wait_seconds",
        300,
        int,
        "an integer in 0..3600",
        _between(0, 3600),
        "Baking period of a blue/green update before the old fleet is terminated.",
    ),
    Field(
        "decision_threshold",
        0.5,
        (int, float),
        "a number in 0..1",
        _between(0, 1),
        "Proxy default: score >= threshold gives label 1.",
    ),
    Field(
        "log_sample_rate",
        1.0,
        (int, float),
        "a number in 0..1",
        _between(0, 1),
        "Proxy default: share of predictions written to the warehouse.",
    ),
    Field(
        "sticky_assignment",
        True,
        bool,
        "true | false",
        None,
        "Proxy default: a user_id always reaches the same variant.",
    ),
    Field(
        "api_throttle_rate",
        100,
        int,
        "an integer in 1..5000, at most api_throttle_burst",
        _between(1, 5000),
        "API Gateway steady-state requests per second.",
    ),
    Field(
        "api_throttle_burst",
        200,
        int,
        "an integer in 1..5000, at least api_throttle_rate",
        _between(1, 5000),
        "API Gateway burst.",
    ),
    Field(
        "warehouse_type",
        "serverless",
        str,
        " | ".join(WAREHOUSE_TYPES),
        _one_of(WAREHOUSE_TYPES),
        "Redshift Serverless or a provisioned cluster.",
    ),
    Field(
        "warehouse_base_capacity",
        8,
        int,
        "an integer in 8..512, a multiple of 8",
        lambda v: 8 <= v <= 512 and v % 8 == 0,
        "Redshift Serverless base RPUs; the workgroup's MaxCapacity is 4x this (32 at the default).",
    ),
    Field(
        "alarm_email",
        None,
        (str, type(None)),
        "null or an e-mail address",
        _opt(_EMAIL),
        "Optional e-mail subscription to the alarm topic.",
    ),
    Field(
        "monitoring_interval_minutes",
        60,
        int,
        "an integer in 5..1440",
        _between(5, 1440),
        "How often the prediction-monitoring job runs, and the window it reads.",
    ),
    Field(
        "drift_psi_threshold",
        0.2,
        (int, float),
        "a number in 0..10",
        _between(0, 10),
        "Population stability index above which the drift alarm fires.",
    ),
    Field(
        "feature_psi_threshold",
        1.0,
        (int, float),
        "a number in 0..10",
        _between(0, 10),
        "Largest per-feature PSI of a variant's inputs above which the feature-drift alarm fires.",
    ),
    Field(
        "drift_min_predictions",
        200,
        int,
        "an integer in 1..1000000",
        _between(1, 1000000),
        "Fewest predictions of a variant in a monitoring window for its PSIs to be computed; "
        "below it the drift alarms see no data (not breaching).",
    ),
    Field(
        "latency_p99_alarm_ms",
        500,
        int,
        "an integer in 1..60000",
        _between(1, 60000),
        "Endpoint ModelLatency p99 alarm threshold.",
    ),
    Field(
        "error_rate_alarm",
        0.05,
        (int, float),
        "a number in 0..1",
        _between(0, 1),
        "Endpoint 5XX / proxy error rate alarm threshold.",
    ),
    Field(
        "ab_alpha",
        0.05,
        (int, float),
        "a number strictly between 0 and 1",
        _between(0, 1, True, True),
        "A/B report significance level.",
    ),
    Field(
        "ab_power",
        0.8,
        (int, float),
        "a number strictly between 0 and 1",
        _between(0, 1, True, True),
        "A/B report power for the minimum sample size.",
    ),
    Field(
        "ab_min_effect",
        0.03,
        (int, float),
        "a number strictly between 0 and 1",
        _between(0, 1, True, True),
        "Smallest accuracy difference the A/B test should detect.",
    ),
    Field(
        "log_retention_days",
        30,
        int,
        ", ".join(map(str, LOG_RETENTION_DAYS)),
        _one_of(LOG_RETENTION_DAYS),
        "CloudWatch Logs retention of every log group.",
    ),
)

_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class Config:
    """The validated configuration. Build it with ``Config.from_mapping``; never mutate it."""

    project_name: str
    environment: str
    sklearn_framework_version: str
    training_instance_type: str
    processing_instance_type: str
    estimator: str
    quality_metric: str
    quality_threshold: float
    training_schedule: str | None
    challenger_weight: float
    max_live_variants: int
    serving_instance_type: str
    serving_instance_count: int
    serving_image: str
    data_capture_enabled: bool
    data_capture_sampling_percent: int
    traffic_routing: str
    guardrail_wait_seconds: int
    decision_threshold: float
    log_sample_rate: float
    sticky_assignment: bool
    api_throttle_rate: int
    api_throttle_burst: int
    warehouse_type: str
    warehouse_base_capacity: int
    alarm_email: str | None
    monitoring_interval_minutes: int
    drift_psi_threshold: float
    feature_psi_threshold: float
    drift_min_predictions: int
    latency_p99_alarm_ms: int
    error_rate_alarm: float
    ab_alpha: float
    ab_power: float
    ab_min_effect: float
    log_retention_days: int

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def model_package_group_name(self) -> str:
        return f"{self.project_name}-models"

    @property
    def endpoint_name(self) -> str:
        return f"{self.project_name}-endpoint"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Config:
        """Validate ``values`` (missing keys take their defaults) and build the frozen config."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(_BY_NAME))
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(unknown)} in context '{CONTEXT_KEY}'; "
                f"allowed keys: {', '.join(_BY_NAME)}"
            )
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = values.get(f.name, f.default)
            value = _coerce(f, value)
            if f.check is not None and not f.check(value):
                raise ConfigError(
                    f"configuration key '{f.name}' has the value {value!r}; allowed: {f.allowed}"
                )
            out[f.name] = float(value) if f.kind == (int, float) else value
        routing, wait = out["traffic_routing"], out["guardrail_wait_seconds"]
        if guardrail_deployment_seconds(routing, wait) > SAGEMAKER_MAX_DEPLOYMENT_SECONDS:
            waits = GUARDRAIL_TRAFFIC_SHIFTS[routing] + 1
            most = (SAGEMAKER_MAX_DEPLOYMENT_SECONDS - GUARDRAIL_NEW_FLEET_SECONDS) // waits
            raise ConfigError(
                f"configuration keys 'traffic_routing' ({routing}) and 'guardrail_wait_seconds' ({wait}) do not "
                f"fit together: a guarded endpoint update would wait {wait * waits} s ({waits - 1} traffic "
                f"shifts and the final wait, {wait} s each) plus {GUARDRAIL_NEW_FLEET_SECONDS} s for the new "
                f"fleet, more than SageMaker's {SAGEMAKER_MAX_DEPLOYMENT_SECONDS} s limit on a deployment; "
                f"allowed: guardrail_wait_seconds at most {most} with traffic_routing {routing}"
            )
        if out["api_throttle_burst"] < out["api_throttle_rate"]:
            raise ConfigError(
                f"configuration key 'api_throttle_burst' ({out['api_throttle_burst']}) must be >= "
                f"api_throttle_rate ({out['api_throttle_rate']})"
            )
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _coerce(f: Field, value: Any) -> Any:
    """Accept the strings ``cdk -c key=value`` produces; otherwise insist on the declared type."""
    if isinstance(value, str) and f.kind is not str and not (isinstance(f.kind, tuple) and str in f.kind):
        text = value.strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(
                f"configuration key '{f.name}' has the value {value!r}, which is not a valid "
                f"{_kind_name(f.kind)}; allowed: {f.allowed}"
            ) from None
    if isinstance(value, str) and value == "null" and isinstance(f.kind, tuple) and type(None) in f.kind:
        value = None
    if isinstance(value, bool) and f.kind is not bool:
        raise ConfigError(f"configuration key '{f.name}' has the value {value!r}; allowed: {f.allowed}")
    if not isinstance(value, f.kind):
        raise ConfigError(
            f"configuration key '{f.name}' has the value {value!r} of type {type(value).__name__}, "
            f"expected {_kind_name(f.kind)}; allowed: {f.allowed}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds if k is not int or float not in kinds)


def read_context(cdk_json: Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``trainserve`` context block of ``cdk.json`` with ``overrides`` (flat ``-c key=value``) applied."""
    data = json.loads(Path(cdk_json).read_text())
    block = dict(data.get("context", {}).get(CONTEXT_KEY, {}))
    block.update(overrides or {})
    return block


def load(project_root: Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate the configuration of the project at ``project_root``."""
    return Config.from_mapping(read_context(Path(project_root) / "cdk.json", overrides))
