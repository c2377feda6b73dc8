"""The proxy handler against moto (registry, endpoint, Firehose -> S3) and a stand-in SageMaker runtime.

moto's ``invoke_endpoint`` returns canned answers and ignores ``TargetVariant``, so the runtime — a
collaborator of the proxy, not the thing under test — is a small stub client that scores each row
(score = first feature / 10) and records the ``TargetVariant`` it was asked for.
"""

from __future__ import annotations

import importlib
import io
import json

import boto3
import prediction_log as plog
import proxy_logic as logic
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from registry_fixture import create_endpoint_config, create_live_endpoint

REGION = "us-east-1"
GROUP = "trainserve-models"
ENDPOINT = "trainserve-endpoint"
BUCKET = "trainserve-staging"
FEATURES = ["f0", "f1", "f2"]
WIRING = {
    "ENDPOINT_NAME": ENDPOINT,
    "MODEL_PACKAGE_GROUP": GROUP,
    "PREDICTIONS_STREAM": "trainserve-predictions",
    "FEEDBACK_STREAM": "trainserve-feedback",
}
LOG_COLUMNS = {
    "request_id",
    "event_time",
    "endpoint_name",
    "variant_name",
    "model_package_arn",
    "model_version",
    "user_id",
    "features",
    "score",
    "label",
    "threshold",
    "latency_ms",
    "params",
}


class StubRuntime:
    """Stand-in SageMaker runtime: score = row[0] / 10; routes 'by weight' to the first variant."""

    def __init__(self):
        self.calls: list[dict] = []

    def invoke_endpoint(self, **kwargs):
        self.calls.append(kwargs)
        rows = json.loads(kwargs["Body"])["instances"]
        body = {"predictions": [{"score": r[0] / 10, "label": int(r[0] / 10 >= 0.5)} for r in rows]}
        return {
            "Body": io.BytesIO(json.dumps(body).encode()),
            "InvokedProductionVariant": kwargs.get("TargetVariant", "v1"),
        }


class CountingFirehose:
    """Wraps the moto Firehose client to count PutRecordBatch calls."""

    def __init__(self, client):
        self.client = client
        self.calls = 0

    def put_record_batch(self, **kwargs):
        self.calls += 1
        return self.client.put_record_batch(**kwargs)


def _create_streams(s3, firehose):
    s3.create_bucket(Bucket=BUCKET)
    for kind in ("predictions", "feedback"):
        firehose.create_delivery_stream(
            DeliveryStreamName=f"trainserve-{kind}",
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{BUCKET}",
                "Prefix": f"firehose/{kind}/",
            },
        )


def _staged(s3, kind: str) -> list[dict]:
    out = []
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"firehose/{kind}/").get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
        assert body.endswith("\n")
        out.extend(json.loads(line) for line in body.splitlines())
    return out


@pytest.fixture(scope="module")
def moto_aws():
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        firehose = boto3.client("firehose", region_name=REGION)
        create_live_endpoint(sm, GROUP, ENDPOINT, FEATURES, {"v1": 0.7, "v2": 0.3})
        _create_streams(s3, firehose)
        yield {"sagemaker": sm, "s3": s3, "firehose": firehose}


@pytest.fixture
def aws(moto_aws):
    """The shared moto account with an empty staging bucket, a fresh stub runtime and call counter."""
    s3 = moto_aws["s3"]
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    yield {**moto_aws, "firehose": CountingFirehose(moto_aws["firehose"]), "sagemaker-runtime": StubRuntime()}


def _proxy(aws, emitted=None, **params):
    import proxy_handler

    env = {**WIRING, **{k.upper(): str(v) for k, v in params.items()}}
    clients = {k: aws[k] for k in ("sagemaker", "firehose", "sagemaker-runtime")}
    emit = emitted.append if emitted is not None else (lambda _line: None)
    return proxy_handler.Proxy.from_env(env, clients=clients, emit=emit)


def _event(path: str, body, method: str = "POST") -> dict:
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


def _call(proxy, path, body, method="POST"):
    r = proxy.handle(_event(path, body, method))
    return r["statusCode"], json.loads(r["body"])


