"""The local prediction API end to end: HTTP -> the real proxy code -> (moto registry and endpoint, a
stand-in runtime) -> moto Firehose -> S3 staging -> the local warehouse.

The SageMaker runtime is a collaborator here (the real one is another component of the local cloud), so a
tiny HTTP server answers ``InvokeEndpoint`` with score = first feature / 10 and reports the variant it was
asked for (or ``v1``). Everything else is the real thing over HTTP: a ThreadedMotoServer for AWS, the
proxy handler, the warehouse component.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from moto.server import ThreadedMotoServer
from registry_fixture import create_live_endpoint

from trainserve.local.api import ApiComponent
from trainserve.local.component import BusyMeter
from trainserve.local.warehouse import WarehouseComponent

FEATURES = ["f0", "f1", "f2"]


class _Runtime(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    calls: list[dict] = []

    def log_message(self, *args):
        return

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        variant = self.headers.get("X-Amzn-SageMaker-Target-Variant") or "v1"
        type(self).calls.append(
            {"path": self.path, "variant": self.headers.get("X-Amzn-SageMaker-Target-Variant")}
        )
        out = json.dumps(
            {"predictions": [{"score": r[0] / 10, "label": 0} for r in body["instances"]]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Amzn-Invoked-Production-Variant", variant)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, local_context):
    from stacks.config import load
    from trainserve import PROJECT_ROOT

    config = load(PROJECT_ROOT)
    tmp = tmp_path_factory.mktemp("local")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    runtime = ThreadingHTTPServer(("127.0.0.1", 0), _Runtime)
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    host, port = moto.get_host_and_port()
    ctx = local_context(
        config,
        tmp,
        f"http://{host}:{port}",
        runtime_url=f"http://127.0.0.1:{runtime.server_address[1]}",
        api_url=f"http://127.0.0.1:{_free_port()}",
        api_activity=BusyMeter(),
    )
    create_live_endpoint(
        ctx.target().client("sagemaker"),
        ctx.names.model_package_group,
        ctx.names.endpoint_name,
        FEATURES,
        {"v1": 0.5, "v2": 0.5},
    )
    warehouse = WarehouseComponent(interval=3600)
    api = ApiComponent(refresh_seconds=3600)  # the test calls refresh() itself
    warehouse.start(ctx)
    api.start(ctx)
    try:
        yield ctx, api, warehouse
    finally:
        api.stop()
        warehouse.stop()
        runtime.shutdown()
        moto.stop()


def _post(ctx, path: str, payload) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(ctx.api_url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _set_params(ctx, api, **values):
    lam = ctx.target().client("lambda")
    env = lam.get_function_configuration(FunctionName=ctx.names.proxy_function)["Environment"]["Variables"]
    env.update({k: str(v) for k, v in values.items()})
    lam.update_function_configuration(FunctionName=ctx.names.proxy_function, Environment={"Variables": env})
    api.refresh()


def test_function_record_created_with_config_defaults(stack):
    ctx, api, _ = stack
    env = ctx.target().client("lambda").get_function_configuration(FunctionName=ctx.names.proxy_function)
    variables = env["Environment"]["Variables"]
    assert variables["ENDPOINT_NAME"] == ctx.names.endpoint_name
    assert variables["PREDICTIONS_STREAM"] == ctx.names.predictions_stream
    assert float(variables["DECISION_THRESHOLD"]) == ctx.config.decision_threshold
    assert env["Handler"] == "proxy_handler.handler"
    assert api.status()["params"]["decision_threshold"] == ctx.config.decision_threshold


def test_predict_feedback_reach_the_warehouse(stack):
    ctx, api, warehouse = stack
    _set_params(ctx, api, DECISION_THRESHOLD="0.5", TARGET_VARIANT="")
    status, body = _post(ctx, "/predict", {"instances": [[7, 1, 1], [2, 1, 1]], "user_id": "alice"})
    assert status == 200, body
    assert [p["label"] for p in body["predictions"]] == [1, 0]
    status, fb = _post(ctx, "/feedback", {"request_id": body["predictions"][0]["request_id"], "outcome": 1})
    assert (status, fb) == (200, {"accepted": 1})
    warehouse.load_now()
    _, rows = warehouse.warehouse.query(
        "SELECT l.request_id, l.variant_name, l.user_id, f.outcome FROM prediction_log_dedup l "
        "LEFT JOIN prediction_feedback_dedup f USING (request_id) WHERE l.user_id = 'alice' ORDER BY 1"
    )
    assert [r[0] for r in rows] == [p["request_id"] for p in body["predictions"]]
    assert rows[0][3] == 1 and rows[1][3] is None
    assert rows[0][1] == body["variant"]


def test_logs_go_out_after_the_response_and_survive_a_parameter_change(stack):
    """The local API sends prediction logs the way the Lambda does: after the response. A parameter change
    (a new proxy, as a cold start) retires the old one without dropping what it was still sending."""
    ctx, api, warehouse = stack
    assert api.proxy().delivery == "background"
    status, body = _post(ctx, "/predict", {"instances": [[3, 1, 1], [4, 1, 1]], "user_id": "bob"})
    assert status == 200, body
    answered_by = api.proxy()
    _set_params(ctx, api, DECISION_THRESHOLD="0.6")
    assert api.proxy() is not answered_by
    warehouse.load_now()  # drains every sender of the process first
    _, rows = warehouse.warehouse.query(
        "SELECT request_id, threshold FROM prediction_log_dedup WHERE user_id = 'bob' ORDER BY 1"
    )
    assert [r[0] for r in rows] == [p["request_id"] for p in body["predictions"]]
    assert {r[1] for r in rows} == {0.5}
    _set_params(ctx, api, DECISION_THRESHOLD="0.5")


def test_requests_are_marked_on_the_busy_meter_the_warehouse_loader_reads(stack):
    ctx, api, warehouse = stack
    assert api.activity is ctx.api_activity and warehouse._activity is ctx.api_activity
    before = ctx.api_activity.busy_seconds()
    started = time.monotonic()
    status, _ = _post(ctx, "/predict", {"instances": [[3, 1, 1]]})
    elapsed = time.monotonic() - started
    assert status == 200
    time.sleep(0.2)  # the handler marks the end just after the response is written
    after = ctx.api_activity.busy_seconds()
    assert 0 < after - before < elapsed + 0.2
    status, _ = _post(ctx, "/predict", b"{not json")  # an error answer is marked too, and ends
    assert status == 400
    time.sleep(0.2)
    marked = ctx.api_activity.busy_seconds()
    assert marked > after
    time.sleep(0.05)
    assert ctx.api_activity.busy_seconds() == marked  # nothing in flight: it does not grow


def test_params_set_applies_on_next_request(stack):
    ctx, api, _ = stack
    _set_params(ctx, api, DECISION_THRESHOLD="0.8", TARGET_VARIANT="v2")
    status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})
    assert status == 200 and body["predictions"][0]["label"] == 0 and body["variant"] == "v2"
    assert _Runtime.calls[-1]["variant"] == "v2"
    _set_params(ctx, api, SERVING_ENABLED="false")
    status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})
    assert status == 503 and "SERVING_ENABLED" in body["error"]
    _set_params(ctx, api, SERVING_ENABLED="true", DECISION_THRESHOLD="0.5", TARGET_VARIANT="")


def test_cli_params_set_is_in_force_for_the_next_request(stack, monkeypatch):
    """``trainserve params set`` returns once the local API has re-read the parameters: this API re-reads
    them only every hour by itself, so only the command's request can have made the change apply. A
    ``TARGET_VARIANT`` that is not live is refused and changes nothing."""
    from click.testing import CliRunner

    from trainserve.cli import cli
    from trainserve.commands import options

    ctx, api, _ = stack
    monkeypatch.setenv("TRAINSERVE_HOME", str(ctx.state_dir))
    monkeypatch.setattr(options, "resolve_target", lambda local: ctx.target())
    runner = CliRunner()
    try:
        r = runner.invoke(cli, ["params", "set", "DECISION_THRESHOLD=0.8", "TARGET_VARIANT=v2"])
        assert r.exit_code == 0, r.output
        assert "in force from the next request" in " ".join(r.output.split())
        status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})  # score 0.7
        assert status == 200 and body["predictions"][0]["label"] == 0 and body["variant"] == "v2"

        r = runner.invoke(cli, ["params", "set", "TARGET_VARIANT=v9", "DECISION_THRESHOLD=0.5", "--json"])
        assert r.exit_code == 1
        said = " ".join(r.output.split())
        assert "TARGET_VARIANT=v9 is not a live variant" in said and "(live: v1, v2)" in said
        assert "nothing was changed" in said
        status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})
        assert status == 200 and body["predictions"][0]["label"] == 0 and body["variant"] == "v2"

        r = runner.invoke(cli, ["params", "set", "SERVING_ENABLED=false", "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["applied"] is True
        status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})
        assert status == 503 and "SERVING_ENABLED" in body["error"]
    finally:
        _set_params(ctx, api, SERVING_ENABLED="true", DECISION_THRESHOLD="0.5", TARGET_VARIANT="")


def test_a_refresh_request_left_from_before_a_start_is_not_answered_again(stack):
    """The token protocol: a request is answered once, after the re-read it asked for."""
    from trainserve.local.api import REFRESH_DONE, REFRESH_REQUEST, request_refresh
    from trainserve.local.component import read_token

    ctx, _, _ = stack
    assert request_refresh(ctx.state_dir, timeout=10)
    token = read_token(ctx.state_dir / REFRESH_REQUEST)
    assert token is not None and read_token(ctx.state_dir / REFRESH_DONE) == token
    assert request_refresh(ctx.state_dir, timeout=10)  # a new token, answered too
    assert read_token(ctx.state_dir / REFRESH_DONE) != token


def test_validation_errors_over_http(stack):
    ctx, _, _ = stack
    status, body = _post(ctx, "/predict", {"instances": [[1, 2]]})
    assert status == 400 and (body["row"], body["field"]) == (0, "f2")
    status, body = _post(ctx, "/predict", b"{broken")
    assert status == 400
    assert stack[1].status()["4xx"] >= 2


def test_invalid_param_on_function_falls_back(stack):
    ctx, api, _ = stack
    _set_params(ctx, api, DECISION_THRESHOLD="abc")
    assert api.status()["params"]["decision_threshold"] == 0.5
    status, body = _post(ctx, "/predict", {"instances": [[6, 0, 0]]})
    assert status == 200 and body["predictions"][0]["label"] == 1
    _set_params(ctx, api, DECISION_THRESHOLD="0.5")


def test_log_delivery_runs_in_its_own_process_and_a_dead_one_loses_nothing_silently(stack):
    """The proxy's Firehose logger sends from the log delivery process (not under the API's interpreter
    lock). A dead process is replaced before the next batch; a hung one is replaced too, and the records of
    the call it did not answer go to the log fallback (counted in the status)."""
    import os
    import signal

    import prediction_log

    from trainserve.local import log_delivery

    ctx, api, warehouse = stack
    delivery = api.status()["log_delivery"]
    assert delivery["alive"] and delivery["pid"] != os.getpid()
    # the proxy's buffer in front of it holds what it falls behind by (a Lambda environment keeps 20,000)
    from trainserve.local.api import BUFFER_RECORDS

    assert api._proxy.predictions_log.max_buffered == BUFFER_RECORDS > 20_000  # noqa: SLF001
    # at the lowest CPU priority (it nices itself as it starts, before it says it is ready)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, delivery["pid"]) == min(19, mine + log_delivery.DELIVERY_NICE)
    restarts = delivery["restarts"]

    def predict_and_find(user: str) -> None:
        status, body = _post(ctx, "/predict", {"instances": [[5, 1, 1]], "user_id": user})
        assert status == 200, body
        warehouse.load_now()
        _, rows = warehouse.warehouse.query("SELECT request_id FROM prediction_log WHERE user_id = ?", [user])
        assert [r[0] for r in rows] == [body["predictions"][0]["request_id"]]

    predict_and_find("carol")
    assert api.status()["log_delivery"]["firehose_calls"] >= 1

    api._delivery._proc.kill()  # noqa: SLF001 - a crash between batches
    api._delivery._proc.join(10)  # noqa: SLF001
    predict_and_find("dave")  # delivered by a new process
    assert api.status()["log_delivery"]["restarts"] == restarts + 1

    stream = ctx.names.predictions_stream
    before = prediction_log.undelivered_counts().get(stream, 0)
    logged: list[dict] = []
    logger = api._make_logger(stream)  # noqa: SLF001 - the logger the proxy uses, with a capturing log
    logger._local.emit = logged.append  # noqa: SLF001
    os.kill(api._delivery.pid, signal.SIGSTOP)  # hung: it will not answer this call
    api._delivery.timeout = 0.5  # noqa: SLF001
    try:
        record = {"request_id": "hung-1", "user_id": "frank", "score": 0.5}
        result = logger.put([record])
    finally:
        api._delivery.timeout = 60.0  # noqa: SLF001
    assert (result.delivered, result.undelivered) == (0, 1)
    assert [e["record"] for e in logged if e.get("undelivered_log_record")] == [record]
    assert "did not answer" in logged[0]["error"]
    assert api.status()["undelivered_log_records"][stream] == before + 1
    predict_and_find("erin")  # the hung process was killed; a new one delivers
    assert api.status()["log_delivery"]["restarts"] == restarts + 2


# ------------------------------------------------------------------------------------------- HTTP framing


def _raw(ctx, data: bytes) -> tuple[int, dict, bool]:
    """Send ``data`` as is on a new connection; the answer's status, JSON body, and whether the server then
    closed the connection."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(ctx.api_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(data)
        response = http.client.HTTPResponse(s)
        response.begin()
        body = json.loads(response.read())
        closed = response.will_close and s.recv(1) == b""
    return response.status, body, closed


