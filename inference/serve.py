"""The fast serving app: SageMaker's hosting contract (GET /ping, POST /invocations) over codec.py.

    python inference/serve.py [serve] [--model-dir DIR] [--host H] [--port P] [--workers N] [--server S]

Defaults follow SageMaker's bring-your-own-container contract: model dir ``SM_MODEL_DIR`` or
``/opt/ml/model``, host 0.0.0.0, port 8080 (``SAGEMAKER_BIND_TO_PORT``), workers
``SAGEMAKER_MODEL_SERVER_WORKERS`` or the CPU count. SageMaker runs ``docker run IMAGE serve``: the optional
``serve`` word is accepted and ignored. The local cloud's runtime starts one per variant with
``--host 127.0.0.1 --port P`` and waits for /ping.

``create_app(model_dir)`` returns an ``InferenceApp``: an ASGI 3 callable (uvicorn, any ASGI server) that
also speaks RSGI (``__rsgi__``), which granian serves with less per-request overhead. The CLI runs granian
(RSGI, no access log) unless ``--server uvicorn``.

Answers: 200 ``{"predictions": [...]}``; 400 bad payload, 406 unacceptable Accept, 413 body over
6,291,456 bytes, 415 unsupported content type, 404/405 unknown route; all errors are
``{"error": "<what is wrong>"}``. An unexpected exception answers 500 with its message and the worker
keeps serving.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # share the one top-level ``codec`` with inference.py
    sys.path.insert(0, _HERE)

import codec  # noqa: E402

log = logging.getLogger("trainserve.serve")

MODEL_DIR_ENV = "TRAINSERVE_SERVE_MODEL_DIR"  # how the CLI hands the model dir to granian's workers
PARENT_PID_ENV = "TRAINSERVE_SERVE_PARENT_PID"
_JSON_HEADERS = [("content-type", codec.JSON)]
_ASGI_JSON_HEADERS = [(b"content-type", codec.JSON.encode())]
_PING_BODY = b'{"status":"ok"}'


def default_model_dir() -> str:
    return os.environ.get("SM_MODEL_DIR", "/opt/ml/model")


def default_workers() -> int:
    value = os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS")
    if value:
        try:
            workers = int(value)
        except ValueError:
            raise SystemExit(
                f"SAGEMAKER_MODEL_SERVER_WORKERS must be a whole number, got {value!r}"
            ) from None
        if workers < 1:
            raise SystemExit(f"SAGEMAKER_MODEL_SERVER_WORKERS must be at least 1, got {value!r}")
        return workers
    return os.cpu_count() or 1


class InferenceApp:
    """One loaded model behind /ping and /invocations, as ASGI (``__call__``) and RSGI (``__rsgi__``)."""

    def __init__(self, model: codec.Model):
        self.model = model
        self.feature_names = model.schema.feature_names
        self.classes = model.schema.classes

    # -- the request logic, shared by both interfaces -------------------------------------------------

    def invoke(self, body: bytes, content_type, accept, threshold) -> tuple:
        """-> (status, JSON body). Never raises."""
        try:
            if accept:
                codec.check_accept(accept)
            batch = codec.decode(body, content_type, self.feature_names, threshold)
            return 200, codec.encode(codec.predict(batch, self.model), self.classes)
        except codec.PayloadError as e:
            return e.status, codec.error_body(str(e))
        except Exception as e:  # a bug or a model failure: answer and keep serving
            log.error("invocation failed: %s", traceback.format_exc())
            return 500, codec.error_body(f"internal error while predicting: {type(e).__name__}: {e}")

    @staticmethod
    def route_error(method: str, path: str) -> tuple:
        if path in ("/ping", "/invocations"):
            allowed = "GET" if path == "/ping" else "POST"
            return 405, codec.error_body(f"{method} {path} is not allowed: use {allowed}")
        return 404, codec.error_body(f"no route {path!r}: use GET /ping or POST /invocations")

    @staticmethod
    def too_large(size: int) -> tuple:
        return 413, codec.error_body(
            f"request body is {size} bytes, the limit is {codec.MAX_BODY_BYTES} bytes"
        )

    # -- RSGI (granian) --------------------------------------------------------------------------------

    async def __rsgi__(self, scope, proto):
        if scope.proto != "http":
            return
        path, method = scope.path, scope.method
        if path == "/invocations" and method == "POST":
            headers = scope.headers
            declared = _int_or_none(headers.get("content-length"))
            if declared is not None and declared > codec.MAX_BODY_BYTES:
                size = 0
                async for chunk in proto:  # drain, keep nothing
                    size += len(chunk)
                status, out = self.too_large(max(size, declared))
            else:
                body = await proto()
                if len(body) > codec.MAX_BODY_BYTES:
                    status, out = self.too_large(len(body))
                else:
                    status, out = self.invoke(
                        body, headers.get("content-type"), headers.get("accept"), headers.get("x-threshold")
                    )
        elif path == "/ping" and method == "GET":
            status, out = 200, _PING_BODY
        else:
            status, out = self.route_error(method, path)
        proto.response_bytes(status, _JSON_HEADERS, out)

    # -- ASGI 3 (uvicorn or any ASGI server) -----------------------------------------------------------

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if kind != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/invocations" and method == "POST":
            content_type = accept = threshold = declared = None
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value.decode("latin-1")
                elif name == b"accept":
                    accept = value.decode("latin-1")
                elif name == b"x-threshold":
                    threshold = value.decode("latin-1")
                elif name == b"content-length":
                    declared = _int_or_none(value)
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                part = message.get("body", b"")
                size += len(part)
                if size <= codec.MAX_BODY_BYTES and (declared is None or declared <= codec.MAX_BODY_BYTES):
                    chunks.append(part)
                more = message.get("more_body", False)
            if size > codec.MAX_BODY_BYTES or (declared is not None and declared > codec.MAX_BODY_BYTES):
                status, out = self.too_large(max(size, declared or 0))
            else:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                status, out = self.invoke(body, content_type, accept, threshold)
        elif path == "/ping" and method == "GET":
            status, out = 200, _PING_BODY
        else:
            status, out = self.route_error(method, path)
        await send({"type": "http.response.start", "status": status, "headers": _ASGI_JSON_HEADERS})
        await send({"type": "http.response.body", "body": out})


def _int_or_none(value):
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def create_app(model_dir: str) -> InferenceApp:
    """Load ``model_dir`` (model.joblib + schema.json) and return the ASGI/RSGI app serving it."""
    return InferenceApp(codec.load_model(model_dir))


def app_from_env() -> InferenceApp:
    """Factory for server workers: the model dir comes from TRAINSERVE_SERVE_MODEL_DIR, else SM_MODEL_DIR."""
    _die_with_parent()
    return create_app(os.environ.get(MODEL_DIR_ENV) or default_model_dir())


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when its server process dies, even by SIGKILL, so that no orphan keeps
    the port (the local runtime may kill a variant's server hard)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not sys.platform.startswith("linux") or not parent or int(parent) == os.getpid():
        return  # not under serve.py's CLI, or serving in the CLI's own process (uvicorn, 1 worker)
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------------------------------------ CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve a trainserve model over SageMaker's hosting contract."
    )
    parser.add_argument("command", nargs="?", choices=["serve"], help="ignored: SageMaker runs 'IMAGE serve'")
    parser.add_argument("--model-dir", default=default_model_dir(), help="holds model.joblib and schema.json")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument(
        "--workers", type=int, default=None, help="default: SAGEMAKER_MODEL_SERVER_WORKERS or CPUs"
    )
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    model_dir = os.path.abspath(args.model_dir)
    try:  # fail here, once, with a clear message rather than in every worker
        model = codec.load_model(model_dir)
    except (codec.ModelLoadError, OSError, ValueError) as e:
        print(f"serve: cannot load the model: {e}", file=sys.stderr)
        return 2
    print(
        f"serve: {model_dir} ({type(model.pipeline).__name__}, "
        f"{'compiled to numpy' if model.compiled else 'scikit-learn predict_proba'}) on "
        f"http://{args.host}:{args.port} with {args.workers} worker(s) [{args.server}]",
        file=sys.stderr,
        flush=True,
    )
    os.environ[MODEL_DIR_ENV] = model_dir
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "serve:app_from_env",
            factory=True,
            app_dir=_HERE,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=False,
            log_level=args.log_level,
        )
        return 0
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    Granian(
        "serve:app_from_env",
        factory=True,
        working_dir=Path(_HERE),
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=args.workers,
        http=HTTPModes.http1,
        websockets=False,
        log_access=False,
        log_level=args.log_level,
        respawn_failed_workers=True,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
