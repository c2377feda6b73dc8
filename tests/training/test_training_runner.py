"""The local training runner against a moto server: train → evaluate → gate → register, artifacts in S3."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from stacks.config import Config
from training.evaluate import features_digest
from training.pipeline_definition import DefinitionError
from trainserve.local.training_runner import TrainingError, run_local_training, sklearn_image_uri
from trainserve.registry import list_model_versions, parse_metrics
from trainserve.target import Names, Target

TEST_REGION = "us-east-1"


def _target(url: str, **config) -> Target:
    cfg = Config.from_mapping(config)
    target = Target(
        mode="local", region=TEST_REGION, config=cfg, names=Names.local(cfg), aws_endpoint_url=url
    )
    s3 = target.client("s3")
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for bucket in (target.names.data_bucket, target.names.artifacts_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    return target


def _read_s3(target: Target, uri: str) -> bytes:
    bucket, _, key = uri[5:].partition("/")
    return target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def trained(moto_url):
    target = _target(moto_url)
    events = []
    result = run_local_training(target, progress=lambda step, state, detail: events.append((step, state)))
    return target, result, events


def test_registers_a_pending_model_with_metrics(trained):
    target, result, _ = trained
    assert result.registered, result.reason
    assert result.status == "registered" and result.reason is None
    assert result.estimator == "logistic_regression" and result.model_version == 1
    assert result.approval_status == "PendingManualApproval"
    assert result.quality_metric == "roc_auc" and result.quality_value >= 0.9
    sm = target.client("sagemaker")
    described = sm.describe_model_package(ModelPackageName=result.model_package_arn)
    assert described["ModelPackageGroupName"] == target.names.model_package_group
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageDescription"] == "estimator: logistic_regression"
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == sklearn_image_uri(TEST_REGION, "1.2-1", "inference")
    assert container["ModelDataUrl"] == result.artifacts["model_data"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == result.artifacts["inference_sourcedir"]
    assert described["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv", "application/json"]
    # moto 5.2.5 stores ModelMetrics and CustomerMetadataProperties as given.
    stats = described["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats == {"ContentType": "application/json", "S3Uri": result.artifacts["evaluation"]}
    props = described["CustomerMetadataProperties"]
    assert set(props) == {
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
    assert all(isinstance(v, str) for v in props.values())
    assert int(props["n_features"]) == 30
    bucket, key = props["features_uri"].removeprefix("s3://").split("/", 1)
    features = json.loads(target.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert props["features_sha256"] == features_digest(
        features["feature_names"]
    )  # what the controller compares
    assert (
        float(props["decision_threshold"]) == target.config.decision_threshold
    )  # the configured one reaches Evaluate
    assert props["estimator"] == "logistic_regression" and props["quality_metric"] == "roc_auc"
    assert parse_metrics(props["metrics"])["roc_auc"] == pytest.approx(result.metrics["roc_auc"], abs=1e-6)
    assert float(props["quality_value"]) == pytest.approx(result.quality_value, abs=1e-6)
    assert props["baseline_uri"] == result.artifacts["baseline"]


def test_artifacts_are_in_s3(trained):
    target, result, _ = trained
    assert result.artifacts["model_data"].startswith(f"s3://{target.names.artifacts_bucket}/pipeline/")
    with tarfile.open(fileobj=io.BytesIO(_read_s3(target, result.artifacts["model_data"]))) as tar:
        assert sorted(tar.getnames()) == ["model.joblib", "schema.json"]
        schema = json.load(tar.extractfile("schema.json"))
    assert schema["label"] == "target" and schema["classes"] == [0, 1] and len(schema["feature_names"]) == 30
    evaluation = json.loads(_read_s3(target, result.artifacts["evaluation"]))
    assert evaluation["metrics"] == pytest.approx(result.metrics)
    assert "confusion_matrix" in evaluation["binary_classification_metrics"]
    baseline = json.loads(_read_s3(target, result.artifacts["baseline"]))
    assert set(baseline) == {"score", "features", "positive_rate", "n"}
    assert baseline["n"] > evaluation["n_test"]  # the validation rows too
    with tarfile.open(fileobj=io.BytesIO(_read_s3(target, result.artifacts["inference_sourcedir"]))) as tar:
        assert "inference.py" in tar.getnames()
    assert result.artifacts["input_data"].startswith(f"s3://{target.names.data_bucket}/training-data/")


def test_steps_ran_in_pipeline_order(trained):
    _, result, events = trained
    assert [(s.name, s.status) for s in result.steps] == [
        ("Upload", "Succeeded"),
        ("Preprocess", "Succeeded"),
        ("Train", "Succeeded"),
        ("Evaluate", "Succeeded"),
        ("CheckQuality", "Succeeded"),
        ("QualityGateFailed", "Skipped"),
        ("Register", "Succeeded"),
    ]
    assert "validation:roc_auc=" in result.steps[2].detail  # printed by train.py under the training toolkit
    assert events[:2] == [("Upload", "start"), ("Upload", "done")]
    assert ("Register", "done") in events and ("QualityGateFailed", "skipped") in events


def test_registry_lists_the_version(trained):
    target, result, _ = trained
    sm = target.client("sagemaker")
    pending = list_model_versions(sm, target.names.model_package_group, "PendingManualApproval")
    assert [v.version for v in pending] == [1]
    assert pending[0].metrics == pytest.approx(result.metrics, abs=1e-6)
    assert list_model_versions(sm, target.names.model_package_group, "Approved") == []


def test_bad_training_data_fails_the_preprocess_step_naming_the_column(moto_url, tmp_path):
    target = _target(moto_url)
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.csv").write_text("a,b,target\n1,2,0\n3,x,1\n")
    with pytest.raises(TrainingError) as err:
        run_local_training(target, data_dir_or_uri=data, work_dir=tmp_path / "work")
    assert err.value.step == "Preprocess"
    assert "d.csv, line 3: feature column 'b' is not a finite number: 'x'" in str(err.value)
    assert (tmp_path / "work" / "Preprocess.log").exists()  # the step's log is kept for the operator


def _own_work_dir(monkeypatch, tmp_path):
    """The folder the run creates for itself (``tempfile.mkdtemp``), at a known place."""
    import tempfile

    work = tmp_path / "own-work"
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix="": str(work.mkdir() or work))
    return work


def test_a_failed_upload_leaves_no_work_folder_behind(moto_url, tmp_path, monkeypatch):
    """No step ran, so there is no log to keep: the run's own temporary folder goes."""
    work = _own_work_dir(monkeypatch, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError) as err:
        run_local_training(_target(moto_url), data_dir_or_uri=tmp_path / "empty")
    assert err.value.step == "Upload"
    assert (
        str(err.value)
        == f"step Upload failed: no CSV files in {tmp_path / 'empty'} (only files ending in .csv are read)"
    )
    assert not work.exists()


