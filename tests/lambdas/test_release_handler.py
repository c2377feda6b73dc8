"""The release controller handler and its SageMaker adapter against moto (in-process), and the EventBridge
rule's pattern against a realistic "SageMaker Model Package State Change" event."""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
from pathlib import Path

import boto3
import pytest
import release_handler
import release_planner
import sagemaker_adapter
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends
from release_planner import CHAMPION_TAG, ReleaseBlocked, ReleaseSettings, event_pattern
from sagemaker_adapter import EndpointBusy, SageMakerAdapter

from trainserve.local import moto_patches

REGION = "us-east-1"
PROJECT = "proj"
GROUP = "proj-models"
ENDPOINT = "proj-endpoint"
ROLE = "arn:aws:iam::123456789012:role/proj-model-execution"
ENV = {
    "PROJECT_NAME": PROJECT,
    "ENDPOINT_NAME": ENDPOINT,
    "MODEL_PACKAGE_GROUP": GROUP,
    "CHALLENGER_WEIGHT": "0.1",
    "MAX_LIVE_VARIANTS": "2",
    "INSTANCE_TYPE": "ml.m5.large",
    "INSTANCE_COUNT": "1",
    "DATA_CAPTURE_ENABLED": "false",
    "DATA_CAPTURE_PERCENT": "20",
    "DATA_CAPTURE_S3_URI": "",
    "MODEL_EXECUTION_ROLE_ARN": ROLE,
    "ROLLBACK_ALARMS": "",
    "TRAFFIC_ROUTING": "ALL_AT_ONCE",
    "GUARDRAIL_WAIT_SECONDS": "0",
    "SERVING_IMAGE_URI": "",
}
SAMPLE_EVENT = json.loads((Path(__file__).parent / "events" / "model_package_state_change.json").read_text())
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


@pytest.fixture
def sm(monkeypatch):
    moto_patches.install()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        yield client


def _register(sm, n: int = 1, inputs: str | None = None) -> list[str]:
    arns = []
    metadata = {"CustomerMetadataProperties": {"features_sha256": inputs}} if inputs else {}
    for _ in range(n):
        arns.append(
            sm.create_model_package(
                **metadata,
                ModelPackageGroupName=GROUP,
                ModelApprovalStatus="PendingManualApproval",
                InferenceSpecification={
                    "Containers": [
                        {
                            "Image": IMAGE,
                            "ModelDataUrl": f"s3://proj-artifacts/run-{len(arns) + 1}/model.tar.gz",
                            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
                        }
                    ],
                    "SupportedContentTypes": ["text/csv", "application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
            )["ModelPackageArn"]
        )
    return arns


def _set_status(sm, arn: str, status: str) -> None:
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


def _event(version: int, status: str, group: str = GROUP) -> dict:
    event = copy.deepcopy(SAMPLE_EVENT)
    arn = f"arn:aws:sagemaker:{REGION}:{DEFAULT_ACCOUNT_ID}:model-package/{group}/{version}"
    event["resources"] = [arn]
    event["detail"].update(
        ModelPackageGroupName=group,
        ModelPackageVersion=version,
        ModelPackageArn=arn,
        ModelApprovalStatus=status,
    )
    return event


def _live(sm) -> dict[str, float]:
    ep = sm.describe_endpoint(EndpointName=ENDPOINT)
    return {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in ep["ProductionVariants"]}


def _champion_tag(sm) -> str | None:
    arn = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointArn"]
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}.get(CHAMPION_TAG)


def _approve(sm, arn: str, version: int) -> dict:
    _set_status(sm, arn, "Approved")
    return release_handler.handler(_event(version, "Approved"), None)


def test_event_for_another_group_is_ignored(sm):
    (arn,) = _register(sm)
    _set_status(sm, arn, "Approved")
    out = release_handler.handler(_event(1, "Approved", group="someone-elses-models"), None)
    assert out["action"] == "ignored"
    assert sm.list_endpoints()["Endpoints"] == []


def test_approve_first_version_creates_the_endpoint(sm):
    (arn,) = _register(sm)
    out = _approve(sm, arn, 1)
    assert out["action"] == "create" and out["endpoint"] == ENDPOINT
    assert _live(sm) == {"v1": 1.0}
    assert _champion_tag(sm) == "v1"
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    )
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 1
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert variant["ModelName"] == sagemaker_adapter.model_name(PROJECT, 1, arn)
    assert model["PrimaryContainer"]["ModelPackageName"] == arn
    assert model["ExecutionRoleArn"] == ROLE
    assert out["variants"][0] | {"model_package_arn": arn} == out["variants"][0]
    assert out["variants"][0]["champion"] is True


