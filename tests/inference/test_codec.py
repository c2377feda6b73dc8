"""codec.py: decoding and validation, the compiled numpy path against scikit-learn, encoding."""

from __future__ import annotations

import json

import codec
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CSV = "text/csv"
JSON = "application/json"
NAMES = [name.replace(" ", "_") for name in load_breast_cancer().feature_names]


def csv_of(rows) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def json_of(doc) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def names(cancer):
    return cancer[2]


# ------------------------------------------------------------------------------ compiled path vs sklearn


def test_lr_pipeline_compiles_and_matches_sklearn(lr_model_dir, lr_pipeline, cancer):
    X = cancer[0]
    model = codec.load_model(str(lr_model_dir))
    assert model.compiled
    want = lr_pipeline.predict_proba(X)[:, 1]
    got = model.score(np.ascontiguousarray(X))
    assert np.max(np.abs(got - want)) <= 1e-12
    for i in range(0, len(X), 37):  # one row at a time, as most requests come
        one = model.score(X[i : i + 1])
        assert one.shape == (1,)
        assert abs(one[0] - lr_pipeline.predict_proba(X[i : i + 1])[0, 1]) <= 1e-12


def test_compiled_path_does_not_modify_the_input(lr_model_dir, cancer):
    model = codec.load_model(str(lr_model_dir))
    rows = np.ascontiguousarray(cancer[0][:5])
    before = rows.copy()
    model.score(rows)
    assert np.array_equal(rows, before)


def test_pipeline_fitted_on_a_dataframe_compiles(tmp_path, make_model_dir, cancer):
    X, y, names = cancer
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        pd.DataFrame(X, columns=names), y
    )
    model = codec.load_model(str(make_model_dir(tmp_path, pipe, names)))
    assert model.compiled
    want = pipe.predict_proba(pd.DataFrame(X, columns=names))[:, 1]
    assert np.max(np.abs(model.score(X) - want)) <= 1e-12


def test_sgd_log_loss_compiles(tmp_path, make_model_dir, cancer):
    X, y, names = cancer
    pipe = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)).fit(X, y)
    model = codec.load_model(str(make_model_dir(tmp_path, pipe, names)))
    assert model.compiled
    assert np.max(np.abs(model.score(X) - pipe.predict_proba(X)[:, 1])) <= 1e-12


def test_random_forest_falls_back_to_sklearn(rf_model_dir, rf_pipeline, cancer):
    X = cancer[0]
    model = codec.load_model(str(rf_model_dir))
    assert not model.compiled
    assert codec.compile_linear(rf_pipeline) is None
    assert np.array_equal(model.score(X), rf_pipeline.predict_proba(X)[:, 1])


def test_multinomial_lr_is_not_compiled_with_the_sigmoid(tmp_path, make_model_dir, cancer):
    X, y, names = cancer
    pipe = make_pipeline(StandardScaler(), LogisticRegression(multi_class="multinomial", max_iter=2000)).fit(
        X, y
    )
    model = codec.load_model(str(make_model_dir(tmp_path, pipe, names)))
    assert not model.compiled
    assert np.array_equal(model.score(X), pipe.predict_proba(X)[:, 1])


def test_a_compiled_path_that_disagrees_is_rejected_at_load(monkeypatch, lr_model_dir, lr_pipeline, cancer):
    good = codec.compile_linear

    def off_by_a_little(pipeline):
        exact = good(pipeline)
        return lambda rows: exact(rows) + 1e-9

    monkeypatch.setattr(codec, "compile_linear", off_by_a_little)
    model = codec.load_model(str(lr_model_dir))
    assert not model.compiled
    X = cancer[0]
    assert np.array_equal(model.score(X), lr_pipeline.predict_proba(X)[:, 1])


