"""MonitoringStack: dashboard lines per variant through SEARCH, alarms (exact names) wired to the SNS topic,
the scheduled monitoring Lambda with a least-privilege role, its failures retried, queued and alarmed; cdk-nag and
cfn-lint clean.

The serving stack is stood in for by a small stack holding the same attributes (a real proxy Lambda and a real
on-failure queue): the monitoring stack only reads ``endpoint_name``, ``proxy_function``, ``release_dlq`` and
``release_function`` from it."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

import cfnlint.api
import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from stacks.common import acknowledge, python_function
from stacks.config import Config
from stacks.data_stack import DataStack
from stacks.monitoring_stack import MonitoringStack
from stacks.warehouse_stack import WarehouseStack
from trainserve import PROJECT_ROOT

CONTEXT = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
TEST_EMAIL = "ops@example.com"
TEST_INTERVAL = 30
ENDPOINT = "trainserve-endpoint"
ALARM_NAMES = {
    "trainserve-endpoint-5xx",
    "trainserve-endpoint-latency-p99",
    "trainserve-proxy-errors",
    "trainserve-firehose-predictions-redshift",
    "trainserve-firehose-feedback-redshift",
    "trainserve-undelivered-log-records",
    "trainserve-release-dlq-not-empty",
    "trainserve-prediction-drift",
    "trainserve-feature-drift",
    "trainserve-monitor-errors",
    "trainserve-monitor-dlq-not-empty",
}


class _ServingStandIn(Stack):
    """The serving stack's interface for monitoring: endpoint name, proxy Lambda, release controller and DLQ."""

    def __init__(self, scope, construct_id: str, *, config: Config, data: DataStack, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.endpoint_name = config.endpoint_name
        self.release_dlq = sqs.Queue(
            self,
            "ReleaseFailures",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=data.key,
            enforce_ssl=True,
        )
        acknowledge(
            self.release_dlq, "AwsSolutions-SQS3", "This queue is itself the release controller's DLQ."
        )
        self.proxy_function = self._function(
            "PredictionProxy", "proxy", "proxy_handler.handler", config, data
        )
        self.release_function = self._function(
            "ReleaseController", "release_controller", "release_handler.handler", config, data
        )

    def _function(self, construct_id: str, folder: str, handler: str, config: Config, data: DataStack):
        role = iam.Role(self, f"{construct_id}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        fn = python_function(
            self,
            construct_id,
            config=config,
            code_dir=folder,
            handler=handler,
            description="stand-in",
            key=data.key,
            role=role,
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["logs:PutLogEvents"], resources=[fn.log_group.log_group_arn])
        )
        acknowledge(fn, "AwsSolutions-L1", "The project pins one Lambda runtime in stacks/common.py.")
        acknowledge(
            role, "AwsSolutions-IAM5[Resource::*]", "X-Ray trace upload has no resource-level permission."
        )
        return fn


@pytest.fixture(scope="module")
def synthesized() -> dict[str, dict[str, Any]]:
    """One app (one synth under cdk-nag) with two monitoring stacks: with an alarm e-mail and a 30-minute
    interval, and without e-mail and a 600-minute interval."""
    base = Config.from_mapping({**CONTEXT["trainserve"], "alarm_email": TEST_EMAIL})
    app = App(context=CONTEXT)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    data = DataStack(app, "TestData", config=base)
    warehouse = WarehouseStack(app, "TestWarehouse", config=base, data=data)
    serving = _ServingStandIn(app, "TestServing", config=base, data=data)
    variants = {
        "TestMonitoring": {"alarm_email": TEST_EMAIL, "monitoring_interval_minutes": TEST_INTERVAL},
        "TestMonitoringQuiet": {"alarm_email": None, "monitoring_interval_minutes": 600},
    }
    configs = {}
    for name, overrides in variants.items():
        configs[name] = Config.from_mapping({**CONTEXT["trainserve"], **overrides})
        MonitoringStack(app, name, config=configs[name], data=data, serving=serving, warehouse=warehouse)
    assembly = app.synth()
    out = {}
    for name, config in configs.items():
        tpl = assembly.get_stack_by_name(name).template
        out[name] = {"config": config, "template": Template.from_json(tpl), "tpl": tpl}
    return out


