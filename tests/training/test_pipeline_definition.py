"""The pipeline definition: steps, data dependencies, the quality gate, registration, tokens untouched."""

from __future__ import annotations

import json

import pytest

from training import pipeline_definition as pdef

TOKENS = {
    "role_arn": "${Token[TOKEN.101]}",
    "model_package_group_name": "${Token[TOKEN.102]}",
    "training_image_uri": "${Token[TOKEN.103]}.dkr.ecr.${Token[AWS.Region.7]}.${Token[AWS.URLSuffix.9]}/x:1",
    "inference_image_uri": "${Token[TOKEN.104]}",
    "artifacts_s3_prefix": "s3://${Token[TOKEN.105]}/pipeline",
    "kms_key_id": "${Token[TOKEN.106]}",
}
CODE = {
    "preprocess": "s3://${Token[TOKEN.201]}/p.py",
    "evaluate": "s3://${Token[TOKEN.202]}/e.py",
    "train_sourcedir": "s3://${Token[TOKEN.203]}/t.tar.gz",
    "inference_sourcedir": "s3://${Token[TOKEN.204]}/i.tar.gz",
}
DEFAULTS = {
    "input_data_uri": "s3://${Token[TOKEN.301]}/input/",
    "training_instance_type": "${Token[TOKEN.302]}",
    "processing_instance_type": "ml.t3.medium",
    "estimator": "random_forest",
    "quality_metric": "f1",
    "quality_threshold": 0.85,
    "n_estimators": 250,
}


@pytest.fixture(scope="module")
def definition():
    return pdef.build_pipeline_definition(**TOKENS, code=CODE, defaults=DEFAULTS)


def _steps(definition):
    top = {s["Name"]: s for s in definition["Steps"]}
    for s in definition["Steps"]:
        for branch in ("IfSteps", "ElseSteps"):
            for nested in s["Arguments"].get(branch, []):
                top[nested["Name"]] = nested
    return top


def test_is_json_with_version_and_parameters(definition):
    assert json.loads(json.dumps(definition)) == definition
    assert definition["Version"] == "2020-12-01"
    params = {p["Name"]: p for p in definition["Parameters"]}
    for name in (
        "InputData",
        "TrainingInstanceType",
        "ProcessingInstanceType",
        "Estimator",
        "QualityThreshold",
    ):
        assert name in params
    assert params["QualityThreshold"] == {"Name": "QualityThreshold", "Type": "Float", "DefaultValue": 0.85}
    assert params["Estimator"]["DefaultValue"] == "random_forest"
    assert params["NEstimators"] == {"Name": "NEstimators", "Type": "Integer", "DefaultValue": 250}
    assert params["C"]["DefaultValue"] == 1.0  # builder default when not given
    assert params["DecisionThreshold"] == {"Name": "DecisionThreshold", "Type": "Float", "DefaultValue": 0.5}


def test_decision_threshold_default_and_override_reach_evaluate():
    definition = pdef.build_pipeline_definition(
        **TOKENS, code=CODE, defaults={**DEFAULTS, "decision_threshold": 0.7}
    )
    params = pdef.pipeline_parameters(definition)
    assert params["DecisionThreshold"] == 0.7
    ctx = pdef.ExecutionContext(
        parameters=pdef.pipeline_parameters(definition, {"DecisionThreshold": "0.3"}), execution={}
    )
    evaluate = _steps(definition)["Evaluate"]
    resolved = pdef.resolve(evaluate["Arguments"]["AppSpecification"]["ContainerArguments"], ctx)
    assert resolved == ["--quality-metric", "f1", "--decision-threshold", "0.3"]


def test_step_types_and_order(definition):
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        ("Preprocess", "Processing"),
        ("Train", "Training"),
        ("Evaluate", "Processing"),
        ("CheckQuality", "Condition"),
    ]
    plan = pdef.local_plan(definition)
    assert [p.name for p in plan] == ["Preprocess", "Train", "Evaluate", "CheckQuality"]
    assert plan[1].depends_on == ["Preprocess"]
    assert plan[2].depends_on == ["Preprocess", "Train"]
    assert plan[3].depends_on == ["Evaluate"]


