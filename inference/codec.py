"""Pure serving logic shared by the SageMaker entry point (inference.py) and the fast serving app (serve.py).

decode (request bytes -> validated float64 rows), predict (rows -> P(class 1)), encode (scores -> JSON).
Runs on Python 3.9 in the SageMaker scikit-learn 1.2-1 container: numpy, scikit-learn, joblib and the
standard library only (orjson is used when importable, stdlib json otherwise).

Payloads (docs/DESIGN.md "Serving payloads"):
  text/csv           rows of numbers, no header, one row per line
  application/json   {"instances": [[...], ...]} | {"instances": [{"name": value}, ...]} | [[...], ...] | [...]
                     plus an optional "threshold" field in the object form
Response: {"predictions": [{"score": P(class 1), "label": 0|1}, ...]}, label = score >= threshold.
Rows and columns in error messages are numbered from 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import joblib
import numpy as np

_orjson: Any
try:  # not in the SageMaker container; twice as fast as json where available
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised in the container
    _orjson = None

MODEL_FILE = "model.joblib"
SCHEMA_FILE = "schema.json"
MAX_BODY_BYTES = 6_291_456  # InvokeEndpoint's request payload limit
DEFAULT_THRESHOLD = 0.5
CSV = "text/csv"
JSON = "application/json"
SUPPORTED_CONTENT_TYPES = (CSV, JSON)
_MAX_SHOWN = 40  # characters of an offending value shown in an error message

Body = Union[bytes, bytearray, memoryview, str]


class PayloadError(ValueError):
    """The request cannot be served as sent; ``status`` is the HTTP status the serving app answers with."""

    status = 400


class UnsupportedContentTypeError(PayloadError):
    status = 415


class NotAcceptableError(PayloadError):
    status = 406


class PayloadTooLargeError(PayloadError):
    status = 413


class ModelLoadError(RuntimeError):
    """The model directory is missing a file or holds something that is not a usable model."""


class Schema(NamedTuple):
    feature_names: List[str]
    label: str
    classes: List[Any]


class Batch(NamedTuple):
    """A decoded request: rows as a C-contiguous float64 array (n_rows, n_features) and the threshold."""

    rows: np.ndarray
    threshold: float


class Prediction(NamedTuple):
    scores: np.ndarray  # P(class 1), shape (n_rows,)
    threshold: float


class Model(NamedTuple):
    """A loaded model: the fitted pipeline, its schema and the function that computes P(class 1)."""

    pipeline: Any
    schema: Schema
    score: Any  # Callable[[np.ndarray], np.ndarray]
    compiled: bool  # True when ``score`` is the exact numpy equivalent of the pipeline


# ----------------------------------------------------------------------------------------------- loading


def load_schema(model_dir: str) -> Schema:
    path = os.path.join(model_dir, SCHEMA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path} not found: a model directory holds {MODEL_FILE} and {SCHEMA_FILE}"
        ) from None
    except ValueError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None
    names = raw.get("feature_names") if isinstance(raw, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelLoadError(f"{path}: 'feature_names' must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise ModelLoadError(f"{path}: 'feature_names' has duplicates")
    classes = raw.get("classes", [0, 1])
    if not isinstance(classes, list) or len(classes) != 2:
        raise ModelLoadError(f"{path}: 'classes' must list the two classes of a binary classifier")
    return Schema(feature_names=list(names), label=str(raw.get("label", "target")), classes=classes)


def load_model(model_dir: str, compile_pipeline: bool = True) -> Model:
    """Load ``model.joblib`` and ``schema.json``; compile the pipeline to numpy when that is exact."""
    schema = load_schema(model_dir)
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path} not found: a model directory holds {MODEL_FILE} and {SCHEMA_FILE}")
    try:
        pipeline = joblib.load(path)
    except Exception as e:  # a truncated file, a pickle from other library versions, ...
        raise ModelLoadError(f"{path} cannot be loaded: {type(e).__name__}: {e}") from e
    if not hasattr(pipeline, "predict_proba"):
        raise ModelLoadError(f"{path}: {type(pipeline).__name__} has no predict_proba")
    n_in = getattr(pipeline, "n_features_in_", None)
    if n_in is not None and n_in != len(schema.feature_names):
        raise ModelLoadError(
            f"{path} expects {n_in} features but {SCHEMA_FILE} names {len(schema.feature_names)}"
        )
    classes = list(getattr(pipeline, "classes_", schema.classes))
    if len(classes) != 2:
        raise ModelLoadError(f"{path}: not a binary classifier (classes {classes})")
    # The pipeline is fitted on a DataFrame or on an array; rows arrive as arrays either way.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    sk_score = _sklearn_scorer(pipeline)
    if compile_pipeline:
        compiled = compile_linear(pipeline)
        if compiled is not None and _agrees(compiled, sk_score, len(schema.feature_names), pipeline):
            return Model(pipeline, schema, compiled, True)
    return Model(pipeline, schema, sk_score, False)


def _sklearn_scorer(pipeline):
    def score(rows: np.ndarray) -> np.ndarray:
        return pipeline.predict_proba(rows)[:, 1]

    return score


def compile_linear(pipeline) -> Optional[Any]:
    """The numpy equivalent of ``pipeline.predict_proba(X)[:, 1]`` for StandardScaler* + binary linear model.

    Supported: a Pipeline of StandardScaler / 'passthrough' steps ending in a binary linear classifier whose
    probability is the logistic sigmoid of its decision function (LogisticRegression with one-vs-rest, the
    default for two classes; SGDClassifier with log loss). It repeats scikit-learn's own operations in the
    same order (centre, scale, dot product, intercept, expit), so the result agrees to the last bits.
    Returns None for anything else; ``load_model`` also checks the result on a probe batch.
    """
    from scipy.special import expit  # scikit-learn's own dependency; its expit is what sklearn calls
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in pipeline.steps] if isinstance(pipeline, Pipeline) else [pipeline]
    *pre, final = steps
    scalers = []
    for step in pre:
        if step is None or step == "passthrough":
            continue
        if type(step) is not StandardScaler:
            return None
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None
        if (mean is not None and mean.dtype != np.float64) or (
            scale is not None and scale.dtype != np.float64
        ):
            return None
        scalers.append((mean, scale))
    if type(final) is LogisticRegression:
        if final.multi_class not in ("auto", "ovr"):  # binary "auto" is one-vs-rest: P = expit(decision)
            return None
    elif type(final) is SGDClassifier:
        if final.loss not in ("log_loss", "log"):
            return None
    else:
        return None
    coef = getattr(final, "coef_", None)
    intercept = getattr(final, "intercept_", None)
    if coef is None or coef.shape[0] != 1 or len(final.classes_) != 2 or coef.dtype != np.float64:
        return None
    coef_t = coef.T
    b = intercept

    def score(rows: np.ndarray) -> np.ndarray:
        x = rows
        for mean, scale in scalers:
            x = x.copy() if x is rows else x
            if mean is not None:
                x -= mean
            if scale is not None:
                x /= scale
        d = (x @ coef_t + b).ravel()
        return expit(d, out=d)

    return score


def _agrees(compiled, reference, n_features: int, pipeline) -> bool:
    """True when the compiled scorer matches scikit-learn to 1e-12 on a probe batch (1 row and 64 rows)."""
    rng = np.random.default_rng(12345)
    centre = np.zeros(n_features)
    spread = np.ones(n_features)
    for step in getattr(pipeline, "steps", []):
        est = step[1]
        if getattr(est, "mean_", None) is not None:
            centre = np.asarray(est.mean_, dtype=np.float64)
            spread = (
                np.where(np.asarray(est.scale_) > 0, est.scale_, 1.0) if est.scale_ is not None else spread
            )
            break
    probe = np.ascontiguousarray(centre + rng.standard_normal((64, n_features)) * spread * 2.0)
    try:
        for batch in (probe[:1], probe):
            got, want = compiled(batch), reference(batch)
            if got.shape != want.shape or not np.allclose(got, want, rtol=0.0, atol=1e-12):
                return False
    except Exception:  # any failure of the compiled path means: use scikit-learn
        return False
    return True


# ---------------------------------------------------------------------------------------------- decoding


def media_type(content_type: Optional[str]) -> str:
    """'Text/CSV; charset=utf-8' -> 'text/csv' ('' when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def decode(
    body: Body, content_type: Optional[str], feature_names: Sequence[str], threshold: Any = None
) -> Batch:
    """Validate a request body into a Batch. ``threshold`` (e.g. the X-Threshold header) is the default
    that a JSON ``"threshold"`` field overrides. Raises PayloadError subclasses with precise messages."""
    if isinstance(body, (memoryview, bytearray)):
        body = bytes(body)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body is {len(body)} bytes, the limit is {MAX_BODY_BYTES} bytes")
    mtype = media_type(content_type)
    if mtype == CSV:
        rows = decode_csv(body, feature_names)
    elif mtype == JSON:
        rows, threshold = decode_json(body, feature_names, threshold)
    else:
        shown = content_type if content_type else "(no Content-Type header)"
        raise UnsupportedContentTypeError(
            f"unsupported content type {shown!r}: send text/csv (numbers, no header) or application/json"
        )
    return Batch(rows, parse_threshold(threshold))


def parse_threshold(value: Any) -> float:
    if value is None:
        return DEFAULT_THRESHOLD
    if isinstance(value, bool):
        raise PayloadError(f"threshold must be a number between 0 and 1, got {value!r}")
    try:
        t = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise PayloadError(f"threshold must be a number between 0 and 1, got {_show(value)}") from None
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise PayloadError(f"threshold must be a number between 0 and 1, got {_show(value)}")
    return t


def _text(body: Body) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"request body is not UTF-8 text (byte {e.start})") from None


