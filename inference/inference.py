"""SageMaker scikit-learn container (1.2-1, Python 3.9) entry point: SAGEMAKER_PROGRAM=inference.py.

The container (nginx -> gunicorn -> sagemaker-containers' Flask worker) calls ``model_fn`` once per worker,
then ``input_fn`` -> ``predict_fn`` -> ``output_fn`` per request. Each is a thin wrapper over codec.py.

Errors: bad payloads raise ``codec.PayloadError`` (a ValueError) whose message names the row, column and
value. In this container, sagemaker-containers' Transformer re-raises any exception from a user function
as its ``ClientError``; only its own ``UnsupportedFormatError`` maps to 415/406, so the worker answers 500
and InvokeEndpoint reports a ModelError (HTTP 424, ``OriginalStatusCode`` 500) while the message goes to
the endpoint's CloudWatch log. The prediction API validates payloads against the schema before it calls
the endpoint, and the fast serving app (serve.py, same codec) answers 400/413/415 with the message.
"""

from __future__ import annotations

import os
import sys

# In the container this directory (the unpacked sourcedir) is already on sys.path; from the repository
# (``inference.inference``) it is added, so that every importer shares the one top-level ``codec`` module.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import codec  # noqa: E402

_schema = None  # set by model_fn (once per worker, before any request)


def _feature_names():
    global _schema
    if _schema is None:
        _schema = codec.load_schema(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    return _schema.feature_names


def model_fn(model_dir):
    """Load model.joblib + schema.json; returns a ``codec.Model`` (compiled to numpy where exact)."""
    global _schema
    model = codec.load_model(model_dir)
    _schema = model.schema
    return model


def input_fn(request_body, request_content_type):
    """text/csv or application/json body (str or bytes) -> ``codec.Batch`` (2-D float64 rows, threshold)."""
    if request_body is None:
        request_body = b""
    return codec.decode(request_body, request_content_type, _feature_names())


def predict_fn(input_data, model):
    """``codec.Batch`` -> ``codec.Prediction`` (P(class 1) per row and the decision threshold)."""
    return codec.predict(input_data, model)


def output_fn(prediction, accept):
    """-> (JSON body, content type); the container turns the tuple into its response."""
    codec.check_accept(accept)
    classes = _schema.classes if _schema is not None else (0, 1)
    return codec.encode(prediction, classes), codec.JSON
