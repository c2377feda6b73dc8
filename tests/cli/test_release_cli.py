"""``models approve|reject``, ``endpoint status`` and ``traffic set|promote|rollback`` against a local target
(a moto server on 127.0.0.1 with the local cloud's moto patches); the release controller handler runs
in-process on the same server, as the local cloud's approval watcher runs it."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from click.testing import CliRunner
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends
from release_fixture import REGION, register, release, release_target
from release_planner import ReleaseSettings

from trainserve import console as console_mod
from trainserve.commands import endpoint as endpoint_cmd
from trainserve.commands import models_review
from trainserve.commands import traffic as traffic_cmd
from trainserve.target import Target


@pytest.fixture
def target(moto_url, config, monkeypatch):
    local = release_target(moto_url, config, monkeypatch)
    return local


def _cli(command, *args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr)."""
    result = CliRunner().invoke(command, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _cli_json(command, *args: str) -> dict:
    """``--json`` output: stdout only, which must be exactly one JSON document."""
    result = CliRunner().invoke(command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _status(target: Target) -> dict:
    return _cli_json(endpoint_cmd.endpoint, "status")


def _weights(report: dict) -> dict[str, float]:
    return {v["variant"]: round(v["desired_weight"], 9) for v in report["variants"]}


def test_approve_reject_and_traffic_end_to_end(target):
    sm = target.client("sagemaker")
    arn1, arn2, arn3 = register(target, 3)
    assert _status(target)["status"] == "absent"

    code, out = _cli(models_review.approve, "1", "--note", "first model")
    assert code == 0 and "PendingManualApproval → Approved" in out
    package = sm.describe_model_package(ModelPackageName=arn1)
    assert package["ModelApprovalStatus"] == "Approved" and package["ApprovalDescription"] == "first model"
    release(target, 1, "Approved")

    assert _cli(models_review.approve, "v2")[0] == 0
    release(target, 2, "Approved")
    report = _status(target)
    assert report["status"] == "InService" and report["champion"] == "v1"
    assert _weights(report) == {"v1": 0.9, "v2": 0.1}
    v1 = report["variants"][0]
    assert v1["model_package_arn"] == arn1 and v1["champion"] is True and v1["approval_status"] == "Approved"
    assert v1["instance_type"] == "ml.m5.large" and v1["instance_count"] == 1
    assert v1["current_weight"] == pytest.approx(0.9)

    out = _cli_json(traffic_cmd.traffic, "set", "v1=7", "2=3")
    assert out["action"] == "update" and _weights(out) == {"v1": 0.7, "v2": 0.3}
    assert out["rejected"] == []  # the key every traffic command's JSON has
    assert "(normalised to sum 1: the weights summed to 10)" in out["reason"]
    assert _weights(_status(target)) == {"v1": 0.7, "v2": 0.3}

    assert _cli_json(traffic_cmd.traffic, "promote", "2")["action"] == "update"
    report = _status(target)
    assert report["champion"] == "v2" and _weights(report) == {"v2": 1.0}

    assert _cli(models_review.approve, "3")[0] == 0
    release(target, 3, "Approved")
    assert _weights(_status(target)) == {"v2": 0.9, "v3": 0.1}

    code, out = _cli(traffic_cmd.traffic, "rollback")
    said = " ".join(out.split())
    assert code == 0, out
    assert "v3 rejected in the model registry (rolled back by trainserve traffic rollback at" in said
    assert "to re-admit it: trainserve models approve 3" in said
    report = _status(target)  # drained at once; the release controller removes it on the rejection's event
    assert report["champion"] == "v2" and _weights(report) == {"v2": 1.0, "v3": 0.0}
    assert "challenger v3 is Rejected: removed" in report["pending_change"]
    release(target, 3, "Rejected")
    report = _status(target)
    assert _weights(report) == {"v2": 1.0} and report["pending_change"] is None

    out = _cli_json(models_review.reject, "3", "--note", "worse on holdout")
    assert out["previous_status"] == "Rejected" and out["changed"] is False  # the rollback rejected it
    assert sm.describe_model_package(ModelPackageName=arn3)["ModelApprovalStatus"] == "Rejected"
    _cli(models_review.reject, "2")  # the champion rejected: v1 is the newest older approved version
    report = _status(target)
    assert "champion v2 is Rejected: v1 replaces it" in report["pending_change"] and report["blocked"] is None
    release(target, 2, "Rejected")
    report = _status(target)
    assert report["champion"] == "v1" and _weights(report) == {"v1": 1.0} and report["pending_change"] is None
    assert arn2


def _register_approve_release(target: Target, n: int) -> list[str]:
    arns = register(target, n)
    for version in range(1, n + 1):
        _cli(models_review.approve, str(version))
        release(target, version, "Approved")
    return arns


def test_rollback_lasts_through_a_redelivered_approval_and_a_sync(target):
    """EventBridge delivers at least once: the Approved(v2) event arriving again after `traffic rollback`, before
    or after the rejection's own event, and `endpoint sync`, all leave v1 serving alone; approving v2 again
    re-admits it."""
    sm = target.client("sagemaker")
    _, arn2 = _register_approve_release(target, 2)
    assert _weights(_status(target)) == {"v1": 0.9, "v2": 0.1}

    out = _cli_json(traffic_cmd.traffic, "rollback")
    assert out["action"] == "update" and _weights(out) == {"v1": 1.0, "v2": 0.0}
    (rejected,) = out["rejected"]
    assert rejected["variant"] == "v2" and rejected["model_package_arn"] == arn2
    assert rejected["previous_status"] == "Approved"
    package = sm.describe_model_package(ModelPackageName=arn2)
    assert package["ModelApprovalStatus"] == "Rejected"
    assert re.fullmatch(
        r"rolled back by trainserve traffic rollback at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
        package["ApprovalDescription"],
    )
    assert rejected["approval_description"] == package["ApprovalDescription"]
    assert out["warnings"] == []

    again = release(target, 2, "Approved")  # redelivered before the Rejected(v2) event is handled
    assert "stale: the registry now says Rejected" in again["reason"] and "v2 added" not in again["reason"]
    assert _weights(_status(target)) == {"v1": 1.0}
    assert release(target, 2, "Rejected")["action"] == "none"  # the rejection's own event: done already
    again = release(target, 2, "Approved")  # and once more, after it
    assert again["action"] == "none" and _weights(_status(target)) == {"v1": 1.0}
    synced = _cli_json(endpoint_cmd.endpoint, "sync")
    assert synced["action"] == "none" and _weights(synced) == {"v1": 1.0}

    assert _cli_json(traffic_cmd.traffic, "rollback")["action"] == "none"  # nothing left to roll back
    assert _cli(models_review.approve, "2")[0] == 0  # an explicit re-approval brings it back
    release(target, 2, "Approved")
    assert _weights(_status(target)) == {"v1": 0.9, "v2": 0.1}


def test_sync_after_a_rollback_whose_events_were_lost_removes_the_rejected_challenger(target):
    _register_approve_release(target, 2)
    code, out = _cli(traffic_cmd.traffic, "rollback")
    assert code == 0 and "v2 rejected in the model registry" in " ".join(out.split())
    synced = _cli_json(endpoint_cmd.endpoint, "sync")  # no release event was handled at all
    assert synced["rejected"] == []
    assert synced["action"] == "update" and _weights(synced) == {"v1": 1.0}
    assert "challenger v2 is Rejected: removed" in synced["reason"]


def _function(target: Target, name: str, env: dict[str, str]) -> None:
    """A Lambda function with this environment (all the CLI reads of it), as the serving stack deploys it."""
    iam = target.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    target.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        Environment={"Variables": env},
    )


def _proxy_function(target: Target, env: dict[str, str]) -> None:
    _function(target, target.names.proxy_function, env)


def test_max_live_variants_one_a_newer_approved_version_replaces_the_champion(target, monkeypatch):
    settings = dataclasses.replace(endpoint_cmd.release_settings(target), max_live_variants=1)
    _function(target, target.names.release_function, settings.as_env())  # what the CLI plans with
    monkeypatch.setenv("MAX_LIVE_VARIANTS", "1")  # what the release controller runs with
    _register_approve_release(target, 1)
    register(target, 2)  # v2, v3
    code, out = _cli(models_review.approve, "2")
    said = " ".join(out.split())
    assert (
        code == 0
        and "v2 replaces champion v1 at 100%: max_live_variants is 1, so there is no A/B test" in said
    )
    assert "not added" not in said
    release(target, 2, "Approved")
    report = _status(target)
    assert report["champion"] == "v2" and _weights(report) == {"v2": 1.0}
    _cli(models_review.approve, "3")  # its release event is lost
    assert "v3 replaces champion v2" in _status(target)["pending_change"]
    synced = _cli_json(endpoint_cmd.endpoint, "sync")
    assert synced["champion"] == "v3" and _weights(synced) == {"v3": 1.0}


def test_traffic_commands_warn_when_they_take_off_the_pinned_variant(target):
    _register_approve_release(target, 3)  # max 2 live: v1 champion, v3 challenger (v2 dropped)
    _proxy_function(target, {"TARGET_VARIANT": "v3", "SERVING_ENABLED": "true"})
    out = _cli_json(traffic_cmd.traffic, "rollback")
    (warning,) = out["warnings"]
    assert "TARGET_VARIANT pins v3" in warning and "trainserve params set TARGET_VARIANT=" in warning
    assert "still reach v3 at 0% until the release controller removes it" in warning
    code, said = _cli(traffic_cmd.traffic, "rollback")  # already drained and rejected: still pinned
    assert code == 0 and "warning:" in said and "pins v3" in said
    release(target, 3, "Rejected")

    lam = target.client("lambda")
    lam.update_function_configuration(
        FunctionName=target.names.proxy_function, Environment={"Variables": {"TARGET_VARIANT": "v1"}}
    )
    _cli(models_review.approve, "3")
    release(target, 3, "Approved")
    out = _cli_json(traffic_cmd.traffic, "promote", "v3")  # v1, the pinned one, goes
    assert out["champion"] == "v3" and _weights(out) == {"v3": 1.0}
    (warning,) = out["warnings"]
    assert "TARGET_VARIANT pins v1" in warning and "the pin is no longer live" in warning
    assert "trainserve params set TARGET_VARIANT=" in warning
    code, said = _cli(traffic_cmd.traffic, "set", "v3=1")  # nothing taken off: no warning
    assert code == 0 and "warning" not in said
    lam.update_function_configuration(
        FunctionName=target.names.proxy_function, Environment={"Variables": {"TARGET_VARIANT": ""}}
    )
    register(target, 1)  # v4
    _cli(models_review.approve, "4")
    release(target, 4, "Approved")
    out = _cli_json(traffic_cmd.traffic, "promote", "v4")  # v3 goes, but nothing is pinned
    assert _weights(out) == {"v4": 1.0} and out["warnings"] == []


def test_promote_rejects_the_newer_challengers_it_takes_off_and_keeps_older_versions_approved(target):
    """v1 champion, v2 challenger. Promoting v1 (the A/B test ends in the champion's favour) takes v2 off: v2,
    newer and still approved, would come back with a redelivered approval event, so it is rejected in the
    registry. Promoting a newer challenger keeps the older champion approved: it replaces the new champion if
    that is ever rejected."""
    register(target, 2)
    for v in (1, 2):
        _cli(models_review.approve, str(v))
        release(target, v, "Approved")
    assert _weights(_status(target)) == {"v1": 0.9, "v2": 0.1}
    out = _cli_json(traffic_cmd.traffic, "promote", "v1")
    assert out["champion"] == "v1" and _weights(out) == {"v1": 1.0}
    (rejected,) = out["rejected"]
    assert rejected["variant"] == "v2" and rejected["previous_status"] == "Approved"
    assert rejected["approval_description"].startswith(
        "taken off the endpoint by trainserve traffic promote v1 at"
    )
    sm = target.client("sagemaker")

    def statuses() -> dict[int, str]:
        return {
            p["ModelPackageVersion"]: p["ModelApprovalStatus"]
            for s in ("Approved", "Rejected")
            for p in sm.list_model_packages(
                ModelPackageGroupName=target.names.model_package_group, ModelApprovalStatus=s
            )["ModelPackageSummaryList"]
        }

    assert statuses() == {1: "Approved", 2: "Rejected"}
    assert release(target, 2, "Approved")["action"] == "none"  # redelivered: handled as the rejection it is
    assert _weights(_status(target)) == {"v1": 1.0}

    _cli(models_review.approve, "2")  # a person re-admits it: a challenger again
    release(target, 2, "Approved")
    code, said = _cli(traffic_cmd.traffic, "promote", "v1")
    said = " ".join(said.split())  # rich wraps long lines
    assert (
        code == 0
        and "v2 rejected in the model registry (taken off the endpoint by trainserve traffic promote v1"
        in said
    )
    assert "to re-admit it: trainserve models approve 2" in said
    _cli(models_review.approve, "2")
    release(target, 2, "Approved")
    out = _cli_json(traffic_cmd.traffic, "promote", "v2")  # v1 is older: it stays approved
    assert out["champion"] == "v2" and out["rejected"] == [] and statuses() == {1: "Approved", 2: "Approved"}
    out = _cli_json(traffic_cmd.traffic, "promote", "v2")  # nothing to change: nothing rejected
    assert out["action"] == "none" and out["rejected"] == []


def test_status_shows_a_blocked_release(target):
    register(target, 1)
    _cli(models_review.approve, "1")
    release(target, 1, "Approved")
    _cli(models_review.reject, "1")
    report = _status(target)
    assert report["blocked"].startswith(
        "champion v1 is Rejected and no approved version older than it exists"
    )
    assert _weights(report) == {"v1": 1.0}
    code, out = _cli(endpoint_cmd.endpoint, "status")
    assert code == 0 and "a person must act" in out


BAD_TRAFFIC_REQUESTS = [
    (("set", "v1=-1"), "weights must be finite and >= 0"),
    (("set", "v9=1"), "variant v9 is not live; live variants: v1, v2"),
    (("set", "v1=0", "v2=0"), "all weights are zero"),
    (("set", "v1=0", "v2=1"), "the champion v1 cannot get weight 0"),
    (("set", "v1"), "'v1' is not VARIANT=WEIGHT"),
    (("set", "v1=0.5", "1=0.5"), "variant v1 is given twice"),
    (("promote", "v7"), "variant v7 is not live"),
]


def test_bad_traffic_requests_fail_and_change_nothing(target):
    register(target, 2)
    for version in (1, 2):
        _cli(models_review.approve, str(version))
        release(target, version, "Approved")
    sm = target.client("sagemaker")
    before = sm.describe_endpoint(EndpointName=target.names.endpoint_name)
    for args, message in BAD_TRAFFIC_REQUESTS:
        code, out = _cli(traffic_cmd.traffic, *args)
        assert code == 1, args
        assert message in " ".join(out.split()), (args, out)
        after = sm.describe_endpoint(EndpointName=target.names.endpoint_name)
        assert after["ProductionVariants"] == before["ProductionVariants"], args
        assert after["EndpointConfigName"] == before["EndpointConfigName"], args


def test_traffic_on_a_busy_endpoint_is_refused(target):
    register(target, 1)
    _cli(models_review.approve, "1")
    release(target, 1, "Approved")
    sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[
        target.names.endpoint_name
    ].endpoint_status = "Updating"
    code, out = _cli(traffic_cmd.traffic, "rollback")
    assert code == 1 and "is Updating" in out


def test_traffic_without_endpoint_is_an_error(target):
    code, out = _cli(traffic_cmd.traffic, "rollback")
    assert code == 1 and "does not exist yet" in out


def test_review_errors_and_no_op(target):
    register(target, 2)
    code, out = _cli(models_review.approve, "7")
    assert (
        code == 1 and "model version 7 is not in the model package group" in out and "versions: 1, 2" in out
    )
    code, out = _cli(models_review.reject, "latest")
    assert code == 1 and "'latest' is not a model version" in out
    _cli(models_review.approve, "1")
    code, out = _cli(models_review.approve, "1")
    assert code == 0 and "already Approved: nothing changed" in out


def test_status_table(target, monkeypatch):
    monkeypatch.setattr(console_mod.console, "width", 160)
    register(target, 1)
    _cli(models_review.approve, "1")
    release(target, 1, "Approved")
    code, out = _cli(endpoint_cmd.endpoint, "status")
    assert code == 0 and "v1 ★" in out and "champion" in out and "100.0%" in out
    assert "1 × ml.m5.large" in out and "trainserve-models/1" in out


def test_settings_come_from_the_release_function_when_it_exists(target):
    fallback = endpoint_cmd.release_settings(target)  # no release function: built from the configuration
    assert fallback.endpoint_name == target.names.endpoint_name
    assert fallback.challenger_weight == target.config.challenger_weight
    assert fallback.max_live_variants == target.config.max_live_variants

    deployed = ReleaseSettings(
        project_name=target.config.project_name,
        endpoint_name="deployed-endpoint",
        model_package_group=target.names.model_package_group,
        challenger_weight=0.25,
        rollback_alarms=("a", "b"),
    )
    _function(target, target.names.release_function, deployed.as_env())
    assert endpoint_cmd.release_settings(target) == deployed


def test_sync_applies_a_release_whose_event_was_lost(target):
    register(target, 2)
    _cli(models_review.approve, "1")  # no release handler run: the event ended in the failure queue
    report = _status(target)
    assert report["status"] == "absent" and "create the endpoint with v1" in report["pending_change"]
    code, out = _cli(endpoint_cmd.endpoint, "status")  # points to the release, not to another approval
    said = " ".join(out.split())
    assert (
        code == 0 and "the release controller is creating it" in said and "trainserve endpoint sync" in said
    )
    code, out = _cli(traffic_cmd.traffic, "rollback")
    assert code == 1 and "trainserve endpoint sync" in " ".join(out.split())
    out = _cli_json(endpoint_cmd.endpoint, "sync")
    assert out["action"] == "create" and _weights(out) == {"v1": 1.0} and out["pending_change"] is None
    _cli(models_review.approve, "2")  # a new challenger joins only through its own approval event
    assert _cli_json(endpoint_cmd.endpoint, "sync")["action"] == "none"
    _cli(models_review.reject, "1")  # champion rejected, no older version: blocked
    code, out = _cli(endpoint_cmd.endpoint, "sync")
    said = " ".join(out.split())
    assert code == 0 and "a person must act" in said
    # the advice works: v2 is approved but not live, and `traffic promote` deploys it alone
    assert (
        "promote an approved version that is not live, deployed alone at 100% (trainserve traffic promote v2)"
        in said
    )
    assert _weights(_status(target)) == {"v1": 1.0}
    out = _cli_json(traffic_cmd.traffic, "promote", "v2")
    assert out["champion"] == "v2" and _weights(out) == {"v2": 1.0}
    assert out["blocked"] is None and out["pending_change"] is None


def test_approve_says_what_the_release_will_do(target):
    """At ``max_live_variants`` (2), approving a newer version drops the oldest challenger: said up front."""
    register(target, 3)
    _cli(models_review.approve, "1")
    release(target, 1, "Approved")
    code, out = _cli(models_review.approve, "2")
    assert code == 0 and "v2 added as challenger" in " ".join(out.split())
    release(target, 2, "Approved")
    code, out = _cli(models_review.approve, "3")
    said = " ".join(out.split())
    assert code == 0 and "the release controller now:" in said
    assert "challenger v2 dropped" in said and "v3 added as challenger" in said
    plan = _cli_json(models_review.reject, "3")["release_plan"]
    assert plan["action"] == "none" and plan["blocked"] is None  # v3 is not live yet: nothing to undo
    assert _cli_json(models_review.reject, "3")["changed"] is False  # no change, no plan


def test_a_change_waits_while_another_change_of_the_local_endpoint_holds_its_lock(target):
    """Two changes at once (a rollback and a promote, or a command and the release controller) would each plan
    on an endpoint the other is changing: the second waits for the lock, says so, then plans on the result."""
    import threading
    import time

    from trainserve.local.component import ENDPOINT_LOCK, exclusive
    from trainserve.target import state_dir

    _, arn2 = register(target, 2)
    for v in (1, 2):
        _cli(models_review.approve, str(v))
        release(target, v, "Approved")
    state_dir().mkdir(parents=True, exist_ok=True)
    held, release_it = threading.Event(), threading.Event()

    def other_change():  # e.g. a rollback in another terminal: it rejects v2 while it holds the lock
        with exclusive(state_dir() / ENDPOINT_LOCK, time.monotonic() + 10) as got:
            assert got
            held.set()
            release_it.wait(10)
            target.client("sagemaker").update_model_package(
                ModelPackageArn=arn2, ModelApprovalStatus="Rejected"
            )

    other = threading.Thread(target=other_change)
    other.start()
    assert held.wait(10)
    threading.Timer(0.5, release_it.set).start()
    code, out = _cli(traffic_cmd.traffic, "promote", "v2")
    other.join(10)
    assert "waiting for another change of the endpoint to finish" in out
    # planned after the other change: v2 is rejected now, so it cannot be promoted, and nothing changed
    assert code == 1 and "v2 is Rejected; only an approved version can be promoted" in " ".join(out.split())
    assert _weights(_status(target)) == {"v1": 0.9, "v2": 0.1}


def test_the_demo_knows_beforehand_whether_the_controller_will_serve_an_approval(target):
    """The demo asks the planner before it approves: a baseline trained on other input features than a
    champion left by an earlier session is not added (the demo then promotes it), and a challenger would
    fail at once with the controller's reason instead of a timeout."""
    from trainserve import demo

    register(target, 1, inputs="1" * 64)
    register(target, 1, inputs="2" * 64)
    register(target, 1, inputs="1" * 64)
    assert demo.will_serve(target, 1)[0]  # no endpoint yet: the approval creates it
    _cli(models_review.approve, "1")
    release(target, 1, "Approved")
    serves, why = demo.will_serve(target, 2)
    assert not serves and "v2 not added: its input features differ from those of champion v1" in why
    assert demo.will_serve(target, 3)[0]


def test_endpoint_sync_names_an_approved_version_it_will_not_serve_and_why(target):
    register(target, 1, inputs="1" * 64)
    register(target, 1, inputs="2" * 64)
    for v in (1, 2):
        _cli(models_review.approve, str(v))
        release(target, v, "Approved")  # v2 is not added: other input features
    code, out = _cli(endpoint_cmd.endpoint, "sync")
    said = " ".join(out.split())
    assert code == 0 and "nothing to change" in said
    assert "v2 is approved but not served: its input features differ from those of champion v1" in said
    assert "the endpoint already matches the registry" not in said
