"""ServingStack: approval rule -> release controller (retries, DLQ, env), cleanup, prediction API."""

from __future__ import annotations

import json
import re

import pytest
import release_planner
from cfn_helpers import as_list, only, references, resources

pytestmark = pytest.mark.xdist_group("synth")

CONTROLLER_ENV = {
    "PROJECT_NAME",
    "ENDPOINT_NAME",
    "MODEL_PACKAGE_GROUP",
    "CHALLENGER_WEIGHT",
    "MAX_LIVE_VARIANTS",
    "INSTANCE_TYPE",
    "INSTANCE_COUNT",
    "DATA_CAPTURE_ENABLED",
    "DATA_CAPTURE_PERCENT",
    "DATA_CAPTURE_S3_URI",
    "MODEL_EXECUTION_ROLE_ARN",
    "KMS_KEY_ARN",
    "ROLLBACK_ALARMS",
    "TRAFFIC_ROUTING",
    "GUARDRAIL_WAIT_SECONDS",
    "SERVING_IMAGE_URI",
}
PROXY_ENV = {
    "ENDPOINT_NAME",
    "MODEL_PACKAGE_GROUP",
    "PREDICTIONS_STREAM",
    "FEEDBACK_STREAM",
    "SERVING_ENABLED",
    "TARGET_VARIANT",
    "DECISION_THRESHOLD",
    "LOG_SAMPLE_RATE",
    "STICKY_ASSIGNMENT",
}
FACTORY_ENV = {"POWERTOOLS_SERVICE_NAME"}  # added to every function by stacks.common.python_function


@pytest.fixture(scope="module")
def serving(cloud_assembly):
    return cloud_assembly.stack("Serving")


