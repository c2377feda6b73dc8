"""Prediction log delivery after the response: the sender thread, its batching, drains, failures, overflow,
and the Lambda internal extension that holds each invocation open until its records are delivered.

The Firehose client is a collaborator (a stub that can block, fail or raise); the Lambda Extensions API is
a small HTTP server on 127.0.0.1 speaking its register/next protocol.
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import background_delivery as bd
import prediction_log as plog
import pytest

WAIT = 10.0  # generous bound for waits that normally end in milliseconds


class GatedFirehose:
    """Delivers every record; each call can be held at a gate; raises while ``down``."""

    def __init__(self, gated: bool = False, down: bool = False):
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.down = down
        self.calls: list[list[dict]] = []
        self.delivered: list[dict] = []
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def put_record_batch(self, DeliveryStreamName, Records):  # noqa: N803 - boto3's names
        records = [json.loads(line) for r in Records for line in r["Data"].splitlines()]
        with self.lock:
            self.calls.append(records)
        self.entered.set()
        assert self.gate.wait(WAIT)
        if self.down:
            raise ConnectionError("network down")
        with self.lock:
            self.delivered.extend(records)
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "id"} for _ in Records]}


def _delivery(client, emitted, pack_bytes: int = plog.MAX_RECORD_BYTES, **kw) -> bd.BackgroundDelivery:
    logger = plog.FirehoseLogger(
        client, "s", emit=emitted.append, sleep=lambda _s: None, max_retries=1, pack_bytes=pack_bytes
    )
    return bd.BackgroundDelivery(logger, **kw)


def _records(prefix: str, n: int) -> list[dict]:
    return [{"request_id": f"{prefix}-{i}", "score": 0.5} for i in range(n)]


def test_put_does_not_wait_for_firehose_and_drain_does():
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, linger_seconds=0.0)
    d.put(_records("a", 3))  # returns although the call is held at the gate
    assert fh.entered.wait(WAIT)
    assert fh.delivered == [] and d.pending() == 3
    assert d.drain(timeout=0.05) is False  # still held: the drain says so
    fh.gate.set()
    assert d.drain(timeout=WAIT) is True
    assert [r["request_id"] for r in fh.delivered] == ["a-0", "a-1", "a-2"] and emitted == []
    assert d.pending() == 0
    d.close()


def test_concurrent_requests_share_calls_and_every_record_is_delivered_once():
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, linger_seconds=0.0)
    d.put(_records("first", 1))
    assert fh.entered.wait(WAIT)  # the sender is busy with the first call ...
    threads = [threading.Thread(target=d.put, args=(_records(f"t{k}", 2),)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    fh.gate.set()  # ... so the 40 requests that came meanwhile go out together
    assert d.drain(WAIT)
    ids = [r["request_id"] for r in fh.delivered]
    assert len(ids) == 81 and len(set(ids)) == 81
    assert len(fh.calls) < 41 + 1  # fewer calls than requests
    assert len(fh.calls) == 2  # here: the first request's call, then one for everything buffered
    d.close()


def test_a_big_backlog_is_split_into_calls_of_at_most_500_records():
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, pack_bytes=1, linger_seconds=0.0)  # one log record per Firehose record
    d.put(_records("first", 1))
    assert fh.entered.wait(WAIT)
    for k in range(12):
        d.put(_records(f"b{k}", 100))
    fh.gate.set()
    assert d.drain(WAIT)
    assert [len(c) for c in fh.calls] == [1, 500, 500, 200]


def test_lingering_lets_requests_share_a_call_without_a_drain():
    fh, emitted = GatedFirehose(), []
    d = _delivery(fh, emitted, linger_seconds=0.3)
    for k in range(5):
        d.put(_records(f"l{k}", 1))
    deadline = time.monotonic() + WAIT
    while len(fh.delivered) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fh.delivered) == 5 and len(fh.calls) == 1  # sent by the linger timer, in one call
    d.close()


def test_a_batch_s_worth_of_records_goes_out_without_waiting_for_the_linger():
    fh, emitted = GatedFirehose(), []
    d = _delivery(fh, emitted, linger_seconds=60.0, batch_records=10)  # the linger alone would wait a minute
    for k in range(3):
        d.put(_records(f"r{k}", 3))  # 9 records: under the batch, so they wait
    time.sleep(0.2)
    assert fh.calls == [] and d.pending() == 9
    d.put(_records("r3", 3))  # 12: a batch's worth, sent at once, all of it in one call
    deadline = time.monotonic() + WAIT
    while len(fh.delivered) < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(c) for c in fh.calls] == [12] and emitted == []
    assert [r["request_id"] for r in fh.delivered] == [f"r{k}-{i}" for k in range(4) for i in range(3)]
    d.put(_records("r4", 2))  # the next records start a new linger
    time.sleep(0.2)
    assert len(fh.calls) == 1 and d.pending() == 2
    assert d.drain(WAIT) and len(fh.calls) == 2
    d.close()


def test_one_request_of_a_batch_s_worth_goes_out_at_once():
    fh, emitted = GatedFirehose(), []
    d = _delivery(fh, emitted, linger_seconds=60.0, batch_records=10)
    d.put(_records("big", 25))
    deadline = time.monotonic() + WAIT
    while len(fh.delivered) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(c) for c in fh.calls] == [25]
    d.close()


def test_the_batch_size_is_at_least_one_and_at_most_the_buffer():
    assert _delivery(GatedFirehose(), [], batch_records=50_000, max_buffered=100).batch_records == 100
    assert _delivery(GatedFirehose(), [], batch_records=0).batch_records == 1
    assert bd.BackgroundDelivery(object()).batch_records == bd.BATCH_RECORDS


def test_firehose_down_every_record_ends_in_the_log_and_nothing_raises():
    fh, emitted = GatedFirehose(down=True), []
    d = _delivery(fh, emitted, linger_seconds=0.0)
    d.put(_records("x", 4))
    assert d.drain(WAIT)
    lost = [e["record"]["request_id"] for e in emitted if e.get("undelivered_log_record")]
    assert sorted(lost) == ["x-0", "x-1", "x-2", "x-3"]
    assert all(e["UndeliveredLogRecords"] == 1 for e in emitted if e.get("undelivered_log_record"))
    d.close()


def test_a_full_buffer_writes_the_overflow_to_the_log_at_once():
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, linger_seconds=0.0, max_buffered=10)
    d.put(_records("first", 1))
    assert fh.entered.wait(WAIT)
    d.put(_records("o", 15))  # 10 fit, 5 do not
    overflow = [e["record"]["request_id"] for e in emitted if e.get("undelivered_log_record")]
    assert overflow == ["o-10", "o-11", "o-12", "o-13", "o-14"]
    assert "buffer full" in emitted[0]["error"]
    fh.gate.set()
    assert d.drain(WAIT)
    assert len(fh.delivered) == 11
    d.close()


def test_close_delivers_what_is_buffered_then_sends_later_records_to_the_log():
    fh, emitted = GatedFirehose(), []
    d = _delivery(fh, emitted, linger_seconds=5.0)  # would linger: close must not wait for that
    d.put(_records("c", 2))
    assert d.close(timeout=WAIT)
    assert len(fh.delivered) == 2
    d.put(_records("late", 1))
    assert [e["record"]["request_id"] for e in emitted if e.get("undelivered_log_record")] == ["late-0"]
    assert d._thread is not None and not d._thread.is_alive()


def test_drain_all_drains_every_sender_of_the_process():
    fh1, fh2, emitted = GatedFirehose(), GatedFirehose(), []
    d1 = _delivery(fh1, emitted, linger_seconds=5.0)
    d2 = _delivery(fh2, emitted, linger_seconds=5.0)
    d1.put(_records("p", 1))
    d2.put(_records("q", 1))
    assert bd.drain_all(timeout=WAIT)
    assert len(fh1.delivered) == len(fh2.delivered) == 1
    d1.close()
    d2.close()


# ------------------------------------------------------------------------------- Lambda Extensions API


class FakeExtensionsApi:
    """register + event/next of the Lambda Extensions API on 127.0.0.1; events come from a queue."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.registered: list[tuple[str | None, dict]] = []
        self.next_calls: list[float] = []
        self.next_called = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ARG002
                return

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.registered.append((self.headers.get("Lambda-Extension-Name"), body))
                self.send_response(200)
                self.send_header("Lambda-Extension-Identifier", "ext-1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self):  # noqa: N802
                assert self.headers.get("Lambda-Extension-Identifier") == "ext-1"
                api.next_calls.append(time.monotonic())
                api.next_called.set()
                event = api.events.get(timeout=WAIT)
                data = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self, extension) -> None:
        """Send ``extension`` SHUTDOWN and wait until its thread ends: an extension left asking a closed API
        retries and prints its warning into whatever test runs next (a CLI test's JSON output, for one)."""
        self.events.put({"eventType": "SHUTDOWN"})
        extension._thread.join(WAIT)
        assert not extension._thread.is_alive()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def extensions_api():
    api = FakeExtensionsApi()
    yield api
    api.close()


