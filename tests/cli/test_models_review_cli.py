"""``models approve|reject``: what they print and write, against a local target (a moto server on 127.0.0.1
with the local cloud's moto patches). The release controller handler runs in-process on the same server, as
the local cloud's approval watcher runs it, so each test checks that what the command said the controller
would do is what the controller then does."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from release_fixture import register, release, release_target
from release_planner import ReleaseBlocked

from trainserve.commands import endpoint as endpoint_cmd
from trainserve.commands import models as models_cmd
from trainserve.commands import models_review
from trainserve.target import Target

BLOCKED = "champion v1 is Rejected and no approved version older than it exists; it keeps serving"


@pytest.fixture
def target(moto_url, config, monkeypatch):
    local = release_target(moto_url, config, monkeypatch)
    monkeypatch.setattr(models_cmd, "resolve_target", lambda _local: local)
    return local


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
        release(target, v, "Approved")


def test_rejecting_the_only_champion_warns_that_the_release_is_blocked(target):
    register(target, 1)
    _serve(target, 1)
    code, out, err = _cli(models_review.reject, "1", "--note", "x")
    assert code == 0 and "v1: Approved → Rejected (x)" in out
    assert "the endpoint stays as it is until a person acts (below)" in out
    # not "it already matches the registry": the champion is Rejected, so it does not
    assert "matches the registry" not in out and "changes nothing" not in out
    assert "updates the endpoint" not in out and "the release controller now" not in out
    assert f"warning: a person must act: {BLOCKED}" in err and "fails, into its failure queue" in err
    blocked = _cli_json(endpoint_cmd.endpoint, "status")["blocked"]  # the planner's whole message
    assert blocked.startswith(BLOCKED) and " ".join(blocked.split()) in err
    # and so it is: the controller's run fails, the champion keeps serving
    with pytest.raises(ReleaseBlocked, match="no approved version older than it exists"):
        release(target, 1, "Rejected")
    assert _live_weights(target) == {"v1": 1.0}


def test_approving_a_version_older_than_the_champion_says_nothing_changes(target):
    register(target, 2)
    _serve(target, 2)
    code, out, err = _cli(models_review.approve, "1")
    assert code == 0 and "v1: PendingManualApproval → Approved" in out
    assert "the endpoint stays as it is (v1 is older than the champion v2: no change)" in out
    assert "updates the endpoint" not in out and "the release controller now" not in out and err == ""
    release(target, 1, "Approved")
    assert _live_weights(target) == {"v2": 1.0}


def test_approving_a_version_with_other_input_features_says_it_is_not_added(target):
    """The command's plan reads the same features_sha256 metadata the controller compares, and says so."""
    register(target, 1, inputs="1" * 64)
    register(target, 1, inputs="2" * 64)
    _serve(target, 1)
    code, out, err = _cli(models_review.approve, "2")
    assert code == 0 and "v2: PendingManualApproval → Approved" in out
    assert (
        "the endpoint stays as it is (v2 not added: its input features differ from those of champion v1"
        in out
    )
    assert "trainserve traffic promote v2" in out and err == ""
    assert release(target, 2, "Approved")["action"] == "none"
    assert _live_weights(target) == {"v1": 1.0}


def test_a_change_is_announced_with_what_the_controller_does(target):
    register(target, 2)
    code, out, err = _cli(models_review.approve, "1")
    assert code == 0
    assert "the release controller now: create the endpoint with v1 as champion at 100%" in out
    assert "watch it with: trainserve endpoint status" in out and err == ""
    release(target, 1, "Approved")
    code, out, err = _cli(models_review.approve, "2")
    assert "the release controller now: v2 added as challenger at 10%, taken from the champion" in out
    release(target, 2, "Approved")
    assert _live_weights(target) == {"v1": 0.9, "v2": 0.1}
    # rejecting the live challenger: it leaves, its weight back to the champion
    code, out, err = _cli(models_review.reject, "2")
    assert "the release controller now: challenger v2 is Rejected: removed, its weight to the champion" in out
    assert err == ""