def test_approve_second_version_adds_a_challenger_then_duplicates_change_nothing(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    first_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    out = _approve(sm, arn2, 2)
    assert out["action"] == "update"
    assert _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})
    assert _champion_tag(sm) == "v1"
    second_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    assert second_config != first_config

    again = release_handler.handler(_event(2, "Approved"), None)  # SageMaker delivered it twice
    assert again["action"] == "none" and "already live" in again["reason"]
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == second_config
    assert _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})


def test_a_challenger_with_other_input_features_is_not_added(sm):
    """The champion's and the challenger's features_sha256 differ: no request could be valid for both, so the
    endpoint stays as it is and the reason names the remedy; a third version with the champion's inputs joins."""
    (arn1,) = _register(sm, inputs="a" * 64)
    (arn2,) = _register(sm, inputs="b" * 64)
    (arn3,) = _register(sm, inputs="a" * 64)
    _approve(sm, arn1, 1)
    config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    out = _approve(sm, arn2, 2)
    assert out["action"] == "none"
    assert "v2 not added: its input features differ from those of champion v1" in out["reason"]
    assert "trainserve traffic promote v2" in out["reason"]
    assert _live(sm) == {"v1": 1.0}
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == config
    out = _approve(sm, arn3, 3)
    assert out["action"] == "update" and _live(sm) == pytest.approx({"v1": 0.9, "v3": 0.1})


def test_a_rejected_champion_replaced_by_an_older_version_with_other_inputs_says_so(sm):
    """The adapter reads the inputs of the version that can replace the champion (not live, not the event's)."""
    (arn1,) = _register(sm, inputs="a" * 64)
    (arn2,) = _register(sm, inputs="b" * 64)
    _set_status(sm, arn1, "Approved")
    _approve(sm, arn2, 2)  # the newest approved: v2 alone
    assert _live(sm) == {"v2": 1.0}
    _set_status(sm, arn2, "Rejected")
    out = release_handler.handler(_event(2, "Rejected"), None)
    assert _live(sm) == {"v1": 1.0}
    assert "champion v2 is Rejected: v1 replaces it" in out["reason"]
    assert "note: v1's input features differ from v2's" in out["reason"]


def test_packages_without_the_inputs_metadata_are_admitted_as_before(sm):
    (arn1,) = _register(sm, inputs="a" * 64)
    (arn2,) = _register(sm)  # registered before training wrote features_sha256
    _approve(sm, arn1, 1)
    out = _approve(sm, arn2, 2)
    assert out["action"] == "update" and _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})