def _wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_the_extension_holds_the_invocation_until_its_records_are_delivered(extensions_api):
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, linger_seconds=5.0)  # no linger flush: only the extension's drain sends
    ext = bd.LambdaDeliveryExtension(extensions_api.address, d.drain).start()
    assert extensions_api.registered == [("trainserve-log-delivery", {"events": ["INVOKE"]})]
    assert _wait_for(lambda: len(extensions_api.next_calls) == 1)  # waiting for the first invoke

    deadline_ms = int((time.time() + 30) * 1000)
    extensions_api.events.put({"eventType": "INVOKE", "deadlineMs": deadline_ms, "requestId": "req-1"})
    d.put(_records("inv1", 2))  # the handler buffers its records ...
    ext.invocation_finished()  # ... and returns: the caller has its response now
    assert fh.entered.wait(WAIT)  # the extension drains at once (no linger)
    time.sleep(0.1)
    assert len(extensions_api.next_calls) == 1  # the environment is held while Firehose has not answered
    fh.gate.set()
    assert _wait_for(lambda: len(extensions_api.next_calls) == 2)  # released only after delivery
    assert [r["request_id"] for r in fh.delivered] == ["inv1-0", "inv1-1"]
    extensions_api.stop(ext)


def test_the_extension_waits_for_the_handler_before_draining(extensions_api):
    fh, emitted = GatedFirehose(), []
    d = _delivery(fh, emitted, linger_seconds=5.0)
    ext = bd.LambdaDeliveryExtension(extensions_api.address, d.drain).start()
    assert _wait_for(lambda: len(extensions_api.next_calls) == 1)
    extensions_api.events.put({"eventType": "INVOKE", "deadlineMs": int((time.time() + 30) * 1000)})
    time.sleep(0.1)
    assert len(extensions_api.next_calls) == 1  # the handler has not finished: hold
    d.put(_records("late-handler", 1))
    ext.invocation_finished()
    assert _wait_for(lambda: len(extensions_api.next_calls) == 2)
    assert [r["request_id"] for r in fh.delivered] == ["late-handler-0"]
    extensions_api.stop(ext)