def test_a_data_file_that_is_not_csv_is_named_as_given(moto_url, tmp_path, monkeypatch):
    work = _own_work_dir(monkeypatch, tmp_path)
    data = tmp_path / "data.xlsx"
    data.write_bytes(b"PK\x03\x04")
    with pytest.raises(TrainingError) as err:
        run_local_training(_target(moto_url), data_dir_or_uri=str(data))
    assert err.value.detail == f"training data {data} is not a .csv file (only files ending in .csv are read)"
    assert "input-file" not in str(err.value) and not work.exists()


def test_nothing_at_the_s3_uri_leaves_no_work_folder(moto_url, tmp_path, monkeypatch):
    """The Preprocess step fails before its script runs (no log): nothing is kept, not even the code built."""
    target = _target(moto_url)
    work = _own_work_dir(monkeypatch, tmp_path)
    uri = f"s3://{target.names.data_bucket}/nope"
    with pytest.raises(TrainingError) as err:
        run_local_training(target, data_dir_or_uri=uri)
    assert err.value.step == "Preprocess" and err.value.detail == f"nothing at {uri}"
    assert not work.exists()


def test_a_failed_step_keeps_only_its_logs_and_names_them(moto_url, tmp_path, monkeypatch):
    work = _own_work_dir(monkeypatch, tmp_path)
    data = tmp_path / "bad.csv"
    data.write_text("a,b,target\n1,2,0\n3,x,1\n")
    with pytest.raises(TrainingError) as err:
        run_local_training(_target(moto_url), data_dir_or_uri=str(data))
    assert err.value.step == "Preprocess"
    assert f"(log: {work / 'Preprocess.log'})" in str(err.value)
    assert sorted(p.name for p in work.iterdir()) == ["Preprocess.log"]  # no data copy, no code build
    assert "bad.csv, line 3: feature column 'b'" in (work / "Preprocess.log").read_text()


def test_unknown_hyperparameter_fails_before_running(moto_url):
    with pytest.raises(DefinitionError, match="unknown hyperparameter 'gamma'"):
        run_local_training(_target(moto_url), hyperparameters={"gamma": 1})
    with pytest.raises(DefinitionError, match="MaxIter must be integer, got 'lots'"):
        run_local_training(_target(moto_url), hyperparameters={"max_iter": "lots"})
    with pytest.raises(DefinitionError, match="unknown estimator 'svm'"):
        run_local_training(_target(moto_url), estimator="svm")


def test_image_uri_is_the_sdk_table_entry():
    # Values from sagemaker.core.image_uris.retrieve("sklearn", version="1.2-1", ...) (importing the SDK costs
    # ~10 s, so the expected URIs are pinned here; tests/stacks/test_image_uris.py checks the table itself).
    assert sklearn_image_uri("us-east-1", "1.2-1", "inference") == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    assert sklearn_image_uri("eu-west-1", "1.2-1", "training") == (
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )


def test_the_configured_decision_threshold_is_the_local_pipeline_s(moto_url):
    """Evaluate labels rows at the proxy's decision_threshold: the local pipeline's parameter default is it."""
    from trainserve.local.training_runner import build_local_definition

    target = _target(moto_url, decision_threshold=0.7)
    code = {k: f"s3://b/{k}" for k in ("preprocess", "evaluate", "train_sourcedir", "inference_sourcedir")}
    definition = build_local_definition(target, code, "s3://b/data")
    [param] = [p for p in definition["Parameters"] if p["Name"] == "DecisionThreshold"]
    assert param["DefaultValue"] == 0.7