def test_json_always_carries_the_release_plan(target):
    register(target, 2)
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
    release(target, 1, "Approved")
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
    arns = register(target, 3)
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
    # the same status without a note keeps it (it is still this decision's note), and --json shows it
    assert _cli(models_review.approve, "3")[0] == 0
    assert _listed(target)[3] == ("Approved", "better after all")
    kept = _cli_json(models_review.approve, "3")
    assert kept["changed"] is False and kept["note"] == "better after all"
    assert _cli_json(models_review.reject, "3")["note"] is None  # a change without --note clears it
    assert _cli_json(models_review.approve, "3", "--note", "better after all")["note"] == "better after all"
    code, out, err = _cli(models_cmd.models, "list")
    assert "better after all" in out
    # a note that looks like rich markup is printed as written
    code, out, err = _cli(models_review.reject, "2", "--note", "[WIP] drift")
    assert "v2: PendingManualApproval → Rejected ([WIP] drift)" in out
    assert _listed(target)[2] == ("Rejected", "[WIP] drift")


def test_a_note_longer_than_the_registry_keeps_is_refused_before_any_change(target):
    register(target, 1)
    code, out, err = _cli(models_review.approve, "1", "--note", "x" * 1025)
    assert code == 1 and out == ""
    assert (
        "--note is 1025 characters; the model registry keeps at most 1024" in err
        and "nothing was changed" in err
    )
    assert _listed(target)[1] == ("PendingManualApproval", None)
    assert _cli(models_review.approve, "1", "--note", "x" * 1024)[0] == 0


def test_approving_again_a_version_that_is_not_served_applies_its_approval_now(target):
    """v3 made room by dropping v2, then v3 was rejected: v2 is approved but not served, and approving it
    again sends no event (no status change). The command applies its approval's plan itself, as
    `endpoint sync` applies a reconcile; a live version approved again changes nothing."""
    register(target, 3)
    _serve(target, 1, 2)
    _serve(target, 3)  # max_live_variants 2 (cdk.json)
    assert _live_weights(target) == {"v1": 0.9, "v3": 0.1}  # v2 dropped to make room
    assert _cli(models_review.reject, "3")[0] == 0
    release(target, 3, "Rejected")
    assert _live_weights(target) == {"v1": 1.0}

    # a busy endpoint: refused before any change, saying why and when to run it again
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemaker.models import sagemaker_backends
    from release_fixture import REGION

    live = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[target.names.endpoint_name]
    live.endpoint_status = "Updating"
    busy = CliRunner().invoke(models_review.approve, ["2", "--note", "again"], catch_exceptions=False)
    assert busy.exit_code == 1
    said = " ".join(busy.stderr.split())
    assert "is Updating: v2 is approved but not served" in said and "nothing was changed" in said
    assert _listed(target)[2][1] is None  # the note was not written either
    live.endpoint_status = "InService"

    out = _cli_json(models_review.approve, "2")
    assert out["changed"] is False and out["applied"] is True
    assert "v2 added as challenger at 10%" in "; ".join(out["release_plan"]["changes"])
    assert _live_weights(target) == {"v1": 0.9, "v2": 0.1}

    again = _cli_json(models_review.approve, "2")  # live now: nothing to apply
    assert again["applied"] is False and again["changed"] is False
    assert _live_weights(target) == {"v1": 0.9, "v2": 0.1}
    code, out_text, err = _cli(models_review.approve, "1")
    assert code == 0 and "v1 is already Approved: nothing changed" in out_text


def test_approving_again_an_older_version_than_the_champion_says_why_nothing_changes(target):
    register(target, 3)
    _serve(target, 1, 2)
    assert _cli_json(endpoint_cmd.endpoint, "status")["champion"] == "v1"
    # v2 promoted alone; v1 stays approved (older than the new champion)
    from trainserve.commands import traffic as traffic_cmd

    assert CliRunner().invoke(traffic_cmd.traffic, ["promote", "v2"], catch_exceptions=False).exit_code == 0
    assert _live_weights(target) == {"v2": 1.0}
    code, out, err = _cli(models_review.approve, "1")
    assert code == 0
    assert "v1 is already Approved: nothing changed (v1 is older than the champion v2: no change)" in out
    assert _live_weights(target) == {"v2": 1.0}
    assert _cli_json(models_review.approve, "1")["applied"] is False


def test_sync_names_why_versions_with_other_inputs_between_champion_and_newest_are_not_served(target):
    """v2 and v3 were trained on other features than champion v1 (never added): sync reads the inputs of
    every approved version newer than the champion, so each is named for its features, not advised to be
    approved again."""
    register(target, 1, inputs="1" * 64)
    register(target, 2, inputs="2" * 64)  # v2 and v3
    _serve(target, 1, 2, 3)
    assert _live_weights(target) == {"v1": 1.0}
    reason = _cli_json(endpoint_cmd.endpoint, "sync")["reason"]
    for name in ("v2", "v3"):
        assert f"{name} is approved but not served: its input features differ" in reason, reason
    assert "models approve" not in reason
