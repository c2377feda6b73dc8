"""The model registry (a SageMaker Model Package Group) as the CLI and the local cloud see it.

Registering, listing and describing model versions, with the metadata the training pipeline attaches
(``CustomerMetadataProperties``: ``estimator``, ``metrics``, ``quality_metric``, ``quality_value``,
``feature_names``, ``baseline_uri``; see docs/DESIGN.md "Registry entries").

moto caveat (docs/TOOLCHAIN.md): listing is always filtered by ``ModelApprovalStatus`` (one call per status),
which works the same on AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
METRIC_ORDER = ("accuracy", "precision", "recall", "f1", "roc_auc")


class RegistryError(RuntimeError):
    """A registry lookup failed in a way the operator can act on (unknown version, no group)."""


@dataclass
class ModelVersion:
    """One registered model package, flattened for display."""

    version: int
    arn: str
    approval_status: str
    created: datetime | None
    estimator: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    quality_metric: str | None = None
    quality_value: float | None = None
    description: str | None = None
    model_data_url: str | None = None
    evaluation_uri: str | None = None
    baseline_uri: str | None = None
    feature_names: list[str] = field(default_factory=list)
    approval_description: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arn": self.arn,
            "approval_status": self.approval_status,
            "created": self.created.isoformat() if self.created else None,
            "estimator": self.estimator,
            "metrics": self.metrics,
            "quality_metric": self.quality_metric,
            "quality_value": self.quality_value,
            "description": self.description,
            "model_data_url": self.model_data_url,
            "evaluation_uri": self.evaluation_uri,
            "baseline_uri": self.baseline_uri,
            "n_features": len(self.feature_names),
            "approval_description": self.approval_description,
        }


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def ensure_model_package_group(sm, group: str, description: str = "trainserve models") -> bool:
    """Create the model package group if missing; True when it was created."""
    from botocore.exceptions import ClientError

    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
        return False
    except ClientError as exc:
        if _error_code(exc) not in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException"):
            raise
    sm.create_model_package_group(ModelPackageGroupName=group, ModelPackageGroupDescription=description)
    return True


def register_model_package(sm, request: dict[str, Any]) -> dict[str, Any]:
    """``CreateModelPackage`` with ``request`` (creating the group first if needed); returns the description."""
    ensure_model_package_group(sm, request["ModelPackageGroupName"])
    arn = sm.create_model_package(**request)["ModelPackageArn"]
    return sm.describe_model_package(ModelPackageName=arn)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _metrics_from_s3(s3, uri: str | None) -> dict[str, float]:
    if not s3 or not uri or not uri.startswith("s3://"):
        return {}
    bucket, _, key = uri[5:].partition("/")
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # a missing or unreadable report only means no metrics to show
        return {}
    flat = document.get("metrics")
    if isinstance(flat, dict):
        return {k: float(v) for k, v in flat.items() if _float(v) is not None}
    binary = document.get("binary_classification_metrics", {})
    names = {"auc": "roc_auc"}
    return {
        names.get(k, k): float(v["value"])
        for k, v in binary.items()
        if isinstance(v, dict) and _float(v.get("value")) is not None
    }


def version_from_description(described: dict[str, Any], s3=None) -> ModelVersion:
    """A ``DescribeModelPackage`` response as a ``ModelVersion`` (metrics from the metadata, else from the
    evaluation report in S3 when an ``s3`` client is given)."""
    props = described.get("CustomerMetadataProperties") or {}
    metrics: dict[str, float] = {}
    try:
        raw = json.loads(props.get("metrics", "{}"))
        metrics = {k: float(v) for k, v in raw.items() if _float(v) is not None}
    except (TypeError, ValueError):
        metrics = {}
    evaluation_uri = (
        described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    )
    if not metrics:
        metrics = _metrics_from_s3(s3, evaluation_uri)
    estimator = props.get("estimator")
    description = described.get("ModelPackageDescription")
    if not estimator and description and description.startswith("estimator: "):
        estimator = description[len("estimator: ") :].strip()
    try:
        feature_names = json.loads(props.get("feature_names", "[]"))
    except (TypeError, ValueError):
        feature_names = []
    containers = described.get("InferenceSpecification", {}).get("Containers", [{}])
    quality_metric = props.get("quality_metric")
    quality_value = _float(props.get("quality_value"))
    if quality_value is None and quality_metric:
        quality_value = metrics.get(quality_metric)
    return ModelVersion(
        version=int(described.get("ModelPackageVersion") or described["ModelPackageArn"].rsplit("/", 1)[-1]),
        arn=described["ModelPackageArn"],
        approval_status=described.get("ModelApprovalStatus", ""),
        created=described.get("CreationTime"),
        estimator=estimator,
        metrics={k: metrics[k] for k in sorted(metrics, key=lambda m: (METRIC_ORDER + (m,)).index(m))},
        quality_metric=quality_metric,
        quality_value=quality_value,
        description=description,
        model_data_url=containers[0].get("ModelDataUrl") if containers else None,
        evaluation_uri=evaluation_uri,
        baseline_uri=props.get("baseline_uri"),
        feature_names=list(feature_names) if isinstance(feature_names, list) else [],
        approval_description=described.get("ApprovalDescription"),
    )


def list_model_packages(sm, group: str, status: str | None = None) -> list[dict[str, Any]]:
    """The group's model package summaries (optionally of one approval status), oldest version first."""
    if status is not None and status not in APPROVAL_STATUSES:
        raise RegistryError(f"unknown approval status '{status}' (one of: {', '.join(APPROVAL_STATUSES)})")
    summaries: dict[str, dict[str, Any]] = {}
    for one in (status,) if status else APPROVAL_STATUSES:
        paginator = sm.get_paginator("list_model_packages")
        try:
            for page in paginator.paginate(ModelPackageGroupName=group, ModelApprovalStatus=one):
                for item in page.get("ModelPackageSummaryList", []):
                    summaries[item["ModelPackageArn"]] = item
        except Exception as exc:
            if _error_code(exc) in ("ValidationException", "ResourceNotFound"):
                raise RegistryError(f"cannot list model packages of group '{group}': {exc}") from exc
            raise
    return sorted(summaries.values(), key=lambda s: int(s.get("ModelPackageVersion") or 0))


