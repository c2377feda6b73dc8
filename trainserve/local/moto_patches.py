r"""What the local cloud adds to moto 5.2.5 so the product's code runs unchanged against it.

moto's server dispatches an action to the method of the same snake_case name on the service's response
class, which calls the service backend. ``install()`` (idempotent) adds or fixes, in this process:

- ``UpdateEndpoint`` (moto raises NotImplementedError): the endpoint takes the new endpoint config's name
  and production variants and is ``InService`` at once. ``DeploymentConfig`` (blue/green guardrails) and
  ``RetainAllVariantProperties`` are accepted and ignored: there is no fleet to bake locally.
- ``UpdateEndpointWeightsAndCapacities``: moto wipes a variant's instance counts when the request gives
  only a weight; AWS keeps them. Here an omitted ``DesiredInstanceCount`` keeps the current count.
- Production variants with ``InitialVariantWeight`` 0.0 keep their 0.0 weight (moto dropped it, so a
  drained challenger looked weightless rather than at 0%).
- Firehose S3 delivery buffering (``enable_firehose_buffering()``, used by the local cloud): records are kept
  in memory and written as one staging object per stream when ``flush_firehose()`` runs (the warehouse loader
  flushes before every load) or when a stream's buffer reaches ``FIREHOSE_BUFFER_MAX_BYTES``, as Firehose's
  buffering hints do; moto wrote one object per call.
- ``UpdateModelPackage``: moto sets every field the request leaves out to None (an approval wiped the
  version's ``CustomerMetadataProperties`` and ``ApprovalDescription``, and an update without
  ``ModelApprovalStatus`` wiped the status), so an approval wiped the feature schema and baseline the
  proxy and the monitor read. As on AWS, omitted fields now stay; given
  ``CustomerMetadataProperties`` are added or updated, ``CustomerMetadataPropertiesToRemove`` removed.
- ``CreateModelPackage`` / ``UpdateModelPackage``: moto stored any ``CustomerMetadataProperties``; SageMaker
  refuses a key or value outside the ``CustomerMetadataMap`` constraints of its API model (lengths and the
  pattern ``[\p{L}\p{Z}\p{N}_.:/=+\-@]*``, so no JSON), so training's RegisterModel would fail on AWS while
  passing here. Both now answer a ``ValidationException`` naming the key, with the constraints read from
  botocore's SageMaker model (``customer_metadata_problem``).
- ``InvokeEndpoint`` on the moto port: moto answers with canned bodies and ignores ``TargetVariant``;
  when ``set_runtime_url(url)`` was called, the request is forwarded to the local SageMaker runtime, so
  a ``sagemaker-runtime`` client that only has ``AWS_ENDPOINT_URL`` reaches the real models too.

- CloudFormation change sets (how ``cdk deploy`` creates and updates stacks): moto executed a change set's
  resources but left the stack without its ``Outputs`` and exports, and resolved ``Fn::ImportValue``
  against no exports at all, so a stack importing another's export (``TrainserveTraining`` imports
  ``TrainserveData``'s bucket ARNs) could not be deployed. Executing a change set now registers the
  stack's outputs and exports, as ``CreateStack`` does, and a change set resolves imports against the
  region's exports (``scripts/deploy_smoke.py``). A deleted stack has no outputs: moto worked them out from
  its resources when the deleted stack was described, and so made a deleted bucket again.

- Speed: moto's server lists its own package folder (``os.listdir`` + ``isdir`` on ~175 entries) for
  every request, to tell a service name from a host name; the listing is now read once. It was about a
  third of the server's CPU per call (measured with yappi on a one-record ``PutRecordBatch``). And
  ``PutRecordBatch`` answers with plain JSON: moto's generic response serializer spent about 0.25 ms per
  record on the ``RequestResponses`` list (80% of the server's time for 500 records). Its request is
  read with ``json.loads`` + base64 too (moto's shape-driven parser took about half of what was left); the
  base64 with pybase64 (0.8 µs for a 1.2 KB log record, against 3.6 µs with the standard library's decoder,
  which was 30% of this server's CPU under a saturating 100-row prediction load). Its body is read from the
  socket with one read of its ``Content-Length`` (``_read_body_at_once``), not in werkzeug's 64 KiB pieces
  joined and copied again (about a fifth of the server's CPU for a 2 MB call).

``check_internals()`` raises ``MotoInternalsChanged`` when a moto upgrade moved the internals these
patches rely on (a test calls it).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

MOTO_VERSION_TESTED = "5.2.5"

_lock = threading.Lock()
_installed = False
_runtime_url: str | None = None
_http = None
# Firehose buffering (off unless the local cloud turns it on): stream key -> [backend, version, destination,
# records, their bytes]. Real Firehose buffers records and writes one S3 object per buffer interval; moto
# writes one object per call, which makes the warehouse loader's work grow with every request.
_firehose_lock = threading.Lock()
_firehose_buffering = False
_firehose_buffer: dict[tuple[str, str, str], list[Any]] = {}
_original_put_s3_records: Any = None
# A stream's buffer is written as a staging object as soon as it holds this much, whether or not a flush came.
# It bounds the memory moto holds while the warehouse loader waits for a busy prediction API to go quiet
# (``warehouse.WarehouseComponent``): about 10 s of the local API's heaviest logging (100-row requests at full
# rate), so a short burst is written after it, by the loader's flush, and not by moto in the middle of it
# (writing the object is about a quarter of moto's CPU under that load).
FIREHOSE_BUFFER_MAX_BYTES = 256 * 1024 * 1024
_firehose_calls: dict[
    str, int
] = {}  # stream name -> PutRecord(Batch) calls delivered to S3 (benchmarks read it)


class MotoInternalsChanged(RuntimeError):
    """moto no longer has the internals the local cloud's patches rely on."""


