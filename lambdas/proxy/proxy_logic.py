"""The prediction proxy's decisions, as pure functions (no AWS, no clock, no randomness of its own).

- ``parse_params``: the proxy's live parameters (environment variables) -> a frozen ``ProxyParams``; an
  invalid value is reported and replaced by its safe default (never serve wrong answers);
  ``validate_assignments`` is the strict form the CLI (``trainserve params set``) uses before changing them.
- ``parse_predict_body`` / ``validate_rows`` / ``parse_feedback_body``: request payloads, checked against
  the live model's feature schema before SageMaker is called; errors name the offending row and field.
- ``assign_variant``: sticky assignment, hash(user_id) onto the cumulative current weights.
- ``sampled``: deterministic log sampling per record id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The InvokeEndpoint request payload limit (bytes): a bigger body can never be served.
MAX_BODY_BYTES = 6 * 1024 * 1024
# Why a request body over MAX_BODY_BYTES is refused, per route. A prediction's rows go on to InvokeEndpoint, whose
# request payload limit is 6 MB. Feedback never calls InvokeEndpoint: its limit is Lambda's, the 6 MB
# (6,291,456-byte) payload of a synchronous invocation, which on AWS holds the API Gateway proxy event that
# carries the body (so a body that size never reaches the proxy there; the local API takes up to 10 MiB).
PREDICT_BODY_LIMIT = "SageMaker InvokeEndpoint"
FEEDBACK_BODY_LIMIT = (
    "AWS Lambda's invocation payload limit: API Gateway passes the body to the proxy function in its event"
)
# Warehouse column widths, in bytes of UTF-8 (Redshift's VARCHAR(n) and the local DuckDB loader count bytes, and
# one over-long value makes COPY refuse its whole staged object, other requests' rows included).
MAX_REQUEST_ID_BYTES = 128  # prediction_log.request_id and prediction_feedback.request_id are VARCHAR(128)
MAX_USER_ID_BYTES = 256  # prediction_log.user_id is VARCHAR(256)
# The models take 32-bit floats (scikit-learn's trees cast their input to float32): a larger magnitude becomes
# infinity there, and the model call fails.
FLOAT32_MAX = 3.4028234663852886e38

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
# SageMaker's ProductionVariant.VariantName pattern.
_VARIANT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_VERSION_VARIANT = re.compile(r"^v(\d+)$")
# The id of a whole request (``predict`` answers it beside its rows' ids, which add ``-<row>``): feedback for it
# would never join a prediction, so it is refused with a pointer to the row's id.
_REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# ASCII A-Z -> a-z: a feedback request_id's letter case (``normal_request_id``)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
PREDICT_FIELDS = ("instances", "user_id")  # what POST /predict takes
_FEEDBACK_FIELDS = ("request_id", "outcome")

# How long the proxy keeps DescribeEndpoint's answer (live variants and weights): a weight change reaches
# traffic at most this long after it is made (``trainserve report ab`` starts its window that much later).
ENDPOINT_CACHE_SECONDS = 5.0


class ParamError(ValueError):
    """A proxy parameter has an invalid value (names the parameter and the value)."""

    def __init__(self, name: str, value: str, reason: str):
        super().__init__(f"{name}={value!r} is invalid: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


class PayloadError(ValueError):
    """A request the proxy rejects: HTTP ``status`` with ``{"error", "row", "field"}``."""

    def __init__(self, message: str, *, status: int = 400, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.row = row
        self.field = field

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.row is not None:
            out["row"] = self.row
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class ProxyParams:
    """The proxy's live parameters (the ``params`` column of every log record is this, as JSON)."""

    serving_enabled: bool = True
    target_variant: str | None = None
    decision_threshold: float = 0.5
    log_sample_rate: float = 1.0
    sticky_assignment: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class ParamProblem:
    """An invalid parameter found at cold start, and the safe default used instead."""

    name: str
    value: str
    reason: str
    default: Any


