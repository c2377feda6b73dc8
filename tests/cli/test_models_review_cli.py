"""``models approve|reject``: what they print and write, against a local target (a moto server on 127.0.0.1
with the local cloud's moto patches). The release controller handler runs in-process on the same server, as
the local cloud's approval watcher runs it, so each test checks that what the command said the controller
would do is what the controller then does."""

from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path

import pytest
import release_handler
from click.testing import CliRunner
from moto.core import DEFAULT_ACCOUNT_ID
from release_planner import ReleaseBlocked, ReleaseSettings

from trainserve.commands import endpoint as endpoint_cmd
from trainserve.commands import models as models_cmd
from trainserve.commands import models_review, options
from trainserve.target import Names, Target

REGION = "us-east-1"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
SAMPLE_EVENT = json.loads(
    (Path(__file__).parent.parent / "lambdas" / "events" / "model_package_state_change.json").read_text()
)
BLOCKED = "champion v1 is Rejected and no approved version older than it exists; it keeps serving"


@pytest.fixture
def target(moto_url, config, monkeypatch):
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    names = Names.local(config)
    local = Target(mode="local", region=REGION, config=config, names=names, aws_endpoint_url=moto_url)
    monkeypatch.setattr(options, "resolve_target", lambda _local: local)
    monkeypatch.setattr(models_cmd, "resolve_target", lambda _local: local)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)  # the release handler's boto3 clients
    settings = ReleaseSettings(
        project_name=config.project_name,
        endpoint_name=names.endpoint_name,
        model_package_group=names.model_package_group,
        challenger_weight=0.1,
        max_live_variants=2,
        guardrail_wait_seconds=0,
        model_execution_role_arn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/model",
    )
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    local.client("sagemaker").create_model_package_group(ModelPackageGroupName=names.model_package_group)
    return local


