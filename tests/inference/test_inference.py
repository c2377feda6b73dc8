"""inference.py: the SageMaker scikit-learn container's model_fn / input_fn / predict_fn / output_fn."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import codec
import numpy as np
import pytest

from inference import inference as entry

INFERENCE_DIR = Path(entry.__file__).resolve().parent


@pytest.fixture(scope="module")
def model(lr_model_dir):
    return entry.model_fn(str(lr_model_dir))


def csv_text(rows) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


def run(model, body, content_type, accept="application/json"):
    data = entry.input_fn(body, content_type)
    body_out, mime = entry.output_fn(entry.predict_fn(data, model), accept)
    assert mime == "application/json"
    return json.loads(body_out)["predictions"]


def test_model_fn_loads_the_compiled_pipeline(model):
    assert model.compiled
    assert len(model.schema.feature_names) == 30


def test_one_csv_row_as_the_container_passes_it(model, lr_pipeline, cancer):
    X = cancer[0]
    data = entry.input_fn(csv_text(X[:1]), "text/csv")  # str: the container decodes text/csv bodies
    assert data.rows.shape == (1, 30)  # 2-D, unlike the container's default decoder
    preds = run(model, csv_text(X[:1]), "text/csv")
    assert len(preds) == 1
    assert preds[0]["score"] == pytest.approx(lr_pipeline.predict_proba(X[:1])[0, 1], abs=1e-12, rel=0)
    assert preds[0]["label"] == lr_pipeline.predict(X[:1])[0]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_many_rows_csv_and_json(model, lr_pipeline, cancer, as_bytes):
    X = cancer[0][:100]
    want = lr_pipeline.predict_proba(X)[:, 1].tolist()
    csv_body = csv_text(X)
    json_body = json.dumps({"instances": X.tolist()})
    if as_bytes:
        csv_body, json_body = csv_body.encode(), json_body.encode()
    for body, ctype in ((csv_body, "text/csv"), (json_body, "application/json")):
        preds = run(model, body, ctype)
        assert [p["score"] for p in preds] == pytest.approx(want, abs=1e-12, rel=0)
        assert [p["label"] for p in preds] == lr_pipeline.predict(X).tolist()


def test_named_features_and_threshold_field(model, cancer):
    X, _, names = cancer
    body = json.dumps({"instances": [dict(zip(names, X[0].tolist(), strict=True))], "threshold": 1.0})
    preds = run(model, body, "application/json")
    assert preds[0]["label"] == (1 if preds[0]["score"] >= 1.0 else 0)
    assert preds[0]["label"] == 0


def test_wrong_feature_count_is_a_value_error_naming_the_row(model):
    with pytest.raises(ValueError, match=r"^row 1 has 29 values, the model expects 30 \(schema.json\)$"):
        entry.input_fn(",".join(["1"] * 29), "text/csv")


def test_non_numeric_value_names_row_column_and_value(model, cancer):
    rows = [[1.0] * 30 for _ in range(3)]
    rows[2][6] = "abc"
    with pytest.raises(ValueError, match=rf"^row 3, column 7 \({cancer[2][6]}\): 'abc' is not a number$"):
        entry.input_fn(json.dumps({"instances": rows}), "application/json")


def test_bad_content_type_and_empty_body(model):
    with pytest.raises(
        codec.UnsupportedContentTypeError, match="unsupported content type 'application/x-npy'"
    ):
        entry.input_fn(b"\x93NUMPY", "application/x-npy")
    with pytest.raises(ValueError, match="empty request body"):
        entry.input_fn("", "text/csv")
    with pytest.raises(ValueError, match="empty request body"):
        entry.input_fn(None, "application/json")


def test_output_fn_refuses_other_accept_types(model):
    pred = entry.predict_fn(entry.input_fn(",".join(["1"] * 30), "text/csv"), model)
    with pytest.raises(codec.NotAcceptableError, match="responses are application/json"):
        entry.output_fn(pred, "text/csv")


def test_random_forest_served_through_sklearn(rf_model_dir, rf_pipeline, cancer):
    rf = entry.model_fn(str(rf_model_dir))
    try:
        X = cancer[0][:10]
        preds = run(rf, csv_text(X), "text/csv")
        assert [p["score"] for p in preds] == rf_pipeline.predict_proba(X)[:, 1].tolist()
    finally:
        entry.model_fn(str(rf_model_dir))  # same schema either way; keep module state consistent


@pytest.mark.parametrize("name", ["inference.py", "codec.py"])
def test_container_code_is_python_39_and_imports_only_what_the_container_has(name):
    source = (INFERENCE_DIR / name).read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # no match statements or other 3.10+ syntax
    assert any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and node.names[0].name == "annotations"
        for node in tree.body
    ), "annotations must stay lazy on 3.9 (PEP 604 unions)"
    allowed = {"numpy", "scipy", "sklearn", "joblib", "codec", "orjson", "__future__"}
    stdlib = {"csv", "io", "json", "math", "os", "sys", "warnings", "typing"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module.split(".")[0]]
        else:
            continue
        for module in modules:
            assert module in allowed | stdlib, f"{name} imports {module}, which the sklearn container lacks"
    if name == "codec.py":
        assert "except ImportError" in source  # orjson is optional: it is not in the container


def test_codec_works_without_orjson(monkeypatch, lr_model_dir, cancer):
    monkeypatch.setattr(codec, "_orjson", None)
    model = codec.load_model(str(lr_model_dir))
    X = cancer[0][:3]
    for body, ctype in (
        (csv_text(X), "text/csv"),
        (json.dumps({"instances": X.tolist()}), "application/json"),
    ):
        batch = codec.decode(body, ctype, model.schema.feature_names)
        assert np.array_equal(batch.rows, X)
        out = json.loads(codec.encode(codec.predict(batch, model)))
        assert len(out["predictions"]) == 3
    with pytest.raises(codec.PayloadError, match="not valid JSON"):
        codec.decode(b"{oops", "application/json", model.schema.feature_names)
