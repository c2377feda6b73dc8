"""TrainingStack: model registry, the embedded pipeline definition, the IAM roles and the optional schedule."""

from __future__ import annotations

import json
import tarfile

import pytest
from cfn_helpers import as_list, only, resolve_join, resources

from stacks.config import load

pytestmark = pytest.mark.xdist_group("synth")


@pytest.fixture(scope="module")
def training(cloud_assembly):
    return cloud_assembly.stack("Training")


@pytest.fixture(scope="module")
def definition(training):
    body = only(training, "AWS::SageMaker::Pipeline")["Properties"]["PipelineDefinition"][
        "PipelineDefinitionBody"
    ]
    return json.loads(resolve_join(body))


def _steps(definition):
    """Every step, nested condition branches included, by name."""
    out = {}
    for step in definition["Steps"]:
        out[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for nested in step.get("Arguments", {}).get(branch, []):
                out[nested["Name"]] = nested
    return out


def _gets(value):
    """Every ``{"Get": path}`` reference inside a step's arguments."""
    if isinstance(value, dict):
        if set(value) == {"Get"}:
            return [value["Get"]]
        return [g for v in value.values() for g in _gets(v)]
    if isinstance(value, list):
        return [g for v in value for g in _gets(v)]
    return []


def test_model_package_group_is_named_from_config(training, project_root):
    config = load(project_root)
    group = only(training, "AWS::SageMaker::ModelPackageGroup")
    assert group["Properties"]["ModelPackageGroupName"] == config.model_package_group_name
    assert training["Outputs"]["ModelPackageGroup"]["Value"] == config.model_package_group_name
    # the registry (audit trail, no cost) outlives `cdk destroy`
    assert group["DeletionPolicy"] == "Retain" and group["UpdateReplacePolicy"] == "Retain"


def test_pipeline_runs_as_its_role_and_waits_for_the_group(training):
    pipeline = only(training, "AWS::SageMaker::Pipeline")
    role_id = pipeline["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert role_id.startswith("PipelineRole")
    assert pipeline["Properties"]["PipelineName"] == "trainserve-training"
    group_id = next(iter(resources(training, "AWS::SageMaker::ModelPackageGroup")))
    assert group_id in as_list(pipeline["DependsOn"])
    assert training["Outputs"]["PipelineName"]["Value"] == "trainserve-training"


def test_definition_version_and_parameters(definition, project_root):
    config = load(project_root)
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
    assert params["QualityThreshold"]["Type"] == "Float"
    assert params["QualityThreshold"]["DefaultValue"] == config.quality_threshold
    assert params["DecisionThreshold"]["DefaultValue"] == config.decision_threshold  # Evaluate labels at it
    assert params["TrainingInstanceType"]["DefaultValue"] == config.training_instance_type
    assert params["Estimator"]["DefaultValue"] == config.estimator
    assert params["InputData"]["DefaultValue"] == "s3://TOKEN/input/"


def test_steps_run_preprocess_train_evaluate_then_gate_register(definition):
    top = [(s["Name"], s["Type"]) for s in definition["Steps"]]
    assert top == [
        ("Preprocess", "Processing"),
        ("Train", "Training"),
        ("Evaluate", "Processing"),
        ("CheckQuality", "Condition"),
    ]
    gate = _steps(definition)["CheckQuality"]["Arguments"]
    assert [s["Type"] for s in gate["IfSteps"]] == ["RegisterModel"]
    assert all(s["Type"] != "RegisterModel" for s in gate.get("ElseSteps", []))
    (condition,) = gate["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["RightValue"] == {"Get": "Parameters.QualityThreshold"}
    assert condition["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
    }


def test_data_dependencies_between_steps(definition):
    steps = _steps(definition)
    train_inputs = _gets(steps["Train"]["Arguments"]["InputDataConfig"])
    assert train_inputs and all(g.startswith("Steps.Preprocess.") for g in train_inputs)
    evaluate_inputs = _gets(steps["Evaluate"]["Arguments"]["ProcessingInputs"])
    assert "Steps.Train.ModelArtifacts.S3ModelArtifacts" in evaluate_inputs
    register = steps[steps["CheckQuality"]["Arguments"]["IfSteps"][0]["Name"]]["Arguments"]
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"
    }
    assert any(g.startswith("Steps.Evaluate.") for g in _gets(register["ModelMetrics"]))


def test_registered_models_wait_for_manual_approval(definition):
    register = _steps(definition)["CheckQuality"]["Arguments"]["IfSteps"][0]["Arguments"]
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["ModelPackageGroupName"] == "trainserve-models"
    container = register["InferenceSpecification"]["Containers"][0]
    assert container["Image"].endswith("/sagemaker-scikit-learn:1.2-1-cpu-py3")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"


def test_image_uri_is_resolved_per_region_from_the_mapping(training):
    pipeline = only(training, "AWS::SageMaker::Pipeline")
    parts = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Join"][1]
    lookups = [p for p in parts if isinstance(p, dict) and "Fn::FindInMap" in p]
    assert lookups, "the image account must come from Fn::FindInMap"
    mapping_name = lookups[0]["Fn::FindInMap"][0]
    assert lookups[0]["Fn::FindInMap"][1] == {"Ref": "AWS::Region"}
    assert "us-east-1" in training["Mappings"][mapping_name]


def _role_statements(template, prefix):
    roles = [k for k in resources(template, "AWS::IAM::Role") if k.startswith(prefix)]
    assert len(roles) == 1, roles
    role_id = roles[0]
    statements = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return role_id, statements


def _trust(template, role_id):
    """The one statement of a role's trust policy."""
    (statement,) = resources(template, "AWS::IAM::Role")[role_id]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"
    ]
    return statement


@pytest.mark.parametrize("role", ["PipelineRole", "ModelExecutionRole"])
def test_roles_are_assumed_by_sagemaker_with_no_managed_policies(training, role):
    role_id, _ = _role_statements(training, role)
    assert "ManagedPolicyArns" not in resources(training, "AWS::IAM::Role")[role_id]["Properties"]
    assert _trust(training, role_id)["Principal"] == {"Service": "sagemaker.amazonaws.com"}


def _account_arn(service, resource):
    """How ``arn:<partition>:<service>:<region>:<account>:<resource>`` of pseudo parameters synthesizes."""
    parts = ["arn:", {"Ref": "AWS::Partition"}, f":{service}:", {"Ref": "AWS::Region"}, ":"]
    return {"Fn::Join": ["", [*parts, {"Ref": "AWS::AccountId"}, f":{resource}"]]}


@pytest.mark.parametrize("role", ["PipelineRole", "ModelExecutionRole"])
def test_sagemaker_may_assume_the_roles_only_for_this_accounts_resources(training, role):
    """Confused-deputy protection as the SageMaker guide documents it for pipelines, jobs and inference."""
    role_id, _ = _role_statements(training, role)
    assert _trust(training, role_id)["Condition"] == {
        "ArnLike": {"aws:SourceArn": _account_arn("sagemaker", "*")}
    }


def test_pipeline_role_passes_only_itself_to_sagemaker(training):
    role_id, statements = _role_statements(training, "PipelineRole")
    passes = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert len(passes) == 1
    assert as_list(passes[0]["Resource"]) == [{"Fn::GetAtt": [role_id, "Arn"]}]
    assert passes[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_pipeline_role_is_scoped_to_the_projects_resources(training):
    _, statements = _role_statements(training, "PipelineRole")
    for s in statements:
        assert all("*" not in a for a in as_list(s["Action"])), s
        text = json.dumps(s["Resource"])
        actions = as_list(s["Action"])
        if any(a.startswith("sagemaker:Create") for a in actions):
            assert "pipelines-*" in text or "trainserve-models" in text, s
        if any(a.startswith("s3:") for a in actions):
            assert (
                "TrainserveData-" in text or "cdk-" in text or "AssetParameters" in text or "Fn::Sub" in text
            ), s
        if any(a.startswith("kms:") for a in actions):
            assert "ImportValue" in text, s
        if any(a.startswith("logs:") for a in actions):
            assert "log-group:/aws/sagemaker/" in text, s
        if s["Resource"] == "*":
            assert set(actions) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}, s
            if "cloudwatch:PutMetricData" in actions:
                assert "cloudwatch:namespace" in json.dumps(s["Condition"])


def _s3_grants(statements, export):
    """action -> resources (rendered, the bucket as ``BUCKET``) of the statements' S3 grants on the bucket
    exported as ``export``."""
    found: dict[str, set[str]] = {}
    for s in statements:
        for resource in as_list(s["Resource"]):
            if f'"{export}"' not in json.dumps(resource):
                continue
            for action in as_list(s["Action"]):
                if action.startswith("s3:"):
                    found.setdefault(action, set()).add(resolve_join(resource, "BUCKET"))
    return found


def test_pipeline_role_reads_only_the_pipelines_own_outputs_of_the_artifacts_bucket(training):
    """The steps read the artifacts bucket only for each other's outputs, all under pipeline/ (below): no
    grant on the rest of the bucket."""
    _, statements = _role_statements(training, "PipelineRole")
    artifacts = _s3_grants(statements, "TrainserveData-ArtifactsBucketArn")
    assert artifacts["s3:GetObject"] == {"BUCKET/pipeline/*"}
    assert artifacts["s3:ListBucket"] == {"BUCKET"}
    assert artifacts["s3:PutObject"] == {"BUCKET/pipeline/*"}
    assert all(r in ("BUCKET", "BUCKET/pipeline/*") for grants in artifacts.values() for r in grants), (
        artifacts
    )
    # the training input is any key InputData names in the data bucket
    assert _s3_grants(statements, "TrainserveData-DataBucketArn")["s3:GetObject"] == {"BUCKET/*"}


S3_LOCATION_KEYS = ("S3Uri", "S3OutputPath", "sagemaker_submit_directory")


def _s3_uris(value, keys=S3_LOCATION_KEYS):
    """Every S3 location (``S3Uri``, ``S3OutputPath``, the training code's directory) in a step's arguments."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k in keys] + [
            u for v in value.values() for u in _s3_uris(v, keys)
        ]
    if isinstance(value, list):
        return [u for v in value for u in _s3_uris(v, keys)]
    return []


def test_steps_write_under_pipeline_and_read_only_input_data_code_and_step_outputs(definition):
    """What makes the pipeline role's artifacts grant enough: every output goes under
    ``s3://<artifacts>/pipeline/<execution id>/<step>``, and every input is the InputData parameter (data
    bucket), a code asset (CDK assets bucket) or an earlier step's output."""
    steps = _steps(definition)
    outputs = [
        *[o["S3Output"]["S3Uri"] for name in ("Preprocess", "Evaluate") for o in _outputs(steps[name])],
        steps["Train"]["Arguments"]["OutputDataConfig"]["S3OutputPath"],
    ]
    assert len(outputs) == 6
    for uri in outputs:
        values = uri["Std:Join"]["Values"]
        assert resolve_join(values[0]) == "s3://TOKEN/pipeline", uri
        assert values[1] == {"Get": "Execution.PipelineExecutionId"}, uri
    inputs = [u for name in ("Preprocess", "Train", "Evaluate") for u in _s3_uris(steps[name]["Arguments"])]
    inputs = [u for u in inputs if u not in outputs]
    # Preprocess: data, code; Train: train, validation, source dir; Evaluate: model, test, validation, code
    assert len(inputs) == 9
    for uri in inputs:
        if isinstance(uri, dict):
            assert uri == {"Get": "Parameters.InputData"} or uri["Get"].startswith("Steps."), uri
        else:
            assert uri.startswith("s3://cdk-") and "-assets-" in uri, uri


