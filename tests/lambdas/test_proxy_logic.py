"""The proxy's pure decisions: parameters, payload validation, sticky assignment, sampling."""

from __future__ import annotations

import json
import math
from collections import Counter

import proxy_logic as logic
import pytest

FEATURES = ("mean_radius", "mean_texture", "mean_area")


# ------------------------------------------------------------------------------------------------ params


def test_params_defaults_when_unset():
    params, problems = logic.parse_params({})
    assert params == logic.ProxyParams(True, None, 0.5, 1.0, True)
    assert problems == []


def test_params_parsed():
    env = {
        "SERVING_ENABLED": "False",
        "TARGET_VARIANT": "v3",
        "DECISION_THRESHOLD": "0.7",
        "LOG_SAMPLE_RATE": "0.25",
        "STICKY_ASSIGNMENT": "off",
    }
    params, problems = logic.parse_params(env)
    assert params == logic.ProxyParams(False, "v3", 0.7, 0.25, False)
    assert problems == []


@pytest.mark.parametrize(
    ("name", "value", "field", "default"),
    [
        ("DECISION_THRESHOLD", "abc", "decision_threshold", 0.5),
        ("DECISION_THRESHOLD", "1.7", "decision_threshold", 0.5),
        ("DECISION_THRESHOLD", "nan", "decision_threshold", 0.5),
        ("LOG_SAMPLE_RATE", "2", "log_sample_rate", 1.0),
        ("LOG_SAMPLE_RATE", "-0.1", "log_sample_rate", 1.0),
        ("SERVING_ENABLED", "maybe", "serving_enabled", True),
        ("STICKY_ASSIGNMENT", "2", "sticky_assignment", True),
        ("TARGET_VARIANT", "v 3!", "target_variant", None),
    ],
)
def test_invalid_param_falls_back_to_safe_default_and_is_reported(name, value, field, default):
    params, problems = logic.parse_params({name: value, "LOG_SAMPLE_RATE": "0.3"} | {name: value})
    assert getattr(params, field) == default
    assert [(p.name, p.value, p.default) for p in problems] == [(name, value, default)]


def test_one_bad_param_keeps_the_good_ones():
    params, problems = logic.parse_params({"DECISION_THRESHOLD": "abc", "LOG_SAMPLE_RATE": "0.2"})
    assert params.decision_threshold == 0.5
    assert params.log_sample_rate == 0.2
    assert len(problems) == 1


def test_empty_target_variant_means_no_pin():
    assert logic.parse_params({"TARGET_VARIANT": ""})[0].target_variant is None


def test_validate_assignments_strict():
    assert logic.validate_assignments({"DECISION_THRESHOLD": "0.6", "SERVING_ENABLED": "no"}) == {
        "DECISION_THRESHOLD": "0.6",
        "SERVING_ENABLED": "false",
    }
    assert logic.validate_assignments({"TARGET_VARIANT": ""}) == {"TARGET_VARIANT": ""}
    with pytest.raises(logic.ParamError, match="DECISION_THRESHOLD='1.7'"):
        logic.validate_assignments({"DECISION_THRESHOLD": "1.7"})
    with pytest.raises(logic.ParamError, match="unknown parameter"):
        logic.validate_assignments({"THRESHOLD": "0.5"})


def test_params_to_env_round_trips():
    p = logic.ProxyParams(False, "v2", 0.65, 0.1, False)
    assert logic.parse_params(logic.params_to_env(p)) == (p, [])


# ---------------------------------------------------------------------------------------------- payloads


def _err(fn, *args) -> logic.PayloadError:
    with pytest.raises(logic.PayloadError) as info:
        fn(*args)
    return info.value


def test_rows_by_position_and_by_name():
    rows = logic.validate_rows([[1, 2.5, 3], {"mean_area": 9, "mean_radius": 7, "mean_texture": 8}], FEATURES)
    assert rows == [[1.0, 2.5, 3.0], [7.0, 8.0, 9.0]]


def test_wrong_count_names_row_and_first_missing_field():
    e = _err(logic.validate_rows, [[1, 2, 3], [1, 2]], FEATURES)
    assert (e.status, e.row, e.field) == (400, 1, "mean_area")
    assert "expects 3" in e.message


def test_too_many_values_named():
    e = _err(logic.validate_rows, [[1, 2, 3, 4]], FEATURES)
    assert (e.row, e.field) == (0, "#3")


