"""Fixtures: real fitted models (breast-cancer data) written as model.joblib + schema.json."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inference import inference as entry  # noqa: F401  (puts inference/ on sys.path: one shared ``codec``)


def feature_names_of(data) -> list[str]:
    return [name.replace(" ", "_") for name in data.feature_names]


def write_model_dir(path, pipeline, feature_names):
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, path / "model.joblib")
    (path / "schema.json").write_text(
        json.dumps({"feature_names": feature_names, "label": "target", "classes": [0, 1]})
    )
    return path


@pytest.fixture(scope="session")
def make_model_dir():
    """``make_model_dir(path, pipeline, feature_names)`` writes model.joblib + schema.json into path."""
    return write_model_dir


@pytest.fixture(scope="session")
def cancer():
    data = load_breast_cancer()
    return data.data.astype(np.float64), data.target, feature_names_of(data)


@pytest.fixture(scope="session")
def lr_pipeline(cancer):
    X, y, _ = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)


@pytest.fixture(scope="session")
def lr_model_dir(tmp_path_factory, lr_pipeline, cancer):
    return write_model_dir(tmp_path_factory.mktemp("lr"), lr_pipeline, cancer[2])


@pytest.fixture(scope="session")
def rf_pipeline(cancer):
    X, y, _ = cancer
    return make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(X, y)


@pytest.fixture(scope="session")
def rf_model_dir(tmp_path_factory, rf_pipeline, cancer):
    return write_model_dir(tmp_path_factory.mktemp("rf"), rf_pipeline, cancer[2])