def decode_csv(body: Body, feature_names: Sequence[str]) -> np.ndarray:
    text = _text(body)
    if text.startswith("\ufeff"):  # a byte-order mark from a spreadsheet export
        text = text[1:]
    if not text.strip():
        raise PayloadError("empty request body: send one CSV row of numbers per line, no header")
    n = len(feature_names)
    if '"' in text:  # quoted cells: the csv module, then the exact path
        lines = [line for line in text.splitlines() if line.strip()]
        cells = [[c.strip() for c in row] for row in csv.reader(io.StringIO("\n".join(lines)))]
        return _rows_from_cells(cells, feature_names, csv_cells=True)
    rows = _csv_fast(text, n)
    if rows is not None:
        return rows
    cells = [line.split(",") for line in text.splitlines() if line.strip()]
    return _rows_from_cells(cells, feature_names, csv_cells=True)


def _csv_fast(text: str, n: int) -> Optional[np.ndarray]:
    """Rows of plain numbers parsed as one JSON array of arrays (orjson's number parser is ~20x faster
    than numpy's string conversion); None when anything is unusual, so the exact path names the problem."""
    if _orjson is None or "true" in text or "false" in text or "null" in text:
        return None
    lines = text.strip().replace("\r\n", "\n").replace("\r", "\n")
    try:
        rows = np.array(_orjson.loads("[[" + lines.replace("\n", "],[") + "]]"), dtype=np.float64)
    except (ValueError, TypeError):  # not JSON numbers (e.g. '.5', 'abc', blank line), or ragged
        return None
    if rows.ndim != 2 or rows.shape[1] != n or not np.isfinite(rows).all():
        return None
    return rows