def test_non_numeric_names_row_and_field():
    e = _err(logic.validate_rows, [[1, 2, 3], [1, "x", 3]], FEATURES)
    assert (e.row, e.field) == (1, "mean_texture")
    e = _err(logic.validate_rows, [[True, 2, 3]], FEATURES)
    assert (e.row, e.field) == (0, "mean_radius")


def test_nan_and_inf_rejected():
    for bad in (math.nan, math.inf, -math.inf):
        e = _err(logic.validate_rows, [[1, 2, bad]], FEATURES)
        assert (e.row, e.field) == (0, "mean_area")


def test_missing_and_unknown_named_features():
    e = _err(logic.validate_rows, [{"mean_radius": 1, "mean_texture": 2}], FEATURES)
    assert (e.row, e.field) == (0, "mean_area")
    e = _err(logic.validate_rows, [{"mean_radius": 1, "mean_texture": 2, "mean_area": 3, "age": 4}], FEATURES)
    assert (e.row, e.field) == (0, "age")


def test_body_errors():
    assert _err(logic.parse_predict_body, b"{not json").status == 400
    assert _err(logic.parse_predict_body, b"").status == 400
    assert _err(logic.parse_predict_body, b'{"instances": []}').field == "instances"
    assert _err(logic.parse_predict_body, b'{"instances": [[1]], "user_id": 5}').field == "user_id"
    assert _err(logic.parse_predict_body, b'{"rows": [[1]]}').field == "rows"
    big = b'{"instances": [[' + b"1," * (3 * 1024 * 1024) + b"1]]}"
    assert _err(logic.parse_predict_body, big).status == 413


def test_an_oversized_body_names_the_limit_of_its_route():
    """A prediction's rows go on to InvokeEndpoint; feedback goes no further than the proxy function, whose
    invocation payload (Lambda's 6 MB) is what limits it."""
    over = b" " * logic.MAX_BODY_BYTES + b"{}"
    predict, feedback = _err(logic.parse_predict_body, over), _err(logic.parse_feedback_body, over)
    assert (predict.status, feedback.status) == (413, 413)
    assert predict.message.endswith("(SageMaker InvokeEndpoint)")
    assert feedback.message.endswith(
        f"the limit is {logic.MAX_BODY_BYTES} bytes ({logic.FEEDBACK_BODY_LIMIT})"
    )
    assert "Lambda" in feedback.message and "InvokeEndpoint" not in feedback.message


def test_body_ok():
    req = logic.parse_predict_body('{"instances": [[1, 2, 3]], "user_id": "u1"}')
    assert req == logic.PredictRequest([[1, 2, 3]], "u1")


def test_feedback_for_a_whole_request_id_points_to_the_rows_ids():
    whole = "186c3e46-2d9f-4f50-840b-9d04764aa62f"
    err = _err(logic.parse_feedback_body, json.dumps({"request_id": whole, "outcome": 1}))
    assert err.field == "request_id" and err.row == 0
    assert f"{whole}-0" in str(err) and "per prediction" in str(err)
    (item,) = logic.parse_feedback_body(json.dumps({"request_id": f"{whole}-0", "outcome": 1}))
    assert item.request_id == f"{whole}-0"


def test_feedback_forms():
    one = logic.parse_feedback_body('{"request_id": "r-0", "outcome": 1}')
    many = logic.parse_feedback_body(
        '[{"request_id": "r-0", "outcome": 1}, {"request_id": "r-1", "outcome": 0}]'
    )
    wrapped = logic.parse_feedback_body('{"feedback": [{"request_id": "r-1", "outcome": 0}]}')
    assert one == [logic.FeedbackItem("r-0", 1)]
    assert many[1] == logic.FeedbackItem("r-1", 0)
    assert wrapped == [logic.FeedbackItem("r-1", 0)]
    e = _err(
        logic.parse_feedback_body, '[{"request_id": "r", "outcome": 1}, {"request_id": "r", "outcome": 2}]'
    )
    assert (e.row, e.field) == (1, "outcome")
    assert _err(logic.parse_feedback_body, '{"outcome": 1}').field == "request_id"


# --------------------------------------------------------------------------------------------- routing


def test_sticky_assignment_stable_per_user():
    weights = {"v1": 0.7, "v2": 0.3}
    first = [logic.assign_variant(f"user-{i}", weights) for i in range(500)]
    again = [logic.assign_variant(f"user-{i}", dict(reversed(weights.items()))) for i in range(500)]
    assert first == again
    assert set(first) == {"v1", "v2"}


