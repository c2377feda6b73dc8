"""The local prediction API: an HTTP server standing in for API Gateway in front of the real proxy code.

``POST /predict`` and ``POST /feedback`` become the API Gateway REST proxy event the proxy Lambda gets on
AWS and go through the same ``proxy_handler.Proxy``. The proxy's parameters live where they live on AWS:
in the environment of the Lambda function record ``{project}-proxy`` (in moto), created at start with the
project configuration's defaults. A background thread re-reads that environment every second and, when it
changed, builds a new ``Proxy`` (a Lambda cold start); ``trainserve params set`` also asks it to re-read at
once (``request_refresh``) and waits until it has, so a change applies to the next request, as on AWS once
the function update has completed. There is no authentication locally (on AWS the API needs an API key);
the server listens on 127.0.0.1 only.

Prediction logs are sent the way they are on AWS: after the response, by the proxy's background sender
(``background_delivery``), whose concurrent requests share ``PutRecordBatch`` calls. Its Firehose logger
runs in a process of its own (``log_delivery``): on AWS the sending uses the CPU of the Lambda environment
that answered, not that of the environments serving other requests. The warehouse loader drains the senders
before a flush, so a flush sees every prediction answered before it.

Server: the standard library's ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive; the proxy does blocking
boto3 calls (the model, Firehose), so a thread per connection is the natural fit (an asyncio server would
hand each request to a thread pool anyway).

HTTP, as API Gateway takes it: the API's URL has no stage path locally (on AWS, ``PredictionApiUrl`` ends
with the stage, ``/prod/``), so the routes are exactly ``POST /predict`` and ``POST /feedback`` (a trailing
``/`` allowed); any other path is a 404, and another method (GET, PUT, ...) on those two is a 405 with
``Allow: POST``, worded as the proxy words it. Neither reaches the proxy: on AWS, API Gateway answers both
itself (its 403 "Missing Authentication Token": the API defines only POST on the two resources). A body
comes with a ``Content-Length`` or ``Transfer-Encoding: chunked`` (decoded, as API Gateway does), up to API
Gateway's 10 MiB payload limit (413 past it; the proxy's own limit is lower). A malformed length or chunk
framing is a 400; an answer to a request whose body could not be read closes the connection, since where
the next request starts is unknown.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trainserve import LAMBDAS_DIR
from trainserve.local.component import BusyMeter, read_token, request_and_wait, write_token

REFRESH_SECONDS = 1.0
REFRESH_REQUEST = "api.refresh"  # in the state dir: a token written by request_refresh()
REFRESH_DONE = "api.refreshed"  # the API writes the token back once it has re-read the parameters after it
REFRESH_POLL_SECONDS = 0.05
RETIRE_SECONDS = 30.0  # a replaced proxy keeps its senders this long (requests in flight log through it)
STOP_DRAIN_SECONDS = 10.0  # stop() waits at most this long for the requests in flight
# The proxy's background delivery buffer here, in log records (a Lambda environment's default is 20,000):
# the log delivery process runs at the lowest CPU priority, so while other programs take every CPU it falls
# behind, and this buffer holds the difference instead of the log fallback: about 8 s of 100-row requests at
# the local API's full rate, 17-64 MB with 30 features a row (the rows' JSON text: ``JsonRows.of``).
BUFFER_RECORDS = 100_000
PROXY_DIR = LAMBDAS_DIR / "proxy"
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit (the proxy answers 413 past 6 MiB itself)
_DIGITS = re.compile(rb"[0-9]+")
_HEX = re.compile(rb"[0-9a-fA-F]+")
_LINE_LIMIT = 65_536  # a chunk-size or trailer line longer than this is malformed
LOCAL_ACCOUNT = "123456789012"


def proxy_environment(config: Any, names: Any) -> dict[str, str]:
    """The proxy function's environment: wiring + the parameter defaults from the project configuration."""
    import proxy_logic

    params = proxy_logic.ProxyParams(
        serving_enabled=True,
        target_variant=None,
        decision_threshold=float(config.decision_threshold),
        log_sample_rate=float(config.log_sample_rate),
        sticky_assignment=bool(config.sticky_assignment),
    )
    return {
        "ENDPOINT_NAME": names.endpoint_name,
        "MODEL_PACKAGE_GROUP": names.model_package_group,
        "PREDICTIONS_STREAM": names.predictions_stream,
        "FEEDBACK_STREAM": names.feedback_stream,
        **proxy_logic.params_to_env(params),
    }