def _loads(body: Body) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError as e:
            raise PayloadError(f"request body is not valid JSON: {e}") from None
    try:
        return json.loads(_text(body))
    except ValueError as e:
        raise PayloadError(f"request body is not valid JSON: {e}") from None


def decode_json(body: Union[bytes, str], feature_names: Sequence[str], threshold: Any = None):
    if not body.strip():
        raise PayloadError('empty request body: send {"instances": [[...], ...]} or a list of rows')
    doc = _loads(body)
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"instances", "threshold"})
        if "instances" not in doc:
            extra = f" (got keys {unknown})" if unknown else ""
            raise PayloadError(f'JSON object must have an "instances" list of rows{extra}')
        if unknown:
            raise PayloadError(
                f'unknown JSON field(s) {unknown}: expected "instances" and optional "threshold"'
            )
        if doc.get("threshold") is not None:
            threshold = doc["threshold"]
        instances = doc["instances"]
        where = '"instances"'
    else:
        instances = doc
        where = "the JSON body"
    if not isinstance(instances, list):
        raise PayloadError(f"{where} must be a list of rows, got {_json_type(instances)}")
    if not instances:
        raise PayloadError(f"{where} is an empty list: send at least one row")
    n = len(feature_names)
    first = instances[0]
    if isinstance(first, dict):
        return _rows_from_records(instances, feature_names), threshold
    if not isinstance(first, list):  # a single flat row
        instances = [instances]
    # Fast path: a numeric 2-D list. numpy would turn booleans into 0/1 and numeric strings into numbers
    # silently, so it runs only when the body has no boolean and no string (its only quotes are the keys).
    if isinstance(body, bytes):
        plain = b"true" not in body and b"false" not in body and body.count(b'"') == _key_quotes(doc)
    else:
        plain = "true" not in body and "false" not in body and body.count('"') == _key_quotes(doc)
    if plain:
        try:
            rows = np.array(instances, dtype=np.float64)  # null -> nan, caught by isfinite
        except (ValueError, TypeError):  # ragged, or a nested list
            rows = None
        if rows is not None and rows.ndim == 2 and rows.shape[1] == n and np.isfinite(rows).all():
            return rows, threshold
    for i, row in enumerate(instances, 1):
        if not isinstance(row, list):
            raise PayloadError(f"row {i} is {_json_type(row)}, expected a list of {n} numbers")
        if len(row) != n:
            raise PayloadError(_count_message(i, len(row), n, "values"))
    return _rows_from_cells(instances, feature_names, csv_cells=False), threshold