def set_runtime_url(url: str | None) -> None:
    """Forward ``InvokeEndpoint`` requests that reach the moto server to the local runtime at ``url``."""
    global _runtime_url
    _runtime_url = url.rstrip("/") if url else None


def check_internals() -> None:
    """Fail loudly if moto's internals differ from what the patches were written against."""
    from moto.sagemaker import models, responses
    from moto.sagemakerruntime import responses as rt_responses

    problems = []
    backend = models.SageMakerModelBackend
    for attr in ("describe_endpoint_config", "update_endpoint_weights_and_capacities"):
        if not hasattr(backend, attr):
            problems.append(f"SageMakerModelBackend.{attr}")
    if "self.endpoints" not in inspect.getsource(backend.__init__):
        problems.append("SageMakerModelBackend.endpoints")
    if not hasattr(models.FakeEndpoint, "_process_production_variants"):
        problems.append("FakeEndpoint._process_production_variants")
    else:
        params = list(inspect.signature(models.FakeEndpoint._process_production_variants).parameters)
        if params != ["self", "production_variants"]:
            problems.append(f"FakeEndpoint._process_production_variants{params}")
    for attr in ("sagemaker_backend", "_get_param"):
        if not hasattr(responses.SageMakerResponse, attr):
            problems.append(f"SageMakerResponse.{attr}")
    if "self.model_packages" not in inspect.getsource(backend.__init__):
        problems.append("SageMakerModelBackend.model_packages")
    if "self.model_package_name_mapping" not in inspect.getsource(backend.__init__):
        problems.append("SageMakerModelBackend.model_package_name_mapping")
    if "customer_metadata_properties" not in inspect.signature(backend.create_model_package).parameters:
        problems.append("SageMakerModelBackend.create_model_package(customer_metadata_properties=...)")
    try:
        customer_metadata_constraints()
    except (LookupError, ValueError) as exc:
        problems.append(f"botocore's CustomerMetadataMap constraints ({exc})")
    update_params = list(inspect.signature(backend.update_model_package).parameters)
    if update_params != [
        "self",
        "model_package_arn",
        "model_approval_status",
        "approval_description",
        "customer_metadata_properties",
        "customer_metadata_properties_to_remove",
        "additional_inference_specifications_to_add",
    ]:
        problems.append(f"SageMakerModelBackend.update_model_package{update_params}")
    for attr in (
        "set_model_approval_status",
        "add_additional_inference_specifications",
        "modifications_done",
    ):
        if not hasattr(models.ModelPackage, attr):
            problems.append(f"ModelPackage.{attr}")
    package_src = inspect.getsource(models.ModelPackage.__init__)
    for needle in ("self.customer_metadata_properties", "self.approval_description"):
        if needle not in package_src:
            problems.append(f"ModelPackage.__init__ no longer sets {needle}")
    from moto.firehose import models as firehose_models

    put_s3 = list(inspect.signature(firehose_models.FirehoseBackend.put_s3_records).parameters)
    if put_s3 != ["self", "delivery_stream_name", "version_id", "s3_destination", "records"]:
        problems.append(f"FirehoseBackend.put_s3_records{put_s3}")
    from moto import backends as moto_backends
    from moto.moto_server import werkzeug_app

    if not hasattr(moto_backends, "list_of_moto_modules"):
        problems.append("moto.backends.list_of_moto_modules")
    if "backends.list_of_moto_modules()" not in inspect.getsource(
        werkzeug_app.DomainDispatcherApplication.get_backend_for_host
    ):
        problems.append("DomainDispatcherApplication.get_backend_for_host no longer lists moto's modules")
    from moto.firehose.responses import FirehoseResponse

    if list(inspect.signature(FirehoseResponse.parse_parameters).parameters) != ["self", "request"]:
        problems.append("FirehoseResponse.parse_parameters(self, request)")
    if "firehose_backend.put_record_batch(" not in inspect.getsource(FirehoseResponse.put_record_batch):
        problems.append("FirehoseResponse.put_record_batch no longer calls the backend's put_record_batch")
    from werkzeug.wrappers import Request as WerkzeugRequest

    get_data = inspect.getsource(WerkzeugRequest.get_data)
    if 'getattr(self, "_cached_data", None)' not in get_data or "self.stream.read()" not in get_data:
        problems.append("werkzeug's Request.get_data no longer caches the body in _cached_data")
    setup = inspect.signature(FirehoseResponse.setup_class).parameters
    if list(setup)[:5] != ["self", "request", "full_url", "headers", "use_raw_body"]:
        problems.append(f"BaseResponse.setup_class{list(setup)}")
    if not hasattr(rt_responses.SageMakerRuntimeResponse, "invoke_endpoint"):
        problems.append("SageMakerRuntimeResponse.invoke_endpoint")
    src = inspect.getsource(models.FakeEndpoint.__init__)
    for needle in ("self.endpoint_config_name", "self.production_variants", "self.endpoint_status"):
        if needle not in src:
            problems.append(f"FakeEndpoint.__init__ no longer sets {needle}")
    from moto.cloudformation import models as cfn_models

    cfn = cfn_models.CloudFormationBackend
    if list(inspect.signature(cfn.execute_change_set).parameters) != [
        "self",
        "change_set_name",
        "stack_name",
    ]:
        problems.append("CloudFormationBackend.execute_change_set(self, change_set_name, stack_name)")
    for attr in ("describe_change_set", "_validate_export_uniqueness"):
        if not hasattr(cfn, attr):
            problems.append(f"CloudFormationBackend.{attr}")
    if "self.exports" not in inspect.getsource(cfn.__init__):
        problems.append("CloudFormationBackend.exports")
    for attr in ("_create_output_map", "_parse_template", "exports"):
        if not hasattr(cfn_models.Stack, attr):
            problems.append(f"Stack.{attr}")
    stack_src = inspect.getsource(cfn_models.Stack.__init__)
    for needle in ("self.resource_map", "self.output_map", "self.cross_stack_resources"):
        if needle not in stack_src:
            problems.append(f"Stack.__init__ no longer sets {needle}")
    if "self.deleted_stacks" not in inspect.getsource(cfn.__init__):
        problems.append("CloudFormationBackend.deleted_stacks")
    if "self.stack" not in inspect.getsource(cfn_models.ChangeSet.__init__):
        problems.append("ChangeSet.stack")
    if problems:
        raise MotoInternalsChanged(
            "moto's SageMaker internals changed (patches written for moto "
            f"{MOTO_VERSION_TESTED}): {', '.join(problems)}"
        )