def test_predict_applies_threshold_and_logs_one_record_per_row(aws):
    proxy = _proxy(aws, decision_threshold=0.7)
    status, body = _call(proxy, "/predict", {"instances": [[8, 0, 0], [6, 1, 1], [7, 2, 2]]})
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == [1, 0, 1]  # 0.8, 0.6, 0.7 against 0.7
    assert [p["request_id"] for p in body["predictions"]] == [f"{body['request_id']}-{i}" for i in range(3)]
    assert body["variant"] == "v1" and body["model_version"] == 1
    assert "TargetVariant" not in aws["sagemaker-runtime"].calls[0]  # no user: SageMaker routes
    assert aws["firehose"].calls == 1
    records = _staged(aws["s3"], "predictions")
    assert len(records) == 3 and set(records[0]) == LOG_COLUMNS
    r = records[2]
    assert r["request_id"] == f"{body['request_id']}-2"
    assert json.loads(r["features"]) == {"f0": 7.0, "f1": 2.0, "f2": 2.0}
    assert (r["score"], r["label"], r["threshold"]) == (0.7, 1, 0.7)
    assert r["model_package_arn"].endswith(":model-package/trainserve-models/1")
    assert r["endpoint_name"] == ENDPOINT and r["user_id"] is None and r["latency_ms"] > 0
    assert json.loads(r["params"])["decision_threshold"] == 0.7
    assert len(r["event_time"]) == 26  # 'YYYY-MM-DD HH:MM:SS.ffffff'


def test_named_features_sent_in_schema_order(aws):
    proxy = _proxy(aws)
    status, _ = _call(proxy, "/predict", {"instances": [{"f2": 3, "f0": 1, "f1": 2}]})
    assert status == 200
    assert json.loads(aws["sagemaker-runtime"].calls[0]["Body"]) == {"instances": [[1.0, 2.0, 3.0]]}


@pytest.mark.parametrize(
    ("instances", "row", "field"),
    [
        ([[1, 2, 3], [1, 2]], 1, "f2"),
        ([[1, "a", 3]], 0, "f1"),
        ([{"f0": 1, "f1": 2}], 0, "f2"),
        ([{"f0": 1, "f1": 2, "f2": 3, "zz": 1}], 0, "zz"),
    ],
)
def test_invalid_rows_rejected_before_sagemaker(aws, instances, row, field):
    proxy = _proxy(aws)
    status, body = _call(proxy, "/predict", {"instances": instances})
    assert status == 400
    assert (body["row"], body["field"]) == (row, field)
    assert aws["sagemaker-runtime"].calls == []


def test_nan_and_malformed_json_and_oversize(aws):
    proxy = _proxy(aws)
    assert _call(proxy, "/predict", '{"instances": [[NaN, 1, 2]]}')[1]["field"] == "f0"
    assert _call(proxy, "/predict", "{oops")[0] == 400
    big = '{"instances": [[' + "1," * (3_200_000) + "1]]}"
    assert _call(proxy, "/predict", big)[0] == 413
    assert aws["sagemaker-runtime"].calls == []


def test_kill_switch(aws):
    proxy = _proxy(aws, serving_enabled="false")
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]]})
    assert status == 503 and "SERVING_ENABLED=false" in body["error"]
    assert aws["sagemaker-runtime"].calls == []


def test_pinned_variant(aws):
    proxy = _proxy(aws, target_variant="v2")
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": "anyone"})
    assert status == 200 and body["variant"] == "v2" and body["model_version"] == 2
    assert aws["sagemaker-runtime"].calls[0]["TargetVariant"] == "v2"


def test_a_pin_that_is_not_live_is_ignored_routing_by_the_weights_with_one_warning(aws):
    """A pinned TARGET_VARIANT that is not live (after a rollback, rejection or promote) falls back like any
    invalid parameter: the proxy routes by the weights (sticky users by theirs) instead of refusing every
    request, and says so in its log once, not per request."""
    emitted: list[dict] = []
    proxy = _proxy(aws, emitted, target_variant="v9")
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]]})
    assert status == 200, body
    assert "TargetVariant" not in aws["sagemaker-runtime"].calls[0]  # SageMaker routes by the weights
    assert body["variant"] == "v1" and body["predictions"][0]["variant"] == "v1"
    users = [f"user-{i}" for i in range(20)]
    for u in users:
        status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": u})
        assert status == 200 and body["variant"] == logic.assign_variant(u, {"v1": 0.7, "v2": 0.3})
    warnings = [e for e in emitted if e.get("parameter") == "TARGET_VARIANT"]
    assert len(warnings) == 1
    (w,) = warnings
    assert (w["level"], w["value"], w["endpoint"], w["live_variants"]) == (
        "WARNING",
        "v9",
        ENDPOINT,
        ["v1", "v2"],
    )
    assert "routing by the endpoint's weights" in w["message"]
    assert len(_staged(aws["s3"], "predictions")) == 21  # served and logged as usual


