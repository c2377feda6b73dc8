"""A model artifact as training writes it (``model.tar.gz`` with ``model.joblib`` and ``schema.json``), and
its registration and approval as a person does it with plain boto3."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from typing import Any

import joblib


def model_tarball(model: Any, feature_names: Sequence[str], label: str = "target") -> bytes:
    """The bytes of ``model.tar.gz`` for a fitted ``model`` taking ``feature_names``."""
    buf = io.BytesIO()
    joblib.dump(model, buf)
    schema = {"feature_names": list(feature_names), "label": label, "classes": [0, 1]}
    files = {"model.joblib": buf.getvalue(), "schema.json": json.dumps(schema).encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return out.getvalue()


IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def register_approved(s3: Any, sm: Any, names: Any, tarball: bytes, key: str = "v1/model.tar.gz") -> str:
    """Upload ``tarball`` to the artifacts bucket, register it in the model package group (no feature list in
    the metadata: the proxy reads ``schema.json`` in the artifact) and approve it; its package ARN."""
    s3.put_object(Bucket=names.artifacts_bucket, Key=key, Body=tarball)
    arn = sm.create_model_package(
        ModelPackageGroupName=names.model_package_group,
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{names.artifacts_bucket}/{key}"}],
            "SupportedContentTypes": ["text/csv", "application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    return arn