def test_sticky_assignment_proportional_in_aggregate():
    n = 20_000
    counts = Counter(logic.assign_variant(f"user-{i}", {"v1": 0.7, "v2": 0.3}) for i in range(n))
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(counts["v2"] - 0.3 * n) < 5 * sigma
    assert counts["v1"] + counts["v2"] == n


def test_sticky_assignment_skips_zero_weight():
    assert {logic.assign_variant(f"u{i}", {"v1": 1.0, "v2": 0.0}) for i in range(200)} == {"v1"}
    assert logic.assign_variant("u", {"v1": 0.0}) is None


def test_sticky_users_move_only_when_weights_move():
    """Going from 90/10 to 70/30, users of the champion only ever move to the challenger."""
    before = {f"u{i}": logic.assign_variant(f"u{i}", {"v1": 0.9, "v2": 0.1}) for i in range(2000)}
    after = {u: logic.assign_variant(u, {"v1": 0.7, "v2": 0.3}) for u in before}
    assert all(after[u] == "v2" for u, v in before.items() if v == "v2")


def test_sampling_deterministic_and_proportional():
    ids = [f"req-{i}" for i in range(10_000)]
    assert not any(logic.sampled(i, 0.0) for i in ids)
    assert all(logic.sampled(i, 1.0) for i in ids)
    half = [logic.sampled(i, 0.5) for i in ids]
    assert half == [logic.sampled(i, 0.5) for i in ids]
    assert abs(sum(half) - 5000) < 5 * math.sqrt(10_000 * 0.25)


def test_label_threshold_and_names():
    assert logic.label_for(0.7, 0.7) == 1
    assert logic.label_for(0.69, 0.7) == 0
    assert logic.variant_version("v12") == 12
    assert logic.variant_version("AllTraffic") is None
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/trainserve-models"
    assert (
        logic.model_package_arn(arn, 3)
        == "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/3"
    )


# ------------------------------------------------------------------- warehouse widths, text and numbers


def test_user_id_limit_counts_utf8_bytes_as_the_warehouse_column_does():
    """prediction_log.user_id is VARCHAR(256) in bytes: 'é' is 2 bytes, so 128 fit and 200 do not (400 bytes
    would make the warehouse refuse the whole staged object, other requests' rows included)."""
    ok = logic.parse_predict_body(json.dumps({"instances": [[1, 2, 3]], "user_id": "é" * 128}))
    assert ok.user_id == "é" * 128
    assert (
        logic.parse_predict_body(json.dumps({"instances": [[1]], "user_id": "a" * 256})).user_id == "a" * 256
    )
    e = _err(logic.parse_predict_body, json.dumps({"instances": [[1, 2, 3]], "user_id": "é" * 200}))
    assert (e.status, e.field) == (400, "user_id")
    assert "'user_id' is 400 bytes in UTF-8; the limit is 256 bytes" in e.message
    e = _err(logic.parse_predict_body, json.dumps({"instances": [[1]], "user_id": "a" * 255 + "é"}))
    assert "257 bytes" in e.message
    assert logic.MAX_USER_ID_BYTES == 256 and logic.MAX_REQUEST_ID_BYTES == 128


def test_feedback_request_id_limit_counts_utf8_bytes():
    (item,) = logic.parse_feedback_body(json.dumps({"request_id": "é" * 64, "outcome": 1}))
    assert item.request_id == "é" * 64  # 128 bytes: fits VARCHAR(128)
    body = json.dumps([{"request_id": "a-0", "outcome": 1}, {"request_id": "é" * 100, "outcome": 0}])
    e = _err(logic.parse_feedback_body, body)
    assert (e.status, e.row, e.field) == (400, 1, "request_id")
    assert "feedback 1: 'request_id' is 200 bytes in UTF-8; the limit is 128 bytes" in e.message


def test_a_lone_surrogate_is_not_utf8_text():
    """JSON's \\ud800 escape decodes to a lone surrogate, which no UTF-8 log record can carry."""
    e = _err(logic.parse_predict_body, '{"instances": [[1, 2, 3]], "user_id": "ab\\ud800"}')
    assert (e.status, e.field) == (400, "user_id")
    assert "'user_id' is not valid UTF-8 text: character 2 is a lone surrogate (\\ud800)" in e.message
    body = '[{"request_id": "a-0", "outcome": 1}, {"request_id": "\\udc00x-0", "outcome": 1}]'
    e = _err(logic.parse_feedback_body, body)
    assert (e.status, e.row, e.field) == (400, 1, "request_id")
    assert "feedback 1: 'request_id' is not valid UTF-8 text" in e.message and "\\udc00" in e.message
    # a valid pair of surrogate escapes is one character, and fine
    req = logic.parse_predict_body('{"instances": [[1]], "user_id": "\\ud83d\\ude00"}')
    assert req.user_id == "\U0001f600"