def _function(template, handler):
    found = [
        (k, v)
        for k, v in resources(template, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == handler
    ]
    assert len(found) == 1, handler
    return found[0]


def _env(template, handler):
    return _function(template, handler)[1]["Properties"]["Environment"]["Variables"]


def _statements_of_function(template, handler):
    role_id = _function(template, handler)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    out = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    assert "ManagedPolicyArns" not in resources(template, "AWS::IAM::Role")[role_id]["Properties"]
    return out


def test_rule_matches_approvals_and_rejections_of_this_group_only(serving, config):
    rule = only(serving, "AWS::Events::Rule")["Properties"]
    assert rule["EventPattern"] == release_planner.event_pattern(config.model_package_group_name)
    assert rule["EventPattern"]["detail"]["ModelApprovalStatus"] == ["Approved", "Rejected"]
    assert rule["EventPattern"]["detail-type"] == ["SageMaker Model Package State Change"]
    (target,) = rule["Targets"]
    fn_id, _ = _function(serving, "release_handler.handler")
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2


def test_controller_retries_twice_then_sends_to_the_encrypted_dlq(serving):
    fn_id, _ = _function(serving, "release_handler.handler")
    invoke = only(serving, "AWS::Lambda::EventInvokeConfig")["Properties"]
    assert invoke["FunctionName"] == {"Ref": fn_id}
    assert invoke["MaximumRetryAttempts"] == 2
    assert 60 <= invoke["MaximumEventAgeInSeconds"] <= 21600
    queue_id = invoke["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    queue = resources(serving, "AWS::SQS::Queue")[queue_id]["Properties"]
    assert "Fn::ImportValue" in json.dumps(queue["KmsMasterKeyId"])
    policy = only(serving, "AWS::SQS::QueuePolicy")["Properties"]
    assert {"Ref": queue_id} in policy["Queues"]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["PolicyDocument"]["Statement"]
    )
    assert serving["Outputs"]["ReleaseDlq"]["Value"] == {"Fn::GetAtt": [queue_id, "QueueName"]}


def test_the_dlq_is_alarmed_once_by_the_monitoring_stack_which_notifies(cloud_assembly, serving):
    """The serving stack has no alarm of its own on the queue (it had one with no action, a duplicate of the
    monitoring stack's); the monitoring stack's alarm watches this queue and notifies the alarm topic."""
    assert resources(serving, "AWS::CloudWatch::Alarm") == {}
    invoke = only(serving, "AWS::Lambda::EventInvokeConfig")["Properties"]
    queue_id = invoke["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    monitoring = cloud_assembly.stack("Monitoring")
    watching = [
        a["Properties"]
        for a in resources(monitoring, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/SQS"
        and f"TrainserveServing:ExportsOutputFnGetAtt{queue_id}QueueName"
        in json.dumps(a["Properties"].get("Dimensions"))
    ]
    assert [a["AlarmName"] for a in watching] == ["trainserve-release-dlq-not-empty"]
    assert watching[0]["AlarmActions"]


def test_the_endpoint_volumes_and_captured_data_use_the_project_key(serving, cloud_assembly):
    """KMS_KEY_ARN is the data stack's key, and the controller may create grants on it for the endpoint (only
    grants for an AWS resource); release events EventBridge cannot deliver go to the controller's queue."""
    env = _env(serving, "release_handler.handler")
    assert "TrainserveData:ExportsOutputFnGetAttKey" in json.dumps(env["KMS_KEY_ARN"])
    statements = [
        st
        for policy in resources(serving, "AWS::IAM::Policy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if st.get("Sid") == "ProjectKeyForEndpointVolumes"
    ]
    (grant,) = statements
    assert sorted(grant["Action"]) == ["kms:CreateGrant", "kms:DescribeKey"]
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    (rule,) = [
        r for r in resources(serving, "AWS::Events::Rule").values() if "aws.sagemaker" in json.dumps(r)
    ]
    (target,) = rule["Properties"]["Targets"]
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 2


def test_the_controller_may_wait_for_a_busy_endpoint_as_long_as_lambda_allows(serving):
    """An approval that arrives while the endpoint is being created or updated (minutes) waits for it within
    the invocation (the handler keeps a minute for itself) instead of failing into the dead-letter queue."""
    (function,) = [
        f
        for f in resources(serving, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "release_handler.handler"
    ]
    assert function["Properties"]["Timeout"] == 900


def test_controller_environment(serving, config):
    env = _env(serving, "release_handler.handler")
    assert set(env) == CONTROLLER_ENV | FACTORY_ENV
    assert env["ROLLBACK_ALARMS"] == "trainserve-endpoint-5xx,trainserve-endpoint-latency-p99"
    assert env["PROJECT_NAME"] == config.project_name
    assert env["ENDPOINT_NAME"] == config.endpoint_name
    assert env["MODEL_PACKAGE_GROUP"] == config.model_package_group_name
    assert env["CHALLENGER_WEIGHT"] == str(config.challenger_weight)
    assert env["MAX_LIVE_VARIANTS"] == str(config.max_live_variants)
    assert env["DATA_CAPTURE_ENABLED"] == "false"
    assert env["SERVING_IMAGE_URI"] == ""
    assert "/data-capture/" in json.dumps(env["DATA_CAPTURE_S3_URI"])
    assert "ModelExecutionRole" in json.dumps(env["MODEL_EXECUTION_ROLE_ARN"])


def test_controller_environment_parses_with_the_controllers_own_settings(serving):
    """The env the stack sets is exactly what the controller reads (tokens replaced by placeholders)."""
    env = {
        k: v if isinstance(v, str) else "token" for k, v in _env(serving, "release_handler.handler").items()
    }
    settings = release_planner.ReleaseSettings.from_env(env)
    assert settings.rollback_alarms == ("trainserve-endpoint-5xx", "trainserve-endpoint-latency-p99")
    assert settings.traffic_routing == "ALL_AT_ONCE"


def test_controller_role_least_privilege(serving):
    statements = _statements_of_function(serving, "release_handler.handler")
    passes = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 1
    assert "ModelExecutionRole" in json.dumps(passes[0]["Resource"])
    assert passes[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    for s in statements:
        actions = as_list(s["Action"])
        text = json.dumps(s["Resource"])
        if any(a.startswith(("sagemaker:Create", "sagemaker:Delete", "sagemaker:Update")) for a in actions):
            assert s["Resource"] != "*", s
            for resource in as_list(s["Resource"]):
                assert any(
                    f":{kind}/trainserve-" in json.dumps(resource)
                    for kind in ("endpoint", "endpoint-config", "model")
                ), s
        if s["Resource"] == "*":
            assert set(actions) <= {
                "sagemaker:ListEndpoints",
                "sagemaker:ListEndpointConfigs",
                "sagemaker:ListModels",
                "sagemaker:ListModelPackages",
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
            }, s
        if "cloudwatch:DescribeAlarms" in actions:
            assert "alarm:trainserve-endpoint-5xx" in text


def test_cleanup_custom_resource_calls_the_cleanup_function(serving):
    fn_id, _ = _function(serving, "cleanup_handler.handler")
    (cleanup,) = resources(serving, "Custom::EndpointCleanup").values()
    assert cleanup["Properties"]["ServiceToken"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    statements = _statements_of_function(serving, "cleanup_handler.handler")
    deletes = [a for s in statements for a in as_list(s["Action"]) if a.startswith("sagemaker:Delete")]
    assert sorted(deletes) == [
        "sagemaker:DeleteEndpoint",
        "sagemaker:DeleteEndpointConfig",
        "sagemaker:DeleteModel",
    ]
    assert not any(a.startswith("sagemaker:Create") for s in statements for a in as_list(s["Action"]))


def _depends_on(template, logical_id):
    return set(as_list(template["Resources"][logical_id].get("DependsOn", [])))


def _created_before(template, logical_id):
    """Every resource CloudFormation creates before ``logical_id`` (and so deletes after it): the transitive
    closure of DependsOn and references."""
    seen, todo = set(), [logical_id]
    while todo:
        res = template["Resources"][todo.pop()]
        for dep in set(as_list(res.get("DependsOn", []))) | references(res.get("Properties", {}))[0]:
            if dep in template["Resources"] and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _controller_invokers(template):
    """The controller's function and everything that makes it run: its rule, the rule's permission to invoke
    it, its async invoke config (retries of queued events)."""
    fn_id, _ = _function(template, "release_handler.handler")
    (rule_id,) = resources(template, "AWS::Events::Rule")
    (invoke_id,) = resources(template, "AWS::Lambda::EventInvokeConfig")
    permissions = [
        k
        for k, v in resources(template, "AWS::Lambda::Permission").items()
        if references(v["Properties"]["FunctionName"])[0] == {fn_id}
    ]
    assert len(permissions) == 1
    return {"function": fn_id, "rule": rule_id, "invoke config": invoke_id, "permission": permissions[0]}


def test_on_delete_the_controller_and_its_triggers_go_before_the_cleanup_runs(serving):
    """CloudFormation deletes in reverse dependency order: whatever can run the controller (and so create an
    endpoint) must depend on the cleanup resource, and the cleanup must not depend on any of it, else an
    approval event or a queued retry recreates the endpoint after the cleanup deleted it."""
    (cleanup_id,) = resources(serving, "Custom::EndpointCleanup")
    invokers = _controller_invokers(serving)
    assert not set(invokers.values()) & _created_before(serving, cleanup_id)
    for what, logical_id in invokers.items():
        assert cleanup_id in _depends_on(serving, logical_id), what
    # The controller's permissions go first too: an invocation still running when its function is deleted
    # cannot create anything once its role policy is gone.
    role_id = _function(serving, "release_handler.handler")[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    for policy_id, policy in resources(serving, "AWS::IAM::Policy").items():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            assert cleanup_id in _depends_on(serving, policy_id)


SAGEMAKER_ARN = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
OWN_ARNS = {
    "endpoint": SAGEMAKER_ARN + "endpoint/trainserve-endpoint",
    # sagemaker_adapter.endpoint_config_name: {project}-ec-{14 digits}-{4 hex}
    "endpoint-config": SAGEMAKER_ARN + "endpoint-config/trainserve-ec-??????????????-????",
    # sagemaker_adapter.model_name: {project}-v{N}-{6 hex}
    "model": SAGEMAKER_ARN + "model/trainserve-v*-??????",
}


def _arn_text(value):
    """An ARN of the template as text, pseudo parameters as cdk-nag prints them (``<AWS::Region>``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value and value["Ref"].startswith("AWS::"):
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_arn_text(p) for p in parts)
    return "TOKEN"


def _iam_match(pattern, text):
    """IAM's ARN matching: ``*`` any run of characters, ``?`` exactly one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text) is not None


_DESCRIBE_DELETE = {
    "endpoint": ["sagemaker:DeleteEndpoint", "sagemaker:DescribeEndpoint"],
    "endpoint-config": ["sagemaker:DeleteEndpointConfig", "sagemaker:DescribeEndpointConfig"],
    "model": ["sagemaker:DeleteModel", "sagemaker:DescribeModel"],
}
_LISTS = ["sagemaker:ListEndpointConfigs", "sagemaker:ListEndpoints", "sagemaker:ListModels"]
SAGEMAKER_GRANTS = {  # Sid -> (actions, resources)
    "release_handler.handler": {
        "OwnEndpoints": (
            [
                "sagemaker:CreateEndpoint",
                *_DESCRIBE_DELETE["endpoint"],
                "sagemaker:UpdateEndpoint",
                "sagemaker:UpdateEndpointWeightsAndCapacities",
            ],
            [OWN_ARNS["endpoint"]],
        ),
        "OwnEndpointConfigs": (
            ["sagemaker:CreateEndpointConfig", *_DESCRIBE_DELETE["endpoint-config"]],
            [OWN_ARNS["endpoint-config"]],
        ),
        "OwnModels": (["sagemaker:CreateModel", *_DESCRIBE_DELETE["model"]], [OWN_ARNS["model"]]),
        "TagOwnResources": (
            ["sagemaker:AddTags", "sagemaker:DeleteTags", "sagemaker:ListTags"],
            sorted(OWN_ARNS.values()),
        ),
        "ListResources": (sorted([*_LISTS, "sagemaker:ListModelPackages"]), ["*"]),
    },
    "cleanup_handler.handler": {
        "OwnEndpoints": (_DESCRIBE_DELETE["endpoint"], [OWN_ARNS["endpoint"]]),
        "OwnEndpointConfigs": (_DESCRIBE_DELETE["endpoint-config"], [OWN_ARNS["endpoint-config"]]),
        "OwnModels": (_DESCRIBE_DELETE["model"], [OWN_ARNS["model"]]),
        "ListResources": (_LISTS, ["*"]),
    },
}


@pytest.mark.parametrize("handler", sorted(SAGEMAKER_GRANTS))
def test_sagemaker_grants_name_the_endpoint_and_the_generated_names_exactly(serving, handler):
    """The endpoint by its ARN, endpoint configs and models by the exact shape of the names the controller
    generates (not ``{project}-*``, which also matches e.g. project ``trainserve-b``'s resources)."""
    statements = _statements_of_function(serving, handler)
    grants = {
        s["Sid"]: (sorted(as_list(s["Action"])), sorted(_arn_text(r) for r in as_list(s["Resource"])))
        for s in statements
        if s.get("Sid") in SAGEMAKER_GRANTS[handler]
    }
    assert grants == SAGEMAKER_GRANTS[handler]
    # and no other statement names a SageMaker endpoint, endpoint config or model
    for s in statements:
        if s.get("Sid") not in SAGEMAKER_GRANTS[handler]:
            for resource in as_list(s["Resource"]):
                arn = _arn_text(resource)
                assert not arn.startswith(tuple(f"{SAGEMAKER_ARN}{kind}/" for kind in OWN_ARNS)), s


def test_the_sagemaker_arns_cover_what_the_controller_creates_and_not_another_projects():
    import sagemaker_adapter

    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/12"
    ours = {
        "endpoint": "trainserve-endpoint",
        "endpoint-config": sagemaker_adapter.endpoint_config_name("trainserve"),
        "model": sagemaker_adapter.model_name("trainserve", 12, package),
    }
    for kind, name in ours.items():
        assert _iam_match(OWN_ARNS[kind], f"{SAGEMAKER_ARN}{kind}/{name}"), kind
    other = "trainserve-b"  # a project whose name starts with this one's
    theirs = {
        "endpoint": f"{other}-endpoint",
        "endpoint-config": sagemaker_adapter.endpoint_config_name(other),
        "model": sagemaker_adapter.model_name(other, 12, package),
    }
    for kind, name in theirs.items():
        assert not _iam_match(OWN_ARNS[kind], f"{SAGEMAKER_ARN}{kind}/{name}"), kind
    # What the model wildcard cannot exclude (and its cdk-nag acknowledgment says so): the models of a project
    # named "{project}-v..." (the version's digits have no fixed count, IAM has no digit-only wildcard).
    model = sagemaker_adapter.model_name("trainserve-v2", 12, package)
    assert _iam_match(OWN_ARNS["model"], f"{SAGEMAKER_ARN}model/{model}")


def test_the_endpoint_log_group_is_precreated_encrypted_with_retention(serving, config):
    """SageMaker would create /aws/sagemaker/Endpoints/<name> itself, unencrypted, never expiring, and left
    behind by cdk destroy: the stack owns it, and the cleanup (which deletes the endpoint) runs before it
    is deleted, so SageMaker does not recreate it."""
    groups = {
        k: v
        for k, v in resources(serving, "AWS::Logs::LogGroup").items()
        if v["Properties"].get("LogGroupName") == f"/aws/sagemaker/Endpoints/{config.endpoint_name}"
    }
    assert len(groups) == 1
    ((group_id, group),) = groups.items()
    assert group["Properties"]["RetentionInDays"] == config.log_retention_days
    assert "Fn::ImportValue" in json.dumps(group["Properties"]["KmsKeyId"])
    assert "TrainserveData:" in json.dumps(group["Properties"]["KmsKeyId"])
    assert group["DeletionPolicy"] == group["UpdateReplacePolicy"] == "Delete"  # dev
    (cleanup_id,) = resources(serving, "Custom::EndpointCleanup")
    assert group_id in _depends_on(serving, cleanup_id)


def test_the_endpoint_log_group_is_retained_in_prod(variant_assembly):
    serving = variant_assembly.stack("Serving")
    (group,) = [
        v
        for v in resources(serving, "AWS::Logs::LogGroup").values()
        if v["Properties"].get("LogGroupName") == "/aws/sagemaker/Endpoints/trainserve-endpoint"
    ]
    assert group["DeletionPolicy"] == group["UpdateReplacePolicy"] == "Retain"


def test_proxy_environment(serving, config):
    env = _env(serving, "proxy_handler.handler")
    assert set(env) == PROXY_ENV | FACTORY_ENV
    assert env["SERVING_ENABLED"] == "true"
    assert env["TARGET_VARIANT"] == ""
    assert env["DECISION_THRESHOLD"] == str(config.decision_threshold)
    assert env["STICKY_ASSIGNMENT"] == ("true" if config.sticky_assignment else "false")
    assert env["ENDPOINT_NAME"] == config.endpoint_name


def test_proxy_role_invokes_only_the_endpoint(serving):
    statements = _statements_of_function(serving, "proxy_handler.handler")
    invoke = [s for s in statements if "sagemaker:InvokeEndpoint" in as_list(s["Action"])]
    assert len(invoke) == 1
    assert "endpoint/trainserve-endpoint" in json.dumps(invoke[0]["Resource"])
    assert "*" not in json.dumps(invoke[0]["Resource"])
    metrics = [s for s in statements if "cloudwatch:PutMetricData" in as_list(s["Action"])]
    assert len(metrics) == 1 and "cloudwatch:namespace" in json.dumps(metrics[0]["Condition"])
    # the feature lists of registered versions (features_uri), and nothing else of the artifacts bucket
    [reads] = [s for s in statements if "s3:GetObject" in as_list(s["Action"])]
    assert as_list(reads["Action"]) == ["s3:GetObject"]
    assert json.dumps(reads["Resource"]).endswith('"/pipeline/*/Evaluate/evaluation/features.json"]]}')
    [decrypt] = [s for s in statements if "kms:Decrypt" in as_list(s["Action"])]
    assert "kms:ViaService" in json.dumps(decrypt["Condition"])


def test_every_api_method_requires_an_api_key_and_validates_the_body(serving):
    methods = [m["Properties"] for m in resources(serving, "AWS::ApiGateway::Method").values()]
    posts = [m for m in methods if m["HttpMethod"] == "POST"]
    assert len(posts) == 2
    for m in methods:
        if m["HttpMethod"] != "OPTIONS":
            assert m["ApiKeyRequired"] is True, m
    for m in posts:
        assert "RequestValidatorId" in m
        assert "application/json" in m["RequestModels"]
    validator = only(serving, "AWS::ApiGateway::RequestValidator")["Properties"]
    assert validator["ValidateRequestBody"] is True


def test_a_body_the_models_refuse_gets_an_answer_naming_what_does_not_match(serving):
    response = only(serving, "AWS::ApiGateway::GatewayResponse")["Properties"]
    assert response["ResponseType"] == "BAD_REQUEST_BODY" and response["StatusCode"] == "400"
    template = response["ResponseTemplates"]["application/json"]
    # "error", as the proxy's own 400s, so `trainserve predict` shows it; messageString comes quoted
    assert template == (
        '{"error": "$context.error.validationErrorString", "message": $context.error.messageString}'
    )


def test_request_models(serving):
    schemas = {
        m["Properties"]["Name"]: m["Properties"]["Schema"]
        for m in resources(serving, "AWS::ApiGateway::Model").values()
    }
    predict = schemas["PredictRequest"]
    assert predict["required"] == ["instances"]
    assert predict["properties"]["instances"]["type"] == "array"
    assert predict["properties"]["user_id"]["type"] == "string"
    feedback = schemas["FeedbackRequest"]
    item = feedback["oneOf"][0]
    assert sorted(item["required"]) == ["outcome", "request_id"]
    assert item["properties"]["outcome"]["enum"] == [0, 1]


def test_the_feedback_model_takes_every_form_the_proxy_takes(serving):
    """API Gateway validates bodies against the model before the proxy sees them: each form the README
    documents must pass it, and a body the proxy would refuse for its shape must not."""
    import jsonschema

    schema = next(
        m["Properties"]["Schema"]
        for m in resources(serving, "AWS::ApiGateway::Model").values()
        if m["Properties"]["Name"] == "FeedbackRequest"
    )
    item = {"request_id": "3f2b-0", "outcome": 1}
    for body in (item, {"feedback": [item, {"request_id": "3f2b-1", "outcome": 0}]}, [item]):
        jsonschema.validate(body, schema)
    for body in (
        {"request_id": "3f2b-0"},
        {"request_id": "3f2b-0", "outcome": 2},
        {"feedback": []},
        {"feedback": [{"outcome": 1}]},
        [],
        "3f2b-0",
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)


def test_usage_plan_throttles_from_config(serving, config):
    plan = only(serving, "AWS::ApiGateway::UsagePlan")["Properties"]
    assert plan["Throttle"] == {
        "RateLimit": config.api_throttle_rate,
        "BurstLimit": config.api_throttle_burst,
    }
    key_id = next(iter(resources(serving, "AWS::ApiGateway::ApiKey")))
    assert only(serving, "AWS::ApiGateway::UsagePlanKey")["Properties"]["KeyId"] == {"Ref": key_id}
    assert serving["Outputs"]["PredictionApiKeyId"]["Value"] == {"Ref": key_id}


def test_stage_has_tracing_and_encrypted_access_logs(serving):
    stage = only(serving, "AWS::ApiGateway::Stage")["Properties"]
    assert stage["TracingEnabled"] is True
    log_group_id = stage["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    log_group = resources(serving, "AWS::Logs::LogGroup")[log_group_id]["Properties"]
    assert "KmsKeyId" in log_group
    assert json.loads(stage["AccessLogSetting"]["Format"])["status"] == "$context.status"


def test_every_function_is_traced_with_an_encrypted_log_group(serving):
    log_groups = resources(serving, "AWS::Logs::LogGroup")
    for fn_id, fn in resources(serving, "AWS::Lambda::Function").items():
        props = fn["Properties"]
        assert props["TracingConfig"] == {"Mode": "Active"}, fn_id
        group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
        assert "KmsKeyId" in log_groups[group_id]["Properties"], fn_id


def test_fast_image_and_data_capture_variant(variant_assembly):
    serving = variant_assembly.stack("Serving")
    env = _env(serving, "release_handler.handler")
    assert "dkr.ecr" in json.dumps(env["SERVING_IMAGE_URI"])
    assert env["DATA_CAPTURE_ENABLED"] == "true"
    assert env["DATA_CAPTURE_PERCENT"] == "50"
    assert env["TRAFFIC_ROUTING"] == "CANARY"
    docker = variant_assembly.outdir / "TrainserveServing.assets.json"
    assert json.loads(docker.read_text())["dockerImages"], "the fast image is a Docker image asset"


def test_variant_synthesizes_clean(variant_assembly):
    assert variant_assembly.returncode == 0, variant_assembly.stderr[-4000:]
    assert variant_assembly.violations == []


def test_proxy_logs_to_the_warehouse_streams(serving):
    env = _env(serving, "proxy_handler.handler")
    for name in ("PREDICTIONS_STREAM", "FEEDBACK_STREAM"):
        assert "TrainserveWarehouse:" in json.dumps(env[name]["Fn::ImportValue"]), name
    statements = _statements_of_function(serving, "proxy_handler.handler")
    (firehose,) = [s for s in statements if "firehose:PutRecordBatch" in as_list(s["Action"])]
    streams = as_list(firehose["Resource"])
    assert len(streams) == 2
    assert all("TrainserveWarehouse:" in json.dumps(s) for s in streams)