@pytest.fixture(scope="module")
def built(synthesized) -> dict[str, Any]:
    return synthesized["TestMonitoring"]


def _resources(tpl: dict, type_: str) -> dict[str, dict]:
    return {k: r for k, r in tpl["Resources"].items() if r["Type"] == type_}


def _alarms_by_name(tpl: dict) -> dict[str, dict]:
    return {
        r["Properties"]["AlarmName"]: r["Properties"]
        for r in _resources(tpl, "AWS::CloudWatch::Alarm").values()
    }


def _dashboard_body(tpl: dict) -> dict:
    """The dashboard JSON with every CloudFormation token replaced by a placeholder string."""
    (dashboard,) = _resources(tpl, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    if isinstance(body, dict):
        body = "".join(part if isinstance(part, str) else "TOKEN" for part in body["Fn::Join"][1])
    return json.loads(body)


def _dashboard_expressions(tpl: dict) -> list[str]:
    exprs = []
    for widget in _dashboard_body(tpl)["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            for item in line:
                if isinstance(item, dict) and "expression" in item:
                    exprs.append(item["expression"])
    return exprs


def _topic_id(tpl: dict) -> str:
    (topic_id,) = _resources(tpl, "AWS::SNS::Topic")
    return topic_id


# ------------------------------------------------------------------------------------------------ checks
def test_stack_is_cdk_nag_and_cfn_lint_clean(built):
    matches = cfnlint.api.lint_all(json.dumps(built["tpl"]))
    errors = [str(m) for m in matches if m.rule.id[0] in "EW" and m.rule.id != "W3005"]
    assert errors == []


# ------------------------------------------------------------------------------------------------- topic
def test_topic_is_kms_encrypted_tls_only_with_the_configured_email(built):
    tpl, template = built["tpl"], built["template"]
    (topic,) = _resources(tpl, "AWS::SNS::Topic").values()
    assert "Fn::ImportValue" in json.dumps(topic["Properties"]["KmsMasterKeyId"])
    (policy,) = _resources(tpl, "AWS::SNS::TopicPolicy").values()
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": TEST_EMAIL, "TopicArn": {"Ref": _topic_id(tpl)}},
    )


# --------------------------------------------------------------------------------------------- dashboard
@pytest.mark.parametrize(
    ("namespace", "metric", "stat"),
    [
        ("AWS/SageMaker", "Invocations", "Sum"),
        ("AWS/SageMaker", "Invocation4XXErrors", "Sum"),
        ("AWS/SageMaker", "Invocation5XXErrors", "Sum"),
        ("AWS/SageMaker", "ModelLatency", "p50"),
        ("AWS/SageMaker", "ModelLatency", "p99"),
        ("AWS/SageMaker", "OverheadLatency", "p50"),
        ("AWS/SageMaker", "OverheadLatency", "p99"),
        ("/aws/sagemaker/Endpoints", "CPUUtilization", "Average"),
        ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average"),
    ],
)
def test_dashboard_searches_endpoint_metrics_per_variant(built, namespace, metric, stat):
    expected = (
        f'SEARCH(\'{{{namespace},EndpointName,VariantName}} EndpointName="{ENDPOINT}" '
        f"MetricName=\"{metric}\"', '{stat}', 300)"
    )
    assert expected in _dashboard_expressions(built["tpl"])


@pytest.mark.parametrize(
    "metric", ["RequestCount", "PositiveRate", "ScorePSI", "FeaturePSI", "OnlineAccuracy", "LabelledCount"]
)
def test_dashboard_searches_the_monitoring_jobs_metrics_per_variant_and_version(built, metric):
    pattern = re.compile(
        r"SEARCH\('\{Trainserve/Predictions,EndpointName,ModelVersion,VariantName\} "
        rf"EndpointName=\"{ENDPOINT}\" MetricName=\"{metric}\"', '\w+', 300\)"
    )
    assert any(pattern.fullmatch(e) for e in _dashboard_expressions(built["tpl"]))


def _prediction_graphs(tpl: dict) -> dict[str, tuple[str, str]]:
    """metric name -> (graph title, statistic) of the monitoring job's graphs."""
    found = {}
    for widget in _dashboard_body(tpl)["widgets"]:
        props = widget.get("properties", {})
        for line in props.get("metrics", []):
            for item in line:
                m = re.fullmatch(
                    r"SEARCH\('\{Trainserve/Predictions,[^}]*\} EndpointName=\"[^\"]*\" "
                    r"MetricName=\"(\w+)\"', '(\w+)', 300\)",
                    item.get("expression", "") if isinstance(item, dict) else "",
                )
                if m:
                    found[m.group(1)] = (props["title"], m.group(2))
    return found


def test_the_jobs_counts_are_plotted_as_gauges_of_its_window_never_summed(built):
    """Every run (scheduled, or ``monitor run``) publishes the counts of the whole window again, so a Sum
    would count the same predictions once per run: the dashboard plots their Maximum, titled as the window."""
    graphs = _prediction_graphs(built["tpl"])
    assert set(graphs) == {
        "RequestCount",
        "PositiveRate",
        "ScorePSI",
        "FeaturePSI",
        "OnlineAccuracy",
        "LabelledCount",
    }
    assert graphs["RequestCount"] == (
        f"RequestCount (predictions in the last {TEST_INTERVAL} min, per run)",
        "Maximum",
    )
    assert graphs["LabelledCount"] == (
        f"LabelledCount (outcomes in the last {TEST_INTERVAL} min, per run)",
        "Maximum",
    )
    assert all(stat != "Sum" for _, stat in graphs.values())
    assert graphs["FeaturePSI"][1] == graphs["ScorePSI"][1] == "Average"


def test_dashboard_shows_proxy_and_firehose_metrics(built):
    body = json.dumps(_dashboard_body(built["tpl"]))
    for needle in (
        '"AWS/Lambda", "Errors"',
        '"AWS/Lambda", "Throttles"',
        '"AWS/Firehose", "DeliveryToRedshift.Success"',
        '"AWS/Firehose", "DeliveryToS3.DataFreshness"',
        '"AWS/Firehose", "DeliveryToS3.Success"',
        '"Trainserve/Proxy", "UndeliveredLogRecords"',
    ):
        assert needle in body, needle


# ------------------------------------------------------------------------------------------------ alarms
def test_alarm_names_are_exact_and_every_alarm_notifies_the_topic(built):
    tpl = built["tpl"]
    alarms = _alarms_by_name(tpl)
    assert set(alarms) == ALARM_NAMES
    for name, props in alarms.items():
        assert props["AlarmActions"] == [{"Ref": _topic_id(tpl)}], name


def test_endpoint_5xx_alarm_is_the_rate_over_all_variants(built):
    props = _alarms_by_name(built["tpl"])["trainserve-endpoint-5xx"]
    (query,) = props["Metrics"]
    assert query["Expression"] == (
        'SELECT AVG(Invocation5XXErrors) FROM SCHEMA("AWS/SageMaker", EndpointName, VariantName) '
        f"WHERE EndpointName = '{ENDPOINT}'"
    )
    assert query["ReturnData"] is True and query["Period"] == 300
    assert props["Threshold"] == built["config"].error_rate_alarm
    assert props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["TreatMissingData"] == "notBreaching"


def test_endpoint_latency_alarm_compares_microseconds(built):
    props = _alarms_by_name(built["tpl"])["trainserve-endpoint-latency-p99"]
    (query,) = props["Metrics"]
    assert "ModelLatency" in query["Expression"] and f"EndpointName = '{ENDPOINT}'" in query["Expression"]
    assert props["Threshold"] == built["config"].latency_p99_alarm_ms * 1000


@pytest.mark.parametrize(
    ("name", "metric", "setting"),
    [
        ("trainserve-prediction-drift", "ScorePSI", "drift_psi_threshold"),
        ("trainserve-feature-drift", "FeaturePSI", "feature_psi_threshold"),
    ],
)
def test_drift_alarms_watch_psi_against_the_configured_threshold(built, name, metric, setting):
    props = _alarms_by_name(built["tpl"])[name]
    (query,) = props["Metrics"]
    assert query["Expression"] == (
        f'SELECT MAX({metric}) FROM SCHEMA("Trainserve/Predictions", EndpointName, ModelVersion, VariantName) '
        f"WHERE EndpointName = '{ENDPOINT}'"
    )
    assert query["Period"] == TEST_INTERVAL * 60
    assert props["Threshold"] == getattr(built["config"], setting)
    # below drift_min_predictions the job publishes no PSI: missing data must not breach
    assert props["TreatMissingData"] == "notBreaching"
    assert f"at least {built['config'].drift_min_predictions} predictions" in props["AlarmDescription"]


def test_the_local_clouds_alarms_are_the_stacks(built):
    """The local cloud creates the alarms it evaluates (trainserve.local.resources, which may not import
    stacks/) with the same names and definitions as this stack."""
    from trainserve.local.resources import local_alarms
    from trainserve.target import Names

    config = built["config"]
    stack = _alarms_by_name(built["tpl"])
    local = local_alarms(config, Names.local(config))
    assert {a["AlarmName"] for a in local} == {
        "trainserve-endpoint-5xx",
        "trainserve-prediction-drift",
        "trainserve-feature-drift",
    }
    for alarm in local:
        props = stack[alarm["AlarmName"]]
        (query,) = props["Metrics"]
        (mine,) = alarm["Metrics"]
        assert (mine["Expression"], mine["Period"], mine["Label"]) == (
            query["Expression"],
            query["Period"],
            query["Label"],
        )
        assert alarm["AlarmDescription"] == props["AlarmDescription"]
        for key in ("Threshold", "ComparisonOperator", "EvaluationPeriods", "TreatMissingData"):
            assert alarm[key] == props[key], (alarm["AlarmName"], key)
        assert alarm["DatapointsToAlarm"] == props.get("DatapointsToAlarm", props["EvaluationPeriods"])


def test_firehose_alarms_fire_when_a_copy_fails(built):
    alarms = _alarms_by_name(built["tpl"])
    for stream in ("predictions", "feedback"):
        props = alarms[f"trainserve-firehose-{stream}-redshift"]
        assert props["MetricName"] == "DeliveryToRedshift.Success" and props["Namespace"] == "AWS/Firehose"
        assert props["Threshold"] == 1 and props["ComparisonOperator"] == "LessThanThreshold"
        (dim,) = props["Dimensions"]
        assert dim["Name"] == "DeliveryStreamName" and "Fn::ImportValue" in json.dumps(dim["Value"])


def test_release_dlq_alarm_fires_on_any_visible_message(built):
    props = _alarms_by_name(built["tpl"])["trainserve-release-dlq-not-empty"]
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible" and props["Namespace"] == "AWS/SQS"
    assert props["Threshold"] == 0 and props["ComparisonOperator"] == "GreaterThanThreshold"


def test_proxy_error_alarm_is_a_rate(built):
    props = _alarms_by_name(built["tpl"])["trainserve-proxy-errors"]
    ids = {m["Id"]: m for m in props["Metrics"]}
    assert ids["errors"]["MetricStat"]["Metric"]["MetricName"] == "Errors"
    assert ids["invocations"]["MetricStat"]["Metric"]["MetricName"] == "Invocations"
    assert props["Threshold"] == built["config"].error_rate_alarm


# ------------------------------------------------------------------------------------------- monitor job
def test_monitor_function_environment(built):
    tpl = built["tpl"]
    (fn_id, fn), *_ = [
        (k, r)
        for k, r in _resources(tpl, "AWS::Lambda::Function").items()
        if r["Properties"].get("Handler") == "monitor_handler.handler"
    ]
    env = fn["Properties"]["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == ENDPOINT
    assert env["MODEL_PACKAGE_GROUP"] == "trainserve-models"
    assert env["WAREHOUSE_DATABASE"] == "trainserve"
    assert "Fn::ImportValue" in json.dumps(env["WAREHOUSE_WORKGROUP"])
    assert "Fn::ImportValue" in json.dumps(env["WAREHOUSE_SECRET_ARN"])
    assert "WAREHOUSE_CLUSTER" not in env
    assert env["WINDOW_MINUTES"] == str(TEST_INTERVAL)
    assert env["DRIFT_MIN_PREDICTIONS"] == str(built["config"].drift_min_predictions) == "200"
    assert env["METRIC_NAMESPACE"] == "Trainserve/Predictions"
    assert int(env["QUERY_TIMEOUT_SECONDS"]) > 0
    assert tpl["Outputs"]["MonitorFunction"]["Value"] == {"Ref": fn_id}


def test_monitor_runs_on_the_configured_schedule(built):
    tpl = built["tpl"]
    (rule,) = _resources(tpl, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == f"rate({TEST_INTERVAL} minutes)"
    (target,) = rule["Properties"]["Targets"]
    fn_id = tpl["Outputs"]["MonitorFunction"]["Value"]["Ref"]
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    built["template"].has_resource_properties(
        "AWS::Lambda::Permission",
        {"Principal": "events.amazonaws.com", "FunctionName": {"Fn::GetAtt": [fn_id, "Arn"]}},
    )


def test_monitor_role_is_least_privilege(built):
    tpl = built["tpl"]
    statements = [
        s
        for p in _resources(tpl, "AWS::IAM::Policy").values()
        if "MonitorRole" in json.dumps(p["Properties"]["Roles"])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_sid = {s.get("Sid"): s for s in statements}
    put = by_sid["PublishPredictionMetrics"]
    assert put["Action"] == "cloudwatch:PutMetricData"
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Trainserve/Predictions"}}
    registry = json.dumps(by_sid["ReadRegistry"]["Resource"])
    assert (
        "model-package/trainserve-models/*" in registry
        and "model-package-group/trainserve-models" in registry
    )
    assert by_sid["ReadBaselines"]["Action"] == "s3:GetObject"
    assert by_sid["ReadBaselines"]["Resource"] == {
        "Fn::Join": [
            "",
            [
                {"Fn::ImportValue": "TestData-ArtifactsBucketArn"},
                "/pipeline/*/Evaluate/evaluation/baseline.json",
            ],
        ]
    }
    execute = by_sid["RedshiftDataOnWarehouse"]
    assert "Fn::ImportValue" in json.dumps(execute["Resource"]) and execute["Resource"] != "*"
    assert "secretsmanager:GetSecretValue" in by_sid["ReadWarehouseSecret"]["Action"]
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions), s


def test_outputs(built):
    outputs = built["tpl"]["Outputs"]
    assert set(outputs) >= {"MonitorFunction", "AlarmTopicArn", "DashboardName"}
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": _topic_id(built["tpl"])}
    assert built["tpl"]["Description"] == "trainserve: dashboard, alarms and prediction monitoring"


def test_no_email_subscription_without_an_address(synthesized):
    tpl = synthesized["TestMonitoringQuiet"]["tpl"]
    assert _resources(tpl, "AWS::SNS::Subscription") == {}
    for name in ("trainserve-prediction-drift", "trainserve-feature-drift"):
        props = _alarms_by_name(tpl)[name]
        assert props["Metrics"][0]["Period"] == 180 * 60  # Metrics Insights alarms see 3 hours at most


# ------------------------------------------------------------------------------- the job's failures
def _monitor_function_id(tpl: dict) -> str:
    return tpl["Outputs"]["MonitorFunction"]["Value"]["Ref"]


def _monitor_queue(tpl: dict) -> tuple[str, dict]:
    """The job's failure queue (the only queue of the stack)."""
    ((queue_id, queue),) = _resources(tpl, "AWS::SQS::Queue").items()
    return queue_id, queue


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _key_export(tpl: dict) -> str:
    """The export name of the project key's ARN, as the alarm topic imports it."""
    (topic,) = _resources(tpl, "AWS::SNS::Topic").values()
    return topic["Properties"]["KmsMasterKeyId"]["Fn::ImportValue"]


def _baseline_key_of_a_pipeline_run(execution_id: str) -> str:
    """The key of the baseline_uri the training pipeline registers for one execution: the definition's
    expressions resolved as the local runner resolves them (the same definition runs on SageMaker)."""
    from stacks.training_stack import PIPELINE_OUTPUT_PREFIX
    from training import pipeline_definition as pd_
    from trainserve.local.training_runner import PIPELINE_PREFIX

    assert (
        PIPELINE_PREFIX == PIPELINE_OUTPUT_PREFIX
    )  # the local runner writes where the stack's pipeline does
    definition = pd_.build_pipeline_definition(
        role_arn="arn:aws:iam::111122223333:role/r",
        model_package_group_name="trainserve-models",
        training_image_uri="image",
        inference_image_uri="image",
        code={k: f"s3://code/{k}" for k in pd_.REQUIRED_CODE},
        artifacts_s3_prefix=f"s3://artifacts/{PIPELINE_OUTPUT_PREFIX}",
        kms_key_id="",
        defaults={
            "input_data_uri": "s3://data/input/",
            "training_instance_type": "ml.m5.large",
            "processing_instance_type": "ml.m5.large",
            "estimator": "logistic_regression",
            "quality_metric": "roc_auc",
            "quality_threshold": 0.7,
        },
    )
    steps = {step["Name"]: step for step in definition["Steps"]}
    ctx = pd_.ExecutionContext(parameters={}, execution={"PipelineExecutionId": execution_id})
    for out in steps["Evaluate"]["Arguments"]["ProcessingOutputConfig"]["Outputs"]:
        ctx.properties.setdefault("Evaluate", {})[
            f"ProcessingOutputConfig.Outputs['{out['OutputName']}'].S3Output.S3Uri"
        ] = ctx.resolve(out["S3Output"]["S3Uri"])
    (register,) = steps["CheckQuality"]["Arguments"]["IfSteps"]
    uri = ctx.resolve(register["Arguments"]["CustomerMetadataProperties"]["baseline_uri"])
    assert uri.startswith("s3://artifacts/"), uri
    return uri.removeprefix("s3://artifacts/")


def test_monitor_role_reads_the_baselines_the_pipeline_registers_and_no_other_object(built):
    """The grant is exactly the baseline.json objects: a registered version's baseline_uri matches it, its
    siblings (evaluation.json, features.json), the model artifacts and the rest of the bucket do not."""
    statements = [
        s
        for p in _resources(built["tpl"], "AWS::IAM::Policy").values()
        if "MonitorRole" in json.dumps(p["Properties"]["Roles"])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    reads = [s for s in statements if any(a.startswith("s3:") for a in _list(s["Action"]))]
    assert [s["Sid"] for s in reads] == ["ReadBaselines"]
    ((bucket, pattern),) = [r["Fn::Join"][1] for r in _list(reads[0]["Resource"])]
    assert bucket == {"Fn::ImportValue": "TestData-ArtifactsBucketArn"}
    key = _baseline_key_of_a_pipeline_run("execution-0a1b2c")
    assert key == "pipeline/execution-0a1b2c/Evaluate/evaluation/baseline.json"
    assert fnmatchcase(f"/{key}", pattern)
    for other in (
        "pipeline/execution-0a1b2c/Evaluate/evaluation/evaluation.json",
        "pipeline/execution-0a1b2c/Evaluate/evaluation/features.json",
        "pipeline/execution-0a1b2c/Train/pipelines-x/output/model.tar.gz",
        "pipeline/execution-0a1b2c/Preprocess/test/test.csv",
        "code/abc/baseline.json",
        "baseline.json",
    ):
        assert not fnmatchcase(f"/{other}", pattern), other


def test_monitor_failure_queue_is_kms_encrypted_tls_only_and_kept_14_days(built):
    tpl = built["tpl"]
    queue_id, queue = _monitor_queue(tpl)
    assert queue["Properties"]["KmsMasterKeyId"] == {"Fn::ImportValue": _key_export(tpl)}
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    (policy,) = _resources(tpl, "AWS::SQS::QueuePolicy").values()
    assert policy["Properties"]["Queues"] == [{"Ref": queue_id}]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert len(deny) == 1 and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny[0]["Principal"] == {"AWS": "*"}


def test_schedule_target_retries_then_sends_to_the_failure_queue(built):
    """EventBridge retries an invocation it cannot make twice, within one monitoring interval, then puts
    the event in the failure queue; the queue lets only this rule send."""
    tpl = built["tpl"]
    queue_id, _ = _monitor_queue(tpl)
    ((rule_id, rule),) = _resources(tpl, "AWS::Events::Rule").items()
    (target,) = rule["Properties"]["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": 2,
        "MaximumEventAgeInSeconds": TEST_INTERVAL * 60,
    }
    (policy,) = _resources(tpl, "AWS::SQS::QueuePolicy").values()
    sends = [
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and "sqs:SendMessage" in _list(s["Action"])
    ]
    assert len(sends) == 1
    assert sends[0]["Principal"] == {"Service": "events.amazonaws.com"}
    assert sends[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}


def test_a_run_that_fails_every_attempt_goes_to_the_failure_queue(built):
    tpl = built["tpl"]
    queue_id, _ = _monitor_queue(tpl)
    (config,) = _resources(tpl, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": _monitor_function_id(tpl)}
    assert props["MaximumRetryAttempts"] == 2
    assert props["MaximumEventAgeInSeconds"] == TEST_INTERVAL * 60
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}}
    # the role may send there (and encrypt for it with the project key)
    statements = [
        s
        for p in _resources(tpl, "AWS::IAM::Policy").values()
        if "MonitorRole" in json.dumps(p["Properties"]["Roles"])
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert any(
        "sqs:SendMessage" in _list(s["Action"]) and s["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        for s in statements
    )


def test_monitor_errors_alarm_fires_when_the_job_fails_two_intervals_running(built):
    tpl = built["tpl"]
    props = _alarms_by_name(tpl)["trainserve-monitor-errors"]
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": _monitor_function_id(tpl)}}]
    assert props["Period"] == TEST_INTERVAL * 60
    assert props["EvaluationPeriods"] == props["DatapointsToAlarm"] == 2
    assert props["Threshold"] == 1 and props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == [{"Ref": _topic_id(tpl)}]


def test_monitor_failure_queue_alarm_fires_on_any_visible_message(built):
    tpl = built["tpl"]
    queue_id, _ = _monitor_queue(tpl)
    props = _alarms_by_name(tpl)["trainserve-monitor-dlq-not-empty"]
    assert props["MetricName"] == "ApproximateNumberOfMessagesVisible" and props["Namespace"] == "AWS/SQS"
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    assert props["Statistic"] == "Maximum"
    assert props["Threshold"] == 0 and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["AlarmActions"] == [{"Ref": _topic_id(tpl)}]


def test_a_long_interval_keeps_within_the_limits_of_lambda_and_cloudwatch(synthesized):
    """600 minutes: Lambda keeps an event 6 hours at most; the errors alarm's 2 periods of 10 hours are
    within CloudWatch's 7 days for periods of an hour or more."""
    tpl = synthesized["TestMonitoringQuiet"]["tpl"]
    (config,) = _resources(tpl, "AWS::Lambda::EventInvokeConfig").values()
    assert config["Properties"]["MaximumEventAgeInSeconds"] == 6 * 3600
    (rule,) = _resources(tpl, "AWS::Events::Rule").values()
    assert rule["Properties"]["Targets"][0]["RetryPolicy"]["MaximumEventAgeInSeconds"] == 6 * 3600
    props = _alarms_by_name(tpl)["trainserve-monitor-errors"]
    assert props["Period"] == 600 * 60
    assert props["Period"] * props["EvaluationPeriods"] <= 7 * 24 * 3600
