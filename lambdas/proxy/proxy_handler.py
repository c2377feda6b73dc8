"""The prediction API's proxy Lambda (API Gateway REST proxy integration).

Takes: an API Gateway REST proxy event, ``POST /predict`` or ``POST /feedback``.
Changes: calls SageMaker ``InvokeEndpoint`` on the project's endpoint and sends one log record per
prediction (and one per feedback outcome) to Firehose, after the response on Lambda (``background_delivery``);
returns the API Gateway proxy response.

Behaviour is set by environment variables, read once per cold start into a frozen ``ProxyParams``
(``trainserve params set`` changes them; Lambda starts new environments with the new values):

- wiring: ``ENDPOINT_NAME``, ``MODEL_PACKAGE_GROUP``, ``PREDICTIONS_STREAM``, ``FEEDBACK_STREAM``;
- parameters: ``SERVING_ENABLED`` (kill switch -> 503), ``TARGET_VARIANT`` (pin), ``DECISION_THRESHOLD``
  (score -> label), ``LOG_SAMPLE_RATE`` (0..1), ``STICKY_ASSIGNMENT`` (user_id -> same variant).

An invalid parameter value is reported as a structured log line and replaced by its safe default. A pinned
``TARGET_VARIANT`` that is not (or no longer) live on the endpoint is ignored the same way: the proxy routes
by the endpoint's weights, as if unpinned, and logs a warning once per change of what is live (not per
request); the response names the variant that served.
Payloads are validated against the live model's feature names (the ``features.json`` named by the model
package's ``features_uri`` metadata; see ``ModelDirectory.feature_names``) before SageMaker is called. The logic is in ``proxy_logic`` (pure); Firehose delivery is in ``prediction_log``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import random
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import proxy_logic as logic
from background_delivery import (
    MAX_BUFFERED,
    BackgroundDelivery,
    LambdaDeliveryExtension,
    install_sigterm_drain,
    lambda_runtime_api,
)
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from prediction_log import (
    FIREHOSE_CLIENT_CONFIG,
    FirehoseLogger,
    JsonRows,
    NumberedIds,
    PredictionRecords,
    log_json,
)

ENDPOINT_CACHE_SECONDS = logic.ENDPOINT_CACHE_SECONDS
# API Gateway gives the integration 29 s. The model call may use most of it; Firehose gets short timeouts and
# no botocore retries (prediction_log retries failed entries itself within its own time budget).
_DEFAULT_CONFIG = BotoConfig(
    connect_timeout=2, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}
)
_CLIENT_CONFIGS = {
    "sagemaker-runtime": BotoConfig(connect_timeout=2, read_timeout=25, retries={"max_attempts": 1}),
    "firehose": FIREHOSE_CLIENT_CONFIG,
}
# sync: the Firehose call is made inside the request; background: after the response (background_delivery)
DELIVERY_MODES = ("sync", "background")
_SERVING_STATUSES = ("InService", "Updating", "SystemUpdating", "UpdateRollbackFailed")
# The routes (API Gateway resources) the proxy serves.
ROUTES = ("/predict", "/feedback")


class ProxyError(Exception):
    """A request the proxy cannot serve: HTTP ``status`` and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


@dataclass(frozen=True)
class Wiring:
    """The resources the proxy talks to (set by the stack / the local cloud, not tuned by operators)."""

    endpoint_name: str
    model_package_group: str
    predictions_stream: str
    feedback_stream: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Wiring:
        return cls(
            endpoint_name=env.get("ENDPOINT_NAME", ""),
            model_package_group=env.get("MODEL_PACKAGE_GROUP", ""),
            predictions_stream=env.get("PREDICTIONS_STREAM", ""),
            feedback_stream=env.get("FEEDBACK_STREAM", ""),
        )