def test_a_pin_that_stops_and_starts_being_live_is_logged_at_each_change(aws):
    """A live pin is used; once the endpoint loses that variant (the controller's UpdateEndpoint after a
    rollback) the proxy routes by the weights and warns once; when it is live again the pin applies again."""
    import proxy_handler

    from trainserve.local import moto_patches

    moto_patches.install()  # moto's UpdateEndpoint, as the local cloud has it
    sm = aws["sagemaker"]
    create_endpoint_config(sm, "ec-v1-only", {"v1": 1.0})
    sm.create_endpoint(EndpointName="pin-endpoint", EndpointConfigName="ec")  # v1 and v2
    emitted: list[dict] = []
    clients = proxy_handler.Clients({k: aws[k] for k in ("sagemaker", "firehose", "sagemaker-runtime")})
    directory = proxy_handler.ModelDirectory(clients, "pin-endpoint", GROUP, ttl=0.0)
    env = {**WIRING, "ENDPOINT_NAME": "pin-endpoint", "TARGET_VARIANT": "v2"}
    proxy = proxy_handler.Proxy.from_env(env, clients=clients, directory=directory, emit=emitted.append)
    calls = aws["sagemaker-runtime"].calls

    def served() -> str:
        status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]]})
        assert status == 200, body
        return body["variant"]

    try:
        assert served() == "v2" and calls[-1]["TargetVariant"] == "v2"
        assert [e for e in emitted if e.get("parameter") == "TARGET_VARIANT"] == []
        sm.update_endpoint(EndpointName="pin-endpoint", EndpointConfigName="ec-v1-only")
        assert [served() for _ in range(3)] == ["v1"] * 3
        assert all("TargetVariant" not in c for c in calls[-3:])
        sm.update_endpoint(EndpointName="pin-endpoint", EndpointConfigName="ec")
        assert served() == "v2" and calls[-1]["TargetVariant"] == "v2"
        notes = [
            (e["level"], e.get("live_variants")) for e in emitted if e.get("parameter") == "TARGET_VARIANT"
        ]
        assert notes == [("WARNING", ["v1"]), ("INFO", None)]
    finally:
        sm.delete_endpoint(EndpointName="pin-endpoint")


def test_rows_that_make_a_model_request_over_the_payload_limit_are_413(aws):
    """The model gets every value as a float (1 -> 1.0): integer rows within the 6 MiB request limit can make
    a model request over InvokeEndpoint's 6 MiB. That is the caller's to split, not an upstream 502: 413,
    nothing invoked, nothing logged."""
    proxy = _proxy(aws)
    n = 460_000
    request = json.dumps({"instances": [[1, 1, 1]] * n}, separators=(",", ":"))
    model_body = json.dumps({"instances": [[1.0, 1.0, 1.0]] * n}, separators=(",", ":"))
    assert len(request) <= logic.MAX_BODY_BYTES < len(model_body)
    status, body = _call(proxy, "/predict", request)
    assert status == 413, body
    assert body["error"] == (
        f"the {n} rows make a model request of {len(model_body)} bytes (every value is sent as a float: 1 as "
        f"1.0); the limit is {logic.MAX_BODY_BYTES} bytes (SageMaker InvokeEndpoint): send fewer rows per request"
    )
    assert aws["sagemaker-runtime"].calls == [] and aws["firehose"].calls == 0
    assert _staged(aws["s3"], "predictions") == []


@pytest.mark.parametrize(
    ("path", "body", "row", "field", "says"),
    [
        ("/predict", {"instances": [[1, 2, 3]], "user_id": "é" * 200}, None, "user_id", "400 bytes in UTF-8"),
        ("/predict", '{"instances": [[1, 2, 3]], "user_id": "u\\ud800"}', None, "user_id", "not valid UTF-8"),
        ("/predict", '{"instances": [[1, 2, 3], [1, 1' + "0" * 310 + ", 3]]}", 1, "f1", "32-bit floats"),
        ("/predict", {"instances": [[1, 2, 3], [1e300, 2, 3]]}, 1, "f0", "32-bit floats"),
        ("/feedback", {"request_id": "é" * 100, "outcome": 1}, 0, "request_id", "200 bytes in UTF-8"),
        (
            "/feedback",
            '[{"request_id": "a-0", "outcome": 1}, {"request_id": "\\ud800-0", "outcome": 1}]',
            1,
            "request_id",
            "not valid UTF-8",
        ),
        (
            "/feedback",
            {"feedback": [{"request_id": "X-0", "outcome": 1}, {"request_id": "X-0", "outcome": 0}]},
            1,
            "request_id",
            "request_id X-0 appears in items 0 and 1; send one outcome per prediction",
        ),
        (
            "/feedback",
            {"feedback": [{"request_id": "X-0", "outcome": 1}, {"request_id": "x-0", "outcome": 0}]},
            1,
            "request_id",
            "request_id x-0 (written X-0 and x-0: letter case does not tell request ids apart) appears in items 0 and 1",
        ),
        ("/feedback", {"request_id": "r-0", "outcome": 1, "foo": 2}, 0, "foo", "unknown field(s) foo"),
    ],
)
def test_what_the_warehouse_or_the_model_cannot_take_is_a_400_before_anything_is_called(
    aws, path, body, row, field, says
):
    """Before: a 500 (surrogate user_id, an integer past float), a 502 (1e300: the model's float32), or a 200
    whose record later made the warehouse drop the whole staged object (over-long ids in bytes) or went to the
    log fallback (a surrogate request_id), or one event_time for two outcomes of one prediction."""
    emitted: list[dict] = []
    proxy = _proxy(aws, emitted)
    status, answer = _call(proxy, path, body)
    assert status == 400, answer
    assert (answer.get("row"), answer["field"]) == (row, field)
    assert says in answer["error"]
    assert aws["sagemaker-runtime"].calls == [] and aws["firehose"].calls == 0
    assert _staged(aws["s3"], "predictions") == [] and _staged(aws["s3"], "feedback") == []
    assert not [e for e in emitted if e.get("level") == "ERROR" or e.get("undelivered_log_record")]


