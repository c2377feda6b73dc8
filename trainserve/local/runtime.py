"""The local SageMaker runtime: ``InvokeEndpoint`` over HTTP, serving each live variant's own model.

An unmodified boto3 ``sagemaker-runtime`` client with ``endpoint_url=<runtime url>`` works against it:
``POST /endpoints/{EndpointName}/invocations`` with the ``Content-Type``, ``Accept``,
``X-Amzn-SageMaker-Target-Variant`` and ``X-Amzn-SageMaker-Custom-Attributes`` headers; the answer carries
the model's body, its ``Content-Type`` and ``x-Amzn-Invoked-Production-Variant``.

Routing follows the endpoint's live state in the control plane (moto): ``DescribeEndpoint`` weights
(cached for at most ``cache_seconds``; a target variant missing from the cache is looked up afresh before it
is refused), a random choice in proportion to ``CurrentWeight`` unless a target
variant is named. Each variant resolves to its model (endpoint config → model → ``ModelDataUrl``, directly
or through the model package), whose ``model.tar.gz`` is downloaded from S3 and extracted under
``<state dir>/models/<model name>/``; one serving process per model runs
``inference/serve.py --model-dir DIR --host 127.0.0.1 --port P --workers 1``. A background loop starts the
servers of newly live variants ahead of traffic and stops those no longer live on any endpoint.

Errors use the shapes AWS returns (``x-amzn-ErrorType`` header + JSON body), so boto3 raises ``ClientError``
with the AWS codes: ``ValidationError`` (400) for an unknown endpoint or target variant, ``ModelError``
(424, with ``OriginalStatusCode`` / ``OriginalMessage``) when the model's server answers with an error,
``ServiceUnavailable`` (503) when a model's server cannot start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import urllib3
from botocore.exceptions import ClientError

from trainserve import PROJECT_ROOT
from trainserve.local.ports import free_ports
from trainserve.target import LOCAL_ACCOUNT

SERVE_SCRIPT = PROJECT_ROOT / "inference" / "serve.py"
_INVOKE_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
_ERROR_NS = ":http://internal.amazon.com/coral/com.amazon.sagemaker/"
_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
MAX_BODY = 6_291_456  # InvokeEndpoint's payload limit
RETRY_FAILED_SECONDS = 30.0  # the background loop retries a model that failed to start after this long


class InvokeError(Exception):
    """An InvokeEndpoint failure with the AWS error code, HTTP status and extra modeled fields."""

    def __init__(self, code: str, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.fields = code, status, message, fields


@dataclass
class LiveVariant:
    name: str
    weight: float
    model_name: str


@dataclass
class LiveEndpoint:
    name: str
    variants: list[LiveVariant]
    fetched_at: float


@dataclass
class ModelServer:
    model_name: str
    model_dir: Path
    port: int
    process: subprocess.Popen
    log_file: Path
    started_at: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None


class RuntimeComponent:
    """The ``runtime`` component: the SageMaker Runtime API on ``ctx.runtime_url``."""

    name = "runtime"

    def __init__(
        self,
        serve_script: Path | str | None = None,
        python: str | None = None,
        cache_seconds: float = 1.0,
        reconcile_seconds: float = 2.0,
        start_timeout: float = 90.0,
    ) -> None:
        self.serve_script = Path(serve_script) if serve_script else SERVE_SCRIPT
        self.python = python or sys.executable
        self.cache_seconds = cache_seconds
        self.reconcile_seconds = reconcile_seconds
        self.start_timeout = start_timeout
        self._endpoints: dict[str, LiveEndpoint] = {}
        self._configs: dict[str, dict[str, str]] = {}  # endpoint config -> {variant: model} (immutable)
        self._servers: dict[str, ModelServer] = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._recent_errors: deque[str] = deque(maxlen=5)
        self._http = urllib3.PoolManager(maxsize=64, block=False, retries=False)
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.url: str | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        self.log = ctx.log.getChild("runtime") if ctx.log else logging.getLogger("trainserve.runtime")
        target = ctx.target()
        self._sm = target.client("sagemaker")
        self._s3 = target.client("s3")
        self.models_dir = Path(ctx.state_dir) / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        parsed = urlparse(ctx.runtime_url)
        self._httpd = _QuietServer((parsed.hostname or "127.0.0.1", parsed.port or 0), _handler_for(self))
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        serve = threading.Thread(target=self._httpd.serve_forever, name="runtime-http", daemon=True)
        reconcile = threading.Thread(target=self._reconcile_loop, name="runtime-reconcile", daemon=True)
        refresh = threading.Thread(target=self._refresh_loop, name="runtime-refresh", daemon=True)
        self._threads = [serve, reconcile, refresh]
        for t in self._threads:
            t.start()
        self.log.info("SageMaker runtime listening on %s", ctx.runtime_url)

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            self._stop_server(server)

    def status(self) -> dict[str, Any]:
        with self._lock:
            servers = {
                name: {"pid": s.process.pid, "url": s.url, "alive": s.alive(), "model_dir": str(s.model_dir)}
                for name, s in self._servers.items()
            }
            endpoints = {
                name: {v.name: {"weight": v.weight, "model": v.model_name} for v in ep.variants}
                for name, ep in self._endpoints.items()
            }
        return {
            "url": self.url,
            "endpoints": endpoints,
            "model_servers": servers,
            "invocations": dict(self._counts),
            "errors": dict(self._errors),
            "recent_errors": list(self._recent_errors),
        }

    # --- control plane -----------------------------------------------------------------------------------

    def live_endpoint(self, endpoint_name: str) -> LiveEndpoint:
        """The endpoint's live variants, at most ``cache_seconds`` old (a background loop keeps the
        endpoints in use fresh, so requests rarely wait for the control plane)."""
        cached = self._endpoints.get(endpoint_name)
        if cached is not None and time.monotonic() - cached.fetched_at < self.cache_seconds:
            return cached
        return self._fetch_endpoint(endpoint_name)

    def _fetch_endpoint(self, endpoint_name: str) -> LiveEndpoint:
        now = time.monotonic()
        try:
            desc = self._sm.describe_endpoint(EndpointName=endpoint_name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ValidationError"):
                with self._lock:
                    self._endpoints.pop(endpoint_name, None)
                raise InvokeError(
                    "ValidationError", 400, f"Endpoint {endpoint_name} of account {LOCAL_ACCOUNT} not found."
                ) from exc
            raise
        models = self._config_models(desc["EndpointConfigName"])
        variants = [
            LiveVariant(v["VariantName"], float(v.get("CurrentWeight", 0.0)), models[v["VariantName"]])
            for v in desc.get("ProductionVariants", [])
            if v["VariantName"] in models
        ]
        live = LiveEndpoint(endpoint_name, variants, now)
        with self._lock:
            self._endpoints[endpoint_name] = live
        return live

    def _config_models(self, config_name: str) -> dict[str, str]:
        models = self._configs.get(config_name)
        if models is None:
            conf = self._sm.describe_endpoint_config(EndpointConfigName=config_name)
            models = {v["VariantName"]: v["ModelName"] for v in conf["ProductionVariants"]}
            self._configs[config_name] = models
        return models

    def _model_data_url(self, model_name: str) -> str:
        model = self._sm.describe_model(ModelName=model_name)
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        if container.get("ModelDataUrl"):
            return container["ModelDataUrl"]
        package = container.get("ModelPackageName")
        if package:
            desc = self._sm.describe_model_package(ModelPackageName=package)
            url = desc["InferenceSpecification"]["Containers"][0].get("ModelDataUrl")
            if url:
                return url
        raise InvokeError(
            "ServiceUnavailable",
            503,
            f"Model {model_name} has no ModelDataUrl (neither directly nor via its package)",
        )

    # --- model servers ------------------------------------------------------------------------------------

    def server_for(self, model_name: str) -> ModelServer:
        server = self._servers.get(model_name)
        if server is not None and server.alive():
            return server
        with self._lock:
            lock = self._model_locks.setdefault(model_name, threading.Lock())
        with lock:
            server = self._servers.get(model_name)
            if server is not None and server.alive():
                return server
            if server is not None:
                self.log.warning(
                    "model server of %s exited (code %s); restarting", model_name, server.process.poll()
                )
            server = self._start_server(model_name)
            with self._lock:
                stopping = self._stop.is_set()
                if not stopping:
                    self._servers[model_name] = server
            if stopping:
                self._stop_server(server)
                raise InvokeError("ServiceUnavailable", 503, "the local runtime is stopping")
            return server

    def _download(self, model_name: str) -> Path:
        url = self._model_data_url(model_name)
        parsed = urlparse(url)
        if parsed.scheme != "s3":
            raise InvokeError(
                "ServiceUnavailable", 503, f"Model {model_name}: ModelDataUrl {url} is not an s3:// URI"
            )
        model_dir = self.models_dir / model_name
        marker = model_dir / ".source"
        if marker.exists() and marker.read_text() == url:
            return model_dir
        tmp = self.models_dir / f".{model_name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = tmp / "model.tar.gz"
        try:
            self._s3.download_file(parsed.netloc, parsed.path.lstrip("/"), str(archive))
        except ClientError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InvokeError(
                "ServiceUnavailable", 503, f"Model {model_name}: cannot download {url}: {exc}"
            ) from exc
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        archive.unlink()
        (tmp / ".source").write_text(url)
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
        return model_dir

    def _start_server(self, model_name: str) -> ModelServer:
        model_dir = self._download(model_name)
        if not self.serve_script.exists():
            raise InvokeError(
                "ServiceUnavailable", 503, f"the serving app {self.serve_script} does not exist"
            )
        port = free_ports(1)  # below the ephemeral range: no outgoing connection takes it before it binds
        log_file = self.models_dir / f"{model_name}.log"
        cmd = [
            self.python,
            str(self.serve_script),
            "--model-dir",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self.log.info("starting the model server of %s on port %s", model_name, port)
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(PROJECT_ROOT),
                start_new_session=True,  # its own process group: stopping it stops any workers it forked
            )
        server = ModelServer(model_name, model_dir, port, proc, log_file)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if proc.poll() is not None:
                tail = _tail(log_file)
                raise InvokeError(
                    "ServiceUnavailable",
                    503,
                    f"the model server of {model_name} exited with code {proc.returncode}; log {log_file}: {tail}",
                )
            try:
                r = self._http.request("GET", server.url + "/ping", timeout=2.0)
                if r.status == 200:
                    self.log.info("model server of %s ready (pid %s)", model_name, proc.pid)
                    return server
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        self._stop_server(server)
        if self._stop.is_set():
            raise InvokeError("ServiceUnavailable", 503, "the local runtime is stopping")
        raise InvokeError(
            "ServiceUnavailable",
            503,
            f"the model server of {model_name} did not answer /ping in {self.start_timeout} s",
        )

    def _stop_server(self, server: ModelServer) -> None:
        if server.alive():
            _signal_group(server.process, signal.SIGTERM)
            try:
                server.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(server.process, signal.SIGKILL)
                server.process.wait(timeout=5)
        self.log.info("stopped the model server of %s", server.model_name)

    def reconcile(self) -> None:
        """Start servers for every live variant of every endpoint; stop those no longer live."""
        wanted: set[str] = set()
        paginator = self._sm.get_paginator("list_endpoints")
        for page in paginator.paginate():
            for ep in page["Endpoints"]:
                try:
                    live = self.live_endpoint(ep["EndpointName"])
                except InvokeError:
                    continue
                wanted.update(v.model_name for v in live.variants)
        with self._lock:
            stale = [s for name, s in self._servers.items() if name not in wanted]
            for s in stale:
                del self._servers[s.model_name]
        for s in stale:
            self._stop_server(s)
        now = time.monotonic()
        for model_name in sorted(wanted):
            if self._stop.is_set():
                return
            if now - self._failed_at.get(model_name, -RETRY_FAILED_SECONDS) < RETRY_FAILED_SECONDS:
                continue  # failed recently: requests still try it, the background loop waits a while
            try:
                self.server_for(model_name)
                self._failed_at.pop(model_name, None)
            except InvokeError as exc:
                self._failed_at[model_name] = time.monotonic()
                self._note_error("ServiceUnavailable", exc.message)
                self.log.warning("cannot serve model %s: %s", model_name, exc.message)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.cache_seconds / 2):
            for name in list(self._endpoints):
                try:
                    self._fetch_endpoint(name)
                except InvokeError:
                    pass  # deleted: dropped from the cache by _fetch_endpoint
                except Exception as exc:  # moto hiccup: the request path fetches again when stale
                    self.log.debug("endpoint refresh of %s failed: %s", name, exc)

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.reconcile_seconds):
            try:
                self.reconcile()
            except Exception as exc:  # keep the loop alive whatever moto answers; the log says why
                self.log.warning("runtime reconcile failed: %s", exc)

    # --- invocation ---------------------------------------------------------------------------------------

    def invoke(
        self, endpoint_name: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        asked_at = time.monotonic()
        live = self.live_endpoint(endpoint_name)
        if headers.get("x-amzn-sagemaker-target-model"):
            raise InvokeError(
                "ValidationError",
                400,
                f"Endpoint {endpoint_name} is not a multi-model endpoint and does not support target model header.",
            )
        target = headers.get("x-amzn-sagemaker-target-variant")
        if target:
            variant = next((v for v in live.variants if v.name == target), None)
            if variant is None and live.fetched_at < asked_at:
                # The cached view may predate a variant the control plane already shows InService (a caller
                # that just watched DescribeEndpoint expects it to answer): read the control plane once more.
                live = self._fetch_endpoint(endpoint_name)
                variant = next((v for v in live.variants if v.name == target), None)
            if variant is None:
                raise InvokeError(
                    "ValidationError",
                    400,
                    f"Target variant {target} not found for endpoint {endpoint_name} of account {LOCAL_ACCOUNT}.",
                )
        else:
            weighted = [v for v in live.variants if v.weight > 0]
            if not weighted:
                raise InvokeError(
                    "ValidationError",
                    400,
                    f"Endpoint {endpoint_name} has no production variant with traffic weight",
                )
            variant = (
                weighted[0]
                if len(weighted) == 1
                else random.choices(weighted, [v.weight for v in weighted])[0]
            )
        server = self.server_for(variant.model_name)
        fwd = {k: headers[k] for k in _FORWARDED_REQUEST_HEADERS if k in headers}
        try:
            resp = self._http.request(
                "POST",
                server.url + "/invocations",
                body=body,
                headers=fwd,
                timeout=60.0,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InvokeError(
                "ModelError",
                424,
                f'Received server error (0) from primary with message "{exc}". See {server.log_file} for more information.',
                OriginalStatusCode=0,
                OriginalMessage=str(exc),
                ErrorCode="SERVER_ERROR_FROM_MODEL",
            ) from exc
        if resp.status >= 400:
            original = resp.data.decode("utf-8", "replace")
            kind = "client" if resp.status < 500 else "server"
            raise InvokeError(
                "ModelError",
                424,
                f'Received {kind} error ({resp.status}) from primary with message "{original}". '
                f"See {server.log_file} for more information.",
                OriginalStatusCode=resp.status,
                OriginalMessage=original,
                ErrorCode=f"{kind.upper()}_ERROR_FROM_MODEL",
            )
        out = {
            "Content-Type": resp.headers.get("Content-Type", "application/json"),
            "x-Amzn-Invoked-Production-Variant": variant.name,
        }
        custom = resp.headers.get("X-Amzn-SageMaker-Custom-Attributes")
        if custom:
            out["X-Amzn-SageMaker-Custom-Attributes"] = custom
        self._counts[f"{endpoint_name}/{variant.name}"] += 1
        return 200, out, resp.data

    def _note_error(self, code: str, message: str) -> None:
        self._errors[code] += 1
        self._recent_errors.append(f"{code}: {message}"[:500])


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client closing its keep-alive connection is not an error
        super().handle_error(request, client_address)


def _handler_for(runtime: RuntimeComponent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "trainserve-runtime"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the caller logs
            return

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("x-amzn-RequestId", _request_id())
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, err: InvokeError) -> None:
            runtime._note_error(err.code, err.message)
            payload: dict[str, Any] = {"message": err.message}
            payload.update(err.fields)
            body = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": err.code + _ERROR_NS}
            self._send(err.status, headers, body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0] == "/ping":
                self._send(200, {"Content-Type": "text/plain"}, b"ok")
            else:
                self._error(InvokeError("UnknownOperationException", 404, f"unknown path {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            match = _INVOKE_PATH.match(self.path.split("?", 1)[0])
            if not match:
                self._error(InvokeError("UnknownOperationException", 404, f"unknown path {self.path}"))
                return
            if length > MAX_BODY:
                self._error(
                    InvokeError(
                        "ValidationError", 400, f"Request body is {length} bytes; the limit is {MAX_BODY}"
                    )
                )
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, out, data = runtime.invoke(unquote(match.group(1)), body, headers)
            except InvokeError as err:
                self._error(err)
                return
            except Exception as exc:  # an unexpected failure still answers in the AWS shape
                runtime.log.exception("InvokeEndpoint failed")
                self._error(InvokeError("InternalFailure", 500, f"{type(exc).__name__}: {exc}"))
                return
            self._send(status, out, data)

    return Handler


def _request_id() -> str:
    return f"{random.getrandbits(128):032x}"
