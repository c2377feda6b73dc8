"""The approval watcher: a registry status change made by any client becomes the release controller's event.

On AWS, SageMaker emits a "SageMaker Model Package State Change" event to EventBridge when a model
package is registered or its approval status changes; a rule (filtered on ``ModelApprovalStatus``
Approved/Rejected, for the project's group) invokes the release controller Lambda asynchronously, with
retries and an on-failure destination. moto emits no such event, so this component polls the group about
once a second and, for every version whose status changed since the last look:

1. builds the event SageMaker would send (from ``DescribeModelPackage``) and puts it on moto's default
   event bus (so it is recorded where AWS would have it);
2. for Approved / Rejected only (the rule's filter), calls the release controller's handler in-process
   (``release_handler.handler(event, None)`` from ``lambdas/release_controller/``) with the environment
   variables of the ``{project}-release-controller`` Lambda function record, read before each call, so a
   configuration edit applies as it would on AWS;
3. like Lambda's asynchronous invoke, retries twice with a back-off, then sends the event and the error
   to the on-failure SQS queue ``{project}-release-failures`` in Lambda's destination record shape.

The watcher starts from the registry as it is: approvals made before it started are not replayed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from trainserve.local.component import ENDPOINT_LOCK, ENDPOINT_LOCK_WAIT_S, exclusive
from trainserve.local.resources import function_environment, release_environment
from trainserve.target import LOCAL_ACCOUNT

EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
HANDLED_STATUSES = ("Approved", "Rejected")  # the serving stack's rule filter
DEFAULT_HANDLER = "release_handler.handler"

# The process environment is shared: every in-process Lambda call sets its variables under this lock.
LAMBDA_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def lambda_environment(variables: dict[str, str]) -> Iterator[None]:
    """Set ``variables`` in ``os.environ`` for the duration of one in-process Lambda call."""
    with LAMBDA_ENV_LOCK:
        saved = {k: os.environ.get(k) for k in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)  # SageMaker's events carry epoch milliseconds
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def state_change_event(package: dict[str, Any], region: str, account: str = LOCAL_ACCOUNT) -> dict[str, Any]:
    """The EventBridge event SageMaker sends for ``package`` (a ``DescribeModelPackage`` response)."""
    detail = {k: v for k, v in package.items() if k != "ResponseMetadata"}
    detail = json.loads(json.dumps(detail, default=_json_default))
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": EVENT_DETAIL_TYPE,
        "source": EVENT_SOURCE,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [package["ModelPackageArn"]],
        "detail": detail,
    }


def failure_record(
    event: dict[str, Any], function_arn: str, error: BaseException, attempts: int
) -> dict[str, Any]:
    """Lambda's on-failure destination record for an asynchronous invocation that kept failing."""
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": traceback.format_exception(error)[-5:],
        },
    }


