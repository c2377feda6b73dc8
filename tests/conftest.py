"""Shared fixtures: fake AWS credentials for every test, project paths, the validated default config, and an
in-process moto server per test module."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import trainserve  # noqa: F401  (puts stacks/, training/, inference/ and lambdas/*/ on sys.path)
from trainserve import PROJECT_ROOT

TEST_REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """Fake credentials so that no test can reach a real AWS account."""
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_REGION", TEST_REGION)
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def project_root():
    return PROJECT_ROOT


@pytest.fixture
def config():
    from stacks.config import load

    return load(PROJECT_ROOT)


@pytest.fixture(scope="module", autouse=True)
def fresh_moto_state():
    """moto's backends are process-wide (in-process ThreadedMotoServer shares them): every test module
    starts with an empty emulated AWS, whatever ran before it on the same worker."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    yield


@pytest.fixture(scope="module")
def moto_url():
    """A moto server in this process on 127.0.0.1 (a free port), with the local cloud's moto patches (as the
    local cloud runs it), for the test module; yields its URL. moto's state is shared by every server in the
    process: reset it (``/moto-api/reset``) or use names of the test's own."""
    from moto.server import ThreadedMotoServer

    from trainserve.local import moto_patches

    moto_patches.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def staging_stream():
    """In-process moto (``mock_aws``) with an ExtendedS3 Firehose stream ``preds`` delivering to the bucket
    ``staging`` under ``firehose/predictions/``: yields (s3 client, firehose client)."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        firehose = boto3.client("firehose", region_name="us-east-1")
        s3.create_bucket(Bucket="staging")
        firehose.create_delivery_stream(
            DeliveryStreamName="preds",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/f",
                "BucketARN": "arn:aws:s3:::staging",
                "Prefix": "firehose/predictions/",
            },
        )
        yield s3, firehose


@pytest.fixture(scope="session")
def local_context():
    """Makes the context a local cloud gives its components: ``local_context(config, state_dir, aws_url,
    **fields)`` (names from the config, the warehouse file in ``state_dir``, unused runtime and API URLs,
    ``fields`` override any of them)."""
    from trainserve.local.component import LocalContext
    from trainserve.target import Names

    def make(config, state_dir, aws_url: str, **fields):
        values = {
            "config": config,
            "names": Names.local(config),
            "state_dir": state_dir,
            "aws_endpoint_url": aws_url,
            "runtime_url": "http://127.0.0.1:9",
            "api_url": "http://127.0.0.1:9",
            "warehouse_path": Path(state_dir) / "warehouse.duckdb",
            "region": TEST_REGION,
            "log": logging.getLogger("test-local"),
        }
        return LocalContext(**{**values, **fields})

    return make