def test_load_model_errors_name_the_file(tmp_path, make_model_dir, lr_pipeline, cancer):
    with pytest.raises(codec.ModelLoadError, match="schema.json not found"):
        codec.load_model(str(tmp_path))
    (tmp_path / "schema.json").write_text(json.dumps({"feature_names": cancer[2][:29]}))
    with pytest.raises(codec.ModelLoadError, match="model.joblib not found"):
        codec.load_model(str(tmp_path))
    make_model_dir(tmp_path, lr_pipeline, cancer[2][:29])
    with pytest.raises(codec.ModelLoadError, match="expects 30 features but schema.json names 29"):
        codec.load_model(str(tmp_path))
    (tmp_path / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(codec.ModelLoadError, match="model.joblib cannot be loaded: "):
        codec.load_model(str(tmp_path))
    (tmp_path / "schema.json").write_text(json.dumps({"feature_names": "x"}))
    with pytest.raises(codec.ModelLoadError, match="'feature_names' must be a non-empty list"):
        codec.load_model(str(tmp_path))


# -------------------------------------------------------------------------------------------- decoding


def test_csv_one_row_is_two_dimensional(cancer, names):
    batch = codec.decode(csv_of(cancer[0][:1]), CSV, names)
    assert batch.rows.shape == (1, 30)
    assert batch.rows.dtype == np.float64
    assert np.array_equal(batch.rows, cancer[0][:1])
    assert batch.threshold == 0.5


def test_csv_many_rows_crlf_blank_lines_spaces_and_str_body(cancer, names):
    rows = cancer[0][:100]
    assert np.array_equal(codec.decode(csv_of(rows), "text/csv; charset=utf-8", names).rows, rows)
    text = "\r\n".join(", ".join(repr(float(v)) for v in row) for row in rows[:3]) + "\r\n\r\n"
    assert np.array_equal(codec.decode(text, CSV, names).rows, rows[:3])


def test_csv_number_spellings_json_does_not_allow(names):
    row = [".5", "1.", "1e3", "+2", "-0.25"] + ["0"] * 25
    batch = codec.decode(",".join(row), CSV, names)
    assert batch.rows[0, :5].tolist() == [0.5, 1.0, 1000.0, 2.0, -0.25]


def test_csv_with_a_byte_order_mark(names):
    body = ("\ufeff" + ",".join(["2.5"] * 30)).encode("utf-8")
    assert codec.decode(body, CSV, names).rows.tolist() == [[2.5] * 30]


def test_csv_quoted_cells(names):
    batch = codec.decode(",".join(['"1.5"'] + ["2"] * 29), CSV, names)
    assert batch.rows[0, 0] == 1.5 and batch.rows[0, 1] == 2.0


def test_csv_non_numeric_value_names_row_column_and_value(cancer, names):
    cells = [[repr(float(v)) for v in row] for row in cancer[0][:3]]
    cells[2][6] = "abc"
    body = "\n".join(",".join(r) for r in cells)
    with pytest.raises(codec.PayloadError) as e:
        codec.decode(body, CSV, names)
    assert str(e.value) == f"row 3, column 7 ({names[6]}): 'abc' is not a number"
    assert e.value.status == 400


def test_csv_header_row_gets_a_hint(names):
    body = ",".join(names) + "\n" + ",".join(["1"] * 30)
    with pytest.raises(
        codec.PayloadError,
        match=r"row 1, column 1 \(mean_radius\): 'mean_radius' is not a number \(CSV bodies have no header row\)",
    ):
        codec.decode(body, CSV, names)


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_csv_non_finite_values_are_rejected(names, bad):
    body = ",".join(["1"] * 29 + [bad])
    with pytest.raises(
        codec.PayloadError,
        match=rf"row 1, column 30 \(worst_fractal_dimension\): '{bad}' is not a finite number",
    ):
        codec.decode(body, CSV, names)


def test_wrong_feature_count_csv_and_json(cancer, names):
    rows = [list(map(float, r)) for r in cancer[0][:3]]
    rows[1] = rows[1][:29]
    body = "\n".join(",".join(map(repr, r)) for r in rows)
    with pytest.raises(
        codec.PayloadError, match=r"^row 2 has 29 values, the model expects 30 \(schema.json\)$"
    ):
        codec.decode(body, CSV, names)
    with pytest.raises(
        codec.PayloadError, match=r"^row 2 has 29 values, the model expects 30 \(schema.json\)$"
    ):
        codec.decode(json_of({"instances": rows}), JSON, names)
    with pytest.raises(codec.PayloadError, match=r"^row 1 has 31 values, the model expects 30"):
        codec.decode(json_of([[1.0] * 31]), JSON, names)


def test_json_instances_one_and_many_rows(cancer, names):
    X = cancer[0]
    assert np.array_equal(codec.decode(json_of({"instances": X[:1].tolist()}), JSON, names).rows, X[:1])
    assert np.array_equal(codec.decode(json_of({"instances": X[:100].tolist()}), JSON, names).rows, X[:100])


def test_json_bare_list_of_rows_and_single_flat_row(cancer, names):
    X = cancer[0]
    assert np.array_equal(codec.decode(json_of(X[:4].tolist()), JSON, names).rows, X[:4])
    flat = codec.decode(json_of(X[0].tolist()), JSON, names).rows
    assert flat.shape == (1, 30) and np.array_equal(flat, X[:1])


def test_json_integers_and_str_body(names):
    batch = codec.decode(json.dumps({"instances": [list(range(30))]}), JSON, names)
    assert batch.rows.dtype == np.float64 and batch.rows[0].tolist() == [float(i) for i in range(30)]


def test_json_named_features_in_any_order(cancer, names):
    X = cancer[0]
    records = [dict(reversed(list(zip(names, row.tolist(), strict=True)))) for row in X[:3]]
    assert np.array_equal(codec.decode(json_of({"instances": records}), JSON, names).rows, X[:3])


def test_json_named_features_missing_and_unknown(cancer, names):
    rec = dict(zip(names, cancer[0][0].tolist(), strict=True))
    second = dict(rec)
    del second["mean_area"]
    second["mean_colour"] = 1.0
    with pytest.raises(
        codec.PayloadError,
        match=r"^row 2: missing feature 'mean_area'; unknown feature 'mean_colour' \(schema.json names 30 features\)$",
    ):
        codec.decode(json_of({"instances": [rec, second]}), JSON, names)
    bad = dict(rec, mean_area="big")
    with pytest.raises(codec.PayloadError, match=r"^row 1, column 4 \(mean_area\): 'big' is not a number$"):
        codec.decode(json_of({"instances": [bad]}), JSON, names)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abc", "'abc'"),
        ("1.5", "'1.5'"),
        (True, "true"),
        (None, "null"),
        ([1], "[1]"),
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_json_non_numbers_are_rejected_with_row_column_value(names, value, shown):
    rows = [[1.0] * 30, [1.0] * 30]
    rows[1][3] = value
    with pytest.raises(codec.PayloadError) as e:
        codec.decode(json_of({"instances": rows}), JSON, names)
    assert str(e.value) == f"row 2, column 4 (mean_area): {shown} is not a number"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty request body"),
        (b"   \n", "empty request body"),
        (b"{not json", "request body is not valid JSON"),
        (b'{"rows": [[1]]}', "JSON object must have an \"instances\" list of rows (got keys ['rows'])"),
        (b'{"instances": [[1]], "extra": 1}', "unknown JSON field(s) ['extra']"),
        (b'{"instances": []}', '"instances" is an empty list: send at least one row'),
        (b'{"instances": "1,2"}', '"instances" must be a list of rows, got a string'),
        (b"[]", "the JSON body is an empty list"),
        (b"42", "the JSON body must be a list of rows, got a number"),
        (json_of([[1] * 30, 3]), "row 2 is a number, expected a list of 30 numbers"),
        (
            json_of([dict.fromkeys(NAMES, 1), [1]]),
            "row 2 is a list; rows must all be objects (named features) or all lists",
        ),
    ],
)
def test_json_shape_errors(names, body, message):
    with pytest.raises(codec.PayloadError) as e:
        codec.decode(body, JSON, names)
    assert message in str(e.value)
    assert e.value.status == 400


