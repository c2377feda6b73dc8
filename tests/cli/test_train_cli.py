"""``trainserve train`` and ``trainserve models list`` against a moto server (local) and mock_aws (AWS)."""

from __future__ import annotations

import json
import re

import boto3
from click.testing import CliRunner
from moto import mock_aws

from stacks.config import Config
from training.pipeline_definition import build_pipeline_definition
from trainserve.commands import models as models_cmd
from trainserve.commands import training as training_cmd
from trainserve.registry import register_model_package, set_approval_status
from trainserve.target import Names, Target

TEST_REGION = "us-east-1"


def _target(url: str | None, mode: str = "local", **config) -> Target:
    cfg = Config.from_mapping(config)
    return Target(mode=mode, region=TEST_REGION, config=cfg, names=Names.local(cfg), aws_endpoint_url=url)


def _use(monkeypatch, target: Target) -> None:
    """Point both commands at ``target`` (what ``--local``/``--aws`` would resolve to)."""
    monkeypatch.setattr(training_cmd, "resolve_target", lambda local: target)
    monkeypatch.setattr(models_cmd, "resolve_target", lambda local: target)


def _buckets(target: Target) -> None:
    s3 = target.client("s3")
    for bucket in (target.names.data_bucket, target.names.artifacts_bucket):
        s3.create_bucket(Bucket=bucket)


def _all_packages(sm, group: str) -> list:
    out = []
    for status in ("Approved", "Rejected", "PendingManualApproval"):
        out += sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus=status)[
            "ModelPackageSummaryList"
        ]
    return out


