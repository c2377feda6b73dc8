"""The approval watcher: a plain boto3 ``update_model_package`` becomes the EventBridge event and a call
of the release controller's handler (a recording stand-in here), with Lambda's retries and on-failure queue.
"""

from __future__ import annotations

import dataclasses
import json
import threading

import boto3
import pytest

from stacks.config import load as load_config
from trainserve import PROJECT_ROOT
from trainserve.local.resources import create_base_resources
from trainserve.local.watcher import EVENT_DETAIL_TYPE, EVENT_SOURCE, WatcherComponent, wait_until
from trainserve.target import Names

# one worker runs this module (its tests share module fixtures) under `pytest -n 2 --dist loadgroup`
pytestmark = pytest.mark.xdist_group("test_watcher")

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


class RecordingHandler:
    """Stands in for ``release_handler.handler``: records each event and the environment it ran with."""

    def __init__(self, fail_times: int = 0) -> None:
        self.calls: list[tuple[dict, dict]] = []
        self.fail_times = fail_times
        self.lock = threading.Lock()

    def __call__(self, event, context):
        import os

        with self.lock:
            self.calls.append((event, {k: os.environ.get(k) for k in ("CHALLENGER_WEIGHT", "ENDPOINT_NAME")}))
            if len(self.calls) <= self.fail_times:
                raise RuntimeError(f"controller exploded on call {len(self.calls)}")
        return {"status": "ok"}


def _names(group: str) -> Names:
    """The project's local names with a model package group of the test's own (moto's state is shared by
    every test in this process)."""
    return dataclasses.replace(
        Names.local(load_config(PROJECT_ROOT)),
        model_package_group=group,
        release_function=f"{group}-release",
        release_dlq=f"{group}-dlq",
    )


def _register(sm, group: str, status: str) -> str:
    return sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


@pytest.fixture
def watched(moto_url, tmp_path, request, local_context):
    """A context whose group has base resources; yields (ctx, sagemaker client, start(component))."""
    group = f"watch-{request.node.name[-30:].replace('_', '-')}".strip("-")
    ctx = local_context(
        load_config(PROJECT_ROOT), tmp_path, moto_url, names=_names(group), runtime_url="http://127.0.0.1:1"
    )
    create_base_resources(ctx.target())
    started: list[WatcherComponent] = []

    def start(component: WatcherComponent) -> WatcherComponent:
        component.start(ctx)
        started.append(component)
        return component

    yield ctx, ctx.target().client("sagemaker"), start
    for c in started:
        c.stop()


