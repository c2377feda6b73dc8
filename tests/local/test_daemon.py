"""The local cloud daemon in-process: ports, base resources, state files, and the whole approval loop with
the real release controller (``lambdas/release_controller/release_handler.py``) and the real serving app
(``inference/serve.py``) behind the runtime.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import threading

import boto3
import pytest
from model_fixture import model_tarball, register_approved
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainserve.local import daemon as daemon_mod
from trainserve.local import moto_patches
from trainserve.local.daemon import Daemon, PortInUse, default_ports, port_free, resolve_ports
from trainserve.local.ports import ephemeral_range, free_ports
from trainserve.local.watcher import wait_until

# one worker runs this module (its tests share module fixtures) under `pytest -n 2 --dist loadgroup`
pytestmark = pytest.mark.xdist_group("test_daemon")

MISSING_EXTRA = "trainserve.local.not_written_yet:Nothing"


def test_default_ports_and_the_port_base():
    assert default_ports({}) == {"aws": 4566, "runtime": 4567, "api": 4568}
    assert default_ports({"TRAINSERVE_PORT_BASE": "30000"}) == {"aws": 30000, "runtime": 30001, "api": 30002}
    with pytest.raises(ValueError, match="TRAINSERVE_PORT_BASE"):
        default_ports({"TRAINSERVE_PORT_BASE": "abc"})
    with pytest.raises(ValueError, match="TRAINSERVE_PORT_BASE"):
        default_ports({"TRAINSERVE_PORT_BASE": "65535"})


def test_a_port_in_use_is_named_and_0_picks_a_free_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            resolve_ports({"aws": 0, "runtime": port, "api": 0})
        assert err.value.port == port and err.value.role == "runtime"
        assert str(port) in str(err.value) and "TRAINSERVE_PORT_BASE" in str(err.value)
    ports = resolve_ports({"aws": 0, "runtime": 0, "api": 0})
    # below the ephemeral range: no outgoing connection can take the port before the server binds it
    low = ephemeral_range()[0]
    assert all(20000 <= p < low for p in ports.values())
    base = free_ports(3)
    assert base + 2 < low and all(port_free(base + i) for i in range(3))


def _model_tarball() -> bytes:
    data = load_breast_cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(data.data, data.target)
    return model_tarball(model, data.feature_names)


@pytest.fixture
def running(tmp_path, monkeypatch):
    """An in-process daemon on free ports; always stopped. The process env it sets is restored after."""
    for key in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(key, "restored-after-test")
    monkeypatch.setattr(daemon_mod, "EXTRA_COMPONENTS", (MISSING_EXTRA,))
    monkeypatch.setattr(daemon_mod, "STRICT_EXTRAS", False)  # lenient mode: a missing extra is only reported
    d = Daemon({"aws": 0, "runtime": 0, "api": 0}, state_dir=tmp_path)
    try:
        state = d.start()
        runner = threading.Thread(target=d.run, daemon=True)
        runner.start()
        yield d, state
    finally:
        d.shutdown()
        d.stop()


def test_daemon_state_resources_and_the_approval_loop(running, tmp_path):
    d, state = running
    # local.json: the documented fields, 127.0.0.1 URLs, written only once everything is up
    on_disk = json.loads((tmp_path / "local.json").read_text())
    assert on_disk == state
    assert set(state) == {
        "pid",
        "region",
        "aws_endpoint_url",
        "runtime_url",
        "api_url",
        "warehouse_path",
        "previous_warehouse_path",
        "started_at",
        "log_file",
    }
    assert state["previous_warehouse_path"] is None  # a first start: nothing to set aside
    assert state["pid"] == os.getpid() and state["region"] == "us-east-1"
    for key in ("aws_endpoint_url", "runtime_url", "api_url"):
        assert state[key].startswith("http://127.0.0.1:")
    assert os.environ["AWS_ENDPOINT_URL"] == state["aws_endpoint_url"]  # handlers in-process reach moto
    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == state["runtime_url"]

    status = json.loads((tmp_path / "status.json").read_text())
    assert list(status["components"])[:2] == ["runtime", "watcher"]
    assert "not available" in status["components"]["Nothing"]["error"]

    kw = dict(
        endpoint_url=state["aws_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3, sm, lam = boto3.client("s3", **kw), boto3.client("sagemaker", **kw), boto3.client("lambda", **kw)
    names = d.ctx.names
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {names.data_bucket, names.artifacts_bucket, names.staging_bucket} <= buckets
    env = lam.get_function_configuration(FunctionName=names.release_function)["Environment"]["Variables"]
    assert env["MODEL_PACKAGE_GROUP"] == names.model_package_group and env["SERVING_IMAGE_URI"] == ""
    boto3.client("sqs", **kw).get_queue_url(QueueName=names.release_dlq)
    boto3.client("iam", **kw).get_role(RoleName=f"{d.ctx.config.project_name}-model-execution")

    # a person approves a registered version with plain boto3: the real controller creates the endpoint
    register_approved(s3, sm, names, _model_tarball())

    def endpoint_variants():
        try:
            return sm.describe_endpoint(EndpointName=names.endpoint_name)["ProductionVariants"]
        except sm.exceptions.ClientError:
            return None

    assert wait_until(lambda: endpoint_variants() is not None, 15), d.status()["components"]["watcher"]
    assert [(v["VariantName"], v["CurrentWeight"]) for v in endpoint_variants()] == [("v1", 1.0)]

    # the runtime serves it through inference/serve.py, for a plain sagemaker-runtime client
    rt = boto3.client("sagemaker-runtime", **{**kw, "endpoint_url": state["runtime_url"]})
    rows = load_breast_cancer().data[:2].tolist()
    resp = rt.invoke_endpoint(
        EndpointName=names.endpoint_name, Body=json.dumps({"instances": rows}), ContentType="application/json"
    )
    assert resp["InvokedProductionVariant"] == "v1"
    predictions = json.loads(resp["Body"].read())["predictions"]
    assert [p["label"] for p in predictions] == [0, 0]

    servers = d.status()["components"]["runtime"]["model_servers"]
    pids = [s["pid"] for s in servers.values()]
    assert pids
    control = d.status()["control_plane"]  # moto runs in a process of its own, not in the daemon's
    assert control["process"] == "moto" and control["alive"] and control["pid"] != os.getpid()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == daemon_mod.GC_THRESHOLD_0
    d.shutdown()
    d.stop()
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] != daemon_mod.GC_THRESHOLD_0  # as it was
    assert not (tmp_path / "local.json").exists() and not (tmp_path / "status.json").exists()
    assert moto_patches._runtime_url is None  # noqa: SLF001 - moto in this process was never patched to forward
    for pid in [*pids, control["pid"]]:  # the model servers and moto stop with the daemon
        assert wait_until(lambda pid=pid: not _alive(pid), 10)


def test_a_start_sets_the_previous_warehouse_aside_and_deletes_nothing(tmp_path):
    from datetime import UTC, datetime

    import duckdb

    path = tmp_path / "warehouse.duckdb"
    assert daemon_mod.set_aside_warehouse(path) is None
    with duckdb.connect(str(path)) as con:  # tables but not one record: started again, nothing set aside
        con.execute("CREATE TABLE prediction_log (request_id VARCHAR)")
        con.execute("CREATE TABLE prediction_feedback (request_id VARCHAR)")
    assert daemon_mod.set_aside_warehouse(path) is None and not path.exists()
    assert list(tmp_path.glob("warehouse*")) == []
    path.write_bytes(b"old rows")  # not a database this can read: kept (set aside), never deleted
    (tmp_path / "warehouse.duckdb.wal").write_bytes(b"old log")
    now = datetime(2026, 12, 5, 18, 0, 0, tzinfo=UTC)
    moved = daemon_mod.set_aside_warehouse(path, now)
    assert moved == tmp_path / "warehouse-20261205T180000Z.duckdb"
    assert moved.read_bytes() == b"old rows" and not path.exists()
    assert (tmp_path / "warehouse-20261205T180000Z.duckdb.wal").read_bytes() == b"old log"
    path.write_bytes(b"newer rows")  # a second start within the same second keeps both
    again = daemon_mod.set_aside_warehouse(path, now)
    assert again == tmp_path / "warehouse-20261205T180000Z-2.duckdb" and again.read_bytes() == b"newer rows"
    assert moved.read_bytes() == b"old rows"
    with duckdb.connect(str(path)) as con:  # a real warehouse with one outcome in it: set aside
        con.execute("CREATE TABLE prediction_log (request_id VARCHAR)")
        con.execute("CREATE TABLE prediction_feedback (request_id VARCHAR)")
        con.execute("INSERT INTO prediction_feedback VALUES ('r-0')")
    kept = daemon_mod.set_aside_warehouse(path, now)
    assert kept == tmp_path / "warehouse-20261205T180000Z-3.duckdb" and not path.exists()
    with duckdb.connect(str(kept), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM prediction_feedback").fetchone()[0] == 1


def test_a_failing_required_component_stops_the_start_and_writes_no_state(tmp_path, monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.setenv(key, "restored-after-test")
    monkeypatch.setattr(daemon_mod, "EXTRA_COMPONENTS", (MISSING_EXTRA,))
    monkeypatch.setattr(daemon_mod, "STRICT_EXTRAS", True)
    d = Daemon({"aws": 0, "runtime": 0, "api": 0}, state_dir=tmp_path)
    try:
        with pytest.raises(ModuleNotFoundError):
            d.start()
    finally:
        d.stop()
    assert not (tmp_path / "local.json").exists()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