def install() -> None:
    """Patch moto in this process (safe to call more than once)."""
    global _installed
    with _lock:
        if _installed:
            return
        check_internals()
        _patch_update_endpoint()
        _patch_weights_and_capacities()
        _patch_zero_weights()
        _patch_invoke_endpoint()
        _patch_update_model_package()
        _patch_create_model_package()
        _patch_firehose_s3_records()
        _patch_module_listing()
        _patch_put_record_batch_response()
        _patch_change_set_outputs()
        _installed = True


def _patch_put_record_batch_response() -> None:
    """The same response body, written with ``json.dumps`` instead of moto's shape-driven serializer, and
    the request read with ``json.loads`` (the records' ``Data`` is base64 in the JSON protocol), without
    moto's attempt to read it as a query string first."""
    import base64
    import binascii
    import json

    from moto.firehose.responses import FirehoseResponse

    def put_record_batch(self: Any) -> str:
        result = self.firehose_backend.put_record_batch(
            self._get_param("DeliveryStreamName"), self._get_param("Records")
        )
        return json.dumps(result)

    FirehoseResponse.put_record_batch = put_record_batch
    original_parse = FirehoseResponse.parse_parameters
    try:  # about twice as fast as json on a body of base64 strings
        from orjson import loads as _loads
    except ImportError:  # pragma: no cover - requirements.in has orjson
        _loads = json.loads
    try:
        from pybase64 import b64decode as _b64decode
    except ImportError:  # pragma: no cover
        _b64decode = base64.b64decode

    def parse_parameters(self: Any, request: Any) -> None:
        if self._get_action() != "PutRecordBatch":
            return original_parse(self, request)
        try:
            body = _loads(request.data)
            self.params = {
                "DeliveryStreamName": body["DeliveryStreamName"],
                "Records": [{"Data": _b64decode(r["Data"], validate=True)} for r in body["Records"]],
            }
        except (ValueError, KeyError, TypeError, binascii.Error):
            return original_parse(self, request)  # malformed: moto's parser gives the error
        return None

    FirehoseResponse.parse_parameters = parse_parameters

    # moto's request setup tries to read every non-raw body as a query string (``parse_qsl``), which costs
    # about 10 ms per MB; a PutRecordBatch body is JSON, read above from the request itself.
    original_setup = FirehoseResponse.setup_class

    def setup_class(
        self: Any, request: Any, full_url: Any = None, headers: Any = None, use_raw_body: Any = None
    ) -> None:
        if use_raw_body is None and request.headers.get("X-Amz-Target", "").endswith(".PutRecordBatch"):
            use_raw_body = True
            _read_body_at_once(request)
        return original_setup(self, request, full_url, headers, use_raw_body)

    FirehoseResponse.setup_class = setup_class