def _outputs(step):
    return step["Arguments"]["ProcessingOutputConfig"]["Outputs"]


def test_model_execution_role_reads_artifacts_and_writes_only_data_capture(training):
    _, statements = _role_statements(training, "ModelExecutionRole")
    writes = [s for s in statements if "s3:PutObject" in as_list(s["Action"])]
    assert len(writes) == 1
    assert "/data-capture/*" in json.dumps(writes[0]["Resource"])
    assert not any("iam:PassRole" in as_list(s["Action"]) for s in statements)
    assert training["Outputs"]["ModelExecutionRoleArn"]["Value"]["Fn::GetAtt"][0].startswith(
        "ModelExecutionRole"
    )


def test_no_schedule_unless_configured(training):
    assert resources(training, "AWS::Scheduler::Schedule") == {}


def test_schedule_starts_the_pipeline_with_a_scoped_role(variant_assembly):
    training = variant_assembly.stack("Training")
    schedule = only(training, "AWS::Scheduler::Schedule")["Properties"]
    assert schedule["ScheduleExpression"] == "rate(7 days)"
    target = schedule["Target"]
    assert "pipeline/trainserve-training" in json.dumps(target["Arn"])
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    _, statements = _role_statements(training, role_id[:-8])
    assert [as_list(s["Action"]) for s in statements] == [["sagemaker:StartPipelineExecution"]]
    assert "pipeline/trainserve-training" in json.dumps(statements[0]["Resource"])
    trust = _trust(training, role_id)
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_steps_run_the_projects_code_assets(cloud_assembly, definition, project_root):
    """Each code URI in the definition is a file asset of the stack holding the project's own sources."""
    manifest = json.loads((cloud_assembly.outdir / "TrainserveTraining.assets.json").read_text())
    files = {}
    for asset in manifest["files"].values():
        (destination,) = asset["destinations"].values()
        files[destination["objectKey"]] = cloud_assembly.outdir / asset["source"]["path"]

    def asset_for(uri):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        assert bucket.startswith("cdk-") and "-assets-" in bucket, uri  # the bootstrap assets bucket
        return files[key]

    steps = _steps(definition)
    for step, script in (("Preprocess", "preprocess.py"), ("Evaluate", "evaluate.py")):
        (code,) = [i for i in steps[step]["Arguments"]["ProcessingInputs"] if i["InputName"] == "code"]
        assert (
            asset_for(code["S3Input"]["S3Uri"]).read_bytes()
            == (project_root / "training" / script).read_bytes()
        )
    train_dir = asset_for(steps["Train"]["Arguments"]["HyperParameters"]["sagemaker_submit_directory"])
    with tarfile.open(train_dir) as tar:
        assert "train.py" in tar.getnames()
    register = steps["CheckQuality"]["Arguments"]["IfSteps"][0]["Arguments"]
    inference_dir = asset_for(
        register["InferenceSpecification"]["Containers"][0]["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"]
    )
    with tarfile.open(inference_dir) as tar:
        assert "inference.py" in tar.getnames()