def _parse_bool(name: str, raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ParamError(name, raw, "expected true or false")


def _parse_unit_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ParamError(name, raw, "expected a number between 0 and 1") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ParamError(name, raw, "expected a number between 0 and 1")
    return value


def _parse_variant(name: str, raw: str) -> str | None:
    text = raw.strip()
    if text == "" or text.lower() in ("none", "null"):
        return None
    if not _VARIANT_NAME.match(text):
        raise ParamError(name, raw, "expected a production variant name such as v3, or empty for no pin")
    return text


# Environment variable -> (ProxyParams field, parser). Safe defaults are ProxyParams' defaults.
PARAMS: dict[str, tuple[str, Any]] = {
    "SERVING_ENABLED": ("serving_enabled", _parse_bool),
    "TARGET_VARIANT": ("target_variant", _parse_variant),
    "DECISION_THRESHOLD": ("decision_threshold", _parse_unit_float),
    "LOG_SAMPLE_RATE": ("log_sample_rate", _parse_unit_float),
    "STICKY_ASSIGNMENT": ("sticky_assignment", _parse_bool),
}
SAFE_DEFAULTS = ProxyParams()


def parse_params(env: Mapping[str, str]) -> tuple[ProxyParams, list[ParamProblem]]:
    """Read the parameters from ``env``; a missing one takes its default, an invalid one its safe default
    (and is returned as a ``ParamProblem`` so the caller reports it)."""
    values: dict[str, Any] = {}
    problems: list[ParamProblem] = []
    for env_name, (field_name, parse) in PARAMS.items():
        raw = env.get(env_name)
        if raw is None:
            continue
        try:
            values[field_name] = parse(env_name, str(raw))
        except ParamError as exc:
            problems.append(ParamProblem(env_name, str(raw), exc.reason, getattr(SAFE_DEFAULTS, field_name)))
    return ProxyParams(**values), problems


def validate_assignments(assignments: Mapping[str, str]) -> dict[str, str]:
    """Strict check for ``params set``: every name known and every value valid, else ``ParamError``.

    Returns the normalized environment values to write (e.g. ``TARGET_VARIANT=`` -> ``""``)."""
    out: dict[str, str] = {}
    for name, raw in assignments.items():
        if name not in PARAMS:
            raise ParamError(name, raw, f"unknown parameter; known: {', '.join(PARAMS)}")
        value = PARAMS[name][1](name, raw)
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is None:
            out[name] = ""
        else:
            out[name] = str(value) if isinstance(value, str) else repr(float(value))
    return out


def params_to_env(params: ProxyParams) -> dict[str, str]:
    """The environment variables that express ``params`` (used for defaults from the project config)."""
    return {
        "SERVING_ENABLED": "true" if params.serving_enabled else "false",
        "TARGET_VARIANT": params.target_variant or "",
        "DECISION_THRESHOLD": repr(float(params.decision_threshold)),
        "LOG_SAMPLE_RATE": repr(float(params.log_sample_rate)),
        "STICKY_ASSIGNMENT": "true" if params.sticky_assignment else "false",
    }


# ---------------------------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class PredictRequest:
    instances: list[Any]
    user_id: str | None


def _load_json(body: bytes | str, limit: str) -> Any:
    """The request body's JSON; over ``MAX_BODY_BYTES`` a 413 giving ``limit`` as the reason."""
    size = len(body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)
    if size > MAX_BODY_BYTES:
        raise PayloadError(
            f"request body is {size} bytes; the limit is {MAX_BODY_BYTES} bytes ({limit})",
            status=413,
        )
    try:
        return json_loads(body)
    except JsonTooDeep as exc:
        raise PayloadError(f"request body {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"request body is not valid JSON: {exc}") from None


class JsonTooDeep(ValueError):
    """Valid JSON nested deeper than the parser can follow."""


def json_loads(text: bytes | str) -> Any:
    """``json.loads``, for text from outside: JSON nested too deeply raises ``JsonTooDeep`` (not
    RecursionError), and an integer of more digits than Python converts to an int is read as a
    ``HugeInteger`` (not a ValueError that names no field), so that the field holding it can be named."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonTooDeep("nests arrays or objects too deeply to be read") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    # valid JSON with such an integer: read again (only then: a Python call per integer is slower)
    try:
        return json.loads(text, parse_int=_integer)
    except RecursionError:
        raise JsonTooDeep("nests arrays or objects too deeply to be read") from None


class HugeInteger(str):
    """A JSON integer with more digits than Python converts to an int (``sys.get_int_max_str_digits``)."""

    def __repr__(self) -> str:
        return f"an integer of {len(self.lstrip('-'))} digits"


def _integer(text: str) -> int | HugeInteger:
    try:
        return int(text)
    except ValueError:
        return HugeInteger(text)


def shown(value: Any, limit: int = 60) -> str:
    """A value of a request as JSON writes it (``true``, ``null``, ``"abc"``), cut to ``limit`` characters,
    for an error message."""
    if isinstance(value, HugeInteger):
        return repr(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_warehouse_text(
    text: str, what: str, limit: int, *, row: int | None = None, field: str | None = None
) -> None:
    """Text the warehouse stores in a VARCHAR(``limit``) column: a 400 naming ``what`` unless it can be written
    as UTF-8 (JSON's ``\\ud800`` escape can carry a lone surrogate: the log records could not be encoded), holds
    no NUL character (Redshift's COPY fails on one unless told to load it as NULL, "Preparing your input data",
    Amazon Redshift guide, and with it the whole staged batch it is in) and is at most ``limit`` bytes (VARCHAR
    counts bytes; a longer value would fail its batch the same way)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{what} is not valid UTF-8 text: character {exc.start} is a lone surrogate "
            f"(\\u{ord(text[exc.start]):04x}); send text that can be written as UTF-8",
            row=row,
            field=field,
        ) from None
    if "\x00" in text:
        raise PayloadError(
            f"{what} contains a NUL character (\\u0000), which the warehouse cannot load; send text without it",
            row=row,
            field=field,
        )
    if size > limit:
        raise PayloadError(
            f"{what} is {size} bytes in UTF-8; the limit is {limit} bytes (the warehouse column is "
            f"VARCHAR({limit}), which counts bytes, not characters)",
            row=row,
            field=field,
        )


def parse_predict_body(body: bytes | str | None) -> PredictRequest:
    """``{"instances": [[...]] | [{name: value}], "user_id": optional str}`` -> ``PredictRequest``."""
    if body is None or body in (b"", ""):
        raise PayloadError('request body is empty; expected {"instances": [[...], ...]}')
    data = _load_json(body, PREDICT_BODY_LIMIT)
    if not isinstance(data, dict):
        raise PayloadError('request body must be a JSON object {"instances": [...], "user_id": ...}')
    unknown = sorted(set(data) - set(PREDICT_FIELDS))
    if unknown:
        raise PayloadError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(PREDICT_FIELDS)}", field=unknown[0]
        )
    instances = data.get("instances")
    if not isinstance(instances, list) or not instances:
        raise PayloadError("'instances' must be a non-empty list of rows", field="instances")
    user_id = data.get("user_id")
    if user_id is not None:
        if not isinstance(user_id, str) or not user_id:
            raise PayloadError(
                f"'user_id' must be a non-empty string of at most {MAX_USER_ID_BYTES} bytes (UTF-8)",
                field="user_id",
            )
        _check_warehouse_text(user_id, "'user_id'", MAX_USER_ID_BYTES, field="user_id")
    return PredictRequest(instances=instances, user_id=user_id)