def test_reject_challenger_returns_its_weight_to_the_champion(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    _set_status(sm, arn2, "Rejected")
    out = release_handler.handler(_event(2, "Rejected"), None)
    assert out["action"] == "update"
    assert _live(sm) == {"v1": 1.0}
    assert [v["variant"] for v in out["variants"]] == ["v1"]


def test_stale_approval_of_a_rejected_version_is_handled_as_a_rejection(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    _set_status(sm, arn2, "Rejected")
    out = release_handler.handler(_event(2, "Approved"), None)  # the old Approved event arrives late
    assert "stale" in out["reason"]
    assert _live(sm) == {"v1": 1.0}


def test_busy_endpoint_raises_endpoint_busy(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[ENDPOINT].endpoint_status = "Updating"
    _set_status(sm, arn2, "Approved")
    with pytest.raises(EndpointBusy, match="Updating"):
        release_handler.handler(_event(2, "Approved"), None)
    assert _live(sm) == {"v1": 1.0}


def test_rejected_champion_without_replacement_is_blocked_and_the_endpoint_keeps_serving(sm, caplog):
    (arn1,) = _register(sm)
    _approve(sm, arn1, 1)
    _set_status(sm, arn1, "Rejected")
    with caplog.at_level(logging.ERROR, logger="release_controller"), pytest.raises(ReleaseBlocked):
        release_handler.handler(_event(1, "Rejected"), None)
    assert _live(sm) == {"v1": 1.0}
    assert any(getattr(r, "action", None) == "blocked" for r in caplog.records)


def test_blocked_champion_still_loses_a_rejected_challenger(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    _set_status(sm, arn1, "Rejected")
    with pytest.raises(ReleaseBlocked, match="champion v1 is Rejected"):
        release_handler.handler(_event(1, "Rejected"), None)
    assert _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})  # nothing safe to change: keeps serving
    _set_status(sm, arn2, "Rejected")
    with pytest.raises(ReleaseBlocked):
        release_handler.handler(_event(2, "Rejected"), None)
    assert _live(sm) == {"v1": 1.0}  # the rejected challenger left anyway


def test_rejected_champion_is_replaced_by_the_newest_older_approved_version(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    adapter = SageMakerAdapter(ReleaseSettings.from_env(ENV), sm)
    state = adapter.read_endpoint()
    adapter.apply(release_planner.promote(state, "v2"), adapter.read_registry(), state, poll_s=0)
    assert _live(sm) == {"v2": 1.0} and _champion_tag(sm) == "v2"
    _set_status(sm, arn2, "Rejected")
    out = release_handler.handler(_event(2, "Rejected"), None)
    assert "v1 replaces it" in out["reason"]
    assert _live(sm) == {"v1": 1.0} and _champion_tag(sm) == "v1"


def test_unused_configs_and_models_are_cleaned_up(sm):
    arn1, arn2, arn3 = _register(sm, 3)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    _approve(sm, arn3, 3)  # max 2 live: v2 dropped, v3 added
    assert _live(sm) == pytest.approx({"v1": 0.9, "v3": 0.1})
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    assert len(configs) == 2  # the live one and the previous one
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] in configs
    sm.create_model(
        ModelName="other-project-v1-abcdef", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE
    )
    _set_status(sm, arn3, "Rejected")
    release_handler.handler(_event(3, "Rejected"), None)
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    # v2's model is used by no kept config; v3's is still in the previous config; other projects' untouched
    assert models == {
        sagemaker_adapter.model_name(PROJECT, 1, arn1),
        sagemaker_adapter.model_name(PROJECT, 3, arn3),
        "other-project-v1-abcdef",
    }


KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(
    ("instance_type", "volume_key"), [("ml.m5.large", KEY), ("ml.c5.xlarge", KEY), ("ml.g4dn.xlarge", None)]
)
def test_endpoint_configs_use_the_project_key_where_sagemaker_takes_one(sm, instance_type, volume_key):
    """KMS_KEY_ARN encrypts the instances' ML storage volumes (not on instance types with local storage, which
    SageMaker encrypts in hardware and for which it refuses a KmsKeyId) and the captured data."""
    env = {
        **ENV,
        "KMS_KEY_ARN": KEY,
        "INSTANCE_TYPE": instance_type,
        "DATA_CAPTURE_ENABLED": "true",
        "DATA_CAPTURE_S3_URI": "s3://proj-logs/capture",
    }
    made: list[dict] = []
    sm.meta.events.register(
        "provide-client-params.sagemaker.CreateEndpointConfig", lambda params, **_: made.append(dict(params))
    )
    (arn,) = _register(sm)
    _set_status(sm, arn, "Approved")
    settings = ReleaseSettings.from_env(env)
    adapter = SageMakerAdapter(settings, sm)
    decision = release_planner.plan(
        adapter.read_registry(), adapter.read_endpoint(), settings, (1, "Approved")
    )
    adapter.apply(decision, adapter.read_registry(), adapter.read_endpoint(), poll_s=0)
    (config,) = made
    assert config.get("KmsKeyId") == volume_key
    assert config["DataCaptureConfig"]["KmsKeyId"] == KEY
    assert ReleaseSettings.from_env({**ENV}).kms_key_arn == ""  # unset: SageMaker's own keys, as before


def test_local_storage_instance_families():
    assert release_planner.has_local_storage("ml.m5d.large") and release_planner.has_local_storage(
        "ml.g5.xlarge"
    )
    assert not release_planner.has_local_storage("ml.m5.large") and not release_planner.has_local_storage(
        "ml.c5.xlarge"
    )


def test_serving_image_uri_builds_the_model_from_the_package_artifact(sm, monkeypatch):
    monkeypatch.setenv("SERVING_IMAGE_URI", "123456789012.dkr.ecr.us-east-1.amazonaws.com/proj-serving:1")
    (arn,) = _register(sm)
    _approve(sm, arn, 1)
    model = sm.describe_model(ModelName=sagemaker_adapter.model_name(PROJECT, 1, arn))
    assert model["PrimaryContainer"]["Image"].endswith("/proj-serving:1")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://proj-artifacts/run-1/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py"}


def test_guardrails_only_where_sagemaker_allows_them_and_data_capture(sm):
    """Guardrails need the same variant names in the old and new config: not when a variant comes or goes,
    but when the same variants move to another instance type."""
    env = {
        **ENV,
        "TRAFFIC_ROUTING": "CANARY",
        "GUARDRAIL_WAIT_SECONDS": "300",
        "ROLLBACK_ALARMS": "proj-5xx, proj-latency",
        "DATA_CAPTURE_ENABLED": "true",
        "DATA_CAPTURE_S3_URI": "s3://proj-logs/capture",
    }
    updates: list[dict] = []
    sm.meta.events.register(
        "provide-client-params.sagemaker.UpdateEndpoint", lambda params, **_: updates.append(dict(params))
    )
    arn1, arn2 = _register(sm, 2)

    def release(settings, event):
        adapter = SageMakerAdapter(settings, sm)
        decision = release_planner.plan(adapter.read_registry(), adapter.read_endpoint(), settings, event)
        adapter.apply(decision, adapter.read_registry(), adapter.read_endpoint(), poll_s=0)
        return decision

    for arn, v in ((arn1, 1), (arn2, 2)):
        _set_status(sm, arn, "Approved")
        release(ReleaseSettings.from_env(env), (v, "Approved"))
    (add_challenger,) = updates
    assert "DeploymentConfig" not in add_challenger  # v2 added: SageMaker refuses guardrails here
    config = sm.describe_endpoint_config(EndpointConfigName=add_challenger["EndpointConfigName"])
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://proj-logs/capture"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20

    decision = release(ReleaseSettings.from_env({**env, "INSTANCE_TYPE": "ml.c5.xlarge"}), None)
    assert "instance type changed" in decision.reason
    deployment = updates[-1]["DeploymentConfig"]
    routing = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 300,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
    }
    assert deployment["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "proj-5xx"}, {"AlarmName": "proj-latency"}]
    }
    config = sm.describe_endpoint_config(EndpointConfigName=updates[-1]["EndpointConfigName"])
    assert {v["InstanceType"] for v in config["ProductionVariants"]} == {"ml.c5.xlarge"}
    assert _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})