def test_sticky_assignment_targets_the_users_variant(aws):
    proxy = _proxy(aws)
    users = [f"user-{i}" for i in range(40)]
    for u in users + users:
        assert _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": u})[0] == 200
    sent = [c["TargetVariant"] for c in aws["sagemaker-runtime"].calls]
    expected = [logic.assign_variant(u, {"v1": 0.7, "v2": 0.3}) for u in users]
    assert sent == expected + expected
    assert set(sent) == {"v1", "v2"}


class EndpointAfterPromote:
    """The moto SageMaker client, but once ``promoted`` its DescribeEndpoint shows v1 alone (v2 removed), as
    after ``traffic promote v1``; counts DescribeEndpoint calls."""

    def __init__(self, client):
        self.client = client
        self.promoted = False
        self.describes = 0

    def describe_endpoint(self, **kwargs):
        self.describes += 1
        desc = self.client.describe_endpoint(**kwargs)
        if self.promoted:
            desc["ProductionVariants"] = [v for v in desc["ProductionVariants"] if v["VariantName"] == "v1"]
            desc["ProductionVariants"][0]["CurrentWeight"] = 1.0
        return desc

    def __getattr__(self, name):
        return getattr(self.client, name)


class RuntimeWithoutV2(StubRuntime):
    """The runtime after v2 was removed: a request for TargetVariant v2 fails as InvokeEndpoint does."""

    def invoke_endpoint(self, **kwargs):
        if kwargs.get("TargetVariant") == "v2":
            self.calls.append(kwargs)
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": "Target variant v2 not found for endpoint"}},
                "InvokeEndpoint",
            )
        return super().invoke_endpoint(**kwargs)


def test_a_variant_removed_while_its_weights_are_cached_is_routed_again_not_a_502(aws):
    """The proxy caches the endpoint's variants for a few seconds; a request routed to a variant removed
    meanwhile (a promote, a rollback, a release) reads the endpoint again and goes to a live variant, once,
    instead of failing with a 502 (which would also count against the 5XX alarm)."""
    import proxy_handler

    sm = EndpointAfterPromote(aws["sagemaker"])
    runtime = RuntimeWithoutV2()
    clients = {"sagemaker": sm, "firehose": aws["firehose"], "sagemaker-runtime": runtime}
    proxy = proxy_handler.Proxy.from_env(dict(WIRING), clients=clients, emit=lambda _line: None)
    user = next(
        f"user-{i}" for i in range(100) if logic.assign_variant(f"user-{i}", {"v1": 0.7, "v2": 0.3}) == "v2"
    )
    assert (
        _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": "someone"})[0] == 200
    )  # caches v1, v2
    sm.promoted = True
    before = sm.describes
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": user})
    assert status == 200 and body["variant"] == "v1" and body["model_version"] == 1
    assert [c.get("TargetVariant") for c in runtime.calls[-2:]] == ["v2", "v1"]
    assert sm.describes == before + 1  # the endpoint read once more, and the new variants cached
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": user})
    assert status == 200 and body["variant"] == "v1" and sm.describes == before + 1