def test_values_past_float32_are_refused_naming_row_and_field():
    """The models take 32-bit floats: a larger magnitude is infinity there (trees fail, logistic regression
    answers no score), and an integer past float's range cannot even be converted."""
    rows = json.loads("[[1, 2, 3], [4, 1" + "0" * 310 + ", 6]]")
    e = _err(logic.validate_rows, rows, FEATURES)
    assert (e.status, e.row, e.field) == (400, 1, "mean_texture")
    assert "an integer of 311 digits is too large" in e.message and "32-bit floats" in e.message
    for bad in (1e300, -1e300, 3.5e38, -3.41e38, 10**39):
        e = _err(logic.validate_rows, [[1, 2, bad]], FEATURES)
        assert (e.row, e.field) == (0, "mean_area"), bad
        assert "too large: the model takes 32-bit floats (at most 3.4028234663852886e+38" in e.message
    edge = logic.FLOAT32_MAX
    assert logic.validate_rows([[edge, -edge, 1e-300]], FEATURES) == [[edge, -edge, 1e-300]]
    e = _err(logic.validate_rows, [[1, 2, math.inf]], FEATURES)
    assert "is not a finite number" in e.message  # NaN/Infinity keep their message


def test_feedback_repeating_a_request_id_is_refused_naming_both_items():
    body = '{"feedback":[{"request_id":"X-0","outcome":1},{"request_id":"X-0","outcome":0}]}'
    e = _err(logic.parse_feedback_body, body)
    assert (e.status, e.row, e.field) == (400, 1, "request_id")
    assert e.message == "request_id X-0 appears in items 0 and 1; send one outcome per prediction"
    body = [{"request_id": "a-0", "outcome": 1}, {"request_id": "b-0", "outcome": 1}]
    e = _err(logic.parse_feedback_body, json.dumps([*body, {"request_id": "a-0", "outcome": 1}]))
    assert "appears in items 0 and 2" in e.message
    assert len(logic.parse_feedback_body(json.dumps(body))) == 2


def test_feedback_request_id_is_taken_in_lower_case_as_predict_answers_it():
    """A UUID's letter case means nothing (RFC 9562): an id sent in upper case names the prediction predict
    answered in lower case, and is logged so (as sent, it would never join its prediction in the warehouse)."""
    answered = "9f1c3e46-2d9f-4f50-840b-9d04764aa62f-0"
    (item,) = logic.parse_feedback_body(json.dumps({"request_id": answered.upper(), "outcome": 1}))
    assert item == logic.FeedbackItem(answered, 1)
    mixed = [
        {"request_id": "9F1C3E46-2d9f-4F50-840B-9d04764aa62f-1", "outcome": 0},
        {"request_id": "Ab-0", "outcome": 1},
    ]
    assert [i.request_id for i in logic.parse_feedback_body(json.dumps({"feedback": mixed}))] == [
        "9f1c3e46-2d9f-4f50-840b-9d04764aa62f-1",
        "ab-0",
    ]
    # only ASCII letters change: the id's size in UTF-8 bytes, checked against the warehouse column, stays
    (item,) = logic.parse_feedback_body(json.dumps({"request_id": "Ä" * 63 + "B", "outcome": 1}))
    assert item.request_id == "Ä" * 63 + "b"
    assert logic.normal_request_id("İ-X") == "İ-x" and len("İ-x".encode()) == len("İ-X".encode())


def test_feedback_ids_differing_only_in_letter_case_are_one_id():
    body = [
        {"request_id": "ABC-0", "outcome": 1},
        {"request_id": "b-0", "outcome": 0},
        {"request_id": "abc-0", "outcome": 0},
    ]
    e = _err(logic.parse_feedback_body, json.dumps(body))
    assert (e.status, e.row, e.field) == (400, 2, "request_id")
    assert e.message == (
        "request_id abc-0 (written ABC-0 and abc-0: letter case does not tell request ids apart) appears in "
        "items 0 and 2; send one outcome per prediction"
    )


@pytest.mark.parametrize(
    "whole", ["186C3E46-2D9F-4F50-840B-9D04764AA62F", "186c3e46-2d9f-4F50-840b-9d04764aa62f"]
)
def test_feedback_for_a_whole_request_id_in_upper_case_is_refused_too(whole):
    e = _err(logic.parse_feedback_body, json.dumps({"request_id": whole, "outcome": 1}))
    assert (e.row, e.field) == (0, "request_id") and "names a whole request" in e.message
    assert "186c3e46-2d9f-4f50-840b-9d04764aa62f-0" in e.message  # the id as predict answers it