def now_text() -> str:
    """UTC now as the warehouse's TIMESTAMP text: ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Clients:
    """boto3 clients, created on first use (plain clients: ``AWS_ENDPOINT_URL*`` redirect them locally)."""

    def __init__(self, given: Mapping[str, Any] | Callable[[str], Any] | None = None):
        self._given = given
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str) -> Any:
        client = self._made.get(service)
        if client is not None:
            return client
        with self._lock:
            if service not in self._made:
                if callable(self._given):
                    self._made[service] = self._given(service)
                elif self._given is not None and service in self._given:
                    self._made[service] = self._given[service]
                else:
                    cfg = _CLIENT_CONFIGS.get(service, _DEFAULT_CONFIG)
                    self._made[service] = boto3.client(service, config=cfg)
            return self._made[service]


class _EndpointChanged(Exception):
    """An invocation failed and the endpoint's variants are no longer the cached ones: route again."""


class ModelDirectory:
    """What is live: the endpoint's variants and weights (cached ``ttl`` seconds) and each model
    version's feature schema (cached per package ARN: a package version never changes its schema)."""

    def __init__(self, clients: Clients, endpoint_name: str, group: str, ttl: float = ENDPOINT_CACHE_SECONDS):
        self.clients = clients
        self.endpoint_name = endpoint_name
        self.group = group
        self.ttl = ttl
        self._variants: tuple[float, dict[str, float]] | None = None
        self._group_arn: str | None = None
        self._features: dict[str, tuple[str, ...]] = {}

    def live_variants(self) -> dict[str, float]:
        """Variant name -> current weight."""
        cached = self._variants
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        try:
            desc = self.clients("sagemaker").describe_endpoint(EndpointName=self.endpoint_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
                raise ProxyError(
                    503, f"no model is being served: endpoint {self.endpoint_name} does not exist yet"
                ) from None
            raise
        status = desc.get("EndpointStatus", "InService")
        if status not in _SERVING_STATUSES:
            raise ProxyError(503, f"endpoint {self.endpoint_name} is {status}, not serving")
        variants = {
            v["VariantName"]: float(v.get("CurrentWeight", v.get("DesiredWeight", 0.0)) or 0.0)
            for v in desc.get("ProductionVariants", [])
        }
        if not variants:
            raise ProxyError(503, f"endpoint {self.endpoint_name} has no production variants")
        self._variants = (time.monotonic(), variants)
        return variants

    def variants_changed(self, seen: Mapping[str, float]) -> bool:
        """Whether the endpoint's variants now differ from ``seen`` (read afresh, which also replaces the
        cached ones): a request routed on the cached variants failed, and a variant it could reach may be
        gone. False when the endpoint cannot be read now either."""
        self._variants = None
        try:
            return set(self.live_variants()) != set(seen)
        except (ProxyError, ClientError, BotoCoreError):
            return False

    def package_arn(self, variant: str) -> str:
        version = logic.variant_version(variant)
        if version is None:
            raise ProxyError(503, f"variant {variant} is not named v<model version>; cannot find its model")
        if self._group_arn is None:
            self._group_arn = self._find_group_arn()
        return logic.model_package_arn(self._group_arn, version)

    def _find_group_arn(self) -> str:
        """The group's ARN from DescribeModelPackageGroup, or (without that permission) built from the
        caller's identity (sts:GetCallerIdentity needs no permission) and the client's region."""
        sagemaker = self.clients("sagemaker")
        try:
            return sagemaker.describe_model_package_group(ModelPackageGroupName=self.group)[
                "ModelPackageGroupArn"
            ]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "AccessDeniedException"):
                raise
        identity = self.clients("sts").get_caller_identity()
        partition = identity["Arn"].split(":")[1]
        region = sagemaker.meta.region_name
        return f"arn:{partition}:sagemaker:{region}:{identity['Account']}:model-package-group/{self.group}"

    def feature_names(self, variant: str) -> tuple[str, ...]:
        """The model's input features, read once per package ARN: the small JSON document at the package's
        ``features_uri`` metadata (``features.json`` beside ``baseline.json``, written by training); for
        packages registered before that, the ``feature_names`` metadata (a JSON list); else ``schema.json``
        inside the package's ``model.tar.gz``."""
        arn = self.package_arn(variant)
        names = self._features.get(arn)
        if names is None:
            desc = self.clients("sagemaker").describe_model_package(ModelPackageName=arn)
            props = desc.get("CustomerMetadataProperties") or {}
            parsed = _name_list(props.get("feature_names"))
            if parsed is None and props.get("features_uri"):
                parsed = self._features_document(str(props["features_uri"]))
            if parsed is None:
                parsed = self._schema_from_artifact(desc)
            if parsed is None:
                raise ProxyError(
                    503,
                    f"model package {arn} has no readable feature list (features_uri metadata, feature_names "
                    "metadata or schema.json in its model artifact); cannot validate requests",
                )
            names = tuple(parsed)
            self._features[arn] = names
        return names

    def _features_document(self, uri: str) -> list[str] | None:
        """``feature_names`` of the JSON document at an ``s3://`` URI; None when it cannot be read."""
        if not uri.startswith("s3://"):
            return None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            document = json.loads(self.clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        except (ValueError, ClientError, BotoCoreError):
            return None
        return _name_list(document.get("feature_names")) if isinstance(document, dict) else None

    def _schema_from_artifact(self, desc: Mapping[str, Any]) -> list[str] | None:
        try:
            url = desc["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
            bucket, _, key = url.removeprefix("s3://").partition("/")
            data = self.clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == "schema.json":
                        fh = tar.extractfile(member)
                        return _name_list(json.load(fh).get("feature_names")) if fh else None
        except (
            KeyError,
            IndexError,
            ValueError,
            tarfile.TarError,
            ClientError,
            BotoCoreError,
            AttributeError,
        ):
            return None
        return None


def _name_list(raw: Any) -> list[str] | None:
    """A non-empty list of feature names from JSON text or a list; None otherwise."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw):
        return raw
    return None


def _response(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
    }


# The methods the API's resources take (the PredictionApi construct defines only POST on each).
ALLOWED_METHODS = ("POST",)


def wrong_method_error(method: str, path: str) -> str:
    """The 405 message for ``method`` on the API resource ``path`` (the local API answers it too)."""
    return f"method {method or '(none)'} is not allowed on {path}; use POST {path}"


class Proxy:
    """One configured proxy: parameters, wiring, clients, caches and the two Firehose loggers."""

    def __init__(
        self,
        params: logic.ProxyParams,
        wiring: Wiring,
        clients: Clients,
        directory: ModelDirectory | None = None,
        *,
        emit: Callable[[dict[str, Any]], None] = log_json,
        delivery: str = "sync",
        make_logger: Callable[[str], Any] | None = None,
        buffer_records: int = MAX_BUFFERED,
    ):
        """``make_logger(stream)``: the Firehose logger of a stream (``FirehoseLogger``'s ``put`` and
        ``undelivered``); by default a ``FirehoseLogger`` on this proxy's Firehose client. The local API
        passes one that delivers in a process of its own. ``buffer_records``: background delivery's buffer,
        in log records (past it, records go to the log fallback at once)."""
        if delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {', '.join(DELIVERY_MODES)}, got {delivery!r}")
        self.params = params
        self.wiring = wiring
        self.clients = clients
        self.directory = directory or ModelDirectory(
            clients, wiring.endpoint_name, wiring.model_package_group
        )
        self.emit = emit
        self.delivery = delivery
        self.make_logger = make_logger
        self.buffer_records = buffer_records
        self.params_json = params.as_json()
        # the live variants last seen for a pinned TARGET_VARIANT that is not live (None: it was live, or not
        # checked yet); a change is logged once, not per request
        self._pin_not_live: tuple[str, ...] | None = None
        self._pin_lock = threading.Lock()
        self._senders: list[BackgroundDelivery] = []  # background delivery: what drain/close act on
        self._senders_lock = threading.Lock()

    def _logger(self, stream: str) -> Any:
        if self.make_logger is not None:
            logger = self.make_logger(stream)
        else:
            logger = FirehoseLogger(self.clients("firehose"), stream, emit=self.emit)
        if self.delivery == "sync":
            return logger
        sender = BackgroundDelivery(logger, max_buffered=self.buffer_records)
        with self._senders_lock:
            self._senders.append(sender)
        return sender

    @functools.cached_property
    def predictions_log(self) -> Any:
        return self._logger(self.wiring.predictions_stream)

    @functools.cached_property
    def feedback_log(self) -> Any:
        return self._logger(self.wiring.feedback_stream)

    def drain(self, timeout: float = 5.0) -> bool:
        """Background delivery: wait until every record handed over so far is delivered (or in the log)."""
        with self._senders_lock:
            senders = list(self._senders)
        return all([sender.drain(timeout) for sender in senders])

    def close(self, timeout: float = 5.0) -> bool:
        """Drain and stop the background senders (a replaced proxy, the local cloud stopping)."""
        with self._senders_lock:
            senders = list(self._senders)
        return all([sender.close(timeout) for sender in senders])

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        clients: Mapping[str, Any] | Callable[[str], Any] | Clients | None = None,
        directory: ModelDirectory | None = None,
        *,
        emit: Callable[[dict[str, Any]], None] = log_json,
        delivery: str = "sync",
        make_logger: Callable[[str], Any] | None = None,
        buffer_records: int = MAX_BUFFERED,
    ) -> Proxy:
        """Build from environment variables; invalid parameters are reported and take safe defaults."""
        params, problems = logic.parse_params(env)
        for p in problems:
            emit(
                {
                    "level": "WARNING",
                    "message": "invalid proxy parameter; using its safe default",
                    "parameter": p.name,
                    "value": p.value,
                    "reason": p.reason,
                    "default": p.default,
                }
            )
        wiring = Wiring.from_env(env)
        clients = clients if isinstance(clients, Clients) else Clients(clients)
        return cls(
            params,
            wiring,
            clients,
            directory,
            emit=emit,
            delivery=delivery,
            make_logger=make_logger,
            buffer_records=buffer_records,
        )

    # ------------------------------------------------------------------------------------------ routes

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """API Gateway REST proxy event -> proxy response (never raises)."""
        method = (event.get("httpMethod") or "").upper()
        path = (event.get("resource") or event.get("path") or "").rstrip("/")
        try:
            if path not in ROUTES:
                raise ProxyError(404, f"no route {path or '/'}; use POST /predict or POST /feedback")
            if method not in ALLOWED_METHODS:
                # on AWS another method never gets here: API Gateway defines only POST on the resources and
                # answers the rest itself (403 "Missing Authentication Token"); this answers a direct invocation,
                # and the local API sends the same answer
                return _response(
                    405, {"error": wrong_method_error(method, path)}, {"Allow": ", ".join(ALLOWED_METHODS)}
                )
            body = event.get("body")
            if body is not None and event.get("isBase64Encoded"):
                body = base64.b64decode(body)
            if path == "/predict":
                return _response(200, self.predict(body))
            return _response(200, self.feedback(body))
        except logic.PayloadError as exc:
            return _response(exc.status, exc.body())
        except ProxyError as exc:
            return _response(exc.status, exc.body)
        except (ClientError, BotoCoreError) as exc:
            self.emit({"level": "ERROR", "message": "AWS call failed", "error": repr(exc)})
            return _response(502, {"error": f"upstream AWS call failed: {exc}"})
        except Exception as exc:  # noqa: BLE001 - one clear 500, and the traceback-free cause in the log
            self.emit({"level": "ERROR", "message": "unhandled proxy error", "error": repr(exc)})
            return _response(500, {"error": "internal error in the prediction proxy"})

    def _check_wiring(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self.wiring, n)]
        if missing:
            raise ProxyError(
                500, f"the proxy is misconfigured: {', '.join(m.upper() for m in missing)} not set"
            )

    def _route_and_invoke(
        self, params: Any, request: Any, retry: bool = True
    ) -> tuple[list[list[float]], JsonRows, tuple[str, ...], str | None, dict[str, Any]]:
        """Choose the variant, validate the rows against its model's features and invoke the endpoint:
        (rows, their JSON text, the features, the variant asked for or None, the InvokeEndpoint response). With ``retry``,
        a failed invocation while the endpoint's variants differ from the cached ones raises
        ``_EndpointChanged`` (the caller routes again once), not a 502."""
        weights = self.directory.live_variants()

        target = self._choose_variant(params, request.user_id, weights)
        if target is not None:
            features = self.directory.feature_names(target)
        else:
            serving = [v for v, w in weights.items() if w > 0] or list(weights)
            schemas = {v: self.directory.feature_names(v) for v in serving}
            if len(set(schemas.values())) == 1:
                features = next(iter(schemas.values()))
            else:  # live models disagree on their inputs: route here so rows match the chosen model
                target = logic.pick_weighted(random.random(), {v: weights[v] for v in serving}) or serving[0]
                features = schemas[target]
        rows = logic.validate_rows(request.instances, features)
        # the rows' JSON text (orjson's where installed: a tenth of json's time for 100 rows), which the log
        # records carry too (``JsonRows``)
        body_rows = JsonRows.of(rows)
        # the model gets every value as a float (1 -> 1.0), so rows that fit the request limit can still make a
        # model request over InvokeEndpoint's limit (its text is ASCII: characters are bytes)
        if len(body_rows.text) > logic.MAX_BODY_BYTES:
            raise logic.PayloadError(
                f"the {len(rows)} rows make a model request of {len(body_rows.text)} bytes (every value is sent "
                f"as a float: 1 as 1.0); the limit is {logic.MAX_BODY_BYTES} bytes (SageMaker InvokeEndpoint): "
                "send fewer rows per request",
                status=413,
            )

        kwargs: dict[str, Any] = {
            "EndpointName": self.wiring.endpoint_name,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": body_rows.text,
        }
        if target is not None:
            kwargs["TargetVariant"] = target
        try:
            result = self.clients("sagemaker-runtime").invoke_endpoint(**kwargs)
        except ClientError as exc:
            if retry and self.directory.variants_changed(weights):
                raise _EndpointChanged from None
            err = exc.response.get("Error", {})
            raise ProxyError(
                502, f"the model endpoint failed: {err.get('Code')}: {err.get('Message')}"
            ) from None
        return rows, body_rows, features, target, result

    def predict(self, body: bytes | str | None) -> dict[str, Any]:
        started = time.perf_counter()
        params = self.params
        if not params.serving_enabled:
            raise ProxyError(
                503,
                "serving is disabled by the operator (SERVING_ENABLED=false); no prediction was made",
                serving_enabled=False,
            )
        self._check_wiring("endpoint_name", "model_package_group")
        request = logic.parse_predict_body(body)
        try:
            rows, body_rows, features, target, result = self._route_and_invoke(params, request)
        except _EndpointChanged:
            # the endpoint's variants changed since they were cached (a variant removed by a promote, a
            # rollback or a release): route again on the endpoint as it is now (read already), once
            rows, body_rows, features, target, result = self._route_and_invoke(params, request, retry=False)
        variant = result.get("InvokedProductionVariant") or target or ""
        try:
            answer = json.loads(result["Body"].read())
            predictions = answer["predictions"]
            scores = [float(p["score"]) for p in predictions]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProxyError(502, f"the model returned an unreadable answer: {exc!r}") from None
        if len(scores) != len(rows):
            raise ProxyError(502, f"the model returned {len(scores)} predictions for {len(rows)} rows")

        version = logic.variant_version(variant)
        package_arn = self.directory.package_arn(variant) if version is not None else None
        request_id = str(uuid.uuid4())
        threshold = params.decision_threshold
        ids = [f"{request_id}-{i}" for i in range(len(scores))]
        labels = [logic.label_for(s, threshold) for s in scores]
        out = [
            {"request_id": i, "variant": variant, "model_version": version, "score": s, "label": label}
            for i, s, label in zip(ids, scores, labels, strict=True)
        ]
        response = {
            "request_id": request_id,
            "predictions": out,
            "variant": variant,
            "model_version": version,
        }
        latency_ms = (time.perf_counter() - started) * 1000.0

        if params.log_sample_rate > 0:
            rate = params.log_sample_rate
            # every row: its ids and rows as they are made (ids from the request id, rows with the JSON text
            # the model got), which hand over for about 1 µs instead of tens (``PredictionRecords``)
            log_ids: Sequence[str] = NumberedIds(request_id, len(ids))
            log_rows: Sequence[list[float]] = body_rows
            if rate < 1.0:
                picked = [i for i, rid in enumerate(ids) if logic.sampled(rid, rate)]
                log_ids, log_rows = [ids[i] for i in picked], [rows[i] for i in picked]
                scores, labels = [scores[i] for i in picked], [labels[i] for i in picked]
            if log_ids:
                # one object for the request's rows: the records' dicts (and the features' JSON text) are made
                # when they are encoded, after the response (``prediction_log.PredictionRecords``)
                records = PredictionRecords(
                    {
                        "event_time": now_text(),
                        "endpoint_name": self.wiring.endpoint_name,
                        "variant_name": variant,
                        "model_package_arn": package_arn,
                        "model_version": version,
                        "user_id": request.user_id,
                    },
                    log_ids,
                    features,
                    log_rows,
                    scores,
                    labels,
                    {"threshold": threshold, "latency_ms": round(latency_ms, 3), "params": self.params_json},
                )
                self.predictions_log.put(records)
        return response

    def _choose_variant(
        self, params: logic.ProxyParams, user_id: str | None, weights: Mapping[str, float]
    ) -> str | None:
        pin = params.target_variant
        if pin:
            live = pin in weights
            self._note_pin(pin, None if live else tuple(sorted(weights)))
            if live:
                return pin
            # not live (a rollback, rejection or promote removed it): route as if unpinned, never refuse
            # every request over a parameter (the invalid-parameter rule: fall back to the safe default)
        if params.sticky_assignment and user_id:
            return logic.assign_variant(user_id, weights)
        return None

    def _note_pin(self, pin: str, not_live: tuple[str, ...] | None) -> None:
        """Log when the pinned variant stops (or starts again) being live: once per change, not per request."""
        if not_live == self._pin_not_live:
            return
        with self._pin_lock:
            before = self._pin_not_live
            if not_live == before:
                return
            self._pin_not_live = not_live
        if not_live is not None:
            self.emit(
                {
                    "level": "WARNING",
                    "message": "TARGET_VARIANT is not a live variant of the endpoint; routing by the endpoint's "
                    "weights instead (as if unpinned)",
                    "parameter": "TARGET_VARIANT",
                    "value": pin,
                    "endpoint": self.wiring.endpoint_name,
                    "live_variants": list(not_live),
                }
            )
        elif before is not None:
            self.emit(
                {
                    "level": "INFO",
                    "message": "TARGET_VARIANT is live again; the pin is in force",
                    "parameter": "TARGET_VARIANT",
                    "value": pin,
                    "endpoint": self.wiring.endpoint_name,
                }
            )

    def feedback(self, body: bytes | str | None) -> dict[str, Any]:
        items = logic.parse_feedback_body(body)
        event_time = now_text()
        records = [
            {"request_id": f.request_id, "event_time": event_time, "outcome": f.outcome} for f in items
        ]
        if self.wiring.feedback_stream:
            self.feedback_log.put(records)
        else:
            self._check_wiring("feedback_stream")
        return {"accepted": len(records)}


def _cold_start() -> tuple[Proxy, LambdaDeliveryExtension | None]:
    """The proxy of this execution environment (parameters read once). On Lambda, prediction logs are sent
    after the response, and the delivery extension holds each invocation open until they are confirmed; if
    the extension cannot register, they are sent inside the request instead (never left in a frozen buffer)."""
    runtime_api = lambda_runtime_api()
    if not runtime_api:
        return Proxy.from_env(os.environ), None
    proxy = Proxy.from_env(os.environ, delivery="background")
    try:
        extension = LambdaDeliveryExtension(runtime_api, proxy.drain).start()
    except Exception as exc:  # noqa: BLE001 - fall back to delivery inside the request
        log_json(
            {
                "level": "WARNING",
                "message": "log delivery extension did not register; prediction logs are sent inside the request",
                "error": repr(exc),
            }
        )
        proxy.close(0.0)
        return Proxy(proxy.params, proxy.wiring, proxy.clients, proxy.directory), None
    install_sigterm_drain(proxy.drain)
    return proxy, extension


PROXY, EXTENSION = _cold_start()


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:  # noqa: ARG001
    """API Gateway REST proxy event -> ``{"statusCode", "headers", "body"}``."""
    try:
        return PROXY.handle(event)
    finally:
        if EXTENSION is not None:
            EXTENSION.invocation_finished()
