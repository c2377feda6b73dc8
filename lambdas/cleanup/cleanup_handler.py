"""CloudFormation custom resource: on stack Delete, remove what the release controller created outside
CloudFormation: the endpoint ``ENDPOINT_NAME``, then the project's endpoint configs
(``{project}-ec-{yyyymmddHHMMSS}-{4 hex}``) and models (``{project}-v{N}-{6 hex}``). Create and Update do
nothing (they succeed).

This is a plain Lambda-backed custom resource (the resource's ``ServiceToken`` is this function's ARN), NOT
a ``custom_resources.Provider`` on-event handler: it answers CloudFormation itself by PUTting the
cfn-response document to ``ResponseURL``, on every path (errors included), so a stack never hangs.

Properties (optional): ``ProjectName`` (else env ``PROJECT_NAME``), ``EndpointName`` (else env
``ENDPOINT_NAME``, else ``{project}-endpoint``). The function needs a timeout long enough for an endpoint
deletion (a few minutes; 15 minutes is safe): it waits for the endpoint to be gone, then deletes configs
and models.

Names are matched exactly (patterns above), so another project whose name starts with this one's is safe.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.request
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger("cleanup")
log.setLevel(logging.INFO)

POLL_S = 10.0
SAFETY_MARGIN_S = 30.0
DEFAULT_WAIT_S = 600.0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """CloudFormation Create/Update/Delete -> (on Delete) remove the controller's endpoint, configs, models."""
    props = event.get("ResourceProperties") or {}
    project = props.get("ProjectName") or os.environ.get("PROJECT_NAME", "")
    physical_id = event.get("PhysicalResourceId") or f"{project or 'trainserve'}-release-cleanup"
    status, reason, data = "SUCCESS", "nothing to do", {}
    try:
        if event.get("RequestType") == "Delete":
            if not project:
                raise ValueError("no ProjectName property and no PROJECT_NAME environment variable")
            endpoint = props.get("EndpointName") or os.environ.get("ENDPOINT_NAME") or f"{project}-endpoint"
            deleted = delete_release_resources(
                boto3.client("sagemaker"), project, endpoint, _time_left_s(context)
            )
            data = {"Deleted": ",".join(deleted)[:3000]}
            reason = f"deleted {len(deleted)} resource(s)"
    except Exception as exc:  # always answer CloudFormation, whatever happened
        log.exception("cleanup failed")
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"[:900]
    response = {
        "Status": status,
        "Reason": f"{reason} (log stream: {getattr(context, 'log_stream_name', 'n/a')})",
        "PhysicalResourceId": physical_id,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "NoEcho": False,
        "Data": data,
    }
    _send(event["ResponseURL"], response)
    return response


def delete_release_resources(
    sm: Any, project: str, endpoint: str, wait_s: float = DEFAULT_WAIT_S
) -> list[str]:
    """Delete the endpoint (and wait until it is gone), then the project's endpoint configs and models."""
    deleted: list[str] = []
    try:
        sm.delete_endpoint(EndpointName=endpoint)
        deleted.append(endpoint)
    except ClientError as exc:
        if not _not_found(exc):
            raise
    deadline = time.monotonic() + wait_s
    while _exists(sm, endpoint):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"endpoint {endpoint} is still being deleted; delete the stack again later")
        time.sleep(POLL_S)

    config_re = re.compile(rf"^{re.escape(project)}-ec-\d{{14}}-[0-9a-f]{{4}}$")
    for page in sm.get_paginator("list_endpoint_configs").paginate(NameContains=f"{project}-ec-"):
        for c in page.get("EndpointConfigs", []):
            if config_re.match(c["EndpointConfigName"]):
                _delete(sm.delete_endpoint_config, deleted, EndpointConfigName=c["EndpointConfigName"])
    model_re = re.compile(rf"^{re.escape(project)}-v\d+-[0-9a-f]{{6}}$")
    for page in sm.get_paginator("list_models").paginate(NameContains=f"{project}-v"):
        for m in page.get("Models", []):
            if model_re.match(m["ModelName"]):
                _delete(sm.delete_model, deleted, ModelName=m["ModelName"])
    log.info(json.dumps({"message": "release resources deleted", "deleted": deleted}))
    return deleted


def _delete(call: Any, deleted: list[str], **kwargs: str) -> None:
    try:
        call(**kwargs)
        deleted.append(next(iter(kwargs.values())))
    except ClientError as exc:
        if not _not_found(exc):
            raise


def _exists(sm: Any, endpoint: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=endpoint)
        return True
    except ClientError as exc:
        if _not_found(exc):
            return False
        raise


def _not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    message = err.get("Message", "").lower()
    return err.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "could not find" in message or "not found" in message
    )


def _time_left_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_WAIT_S
    return max(0.0, remaining() / 1000.0 - SAFETY_MARGIN_S)


def _send(url: str, response: dict[str, Any]) -> None:
    body = json.dumps(response).encode()
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - CloudFormation's presigned URL
        log.info("answered CloudFormation: %s %s", response["Status"], answer.status)