def test_empty_csv_body(names):
    with pytest.raises(codec.PayloadError, match="empty request body: send one CSV row of numbers per line"):
        codec.decode(b"\n\n", CSV, names)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-npy", None, ""])
def test_unsupported_content_type(names, content_type):
    with pytest.raises(codec.UnsupportedContentTypeError) as e:
        codec.decode(b"1,2", content_type, names)
    assert e.value.status == 415
    assert "unsupported content type" in str(e.value) and "text/csv" in str(e.value)


def test_body_over_the_invoke_endpoint_limit(names):
    with pytest.raises(codec.PayloadTooLargeError) as e:
        codec.decode(b"1" * (codec.MAX_BODY_BYTES + 1), CSV, names)
    assert e.value.status == 413 and "6291456" in str(e.value)


def test_not_utf8(names):
    with pytest.raises(codec.PayloadError, match="not UTF-8"):
        codec.decode(b"\xff\xfe1,2", CSV, names)


def test_threshold_from_header_and_json_field(names):
    row = [1.0] * 30
    assert codec.decode(json_of([row]), JSON, names, threshold="0.8").threshold == 0.8
    assert (
        codec.decode(json_of({"instances": [row], "threshold": 0.3}), JSON, names, threshold="0.8").threshold
        == 0.3
    )
    assert codec.decode(",".join(["1"] * 30), CSV, names, threshold=" 0.25 ").threshold == 0.25
    for bad in ("1.5", "-0.1", "nan", "high", True):
        with pytest.raises(codec.PayloadError, match="threshold must be a number between 0 and 1"):
            codec.decode(json_of({"instances": [row], "threshold": bad}), JSON, names)


# -------------------------------------------------------------------------------------------- encoding


def test_encode_scores_and_labels_at_the_threshold():
    scores = np.array([0.1, 0.5, 0.93])
    doc = json.loads(codec.encode(codec.Prediction(scores, 0.5)))
    assert doc == {
        "predictions": [{"score": 0.1, "label": 0}, {"score": 0.5, "label": 1}, {"score": 0.93, "label": 1}]
    }
    doc = json.loads(codec.encode(codec.Prediction(scores, 0.95)))
    assert [p["label"] for p in doc["predictions"]] == [0, 0, 0]


def test_end_to_end_scores_equal_sklearn(lr_model_dir, lr_pipeline, cancer, names):
    model = codec.load_model(str(lr_model_dir))
    X = cancer[0][:100]
    doc = json.loads(codec.encode(codec.predict(codec.decode(csv_of(X), CSV, names), model)))
    want = lr_pipeline.predict_proba(X)[:, 1]
    assert [p["score"] for p in doc["predictions"]] == pytest.approx(want.tolist(), abs=1e-12, rel=0)
    assert [p["label"] for p in doc["predictions"]] == lr_pipeline.predict(X).tolist()


@pytest.mark.parametrize(
    "accept", [None, "", "*/*", "application/json", "application/json; charset=utf-8", "text/html, */*;q=0.8"]
)
def test_acceptable_accept_headers(accept):
    codec.check_accept(accept)


def test_unacceptable_accept_header():
    with pytest.raises(codec.NotAcceptableError, match="responses are application/json") as e:
        codec.check_accept("text/csv")
    assert e.value.status == 406
