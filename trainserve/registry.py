"""The model registry (a SageMaker Model Package Group) as the CLI and the local cloud see it.

Registering, listing and describing model versions, with the metadata the training pipeline attaches
(``CustomerMetadataProperties``: ``estimator``, ``metrics``, ``quality_metric``, ``quality_value``,
``n_features``, ``decision_threshold``, ``baseline_uri``, ``features_uri``, ``features_sha256``; see docs/DESIGN.md "Registry
entries"). ``metrics`` is ``accuracy=0.95 f1=0.93 ...`` (SageMaker allows no JSON in metadata values); the
feature names are in the JSON document at ``features_uri``. Packages registered before that (``metrics`` as
JSON, ``feature_names`` a JSON list in the metadata) are still read.

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
    features_uri: str | None = None
    n_features: int | None = None
    decision_threshold: float | None = None
    features_sha256: str | None = None

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
            "n_features": self.n_features if self.n_features is not None else len(self.feature_names),
            "approval_description": self.approval_description,
            "features_uri": self.features_uri,
            "decision_threshold": self.decision_threshold,
            "features_sha256": self.features_sha256,
        }


def _error_code(exc: Exception) -> str:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")  # None: no AWS answer


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


def parse_metrics(text: Any) -> dict[str, float]:
    """The ``metrics`` metadata value: ``"accuracy=0.95 f1=0.93"`` (``training/evaluate.py``
    ``format_metrics``) or, as packages registered before that have it, JSON ``{"accuracy": 0.95}``.
    Entries that are not numbers are left out; anything unreadable gives {}."""
    if not isinstance(text, str) or not text.strip():
        return {}
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError:
            return {}
        if not isinstance(raw, dict):
            return {}
        items = list(raw.items())
    else:
        items = [tuple(part.split("=", 1)) for part in text.split() if "=" in part]
    out: dict[str, float] = {}
    for name, value in items:
        number = _float(value)
        if number is not None and name:
            out[str(name)] = number
    return out


def _json_from_s3(s3, uri: str | None) -> Any:
    """The JSON document at ``uri``, or None (no client, not an s3 URI, missing or unreadable)."""
    if not s3 or not uri or not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[5:].partition("/")
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # a missing or unreadable document only means nothing to show
        return None


def _metrics_from_s3(s3, uri: str | None) -> dict[str, float]:
    document = _json_from_s3(s3, uri)
    if not isinstance(document, dict):
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


def _feature_names(props: dict[str, Any], s3=None, load: bool = False) -> list[str]:
    """Old packages: the ``feature_names`` metadata (a JSON list); else, when ``load`` and an ``s3`` client
    are given, the ``feature_names`` of the document at ``features_uri``."""
    raw: Any = props.get("feature_names")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if raw is None and load:
        document = _json_from_s3(s3, props.get("features_uri"))
        raw = document.get("feature_names") if isinstance(document, dict) else None
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return list(raw)
    return []


def version_from_description(described: dict[str, Any], s3=None, load_features: bool = False) -> ModelVersion:
    """A ``DescribeModelPackage`` response as a ``ModelVersion`` (metrics from the metadata, else from the
    evaluation report in S3 when an ``s3`` client is given; the feature names from the metadata of old
    packages, else from ``features_uri`` when ``load_features`` and an ``s3`` client are given)."""
    props = described.get("CustomerMetadataProperties") or {}
    metrics = parse_metrics(props.get("metrics"))
    evaluation_uri = (
        described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    )
    if not metrics:
        metrics = _metrics_from_s3(s3, evaluation_uri)
    estimator = props.get("estimator")
    description = described.get("ModelPackageDescription")
    if not estimator and description and description.startswith("estimator: "):
        estimator = description[len("estimator: ") :].strip()
    feature_names = _feature_names(props, s3, load_features)
    n_features = _float(props.get("n_features"))
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
        feature_names=feature_names,
        approval_description=described.get("ApprovalDescription"),
        features_uri=props.get("features_uri"),
        n_features=int(n_features) if n_features is not None else (len(feature_names) or None),
        decision_threshold=_float(props.get("decision_threshold")),
        features_sha256=props.get("features_sha256") or None,
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
    """One version of the group (with its feature names, read from ``features_uri`` when an ``s3`` client is
    given); RegistryError naming the version when it does not exist."""
    from botocore.exceptions import ClientError

    group_arn = sm.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    arn = group_arn.replace(":model-package-group/", ":model-package/", 1) + f"/{int(version)}"
    try:
        described = sm.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        raise RegistryError(f"model version {version} does not exist in group '{group}'") from exc
    return version_from_description(described, s3, load_features=True)


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