class WatcherComponent:
    """The ``watcher`` component (see the module docstring)."""

    name = "watcher"

    def __init__(
        self,
        handler: str | Callable[[dict, Any], Any] = DEFAULT_HANDLER,
        poll_seconds: float = 1.0,
        retry_delays: tuple[float, ...] = (1.0, 2.0),
    ) -> None:
        self.handler_spec = handler
        self.poll_seconds = poll_seconds
        self.retry_delays = retry_delays
        self._known: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: deque[dict[str, Any]] = deque(maxlen=10)
        self.handled = 0
        self.failures = 0
        self.events_put = 0
        self.last_poll_error: str | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        self.log = ctx.log.getChild("watcher") if ctx.log else logging.getLogger("trainserve.watcher")
        target = ctx.target()
        self._sm = target.client("sagemaker")
        self._events = target.client("events")
        self._lambda = target.client("lambda")
        self._sqs = target.client("sqs")
        self.group = ctx.names.model_package_group
        self._known = self._snapshot()  # start from the registry as it is: no replay of old approvals
        self._thread = threading.Thread(target=self._loop, name="approval-watcher", daemon=True)
        self._thread.start()
        self.log.info("approval watcher on %s (%d versions known)", self.group, len(self._known))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def status(self) -> dict[str, Any]:
        return {
            "model_package_group": getattr(self, "group", None),
            "known_versions": len(self._known),
            "events_put": self.events_put,
            "handled": self.handled,
            "failures": self.failures,
            "last_events": list(self._recent),
            "last_poll_error": self.last_poll_error,
        }

    # --- polling -------------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, str]:
        """{package ARN: approval status} for every version in the group (one listing per status)."""
        statuses: dict[str, str] = {}
        try:
            for status in APPROVAL_STATUSES:
                paginator = self._sm.get_paginator("list_model_packages")
                for page in paginator.paginate(ModelPackageGroupName=self.group, ModelApprovalStatus=status):
                    for summary in page["ModelPackageSummaryList"]:
                        statuses[summary["ModelPackageArn"]] = summary.get("ModelApprovalStatus", status)
        except ClientError as exc:
            if "does not exist" in str(exc) or exc.response["Error"]["Code"] == "ResourceNotFound":
                return {}
            raise
        return statuses

    def poll(self) -> int:
        """Look at the registry once; handle every change. Returns the number of changes seen."""
        current = self._snapshot()
        changed = [arn for arn, status in current.items() if self._known.get(arn) != status]
        for arn in sorted(changed, key=_version_of):
            self._on_change(arn, current[arn])
            self._known[arn] = current[arn]
        return len(changed)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
                self.last_poll_error = None
            except Exception as exc:  # keep watching whatever moto answers; the status shows why
                self.last_poll_error = f"{type(exc).__name__}: {exc}"
                self.log.warning("approval watcher poll failed: %s", exc)

    # --- one change ----------------------------------------------------------------------------------

    def _on_change(self, arn: str, status: str) -> None:
        package = self._sm.describe_model_package(ModelPackageName=arn)
        event = state_change_event(package, self.ctx.region)
        self._put_event(event)
        record: dict[str, Any] = {
            "time": event["time"],
            "version": package.get("ModelPackageVersion"),
            "status": status,
            "event_id": event["id"],
        }
        if status not in HANDLED_STATUSES:
            record["result"] = "not routed (rule filters Approved/Rejected)"
            self._recent.append(record)
            return
        error, attempts = self._invoke_with_retries(event)
        record["attempts"] = attempts
        if error is None:
            record["result"] = "handled"
        else:
            record["result"] = "failed"
            record["error"] = f"{type(error).__name__}: {error}"
            self._dead_letter(event, error, attempts)
        self._recent.append(record)  # counters last: whoever sees a count also sees its record
        if error is None:
            self.handled += 1
        else:
            self.failures += 1

    def _put_event(self, event: dict[str, Any]) -> None:
        try:
            self._events.put_events(
                Entries=[
                    {
                        "Source": event["source"],
                        "DetailType": event["detail-type"],
                        "Detail": json.dumps(event["detail"]),
                        "Resources": event["resources"],
                    }
                ]
            )
            self.events_put += 1
        except ClientError as exc:  # recording the event is a courtesy; the handler call is what matters
            self.log.warning("could not record the event on the default bus: %s", exc)

    def _handler(self) -> Callable[[dict, Any], Any]:
        if callable(self.handler_spec):
            return self.handler_spec
        module_name, _, attr = self.handler_spec.rpartition(".")
        return getattr(importlib.import_module(module_name), attr)

    def _environment(self) -> dict[str, str]:
        names = self.ctx.names
        try:
            return function_environment(self._lambda, names.release_function)
        except ClientError:
            return release_environment(self.ctx.config, names)

    def _invoke_with_retries(self, event: dict[str, Any]) -> tuple[BaseException | None, int]:
        delays = (0.0, *self.retry_delays)
        error: BaseException | None = None
        for attempt, delay in enumerate(delays, start=1):
            if delay and self._stop.wait(delay):
                return error, attempt - 1
            try:
                handler = self._handler()
                lock = Path(self.ctx.state_dir) / ENDPOINT_LOCK
                with exclusive(lock, time.monotonic() + ENDPOINT_LOCK_WAIT_S) as held:
                    if (
                        not held
                    ):  # a CLI command has held the endpoint for minutes: retried, then dead-lettered
                        raise TimeoutError(
                            f"another change of the endpoint held {lock} for {ENDPOINT_LOCK_WAIT_S:.0f} s"
                        )
                    with lambda_environment(self._environment()):
                        result = handler(event, None)
                self.log.info(
                    "release controller handled %s v%s: %s",
                    event["detail"].get("ModelApprovalStatus"),
                    event["detail"].get("ModelPackageVersion"),
                    _short(result),
                )
                return None, attempt
            except Exception as exc:  # a Lambda failure of any kind is retried, then dead-lettered
                error = exc
                self.log.warning(
                    "release controller failed (attempt %d of %d): %s", attempt, len(delays), exc
                )
        return error, len(delays)

    def _dead_letter(self, event: dict[str, Any], error: BaseException, attempts: int) -> None:
        names = self.ctx.names
        function_arn = f"arn:aws:lambda:{self.ctx.region}:{LOCAL_ACCOUNT}:function:{names.release_function}"
        try:
            queue_url = self._sqs.get_queue_url(QueueName=names.release_dlq)["QueueUrl"]
            self._sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=json.dumps(failure_record(event, function_arn, error, attempts)),
            )
        except ClientError as exc:
            self.log.error("could not send the failed event to %s: %s", names.release_dlq, exc)


def _version_of(arn: str) -> int:
    tail = arn.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 300 else text[:300] + "..."


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (used by the daemon and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