def _key_quotes(doc: Any) -> int:
    return 2 * len(doc) if isinstance(doc, dict) else 0


def _rows_from_records(records: list, feature_names: Sequence[str]) -> np.ndarray:
    names = list(feature_names)
    expected = set(names)
    cells = []
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise PayloadError(
                f"row {i} is {_json_type(rec)}; rows must all be objects (named features) or all lists"
            )
        if len(rec) != len(names) or rec.keys() != expected:
            missing = [k for k in names if k not in rec]
            unknown = [k for k in rec if k not in expected]
            parts = []
            if missing:
                parts.append(f"missing {_names(missing)}")
            if unknown:
                parts.append(f"unknown {_names(unknown)}")
            raise PayloadError(f"row {i}: {'; '.join(parts)} (schema.json names {len(names)} features)")
        cells.append([rec[k] for k in names])
    return _rows_from_cells(cells, feature_names, csv_cells=False)


def _rows_from_cells(cells: List[list], feature_names: Sequence[str], csv_cells: bool) -> np.ndarray:
    """The slow, exact path: convert cell by cell and name the first bad one."""
    n = len(feature_names)
    out = np.empty((len(cells), n), dtype=np.float64)
    for i, row in enumerate(cells, 1):
        if len(row) != n:
            raise PayloadError(_count_message(i, len(row), n, "values"))
        for j, value in enumerate(row):
            out[i - 1, j] = _number(value, i, j, feature_names, csv_cells)
    return out


def _number(value: Any, i: int, j: int, feature_names: Sequence[str], csv_cells: bool) -> float:
    where = f"row {i}, column {j + 1} ({feature_names[j]})"
    if csv_cells:
        s = value.strip()
        try:
            x = float(s)
        except ValueError:
            hint = "" if i > 1 else " (CSV bodies have no header row)"
            raise PayloadError(f"{where}: {_show(s)} is not a number{hint}") from None
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PayloadError(f"{where}: {_show(value)} is not a number")
        try:
            x = float(value)
        except OverflowError:
            raise PayloadError(f"{where}: {_show(value)} is too large") from None
    if not math.isfinite(x):
        raise PayloadError(f"{where}: {_show(value)} is not a finite number")
    return x


def _count_message(i: int, got: int, n: int, what: str) -> str:
    return f"row {i} has {got} {what}, the model expects {n} ({SCHEMA_FILE})"


def _names(names: List[str]) -> str:
    shown = ", ".join(repr(k) for k in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"feature{'s' if len(names) > 1 else ''} {shown}{more}"


def _show(value: Any) -> str:
    text = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "a list"


# ------------------------------------------------------------------------------------- predict and encode


def predict(batch: Batch, model: Model) -> Prediction:
    rows = batch.rows
    n = len(model.schema.feature_names)
    if rows.ndim != 2 or rows.shape[1] != n:  # decode checks this; a direct caller may not have
        raise PayloadError(f"rows have shape {rows.shape}, the model expects (n, {n}) ({SCHEMA_FILE})")
    return Prediction(model.score(rows), batch.threshold)


def check_accept(accept: Optional[str]) -> None:
    """Only JSON is produced: accept absent, */*, application/* or application/json (with parameters)."""
    if not accept:
        return
    for part in accept.split(","):
        m = media_type(part)
        if m in ("*/*", "application/*", JSON):
            return
    raise NotAcceptableError(f"cannot answer with {accept!r}: responses are application/json")


def encode(prediction: Prediction, classes: Sequence[Any] = (0, 1)) -> bytes:
    scores = prediction.scores.tolist()
    t = prediction.threshold
    neg, pos = classes[0], classes[1]
    doc = {"predictions": [{"score": s, "label": pos if s >= t else neg} for s in scores]}
    if _orjson is not None:
        return _orjson.dumps(doc)
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def error_body(message: str) -> bytes:
    doc = {"error": message}
    if _orjson is not None:
        return _orjson.dumps(doc)
    return json.dumps(doc).encode("utf-8")