def test_train_local_below_threshold_is_not_registered_exit_3(moto_url, monkeypatch):
    target = _target(moto_url, project_name="gate-test", quality_threshold=0.999)
    _buckets(target)
    _use(monkeypatch, target)
    weak = ["--hp", "n_estimators=1", "--hp", "max_depth=1", "--hp", "learning-rate=0.01", "--hp", "C=0.5"]
    result = CliRunner().invoke(
        training_cmd.train,
        ["--local", "--estimator", "gradient_boosting", *weak, "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == training_cmd.EXIT_NOT_REGISTERED, result.output
    out = json.loads(result.stdout)
    assert out["registered"] is False and out["status"] == "not_registered"
    # the shape both modes print (an AWS execution's result has these keys too)
    assert list(out) == list(training_cmd.result_keys())
    assert {"status", "step", "error", "registered", "model_version", "reason", "metrics"} <= set(out)
    assert out["step"] is None and out["error"] is None  # a failed run's, null here
    assert list(out["artifacts"]) == list(training_cmd.ARTIFACT_KEYS)
    assert all(list(s) == list(training_cmd.step_keys()) for s in out["steps"])
    assert out["pipeline_execution_arn"] is None  # no SageMaker execution locally: execution_id names the run
    assert {p["Name"]: p["Value"] for p in out["parameters"]}["Estimator"] == "gradient_boosting"
    assert out["estimator"] == "gradient_boosting"
    # C is logistic regression's: named in a warning, not listed as a hyperparameter of this model
    assert "warning: gradient_boosting ignores --hp C=0.5" in " ".join(result.stderr.split())
    assert set(out["hyperparameters"]) == {"n_estimators", "max_depth", "learning_rate", "random_state"}
    assert out["hyperparameters"]["n_estimators"] == 1 and out["hyperparameters"]["learning_rate"] == 0.01
    assert out["quality_threshold"] == 0.999 and out["quality_value"] < 0.999
    assert out["reason"].startswith("not registered: roc_auc 0.")
    assert out["reason"].endswith("< threshold 0.999")
    assert [s["name"] for s in out["steps"] if s["status"] == "Skipped"] == ["Register"]
    assert out["model_package_arn"] is None
    assert "not registered: roc_auc" in result.stderr  # and the human message on stderr

    # without --json: the steps' progress on stderr, the result on stdout
    result = CliRunner().invoke(training_cmd.train, ["--local", "--estimator", "gradient_boosting", *weak])
    assert result.exit_code == training_cmd.EXIT_NOT_REGISTERED
    assert "estimator gradient_boosting" in result.stdout and "not registered: roc_auc" in result.stdout
    assert "Upload" in result.stderr and "estimator gradient_boosting" not in result.stderr
    assert "(n_estimators=1, max_depth=1, learning_rate=0.01, random_state=42)" in " ".join(
        result.stdout.split()
    )
    sm = target.client("sagemaker")
    group = target.names.model_package_group
    groups = sm.list_model_package_groups()["ModelPackageGroupSummaryList"]
    assert group not in {g["ModelPackageGroupName"] for g in groups} or _all_packages(sm, group) == []
    # The evaluation report is still kept for the operator.
    bucket, _, key = out["artifacts"]["evaluation"][5:].partition("/")
    assert json.loads(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())["metrics"]


def test_train_rejects_malformed_hyperparameters(monkeypatch, moto_url):
    _use(monkeypatch, _target(moto_url))
    result = CliRunner().invoke(training_cmd.train, ["--local", "--hp", "C"])
    assert result.exit_code == 1 and "--hp expects KEY=VALUE, got 'C'" in result.output
    result = CliRunner().invoke(training_cmd.train, ["--local", "--hp", "gamma=1"])
    assert result.exit_code == 1 and "unknown hyperparameter 'gamma'" in result.output
    # a value of the wrong type is named as the user wrote it, not as the pipeline parameter it becomes
    for item, said in (
        ("n_estimators=abc", "--hp n_estimators=abc: n_estimators must be an integer"),
        ("max_iter=2.5", "--hp max_iter=2.5: max_iter must be an integer"),
        ("C=lots", "--hp C=lots: C must be a number"),
        ("learning-rate=fast", "--hp learning-rate=fast: learning_rate must be a number"),
    ):
        result = CliRunner().invoke(training_cmd.train, ["--local", "--hp", item])
        assert result.exit_code == 1 and said in " ".join(result.output.split()), item
        assert "NEstimators" not in result.output and "MaxIter" not in result.output


OUT_OF_RANGE = (  # the training script's own rules (training/train.py), named as the user wrote the value
    (
        ["--estimator", "random_forest", "--hp", "n_estimators=0"],
        "--hp n_estimators=0: n_estimators must be >= 1",
    ),
    (["--hp", "C=0"], "--hp C=0: C must be > 0"),
    (["--hp", "learning-rate=1.5"], "--hp learning-rate=1.5: learning_rate must be in (0, 1]"),
    (["--hp", "MaxDepth=-1"], "--hp MaxDepth=-1: max_depth must be >= 0"),
    (["--hp", "max_iter=0"], "--hp max_iter=0: max_iter must be >= 1"),
    (["--hp", "C=nan"], "--hp C=nan: C must be a finite number"),
    (["--hp", "random_state=-1"], "--hp random_state=-1: random_state must be in [0, 4294967295]"),
    (["--hp", "random_state=4294967296"], "random_state must be in [0, 4294967295]"),
    (
        ["--hp", "n_estimators=5", "--hp", "n-estimators=6"],
        "--hp n_estimators and --hp n-estimators both give",
    ),
)


def _objects(s3, bucket: str) -> list[str]:
    try:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    except s3.exceptions.NoSuchBucket:
        return []


def test_train_refuses_out_of_range_hyperparameters_before_uploading(moto_url, monkeypatch, tmp_path):
    local = _target(moto_url, project_name="range-test")
    aws = _target(moto_url, mode="aws", project_name="range-test")  # the same moto, as the deployed stacks
    _buckets(local)  # an upload would succeed: nothing must be there afterwards
    (tmp_path / "d.csv").write_text("a,target\n1,0\n")
    for args, said in OUT_OF_RANGE:
        for target, mode in ((local, ["--json"]), (local, []), (aws, ["--data", str(tmp_path), "--wait"])):
            _use(monkeypatch, target)
            result = CliRunner().invoke(training_cmd.train, [*mode, *args])
            assert result.exit_code == 1, (args, mode, result.output)
            assert said in " ".join(result.stderr.split()), (args, mode)
            assert result.stdout == ""  # a refused command prints no result (not even with --json)
    s3 = local.client("s3")  # nothing was uploaded, nothing ran
    assert _objects(s3, local.names.data_bucket) == [] and _objects(s3, local.names.artifacts_bucket) == []
    # the edges of each range are accepted
    training_cmd.check_hyperparameters(
        {"n_estimators": "1", "max_iter": "1", "max_depth": "0", "learning_rate": "1", "C": "1e-9"}
    )
    training_cmd.check_hyperparameters({"random_state": "0"})
    training_cmd.check_hyperparameters({"random_state": "4294967295"})


def test_train_failed_step_with_json_prints_the_failure(moto_url, monkeypatch, tmp_path):
    """A step that fails (here Preprocess, on data without the label column): with --json, stdout is one JSON
    object naming the step and the error, and the exit status is not 0, as for the quality gate."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the failed step's log is kept: under tmp_path
    target = _target(moto_url, project_name="failed-step-test")
    _use(monkeypatch, target)
    (tmp_path / "d.csv").write_text("a,b\n1,0\n2,1\n")
    result = CliRunner().invoke(training_cmd.train, ["--local", "--data", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "failed" and out["step"] == "Preprocess"
    assert "label column 'target' is missing" in out["error"]
    # the keys of every outcome (registered, not_registered), locally and on AWS; null where not applicable
    assert list(out) == list(training_cmd.result_keys())
    assert out["registered"] is False and out["reason"] is None
    assert out["model_version"] is None and out["model_package_arn"] is None and out["metrics"] is None
    assert out["pipeline_execution_arn"] is None  # no SageMaker execution locally
    # what did run: its id, its steps (the failed one last) and the --data it uploaded, as a success lists them
    assert re.fullmatch(r"\d{14}-[0-9a-f]{6}", out["execution_id"])
    assert [(st["name"], st["status"]) for st in out["steps"]] == [
        ("Upload", "Succeeded"),
        ("Preprocess", "Failed"),
    ]
    assert set(out["steps"][0]) == {"name", "type", "status", "seconds", "detail"}
    (data_param,) = [p for p in out["parameters"] if p["Name"] == "InputData"]
    assert data_param["Value"] == out["steps"][0]["detail"] and data_param["Value"].startswith("s3://")
    assert "step Preprocess failed" in " ".join(result.stderr.split())  # and the one error line on stderr
    assert [p.name for p in tmp_path.glob("trainserve-train-*/*")] == [
        "Preprocess.log"
    ]  # only the log is kept
    # without --json: no result on stdout, the error on stderr
    result = CliRunner().invoke(training_cmd.train, ["--local", "--data", str(tmp_path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert "step Preprocess failed" in " ".join(result.stderr.split())


def _register(sm, group: str, estimator: str, roc_auc: float) -> str:
    metrics = {"accuracy": 0.9, "f1": 0.91, "roc_auc": roc_auc}
    described = register_model_package(
        sm,
        {
            "ModelPackageGroupName": group,
            "ModelPackageDescription": f"estimator: {estimator}",
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://a/{estimator}/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "CustomerMetadataProperties": {
                "estimator": estimator,
                "metrics": " ".join(f"{k}={v}" for k, v in metrics.items()),
                "quality_metric": "roc_auc",
                "quality_value": str(roc_auc),
                "features_uri": "s3://a/features.json",
                "n_features": "2",
                "baseline_uri": "s3://a/baseline.json",
            },
        },
    )
    return described["ModelPackageArn"]


def test_models_list_json_and_status_filter(moto_url, monkeypatch):
    target = _target(moto_url, project_name="list-test")
    _use(monkeypatch, target)
    sm = target.client("sagemaker")
    group = target.names.model_package_group
    _register(sm, group, "logistic_regression", 0.97)
    second = _register(sm, group, "random_forest", 0.99)
    approved = set_approval_status(sm, second, "Approved", "looks good")
    assert approved["ModelApprovalStatus"] == "Approved"
    assert approved["CustomerMetadataProperties"]["estimator"] == "random_forest"  # kept (moto would wipe it)

    result = CliRunner().invoke(models_cmd.models, ["list", "--local", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["version"], r["approval_status"], r["estimator"]) for r in rows] == [
        (1, "PendingManualApproval", "logistic_regression"),
        (2, "Approved", "random_forest"),
    ]
    assert rows[1]["metrics"] == {"accuracy": 0.9, "f1": 0.91, "roc_auc": 0.99}
    assert rows[1]["quality_metric"] == "roc_auc" and rows[1]["quality_value"] == 0.99
    assert rows[1]["approval_description"] == "looks good"
    assert (
        rows[0]["created"]
        and rows[0]["n_features"] == 2
        and rows[0]["baseline_uri"] == "s3://a/baseline.json"
    )

    result = CliRunner().invoke(models_cmd.models, ["list", "--status", "approved", "--json"])
    assert [r["version"] for r in json.loads(result.stdout)] == [2]

    result = CliRunner().invoke(models_cmd.models, ["list"])
    assert result.exit_code == 0 and "Approved" in result.stdout and "roc_auc 0.990" in result.stdout
    assert "PendingManualApproval" in result.stdout and "looks good" in result.stdout  # whole, with the note


def test_models_list_metrics_fall_back_to_the_evaluation_report(moto_url, monkeypatch):
    target = _target(moto_url, project_name="fallback-test")
    _use(monkeypatch, target)
    s3, sm = target.client("s3"), target.client("sagemaker")
    s3.create_bucket(Bucket="reports")
    report = {
        "binary_classification_metrics": {
            "accuracy": {"value": 0.8, "standard_deviation": 0.01},
            "auc": {"value": 0.85, "standard_deviation": 0.02},
        }
    }
    s3.put_object(Bucket="reports", Key="evaluation.json", Body=json.dumps(report).encode())
    register_model_package(
        sm,
        {
            "ModelPackageGroupName": target.names.model_package_group,
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": "s3://a/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": "s3://reports/evaluation.json"}
                }
            },
        },
    )
    rows = json.loads(CliRunner().invoke(models_cmd.models, ["list", "--json"]).stdout)
    assert rows[0]["metrics"] == {"accuracy": 0.8, "roc_auc": 0.85}


def test_models_list_empty_group(moto_url, monkeypatch):
    _use(monkeypatch, _target(moto_url, project_name="empty-test"))
    result = CliRunner().invoke(models_cmd.models, ["list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def _definition(group: str, estimator: str = "logistic_regression") -> dict:
    """A pipeline definition as the training stack builds it, with placeholder code and buckets."""
    return build_pipeline_definition(
        role_arn="arn:aws:iam::123456789012:role/p",
        model_package_group_name=group,
        training_image_uri="img",
        inference_image_uri="img",
        code={
            k: f"s3://code/{k}" for k in ("preprocess", "evaluate", "train_sourcedir", "inference_sourcedir")
        },
        artifacts_s3_prefix="s3://artifacts/pipeline",
        kms_key_id="",
        defaults={
            "input_data_uri": "s3://data/input/",
            "training_instance_type": "ml.m5.large",
            "processing_instance_type": "ml.t3.medium",
            "estimator": estimator,
            "quality_metric": "roc_auc",
            "quality_threshold": 0.9,
        },
    )


def _create_pipeline(sm, target: Target) -> None:
    # deployed from the target's configuration, as the training stack is (its Estimator default is the config's)
    definition = _definition(target.names.model_package_group, target.config.estimator)
    sm.create_pipeline(
        PipelineName=target.names.pipeline_name,
        PipelineDefinition=json.dumps(definition),
        RoleArn="arn:aws:iam::123456789012:role/p",
    )


def test_train_aws_starts_the_pipeline_with_parameters(monkeypatch, tmp_path):
    with mock_aws():
        target, sm = _aws_pipeline(monkeypatch, buckets=True)
        (tmp_path / "d.csv").write_text("a,target\n1,0\n")
        result = CliRunner().invoke(
            training_cmd.train,
            [
                "--aws",
                "--estimator",
                "random_forest",
                "--hp",
                "n_estimators=300",
                "--data",
                str(tmp_path),
                "--json",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert list(out) == list(training_cmd.result_keys()) and out["status"] == "started"  # without --wait
        assert out["registered"] is None and out["step"] is None and out["error"] is None  # not known yet
        assert out["execution_id"] == out["pipeline_execution_arn"].rsplit("/", 1)[-1]
        params = {p["Name"]: p["Value"] for p in out["parameters"]}
        assert params["Estimator"] == "random_forest" and params["NEstimators"] == "300"
        assert params["InputData"].startswith(f"s3://{target.names.data_bucket}/training-data/")
        listed = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=out["pipeline_execution_arn"])
        assert {p["Name"]: p["Value"] for p in listed["PipelineParameters"]} == params
        bucket, _, prefix = params["InputData"][5:].partition("/")
        keys = [
            o["Key"] for o in target.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        ]
        assert keys == [f"{prefix}/d.csv"]


class _Pages:
    """A ``list_pipeline_execution_steps`` paginator over ``steps`` (moto 5.2.5 does not list them)."""

    def __init__(self, steps: list[dict]) -> None:
        self.steps = steps

    def paginate(self, **kwargs):
        yield {"PipelineExecutionSteps": self.steps}


class _ExecutionInProgress:
    """Stands in for SageMaker's execution-step listing, which moto 5.2.5 does not implement
    (``list_pipeline_execution_steps`` raises NotImplementedError there): three polls, then Succeeded."""

    def __init__(self):
        self.polls = 0

    def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803 (boto3 argument name)
        self.polls += 1
        return {"PipelineExecutionStatus": "Executing" if self.polls < 3 else "Succeeded"}

    def get_paginator(self, name):
        assert name == "list_pipeline_execution_steps"
        steps = [{"StepName": "Preprocess", "StepType": "Processing", "StepStatus": "Succeeded"}]
        if self.polls >= 2:
            steps.append({"StepName": "Train", "StepType": "Training", "StepStatus": "Executing"})
        if self.polls >= 3:
            steps[1]["StepStatus"] = "Succeeded"
            steps.append({"StepName": "CheckQuality", "StepType": "Condition", "StepStatus": "Succeeded"})
        return _Pages(steps)


def test_follow_execution_polls_until_the_end_and_prints_step_changes(capsys):
    sm = _ExecutionInProgress()
    status, raw = training_cmd.follow_execution(sm, "arn:exec", poll_seconds=0)
    steps = [training_cmd._step_row(s) for s in raw]
    assert status == "Succeeded" and sm.polls == 3
    assert [(s["name"], s["status"]) for s in steps] == [
        ("Preprocess", "Succeeded"),
        ("Train", "Succeeded"),
        ("CheckQuality", "Succeeded"),
    ]
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.strip()]
    assert sum("Train (Training)" in line for line in lines) == 2  # Executing, then Succeeded
    assert sum("Preprocess (Processing)" in line for line in lines) == 1  # printed once, not per poll


class _Execution:
    """moto's SageMaker client, with the execution's status that moto 5.2.5 does not give (``STATUS``); the
    subclasses add the step listing (``list_pipeline_execution_steps`` raises NotImplementedError there)."""

    STATUS = "Executing"

    def __init__(self, sm):
        self._sm = sm

    def __getattr__(self, name):
        return getattr(self._sm, name)

    def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803 (boto3 argument name)
        return {"PipelineExecutionStatus": self.STATUS}


class _FailsInTrain(_Execution):
    """The execution Failed in Train."""

    STATUS = "Failed"
    REASON = "AlgorithmError: train.py: error: --n-estimators must be >= 1"

    def get_paginator(self, name):
        assert name == "list_pipeline_execution_steps"
        steps = [
            {"StepName": "Preprocess", "StepType": "Processing", "StepStatus": "Succeeded"},
            {
                "StepName": "Train",
                "StepType": "Training",
                "StepStatus": "Failed",
                "FailureReason": self.REASON,
            },
        ]

        return _Pages(steps)


def test_train_aws_failed_step_with_json_names_the_step(monkeypatch):
    with mock_aws():
        target, sm, result, out = _aws_train_json(monkeypatch, _FailsInTrain, 1)
        # the status a local run's failure has (not the execution's own "Failed"), and its keys
        assert out["status"] == "failed" and out["step"] == "Train" and out["error"] == _FailsInTrain.REASON
        assert list(out) == list(training_cmd.result_keys()) and out["registered"] is False
        assert out["pipeline_execution_arn"] and [s["name"] for s in out["steps"]] == ["Preprocess", "Train"]
        assert out["execution_id"] == out["pipeline_execution_arn"].rsplit("/", 1)[-1]
        assert out["steps"][1]["detail"] == _FailsInTrain.REASON
        assert "pipeline execution Failed" in " ".join(result.stderr.split())


def test_train_aws_warns_of_hyperparameters_the_estimator_ignores(monkeypatch, tmp_path):
    with mock_aws():
        target, _ = _aws_pipeline(monkeypatch, buckets=True)
        (tmp_path / "d.csv").write_text("a,target\n1,0\n")
        result = CliRunner().invoke(
            training_cmd.train,
            [
                "--aws",
                "--estimator",
                "random_forest",
                "--hp",
                "C=0.5",
                "--hp",
                "max-iter=50",
                "--hp",
                "n_estimators=30",
                "--data",
                str(tmp_path),
                "--json",
            ],
        )
        assert result.exit_code == 0, result.output
        assert (
            "warning: random_forest ignores --hp C=0.5, --hp max-iter=50 "
            "(it uses n_estimators, max_depth, random_state)" in " ".join(result.stderr.split())
        )
        params = {p["Name"]: p["Value"] for p in json.loads(result.stdout)["parameters"]}
        assert params["NEstimators"] == "30" and "C" not in params and "MaxIter" not in params


def test_no_warning_for_hyperparameters_the_default_estimator_uses(monkeypatch, tmp_path):
    with mock_aws():
        target = _target(None, mode="aws", estimator="logistic_regression")
        _use(monkeypatch, target)
        _create_pipeline(boto3.client("sagemaker", region_name=TEST_REGION), target)
        result = CliRunner().invoke(training_cmd.train, ["--aws", "--hp", "C=0.5", "--json"])
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
        assert {p["Name"]: p["Value"] for p in json.loads(result.stdout)["parameters"]} == {"C": "0.5"}


class _MissesTheGate(_FailsInTrain):
    """As ``_FailsInTrain``, but the execution ended in the quality gate's Fail step."""

    REASON = "not registered: roc_auc 0.81 < threshold 0.9"

    def get_paginator(self, name):
        assert name == "list_pipeline_execution_steps"
        steps = [
            {"StepName": n, "StepType": t, "StepStatus": "Succeeded"}
            for n, t in (
                ("Preprocess", "Processing"),
                ("Train", "Training"),
                ("Evaluate", "Processing"),
                ("CheckQuality", "Condition"),
            )
        ]
        steps.append(
            {
                "StepName": training_cmd.QUALITY_GATE_FAIL_STEP,
                "StepType": "Fail",
                "StepStatus": "Failed",
                "FailureReason": self.REASON,
            }
        )

        return _Pages(steps)


def test_the_gate_fail_step_name_is_the_pipelines():
    definition = json.dumps(_definition("g"))
    assert f'"Name": "{training_cmd.QUALITY_GATE_FAIL_STEP}", "Type": "Fail"' in definition


def test_train_aws_below_threshold_exits_3_like_a_local_run(monkeypatch):
    with mock_aws():
        target, sm = _aws_pipeline(
            monkeypatch, _MissesTheGate, estimator="random_forest", quality_metric="roc_auc"
        )
        args = ["--aws", "--wait", "--hp", "n_estimators=5", "--hp", "C=2"]
        result = CliRunner().invoke(training_cmd.train, [*args, "--json"])
        assert result.exit_code == training_cmd.EXIT_NOT_REGISTERED, result.output
        out = json.loads(result.stdout)
        assert out["status"] == "not_registered" and out["registered"] is False
        assert out["reason"] == _MissesTheGate.REASON and out["estimator"] == "random_forest"
        assert list(out) == list(training_cmd.result_keys())
        # as a local run has them: typed, every one the estimator uses (the execution's definition's defaults)
        assert out["quality_metric"] == "roc_auc"
        assert out["hyperparameters"] == {"n_estimators": 5, "max_depth": 0, "random_state": 42}
        assert out["model_package_arn"] is None and out["error"] is None and out["step"] is None
        # no evaluation report to read here (the step listing names no processing job): the metrics are null,
        # the value and the threshold are the Fail step's
        assert out["metrics"] is None and out["quality_value"] == 0.81 and out["quality_threshold"] == 0.9
        assert out["approval_status"] is None and out["model_version"] is None
        assert "pipeline execution Failed" not in result.stderr
        assert _MissesTheGate.REASON in result.stderr  # the human message on stderr, beside the JSON

        text = CliRunner().invoke(training_cmd.train, args)
        assert text.exit_code == training_cmd.EXIT_NOT_REGISTERED
        assert _MissesTheGate.REASON in text.stdout


EVALUATION = {
    "metrics": {"accuracy": 0.74, "precision": 0.7, "recall": 0.8, "f1": 0.75, "roc_auc": 0.8123},
    "registry_metadata": {"quality_value": "0.8123"},
}


class _MissesTheGateAfterEvaluating(_MissesTheGate):
    """As ``_MissesTheGate``, with the Evaluate step's metadata naming its processing job (as SageMaker lists
    it), a job made in moto whose output ``evaluation`` holds the report."""

    JOB = "pipelines-exec1-Evaluate-abc123"

    def get_paginator(self, name):
        job_arn = f"arn:aws:sagemaker:{TEST_REGION}:123456789012:processing-job/{self.JOB}"
        steps = [dict(s) for s in super().get_paginator(name).steps]
        for s in steps:
            if s["StepName"] == "Evaluate":
                s["Metadata"] = {"ProcessingJob": {"Arn": job_arn}}
        return _Pages(steps)


def _use_sagemaker(monkeypatch, sm) -> None:
    real_client = Target.client
    monkeypatch.setattr(
        Target, "client", lambda self, service: sm if service == "sagemaker" else real_client(self, service)
    )


def _aws_train_json(monkeypatch, fake, exit_code, **target_kwargs):
    """Inside ``mock_aws``: ``train --aws --wait --json`` on ``_aws_pipeline``'s set-up; checks the exit code
    and returns (target, the SageMaker stand-in, the click result, the JSON printed)."""
    target, sm = _aws_pipeline(monkeypatch, fake, **target_kwargs)
    result = CliRunner().invoke(training_cmd.train, ["--aws", "--wait", "--json"])
    assert result.exit_code == exit_code, result.output
    return target, sm, result, json.loads(result.stdout)


def _aws_pipeline(monkeypatch, fake=None, buckets=False, **target_kwargs):
    """Inside ``mock_aws``: an AWS target (``_target``'s keywords), its buckets when asked, and the pipeline
    deployed through ``fake`` (a stand-in around moto's SageMaker client, which the CLI then uses) or, without
    one, through moto's client itself."""
    target = _target(None, mode="aws", **target_kwargs)
    _use(monkeypatch, target)
    if buckets:
        _buckets(target)
    client = boto3.client("sagemaker", region_name=TEST_REGION)
    sm = fake(client) if fake is not None else client
    _create_pipeline(sm, target)
    if fake is not None:
        _use_sagemaker(monkeypatch, sm)
    return target, sm


def test_train_aws_below_threshold_json_carries_the_evaluation_metrics(monkeypatch):
    """The execution ended in the gate's Fail step: the JSON has a local run's keys, the metrics read from the
    report the Evaluate step wrote, the registered fields null; exit 3, the reason on stderr."""
    with mock_aws():
        target, sm = _aws_pipeline(
            monkeypatch, _MissesTheGateAfterEvaluating, estimator="random_forest", quality_metric="roc_auc"
        )
        s3 = target.client("s3")
        s3.create_bucket(Bucket="artifacts")
        prefix = "s3://artifacts/pipeline/exec1/Evaluate/evaluation"
        s3.put_object(
            Bucket="artifacts",
            Key="pipeline/exec1/Evaluate/evaluation/evaluation.json",
            Body=json.dumps(EVALUATION).encode(),
        )
        sm.create_processing_job(
            ProcessingJobName=sm.JOB,
            ProcessingOutputConfig={
                "Outputs": [
                    {
                        "OutputName": "evaluation",
                        "S3Output": {
                            "S3Uri": prefix,
                            "LocalPath": "/opt/ml/processing/evaluation",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
            ProcessingResources={
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.t3.medium", "VolumeSizeInGB": 30}
            },
            AppSpecification={"ImageUri": "img"},
            RoleArn="arn:aws:iam::123456789012:role/p",
        )
        result = CliRunner().invoke(training_cmd.train, ["--aws", "--wait", "--json"])
        assert result.exit_code == training_cmd.EXIT_NOT_REGISTERED, result.output
        out = json.loads(result.stdout)
        assert out["status"] == "not_registered" and out["registered"] is False
        assert out["metrics"] == EVALUATION["metrics"]
        assert out["quality_metric"] == "roc_auc" and out["quality_value"] == 0.8123
        assert out["quality_threshold"] == 0.9 and out["reason"] == _MissesTheGate.REASON
        assert out["artifacts"] == {
            "input_data": "s3://data/input/",  # the definition's InputData default
            "model_data": None,  # no training job to describe here
            "evaluation": f"{prefix}/evaluation.json",
            "baseline": f"{prefix}/baseline.json",
            "inference_sourcedir": None,
        }
        assert out["model_package_arn"] is None and out["model_version"] is None
        assert out["approval_status"] is None
        assert (
            out["pipeline_execution_arn"] and out["steps"][-1]["name"] == training_cmd.QUALITY_GATE_FAIL_STEP
        )
        assert _MissesTheGate.REASON in result.stderr


def _keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_train_aws_data_that_cannot_be_uploaded_is_a_failed_upload_with_json(monkeypatch, tmp_path):
    """As a local run says it: --data that is not a .csv file, or a folder without one, fails the step Upload,
    and --json prints that (exit 1, the message on stderr); nothing is uploaded or started."""
    with mock_aws():
        target, sm = _aws_pipeline(monkeypatch, buckets=True)
        (tmp_path / "notes.txt").write_text("a,target\n1,0\n")
        (tmp_path / "empty").mkdir()
        for data, said in (
            (tmp_path / "notes.txt", "not a .csv file"),
            (tmp_path / "empty", "no CSV files"),
        ):
            result = CliRunner().invoke(training_cmd.train, ["--aws", "--data", str(data), "--json"])
            assert result.exit_code == 1, result.output
            out = json.loads(result.stdout)
            assert out["status"] == "failed" and out["step"] == "Upload" and said in out["error"]
            assert list(out) == list(training_cmd.result_keys()) and out["pipeline_execution_arn"] is None
            assert f"step Upload failed: --data {data}: {said}" in " ".join(result.stderr.split())
        assert _keys(target.client("s3"), target.names.data_bucket) == []
        summaries = sm.list_pipeline_executions(PipelineName=target.names.pipeline_name)
        assert summaries["PipelineExecutionSummaries"] == []

        # a path that does not exist is refused before anything runs, in both modes: no result, as any refusal
        for mode in ("--aws", "--local"):
            result = CliRunner().invoke(
                training_cmd.train, [mode, "--data", str(tmp_path / "nope"), "--json"]
            )
            assert result.exit_code == 1 and result.stdout == ""
            assert "no such file or folder" in result.stderr


def test_train_aws_start_that_fails_prints_json(monkeypatch):
    """The pipeline is not deployed (StartPipelineExecution refuses: ResourceNotFound on AWS, a
    ValidationException in moto): --json prints the failed step and the AWS error, exit 1, and the error on
    stderr."""
    with mock_aws():
        target = _target(None, mode="aws", project_name="not-deployed")
        _use(monkeypatch, target)
        result = CliRunner().invoke(training_cmd.train, ["--aws", "--hp", "C=2", "--json"])
        assert result.exit_code == 1, result.output
        out = json.loads(result.stdout)
        assert out["status"] == "failed" and out["step"] == training_cmd.START_STEP
        assert list(out) == list(training_cmd.result_keys()) and out["execution_id"] is None
        assert out["error"].startswith("AWS ") and target.names.pipeline_name in out["error"]
        assert out["pipeline_execution_arn"] is None
        assert out["parameters"] == [{"Name": "C", "Value": "2.0"}]
        said = f"step {training_cmd.START_STEP} failed: {out['error']}"
        assert said in " ".join(result.stderr.split())


class _CannotFollow(_Execution):
    """moto's SageMaker client, but DescribePipelineExecution is refused (a role without the permission)."""

    def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803 (boto3 argument name)
        from botocore.exceptions import ClientError

        error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
        raise ClientError(error, "DescribePipelineExecution")


def test_train_aws_wait_that_cannot_follow_the_execution_prints_json(monkeypatch):
    with mock_aws():
        target, sm, result, out = _aws_train_json(monkeypatch, _CannotFollow, 1)
        assert out["pipeline_execution_arn"].startswith("arn:") and out["status"] == "unknown"
        assert list(out) == list(training_cmd.result_keys()) and out["step"] is None
        assert out["registered"] is None  # it may still register a model
        assert out["error"] == (
            "cannot follow the execution: AWS AccessDeniedException: not authorized; it may still be running"
        )
        assert out["pipeline_execution_arn"] in " ".join(result.stderr.split())


REGISTERED_METADATA = {  # what the pipeline's RegisterModel step writes (evaluation.json's registry_metadata)
    "n_features": "8",
    "estimator": "random_forest",
    "quality_value": "0.9512",
    "metrics": "accuracy=0.9 precision=0.88 recall=0.86 f1=0.8 roc_auc=0.9512",
    "decision_threshold": "0.5",
    "features_sha256": "ab12cd34",
    "quality_metric": "roc_auc",
    "baseline_uri": "s3://artifacts/pipeline/exec2/Evaluate/evaluation/baseline.json",
    "features_uri": "s3://artifacts/pipeline/exec2/Evaluate/evaluation/features.json",
}


def _register_as_the_pipeline(sm, group: str) -> str:
    """A model package as the pipeline's RegisterModel step creates it; its ARN."""
    described = register_model_package(
        sm,
        {
            "ModelPackageGroupName": group,
            "ModelPackageDescription": "estimator: random_forest",
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "img",
                        "ModelDataUrl": "s3://artifacts/pipeline/train/model.tar.gz",
                        "Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://code/inference_sourcedir"},
                    }
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": "s3://artifacts/pipeline/exec2/Evaluate/evaluation/evaluation.json",
                    }
                }
            },
            "CustomerMetadataProperties": REGISTERED_METADATA,
        },
    )
    return described["ModelPackageArn"]


class _Registers(_Execution):
    """The execution Succeeded; its steps as ListPipelineExecutionSteps lists them (no step type, each step's
    metadata; the RegisterModel step's names the package it created)."""

    STATUS = "Succeeded"

    def __init__(self, sm, package_arn: str):
        super().__init__(sm)
        self.package_arn = package_arn

    def get_paginator(self, name):
        from datetime import UTC, datetime, timedelta

        assert name == "list_pipeline_execution_steps"
        job = f"arn:aws:sagemaker:{TEST_REGION}:123456789012"
        listed = [
            ("Preprocess", {"ProcessingJob": {"Arn": f"{job}:processing-job/pipelines-exec2-preprocess"}}),
            ("Train", {"TrainingJob": {"Arn": f"{job}:training-job/pipelines-exec2-train"}}),
            ("Evaluate", {"ProcessingJob": {"Arn": f"{job}:processing-job/pipelines-exec2-evaluate"}}),
            ("CheckQuality", {"Condition": {"Outcome": "True"}}),
            ("Register", {"RegisterModel": {"Arn": self.package_arn}}),
        ]
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        steps = [
            {
                "StepName": step,
                "StepStatus": "Succeeded",
                "StartTime": t0 + timedelta(minutes=i),
                "EndTime": t0 + timedelta(minutes=i, seconds=30),
                "Metadata": metadata,
            }
            for i, (step, metadata) in enumerate(listed)
        ]

        return _Pages(steps)


def _local_result_json(monkeypatch, registered: bool) -> dict:
    """What ``train --local --json`` prints for a run's result (``run_local_training`` stands in: the
    ``TrainingResult`` it returns is the local definition of the shape)."""
    from trainserve.local import training_runner

    result = training_runner.TrainingResult(
        execution_id="20260101000000-abc123",
        registered=registered,
        estimator="random_forest",
        hyperparameters={"n_estimators": 30, "max_depth": 0, "random_state": 42},
        quality_metric="roc_auc",
        quality_threshold=0.9,
        quality_value=0.95,
        metrics={"accuracy": 0.9, "roc_auc": 0.95},
        # a real run's artifact keys (test_train_local_below_threshold_is_not_registered_exit_3 checks them)
        artifacts=dict.fromkeys(training_cmd.ARTIFACT_KEYS, ""),
        steps=[training_runner.StepReport("Train", "Training", "Succeeded", 1.0, "validation: ...")],
    )
    monkeypatch.setattr(training_runner, "run_local_training", lambda *args, **kwargs: result)
    _use(monkeypatch, _target(None, project_name="registered-test"))
    out = CliRunner().invoke(training_cmd.train, ["--local", "--json"])
    assert out.exit_code == (0 if registered else training_cmd.EXIT_NOT_REGISTERED), out.output
    return json.loads(out.stdout)


def test_train_aws_wait_registered_prints_a_local_runs_result(monkeypatch):
    """An execution that succeeded: the JSON is a local run's result (the same keys, status "registered", not
    the execution's "Succeeded"), with the registered package found from the RegisterModel step's metadata
    and described: its version, ARN, approval status, metrics and quality value; exit 0."""
    local = _local_result_json(monkeypatch, registered=True)
    with mock_aws():
        target = _target(None, mode="aws", project_name="registered-test", quality_metric="roc_auc")
        _use(monkeypatch, target)
        moto_sm = boto3.client("sagemaker", region_name=TEST_REGION)
        package_arn = _register_as_the_pipeline(moto_sm, target.names.model_package_group)
        sm = _Registers(moto_sm, package_arn)
        _create_pipeline(sm, target)
        _use_sagemaker(monkeypatch, sm)
        args = ["--aws", "--wait", "--estimator", "random_forest", "--hp", "n_estimators=30"]
        result = CliRunner().invoke(training_cmd.train, [*args, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)

        assert (
            list(out) == list(local) == list(training_cmd.result_keys())
        )  # the same keys, in the same order
        assert out["status"] == local["status"] == "registered" and out["registered"] is True
        assert out["model_package_arn"] == package_arn and out["model_version"] == 1
        assert out["approval_status"] == "PendingManualApproval"
        assert out["metrics"] == {
            "accuracy": 0.9,
            "precision": 0.88,
            "recall": 0.86,
            "f1": 0.8,
            "roc_auc": 0.9512,
        }
        assert out["quality_metric"] == "roc_auc" and out["quality_value"] == 0.9512
        assert out["quality_threshold"] == 0.9  # the execution's definition's QualityThreshold
        assert out["estimator"] == "random_forest" and out["reason"] is None
        assert out["hyperparameters"] == {"n_estimators": 30, "max_depth": 0, "random_state": 42}
        assert out["pipeline_execution_arn"].startswith("arn:aws:sagemaker:")
        assert out["execution_id"] == out["pipeline_execution_arn"].rsplit("/", 1)[-1]
        assert {p["Name"]: p["Value"] for p in out["parameters"]} == {
            "Estimator": "random_forest",
            "NEstimators": "30",
        }
        assert isinstance(out["seconds"], float)
        evaluation = "s3://artifacts/pipeline/exec2/Evaluate/evaluation"
        assert out["artifacts"] == {
            "input_data": "s3://data/input/",
            "model_data": "s3://artifacts/pipeline/train/model.tar.gz",
            "evaluation": f"{evaluation}/evaluation.json",
            "baseline": f"{evaluation}/baseline.json",
            "inference_sourcedir": "s3://code/inference_sourcedir",
        }
        assert list(out["artifacts"]) == list(training_cmd.ARTIFACT_KEYS)
        # the steps as a local run reports them; the type from each step's metadata (the listing has none)
        assert all(list(s) == list(local["steps"][0]) for s in out["steps"])
        assert [(s["name"], s["type"], s["status"], s["seconds"]) for s in out["steps"]] == [
            ("Preprocess", "Processing", "Succeeded", 30.0),
            ("Train", "Training", "Succeeded", 30.0),
            ("Evaluate", "Processing", "Succeeded", 30.0),
            ("CheckQuality", "Condition", "Succeeded", 30.0),
            ("Register", "RegisterModel", "Succeeded", 30.0),
        ]
        assert result.stderr == ""  # nothing went unread

        # without --json: the steps and what was registered, on stdout
        text = CliRunner().invoke(training_cmd.train, args)
        assert text.exit_code == 0, text.output
        said = " ".join(text.stdout.split())
        assert f"registered {target.names.model_package_group} version 1 (PendingManualApproval)" in said
        assert "trainserve models approve 1" in said and "roc_auc 0.9512" in said


def test_train_aws_not_registered_has_a_local_runs_keys(monkeypatch):
    """Below the threshold, both modes print the same keys (status not_registered, exit 3)."""
    local = _local_result_json(monkeypatch, registered=False)
    with mock_aws():
        target, sm, result, out = _aws_train_json(
            monkeypatch, _MissesTheGate, training_cmd.EXIT_NOT_REGISTERED, project_name="registered-test"
        )
        assert list(out) == list(local) and out["status"] == local["status"] == "not_registered"
        assert list(out["artifacts"]) == list(training_cmd.ARTIFACT_KEYS)
        assert all(list(s) == list(local["steps"][0]) for s in out["steps"])


def test_train_aws_registered_package_that_cannot_be_read_is_still_registered(monkeypatch):
    """The execution succeeded but its package cannot be described (here: the RegisterModel step names one
    that does not exist): still status registered, exit 0, the version from the ARN, the rest null, and a
    warning on stderr."""
    with mock_aws():
        target = _target(None, mode="aws", project_name="unreadable-test")
        _use(monkeypatch, target)
        missing = f"arn:aws:sagemaker:{TEST_REGION}:123456789012:model-package/unreadable-test-models/7"
        sm = _Registers(boto3.client("sagemaker", region_name=TEST_REGION), missing)
        _create_pipeline(sm, target)
        _use_sagemaker(monkeypatch, sm)
        result = CliRunner().invoke(training_cmd.train, ["--aws", "--wait", "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert list(out) == list(training_cmd.result_keys())
        assert (
            out["status"] == "registered"
            and out["model_package_arn"] == missing
            and out["model_version"] == 7
        )
        assert out["approval_status"] is None and out["metrics"] is None and out["quality_value"] is None
        assert f"cannot describe model package {missing}" in " ".join(result.stderr.split())


class _Stopped(_FailsInTrain):
    """The execution was stopped in Train: no step failed."""

    def describe_pipeline_execution(self, PipelineExecutionArn):  # noqa: N803 (boto3 argument name)
        return {"PipelineExecutionStatus": "Stopped"}

    def get_paginator(self, name):
        steps = [
            {
                "StepName": "Preprocess",
                "StepStatus": "Succeeded",
                "Metadata": {"ProcessingJob": {"Arn": "a/p"}},
            },
            {"StepName": "Train", "StepStatus": "Stopped", "Metadata": {"TrainingJob": {"Arn": "a/t"}}},
        ]

        return _Pages(steps)


def test_train_aws_stopped_execution_is_a_failed_run(monkeypatch):
    with mock_aws():
        target, sm, result, out = _aws_train_json(monkeypatch, _Stopped, 1)
        assert list(out) == list(training_cmd.result_keys())
        assert out["status"] == "failed" and out["step"] == "Train"
        assert out["error"] == "the pipeline execution Stopped"
        assert "pipeline execution Stopped" in " ".join(result.stderr.split())