def _request(path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "localhost", **headers}.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "+5", "5, 6"])
def test_a_content_length_that_is_not_a_number_of_bytes_is_a_400(stack, capfd, length):
    """Before: the connection closed with no answer and a traceback in the log."""
    ctx, api, _ = stack
    errors = api.status()["4xx"]
    data = _request("/predict", {"Content-Type": "application/json", "Content-Length": length}, b"{}")
    status, body, closed = _raw(ctx, data)
    assert status == 400 and body == {"error": f"Content-Length {length!r} is not a number of bytes"}
    assert closed  # where the body ends is unknown: the connection cannot carry another request
    assert api.status()["4xx"] == errors + 1
    assert "Traceback" not in capfd.readouterr().err
    assert _post(ctx, "/predict", {"instances": [[1, 1, 1]]})[0] == 200  # still serving


def test_a_chunked_body_is_decoded_as_api_gateway_does(stack):
    """``Transfer-Encoding: chunked`` (what http.client sends for a body of unknown length): before, the proxy
    got an empty body. The connection stays usable: the next request on it is answered too."""
    import http.client
    from urllib.parse import urlparse

    ctx, _, _ = stack
    url = urlparse(ctx.api_url)
    payload = json.dumps({"instances": [[7, 1, 1], [2, 1, 1]], "user_id": "chunky"}).encode()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        parts = iter([payload[:10], payload[10:25], payload[25:]])
        conn.request("POST", "/predict", body=parts, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        assert [p["score"] for p in body["predictions"]] == [0.7, 0.2]
        conn.request(
            "POST",
            "/feedback",
            body=json.dumps({"request_id": body["predictions"][0]["request_id"], "outcome": 1}),
        )
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"accepted": 1})
    finally:
        conn.close()
    # chunk extensions and trailer fields are allowed, as HTTP/1.1 defines them
    chunked = b"5;ext=1\r\n" + payload[:5] + b"\r\n" + f"{len(payload) - 5:x}\r\n".encode() + payload[5:]
    chunked += b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    status, body, _ = _raw(ctx, _request("/predict", {"Transfer-Encoding": "chunked"}, chunked))
    assert status == 200 and len(body["predictions"]) == 2


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({"Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n", 400, "malformed chunked body"),
        ({"Transfer-Encoding": "chunked"}, b"5\r\n{}\r\n0\r\n\r\n", 400, "malformed chunked body"),
        (
            {"Transfer-Encoding": "chunked", "Content-Length": "2"},
            b"2\r\n{}\r\n0\r\n\r\n",
            400,
            "send one of them",
        ),
        ({"Transfer-Encoding": "gzip"}, b"", 501, "Transfer-Encoding 'gzip' is not supported"),
        ({"Transfer-Encoding": "chunked"}, b"A00001\r\n", 413, "the limit is 10485760 bytes"),
        ({"Content-Length": "10485761"}, b"", 413, "request body is 10485761 bytes; the limit is 10485760"),
        ({"Content-Length": "2", "content-length": "3"}, b"{}", 400, "different values"),
    ],
)
def test_a_body_that_cannot_be_read_is_refused_and_the_connection_closed(stack, headers, body, status, says):
    ctx, _, _ = stack
    calls = len(_Runtime.calls)
    answer_status, answer, closed = _raw(ctx, _request("/predict", headers, body))
    assert answer_status == status and says in answer["error"]
    assert closed and len(_Runtime.calls) == calls


