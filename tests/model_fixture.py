"""A model artifact as training writes it: ``model.tar.gz`` with ``model.joblib`` and ``schema.json``."""

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
