"""The local cloud's stop loses no answered prediction: a real daemon in this process (moto in its own
process, its Firehose buffering; the runtime with the real serving app; the prediction API; the warehouse
loader), predictions and outcomes answered up to the stop, and the warehouse file read after it."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.request
from urllib.parse import urlparse

import boto3
import numpy as np
import pytest
from model_fixture import model_tarball, register_approved
from sklearn.linear_model import LogisticRegression

from trainserve.local import daemon as daemon_mod
from trainserve.local import warehouse as wh
from trainserve.local.daemon import Daemon
from trainserve.local.watcher import wait_until

pytestmark = pytest.mark.xdist_group("test_daemon")  # a whole local cloud: not beside the other daemon tests

FEATURES = ["f0", "f1", "f2"]
EXTRAS = ("trainserve.local.api:ApiComponent", "trainserve.local.warehouse:WarehouseComponent")


def _model_tarball() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(FEATURES)))
    return model_tarball(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), FEATURES, label="y")


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    """A daemon with the API and the warehouse, whose warehouse loads once at its start and then not again
    by itself (so only the stop can load what is answered), serving an approved model; always stopped."""
    for key in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(key, "restored-after-test")
    monkeypatch.setattr(daemon_mod, "EXTRA_COMPONENTS", EXTRAS)
    monkeypatch.setattr(daemon_mod, "STRICT_EXTRAS", True)
    made = daemon_mod.load_component

    def load_component(spec: str):
        component = made(spec)
        if isinstance(component, wh.WarehouseComponent):
            component.interval = 3600.0
        return component

    monkeypatch.setattr(daemon_mod, "load_component", load_component)
    d = Daemon({"aws": 0, "runtime": 0, "api": 0}, state_dir=tmp_path)
    try:
        state = d.start()
        threading.Thread(target=d.run, daemon=True).start()
        kw = dict(
            endpoint_url=state["aws_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        names = d.ctx.names
        sm = boto3.client("sagemaker", **kw)
        register_approved(boto3.client("s3", **kw), sm, names, _model_tarball())

        def live() -> bool:
            try:
                return sm.describe_endpoint(EndpointName=names.endpoint_name)["EndpointStatus"] == "InService"
            except sm.exceptions.ClientError:
                return False

        assert wait_until(live, 30), d.status()["components"]["watcher"]
        warehouse = next(c for c in d.components if c.name == "warehouse")
        assert wait_until(lambda: warehouse.status()["last_load"] is not None, 30)
        yield d, state
    finally:
        d.shutdown()
        d.stop()


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _predict_and_feedback(api_url: str, row: list[float]) -> str:
    """One prediction and its outcome, both answered; the prediction's request_id."""
    rid = _post(f"{api_url}/predict", {"instances": [row]})["predictions"][0]["request_id"]
    assert _post(f"{api_url}/feedback", {"request_id": rid, "outcome": 1}) == {"accepted": 1}
    return rid


def _ids(path, table: str) -> set[str]:
    return {r[0] for r in wh.query(path, f"SELECT request_id FROM {table}")[1]}


def test_what_was_answered_right_before_the_stop_is_in_the_warehouse_after_it(cloud, caplog):
    d, state = cloud
    path = state["warehouse_path"]
    api_url = state["api_url"]
    answered = [_predict_and_feedback(api_url, [0.1 * i, 1.0, -1.0]) for i in range(5)]
    assert _ids(path, "prediction_log") == set()  # answered, still in the proxy's buffer or moto's Firehose
    with caplog.at_level(logging.INFO, logger="trainserve.local"):
        d.shutdown()
        d.stop()  # at once, as `trainserve local stop` does
    assert _ids(path, "prediction_log") == set(answered)
    assert _ids(path, "prediction_feedback") == set(answered)
    assert not daemon_mod._holds_no_records(path)  # the next start sets it aside, never deletes it
    messages = [r.getMessage() for r in caplog.records if r.name == "trainserve.local"]
    stopping = [
        m.removeprefix("stopping component ") for m in messages if m.startswith("stopping component ")
    ]
    assert stopping[:3] == ["api", "warehouse", "watcher"]  # the API before the warehouse's final load
    final = [
        m for m in messages if m.startswith("warehouse: the final load before the stop took 10 row(s) in ")
    ]
    assert len(final) == 1 and final[0].endswith(" s; every staged object is loaded"), messages
    # nothing left unloaded or failed (the log-fallback count is process-wide: under pytest-xdist another
    # test's leftover sender thread in this worker can add to it; every answer is in the warehouse, above)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "trainserve.local"
        and r.levelno >= logging.WARNING
        and "went to the log fallback" not in r.getMessage()
    ]
    assert warnings == []


def test_under_load_every_answered_prediction_is_in_the_warehouse_after_the_stop(cloud, caplog):
    """Two clients on keep-alive connections keep predicting while the local cloud stops. The API stops serving
    first (a request on a kept-alive connection then gets a 503 saying the cloud is stopping: before, it was
    answered after the proxy's log delivery had closed, and its records went to the log fallback), lets the
    requests in flight finish, and every prediction answered is in the warehouse after the stop."""
    import prediction_log

    d, state = cloud
    path, api = state["warehouse_path"], urlparse(state["api_url"])
    undelivered_before = sum(prediction_log.undelivered_counts().values())
    answered: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(api.hostname, api.port, timeout=30)
        i = 0
        while not done.is_set():
            i += 1
            try:
                conn.request("POST", "/predict", json.dumps({"instances": [[n, i * 0.01, 0.5]] * 4}))
                response = conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                conn.close()  # the API has stopped: try a new connection
                time.sleep(0.01)
                continue
            if response.status == 200:
                with lock:
                    answered.extend(p["request_id"] for p in json.loads(body)["predictions"])
            else:
                with lock:
                    refused.append(json.loads(body)["error"])
        conn.close()

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(2)]
    for t in clients:
        t.start()
    try:
        assert wait_until(lambda: len(answered) >= 400, 60), len(answered)
        last = _predict_and_feedback(state["api_url"], [2.0, 2.0, 2.0])  # answered right before the stop
        with caplog.at_level(logging.INFO, logger="trainserve.local"):
            d.shutdown()
            d.stop()
    finally:
        done.set()
        for t in clients:
            t.join(30)
    logged = _ids(path, "prediction_log")
    assert last in logged and last in _ids(path, "prediction_feedback")
    assert set(answered) <= logged, (len(set(answered) - logged), len(answered))
    assert sum(prediction_log.undelivered_counts().values()) == undelivered_before  # none to the log fallback
    assert set(refused) <= {"the local cloud is stopping"}, set(refused)