def test_cold_start_on_lambda_uses_background_delivery_and_falls_back_when_registration_fails(
    extensions_api, monkeypatch, capsys
):
    import proxy_handler

    env = {"ENDPOINT_NAME": "e", "PREDICTIONS_STREAM": "p", "FEEDBACK_STREAM": "f"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", extensions_api.address)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        proxy, extension = proxy_handler._cold_start()
        assert signal.getsignal(signal.SIGTERM) is not previous  # SIGTERM drains before the exit
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert proxy.delivery == "background" and extension is not None and extension.extension_id == "ext-1"
    extensions_api.stop(extension)

    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")  # nothing listens: registration fails
    proxy, extension = proxy_handler._cold_start()
    assert proxy.delivery == "sync" and extension is None
    assert "log delivery extension did not register" in capsys.readouterr().out

    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    proxy, extension = proxy_handler._cold_start()  # not on Lambda (tests, scripts): in the request
    assert proxy.delivery == "sync" and extension is None


def test_a_proxy_rejects_an_unknown_delivery_mode():
    import proxy_handler

    with pytest.raises(ValueError, match="delivery must be one of sync, background"):
        proxy_handler.Proxy.from_env({}, delivery="later")


def test_the_handler_tells_the_extension_it_is_done_even_when_it_fails(monkeypatch):
    import proxy_handler

    finished = []

    class Extension:
        def invocation_finished(self):
            finished.append(True)

    class Broken:
        def handle(self, event):
            raise RuntimeError("boom")

    monkeypatch.setattr(proxy_handler, "EXTENSION", Extension())
    monkeypatch.setattr(proxy_handler, "PROXY", Broken())
    with pytest.raises(RuntimeError):
        proxy_handler.handler({}, None)
    assert finished == [True]  # the extension is not left waiting until the invoke's deadline


def test_a_request_s_records_that_overflow_the_buffer_go_to_the_log_whole():
    """The proxy hands a request's rows over as one ``PredictionRecords``: the part that fits is buffered,
    the rest is written to the log as complete records."""
    fh, emitted = GatedFirehose(gated=True), []
    d = _delivery(fh, emitted, linger_seconds=0.0, max_buffered=10)
    d.put(_records("first", 1))
    assert fh.entered.wait(WAIT)
    names = ("a", "b")
    rows = [[float(i), 2.0 * i] for i in range(15)]
    records = plog.PredictionRecords(
        {"event_time": "2026-12-05 11:00:00.000000", "variant_name": "v1"},
        [f"o-{i}" for i in range(15)],
        names,
        rows,
        [0.25] * 15,
        [0] * 15,
        {"threshold": 0.5},
    )
    d.put(records)  # 10 fit, 5 do not
    overflow = [e["record"] for e in emitted if e.get("undelivered_log_record")]
    assert [r["request_id"] for r in overflow] == ["o-10", "o-11", "o-12", "o-13", "o-14"]
    assert overflow[0] == records[10] and overflow[0]["features"] == '{"a":10.0,"b":20.0}'
    fh.gate.set()
    assert d.drain(WAIT)
    assert [r["request_id"] for r in fh.delivered] == ["first-0"] + [f"o-{i}" for i in range(10)]
    assert fh.delivered[1:] == [json.loads(plog.encode(r)) for r in records[:10]]
    d.close()
