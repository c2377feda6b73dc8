"""AWS access of the release controller: read the registry and the endpoint, apply a planner ``Decision``.

Used by the Lambda handler and by the CLI's ``endpoint``/``traffic`` commands (same code on both sides).
Only stdlib + boto3.

- The registry is read with ``ListModelPackages`` once per approval status (always passing
  ``ModelApprovalStatus``), so every version comes with its CURRENT status.
- The endpoint is read with ``DescribeEndpoint`` (weights: ``DesiredWeight``, else ``CurrentWeight``, else
  0.0 — moto drops 0.0 weights), ``DescribeEndpointConfig`` (model names, instance type) and ``ListTags``
  (the ``trainserve:champion`` tag).
- Applying: ``create`` = models + endpoint config + ``CreateEndpoint``; ``deploy`` = models + endpoint config +
  ``UpdateEndpoint``, with blue/green ``DeploymentConfig`` (traffic routing and auto-rollback alarms)
  wherever the API allows it: SageMaker's guardrails require the same variant names in the old and the new
  config, so an update that adds or removes a variant gets SageMaker's default blue/green (all at once);
  ``weights`` = ``UpdateEndpointWeightsAndCapacities`` (instance counts passed too). The blue/green
  ``MaximumExecutionTimeoutInSeconds`` is the update's whole waiting (each traffic shift's wait and the final
  wait) plus time for the new fleet (``release_planner.deployment_timeout_seconds``). Between two steps the
  adapter waits for ``InService`` (bounded). After a change, endpoint configs and models of the project that
  neither the live nor the previous config use are deleted (best effort).
- An endpoint that is Creating/Updating/SystemUpdating/RollingBack raises ``EndpointBusy`` (retryable).
- ``reject`` writes an operator's decision to the registry (``UpdateModelPackage``; ``traffic rollback``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError
from release_planner import (
    APPROVED,
    CANARY_PERCENT,
    CHAMPION_TAG,
    FEATURES_DIGEST_KEY,
    LINEAR_STEP_PERCENT,
    REJECTED,
    STATUSES,
    Decision,
    DesiredEndpoint,
    EndpointState,
    LiveVariant,
    PackageVersion,
    ReleaseBlocked,
    ReleaseSettings,
    Step,
    deployment_timeout_seconds,
    has_local_storage,
    variant_name,
    version_of,
)

log = logging.getLogger(__name__)

BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


class EndpointBusy(RuntimeError):
    """The endpoint is changing (Creating, Updating, ...): try again later (Lambda retries the event)."""


def model_name(project: str, version: int, package_arn: str) -> str:
    """``{project}-v{N}-{6 hex of sha256(package ARN)}`` (deterministic: a retry reuses the model)."""
    return f"{project}-v{version}-{hashlib.sha256(package_arn.encode()).hexdigest()[:6]}"


def endpoint_config_name(project: str, now: datetime | None = None) -> str:
    """``{project}-ec-{UTC yyyymmddHHMMSS}-{4 hex}``."""
    now = now or datetime.now(UTC)
    return f"{project}-ec-{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(2)}"


def model_name_pattern(project: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(project)}-v\d+-[0-9a-f]{{6}}$")


def endpoint_config_pattern(project: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(project)}-ec-\d{{14}}-[0-9a-f]{{4}}$")


def _not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    return err.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "could not find" in err.get("Message", "").lower() or "not found" in err.get("Message", "").lower()
    )


class SageMakerAdapter:
    """Reads and changes one endpoint and one model package group."""

    def __init__(
        self,
        settings: ReleaseSettings,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sm = client or boto3.client("sagemaker")
        self._sleep = sleep
        self._clock = clock

    # -- reading ---------------------------------------------------------------------------------------

    def read_registry(self) -> list[PackageVersion]:
        """Every version of the group with its current approval status, oldest first."""
        out: list[PackageVersion] = []
        paginator = self.sm.get_paginator("list_model_packages")
        for status in STATUSES:
            pages = paginator.paginate(
                ModelPackageGroupName=self.settings.model_package_group, ModelApprovalStatus=status
            )
            for page in pages:
                for s in page.get("ModelPackageSummaryList", []):
                    arn = s["ModelPackageArn"]
                    version = s.get("ModelPackageVersion") or version_of(arn.rsplit("/", 1)[-1])
                    if version is None:
                        continue
                    out.append(
                        PackageVersion(
                            int(version), arn, s.get("ModelApprovalStatus", status), s.get("CreationTime")
                        )
                    )
        return sorted(out, key=lambda p: p.version)

    def with_inputs(
        self, registry: Iterable[PackageVersion], state: EndpointState, version: int | None = None
    ) -> list[PackageVersion]:
        """``registry`` with ``inputs`` (each package's ``features_sha256`` metadata) read for the versions the
        planner compares: the live ones, ``version``, the approved ones newer than the champion (the newest
        replaces it with max_live_variants 1; a reconcile names each one it does not serve, and why), and the
        newest approved one older than the champion (it replaces a rejected champion): one
        DescribeModelPackage each, not the whole group. A package that cannot be described keeps ``inputs``
        None (the planner then does not compare it)."""
        registry = list(registry)
        wanted = {v.version for v in state.variants} | ({version} if version is not None else set())
        approved = sorted(p.version for p in registry if p.status == APPROVED)
        champion = state.champion if state.variants else None
        if champion is None:
            wanted.update(approved[-1:])
        else:
            wanted.update(v for v in approved if v > champion)
            wanted.update([v for v in approved if v < champion][-1:])
        out = []
        for package in registry:
            if package.version in wanted and package.inputs is None:
                try:
                    described = self.sm.describe_model_package(ModelPackageName=package.arn)
                except ClientError as exc:
                    log.warning("cannot read the metadata of %s: %s", package.arn, exc)
                else:
                    digest = (described.get("CustomerMetadataProperties") or {}).get(FEATURES_DIGEST_KEY)
                    if digest:
                        package = replace(package, inputs=str(digest))
            out.append(package)
        return out

    def read_endpoint(self) -> EndpointState:
        try:
            ep = self.sm.describe_endpoint(EndpointName=self.settings.endpoint_name)
        except ClientError as exc:
            if _not_found(exc):
                return EndpointState(exists=False)
            raise
        config: dict[str, Any] = {}
        try:
            config = self.sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
        except ClientError as exc:
            if not _not_found(exc):
                raise
            log.warning("endpoint config %s is gone; model names unknown", ep.get("EndpointConfigName"))
        by_name = {v["VariantName"]: v for v in config.get("ProductionVariants", [])}
        variants = []
        for pv in ep.get("ProductionVariants", []):
            name = pv["VariantName"]
            version = version_of(name)
            if version is None:
                raise ReleaseBlocked(
                    f"endpoint {self.settings.endpoint_name} has a variant {name!r} not named v<N>; "
                    "it was not created by the release controller"
                )
            cfg = by_name.get(name, {})
            current = pv.get("CurrentWeight")
            weight = pv.get("DesiredWeight", current)
            variants.append(
                LiveVariant(
                    name=name,
                    version=version,
                    weight=float(weight or 0.0),
                    current_weight=float(current or 0.0),
                    model_name=cfg.get("ModelName"),
                    instance_type=cfg.get("InstanceType"),
                    instance_count=pv.get("DesiredInstanceCount")
                    or pv.get("CurrentInstanceCount")
                    or cfg.get("InitialInstanceCount"),
                )
            )
        tags = self._tags(ep["EndpointArn"])
        return EndpointState(
            exists=True,
            status=ep.get("EndpointStatus"),
            variants=tuple(sorted(variants, key=lambda v: v.version)),
            champion_tag=tags.get(CHAMPION_TAG),
            config_name=ep.get("EndpointConfigName"),
        )

    def _tags(self, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        kwargs: dict[str, Any] = {"ResourceArn": arn}
        while True:
            page = self.sm.list_tags(**kwargs)
            tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
            if not page.get("NextToken"):
                return tags
            kwargs["NextToken"] = page["NextToken"]

    def wait_until_ready(self, timeout_s: float = 0.0, poll_s: float = 15.0) -> EndpointState:
        """The endpoint once it is not busy (absent counts as ready); ``EndpointBusy`` after ``timeout_s``."""
        deadline = self._clock() + max(0.0, timeout_s)
        while True:
            state = self.read_endpoint()
            if not state.exists or state.status not in BUSY_STATUSES:
                return state
            if self._clock() >= deadline:
                raise EndpointBusy(
                    f"endpoint {self.settings.endpoint_name} is {state.status}; "
                    "the change is retried once it is InService"
                )
            self._sleep(poll_s)

    # -- applying ---------------------------------------------------------------------------------------

    def apply(
        self,
        decision: Decision,
        registry: Iterable[PackageVersion],
        current: EndpointState,
        step_wait_s: float = 900.0,
        poll_s: float = 15.0,
        cleanup: bool = True,
    ) -> EndpointState:
        """Run the decision's steps in order; returns the endpoint as read afterwards."""
        if not decision.steps:
            return current
        if current.exists and current.status in BUSY_STATUSES:
            raise EndpointBusy(f"endpoint {self.settings.endpoint_name} is {current.status}")
        arns = {p.version: p.arn for p in registry}
        keep = {current.config_name} if current.config_name else set()
        state = current
        for i, step in enumerate(decision.steps):
            if i > 0:
                state = self.wait_until_ready(step_wait_s, poll_s)
            log.info(
                "applying step",
                extra={
                    "step": step.kind,
                    "variants": step.endpoint.as_json(),
                    "endpoint": self.settings.endpoint_name,
                },
            )
            if step.kind == "weights":
                self._update_weights(step.endpoint, state)
            elif step.kind in ("create", "deploy"):
                keep.add(self._deploy(step, state, arns))
            else:
                raise ValueError(f"unknown step kind {step.kind!r}")
            self._set_champion(step.endpoint.champion)
        state = self.read_endpoint()
        if cleanup:
            # Keep the config the endpoint had, every config just deployed (during a blue/green update AWS
            # still reports the old one) and the one it reports now.
            self.cleanup_unused(keep_configs=keep | ({state.config_name} if state.config_name else set()))
        return state

    def _update_weights(self, desired: DesiredEndpoint, state: EndpointState) -> None:
        items = []
        for version, weight in desired.variants:
            live = state.variant(version)
            if live is None:
                raise ValueError(f"weights step names {variant_name(version)}, which is not live")
            item: dict[str, Any] = {"VariantName": live.name, "DesiredWeight": float(weight)}
            item["DesiredInstanceCount"] = int(live.instance_count or self.settings.instance_count)
            items.append(item)
        self.sm.update_endpoint_weights_and_capacities(
            EndpointName=self.settings.endpoint_name, DesiredWeightsAndCapacities=items
        )

    def _deploy(self, step: Step, state: EndpointState, arns: dict[int, str]) -> str:
        """New endpoint config with the step's variants; create or (blue/green) update the endpoint."""
        s = self.settings
        variants = []
        for version, weight in step.endpoint.variants:
            live = state.variant(version)
            name = live.model_name if live is not None and live.model_name else None
            if name is None:
                arn = arns.get(version)
                if arn is None:
                    raise ReleaseBlocked(
                        f"{variant_name(version)} is not in model package group {s.model_package_group}"
                    )
                name = self.ensure_model(version, arn)
            variants.append(
                {
                    "VariantName": variant_name(version),
                    "ModelName": name,
                    "InitialInstanceCount": s.instance_count,
                    "InstanceType": s.instance_type,
                    "InitialVariantWeight": float(weight),
                }
            )
        config_name = endpoint_config_name(s.project_name)
        kwargs: dict[str, Any] = {
            "EndpointConfigName": config_name,
            "ProductionVariants": variants,
            "Tags": [{"Key": "trainserve:project", "Value": s.project_name}],
        }
        # the project key on the instances' ML storage volumes (SageMaker refuses one for instance types with
        # local storage, which it encrypts in hardware) and on the captured data
        if s.kms_key_arn and not has_local_storage(s.instance_type):
            kwargs["KmsKeyId"] = s.kms_key_arn
        if s.data_capture_enabled:
            kwargs["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": s.data_capture_percent,
                "DestinationS3Uri": s.data_capture_s3_uri,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            }
            if s.kms_key_arn:
                kwargs["DataCaptureConfig"]["KmsKeyId"] = s.kms_key_arn
        self.sm.create_endpoint_config(**kwargs)
        if step.kind == "create" or not state.exists:
            self.sm.create_endpoint(
                EndpointName=s.endpoint_name,
                EndpointConfigName=config_name,
                Tags=[
                    {"Key": "trainserve:project", "Value": s.project_name},
                    {"Key": CHAMPION_TAG, "Value": variant_name(step.endpoint.champion)},
                ],
            )
        else:
            kwargs = {"EndpointName": s.endpoint_name, "EndpointConfigName": config_name}
            if {v.name for v in state.variants} == {v["VariantName"] for v in variants}:
                kwargs["DeploymentConfig"] = self.deployment_config()
            else:
                log.info(
                    "variants added or removed: SageMaker allows no deployment guardrails for this update "
                    "(its default blue/green, all at once, applies)"
                )
            self.sm.update_endpoint(**kwargs)
        return config_name

    def deployment_config(self) -> dict[str, Any]:
        """Blue/green guardrails: traffic routing from TRAFFIC_ROUTING, auto-rollback on ROLLBACK_ALARMS."""
        s = self.settings
        routing: dict[str, Any] = {
            "Type": s.traffic_routing,
            "WaitIntervalInSeconds": s.guardrail_wait_seconds,
        }
        if s.traffic_routing == "CANARY":
            routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": CANARY_PERCENT}
        elif s.traffic_routing == "LINEAR":
            routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": LINEAR_STEP_PERCENT}
        # One wait per traffic shift plus the final wait before the old fleet goes, and time to bring up the
        # new fleet (release_planner.deployment_timeout_seconds); ReleaseSettings refused a routing and wait
        # whose timeout cannot fit in SageMaker's 28800 s.
        timeout = deployment_timeout_seconds(s.traffic_routing, s.guardrail_wait_seconds)
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": s.guardrail_wait_seconds,
                "MaximumExecutionTimeoutInSeconds": timeout,
            }
        }
        if s.rollback_alarms:
            config["AutoRollbackConfiguration"] = {
                "Alarms": [{"AlarmName": a} for a in s.rollback_alarms[:10]]
            }
        return config

    def ensure_model(self, version: int, package_arn: str) -> str:
        """The SageMaker model of a package version (created once; a retry reuses it)."""
        s = self.settings
        name = model_name(s.project_name, version, package_arn)
        try:
            self.sm.describe_model(ModelName=name)
            return name
        except ClientError as exc:
            if not _not_found(exc):
                raise
        if s.serving_image_uri:
            pkg = self.sm.describe_model_package(ModelPackageName=package_arn)
            container = pkg["InferenceSpecification"]["Containers"][0]
            primary = {
                "Image": s.serving_image_uri,
                "ModelDataUrl": container["ModelDataUrl"],
                "Environment": dict(container.get("Environment") or {}),
            }
        else:
            primary = {"ModelPackageName": package_arn}
        kwargs: dict[str, Any] = {
            "ModelName": name,
            "PrimaryContainer": primary,
            "Tags": [
                {"Key": "trainserve:project", "Value": s.project_name},
                {"Key": "trainserve:model-package-arn", "Value": package_arn},
            ],
        }
        if s.model_execution_role_arn:
            kwargs["ExecutionRoleArn"] = s.model_execution_role_arn
        self.sm.create_model(**kwargs)
        return name

    def reject(self, package: PackageVersion, description: str) -> None:
        """Set a model package version to Rejected with ``description`` as its ApprovalDescription (the
        registry records an operator's decision, e.g. a rollback, so the release rules keep to it)."""
        self.sm.update_model_package(
            ModelPackageArn=package.arn, ModelApprovalStatus=REJECTED, ApprovalDescription=description
        )

    def _set_champion(self, champion: int) -> None:
        arn = self.sm.describe_endpoint(EndpointName=self.settings.endpoint_name)["EndpointArn"]
        if self._tags(arn).get(CHAMPION_TAG) == variant_name(champion):
            return
        self.sm.delete_tags(ResourceArn=arn, TagKeys=[CHAMPION_TAG])
        self.sm.add_tags(ResourceArn=arn, Tags=[{"Key": CHAMPION_TAG, "Value": variant_name(champion)}])

    # -- housekeeping -----------------------------------------------------------------------------------

    def cleanup_unused(self, keep_configs: set[str]) -> list[str]:
        """Delete the project's endpoint configs and models that no kept config uses (best effort)."""
        s = self.settings
        deleted: list[str] = []
        try:
            used_models: set[str] = set()
            for c in keep_configs:
                try:
                    cfg = self.sm.describe_endpoint_config(EndpointConfigName=c)
                except ClientError as exc:
                    if _not_found(exc):
                        continue
                    raise
                used_models.update(v["ModelName"] for v in cfg.get("ProductionVariants", []))
            ec_pattern = endpoint_config_pattern(s.project_name)
            for page in self.sm.get_paginator("list_endpoint_configs").paginate(
                NameContains=f"{s.project_name}-ec-"
            ):
                for c in page.get("EndpointConfigs", []):
                    name = c["EndpointConfigName"]
                    if ec_pattern.match(name) and name not in keep_configs:
                        self.sm.delete_endpoint_config(EndpointConfigName=name)
                        deleted.append(name)
            m_pattern = model_name_pattern(s.project_name)
            for page in self.sm.get_paginator("list_models").paginate(NameContains=f"{s.project_name}-v"):
                for m in page.get("Models", []):
                    name = m["ModelName"]
                    if m_pattern.match(name) and name not in used_models:
                        self.sm.delete_model(ModelName=name)
                        deleted.append(name)
        except ClientError as exc:  # housekeeping must never fail a release
            log.warning("cleanup of unused configs/models stopped: %s", exc)
        return deleted


def describe_variants(state: EndpointState, registry: Iterable[PackageVersion]) -> list[dict[str, Any]]:
    """The live variants as plain dicts (for the handler's summary and ``trainserve endpoint status``)."""
    by_version = {p.version: p for p in registry}
    champion = state.champion
    out = []
    for v in state.variants:
        pkg = by_version.get(v.version)
        out.append(
            {
                "variant": v.name,
                "version": v.version,
                "champion": v.version == champion,
                "desired_weight": v.weight,
                "current_weight": v.current_weight,
                "model_name": v.model_name,
                "model_package_arn": pkg.arn if pkg else None,
                "approval_status": pkg.status if pkg else None,
                "instance_type": v.instance_type,
                "instance_count": v.instance_count,
            }
        )
    return out