@pytest.mark.parametrize("path", ["/foo/predict", "/prod/predict", "/predict/x", "/feedbacks", "/"])
def test_only_the_api_s_own_paths_reach_the_proxy(stack, path):
    """The local API's URL has no stage (``trainserve local status``: http://127.0.0.1:4568), so the routes
    are exactly /predict and /feedback, as the documented calls use them; before, any path ending in
    /predict was served as /predict."""
    ctx, api, _ = stack
    calls, served = len(_Runtime.calls), api.status()["requests"]
    status, body = _post(ctx, path, {"instances": [[1, 1, 1]]})
    assert status == 404 and body == {"error": f"no route {path}; use POST /predict or POST /feedback"}
    assert len(_Runtime.calls) == calls and api.status()["requests"] == served + 1
    assert _post(ctx, "/predict/", {"instances": [[1, 1, 1]]})[0] == 200


def _answer(ctx, method: str, path: str, body: bytes | None = None):
    """``method path`` on one keep-alive connection, then ``POST /predict`` on the same one: the first
    answer (status, headers, body bytes) and the second's status."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(ctx.api_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        first = conn.getresponse()
        answer = (first.status, dict(first.getheaders()), first.read())
        conn.request("POST", "/predict", body=json.dumps({"instances": [[1, 1, 1]]}))
        then = conn.getresponse()
        then.read()
        return answer, then.status
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/predict", "/feedback", "/predict/"])
def test_a_wrong_method_on_a_route_is_405_with_allow_post(stack, method, path):
    """Before: ``GET /predict`` was a 404 saying "use POST /predict or POST /feedback" (the path exists; the
    method is wrong), and PUT, DELETE, ... an HTML 501 from the HTTP server. Now a 405 with ``Allow: POST``, the
    proxy's own words for it; the proxy is not called (API Gateway defines only POST there), and a body sent
    along is read, so the connection goes on."""
    ctx, api, _ = stack
    calls, served = len(_Runtime.calls), api.status()["requests"]
    body = b'{"instances": [[1, 1, 1]]}' if method in ("PUT", "PATCH") else None
    (status, headers, raw), then = _answer(ctx, method, path, body)
    route = path.rstrip("/")
    assert (status, headers["Allow"]) == (405, "POST")
    assert json.loads(raw) == {"error": f"method {method} is not allowed on {route}; use POST {route}"}
    assert len(_Runtime.calls) == calls + 1 and then == 200  # only the POST that followed reached the model
    assert api.status()["requests"] == served + 2


def test_head_on_a_route_is_a_405_without_a_body_and_other_paths_stay_404(stack):
    ctx, _, _ = stack
    (status, headers, raw), then = _answer(ctx, "HEAD", "/predict")
    assert (status, headers["Allow"], raw, then) == (405, "POST", b"", 200)
    (status, headers, raw), _ = _answer(ctx, "GET", "/nope")
    assert status == 404 and "Allow" not in headers
    assert json.loads(raw) == {"error": "no route /nope; use POST /predict or POST /feedback"}
    (status, _, raw), _ = _answer(ctx, "GET", "/_health")
    assert (status, json.loads(raw)) == (200, {"status": "ok"})


def test_a_pin_left_behind_by_a_rollback_serves_by_the_weights_and_params_get_says_so(stack, monkeypatch):
    """The endpoint no longer has the pinned variant (a rollback removed it after the pin was set): every
    prediction was a 503 before; now the proxy routes by the weights, and ``params get`` names the problem."""
    import proxy_logic
    from click.testing import CliRunner

    from trainserve.cli import cli
    from trainserve.commands import options

    ctx, api, _ = stack
    _set_params(ctx, api, TARGET_VARIANT="v7")  # as a pin left over would be: set while v7 was live
    try:
        status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]]})
        assert status == 200, body
        assert _Runtime.calls[-1]["variant"] is None and body["variant"] == "v1"  # SageMaker routed
        status, body = _post(ctx, "/predict", {"instances": [[7, 0, 0]], "user_id": "pinned-out"})
        expected = proxy_logic.assign_variant("pinned-out", {"v1": 0.5, "v2": 0.5})
        assert status == 200 and body["variant"] == expected == _Runtime.calls[-1]["variant"]

        monkeypatch.setattr(options, "resolve_target", lambda local: ctx.target())
        r = CliRunner().invoke(cli, ["params", "get", "--json"])
        assert r.exit_code == 0, r.output
        assert [p["message"] for p in json.loads(r.output)["problems"]] == [
            f"TARGET_VARIANT=v7 is not live on {ctx.names.endpoint_name} (live: v1, v2): the proxy routes by "
            "the weights"
        ]
    finally:
        _set_params(ctx, api, TARGET_VARIANT="")