def test_preprocess_runs_the_script_on_the_input_data(definition):
    args = _steps(definition)["Preprocess"]["Arguments"]
    assert args["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/processing/input/code/preprocess.py",
    ]
    inputs = {i["InputName"]: i["S3Input"] for i in args["ProcessingInputs"]}
    assert inputs["data"]["S3Uri"] == {"Get": "Parameters.InputData"}
    assert inputs["code"]["S3Uri"] == CODE["preprocess"]
    assert inputs["code"]["LocalPath"] == "/opt/ml/processing/input/code"
    outputs = {o["OutputName"]: o["S3Output"] for o in args["ProcessingOutputConfig"]["Outputs"]}
    assert set(outputs) == {"train", "validation", "test", "schema"}
    assert outputs["train"]["LocalPath"] == "/opt/ml/processing/train"
    assert outputs["train"]["S3Uri"] == {
        "Std:Join": {
            "On": "/",
            "Values": [
                TOKENS["artifacts_s3_prefix"],
                {"Get": "Execution.PipelineExecutionId"},
                "Preprocess",
                "train",
            ],
        }
    }
    assert args["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {
        "Get": "Parameters.ProcessingInstanceType"
    }


def test_train_is_script_mode_fed_by_preprocess(definition):
    args = _steps(definition)["Train"]["Arguments"]
    hps = args["HyperParameters"]
    assert hps["sagemaker_program"] == "train.py"
    assert hps["sagemaker_submit_directory"] == CODE["train_sourcedir"]
    assert hps["estimator"] == {"Get": "Parameters.Estimator"}
    assert hps["n_estimators"] == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.NEstimators"}]}}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in args["InputDataConfig"]}
    assert channels == {
        "train": {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"},
        "validation": {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['validation'].S3Output.S3Uri"},
    }
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert args["AlgorithmSpecification"]["TrainingImage"] == TOKENS["training_image_uri"]


def test_evaluate_reads_the_model_and_the_test_split(definition):
    step = _steps(definition)["Evaluate"]
    inputs = {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/model"
    assert inputs["test"]["S3Uri"] == {
        "Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"
    }
    assert inputs["validation"]["S3Uri"] == {
        "Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['validation'].S3Output.S3Uri"
    }
    assert inputs["validation"]["LocalPath"] == "/opt/ml/processing/validation"
    assert step["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]
    assert step["Arguments"]["AppSpecification"]["ContainerArguments"] == [
        "--quality-metric",
        "f1",
        "--decision-threshold",
        {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.DecisionThreshold"}]}},
    ]


def test_quality_gate_compares_the_metric_with_the_threshold_parameter(definition):
    check = _steps(definition)["CheckQuality"]["Arguments"]
    assert check["Conditions"] == [
        {
            "Type": "GreaterThanOrEqualTo",
            "LeftValue": {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
                    "Path": "metrics.f1",
                }
            },
            "RightValue": {"Get": "Parameters.QualityThreshold"},
        }
    ]
    assert [s["Name"] for s in check["IfSteps"]] == ["Register"]
    assert [(s["Name"], s["Type"]) for s in check["ElseSteps"]] == [("QualityGateFailed", "Fail")]


def test_register_is_pending_manual_approval_with_metrics(definition):
    args = _steps(definition)["Register"]["Arguments"]
    assert args["ModelApprovalStatus"] == "PendingManualApproval"
    assert args["ModelPackageGroupName"] == TOKENS["model_package_group_name"]
    container = args["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == TOKENS["inference_image_uri"]
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == CODE["inference_sourcedir"]
    assert args["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv", "application/json"]
    assert args["InferenceSpecification"]["SupportedResponseMIMETypes"] == ["application/json"]
    stats = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["ContentType"] == "application/json"
    assert stats["S3Uri"]["Std:Join"]["Values"][-1] == "evaluation.json"
    meta = args["CustomerMetadataProperties"]
    assert set(meta) == {
        "n_features",
        "estimator",
        "quality_metric",
        "quality_value",
        "metrics",
        "decision_threshold",
        "baseline_uri",
        "features_uri",
        "features_sha256",
    }
    assert meta["features_sha256"]["Std:JsonGet"]["Path"] == "registry_metadata.features_sha256"
    assert meta["quality_metric"] == "f1"
    assert meta["metrics"]["Std:JsonGet"]["Path"] == "registry_metadata.metrics"
    assert meta["features_uri"]["Std:Join"]["Values"][-1] == "features.json"
    assert meta["baseline_uri"]["Std:Join"]["Values"][:-1] == meta["features_uri"]["Std:Join"]["Values"][:-1]


def test_tokens_pass_through_untouched(definition):
    text = json.dumps(definition)
    for value in [
        *TOKENS.values(),
        *CODE.values(),
        DEFAULTS["input_data_uri"],
        DEFAULTS["training_instance_type"],
    ]:
        assert json.dumps(value) in text
    args = _steps(definition)["Train"]["Arguments"]
    assert args["OutputDataConfig"]["KmsKeyId"] == TOKENS["kms_key_id"]
    assert args["RoleArn"] == TOKENS["role_arn"]


def test_no_kms_key_means_no_kms_fields():
    definition = pdef.build_pipeline_definition(**{**TOKENS, "kms_key_id": ""}, code=CODE, defaults=DEFAULTS)
    assert "KmsKeyId" not in json.dumps(definition)


def test_missing_inputs_are_named():
    with pytest.raises(ValueError, match="code is missing evaluate"):
        pdef.build_pipeline_definition(
            **TOKENS, code={k: v for k, v in CODE.items() if k != "evaluate"}, defaults=DEFAULTS
        )
    with pytest.raises(ValueError, match="defaults is missing quality_threshold"):
        pdef.build_pipeline_definition(
            **TOKENS, code=CODE, defaults={k: v for k, v in DEFAULTS.items() if k != "quality_threshold"}
        )


# -- running a definition: expressions, conditions, parameters -------------------------------------------


def _ctx(definition, **overrides):
    return pdef.ExecutionContext(
        parameters=pdef.pipeline_parameters(definition, overrides),
        execution={"PipelineExecutionId": "exec1"},
        properties={"Evaluate": {"ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri": "s3://b/e"}},
        property_files={
            "Evaluate": {
                "EvaluationReport": {"metrics": {"f1": 0.8}, "registry_metadata": {"quality_value": "0.8"}}
            }
        },
    )


def test_condition_outcome_follows_the_threshold(definition):
    check = _steps(definition)["CheckQuality"]
    assert pdef.condition_outcome(check, _ctx(definition, QualityThreshold="0.75")) is True
    assert pdef.condition_outcome(check, _ctx(definition, QualityThreshold=0.8)) is True
    assert pdef.condition_outcome(check, _ctx(definition)) is False  # default 0.85 > 0.8


def test_fail_message_names_metric_value_and_threshold(definition):
    message = pdef.resolve(
        _steps(definition)["QualityGateFailed"]["Arguments"]["ErrorMessage"], _ctx(definition)
    )
    assert message == "not registered: f1 0.8 < threshold 0.85"


def test_resolve_join_and_missing_step():
    ctx = pdef.ExecutionContext(parameters={"X": 3}, execution={"PipelineExecutionId": "e"})
    assert (
        pdef.resolve(
            pdef.join(["a", {"Get": "Parameters.X"}, {"Get": "Execution.PipelineExecutionId"}], "/"), ctx
        )
        == "a/3/e"
    )
    with pytest.raises(pdef.DefinitionError, match="step Train has not run"):
        pdef.resolve({"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}, ctx)


def test_parameters_are_typed_and_checked(definition):
    values = pdef.pipeline_parameters(definition, {"MaxIter": "200", "C": "0.5"})
    assert values["MaxIter"] == 200 and values["C"] == 0.5
    with pytest.raises(pdef.DefinitionError, match="MaxIter must be integer"):
        pdef.pipeline_parameters(definition, {"MaxIter": "lots"})
    with pytest.raises(pdef.DefinitionError, match="unknown pipeline parameter 'Nope'"):
        pdef.pipeline_parameters(definition, {"Nope": 1})
    assert pdef.parameter_name_for("max-iter") == pdef.parameter_name_for("max_iter") == "MaxIter"
    with pytest.raises(pdef.DefinitionError, match="unknown hyperparameter 'gamma'"):
        pdef.parameter_name_for("gamma")


def test_plan_rejects_cycles_and_unknown_steps():
    a = {"Name": "A", "Type": "Processing", "Arguments": {"x": {"Get": "Steps.B.Foo"}}}
    b = {"Name": "B", "Type": "Processing", "Arguments": {"x": {"Get": "Steps.A.Foo"}}}
    with pytest.raises(pdef.DefinitionError, match="circular"):
        pdef.local_plan({"Steps": [a, b]})
    with pytest.raises(pdef.DefinitionError, match="unknown steps"):
        pdef.local_plan({"Steps": [a]})
    c = {"Name": "C", "Type": "Processing", "Arguments": {}, "DependsOn": ["D"]}
    d = {"Name": "D", "Type": "Processing", "Arguments": {}}
    assert [p.name for p in pdef.local_plan({"Steps": [c, d]})] == ["D", "C"]
