"""The training scripts on the sample data, through their SageMaker contracts (paths, env vars, args)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import joblib
import pandas as pd
import pytest

from training import evaluate, preprocess, sample_data, train
from training.packaging import make_model_tarball
from training.sample_data import LABEL_COLUMN, write_sample_data
from trainserve import PROJECT_ROOT

TRAINING_DIR = PROJECT_ROOT / "training"
N_FEATURES = 30


def _run(script: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, str(TRAINING_DIR / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_data(tmp_path_factory.mktemp("sample"), seed=0)


def test_sample_data_is_deterministic_disjoint_and_labelled(sample, tmp_path):
    again = write_sample_data(tmp_path, seed=0)
    assert again["train"].read_bytes() == sample["train"].read_bytes()
    assert again["traffic"].read_bytes() == sample["traffic"].read_bytes()
    train = pd.read_csv(sample["train"])
    traffic = pd.read_csv(sample["traffic"])
    labels = pd.read_csv(sample["traffic_labels"])
    assert list(train.columns) == [*sample["feature_names"], LABEL_COLUMN]
    assert len(sample["feature_names"]) == N_FEATURES and "mean_radius" in sample["feature_names"]
    assert LABEL_COLUMN not in traffic.columns and list(traffic.columns)[0] == "row_id"
    assert len(train) + len(traffic) == 569 and len(traffic) == len(labels) == sample["n_traffic"]
    assert list(labels["row_id"]) == list(traffic["row_id"])
    assert set(labels[LABEL_COLUMN]) == {0, 1}
    # No held-out row appears in the training data.
    merged = traffic.drop(columns=["row_id"]).merge(train.drop(columns=[LABEL_COLUMN]), how="inner")
    assert merged.empty


def test_sample_data_cli_writes_files(tmp_path, capsys):
    assert sample_data.main(["--out", str(tmp_path), "--seed", "1"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert Path(paths["train"]).exists() and Path(paths["traffic_labels"]).exists()


def test_preprocess_train_evaluate_end_to_end(sample, tmp_path, monkeypatch, capsys):
    """In-process calls of each script's ``main`` with the container's arguments and environment (the
    local runner's tests run the same scripts as separate processes through the training toolkit)."""
    base = tmp_path / "processing"
    (base / "input" / "data").mkdir(parents=True)
    (base / "input" / "data" / "part.csv").write_bytes(sample["train"].read_bytes())
    # The job's own code folder under input/ must not be read as data.
    (base / "input" / "code").mkdir()
    (base / "input" / "code" / "junk.csv").write_text("not,data\n")
    assert preprocess.main(["--base-dir", str(base), "--label-column", "target"]) == 0
    counts = {name: len(pd.read_csv(base / name / f"{name}.csv")) for name in ("train", "validation", "test")}
    assert sum(counts.values()) == sample["n_train"]
    assert counts["test"] > 0 and counts["validation"] > 0
    schema = json.loads((base / "schema" / "schema.json").read_text())
    assert schema == {"feature_names": sample["feature_names"], "label": "target", "classes": [0, 1]}

    # Script mode: SM_MODEL_DIR / SM_CHANNEL_* env vars, hyperparameters as arguments (as the toolkit passes them).
    model_dir = tmp_path / "model"
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(base / "train"))
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", str(base / "validation"))
    capsys.readouterr()
    assert (
        train.main(["--estimator", "random_forest", "--n_estimators", "20", "--max_depth", "4", "-C", "0.5"])
        == 0
    )
    assert "validation:roc_auc=" in capsys.readouterr().out
    pipeline = joblib.load(model_dir / "model.joblib")
    assert [name for name, _ in pipeline.steps] == ["scaler", "model"]
    assert type(pipeline.steps[-1][1]).__name__ == "RandomForestClassifier"
    assert pipeline.steps[-1][1].n_estimators == 20
    model_schema = json.loads((model_dir / "schema.json").read_text())
    assert model_schema["feature_names"] == sample["feature_names"]
    assert model_schema["estimator"] == "random_forest" and model_schema["classes"] == [0, 1]

    (base / "model").mkdir()
    make_model_tarball(model_dir, base / "model" / "model.tar.gz")
    with tarfile.open(base / "model" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model.joblib", "schema.json"]
    assert evaluate.main(["--base-dir", str(base), "--quality-metric", "f1", "--bootstrap", "20"]) == 0
    evaluation = json.loads((base / "evaluation" / "evaluation.json").read_text())
    binary = evaluation["binary_classification_metrics"]
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert 0.8 <= binary[name]["value"] <= 1.0
        assert binary[name]["standard_deviation"] >= 0
    cm = binary["confusion_matrix"]
    assert sum(cm[a][p] for a in "01" for p in "01") == counts["test"]
    assert set(evaluation["metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert evaluation["metrics"]["roc_auc"] == binary["auc"]["value"]
    meta = evaluation["registry_metadata"]
    assert all(isinstance(v, str) for v in meta.values())
    assert "feature_names" not in meta and meta["n_features"] == str(len(sample["feature_names"]))
    features = json.loads((base / "evaluation" / "features.json").read_text())
    assert features == {"feature_names": sample["feature_names"]}
    assert meta["quality_metric"] == "f1" and float(meta["quality_value"]) == pytest.approx(
        evaluation["metrics"]["f1"], abs=1e-6
    )
    baseline = json.loads((base / "evaluation" / "baseline.json").read_text())
    # every held-out row: the test split and the validation split (training only reports on it)
    assert baseline["n"] == counts["test"] + counts["validation"]
    assert set(baseline["features"]) == set(sample["feature_names"])
    for bins in [baseline["score"], *baseline["features"].values()]:
        assert len(bins["bin_edges"]) == len(bins["fractions"]) + 1
        assert bins["bin_edges"] == sorted(bins["bin_edges"])
        assert sum(bins["fractions"]) == pytest.approx(1.0)
    assert len(baseline["features"]["mean_radius"]["bin_edges"]) == 11


def test_train_rejects_bad_hyperparameters(capsys):
    for argv, message in ((["--estimator", "svm"], "--estimator"), (["--C", "0"], "--C must be > 0")):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


# -- bad training data: clear errors naming the problem ---------------------------------------------------


def _preprocess_error(tmp_path: Path, files: dict[str, str], label: str = "target") -> str:
    data = tmp_path / "input"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    args = preprocess.parse_args(["--base-dir", str(tmp_path), "--label-column", label])
    with pytest.raises(preprocess.DataError) as err:
        preprocess.run(args)
    return str(err.value)


GOOD = "a,b,target\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n2,3,1\n4,4,0\n5,5,1\n"


def test_missing_label_column_is_named(tmp_path):
    message = _preprocess_error(tmp_path, {"d.csv": "a,b,label\n1,2,0\n"})
    assert "d.csv" in message and "label column 'target' is missing" in message


def test_custom_label_column_name(tmp_path):
    message = _preprocess_error(tmp_path, {"d.csv": GOOD}, label="outcome")
    assert "label column 'outcome' is missing" in message


def test_non_numeric_feature_names_file_line_and_column(tmp_path):
    bad = GOOD.replace("5,6,0", "5,abc,0")
    message = _preprocess_error(tmp_path, {"d.csv": bad})
    assert message == "d.csv, line 4: feature column 'b' is not a finite number: 'abc'"


def test_missing_feature_value_is_named(tmp_path):
    message = _preprocess_error(tmp_path, {"d.csv": GOOD.replace("7,8,1", ",8,1")})
    assert message == "d.csv, line 5: feature column 'a' is empty"


def test_empty_file(tmp_path):
    assert "e.csv: the file is empty" in _preprocess_error(tmp_path, {"e.csv": ""})


def test_header_only_means_no_rows(tmp_path):
    assert "no data rows" in _preprocess_error(tmp_path, {"e.csv": "a,b,target\n"})


def test_single_class(tmp_path):
    one_class = "a,b,target\n" + "".join(f"{i},{i},1\n" for i in range(10))
    message = _preprocess_error(tmp_path, {"d.csv": one_class})
    assert "exactly two classes" in message and "found 1: [1]" in message


def test_files_with_different_columns(tmp_path):
    message = _preprocess_error(tmp_path, {"a.csv": GOOD, "b.csv": "a,c,target\n1,2,0\n"})
    assert "b.csv: columns differ" in message and "'b'" in message and "'c'" in message


def test_no_csv_files(tmp_path):
    assert "no CSV files" in _preprocess_error(tmp_path, {"notes.txt": "x"})


def test_preprocess_cli_exit_code_and_message(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "d.csv").write_text("a,b\n1,2\n")
    proc = _run("preprocess.py", ["--base-dir", str(tmp_path)])
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: d.csv: label column 'target' is missing (columns: a, b)"


def test_feature_names_come_from_the_data(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "d.csv").write_text(GOOD.replace("a,b,target", "height,weight,target") * 1)
    args = preprocess.parse_args(
        ["--base-dir", str(tmp_path), "--test-fraction", "0.25", "--validation-fraction", "0.25"]
    )
    summary = preprocess.run(args)
    assert summary["rows"] == 8
    schema = json.loads((tmp_path / "schema" / "schema.json").read_text())
    assert schema["feature_names"] == ["height", "weight"]


def test_container_code_is_python_39_compatible():
    """training/ runs in the SageMaker scikit-learn container (Python 3.9)."""
    import ast

    for path in sorted(TRAINING_DIR.glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
        assert "from __future__ import annotations" in source, path.name
        assert not any(type(node).__name__ == "Match" for node in ast.walk(tree)), path.name