def test_a_failed_invocation_on_an_unchanged_endpoint_is_still_a_502_without_retry(aws):
    import proxy_handler

    sm = EndpointAfterPromote(aws["sagemaker"])  # never promoted: v2 stays live
    runtime = RuntimeWithoutV2()
    clients = {"sagemaker": sm, "firehose": aws["firehose"], "sagemaker-runtime": runtime}
    proxy = proxy_handler.Proxy.from_env(dict(WIRING), clients=clients, emit=lambda _line: None)
    user = next(
        f"user-{i}" for i in range(100) if logic.assign_variant(f"user-{i}", {"v1": 0.7, "v2": 0.3}) == "v2"
    )
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": user})
    assert status == 502 and "Target variant v2 not found" in body["error"]
    assert len(runtime.calls) == 1 and sm.describes == 2  # the cache read, then the check: no second try


def test_sticky_off_lets_sagemaker_route(aws):
    proxy = _proxy(aws, sticky_assignment="false")
    _call(proxy, "/predict", {"instances": [[1, 2, 3]], "user_id": "u"})
    assert "TargetVariant" not in aws["sagemaker-runtime"].calls[0]


def test_sampling_rate_zero_logs_nothing(aws):
    proxy = _proxy(aws, log_sample_rate=0)
    assert _call(proxy, "/predict", {"instances": [[1, 2, 3]] * 50})[0] == 200
    assert aws["firehose"].calls == 0
    assert _staged(aws["s3"], "predictions") == []


