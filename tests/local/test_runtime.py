"""The local SageMaker runtime: plain boto3 ``sagemaker-runtime`` calls, A/B routing, errors in AWS shapes.

Two real scikit-learn models (one trained on flipped labels, so every answer tells which model made it)
are uploaded to moto S3 and served by an endpoint with two variants. The serving processes run the test
stand-in ``runtime_fake_serve.py`` (same command line and HTTP contract as ``inference/serve.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from model_fixture import model_tarball
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stacks.config import load as load_config
from trainserve import PROJECT_ROOT
from trainserve.local import moto_patches
from trainserve.local.runtime import RuntimeComponent

# one worker runs this module (its tests share module fixtures) under `pytest -n 2 --dist loadgroup`
pytestmark = pytest.mark.xdist_group("test_runtime")

FAKE_SERVE = Path(__file__).with_name("runtime_fake_serve.py")
TEST_BUCKET = "runtime-test-models"
TEST_ROLE = "arn:aws:iam::123456789012:role/model-execution"
TEST_GROUP = "runtime-test-models"
AB_ENDPOINT = "ab-endpoint"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def _model_tarball(flip: bool) -> bytes:
    data = load_breast_cancer()
    y = 1 - data.target if flip else data.target
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data, y)
    return model_tarball(model, data.feature_names)


def _client(service: str, url: str):
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BotoConfig(retries={"max_attempts": 0}, max_pool_connections=16),
    )


def _create_endpoint(sm, name: str, variants: list[tuple[str, str, float]]) -> None:
    config = f"{name}-config-{time.monotonic_ns()}"
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": m,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": w,
            }
            for v, m, w in variants
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)


@pytest.fixture(scope="module")
def control_plane(moto_url):
    """Two models in moto: m-good (ModelDataUrl on the model) and m-flipped (through a model package)."""
    s3 = _client("s3", moto_url)
    sm = _client("sagemaker", moto_url)
    s3.create_bucket(Bucket=TEST_BUCKET)
    s3.put_object(Bucket=TEST_BUCKET, Key="good/model.tar.gz", Body=_model_tarball(flip=False))
    s3.put_object(Bucket=TEST_BUCKET, Key="flipped/model.tar.gz", Body=_model_tarball(flip=True))
    sm.create_model(
        ModelName="m-good",
        ExecutionRoleArn=TEST_ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{TEST_BUCKET}/good/model.tar.gz"},
    )
    sm.create_model_package_group(ModelPackageGroupName=TEST_GROUP)
    package_arn = sm.create_model_package(
        ModelPackageGroupName=TEST_GROUP,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{TEST_BUCKET}/flipped/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    sm.create_model(
        ModelName="m-flipped", ExecutionRoleArn=TEST_ROLE, PrimaryContainer={"ModelPackageName": package_arn}
    )
    _create_endpoint(sm, AB_ENDPOINT, [("v1", "m-good", 0.7), ("v2", "m-flipped", 0.3)])
    return sm


@pytest.fixture(scope="module")
def runtime(control_plane, moto_url, tmp_path_factory, local_context):
    cfg = load_config(PROJECT_ROOT)
    state = tmp_path_factory.mktemp("state")
    ctx = local_context(cfg, state, moto_url, runtime_url="http://127.0.0.1:0", api_url="http://127.0.0.1:0")
    component = RuntimeComponent(serve_script=FAKE_SERVE, reconcile_seconds=0.3)
    started = []
    original = component._start_server  # noqa: SLF001 - record every server ever started

    def recording(model_name):
        server = original(model_name)
        started.append(server)
        return server

    component._start_server = recording  # noqa: SLF001
    component.start(ctx)
    yield component
    component.stop()
    for server in started:  # nothing may outlive the component
        assert not server.alive(), f"the model server of {server.model_name} still runs"


@pytest.fixture(scope="module")
def rt(runtime):
    return _client("sagemaker-runtime", runtime.url)


@pytest.fixture(scope="module")
def sample_rows():
    data = load_breast_cancer()
    return data.data[:1].tolist()


def _invoke(rt, rows, endpoint=AB_ENDPOINT, **kwargs):
    resp = rt.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps({"instances": rows}),
        ContentType="application/json",
        Accept="application/json",
        **kwargs,
    )
    return resp["InvokedProductionVariant"], json.loads(resp["Body"].read())


def test_each_variant_serves_its_own_model_at_its_weight(rt, sample_rows):
    n = 1200

    def call(_):
        return _invoke(rt, sample_rows)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, range(n)))

    scores = {"v1": set(), "v2": set()}
    for variant, body in results:
        scores[variant].add(round(body["predictions"][0]["score"], 6))
    # one model per variant: the good model scores this (malignant) row low, the flipped model high
    assert len(scores["v1"]) == 1 and len(scores["v2"]) == 1
    (good,), (flipped,) = scores["v1"], scores["v2"]
    assert good < 0.5 < flipped
    v2 = sum(1 for variant, _ in results if variant == "v2")
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert abs(v2 - n * 0.3) < 5 * sigma, f"v2 got {v2} of {n} calls at weight 0.3"


def test_target_variant_is_honoured(rt, sample_rows):
    for _ in range(30):
        variant, body = _invoke(rt, sample_rows, TargetVariant="v2")
        assert variant == "v2"
        assert body["predictions"][0]["score"] > 0.5


def test_unknown_endpoint_is_a_validation_error(rt, sample_rows):
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, endpoint="no-such-endpoint")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert (
        err.value.response["Error"]["Message"]
        == "Endpoint no-such-endpoint of account 123456789012 not found."
    )


def test_unknown_target_variant_is_a_validation_error(rt, sample_rows):
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, TargetVariant="v9")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "v9" in err.value.response["Error"]["Message"]


def test_model_failure_is_a_model_error_with_the_original_status(rt):
    with pytest.raises(ClientError) as err:
        rt.invoke_endpoint(EndpointName=AB_ENDPOINT, Body=b"not json", ContentType="application/json")
    response = err.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "bad payload" in response["OriginalMessage"]


def test_live_weights_and_variants_follow_the_control_plane(rt, control_plane, runtime, sample_rows):
    sm = control_plane
    _create_endpoint(sm, "live-endpoint", [("v1", "m-good", 0.5), ("v2", "m-flipped", 0.5)])
    sm.update_endpoint_weights_and_capacities(
        EndpointName="live-endpoint",
        DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredWeight": 0.0}],
    )
    time.sleep(runtime.cache_seconds + 0.1)
    assert {_invoke(rt, sample_rows, endpoint="live-endpoint")[0] for _ in range(40)} == {"v2"}
    # a variant at weight 0 still answers when named
    assert _invoke(rt, sample_rows, endpoint="live-endpoint", TargetVariant="v1")[0] == "v1"

    # UpdateEndpoint (the moto patch) to a config without v1: v1 is gone from the runtime too
    config = "live-endpoint-only-v2"
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": "v2",
                "ModelName": "m-flipped",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sm.update_endpoint(EndpointName="live-endpoint", EndpointConfigName=config)
    time.sleep(runtime.cache_seconds + 0.1)
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, endpoint="live-endpoint", TargetVariant="v1")
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_a_variant_just_made_live_answers_when_named_even_before_the_cache_expires(
    rt, control_plane, runtime, sample_rows, monkeypatch
):
    """A caller that watched DescribeEndpoint show a new variant InService can name it at once, as on AWS:
    the runtime looks a missing target variant up afresh instead of refusing it from a stale cache."""
    sm = control_plane
    monkeypatch.setattr(runtime, "cache_seconds", 600.0)
    time.sleep(0.6)  # the refresh loop does its last pass now and then sleeps for the long interval
    _create_endpoint(sm, "fresh-endpoint", [("v1", "m-good", 1.0)])
    assert _invoke(rt, sample_rows, endpoint="fresh-endpoint")[0] == "v1"  # cached: v1 only

    config = "fresh-endpoint-v1-v3"
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": name,
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 0.5,
            }
            for name, model in (("v1", "m-good"), ("v3", "m-flipped"))
        ],
    )
    sm.update_endpoint(EndpointName="fresh-endpoint", EndpointConfigName=config)
    assert sm.describe_endpoint(EndpointName="fresh-endpoint")["EndpointStatus"] == "InService"
    variant, body = _invoke(rt, sample_rows, endpoint="fresh-endpoint", TargetVariant="v3")
    assert variant == "v3"
    assert body["predictions"][0]["score"] > 0.5  # v3 serves the flipped model
    # a variant the control plane does not have is still refused after the fresh look
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, endpoint="fresh-endpoint", TargetVariant="v9")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    sm.delete_endpoint(EndpointName="fresh-endpoint")  # the last test expects only its own endpoints


def test_target_model_header_is_refused_like_a_single_model_endpoint(rt, sample_rows):
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, TargetModel="model.tar.gz")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "not a multi-model endpoint" in err.value.response["Error"]["Message"]


def test_a_model_that_cannot_be_loaded_is_service_unavailable(control_plane, rt, sample_rows):
    sm = control_plane
    sm.create_model(
        ModelName="m-missing",
        ExecutionRoleArn=TEST_ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{TEST_BUCKET}/nothing-here/model.tar.gz"},
    )
    _create_endpoint(sm, "broken-endpoint", [("v1", "m-missing", 1.0)])
    with pytest.raises(ClientError) as err:
        _invoke(rt, sample_rows, endpoint="broken-endpoint")
    assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "m-missing" in err.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName="broken-endpoint")


def test_invoke_on_the_moto_port_reaches_the_runtime(moto_url, runtime, rt, sample_rows):
    moto_patches.set_runtime_url(runtime.url)
    try:
        via_moto = _client("sagemaker-runtime", moto_url)
        variant, body = _invoke(via_moto, sample_rows, TargetVariant="v2")
        assert variant == "v2"
        assert body["predictions"][0]["score"] > 0.5
        with pytest.raises(ClientError) as err:
            _invoke(via_moto, sample_rows, endpoint="no-such-endpoint")
        assert err.value.response["Error"]["Code"] == "ValidationError"
    finally:
        moto_patches.set_runtime_url(None)


def test_servers_of_models_no_longer_live_are_stopped(control_plane, runtime, rt, sample_rows):
    """Runs last: deleting the endpoints that use a model stops its server (and only then)."""
    sm = control_plane
    for variant in ("v1", "v2"):  # both models have a server (whichever tests ran before in this process)
        _invoke(rt, sample_rows, TargetVariant=variant)
    flipped = runtime._servers["m-flipped"]  # noqa: SLF001
    good = runtime._servers["m-good"]  # noqa: SLF001
    _create_endpoint(sm, "second-endpoint", [("v2", "m-flipped", 1.0)])
    time.sleep(runtime.reconcile_seconds * 2)
    sm.delete_endpoint(EndpointName="second-endpoint")  # m-flipped is still live on the A/B endpoint
    time.sleep(runtime.reconcile_seconds * 3)
    assert flipped.alive() and good.alive()
    with contextlib.suppress(ClientError):
        sm.delete_endpoint(EndpointName="live-endpoint")  # left by the test of live weights, if it ran here
    sm.delete_endpoint(EndpointName=AB_ENDPOINT)  # now neither model is live anywhere
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and runtime.status()["model_servers"]:
        time.sleep(0.1)
    assert runtime.status()["model_servers"] == {}
    assert flipped.process.wait(timeout=5) is not None and good.process.wait(timeout=5) is not None