def list_model_versions(sm, group: str, status: str | None = None, s3=None) -> list[ModelVersion]:
    """Every version of the group (or those of one approval status), described, oldest first."""
    return [
        version_from_description(sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]), s3)
        for s in list_model_packages(sm, group, status)
    ]


def describe_model_version(sm, group: str, version: int, s3=None) -> ModelVersion:
    """One version of the group; RegistryError naming the version when it does not exist."""
    from botocore.exceptions import ClientError

    group_arn = sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    arn = group_arn.replace(":model-package-group/", ":model-package/", 1) + f"/{int(version)}"
    try:
        described = sm.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        raise RegistryError(f"model version {version} does not exist in group '{group}'") from exc
    return version_from_description(described, s3)


def set_approval_status(sm, arn: str, status: str, description: str | None = None) -> dict[str, Any]:
    """``UpdateModelPackage`` to ``status`` keeping the package's metadata; returns the new description.

    Always sends ``ModelApprovalStatus`` and the current ``CustomerMetadataProperties``: moto 5.2.5 replaces
    both with what the update carries (an update without them wipes them), while AWS leaves them; sending
    the current values gives the same result on both.
    """
    if status not in APPROVAL_STATUSES:
        raise RegistryError(f"unknown approval status '{status}' (one of: {', '.join(APPROVAL_STATUSES)})")
    current = sm.describe_model_package(ModelPackageName=arn)
    request: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if description:
        request["ApprovalDescription"] = description
    if current.get("CustomerMetadataProperties"):
        request["CustomerMetadataProperties"] = current["CustomerMetadataProperties"]
    sm.update_model_package(**request)
    return sm.describe_model_package(ModelPackageName=arn)