def _read_body_at_once(request: Any) -> None:
    """Read a request's body from the server's socket file with one ``read`` of its ``Content-Length`` and
    keep it as werkzeug's cached body (``request.data`` then returns it). werkzeug reads a body through a
    ``LimitedStream`` in 64 KiB pieces joined in a ``bytearray`` and copied again: for the 2 MB
    ``PutRecordBatch`` of a busy prediction API that was about a fifth of moto's CPU for the call. The
    bytes are the same. Only for a body moto's server received with a length (a chunked body, or a request
    made in-process, keeps werkzeug's way), and only before anything has read it."""
    environ = request.environ
    length = request.content_length
    if (
        not request.from_wsgi_server
        or not length
        or environ.get("wsgi.input_terminated")  # chunked: the server de-chunks, with no length to read
        or getattr(request, "_cached_data", None) is not None
        or "stream" in request.__dict__  # werkzeug's stream made: it may have read some of the body
    ):
        return
    body = environ["wsgi.input"].read(length)
    request._cached_data = body  # noqa: SLF001 - werkzeug's get_data cache (check_internals checks it)
    request.__dict__["stream"] = io.BytesIO()  # the body is read: the request's stream is empty


def _patch_module_listing() -> None:
    """moto's package folder does not change while it runs: list it once, not on every request."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


def enable_firehose_buffering(enabled: bool = True) -> None:
    """Buffer Firehose S3 deliveries until ``flush_firehose()`` (turning it off flushes what is buffered)."""
    global _firehose_buffering
    install()
    with _firehose_lock:
        _firehose_buffering = enabled
    if not enabled:
        flush_firehose()


def firehose_calls() -> dict[str, int]:
    """PutRecord/PutRecordBatch calls per stream since this process started (S3 destinations)."""
    with _firehose_lock:
        return dict(_firehose_calls)


def flush_firehose() -> int:
    """Write every buffered stream's records as one S3 object each; returns the number of records written.
    A write that fails puts its records back, so nothing buffered is lost."""
    with _firehose_lock:
        pending = list(_firehose_buffer.items())
        _firehose_buffer.clear()
    written = 0
    for key, entry in pending:
        _write_buffered(key, entry)
        written += len(entry[3])
    return written


def _write_buffered(key: tuple[str, str, str], entry: list[Any]) -> None:
    """One stream's buffered records as one staging object; if the write fails they go back to the front of
    the buffer (nothing buffered is lost) and the error is raised."""
    backend, version_id, destination, records, size = entry
    try:
        _original_put_s3_records(backend, key[2], version_id, destination, records)
    except Exception:
        with _firehose_lock:
            current = _firehose_buffer.setdefault(key, [backend, version_id, destination, [], 0])
            current[3][:0] = records
            current[4] += size
        raise


def _patch_firehose_s3_records() -> None:
    import uuid

    from moto.firehose import models

    global _original_put_s3_records
    _original_put_s3_records = models.FirehoseBackend.put_s3_records

    def put_s3_records(
        self: Any,
        delivery_stream_name: str,
        version_id: str,
        s3_destination: dict[str, Any],
        records: list[dict[str, bytes]],
    ) -> list[dict[str, str]]:
        with _firehose_lock:
            _firehose_calls[delivery_stream_name] = _firehose_calls.get(delivery_stream_name, 0) + 1
            if _firehose_buffering:
                key = (self.account_id, self.region_name, delivery_stream_name)
                entry = _firehose_buffer.setdefault(key, [self, version_id, s3_destination, [], 0])
                entry[3].extend(records)
                entry[4] += sum(len(r["Data"]) for r in records)
                call_id = uuid.uuid4().hex  # one random id per call, not per record (os.urandom each)
                answer = [{"RecordId": f"{call_id}{i:08x}"} for i in range(len(records))]
                if entry[4] < FIREHOSE_BUFFER_MAX_BYTES:
                    return answer
                full = _firehose_buffer.pop(key)
            else:
                full = None
        if full is None:
            return _original_put_s3_records(self, delivery_stream_name, version_id, s3_destination, records)
        # the records are accepted either way: if the write fails they are back in the buffer for the next
        # flush (as Firehose retries its S3 delivery), and the call is not retried by the client (duplicates)
        with contextlib.suppress(Exception):
            _write_buffered(key, full)
        return answer

    models.FirehoseBackend.put_s3_records = put_s3_records


def _patch_update_endpoint() -> None:
    from moto.core.responses import ActionResult
    from moto.sagemaker import models, responses
    from moto.sagemaker.exceptions import ValidationError

    def update_endpoint(
        self: Any,
        endpoint_name: str,
        endpoint_config_name: str,
        retain_all_variant_properties: bool | None = None,  # noqa: ARG001 - accepted, nothing to retain locally
        deployment_config: dict[str, Any] | None = None,  # noqa: ARG001 - no fleet to bake locally
    ) -> str:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            arn = models.FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
            raise ValidationError(message=f"Could not find endpoint '{arn}'.")
        config = self.describe_endpoint_config(endpoint_config_name)  # raises ValidationError if missing
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.data_capture_config = config.get("DataCaptureConfig")
        endpoint.last_modified_time = models.utcnow()
        endpoint.endpoint_status = "InService"
        return endpoint.arn

    def update_endpoint_response(self: Any) -> Any:
        arn = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
            retain_all_variant_properties=self._get_param("RetainAllVariantProperties"),
            deployment_config=self._get_param("DeploymentConfig"),
        )
        return ActionResult({"EndpointArn": arn})

    models.SageMakerModelBackend.update_endpoint = update_endpoint
    responses.SageMakerResponse.update_endpoint = update_endpoint_response


def _patch_weights_and_capacities() -> None:
    from moto.sagemaker import models

    original = models.SageMakerModelBackend.update_endpoint_weights_and_capacities

    def update_endpoint_weights_and_capacities(
        self: Any, endpoint_name: str, desired_weights_and_capacities: list[dict[str, Any]]
    ) -> str:
        endpoint = self.endpoints.get(endpoint_name)
        before = {}
        if endpoint is not None:
            before = {v["VariantName"]: dict(v) for v in endpoint.production_variants}
        arn = original(self, endpoint_name, desired_weights_and_capacities)
        asked = {d.get("VariantName"): d for d in desired_weights_and_capacities}
        for variant in endpoint.production_variants:
            request = asked.get(variant["VariantName"], {})
            old = before.get(variant["VariantName"], {})
            if request.get("DesiredInstanceCount") is None:
                for key in ("DesiredInstanceCount", "CurrentInstanceCount"):
                    if old.get(key) is not None:
                        variant[key] = old[key]
                    else:
                        variant.pop(key, None)
            if request.get("DesiredWeight") is None:
                for key in ("DesiredWeight", "CurrentWeight"):
                    if old.get(key) is not None:
                        variant[key] = old[key]
                    else:
                        variant.pop(key, None)
        endpoint.last_modified_time = models.utcnow()
        return arn

    models.SageMakerModelBackend.update_endpoint_weights_and_capacities = (
        update_endpoint_weights_and_capacities
    )


def _patch_zero_weights() -> None:
    from moto.sagemaker import models

    original = models.FakeEndpoint._process_production_variants

    def _process_production_variants(self: Any, production_variants: list[dict[str, Any]]) -> list[dict]:
        processed = original(self, production_variants)
        for out, given in zip(processed, production_variants, strict=True):
            weight = given.get("InitialVariantWeight")
            if weight is not None and "CurrentWeight" not in out:
                out["CurrentWeight"] = out["DesiredWeight"] = float(weight)
        return processed

    models.FakeEndpoint._process_production_variants = _process_production_variants


def _patch_invoke_endpoint() -> None:
    from moto.sagemakerruntime import responses as rt_responses

    original = rt_responses.SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint(self: Any) -> Any:
        if _runtime_url is None:
            return original(self)
        import urllib3

        global _http
        if _http is None:
            _http = urllib3.PoolManager(maxsize=16)
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() in ("content-type", "accept") or k.lower().startswith("x-amzn-sagemaker")
        }
        path = self.path.split("?", 1)[0]
        body = self.body if isinstance(self.body, bytes) else (self.body or "").encode()
        resp = _http.request("POST", _runtime_url + path, body=body, headers=headers, retries=False)
        out_headers = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in ("content-type", "x-amzn-errortype") or k.lower().startswith("x-amzn")
        }
        out_headers["status"] = str(resp.status)  # moto's call_action takes the status from here
        return resp.status, out_headers, resp.data

    rt_responses.SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint


@dataclass(frozen=True)
class TextConstraint:
    """Length bounds and allowed characters of a string shape in botocore's model."""

    shape: str
    min_length: int
    max_length: int
    pattern: str
    categories: frozenset[str]  # Unicode general category initials (``\p{L}`` -> "L")
    characters: frozenset[str]

    def problem(self, text: Any) -> str | None:
        """Why ``text`` breaks the constraint (as SageMaker words it), or None."""
        if not isinstance(text, str):
            return "Member must be a string"
        if len(text) < self.min_length:
            return f"Member must have length greater than or equal to {self.min_length}"
        if len(text) > self.max_length:
            return f"Member must have length less than or equal to {self.max_length}"
        bad = [
            c for c in text if c not in self.characters and unicodedata.category(c)[0] not in self.categories
        ]
        if bad:
            shown = "".join(dict.fromkeys(bad))
            return f"Member must satisfy regular expression pattern: {self.pattern} (not allowed: {shown!r})"
        return None