def _number(value: Any, row: int, field: str) -> float:
    if isinstance(value, HugeInteger):
        raise PayloadError(
            f"row {row}, feature '{field}': {value!r} is too large for a number: the model takes 32-bit floats "
            f"(at most {FLOAT32_MAX!r} in magnitude)",
            row=row,
            field=field,
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(
            f"row {row}, feature '{field}': {shown(value)} is not a number", row=row, field=field
        )
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range (JSON integers have no size limit)
        raise PayloadError(
            f"row {row}, feature '{field}': an integer of {len(str(abs(value)))} digits is too large for a "
            f"number: the model takes 32-bit floats (at most {FLOAT32_MAX!r} in magnitude)",
            row=row,
            field=field,
        ) from None
    if -FLOAT32_MAX <= number <= FLOAT32_MAX:
        return number
    if not math.isfinite(number):
        raise PayloadError(
            f"row {row}, feature '{field}': {shown(value)} is not a finite number", row=row, field=field
        )
    raise PayloadError(
        f"row {row}, feature '{field}': {number!r} is too large: the model takes 32-bit floats "
        f"(at most {FLOAT32_MAX!r} in magnitude)",
        row=row,
        field=field,
    )


def validate_rows(instances: Sequence[Any], feature_names: Sequence[str]) -> list[list[float]]:
    """Check every row against the model's feature schema; return the rows as numbers in schema order.

    A row is a list of values in ``feature_names`` order or an object ``{name: value}`` with exactly
    those names."""
    expected = len(feature_names)
    names = set(feature_names)
    out: list[list[float]] = []
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            missing = [n for n in feature_names if n not in row]
            if missing:
                raise PayloadError(
                    f"row {i}: missing feature '{missing[0]}' ({len(missing)} missing)",
                    row=i,
                    field=missing[0],
                )
            extra = sorted(k for k in row if k not in names)
            if extra:
                raise PayloadError(
                    f"row {i}: unknown feature '{extra[0]}'; the model's features are {list(feature_names)}",
                    row=i,
                    field=extra[0],
                )
            out.append([_number(row[n], i, n) for n in feature_names])
        elif isinstance(row, list):
            if len(row) != expected:
                field = feature_names[len(row)] if len(row) < expected else f"#{expected}"
                raise PayloadError(
                    f"row {i} has {len(row)} values; the model expects {expected} ({', '.join(feature_names)})",
                    row=i,
                    field=field,
                )
            out.append([_number(v, i, n) for v, n in zip(row, feature_names, strict=True)])
        else:
            raise PayloadError(f"row {i} must be a list of numbers or an object of features", row=i)
    return out


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str  # as ``normal_request_id`` gives it: the form logged and compared
    outcome: int


def normal_request_id(request_id: str) -> str:
    """The form in which feedback's ``request_id`` is logged and compared: its ASCII letters in lower case.

    ``predict`` answers a prediction's id as lower-case UUID text plus ``-<row>``, and a UUID's letter case means
    nothing (RFC 9562), so ``9F1C...-0`` names the same prediction as ``9f1c...-0``; logged as sent it would never
    join it (the warehouse compares ids as exact text). Only ASCII letters change, so the id's size in UTF-8 bytes
    (checked against the warehouse column) stays the same."""
    return request_id.translate(_ASCII_LOWER)


def parse_feedback_body(body: bytes | str | None) -> list[FeedbackItem]:
    """``{"request_id", "outcome"}``, a list of those, or ``{"feedback": [...]}`` -> feedback items, their ids
    in lower case (``normal_request_id``): ids differing only in letter case are one id."""
    if body is None or body in (b"", ""):
        raise PayloadError('request body is empty; expected {"request_id": "...", "outcome": 0 or 1}')
    data = _load_json(body, FEEDBACK_BODY_LIMIT)
    if isinstance(data, dict) and "feedback" in data:
        beside = sorted(set(data) - {"feedback"})
        if beside:
            raise PayloadError(
                f"unknown field(s) {', '.join(beside)} beside 'feedback'; send either "
                '{"feedback": [{"request_id", "outcome"}, ...]} or one {"request_id", "outcome"}',
                field=beside[0],
            )
        data = data["feedback"]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PayloadError("no feedback given", field="feedback")
    out: list[FeedbackItem] = []
    first_item: dict[
        str, tuple[int, str]
    ] = {}  # normal request_id -> the item that gave it, and as it was written
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PayloadError(f"feedback {i} must be an object {{request_id, outcome}}", row=i)
        unknown = sorted(set(item) - set(_FEEDBACK_FIELDS))
        if unknown:
            raise PayloadError(
                f"feedback {i}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FEEDBACK_FIELDS)}",
                row=i,
                field=unknown[0],
            )
        rid = item.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise PayloadError(
                f"feedback {i}: 'request_id' must be a non-empty string of at most {MAX_REQUEST_ID_BYTES} "
                "bytes (UTF-8)",
                row=i,
                field="request_id",
            )
        _check_warehouse_text(
            rid, f"feedback {i}: 'request_id'", MAX_REQUEST_ID_BYTES, row=i, field="request_id"
        )
        if rid != rid.strip():
            raise PayloadError(
                f"feedback {i}: request_id {shown(rid)} has leading or trailing whitespace; send the prediction's "
                "request_id exactly as predict answered it",
                row=i,
                field="request_id",
            )
        key = normal_request_id(rid)
        if _REQUEST_ID.match(rid):
            raise PayloadError(
                f"feedback {i}: request_id {shown(rid)} names a whole request, and feedback is per prediction: use "
                f"the prediction's own request_id ({key}-0 for the request's first row, as predict answered it)",
                row=i,
                field="request_id",
            )
        outcome = item.get("outcome")
        if isinstance(outcome, bool) or outcome not in (0, 1):
            raise PayloadError(
                f"feedback {i}: 'outcome' must be 0 or 1, "
                + ("it is missing" if "outcome" not in item else f"got {shown(outcome)}"),
                row=i,
                field="outcome",
            )
        if key in first_item:
            # one request's records share one event_time, so the latest-outcome-wins de-duplication could not
            # tell which of the two is meant
            before, written = first_item[key]
            named = (
                rid
                if written == rid
                else f"{key} (written {written} and {rid}: letter case does not tell request ids apart)"
            )
            raise PayloadError(
                f"request_id {named} appears in items {before} and {i}; send one outcome per prediction",
                row=i,
                field="request_id",
            )
        first_item[key] = (i, rid)
        out.append(FeedbackItem(key, int(outcome)))
    return out


# ---------------------------------------------------------------------------------------------- routing


def unit_hash(text: str) -> float:
    """sha256(text) -> a uniform number in [0, 1) (the first 8 bytes as a fraction of 2**64)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def assign_variant(user_id: str, weights: Mapping[str, float]) -> str | None:
    """The variant a user gets: ``unit_hash(user_id)`` on the cumulative weights sorted by variant name.

    Stable per user while the weights stay the same, proportional to the weights in aggregate; variants
    with weight 0 never get users; ``None`` when no variant has weight."""
    live = [(name, float(w)) for name, w in sorted(weights.items()) if w and w > 0]
    total = sum(w for _, w in live)
    if not live or total <= 0:
        return None
    u = unit_hash(user_id) * total
    cumulative = 0.0
    for name, w in live:
        cumulative += w
        if u < cumulative:
            return name
    return live[-1][0]


def pick_weighted(u: float, weights: Mapping[str, float]) -> str | None:
    """The variant at position ``u`` in [0, 1) of the cumulative weights (for routing by the proxy)."""
    live = [(name, float(w)) for name, w in sorted(weights.items()) if w and w > 0]
    total = sum(w for _, w in live)
    if not live:
        return None
    cumulative = 0.0
    for name, w in live:
        cumulative += w
        if u * total < cumulative:
            return name
    return live[-1][0]


def sampled(record_id: str, rate: float) -> bool:
    """Whether the record with ``record_id`` is logged at sample ``rate`` (deterministic per id)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return unit_hash("log:" + record_id) < rate


def label_for(score: float, threshold: float) -> int:
    return 1 if score >= threshold else 0


def variant_version(variant_name: str) -> int | None:
    """``v3`` -> 3 (variant name = ``v{ModelPackageVersion}``); None for another name."""
    m = _VERSION_VARIANT.match(variant_name or "")
    return int(m.group(1)) if m else None


def model_package_arn(group_arn: str, version: int) -> str:
    """The versioned package ARN from the group ARN: ``...:model-package-group/g`` -> ``...:model-package/g/N``."""
    return group_arn.replace(":model-package-group/", ":model-package/", 1) + f"/{version}"