@pytest.mark.parametrize(("routing", "key"), [("LINEAR", "LinearStepSize"), ("ALL_AT_ONCE", None)])
def test_deployment_config_per_routing(routing, key):
    adapter = SageMakerAdapter(ReleaseSettings.from_env({**ENV, "TRAFFIC_ROUTING": routing}), client=object())
    config = adapter.deployment_config()
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == routing
    assert "AutoRollbackConfiguration" not in config  # no alarms configured
    if key:
        assert key in config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]


@pytest.mark.parametrize(
    ("routing", "wait", "timeout"),
    [
        ("ALL_AT_ONCE", "0", 1800),
        ("ALL_AT_ONCE", "300", 2400),  # 300 after the shift + 300 before termination + 1800 for the new fleet
        ("CANARY", "300", 2700),
        ("LINEAR", "300", 3300),
        ("LINEAR", "3600", 19800),  # 4 steps x 3600 + 3600 = 18000 of waiting; it was capped at 14400
    ],
)
def test_blue_green_timeout_covers_the_whole_waiting_within_sagemakers_limits(routing, wait, timeout):
    env = {**ENV, "TRAFFIC_ROUTING": routing, "GUARDRAIL_WAIT_SECONDS": wait}
    policy = SageMakerAdapter(ReleaseSettings.from_env(env), client=object()).deployment_config()[
        "BlueGreenUpdatePolicy"
    ]
    routing_config = policy["TrafficRoutingConfiguration"]
    shifts = {"ALL_AT_ONCE": 1, "CANARY": 2}.get(routing) or 100 // routing_config["LinearStepSize"]["Value"]
    waiting = shifts * routing_config["WaitIntervalInSeconds"] + policy["TerminationWaitInSeconds"]
    assert policy["MaximumExecutionTimeoutInSeconds"] == timeout
    assert waiting < policy["MaximumExecutionTimeoutInSeconds"] <= 28800  # SageMaker's rule and range
    assert policy["TerminationWaitInSeconds"] == routing_config["WaitIntervalInSeconds"] == int(wait)