_PATTERN = re.compile(r"^\(?\[(?P<cls>(?:\\p\{[A-Z]\}|\\.|[^\]\\])*)\]\*\)?\$")
_CLASS_TOKEN = re.compile(r"\\p\{(?P<cat>[A-Z])\}|\\(?P<esc>.)|(?P<lit>.)")


def _text_constraint(shape: Any) -> TextConstraint:
    r"""A botocore string shape's ``min``/``max``/``pattern`` as a ``TextConstraint``. The pattern must be one
    character class (``\p{X}`` categories, escaped and plain characters) repeated: ValueError otherwise."""
    meta = shape.metadata
    pattern = meta.get("pattern", "")
    match = _PATTERN.match(pattern)
    if match is None:
        raise ValueError(f"{shape.name} pattern {pattern!r} is not one repeated character class")
    categories, characters = set(), set()
    for token in _CLASS_TOKEN.finditer(match.group("cls")):
        if token.group("cat"):
            categories.add(token.group("cat"))
        else:
            characters.add(token.group("esc") or token.group("lit"))
    if "min" not in meta or "max" not in meta:
        raise ValueError(f"{shape.name} has no min/max length")
    return TextConstraint(
        shape.name, int(meta["min"]), int(meta["max"]), pattern, frozenset(categories), frozenset(characters)
    )


