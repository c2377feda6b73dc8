"""The warehouse component's stop: moto keeps the local Firehose's buffer and the staging bucket in memory, so
the stop makes a final load of everything answered so far, bounded in time, and logs what it could not load.
Against a real moto server with the local Firehose buffering as the local cloud runs it."""

from __future__ import annotations

import json
import logging
import time

import duckdb
import pytest

from trainserve.local import moto_patches
from trainserve.local import warehouse as wh

LOGGER = "test-local"  # the local_context fixture's log


@pytest.fixture
def buffering(moto_url):
    """The module's moto server, emptied, with Firehose buffering until a flush (as in the local cloud)."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    moto_patches.enable_firehose_buffering()
    try:
        yield moto_url
    finally:
        moto_patches.enable_firehose_buffering(False)


def _start(ctx, **kwargs) -> wh.WarehouseComponent:
    """A started component whose periodic loads do not come again once its first one is done."""
    comp = wh.WarehouseComponent(interval=3600, **kwargs)
    comp.start(ctx)
    deadline = time.monotonic() + 30
    while comp.status()["last_load"] is None:
        assert time.monotonic() < deadline, comp.status()
        time.sleep(0.05)
    return comp


def _put(ctx, stream: str, records: list[dict]) -> None:
    out = (
        ctx.target()
        .client("firehose")
        .put_record_batch(
            DeliveryStreamName=stream, Records=[{"Data": (json.dumps(r) + "\n").encode()} for r in records]
        )
    )
    assert out["FailedPutCount"] == 0


def _prediction(rid: str) -> dict:
    return {
        "request_id": rid,
        "event_time": "2026-11-24 01:02:03.000001",
        "endpoint_name": "trainserve-endpoint",
        "variant_name": "v1",
        "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/1",
        "model_version": 1,
        "features": '{"f0":1.0}',
        "score": 0.8,
        "label": 1,
        "threshold": 0.5,
        "latency_ms": 3.2,
        "params": "{}",
    }


def _rows(path, sql: str) -> list[tuple]:
    return wh.query(path, sql)[1]


def test_the_stop_loads_what_the_local_firehose_still_buffers(
    buffering, tmp_path, config, local_context, caplog
):
    ctx = local_context(config, tmp_path, buffering)
    comp = _start(ctx)
    try:
        _put(ctx, ctx.names.predictions_stream, [_prediction("p-0"), _prediction("p-1")])
        _put(
            ctx,
            ctx.names.feedback_stream,
            [{"request_id": "p-0", "event_time": "2026-11-24 02:00:00", "outcome": 1}],
        )
        s3 = ctx.target().client("s3")
        s3.put_object(
            Bucket=ctx.names.staging_bucket, Key="firehose/feedback/0001-badgzip", Body=b"\x1f\x8bnot gzip"
        )
        # answered, but only in the local Firehose's buffer: not staged, not loaded
        assert (
            s3.list_objects_v2(Bucket=ctx.names.staging_bucket, Prefix="firehose/predictions/")["KeyCount"]
            == 0
        )
        assert _rows(ctx.warehouse_path, "SELECT count(*) FROM prediction_log") == [(0,)]
    finally:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            comp.stop()
    assert _rows(ctx.warehouse_path, "SELECT request_id FROM prediction_log ORDER BY 1") == [
        ("p-0",),
        ("p-1",),
    ]
    assert _rows(ctx.warehouse_path, "SELECT request_id, outcome FROM prediction_feedback") == [("p-0", 1)]
    assert not comp.status()["running"] and comp._loader._proc is None
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    final = [
        m for m in messages if m.startswith("warehouse: the final load before the stop took 3 row(s) in ")
    ]
    assert len(final) == 1 and final[0].endswith(" s"), messages  # not "every staged object is loaded"
    # the object that failed to load is named: the local cloud's S3 ends with the stop
    failed = [m for m in messages if "failed to load" in m]
    assert len(failed) == 1 and failed[0].startswith("warehouse: 1 staging object(s) in s3://")
    assert failed[0].endswith(": firehose/feedback/0001-badgzip")
    assert not any("were not loaded" in m for m in messages)


def test_a_final_load_that_cannot_finish_in_time_names_what_is_lost(
    buffering, tmp_path, config, local_context, caplog
):
    """The final load is bounded (a reader in another process holds the file here, so the loader cannot
    write): the stop ends within its bound and the log names every staging object left unloaded."""
    ctx = local_context(config, tmp_path, buffering)
    comp = _start(ctx, final_load_timeout=1.5)
    _put(ctx, ctx.names.predictions_stream, [_prediction("lost-0")])
    reader = duckdb.connect(str(ctx.warehouse_path), read_only=True)  # the loader is another process
    try:
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            comp.stop()
        took = time.monotonic() - started
    finally:
        reader.close()
    assert took < 1.5 + 3.0, took  # the bound, and the loader process's end
    assert _rows(ctx.warehouse_path, "SELECT count(*) FROM prediction_log") == [(0,)]
    s3 = ctx.target().client("s3")
    staged = [o["Key"] for o in s3.list_objects_v2(Bucket=ctx.names.staging_bucket)["Contents"]]
    assert len(staged) == 1 and staged[0].startswith("firehose/predictions/")  # the stop flushed Firehose
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(m.startswith("warehouse: the final load before the stop failed after ") for m in messages), (
        messages
    )
    lost = [m for m in messages if "were not loaded" in m]
    assert len(lost) == 1 and lost[0].startswith("warehouse: 1 staging object(s) (")
    assert lost[0].endswith(f"end with the local cloud (moto keeps S3 in memory): {staged[0]}")
    assert comp._loader._proc is None