def _handler_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(PROXY_DIR.glob("*.py")):
            z.write(f, f.name)
    return buf.getvalue()


def ensure_proxy_function(lambda_client: Any, iam_client: Any, config: Any, names: Any) -> dict[str, str]:
    """Create the ``{project}-proxy`` function record (moto) if missing; returns its environment."""
    try:
        cfg = lambda_client.get_function_configuration(FunctionName=names.proxy_function)
        return dict(cfg.get("Environment", {}).get("Variables", {}))
    except lambda_client.exceptions.ResourceNotFoundException:
        pass
    role_name = f"{config.project_name}-proxy-role"
    try:
        role_arn = iam_client.get_role(RoleName=role_name)["Role"]["Arn"]
    except iam_client.exceptions.NoSuchEntityException:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role_arn = iam_client.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))[
            "Role"
        ]["Arn"]
    env = proxy_environment(config, names)
    lambda_client.create_function(
        FunctionName=names.proxy_function,
        Runtime="python3.12",
        Role=role_arn,
        Handler="proxy_handler.handler",
        Code={"ZipFile": _handler_zip()},
        Timeout=29,
        MemorySize=512,
        Environment={"Variables": env},
    )
    return env


def api_event(method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The API Gateway REST proxy event for one HTTP request."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "queryStringParameters": None,
        "requestContext": {"stage": "local", "requestId": f"local-{time.time_ns()}", "httpMethod": method},
        "body": body.decode("utf-8", errors="replace") if body else None,
        "isBase64Encoded": False,
    }