def test_plain_boto3_approval_reaches_the_handler_as_the_sagemaker_event(watched):
    ctx, sm, start = watched
    group = ctx.names.model_package_group
    target = ctx.target()
    # the event goes on the default bus, where the serving stack's rule pattern matches it
    sqs = target.client("sqs")
    events = target.client("events")
    queue_url = sqs.create_queue(QueueName=f"{group}-rule-target")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=f"{group}-rule",
        EventPattern=json.dumps(
            {
                "source": [EVENT_SOURCE],
                "detail-type": [EVENT_DETAIL_TYPE],
                "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved", "Rejected"]},
            }
        ),
    )
    events.put_targets(Rule=f"{group}-rule", Targets=[{"Id": "q", "Arn": queue_arn}])

    old = _register(sm, group, "Approved")  # approved before the watcher started: never replayed
    handler = RecordingHandler()
    watcher = start(WatcherComponent(handler=handler, poll_seconds=0.1))
    v2 = _register(sm, group, "PendingManualApproval")
    assert wait_until(lambda: watcher.status()["events_put"] == 1, 5)
    assert handler.calls == []  # a registration is recorded, but the rule routes only Approved/Rejected

    boto3_sm = boto3.client(
        "sagemaker",
        endpoint_url=ctx.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    boto3_sm.update_model_package(ModelPackageArn=v2, ModelApprovalStatus="Approved")
    assert wait_until(lambda: len(handler.calls) == 1, 5)
    event, env = handler.calls[0]
    assert event["source"] == "aws.sagemaker"
    assert event["detail-type"] == "SageMaker Model Package State Change"
    assert event["resources"] == [v2]
    assert event["region"] == "us-east-1" and event["account"] == "123456789012"
    detail = event["detail"]
    assert detail["ModelPackageGroupName"] == group
    assert detail["ModelPackageVersion"] == 2
    assert detail["ModelPackageArn"] == v2
    assert detail["ModelApprovalStatus"] == "Approved"
    assert isinstance(detail["CreationTime"], int)  # epoch milliseconds, as SageMaker sends
    assert env == {
        "CHALLENGER_WEIGHT": str(ctx.config.challenger_weight),
        "ENDPOINT_NAME": ctx.names.endpoint_name,
    }

    # a configuration edit on the controller's Lambda record applies to the next call, as on AWS
    lam = target.client("lambda")
    variables = lam.get_function_configuration(FunctionName=ctx.names.release_function)["Environment"][
        "Variables"
    ]
    lam.update_function_configuration(
        FunctionName=ctx.names.release_function,
        Environment={"Variables": {**variables, "CHALLENGER_WEIGHT": "0.25"}},
    )
    boto3_sm.update_model_package(ModelPackageArn=v2, ModelApprovalStatus="Rejected")
    assert wait_until(lambda: len(handler.calls) == 2, 5)
    event, env = handler.calls[1]
    assert event["detail"]["ModelApprovalStatus"] == "Rejected"
    assert env["CHALLENGER_WEIGHT"] == "0.25"
    assert all(e["resources"] != [old] for e, _ in handler.calls)

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    routed = [json.loads(m["Body"]) for m in messages]
    assert sorted(r["detail"]["ModelApprovalStatus"] for r in routed) == ["Approved", "Rejected"]
    assert wait_until(lambda: watcher.status()["handled"] == 2, 5)
    status = watcher.status()
    assert status["handled"] == 2 and status["failures"] == 0
    assert [e["status"] for e in status["last_events"]] == ["PendingManualApproval", "Approved", "Rejected"]


def test_failing_handler_is_retried_twice_then_dead_lettered(watched):
    ctx, sm, start = watched
    handler = RecordingHandler(fail_times=10)
    watcher = start(WatcherComponent(handler=handler, poll_seconds=0.1, retry_delays=(0.05, 0.1)))
    arn = _register(sm, ctx.names.model_package_group, "Approved")
    assert wait_until(lambda: watcher.status()["failures"] == 1, 5)
    assert len(handler.calls) == 3

    sqs = ctx.target().client("sqs")
    queue_url = sqs.get_queue_url(QueueName=ctx.names.release_dlq)["QueueUrl"]
    bodies = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)[
            "Messages"
        ]
    ]
    mine = [b for b in bodies if b["requestPayload"]["resources"] == [arn]]
    assert len(mine) == 1
    record = mine[0]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(f":function:{ctx.names.release_function}:$LATEST")
    assert record["requestPayload"]["detail"]["ModelApprovalStatus"] == "Approved"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert "controller exploded on call 3" in record["responsePayload"]["errorMessage"]


def test_a_handler_that_recovers_on_retry_counts_as_handled(watched):
    ctx, sm, start = watched
    handler = RecordingHandler(fail_times=1)
    watcher = start(WatcherComponent(handler=handler, poll_seconds=0.1, retry_delays=(0.05, 0.05)))
    _register(sm, ctx.names.model_package_group, "Approved")
    assert wait_until(lambda: watcher.status()["handled"] == 1, 5)
    assert watcher.status()["failures"] == 0
    assert len(handler.calls) == 2
    assert watcher.status()["last_events"][-1]["attempts"] == 2


def test_the_release_controller_runs_only_while_the_watcher_holds_the_endpoint_lock(watched):
    """A CLI command changing the endpoint holds the lock (``endpoint_changes``): an approval meanwhile reaches
    the release controller only once the command lets go, so the two never plan on each other's changes."""
    import threading
    import time

    from trainserve.local.component import ENDPOINT_LOCK, exclusive

    ctx, sm, start = watched
    group = ctx.names.model_package_group
    handler = RecordingHandler()
    watcher = start(WatcherComponent(handler=handler, poll_seconds=0.1))
    lock = ctx.state_dir / ENDPOINT_LOCK
    held, let_go = threading.Event(), threading.Event()

    def command():
        with exclusive(lock, time.monotonic() + 5) as got:
            assert got
            held.set()
            let_go.wait(10)

    holder = threading.Thread(target=command)
    holder.start()
    assert held.wait(5)
    _register(sm, group, "Approved")
    assert wait_until(lambda: watcher.status()["events_put"] >= 1, 5)
    time.sleep(0.5)
    assert handler.calls == []  # waiting for the lock
    let_go.set()
    holder.join(5)
    assert wait_until(lambda: len(handler.calls) == 1, 5)
    with exclusive(lock, time.monotonic() + 1) as got:  # and let go of it after the run
        assert got
