"""Which cloud a command talks to, when neither is reachable: the error says what to do."""

from __future__ import annotations

import os

import pytest

from trainserve.target import TargetError, aws_target


def test_no_local_cloud_and_no_credentials_says_both(monkeypatch, tmp_path, config):
    """No credentials anywhere (and no instance metadata lookup: nothing leaves the machine): the error names
    the missing credentials and the local cloud, not botocore's 'Unable to locate credentials' alone."""
    for key in list(os.environ):
        if key.startswith(
            ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION", "AWS_CONTAINER", "AWS_WEB_IDENTITY")
        ):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    with pytest.raises(TargetError) as err:
        aws_target(config)
    said = str(err.value)
    assert "no local cloud is running, and no AWS credentials were found for us-east-1" in said
    assert "trainserve local start" in said