class _BadRequest(Exception):
    """A request whose body cannot be read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _read_chunked(rfile: Any, limit: int) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` request (trailers read and dropped); ``_BadRequest`` for
    malformed framing, 413 once the data passes ``limit`` bytes."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(_LINE_LIMIT + 1)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not _HEX.fullmatch(size_text):
            raise _BadRequest(400, f"malformed chunked body: chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise _BadRequest(
                413, f"request body is over {limit} bytes; the limit is {limit} bytes (API Gateway)"
            )
        data = rfile.read(size)
        if len(data) < size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise _BadRequest(400, "malformed chunked body: a chunk's data does not match its size")
        parts.append(data)
    while True:  # trailer fields, up to the empty line
        line = rfile.readline(_LINE_LIMIT + 1)
        if line in (b"\r\n", b"\n", b""):
            break
        if not line.endswith(b"\n"):
            raise _BadRequest(400, "malformed chunked body: a trailer line is too long")
    return b"".join(parts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per
    # keep-alive request (measured: 87 req/s -> thousands).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no per-request access log (speed)
        return

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")  # also ends the keep-alive loop (close_connection)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers of the full one, and no body
            self.wfile.write(body)

    def _send_error_json(
        self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        self.server.component.count(status)
        body = json.dumps({"error": message}, separators=(",", ":")).encode()
        self._send(status, body, close=close, headers=headers)

    def do_GET(self) -> None:  # noqa: N802
        if urlparse(self.path).path == "/_health":
            self._send(200, b'{"status":"ok"}')
        else:
            self._not_post()

    def _not_post(self) -> None:
        """A method other than POST: 405 with ``Allow: POST`` on the API's resources (as the proxy answers it),
        404 elsewhere; neither reaches the proxy. A body sent along is read first (keep-alive goes on)."""
        import proxy_handler

        try:
            self._read_body()
        except _BadRequest:
            close = True
        else:
            close = False
        path = urlparse(self.path).path
        route = path.rstrip("/")
        if route in self.server.component.routes:
            allow = ", ".join(proxy_handler.ALLOWED_METHODS)
            message = proxy_handler.wrong_method_error(self.command, route)
            self._send_error_json(405, message, close=close, headers={"Allow": allow})
        else:
            self._send_error_json(404, f"no route {path}; use POST /predict or POST /feedback", close=close)

    do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_post  # noqa: N815

    def _read_body(self) -> bytes:
        """The request body, by its ``Content-Length`` or chunked; ``_BadRequest`` when it cannot be read."""
        encoding = self.headers.get("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if encoding is not None:
            if lengths:
                raise _BadRequest(
                    400, "both Transfer-Encoding and Content-Length are given; send one of them"
                )
            if encoding.strip().lower() != "chunked":
                raise _BadRequest(
                    501,
                    f"Transfer-Encoding {encoding!r} is not supported; send a Content-Length or "
                    "Transfer-Encoding: chunked",
                )
            return _read_chunked(self.rfile, MAX_REQUEST_BYTES)
        if not lengths:
            return b""
        texts = {text.strip() for text in lengths}
        if len(texts) > 1:
            raise _BadRequest(400, f"Content-Length is given {len(lengths)} times with different values")
        (text,) = texts
        if not _DIGITS.fullmatch(text.encode("latin-1", "replace")):
            raise _BadRequest(400, f"Content-Length {text!r} is not a number of bytes")
        length = int(text)
        if length > MAX_REQUEST_BYTES:
            raise _BadRequest(
                413, f"request body is {length} bytes; the limit is {MAX_REQUEST_BYTES} bytes (API Gateway)"
            )
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise _BadRequest(
                400,
                f"request body ended after {len(body)} of the {length} bytes its Content-Length announced",
            )
        return body

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self._send_error_json(exc.status, exc.message, close=True)
            return
        path = urlparse(self.path).path
        if (
            path.rstrip("/") not in self.server.component.routes
        ):  # API Gateway has no such resource: no proxy call
            self._send_error_json(404, f"no route {path}; use POST /predict or POST /feedback")
            return
        component = self.server.component
        if not component.activity.enter():  # stopping: a keep-alive client still sending gets a clear answer
            self._send_error_json(503, "the local cloud is stopping", close=True)
            return
        try:
            response = component.proxy().handle(api_event("POST", path, dict(self.headers.items()), body))
            component.count(response["statusCode"])
            self._send(response["statusCode"], (response.get("body") or "").encode())
        finally:
            component.activity.exit()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    component: ApiComponent


def request_refresh(state_dir: Any, timeout: float = 10.0) -> bool:
    """Ask the running local API to re-read the proxy's parameters now, and wait until it has (so the next
    request sees a change just made). False if it did not confirm within ``timeout`` seconds."""
    return request_and_wait(Path(state_dir), REFRESH_REQUEST, REFRESH_DONE, timeout) is not None


class ApiComponent:
    """Local cloud component: the prediction API on ``ctx.api_url``'s port (127.0.0.1)."""

    name = "api"

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS):
        self.refresh_seconds = refresh_seconds
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._proxy: Any = None
        self._env: dict[str, str] | None = None
        self._clients: Any = None
        self._lambda: Any = None
        self._ctx: Any = None
        self._counts: dict[str, int] = {"requests": 0, "4xx": 0, "5xx": 0}
        self._last_error: str | None = None
        self._retired: dict[int, tuple[Any, threading.Timer]] = {}
        self._delivery: Any = None
        self.activity = BusyMeter()  # the daemon's shared one once started (ctx.api_activity)
        self.routes: tuple[str, ...] = ()  # the API's resources (proxy_handler.ROUTES), once started

    def start(self, ctx: Any) -> None:
        import proxy_handler

        from trainserve.local.log_delivery import DeliveryProcess

        self._ctx = ctx
        self.routes = proxy_handler.ROUTES
        self.activity = getattr(ctx, "api_activity", None) or self.activity
        target = ctx.target()
        self._delivery = DeliveryProcess(target).start()
        self._clients = proxy_handler.Clients(target.client)
        self._lambda = target.client("lambda")
        env = ensure_proxy_function(self._lambda, target.client("iam"), ctx.config, ctx.names)
        self._apply_env(env)
        url = urlparse(ctx.api_url)
        self._server = _Server(("127.0.0.1", url.port or 80), _Handler)
        self._server.component = self
        self._stop.clear()
        serve = threading.Thread(target=self._server.serve_forever, name="api-server", daemon=True)
        refresh = threading.Thread(target=self._refresh_loop, name="api-params", daemon=True)
        self._threads = [serve, refresh]
        for t in self._threads:
            t.start()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def _apply_env(self, env: dict[str, str]) -> None:
        import proxy_handler

        if env == self._env:
            return
        old = self._proxy
        wiring = proxy_handler.Wiring.from_env(env)
        directory = old.directory if old is not None and old.wiring == wiring else None
        self._proxy = proxy_handler.Proxy.from_env(
            env,
            clients=self._clients,
            directory=directory,
            delivery="background",
            make_logger=self._make_logger,
            buffer_records=BUFFER_RECORDS,
        )
        self._env = env
        if old is not None:
            self._retire(old)
            if self._ctx is not None:
                self._ctx.log.info("proxy parameters changed: %s", self._proxy.params.as_json())

    def _make_logger(self, stream: str) -> Any:
        """The proxy's Firehose logger for ``stream``: its sending runs in the log delivery process."""
        from trainserve.local.log_delivery import RemoteFirehoseLogger

        return RemoteFirehoseLogger(self._delivery, stream)

    def _retire(self, proxy: Any) -> None:
        """Close a replaced proxy's senders once requests still running on it are done (API Gateway's
        29 s integration limit); until then it keeps delivering what they log."""
        timer = threading.Timer(RETIRE_SECONDS, self._close_retired, args=(proxy,))
        timer.daemon = True
        self._retired[id(proxy)] = (proxy, timer)
        timer.start()

    def _close_retired(self, proxy: Any) -> None:
        if self._retired.pop(id(proxy), None) is not None:
            proxy.close()

    def refresh(self) -> None:
        """Re-read the proxy function's environment (done every ``refresh_seconds`` by a thread)."""
        cfg = self._lambda.get_function_configuration(FunctionName=self._ctx.names.proxy_function)
        self._apply_env(dict(cfg.get("Environment", {}).get("Variables", {})))

    def _refresh_loop(self) -> None:
        """Re-read the parameters every ``refresh_seconds``, and at once when ``request_refresh`` asks (then
        answer it, unless the re-read failed: the asker then times out, and ``status()`` says why)."""
        state_dir = self._ctx.state_dir
        answered = read_token(state_dir / REFRESH_REQUEST)  # a request left from before this start
        last = time.monotonic()
        while not self._stop.wait(REFRESH_POLL_SECONDS):
            token = read_token(state_dir / REFRESH_REQUEST)
            asked = token is not None and token != answered
            if not asked and time.monotonic() - last < self.refresh_seconds:
                continue
            last = time.monotonic()
            try:
                self.refresh()
                self._last_error = None
            except Exception as exc:  # noqa: BLE001 - keep serving with the last parameters
                self._last_error = f"cannot read the proxy parameters: {exc}"
                continue
            if asked and token is not None:
                write_token(state_dir / REFRESH_DONE, token)
                answered = token

    def proxy(self) -> Any:
        return self._proxy

    def count(self, status: int) -> None:
        self._counts["requests"] += 1
        if 400 <= status < 500:
            self._counts["4xx"] += 1
        elif status >= 500:
            self._counts["5xx"] += 1

    def stop(self) -> None:
        self._stop.set()
        # No new request is served from here on (shutdown() below only stops accepting connections: handler
        # threads of keep-alive connections would go on answering after their proxy closed, so their log records
        # went to the log fallback, missing from the warehouse); the requests in flight finish first.
        self.activity.close(STOP_DRAIN_SECONDS)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        for proxy, timer in list(self._retired.values()):
            timer.cancel()
            self._close_retired(proxy)
        if self._proxy is not None:
            self._proxy.close()  # deliver what is still buffered before the local cloud goes down
        if self._delivery is not None:
            self._delivery.stop()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self._ctx.api_url if self._ctx else None,
            "running": self._server is not None,
            "auth": "none (local)",
            **self._counts,
        }
        if self._proxy is not None:
            out["params"] = self._proxy.params.as_dict()
        if self._delivery is not None:
            out["log_delivery"] = self._delivery.status()
        import prediction_log

        # log records that went to the log fallback instead of Firehose (buffer overflow, refused records)
        out["undelivered_log_records"] = prediction_log.undelivered_counts()
        if self._last_error:
            out["alarms"] = [self._last_error]
        return out
