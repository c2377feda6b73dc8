"""Release controller Lambda: a model package approval status change -> the endpoint's production variants.

Event: EventBridge "SageMaker Model Package State Change" (``source`` aws.sagemaker; the rule's pattern is
``event_pattern.json`` plus ``detail.ModelPackageGroupName``). Events for another group are ignored.

What it changes: the SageMaker endpoint ``ENDPOINT_NAME`` (created on the first approval), its endpoint
configs and models (``{PROJECT_NAME}-*``), and the endpoint's ``trainserve:champion`` tag. The decision is
``release_planner.plan`` over the registry's current statuses and the current endpoint, so duplicate and
out-of-order events are harmless.

Failures:
- ``EndpointBusy`` (the endpoint is Updating, ...) propagates: Lambda retries the event (bounded by the
  function's retry configuration, then the on-failure destination).
- ``ReleaseBlocked`` (a person must act, e.g. the champion was rejected and no older approved version
  exists) is raised after the safe part of the decision is applied (the champion keeps serving; rejected
  challengers still leave). It is logged as an error and propagates, so the event lands in the on-failure
  destination where the operator sees it. Retrying cannot loop: it is bounded by the same retry
  configuration, and a retry changes nothing more.
- ``SettingsError`` (bad environment) propagates with the variable's name.

Environment: PROJECT_NAME, ENDPOINT_NAME, MODEL_PACKAGE_GROUP, CHALLENGER_WEIGHT, MAX_LIVE_VARIANTS,
INSTANCE_TYPE, INSTANCE_COUNT, DATA_CAPTURE_ENABLED, DATA_CAPTURE_PERCENT, DATA_CAPTURE_S3_URI,
MODEL_EXECUTION_ROLE_ARN, ROLLBACK_ALARMS, TRAFFIC_ROUTING, GUARDRAIL_WAIT_SECONDS, SERVING_IMAGE_URI
(see ``release_planner.ReleaseSettings.from_env``).

Returns ``{"action", "endpoint", "variants", "reason"}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import release_planner
import sagemaker_adapter
from release_planner import ReleaseBlocked, ReleaseEvent, ReleaseSettings

# Seconds kept free of the Lambda's remaining time when waiting for a busy endpoint.
SAFETY_MARGIN_S = 60.0
POLL_S = 15.0

_LOG_FIELDS = ("action", "endpoint", "variants", "reason", "event", "step", "error", "group")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (CloudWatch Logs Insights can query the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
        }
        for key in _LOG_FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _setup_logging() -> logging.Logger:
    """JSON log lines in Lambda (on the runtime's own handler); elsewhere (the local cloud, the CLI, tests)
    the importing process's logging configuration is left alone."""
    root = logging.getLogger()
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        if not root.handlers:
            root.addHandler(logging.StreamHandler(sys.stdout))
        for h in root.handlers:
            h.setFormatter(JsonFormatter())
        root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
        logging.getLogger("botocore").setLevel(logging.WARNING)
    logger = logging.getLogger("release_controller")
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    return logger


log = _setup_logging()


def parse_event(event: dict[str, Any], group: str) -> ReleaseEvent | None:
    """The event's version and status, or None when the event is for another group (or not ours)."""
    detail = event.get("detail") or {}
    if event.get("detail-type") not in (None, release_planner.EVENT_DETAIL_TYPE):
        return None
    event_group = detail.get("ModelPackageGroupName")
    if event_group != group:
        return None
    arn = detail.get("ModelPackageArn") or next(iter(event.get("resources") or []), None)
    version = detail.get("ModelPackageVersion")
    if version is None and arn:
        version = release_planner.version_of(arn.rsplit("/", 1)[-1])
    status = detail.get("ModelApprovalStatus")
    if version is None or status is None:
        raise ValueError("event detail has no ModelPackageVersion/ModelPackageArn or no ModelApprovalStatus")
    return ReleaseEvent(version=int(version), status=str(status), arn=arn)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge model package state change -> make the endpoint match the registry."""
    settings = ReleaseSettings.from_env(os.environ)
    release = parse_event(event, settings.model_package_group)
    if release is None:
        detail = event.get("detail") or {}
        summary = {
            "action": "ignored",
            "endpoint": settings.endpoint_name,
            "variants": [],
            "reason": f"event for group {detail.get('ModelPackageGroupName')!r}, "
            f"not {settings.model_package_group!r}",
        }
        log.info("event ignored", extra=summary)
        return summary

    adapter = sagemaker_adapter.SageMakerAdapter(settings)
    wait_s = _time_left_s(context)
    state = adapter.wait_until_ready(timeout_s=wait_s, poll_s=POLL_S)
    # the live versions' and the event version's input features, which the planner compares
    registry = adapter.with_inputs(adapter.read_registry(), state, release.version)
    event_text = f"{release.status}(v{release.version})"
    try:
        decision = release_planner.plan(registry, state, settings, release)
    except ReleaseBlocked as exc:
        log.error(
            "release blocked: a person must act",
            extra={
                "action": "blocked",
                "endpoint": settings.endpoint_name,
                "reason": str(exc),
                "event": event_text,
            },
        )
        raise
    state = adapter.apply(decision, registry, state, step_wait_s=_time_left_s(context), poll_s=POLL_S)
    summary = {
        "action": decision.action,
        "endpoint": settings.endpoint_name,
        "variants": sagemaker_adapter.describe_variants(state, registry),
        "reason": decision.reason,
    }
    if decision.blocked:
        log.error(
            "release blocked: a person must act", extra={**summary, "action": "blocked", "event": event_text}
        )
        raise ReleaseBlocked(decision.blocked)
    log.info("release decision applied", extra={**summary, "event": event_text})
    return summary


def _time_left_s(context: Any) -> float:
    """How long the handler may wait for a busy endpoint (0 outside Lambda)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return 0.0
    return max(0.0, remaining() / 1000.0 - SAFETY_MARGIN_S)