def test_sampling_half_logs_about_half_deterministically(aws):
    proxy = _proxy(aws, log_sample_rate=0.5)
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3]] * 400})
    assert status == 200 and len(body["predictions"]) == 400
    records = _staged(aws["s3"], "predictions")
    assert 140 < len(records) < 260
    expected = {p["request_id"] for p in body["predictions"] if logic.sampled(p["request_id"], 0.5)}
    assert {r["request_id"] for r in records} == expected
    assert aws["firehose"].calls == 1


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_a_request_s_records_are_handed_over_compactly_and_read_as_what_is_staged(aws, rate):
    """Unsampled, the records carry their ids as the request id and a count, and their rows as the JSON text
    the model got: pickling them (to the local log delivery process) copies that text instead of writing
    every number. Sampled, the picked ids and rows are lists. Either way they read as the staged records."""
    import pickle

    import proxy_handler
    from prediction_log import JsonRows, NumberedIds

    handed: list = []

    class Capture:
        def put(self, records):
            handed.append(records)
            return plog.DeliveryResult(delivered=len(records))

    env = {**WIRING, "LOG_SAMPLE_RATE": str(rate)}
    clients = {k: aws[k] for k in ("sagemaker", "firehose", "sagemaker-runtime")}
    proxy = proxy_handler.Proxy.from_env(
        env, clients=clients, delivery="sync", make_logger=lambda _s: Capture()
    )
    rows = [[i / 7, 1e-9 * i, -0.0] for i in range(200)]
    status, body = _call(proxy, "/predict", {"instances": rows})
    assert status == 200
    (records,) = handed
    sent = aws["sagemaker-runtime"].calls[0]["Body"]
    if rate == 1.0:
        assert isinstance(records.request_ids, NumberedIds) and isinstance(records.rows, JsonRows)
        assert records.rows.text is sent  # the text the model got, not a copy
        data = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        assert len(data) < len(sent) + 3000  # the text, the scores and labels, and the shared fields
    else:
        assert isinstance(records.request_ids, list) and isinstance(records.rows, list)
    expected_ids = [p["request_id"] for p in body["predictions"] if logic.sampled(p["request_id"], rate)]
    back = pickle.loads(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    assert [r["request_id"] for r in back] == expected_ids
    by_id = {p["request_id"]: i for i, p in enumerate(body["predictions"])}
    assert [json.loads(r["features"].text()) for r in back] == [
        dict(zip(("f0", "f1", "f2"), rows[by_id[rid]], strict=True)) for rid in expected_ids
    ]
    assert list(plog.encode_all(back)) == [plog.encode(r) for r in records]


def test_feedback_logged(aws):
    proxy = _proxy(aws)
    status, body = _call(
        proxy, "/feedback", [{"request_id": "a-0", "outcome": 1}, {"request_id": "b-0", "outcome": 0}]
    )
    assert (status, body) == (200, {"accepted": 2})
    recs = _staged(aws["s3"], "feedback")
    assert [(r["request_id"], r["outcome"]) for r in recs] == [("a-0", 1), ("b-0", 0)]
    assert set(recs[0]) == {"request_id", "event_time", "outcome"}
    assert _call(proxy, "/feedback", {"request_id": "a-0", "outcome": 3})[1]["field"] == "outcome"


def test_feedback_with_an_upper_case_request_id_joins_its_prediction(aws):
    """predict answers ids in lower case; feedback naming one in upper case (a UUID's letter case means
    nothing) is logged under the id the prediction's record carries, so the two join in the warehouse."""
    proxy = _proxy(aws)
    status, body = _call(proxy, "/predict", {"instances": [[8, 0, 0], [2, 1, 1]]})
    assert status == 200, body
    first, second = (p["request_id"] for p in body["predictions"])
    status, answer = _call(
        proxy,
        "/feedback",
        [{"request_id": first.upper(), "outcome": 1}, {"request_id": second, "outcome": 0}],
    )
    assert (status, answer) == (200, {"accepted": 2})
    logged = {r["request_id"] for r in _staged(aws["s3"], "predictions")}
    feedback = _staged(aws["s3"], "feedback")
    assert [(r["request_id"], r["outcome"]) for r in feedback] == [(first, 1), (second, 0)]
    assert {r["request_id"] for r in feedback} <= logged


def test_firehose_total_failure_still_200_and_records_in_log(aws):
    class Broken:
        def put_record_batch(self, **kwargs):
            raise RuntimeError("firehose is down")

    emitted: list[dict] = []
    aws["firehose"] = Broken()
    proxy = _proxy(aws, emitted)
    proxy.predictions_log.sleep = lambda _s: None
    status, body = _call(proxy, "/predict", {"instances": [[1, 2, 3], [4, 5, 6]]})
    assert status == 200
    lost = [e["record"] for e in emitted if e.get("undelivered_log_record")]
    assert sorted(r["request_id"] for r in lost) == sorted(p["request_id"] for p in body["predictions"])
    assert all(set(r) == LOG_COLUMNS for r in lost)


def test_invalid_params_at_cold_start_fall_back_and_are_reported(aws):
    emitted: list[dict] = []
    proxy = _proxy(aws, emitted, decision_threshold="abc", log_sample_rate="2")
    assert proxy.params.decision_threshold == 0.5 and proxy.params.log_sample_rate == 1.0
    reported = {(e["parameter"], e["value"]) for e in emitted if e.get("level") == "WARNING"}
    assert reported == {("DECISION_THRESHOLD", "abc"), ("LOG_SAMPLE_RATE", "2")}
    status, body = _call(proxy, "/predict", {"instances": [[6, 0, 0]]})
    assert status == 200 and body["predictions"][0]["label"] == 1  # 0.6 against the safe 0.5


def test_no_endpoint_yet_is_503(aws):
    status, body = _call(_proxy(aws, endpoint_name="not-created-yet"), "/predict", {"instances": [[1, 2, 3]]})
    assert status == 503 and "does not exist" in body["error"]


def test_routes_and_methods(aws):
    proxy = _proxy(aws)
    assert _call(proxy, "/nope", {})[0] == 404
    for path in ("/foo/predict", "/prod/feedback", "/predict/x"):  # only the API's own resources
        status, body = _call(proxy, path, {"instances": [[1, 2, 3]]})
        assert status == 404 and f"no route {path}" in body["error"]
    assert _call(proxy, "/predict/", {"instances": [[1, 2, 3]]})[0] == 200
    assert aws["sagemaker-runtime"].calls != [] and len(aws["sagemaker-runtime"].calls) == 1
    assert _call(proxy, "/predict", {}, method="GET")[0] == 405


@pytest.mark.parametrize("path", ["/predict", "/feedback", "/predict/"])
@pytest.mark.parametrize("method", ["GET", "PUT", "delete"])
def test_a_wrong_method_on_a_route_is_405_with_allow_post(aws, path, method):
    """RFC 9110: a 405 names the methods the resource takes in ``Allow``. Before: no Allow header, and a body
    saying "GET not allowed on /predict; use POST". (On AWS, API Gateway answers such a request itself: the
    API defines only POST; this is the answer to a direct invocation and the local API's.)"""
    response = _proxy(aws).handle(_event(path, {"instances": [[1, 2, 3]]}, method))
    route = path.rstrip("/")
    assert response["statusCode"] == 405 and response["headers"]["Allow"] == "POST"
    assert json.loads(response["body"]) == {
        "error": f"method {method.upper()} is not allowed on {route}; use POST {route}"
    }
    assert aws["sagemaker-runtime"].calls == [] and aws["firehose"].calls == 0


def test_a_feedback_body_over_the_limit_names_lambda_s_limit_not_invoke_endpoint(aws):
    """Feedback never calls InvokeEndpoint: its 413 said "(SageMaker InvokeEndpoint)" all the same."""
    big = json.dumps({"request_id": "a" * logic.MAX_BODY_BYTES + "-0", "outcome": 1})
    status, body = _call(_proxy(aws), "/feedback", big)
    assert status == 413 and "InvokeEndpoint" not in body["error"]
    assert body["error"] == (
        f"request body is {len(big)} bytes; the limit is 6291456 bytes (AWS Lambda's invocation payload limit: "
        "API Gateway passes the body to the proxy function in its event)"
    )
    assert aws["firehose"].calls == 0
    # a prediction's body still names the model call's limit
    status, body = _call(_proxy(aws), "/predict", '{"instances": [[' + "1," * 3_200_000 + "1]]}")
    assert status == 413 and body["error"].endswith("the limit is 6291456 bytes (SageMaker InvokeEndpoint)")


def test_module_handler_reads_environment_at_cold_start(aws, monkeypatch, capsys):
    """``handler`` uses the proxy built from os.environ when the module loads (the Lambda cold start)."""
    import proxy_handler

    for k, v in {**WIRING, "DECISION_THRESHOLD": "1.7", "TARGET_VARIANT": "v2"}.items():
        monkeypatch.setenv(k, v)
    module = importlib.reload(proxy_handler)
    try:
        module.PROXY.clients._given = {"sagemaker-runtime": aws["sagemaker-runtime"]}
        module.PROXY.clients._made.clear()
        out = capsys.readouterr().out
        warning = json.loads(out.strip().splitlines()[-1])
        assert (warning["parameter"], warning["value"], warning["default"]) == (
            "DECISION_THRESHOLD",
            "1.7",
            0.5,
        )
        response = module.handler(_event("/predict", {"instances": [[6, 0, 0]]}), None)
        body = json.loads(response["body"])
        assert response["statusCode"] == 200, body
        assert body["variant"] == "v2" and body["predictions"][0]["label"] == 1
        assert len(_staged(aws["s3"], "predictions")) == 1
    finally:
        monkeypatch.undo()
        importlib.reload(proxy_handler)


def _tarball(files: dict[str, bytes]) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_schema_from_model_artifact_when_metadata_missing(aws):
    """A package without feature_names metadata: the proxy reads schema.json from its model.tar.gz."""
    sm, s3 = aws["sagemaker"], aws["s3"]
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(
        Bucket="artifacts",
        Key="m/model.tar.gz",
        Body=_tarball(
            {"model.joblib": b"x", "schema.json": json.dumps({"feature_names": ["a", "b"]}).encode()}
        ),
    )
    sm.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://artifacts/m/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )  # version 3, no metadata
    aws["sagemaker-runtime"].calls.clear()
    clients = {**{k: aws[k] for k in ("sagemaker", "firehose", "sagemaker-runtime")}, "s3": s3}
    import proxy_handler

    directory = proxy_handler.ModelDirectory(proxy_handler.Clients(clients), ENDPOINT, GROUP)
    assert directory.feature_names("v3") == ("a", "b")
    s3.put_object(Bucket="artifacts", Key="m/model.tar.gz", Body=b"not a tarball")
    fresh = proxy_handler.ModelDirectory(proxy_handler.Clients(clients), ENDPOINT, GROUP)
    with pytest.raises(proxy_handler.ProxyError, match="no readable feature list"):
        fresh.feature_names("v3")


class CountingS3:
    def __init__(self, real):
        self.real = real
        self.gets: list[str] = []

    def get_object(self, **kwargs):
        self.gets.append(kwargs["Key"])
        return self.real.get_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _register(sm, metadata: dict, model_data_url: str = "s3://artifacts/none/model.tar.gz") -> str:
    """A new approved package of the test group; its variant name (v<version>)."""
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        CustomerMetadataProperties=metadata,
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    return "v" + arn.rsplit("/", 1)[-1]


def test_features_from_features_uri_read_once_per_package(aws):
    """Training's metadata names ``features.json`` (``features_uri``); the proxy reads it once per ARN and
    validates payloads against it (named features reordered, a missing one refused)."""
    import proxy_handler

    sm, s3 = aws["sagemaker"], aws["s3"]
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(
        Bucket="artifacts", Key="exec/features.json", Body=json.dumps({"feature_names": ["x", "y"]}).encode()
    )
    variant = _register(sm, {"features_uri": "s3://artifacts/exec/features.json", "n_features": "2"})
    counting = CountingS3(s3)
    clients = {"sagemaker": sm, "s3": counting}
    directory = proxy_handler.ModelDirectory(proxy_handler.Clients(clients), ENDPOINT, GROUP)
    assert directory.feature_names(variant) == ("x", "y")
    assert directory.feature_names(variant) == ("x", "y")
    assert counting.gets == ["exec/features.json"]  # cached per ARN, no model.tar.gz download

    names = directory.feature_names(variant)
    assert logic.validate_rows([{"y": 2.0, "x": 1.0}], names) == [[1.0, 2.0]]
    with pytest.raises(logic.PayloadError, match="missing feature 'y'"):
        logic.validate_rows([{"x": 1.0}], names)


def test_live_endpoint_payloads_validated_against_features_uri(aws):
    """The live packages of these tests are registered as training does (features_uri, no feature list in
    the metadata): the proxy orders named features and refuses a short row by those features."""
    props = aws["sagemaker"].describe_model_package(ModelPackageName=_proxy(aws).directory.package_arn("v1"))[
        "CustomerMetadataProperties"
    ]
    assert "feature_names" not in props and props["features_uri"].endswith("/features.json")
    proxy = _proxy(aws)
    status, body = _call(proxy, "/predict", {"instances": [[1, 2]]})
    assert status == 400 and "f2" in json.dumps(body)
    status, _ = _call(proxy, "/predict", {"instances": [{"f2": 3, "f0": 1, "f1": 2}]})
    assert status == 200


def test_features_uri_unreadable_falls_back_to_the_artifact(aws):
    import proxy_handler

    sm, s3 = aws["sagemaker"], aws["s3"]
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(
        Bucket="artifacts",
        Key="fb/model.tar.gz",
        Body=_tarball({"schema.json": json.dumps({"feature_names": ["p", "q"]}).encode()}),
    )
    variant = _register(
        sm,
        {"features_uri": "s3://artifacts/fb/missing.json"},
        model_data_url="s3://artifacts/fb/model.tar.gz",
    )
    directory = proxy_handler.ModelDirectory(
        proxy_handler.Clients({"sagemaker": sm, "s3": s3}), ENDPOINT, GROUP
    )
    assert directory.feature_names(variant) == ("p", "q")


def test_old_packages_feature_names_metadata_still_read(aws):
    """Packages registered before features_uri carry a JSON list in the metadata (moto now refuses that
    value, as SageMaker does, so the description is stubbed)."""
    import proxy_handler

    class OldPackage:
        def __init__(self, real):
            self.real = real
            self.meta = real.meta

        def describe_model_package(self, **kwargs):
            described = self.real.describe_model_package(**kwargs)
            return {**described, "CustomerMetadataProperties": {"feature_names": json.dumps(["m", "n"])}}

        def __getattr__(self, name):
            return getattr(self.real, name)

    directory = proxy_handler.ModelDirectory(
        proxy_handler.Clients({"sagemaker": OldPackage(aws["sagemaker"])}), ENDPOINT, GROUP
    )
    assert directory.feature_names("v1") == ("m", "n")


def test_group_arn_without_describe_group_permission(aws):
    """Without sagemaker:DescribeModelPackageGroup the package ARN is built from the caller identity."""
    import proxy_handler
    from botocore.exceptions import ClientError

    class NoGroupAccess:
        def __init__(self, real):
            self.real = real
            self.meta = real.meta

        def describe_model_package_group(self, **kwargs):
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "DescribeModelPackageGroup"
            )

        def __getattr__(self, name):
            return getattr(self.real, name)

    clients = proxy_handler.Clients(
        {"sagemaker": NoGroupAccess(aws["sagemaker"]), "sts": boto3.client("sts", region_name=REGION)}
    )
    directory = proxy_handler.ModelDirectory(clients, ENDPOINT, GROUP)
    assert (
        directory.package_arn("v2")
        == "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/2"
    )
    assert directory.feature_names("v2") == tuple(FEATURES)


def test_base64_encoded_body(aws):
    import base64

    event = _event("/predict", "")
    event["body"] = base64.b64encode(json.dumps({"instances": [[9, 0, 0]]}).encode()).decode()
    event["isBase64Encoded"] = True
    response = _proxy(aws).handle(event)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["predictions"][0]["score"] == 0.9


def test_background_delivery_buffers_as_many_records_as_it_is_given():
    """A Lambda environment buffers 20,000 log records after its responses; the local API gives more."""
    import background_delivery
    import proxy_handler

    env = {**WIRING}
    default = proxy_handler.Proxy.from_env(env, clients={}, delivery="background")
    sized = proxy_handler.Proxy.from_env(env, clients={}, delivery="background", buffer_records=7)
    try:
        assert default.predictions_log.max_buffered == background_delivery.MAX_BUFFERED == 20_000
        assert sized.predictions_log.max_buffered == sized.feedback_log.max_buffered == 7
    finally:
        default.close()
        sized.close()
