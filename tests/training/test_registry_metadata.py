"""What training writes into the registry is valid on AWS: every CustomerMetadataProperties key and value
meets the constraints of SageMaker's API model (read from botocore, as SageMaker enforces them), and the
CLI and the proxy still find the metrics and the feature names."""

from __future__ import annotations

import argparse
import json

import botocore.session
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training import evaluate, pipeline_definition
from training.sample_data import LABEL_COLUMN, write_sample_data
from trainserve.local import moto_patches
from trainserve.registry import parse_metrics, version_from_description


def _shape_rules():
    """(key shape, value shape, map shape) of CustomerMetadataMap in botocore's SageMaker model."""
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("CustomerMetadataMap")
    return shape.key, shape.value, shape


def _assert_valid(text: str, shape) -> None:
    """Length bounds from the shape; the pattern with the ``regex`` module (Unicode classes) when present,
    and always with the local cloud's reading of it."""
    meta = shape.metadata
    assert meta["min"] <= len(text) <= meta["max"], (shape.name, text)
    try:
        import regex
    except ImportError:  # pragma: no cover - regex comes with the dev tools (cfn-lint)
        regex = None
    if regex is not None:
        pattern = meta["pattern"]
        core = pattern[: pattern.index("$") + 1]  # the Java-style "{1,256}" suffix repeats the length bound
        assert regex.fullmatch(core, text), (shape.name, text, pattern)
    key_rule, value_rule, _ = moto_patches.customer_metadata_constraints()
    rule = key_rule if shape.name == key_rule.shape else value_rule
    assert rule.problem(text) is None


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """evaluate.py's own code on a small dataset (the sample data, a quick logistic regression)."""
    import pandas as pd

    sample = write_sample_data(tmp_path_factory.mktemp("sample"), seed=0)
    frame = pd.read_csv(sample["train"])
    features = sample["feature_names"]
    train, test = frame.iloc[:300], frame.iloc[300:]
    model = Pipeline([("scaler", StandardScaler()), ("model", LogisticRegression(max_iter=1000))])
    model.fit(train[features], train[LABEL_COLUMN])
    schema = {"feature_names": features, "label": LABEL_COLUMN, "estimator": "logistic_regression"}
    args = argparse.Namespace(quality_metric="roc_auc", bootstrap=10, random_state=0, decision_threshold=0.5)
    result, baseline = evaluate.evaluate(model, schema, test, args)
    return result, baseline, sample, model, test


def test_every_metadata_key_and_value_is_valid_on_aws(evaluation):
    result, _, sample, _, _ = evaluation
    meta = dict(result["registry_metadata"])
    # What RegisterModel adds to them (pipeline_definition): the metric name and two S3 URIs of this size.
    prefix = (
        "s3://trainserve-artifacts-123456789012-us-east-1/pipeline/20260101000000-abcdef/Evaluate/evaluation"
    )
    meta.update(
        quality_metric="roc_auc",
        baseline_uri=f"{prefix}/baseline.json",
        features_uri=f"{prefix}/features.json",
    )
    assert set(meta) == {
        *pipeline_definition.REGISTRY_METADATA_KEYS,
        "quality_metric",
        "baseline_uri",
        "features_uri",
    }
    key_shape, value_shape, map_shape = _shape_rules()
    assert len(meta) <= map_shape.metadata["max"]
    for key, value in meta.items():
        assert isinstance(value, str)
        _assert_valid(key, key_shape)
        _assert_valid(value, value_shape)
    assert moto_patches.customer_metadata_problem(meta) is None
    # The sample's feature list would not fit: that is why it lives in features.json.
    with pytest.raises(AssertionError):
        _assert_valid(json.dumps(sample["feature_names"]), value_shape)


def test_metrics_round_trip_through_the_registry(evaluation):
    result, _, _, _, _ = evaluation
    meta = result["registry_metadata"]
    assert meta["metrics"].startswith("accuracy=")
    read = parse_metrics(meta["metrics"])
    assert list(read) == list(evaluate.METRICS)
    for name, value in result["metrics"].items():
        assert read[name] == pytest.approx(value, abs=1e-6)
    described = {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:1:model-package/g/1",
        "ModelPackageVersion": 1,
        "ModelApprovalStatus": "PendingManualApproval",
        "CustomerMetadataProperties": {**meta, "quality_metric": "roc_auc"},
    }
    version = version_from_description(described)
    assert version.metrics == read and version.n_features == 30
    assert version.decision_threshold == 0.5
    assert version.quality_value == pytest.approx(result["metrics"]["roc_auc"], abs=1e-6)