def test_max_live_variants_one_a_newer_approval_replaces_the_champion_by_a_redeploy(sm, monkeypatch):
    """No A/B with one variant: the approval's release redeploys the endpoint with the new version alone
    (UpdateEndpoint, the deploy path an instance-type change takes), and says so."""
    monkeypatch.setenv("MAX_LIVE_VARIANTS", "1")
    arn1, arn2, arn3 = _register(sm, 3)
    _approve(sm, arn1, 1)
    created = sm.describe_endpoint(EndpointName=ENDPOINT)
    out = _approve(sm, arn2, 2)
    assert out["action"] == "update" and "v2 replaces champion v1 at 100%" in out["reason"]
    assert "no A/B test" in out["reason"]
    assert _live(sm) == {"v2": 1.0} and _champion_tag(sm) == "v2"
    updated = sm.describe_endpoint(
        EndpointName=ENDPOINT
    )  # the same endpoint, on a new config (UpdateEndpoint)
    assert updated["CreationTime"] == created["CreationTime"]
    assert updated["EndpointConfigName"] != created["EndpointConfigName"]
    config = sm.describe_endpoint_config(EndpointConfigName=updated["EndpointConfigName"])
    assert [(v["VariantName"], v["ModelName"]) for v in config["ProductionVariants"]] == [
        ("v2", sagemaker_adapter.model_name(PROJECT, 2, arn2))
    ]
    assert release_handler.handler(_event(2, "Approved"), None)["action"] == "none"  # duplicate
    _set_status(sm, arn3, "Approved")  # its event is lost: the next event (any) or a sync serves it
    out = release_handler.handler(_event(1, "Approved"), None)
    assert "v3 replaces champion v2" in out["reason"] and _live(sm) == {"v3": 1.0}


def test_weights_update_keeps_instance_counts_and_zero_weights_read_back(sm):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    _approve(sm, arn2, 2)
    settings = ReleaseSettings.from_env(ENV)
    adapter = SageMakerAdapter(settings, sm)
    state = adapter.read_endpoint()
    adapter.apply(release_planner.set_weights(state, {"v2": 0.0}), [], state, poll_s=0)
    state = adapter.read_endpoint()
    assert {v.name: v.weight for v in state.variants} == {"v1": 1.0, "v2": 0.0}
    assert all(v.instance_count == 1 for v in state.variants)


def test_handler_rejects_an_event_without_version(sm):
    event = _event(1, "Approved")
    del event["detail"]["ModelPackageVersion"], event["detail"]["ModelPackageArn"]
    event["resources"] = []
    with pytest.raises(ValueError, match="ModelPackageVersion"):
        release_handler.handler(event, None)


def test_version_from_the_arn_when_the_detail_has_none():
    event = _event(7, "Approved")
    del event["detail"]["ModelPackageVersion"]
    assert release_handler.parse_event(event, GROUP).version == 7


def test_json_log_lines():
    record = logging.LogRecord("release_controller", logging.INFO, __file__, 1, "applied %s", ("x",), None)
    record.action = "update"
    line = json.loads(release_handler.JsonFormatter().format(record))
    assert line["message"] == "applied x" and line["action"] == "update" and line["level"] == "INFO"


