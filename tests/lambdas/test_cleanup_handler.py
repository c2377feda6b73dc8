"""The cleanup custom resource: on Delete it removes only this project's release resources and always
answers CloudFormation (a local HTTP server stands in for the presigned ResponseURL)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import cleanup_handler
import pytest
from moto import mock_aws

REGION = "us-east-1"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
ROLE = "arn:aws:iam::123456789012:role/r"


@pytest.fixture
def cloudformation():
    """A stand-in for CloudFormation's ResponseURL: records every PUT body."""
    answers: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - http.server's naming
            length = int(self.headers["Content-Length"])
            answers.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/presigned", answers
    server.shutdown()
    server.server_close()


@pytest.fixture
def sm():
    with mock_aws():
        yield boto3.client("sagemaker", region_name=REGION)


def _event(url: str, request_type: str, **props) -> dict:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/ProjServing/1",
        "RequestId": "req-1",
        "LogicalResourceId": "ReleaseCleanup",
        "PhysicalResourceId": "proj-release-cleanup",
        "ResourceType": "Custom::ReleaseCleanup",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:c", **props},
    }


def _endpoint(sm, project_models: list[str], config: str, endpoint: str | None) -> None:
    for m in project_models:
        sm.create_model(ModelName=m, PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE)
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": "v1",
                "ModelName": project_models[0],
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    if endpoint:
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)


def test_delete_removes_only_this_projects_release_resources(sm, cloudformation):
    url, answers = cloudformation
    _endpoint(sm, ["proj-v1-abcdef", "proj-v2-123456"], "proj-ec-20261124030000-ab12", "proj-endpoint")
    _endpoint(
        sm, ["proj-v2-v1-abcdef"], "proj-v2-ec-20261124030000-ab12", "proj-v2-endpoint"
    )  # another project
    _endpoint(sm, ["unrelated"], "unrelated-config", None)

    out = cleanup_handler.handler(
        _event(url, "Delete", ProjectName="proj", EndpointName="proj-endpoint"), None
    )

    assert out["Status"] == "SUCCESS"
    assert answers == [out]
    assert answers[0]["PhysicalResourceId"] == "proj-release-cleanup" and answers[0]["RequestId"] == "req-1"
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["proj-v2-endpoint"]
    assert {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]} == {
        "proj-v2-ec-20261124030000-ab12",
        "unrelated-config",
    }
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"proj-v2-v1-abcdef", "unrelated"}


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_create_and_update_change_nothing_and_succeed(sm, cloudformation, request_type):
    url, answers = cloudformation
    _endpoint(sm, ["proj-v1-abcdef"], "proj-ec-20261124030000-ab12", "proj-endpoint")
    event = _event(url, request_type, ProjectName="proj")
    if request_type == "Create":
        del event["PhysicalResourceId"]
    out = cleanup_handler.handler(event, None)
    assert answers == [out] and out["Status"] == "SUCCESS"
    assert out["PhysicalResourceId"] == "proj-release-cleanup"
    assert len(sm.list_endpoints()["Endpoints"]) == 1 and len(sm.list_models()["Models"]) == 1


def test_delete_with_nothing_deployed_succeeds(sm, cloudformation, monkeypatch):
    url, answers = cloudformation
    monkeypatch.setenv("PROJECT_NAME", "proj")  # no ProjectName property: the environment variable is used
    out = cleanup_handler.handler(_event(url, "Delete"), None)
    assert out["Status"] == "SUCCESS" and answers == [out]


def test_a_failure_is_still_answered(sm, cloudformation, monkeypatch):
    url, answers = cloudformation
    monkeypatch.delenv("PROJECT_NAME", raising=False)
    out = cleanup_handler.handler(_event(url, "Delete"), None)
    assert out["Status"] == "FAILED" and "PROJECT_NAME" in out["Reason"]
    assert answers == [out]


def test_endpoint_that_does_not_go_away_times_out(sm, monkeypatch):
    _endpoint(sm, ["proj-v1-abcdef"], "proj-ec-20261124030000-ab12", "proj-endpoint")
    monkeypatch.setattr(cleanup_handler, "_exists", lambda *_: True)  # an endpoint stuck in Deleting
    with pytest.raises(TimeoutError, match="still being deleted"):
        cleanup_handler.delete_release_resources(sm, "proj", "proj-endpoint", wait_s=0)