def test_old_format_metadata_still_read():
    described = {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:1:model-package/g/3",
        "ModelApprovalStatus": "Approved",
        "CustomerMetadataProperties": {
            "metrics": json.dumps({"accuracy": 0.9, "roc_auc": 0.97}),
            "feature_names": json.dumps(["a", "b"]),
        },
    }
    version = version_from_description(described)
    assert version.metrics == {"accuracy": 0.9, "roc_auc": 0.97}
    assert version.feature_names == ["a", "b"] and version.as_json()["n_features"] == 2
    assert parse_metrics("accuracy=0.9 f1=nan junk roc_auc=x") == pytest.approx(
        {"accuracy": 0.9, "f1": float("nan")}, nan_ok=True
    )
    assert parse_metrics("") == {} and parse_metrics("{not json") == {}


def test_metrics_are_computed_at_the_decision_threshold(evaluation):
    _, _, _, model, test = evaluation
    features = [c for c in test.columns if c != LABEL_COLUMN]
    schema = {"feature_names": features, "label": LABEL_COLUMN}
    results = {}
    for threshold in (0.5, 0.9):
        args = argparse.Namespace(
            quality_metric="f1", bootstrap=5, random_state=0, decision_threshold=threshold
        )
        results[threshold] = evaluate.evaluate(model, schema, test, args)
    scores = model.predict_proba(test[features].astype(float))[:, 1]
    for threshold, (result, baseline) in results.items():
        expected = evaluate.compute_metrics(test[LABEL_COLUMN].to_numpy(), scores, threshold)
        assert result["metrics"] == pytest.approx(expected)
        assert result["decision_threshold"] == threshold
        assert result["registry_metadata"]["decision_threshold"] == repr(threshold)
        cm = result["binary_classification_metrics"]["confusion_matrix"]
        assert cm["0"]["1"] + cm["1"]["1"] == int((scores >= threshold).sum())
        assert baseline["positive_rate"] == pytest.approx(float((scores >= threshold).mean()))
    assert results[0.9][0]["metrics"]["recall"] < results[0.5][0]["metrics"]["recall"]
    assert results[0.9][0]["metrics"]["roc_auc"] == results[0.5][0]["metrics"]["roc_auc"]


def test_decision_threshold_argument_is_checked():
    assert evaluate.parse_args(["--decision-threshold", "0.7"]).decision_threshold == 0.7
    assert evaluate.parse_args([]).decision_threshold == 0.5
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--decision-threshold", "1.5"])


def test_features_sha256_is_the_digest_the_release_controller_compares(evaluation):
    """The metadata key is the one the release planner reads, and the digest follows the names and their
    order (a reordered or renamed list is another model's input)."""
    import hashlib

    from release_planner import FEATURES_DIGEST_KEY

    result, _, sample, _, _ = evaluation
    names = sample["feature_names"]
    digest = result["registry_metadata"][FEATURES_DIGEST_KEY]
    expected = hashlib.sha256(json.dumps(names, separators=(",", ":")).encode()).hexdigest()
    assert digest == expected == evaluate.features_digest(names)
    assert evaluate.features_digest(list(reversed(names))) != digest
    assert evaluate.features_digest([*names[:-1], names[-1] + "_v2"]) != digest
    assert evaluate.features_digest(["größe"]) == hashlib.sha256('["größe"]'.encode()).hexdigest()


def test_the_baseline_takes_the_validation_rows_too_and_the_metrics_do_not(evaluation):
    """baseline.json's bins come from every held-out row (test + validation); the metrics from test only."""
    result, baseline, sample, model, test = evaluation
    frame = pd.read_csv(sample["train"])
    validation = frame.iloc[:150]  # rows the fixture's model was fitted on stand in for a validation split
    args = argparse.Namespace(quality_metric="roc_auc", bootstrap=10, random_state=0, decision_threshold=0.5)
    with_validation, both = evaluate.evaluate(
        model, {"feature_names": sample["feature_names"]}, test, args, validation
    )
    assert with_validation["metrics"] == result["metrics"] and with_validation["n_test"] == len(test)
    assert baseline["n"] == len(test) and both["n"] == len(test) + len(validation)
    scores = model.predict_proba(pd.concat([test, validation])[sample["feature_names"]])[:, 1]
    assert both["positive_rate"] == pytest.approx(float((scores >= 0.5).mean()))
    assert both["score"] == evaluate.decile_bins(scores)
    with pytest.raises(SystemExit, match="validation data lacks columns"):
        evaluate.evaluate(
            model,
            {"feature_names": sample["feature_names"]},
            test,
            args,
            validation.drop(columns=["mean_radius"]),
        )