@functools.lru_cache(maxsize=1)
def customer_metadata_constraints() -> tuple[TextConstraint, TextConstraint, int]:
    """(key, value, max entries) of SageMaker's ``CustomerMetadataMap``, read from botocore's model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.shape_for("CustomerMetadataMap")
    return _text_constraint(shape.key), _text_constraint(shape.value), int(shape.metadata.get("max", 50))


def customer_metadata_problem(properties: Any, keys_to_remove: Any = None) -> str | None:
    """SageMaker's ValidationException message for ``CustomerMetadataProperties`` (and
    ``CustomerMetadataPropertiesToRemove``) outside the API model's constraints, naming the key; None if valid."""
    key_rule, value_rule, max_entries = customer_metadata_constraints()
    properties = properties or {}
    if len(properties) > max_entries:
        return (
            "1 validation error detected: Value at 'customerMetadataProperties' failed to satisfy constraint: "
            f"Member must have length less than or equal to {max_entries} ({len(properties)} entries)"
        )
    for key, value in properties.items():
        problem = key_rule.problem(key)
        if problem:
            return (
                f"1 validation error detected: Key '{key}' at 'customerMetadataProperties' failed to satisfy "
                f"constraint: Map key must satisfy constraint: [{problem}]"
            )
        problem = value_rule.problem(value)
        if problem:
            return (
                f"1 validation error detected: Value at 'customerMetadataProperties.{key}' failed to satisfy "
                f"constraint: Map value must satisfy constraint: [{problem}]"
            )
    for key in keys_to_remove or []:
        problem = key_rule.problem(key)
        if problem:
            return (
                f"1 validation error detected: Value '{key}' at 'customerMetadataPropertiesToRemove' failed to "
                f"satisfy constraint: Member must satisfy constraint: [{problem}]"
            )
    return None