# --- the EventBridge rule's pattern, on moto's EventBridge ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "group", "matched"),
    [
        ("Approved", GROUP, True),
        ("Rejected", GROUP, True),
        ("PendingManualApproval", GROUP, False),
        ("Approved", "someone-elses-models", False),
    ],
)
def test_event_pattern_matches_approvals_and_rejections_of_this_group_only(status, group, matched):
    with mock_aws():
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="release")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name="release", EventPattern=json.dumps(event_pattern(GROUP)))
        events.put_targets(Rule="release", Targets=[{"Id": "q", "Arn": queue_arn}])
        sample = _event(2, status, group)
        result = events.put_events(
            Entries=[
                {
                    "Source": sample["source"],
                    "DetailType": sample["detail-type"],
                    "Detail": json.dumps(sample["detail"]),
                    "Resources": sample["resources"],
                }
            ]
        )
        assert result["FailedEntryCount"] == 0
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        assert bool(messages) is matched
        if matched:  # what the rule delivers is what the handler parses
            delivered = json.loads(messages[0]["Body"])
            assert release_handler.parse_event(delivered, GROUP).version == 2


def test_a_config_being_deployed_is_never_cleaned_up(sm):
    """On AWS an endpoint under a blue/green update still reports its old config: the new one must stay."""
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    old_config = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    backend = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION]

    def update_endpoint_like_aws(endpoint_name, endpoint_config_name, **_):
        backend.describe_endpoint_config(endpoint_config_name)
        backend.endpoints[endpoint_name].endpoint_status = "Updating"  # the new fleet is still baking
        return backend.endpoints[endpoint_name].arn

    backend.update_endpoint = update_endpoint_like_aws  # this backend instance only; mock_aws discards it
    _approve(sm, arn2, 2)
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    assert old_config in configs and len(configs) == 2
    new_config = (configs - {old_config}).pop()
    models = {
        v["ModelName"]
        for v in sm.describe_endpoint_config(EndpointConfigName=new_config)["ProductionVariants"]
    }
    assert models <= {m["ModelName"] for m in sm.list_models()["Models"]}


class _LambdaContext:
    """The part of the Lambda context object the handler uses."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_busy_endpoint_is_waited_for_while_the_lambda_has_time(sm, monkeypatch):
    arn1, arn2 = _register(sm, 2)
    _approve(sm, arn1, 1)
    endpoint = sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[ENDPOINT]
    endpoint.endpoint_status = "Updating"
    _set_status(sm, arn2, "Approved")
    monkeypatch.setattr(release_handler, "POLL_S", 0.05)
    timer = threading.Timer(0.5, lambda: setattr(endpoint, "endpoint_status", "InService"))
    timer.start()
    try:  # 120 s left, 60 s kept free: the handler may wait up to 60 s for InService
        out = release_handler.handler(_event(2, "Approved"), _LambdaContext(120_000))
    finally:
        timer.cancel()
    assert out["action"] == "update"
    assert _live(sm) == pytest.approx({"v1": 0.9, "v2": 0.1})


def test_wait_until_ready_gives_up_after_its_timeout(sm):
    (arn1,) = _register(sm)
    _approve(sm, arn1, 1)
    sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].endpoints[ENDPOINT].endpoint_status = "SystemUpdating"
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    adapter = SageMakerAdapter(ReleaseSettings.from_env(ENV), sm, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(EndpointBusy, match="SystemUpdating"):
        adapter.wait_until_ready(timeout_s=60, poll_s=15)
    assert sleeps == [15, 15, 15, 15]


def test_in_lambda_the_runtime_handler_writes_json(monkeypatch):
    root = logging.getLogger()
    stream = io.StringIO()
    lambda_runtime_handler = logging.StreamHandler(stream)
    monkeypatch.setattr(root, "handlers", [lambda_runtime_handler])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "proj-release-controller")
    logger = release_handler._setup_logging()
    logger.info("release decision applied", extra={"action": "create", "endpoint": ENDPOINT})
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "release decision applied" and line["action"] == "create"
    assert line["endpoint"] == ENDPOINT and line["logger"] == "release_controller"
