"""serve.py over real HTTP on 127.0.0.1: the SageMaker hosting contract, error statuses, worker survival."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference import serve

SERVE_PY = Path(serve.__file__).resolve()
LIMIT = 6_291_456


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, server: str):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE_PY), "--model-dir", str(model_dir), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1", "--server", server],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read().decode()}")
            try:
                if self.request("GET", "/ping")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not answer /ping within 30 s")
            time.sleep(0.1)

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheader("content-type"), resp.read()
        finally:
            conn.close()

    def invoke(self, body, content_type, **headers):
        status, ctype, out = self.request(
            "POST",
            "/invocations",
            body,
            {"Content-Type": content_type, **headers} if content_type else headers,
        )
        assert ctype == "application/json"
        return status, json.loads(out)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # anything left of its own process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def server(request, lr_model_dir):
    srv = Server(lr_model_dir, request.param)
    yield srv
    srv.stop()


def csv_of(rows) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def test_ping(server):
    status, ctype, _ = server.request("GET", "/ping")
    assert status == 200 and ctype == "application/json"


@pytest.mark.parametrize("n", [1, 100])
@pytest.mark.parametrize("kind", ["csv", "json"])
def test_invocations_match_sklearn(server, lr_pipeline, cancer, n, kind):
    X = cancer[0][:n]
    if kind == "csv":
        status, doc = server.invoke(csv_of(X), "text/csv")
    else:
        status, doc = server.invoke(json.dumps({"instances": X.tolist()}), "application/json")
    assert status == 200
    preds = doc["predictions"]
    assert [p["score"] for p in preds] == pytest.approx(
        lr_pipeline.predict_proba(X)[:, 1].tolist(), abs=1e-12, rel=0
    )
    assert [p["label"] for p in preds] == lr_pipeline.predict(X).tolist()


def test_threshold_header(server, cancer):
    X = cancer[0][:50]
    _, base = server.invoke(csv_of(X), "text/csv")
    status, strict = server.invoke(csv_of(X), "text/csv", **{"X-Threshold": "0.999999"})
    assert status == 200
    assert [p["score"] for p in strict["predictions"]] == [p["score"] for p in base["predictions"]]
    assert [p["label"] for p in strict["predictions"]] == [
        int(p["score"] >= 0.999999) for p in base["predictions"]
    ]
    assert sum(p["label"] for p in strict["predictions"]) < sum(p["label"] for p in base["predictions"])


def test_bad_payload_is_400_with_a_clear_message(server, cancer):
    rows = [[1.0] * 30 for _ in range(3)]
    rows[2][6] = "abc"
    status, doc = server.invoke(json.dumps({"instances": rows}), "application/json")
    assert status == 400
    assert doc == {"error": f"row 3, column 7 ({cancer[2][6]}): 'abc' is not a number"}
    status, doc = server.invoke(b"1,2,3\n", "text/csv")
    assert (status, doc) == (400, {"error": "row 1 has 3 values, the model expects 30 (schema.json)"})
    status, doc = server.invoke(b"", "text/csv")
    assert status == 400 and doc["error"].startswith("empty request body")


def test_unsupported_content_type_is_415(server):
    status, doc = server.invoke(b"1,2", "text/plain")
    assert status == 415 and "unsupported content type 'text/plain'" in doc["error"]
    status, doc = server.invoke(b"1,2", None)
    assert status == 415 and "no Content-Type" in doc["error"]


def test_body_over_the_limit_is_413(server):
    status, doc = server.invoke(b"1," * (LIMIT // 2 + 1), "text/csv")
    assert status == 413
    assert doc == {"error": f"request body is {2 * (LIMIT // 2 + 1)} bytes, the limit is {LIMIT} bytes"}


def test_chunked_body_over_the_limit_is_413(server, cancer):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        chunks = (b"1," * 65536 for _ in range(LIMIT // (2 * 65536) + 1))  # no Content-Length
        conn.request(
            "POST", "/invocations", body=chunks, headers={"Content-Type": "text/csv"}, encode_chunked=True
        )
        resp = conn.getresponse()
        assert resp.status == 413 and "the limit is 6291456 bytes" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    status, doc = server.invoke(csv_of(cancer[0][:1]), "text/csv")
    assert status == 200


def test_unknown_route_and_method(server):
    status, _, body = server.request("GET", "/nope")
    assert status == 404 and "use GET /ping or POST /invocations" in json.loads(body)["error"]
    status, _, body = server.request("GET", "/invocations")
    assert status == 405 and "use POST" in json.loads(body)["error"]


def test_not_acceptable(server):
    status, doc = server.invoke(b",".join([b"1"] * 30), "text/csv", Accept="text/csv")
    assert status == 406 and "application/json" in doc["error"]


def test_worker_keeps_serving_after_bad_requests(server, cancer):
    for body, ctype in (
        (b"{", "application/json"),
        (b"x", "image/png"),
        (b"\xff", "text/csv"),
        (b"1" * (LIMIT + 1), "text/csv"),
    ):
        assert server.invoke(body, ctype)[0] in (400, 413, 415)
    status, doc = server.invoke(csv_of(cancer[0][:2]), "text/csv")
    assert status == 200 and len(doc["predictions"]) == 2
    assert server.proc.poll() is None


def test_model_failure_is_500_and_the_worker_survives(rf_model_dir, rf_pipeline, cancer):
    srv = Server(rf_model_dir, "granian")
    try:
        # finite in float64, but the forest works in float32: scikit-learn raises inside predict_proba
        status, doc = srv.invoke(b",".join([b"1e300"] * 30), "text/csv")
        assert status == 500
        assert doc["error"].startswith("internal error while predicting: ValueError")
        X = cancer[0][:5]
        status, doc = srv.invoke(csv_of(X), "text/csv")
        assert status == 200
        assert [p["score"] for p in doc["predictions"]] == rf_pipeline.predict_proba(X)[:, 1].tolist()
    finally:
        srv.stop()


def test_cli_refuses_a_model_dir_without_a_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SERVE_PY), "serve", "--model-dir", str(tmp_path), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "cannot load the model" in proc.stderr and "schema.json not found" in proc.stderr


def test_defaults_follow_the_sagemaker_contract(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    monkeypatch.setenv("SM_MODEL_DIR", "/models/here")
    args = serve.parse_args(["serve"])
    assert (args.workers, args.model_dir, args.port, args.host) == (3, "/models/here", 8080, "0.0.0.0")
    monkeypatch.delenv("SAGEMAKER_MODEL_SERVER_WORKERS")
    monkeypatch.delenv("SM_MODEL_DIR")
    args = serve.parse_args([])
    assert (args.workers, args.model_dir) == (os.cpu_count(), "/opt/ml/model")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "many")
    with pytest.raises(SystemExit, match="SAGEMAKER_MODEL_SERVER_WORKERS must be a whole number"):
        serve.parse_args([])


def test_workers_do_not_outlive_a_killed_server(lr_model_dir):
    import psutil

    srv = Server(lr_model_dir, "granian")
    try:
        workers = psutil.Process(srv.proc.pid).children()
        assert workers, "granian runs its workers as child processes"
        srv.proc.kill()  # SIGKILL: no chance to stop the workers itself
        srv.proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
    finally:
        srv.stop()
