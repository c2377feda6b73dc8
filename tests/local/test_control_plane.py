"""The local cloud's control plane process: moto, patched, on its own port, with Firehose's flush and call
counts asked over a pipe; it ends with the daemon, even a daemon that is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import boto3
import pytest

from trainserve import PROJECT_ROOT
from trainserve.local.control_plane import ControlPlaneError, MotoProcess
from trainserve.local.daemon import pick_free_port, port_free


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def moto_process():
    proc = MotoProcess(pick_free_port(), runtime_url=None).start()
    yield proc
    proc.stop()


def test_firehose_records_wait_in_the_buffer_until_flushed_then_form_one_staging_object(moto_process):
    url = f"http://127.0.0.1:{moto_process.port}"
    # region and credentials: the autouse aws_credentials fixture (tests/conftest.py)
    s3, firehose = boto3.client("s3", endpoint_url=url), boto3.client("firehose", endpoint_url=url)
    s3.create_bucket(Bucket="staging")
    firehose.create_delivery_stream(
        DeliveryStreamName="preds",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/f",
            "BucketARN": "arn:aws:s3:::staging",
            "Prefix": "firehose/predictions/",
        },
    )
    lines = [json.dumps({"request_id": f"r-{i}"}).encode() + b"\n" for i in range(5)]
    for chunk in (lines[:2], lines[2:]):
        out = firehose.put_record_batch(DeliveryStreamName="preds", Records=[{"Data": b"".join(chunk)}])
        assert out["FailedPutCount"] == 0
    assert moto_process.firehose_calls() == {"preds": 2}
    assert s3.list_objects_v2(Bucket="staging").get("KeyCount") == 0  # buffered, as Firehose buffers
    assert moto_process.flush_firehose() == 2  # two Firehose records
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="staging")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("firehose/predictions/")
    assert s3.get_object(Bucket="staging", Key=keys[0])["Body"].read() == b"".join(lines)
    assert moto_process.flush_firehose() == 0
    assert moto_process.status() == {"process": "moto", "pid": moto_process.pid, "alive": True}
    assert moto_process.pid != os.getpid()


def test_a_stopped_control_plane_frees_its_port_and_says_so():
    proc = MotoProcess(pick_free_port(), runtime_url=None).start()
    pid, port = proc.pid, proc.port
    assert not port_free(port)
    proc.stop()
    assert _wait(lambda: not _alive(pid))
    assert _wait(lambda: port_free(port))
    with pytest.raises(ControlPlaneError, match="stopped"):
        proc.flush_firehose()


def test_the_control_plane_ends_when_its_daemon_is_killed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from trainserve.local.control_plane import MotoProcess
        from trainserve.local.daemon import pick_free_port
        if __name__ == "__main__":
            proc = MotoProcess(pick_free_port(), runtime_url=None).start()
            print(proc.pid, proc.port, flush=True)
            time.sleep(120)
        """
    )
    path = tmp_path / "daemon_like.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        pid, port = (int(x) for x in parent.stdout.readline().split())
        assert _alive(pid) and not port_free(port)
        parent.send_signal(signal.SIGKILL)  # no clean stop: only the closed pipe tells the child
        parent.wait(10)
        assert _wait(lambda: not _alive(pid) or _zombie(pid)), "moto outlived its killed daemon"
        assert _wait(lambda: port_free(port))
    finally:
        if parent.poll() is None:
            parent.kill()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