@pytest.mark.parametrize("rid", [" 186c3e46-2d9f-4f50-840b-9d04764aa62f", "r-0\n", "\tr-0", "r-0 "])
def test_feedback_request_id_with_surrounding_whitespace_is_refused(rid):
    body = json.dumps([{"request_id": "ok-0", "outcome": 0}, {"request_id": rid, "outcome": 1}])
    e = _err(logic.parse_feedback_body, body)
    assert (e.status, e.row, e.field) == (400, 1, "request_id")
    assert "leading or trailing whitespace" in e.message


def test_feedback_unknown_fields_are_refused():
    e = _err(logic.parse_feedback_body, '{"request_id": "r-0", "outcome": 1, "foo": 2}')
    assert (e.status, e.row, e.field) == (400, 0, "foo")
    assert "feedback 0: unknown field(s) foo; allowed: request_id, outcome" in e.message
    e = _err(
        logic.parse_feedback_body,
        '{"feedback": [{"request_id": "r-0", "outcome": 1}], "request_id": "s-0", "outcome": 0}',
    )
    assert (e.status, e.row, e.field) == (400, None, "outcome")
    assert "unknown field(s) outcome, request_id beside 'feedback'" in e.message
    e = _err(
        logic.parse_feedback_body, '{"feedback": [{"request_id": "r-0", "outcome": 1, "zz": 1, "a": 0}]}'
    )
    assert (e.row, e.field) == (0, "a") and "unknown field(s) a, zz" in e.message


def test_json_nested_too_deeply_is_a_400_not_a_recursion_error():
    deep = "[" * 5000 + "]" * 5000
    for parse, body in (
        (logic.parse_predict_body, '{"instances": ' + deep + "}"),
        (logic.parse_feedback_body, '{"feedback": ' + deep + "}"),
    ):
        e = _err(parse, body)
        assert (e.status, e.message) == (400, "request body nests arrays or objects too deeply to be read")


def test_an_integer_longer_than_python_converts_is_named_where_it_is():
    """More than 4,300 digits: json.loads would raise a ValueError naming no field, with a Python hint."""
    digits = "9" * 5001
    rows = logic.parse_predict_body('{"instances": [[1, 2, ' + digits + "]]}").instances
    e = _err(logic.validate_rows, rows, FEATURES)
    assert (e.status, e.row, e.field) == (400, 0, "mean_area")
    assert "an integer of 5001 digits is too large for a number" in e.message
    assert "set_int_max_str_digits" not in e.message
    e = _err(logic.parse_feedback_body, '{"request_id": "a-0", "outcome": -' + digits + "}")
    assert (e.row, e.field) == (0, "outcome")
    assert e.message == "feedback 0: 'outcome' must be 0 or 1, got an integer of 5001 digits"


def test_a_nul_character_in_text_the_warehouse_loads_is_refused():
    """Redshift's COPY fails on a NUL character, and with it the whole staged batch."""
    e = _err(logic.parse_predict_body, '{"instances": [[1, 2, 3]], "user_id": "a\\u0000b"}')
    assert (e.status, e.field) == (400, "user_id")
    assert "'user_id' contains a NUL character (\\u0000)" in e.message
    e = _err(
        logic.parse_feedback_body,
        '[{"request_id": "a-0", "outcome": 1}, {"request_id": "b\\u0000-0", "outcome": 0}]',
    )
    assert (e.status, e.row, e.field) == (400, 1, "request_id")


def test_values_in_messages_are_written_as_json_writes_them():
    e = _err(logic.validate_rows, [[True, 2, 3]], FEATURES)
    assert e.message == "row 0, feature 'mean_radius': true is not a number"
    e = _err(logic.validate_rows, [[1, None, 3]], FEATURES)
    assert e.message == "row 0, feature 'mean_texture': null is not a number"
    e = _err(logic.validate_rows, [[1, 2, "x" * 100]], FEATURES)
    assert e.message == f"row 0, feature 'mean_area': \"{'x' * 58}… is not a number"
    e = _err(logic.parse_feedback_body, '{"request_id": "a-0"}')
    assert e.message == "feedback 0: 'outcome' must be 0 or 1, it is missing"
    e = _err(logic.parse_feedback_body, '{"request_id": "a-0", "outcome": true}')
    assert e.message == "feedback 0: 'outcome' must be 0 or 1, got true"