def _patch_create_model_package() -> None:
    from moto.sagemaker import models
    from moto.sagemaker.exceptions import ValidationError

    original = models.SageMakerModelBackend.create_model_package
    signature = inspect.signature(
        original
    )  # install() runs once (_installed): no guard against wrapping twice

    @functools.wraps(original)
    def create_model_package(self: Any, *args: Any, **kwargs: Any) -> str:
        bound = signature.bind(self, *args, **kwargs)
        problem = customer_metadata_problem(bound.arguments.get("customer_metadata_properties"))
        if problem:
            raise ValidationError(problem)
        return original(self, *args, **kwargs)

    models.SageMakerModelBackend.create_model_package = create_model_package


def _patch_update_model_package() -> None:
    from moto.sagemaker import models
    from moto.sagemaker.exceptions import ValidationError

    def update_model_package(
        self: Any,
        model_package_arn: str,
        model_approval_status: str | None,
        approval_description: str | None,
        customer_metadata_properties: dict[str, str] | None,
        customer_metadata_properties_to_remove: list[str] | None,
        additional_inference_specifications_to_add: list[Any] | None,
    ) -> str:
        problem = customer_metadata_problem(
            customer_metadata_properties, customer_metadata_properties_to_remove
        )
        if problem:
            raise ValidationError(problem)
        name = self.model_package_name_mapping.get(model_package_arn, model_package_arn)
        package = self.model_packages.get(name)
        if package is None:
            raise ValidationError(f"Model package {model_package_arn} not found")
        if model_approval_status is not None:
            package.set_model_approval_status(model_approval_status)
        if approval_description is not None:
            package.approval_description = approval_description
        if customer_metadata_properties or customer_metadata_properties_to_remove:
            merged = dict(package.customer_metadata_properties or {})
            merged.update(customer_metadata_properties or {})
            for key in customer_metadata_properties_to_remove or []:
                merged.pop(key, None)
            package.customer_metadata_properties = merged
        if additional_inference_specifications_to_add:
            package.add_additional_inference_specifications(additional_inference_specifications_to_add)
        package.modifications_done()
        return package.arn

    models.SageMakerModelBackend.update_model_package = update_model_package