def _register(target: Target, n: int) -> list[str]:
    sm = target.client("sagemaker")
    return [
        sm.create_model_package(
            ModelPackageGroupName=target.names.model_package_group,
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={
                "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://a/{i}/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        )["ModelPackageArn"]
        for i in range(n)
    ]


def _release(target: Target, version: int, status: str) -> dict:
    """What the approval watcher does after a registry change: the state change event -> the handler."""
    event = copy.deepcopy(SAMPLE_EVENT)
    event["detail"].update(
        ModelPackageGroupName=target.names.model_package_group,
        ModelPackageVersion=version,
        ModelApprovalStatus=status,
    )
    event["detail"].pop("ModelPackageArn")
    return release_handler.handler(event, None)


def _cli(command, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr, each with its whitespace runs made single spaces (rich wraps lines)."""
    result = CliRunner().invoke(command, list(args), catch_exceptions=False)
    return result.exit_code, " ".join(result.stdout.split()), " ".join(result.stderr.split())


def _cli_json(command, *args: str):
    result = CliRunner().invoke(command, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _live_weights(target: Target) -> dict[str, float]:
    report = _cli_json(endpoint_cmd.endpoint, "status")
    return {v["variant"]: round(v["current_weight"], 9) for v in report["variants"]}


def _serve(target: Target, *versions: int) -> None:
    for v in versions:
        assert _cli(models_review.approve, str(v))[0] == 0
        _release(target, v, "Approved")


def test_rejecting_the_only_champion_warns_that_the_release_is_blocked(target):
    _register(target, 1)
    _serve(target, 1)
    code, out, err = _cli(models_review.reject, "1", "--note", "x")
    assert code == 0 and "v1: Approved → Rejected (x)" in out
    assert "the endpoint stays as it is" in out and "the release controller changes nothing" in out
    assert "updates the endpoint" not in out and "the release controller now" not in out
    assert f"warning: a person must act: {BLOCKED}" in err and "fails, into its failure queue" in err
    blocked = _cli_json(endpoint_cmd.endpoint, "status")["blocked"]  # the planner's whole message
    assert blocked.startswith(BLOCKED) and " ".join(blocked.split()) in err
    # and so it is: the controller's run fails, the champion keeps serving
    with pytest.raises(ReleaseBlocked, match="no approved version older than it exists"):
        _release(target, 1, "Rejected")
    assert _live_weights(target) == {"v1": 1.0}


def test_approving_a_version_older_than_the_champion_says_nothing_changes(target):
    _register(target, 2)
    _serve(target, 2)
    code, out, err = _cli(models_review.approve, "1")
    assert code == 0 and "v1: PendingManualApproval → Approved" in out
    assert "the endpoint stays as it is (v1 is older than the champion v2: no change)" in out
    assert "updates the endpoint" not in out and "the release controller now" not in out and err == ""
    _release(target, 1, "Approved")
    assert _live_weights(target) == {"v2": 1.0}


def test_a_change_is_announced_with_what_the_controller_does(target):
    _register(target, 2)
    code, out, err = _cli(models_review.approve, "1")
    assert code == 0
    assert "the release controller now: create the endpoint with v1 as champion at 100%" in out
    assert "watch it with: trainserve endpoint status" in out and err == ""
    _release(target, 1, "Approved")
    code, out, err = _cli(models_review.approve, "2")
    assert "the release controller now: v2 added as challenger at 10%, taken from the champion" in out
    _release(target, 2, "Approved")
    assert _live_weights(target) == {"v1": 0.9, "v2": 0.1}
    # rejecting the live challenger: it leaves, its weight back to the champion
    code, out, err = _cli(models_review.reject, "2")
    assert "the release controller now: challenger v2 is Rejected: removed, its weight to the champion" in out
    assert err == ""


def test_json_always_carries_the_release_plan(target):
    _register(target, 2)
    first = _cli_json(models_review.approve, "1")
    assert first["changed"] is True and first["release_plan"]["action"] == "create"
    # the same status again, before the controller ran: no event, the plan for the registry as it is
    again = _cli_json(models_review.approve, "1")
    assert again["changed"] is False and again["previous_status"] == again["status"] == "Approved"
    assert again["release_plan"] == {
        "action": "create",
        "changes": ["create the endpoint with v1 as champion at 100%"],
        "blocked": None,
    }
    code, out, err = _cli(models_review.approve, "1")
    assert "v1 is already Approved: nothing changed" in out
    assert "not yet in line with the registry: create the endpoint with v1" in err
    _release(target, 1, "Approved")
    assert _cli_json(models_review.approve, "1")["release_plan"] == {
        "action": "none",
        "changes": [],
        "blocked": None,
    }
    assert _cli_json(models_review.reject, "2")["release_plan"]["action"] == "none"  # v2 was never live
    unchanged = _cli_json(models_review.reject, "2")
    assert unchanged["changed"] is False and unchanged["release_plan"]["action"] == "none"
    # a blocked registry is said even when the status does not change
    assert _cli_json(models_review.reject, "1")["release_plan"]["blocked"].startswith(BLOCKED)
    plan = _cli_json(models_review.reject, "1")["release_plan"]
    assert plan["action"] == "none" and plan["blocked"].startswith(BLOCKED)
    code, out, err = _cli(models_review.reject, "1")
    assert "v1 is already Rejected: nothing changed" in out and f"a person must act: {BLOCKED}" in err


def _note(target: Target, arn: str) -> str | None:
    return target.client("sagemaker").describe_model_package(ModelPackageName=arn).get("ApprovalDescription")


def _listed(target: Target) -> dict[int, tuple[str, str | None]]:
    rows = _cli_json(models_cmd.models, "list")
    return {r["version"]: (r["approval_status"], r["approval_description"]) for r in rows}


def test_a_decision_without_note_clears_the_previous_note(target):
    arns = _register(target, 3)
    code, out, err = _cli(models_review.reject, "3", "--note", "worse")
    assert code == 0 and _note(target, arns[2]) == "worse"
    assert _listed(target)[3] == ("Rejected", "worse")

    code, out, err = _cli(models_review.approve, "3")
    assert code == 0 and "Rejected → Approved" in out
    assert not _note(target, arns[2])  # cleared: the rejection's reason does not stay beside the approval
    assert _listed(target)[3] == ("Approved", None)
    table = CliRunner().invoke(models_cmd.models, ["list"]).stdout
    row = next(line for line in table.splitlines() if line.startswith("│ 3 "))
    assert "Approved" in row and "worse" not in table

    # a note given with the status it already has replaces the note, and nothing else
    code, out, err = _cli(models_review.approve, "3", "--note", "better after all")
    assert code == 0 and "v3 is already Approved; its note is now: better after all" in out
    assert _listed(target)[3] == ("Approved", "better after all")
    # the same status without a note keeps it (it is still this decision's note)
    assert _cli(models_review.approve, "3")[0] == 0
    assert _listed(target)[3] == ("Approved", "better after all")
    code, out, err = _cli(models_cmd.models, "list")
    assert "better after all" in out
    # a note that looks like rich markup is printed as written
    code, out, err = _cli(models_review.reject, "2", "--note", "[WIP] drift")
    assert "v2: PendingManualApproval → Rejected ([WIP] drift)" in out
    assert _listed(target)[2] == ("Rejected", "[WIP] drift")