def _patch_change_set_outputs() -> None:
    """Executing a change set registers the stack's outputs and exports (replacing the stack's old ones), and
    resolves ``Fn::ImportValue`` against the region's exports, as ``CreateStack`` does in moto."""
    from moto.cloudformation import models

    original_execute = models.CloudFormationBackend.execute_change_set

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        stack = self.describe_change_set(change_set_name).stack
        stack.cross_stack_resources = self.exports  # the region's exports, for Fn::ImportValue
        stack.resource_map.cross_stack_resources = self.exports
        previous = [e.name for e in stack.exports]  # the exports of the template the stack had
        original_execute(self, change_set_name, stack_name)
        for name in previous:
            self.exports.pop(name, None)
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        self._validate_export_uniqueness(stack)
        for export in stack.exports:
            self.exports[export.name] = export

    models.CloudFormationBackend.execute_change_set = execute_change_set

    # A deleted stack's outputs were still worked out on demand from its resources, so describing the deleted
    # stack (``cdk destroy`` does, to follow it) made its outputs' resources again: a bucket came back after
    # its stack was gone. A deleted stack now has no outputs, and nothing is made again.
    original_delete = models.CloudFormationBackend.delete_stack

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        deleted_before = set(self.deleted_stacks)
        original_delete(self, name_or_stack_id)
        for stack_id in set(self.deleted_stacks) - deleted_before:
            self.deleted_stacks[stack_id].output_map = _NoOutputs()

    models.CloudFormationBackend.delete_stack = delete_stack


class _NoOutputs(dict):  # type: ignore[type-arg]
    """A deleted stack's output map: no outputs, no exports."""

    exports: list[Any] = []
