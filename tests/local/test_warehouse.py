"""The local warehouse: COPY-like loading of Firehose staging objects into DuckDB, dedup, errors,
cross-process concurrency, and the daemon component against a real moto server."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from trainserve import PROJECT_ROOT
from trainserve.local import warehouse as wh
from trainserve.local.component import BusyMeter

BUCKET = "trainserve-staging"


def _log(rid: str, t: str = "2026-11-24 01:02:03.000001", **extra) -> dict:
    rec = {
        "request_id": rid,
        "event_time": t,
        "endpoint_name": "trainserve-endpoint",
        "variant_name": "v1",
        "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/trainserve-models/1",
        "model_version": 1,
        "user_id": None,
        "features": '{"f0":1.0}',
        "score": 0.8,
        "label": 1,
        "threshold": 0.5,
        "latency_ms": 3.2,
        "params": '{"log_sample_rate":1.0}',
    }
    rec.update(extra)
    return rec


def _ndjson(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_loads_each_object_once_and_views_dedup(s3, tmp_path):
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/a", Body=_ndjson([_log("r-0"), _log("r-1")]))
    # Firehose delivers at least once: the same record again in a later object.
    s3.put_object(
        Bucket=BUCKET, Key="firehose/predictions/b", Body=_ndjson([_log("r-1", "2026-11-24 01:02:04")])
    )
    s3.put_object(
        Bucket=BUCKET,
        Key="firehose/feedback/c",
        Body=_ndjson(
            [
                {"request_id": "r-0", "event_time": "2026-11-24 01:03:00", "outcome": 0},
                {"request_id": "r-0", "event_time": "2026-11-24 01:04:00", "outcome": 1},
            ]
        ),
    )
    assert w.load_staged(s3, BUCKET, wh.DEFAULT_PREFIXES) == 5
    assert w.load_staged(s3, BUCKET, wh.DEFAULT_PREFIXES) == 0  # each object once
    counts = w.counts()
    assert (counts["prediction_log"], counts["prediction_log_dedup"]) == (3, 2)
    assert (counts["prediction_feedback"], counts["prediction_feedback_dedup"]) == (2, 1)
    _, rows = w.query(
        "SELECT request_id, event_time, model_version, score FROM prediction_log_dedup ORDER BY 1"
    )
    assert [r[0] for r in rows] == ["r-0", "r-1"]
    assert str(rows[1][1]) == "2026-11-24 01:02:03.000001"  # the first delivery wins
    assert rows[0][2:] == (1, 0.8)
    assert w.query("SELECT outcome FROM prediction_feedback_dedup")[1] == [(1,)]


def test_a_cycle_loads_in_transactions_of_at_most_the_chunk_size(s3, tmp_path, monkeypatch):
    """What waited to load goes in bounded transactions (memory), in key order, each object whole: a bad
    object in one chunk keeps only itself out, and duplicates across chunks still de-duplicate."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    bodies = {
        "firehose/predictions/1": _ndjson([_log("k-0"), _log("k-1")]),
        "firehose/predictions/2": _ndjson([_log("k-1", "2026-11-24 01:02:09")]),  # a redelivery
        "firehose/predictions/3": _ndjson([_log("k-2", "not a time")]),  # refused whole
        "firehose/predictions/4": _ndjson([_log("k-3"), _log("k-4"), _log("k-5")]),
    }
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    monkeypatch.setattr(wh, "LOAD_CHUNK_BYTES", len(bodies["firehose/predictions/1"]) + 10)
    transactions: list[list[str]] = []
    original = wh.LocalWarehouse._load_parsed

    def spy(self, con, bucket, parsed):
        transactions.append([key for key, *_ in parsed])
        return original(self, con, bucket, parsed)

    monkeypatch.setattr(wh.LocalWarehouse, "_load_parsed", spy)
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 6
    keys = list(bodies)
    assert transactions == [keys[:1], keys[1:3], keys[3:]]  # 2 and 3 fit together; 4 is over the limit
    counts = w.counts()
    assert (counts["prediction_log"], counts["prediction_log_dedup"]) == (6, 5)
    assert (counts["objects_loaded"], counts["objects_in_error"]) == (3, 1)
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 0


def test_chunks_group_items_in_order_up_to_the_limit():
    items = [("a", "t", 40), ("b", "t", 50), ("c", "t", 200), ("d", "t", 10), ("e", "t", 90), ("f", "t", 0)]
    groups = [[key for key, _, _ in g] for g in wh._chunks(items, 100)]
    assert groups == [["a", "b"], ["c"], ["d", "e", "f"]]
    assert list(wh._chunks([], 100)) == []


def _schema_views() -> dict[str, str]:
    """The SELECT of each *_dedup view in schema.sql (what Redshift runs at every read)."""
    out = {}
    for statement in wh._statements():
        m = wh._VIEW.search(statement)
        if m:
            out[m.group(1).lower()] = statement[statement.upper().index(" AS", m.end()) + 3 :]
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dedup_tables_hold_what_the_schema_views_return(s3, tmp_path, seed):
    """Objects arrive in any order with redelivered records, earlier deliveries in later objects, and several
    outcomes per request: after every load cycle the *_dedup tables equal schema.sql's views over the raw
    tables, which keep every delivery."""
    rnd = random.Random(seed)
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    views = _schema_views()
    assert set(views) == {"prediction_log_dedup", "prediction_feedback_dedup"}
    sent: list[dict] = []
    for cycle in range(4):
        for obj in range(rnd.randint(1, 3)):
            logs, feedback = [], []
            for _ in range(rnd.randint(1, 40)):
                if sent and rnd.random() < 0.4:  # a redelivery, sometimes stamped earlier or changed
                    rec = dict(rnd.choice(sent))
                    if rnd.random() < 0.3:
                        rec["event_time"] = f"2026-11-24 00:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
                        rec["score"] = rnd.random()
                else:
                    rec = _log(
                        f"r-{rnd.randint(0, 60)}",
                        f"2026-11-24 01:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}",
                        score=rnd.random(),
                    )
                sent.append(rec)
                logs.append(rec)
                feedback.append(
                    {
                        "request_id": rec["request_id"],
                        "event_time": f"2026-11-24 02:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}",
                        "outcome": rnd.randint(0, 1),
                    }
                )
            key = f"{cycle:02d}-{obj}"
            s3.put_object(Bucket=BUCKET, Key=f"firehose/predictions/{key}", Body=_ndjson(logs))
            s3.put_object(Bucket=BUCKET, Key=f"firehose/feedback/{key}", Body=_ndjson(feedback))
        w.load_staged(s3, BUCKET, wh.DEFAULT_PREFIXES)
        for name, select in views.items():
            # ties on event_time make the view's choice arbitrary: compare on (request_id, event_time) and
            # require the payload columns to come from one delivery with that key
            _, table = w.query(f"SELECT * FROM {name} ORDER BY request_id")
            _, view = w.query(f"SELECT * FROM ({select}) v ORDER BY request_id")
            assert [r[:2] for r in table] == [r[:2] for r in view], (name, cycle)
            raw = "prediction_log" if name == "prediction_log_dedup" else "prediction_feedback"
            _, deliveries = w.query(f"SELECT * FROM {raw}")
            assert set(table) <= set(deliveries)
    counts = w.counts()
    assert counts["prediction_log"] > counts["prediction_log_dedup"]
    assert counts["prediction_feedback"] > counts["prediction_feedback_dedup"]


def test_a_warehouse_file_with_the_dedup_views_becomes_tables(tmp_path):
    """A file written with schema.sql's views (an earlier version of the local warehouse) is migrated."""
    import duckdb

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    for statement in wh._statements():
        con.execute(statement)
    con.execute(
        "INSERT INTO prediction_feedback VALUES ('a', TIMESTAMP '2026-11-24 01:00:00', 0),"
        " ('a', TIMESTAMP '2026-11-24 02:00:00', 1), ('b', TIMESTAMP '2026-11-24 01:00:00', 0)"
    )
    con.close()
    w = wh.LocalWarehouse(path)
    _, rows = w.query(
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_name LIKE '%dedup'"
    )
    assert sorted(rows) == [
        ("prediction_feedback_dedup", "BASE TABLE"),
        ("prediction_log_dedup", "BASE TABLE"),
    ]
    assert w.query("SELECT request_id, outcome FROM prediction_feedback_dedup ORDER BY 1")[1] == [
        ("a", 1),
        ("b", 0),
    ]
    wh.LocalWarehouse(path)  # opening it again changes nothing
    assert w.counts()["prediction_feedback_dedup"] == 2


def test_gzip_objects_and_columns_by_name(s3, tmp_path):
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    rec = {"OUTCOME": 1, "request_id": "g-0", "event_time": "2026-11-24T01:00:00+00:00", "ignored": 5}
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/x.gz", Body=gzip.compress(_ndjson([rec])))
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 1
    assert w.query("SELECT request_id, outcome, CAST(event_time AS VARCHAR) FROM prediction_feedback")[1] == [
        ("g-0", 1, "2026-11-24 01:00:00")
    ]


def test_bad_record_keeps_its_object_out_and_records_errors(s3, tmp_path):
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    bad = _ndjson([_log("ok-in-bad-object"), _log("x", score="high")]) + b"{not json\n"
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/1-bad", Body=bad)
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/2-good", Body=_ndjson([_log("good")]))
    s3.put_object(
        Bucket=BUCKET, Key="firehose/predictions/3-null", Body=_ndjson([_log("n", event_time=None)])
    )
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 1
    assert w.query("SELECT request_id FROM prediction_log")[1] == [("good",)]
    _, errors = w.query(
        "SELECT key, line_number, colname, err_reason FROM stl_load_errors ORDER BY key, line_number"
    )
    assert [(e[0], e[1], e[2]) for e in errors] == [
        ("firehose/predictions/1-bad", 2, "score"),
        ("firehose/predictions/1-bad", 3, None),
        ("firehose/predictions/3-null", 1, "event_time"),
    ]
    assert "invalid JSON" in errors[1][3]
    assert w.counts()["objects_in_error"] == 2
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 0  # not retried forever, not lost: logged


def test_too_long_varchar_is_an_error(s3, tmp_path):
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/long", Body=_ndjson([_log("r" * 129)]))
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 0
    assert w.query("SELECT colname FROM stl_load_errors")[1] == [("request_id",)]


_WRITER = textwrap.dedent(
    """
    import sys, time, datetime
    sys.path.insert(0, {root!r})
    from trainserve.local import warehouse as wh
    w = wh.LocalWarehouse({path!r})
    n = 0
    while n < {count}:
        with w._write() as con:  # what the loader does each cycle: open, write, close
            con.execute("INSERT INTO prediction_feedback VALUES (?, ?, 1)", [f"p-{{n}}", datetime.datetime(2026, 1, 1)])
        n += 1
        time.sleep(0.01)
    print(n)
    """
)


def test_reader_and_writer_processes_share_the_file(tmp_path):
    """The daemon (writer, here a subprocess doing load cycles) and the CLI (reader) never fail each other."""
    path = tmp_path / "w.duckdb"
    wh.LocalWarehouse(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER.format(root=str(PROJECT_ROOT), path=str(path), count=15)],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = []
    while writer.poll() is None:
        _, rows = wh.query(path, "SELECT count(*) FROM prediction_feedback")
        seen.append(rows[0][0])
        time.sleep(0.02)
    out, _ = writer.communicate(timeout=30)
    assert writer.returncode == 0
    written = int(out.strip())
    assert written == 15 and seen
    assert seen == sorted(seen)  # reads succeeded while the writer kept writing
    assert wh.query(path, "SELECT count(*) FROM prediction_feedback")[1][0][0] == written


def test_writer_waits_for_a_reader_in_another_process(tmp_path):
    path = tmp_path / "w.duckdb"
    wh.LocalWarehouse(path)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(path)!r}, read_only=True); print('open', flush=True); "
            "time.sleep(0.8); c.close()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "open"
    with pytest.raises(Exception, match="(?i)lock"):
        wh._connect_retrying(path, read_only=False, timeout=0.0)  # the conflict is real...
    started = time.monotonic()
    w = wh.LocalWarehouse(path)  # ...and opening for writing waits for the reader, then succeeds
    assert time.monotonic() - started > 0.1
    assert w.counts()["prediction_log"] == 0
    reader.wait(timeout=10)


def test_component_creates_streams_and_loads(tmp_path, config, local_context):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        ctx = local_context(config, tmp_path, f"http://{host}:{port}")
        names = ctx.names
        comp = wh.WarehouseComponent(interval=3600)
        comp.start(ctx)
        try:
            firehose = ctx.target().client("firehose")
            firehose.put_record_batch(
                DeliveryStreamName=names.predictions_stream,
                Records=[{"Data": _ndjson([_log("c-0")])}, {"Data": _ndjson([_log("c-1")])}],
            )
            firehose.put_record_batch(
                DeliveryStreamName=names.feedback_stream,
                Records=[
                    {
                        "Data": _ndjson(
                            [{"request_id": "c-0", "event_time": "2026-11-24 01:00:00", "outcome": 1}]
                        )
                    }
                ],
            )
            assert wh.request_flush(tmp_path, timeout=30)  # the loader thread loads on request
            status = comp.status()
            assert status["rows_loaded"] == 3
            assert (
                status["counts"]["prediction_log_dedup"] == 2 and status["counts"]["prediction_feedback"] == 1
            )
            assert status["path"] == str(tmp_path / "warehouse.duckdb") and status["running"]
            assert "alarms" not in status
            # the loading runs in its own process (off this process's GIL); a dead one is replaced
            loader = comp._loader._proc
            assert loader.pid != os.getpid() and loader.is_alive()
            # at a lower CPU priority than this process (it nices itself right after it starts)
            mine = os.getpriority(os.PRIO_PROCESS, 0)
            assert os.getpriority(os.PRIO_PROCESS, loader.pid) == min(19, mine + wh.BACKGROUND_NICE)
            loader.kill()
            loader.join(10)
            firehose.put_record_batch(
                DeliveryStreamName=names.predictions_stream, Records=[{"Data": _ndjson([_log("c-2")])}]
            )
            assert comp.load_now() == 1
            assert comp._loader._proc.pid != loader.pid
            assert comp.status()["counts"]["prediction_log_dedup"] == 3
            # the staging bucket's lifecycle rule, applied by the loader process
            s3 = ctx.target().client("s3")
            staged = s3.list_objects_v2(Bucket=names.staging_bucket, Prefix="firehose/")["KeyCount"]
            assert staged == 3 and comp.staging_retention == wh.STAGING_RETENTION_SECONDS
            comp.staging_retention = 0
            assert comp.load_now() == 0
            assert s3.list_objects_v2(Bucket=names.staging_bucket, Prefix="firehose/")["KeyCount"] == 0
            assert comp.status()["counts"]["prediction_log_dedup"] == 3
            with pytest.raises(RuntimeError, match="NoSuchBucket"):  # the child's error comes back whole
                comp._loader.load("no-such-bucket", {"firehose/predictions/": "prediction_log"}, 1.0)
            assert comp.load_now() == 0  # and the same process goes on loading
        finally:
            comp.stop()
        assert not comp.status()["running"]
        assert comp._loader._proc is None  # stopped with the component
    finally:
        server.stop()


class _FakeMeter:
    """A BusyMeter stand-in whose busy total the test sets."""

    def __init__(self) -> None:
        self.busy = 0.0

    def busy_seconds(self) -> float:
        return self.busy


def test_a_due_load_waits_while_the_api_is_busy_for_at_most_the_max_delay():
    comp = wh.WarehouseComponent(interval=2.0, max_delay=60.0)
    meter = comp._activity = _FakeMeter()
    assert comp._due(0.0, next_load=0.0, last_load=0.0)  # quiet (no readings yet): it loads
    t = 0.0
    for _ in range(10):  # a request in flight all the time
        t += 0.2
        meter.busy += 0.2
        assert not comp._due(t, next_load=0.0, last_load=0.0)
    assert comp._loads_waited == 1 and comp._waiting_since == pytest.approx(0.2)
    assert "waiting_for_api_s" in comp.status() and comp.status()["loads_waited_for_api"] == 1
    t += 0.2
    meter.busy += 0.2
    assert not comp._due(t, next_load=10.0, last_load=0.0)  # not due yet: busy or not
    while t < 59.7:
        t += 0.2
        meter.busy += 0.2
        assert not comp._due(t, next_load=0.0, last_load=0.0)
    t += 0.2
    meter.busy += 0.2
    assert comp._due(t, next_load=0.0, last_load=0.0)  # 60 s after the last load: it loads, busy or not
    assert comp._loads_waited == 1  # one wait, however many polls it lasted


def test_a_due_load_runs_once_the_api_is_quiet_and_light_traffic_does_not_hold_it():
    comp = wh.WarehouseComponent(interval=2.0, max_delay=60.0)
    meter = comp._activity = _FakeMeter()
    t = 0.0
    comp._due(t, next_load=100.0, last_load=0.0)
    for _ in range(5):  # busy
        t += 0.2
        meter.busy += 0.2
        assert not comp._due(t, next_load=0.0, last_load=0.0)
    quiet_polls = 0
    while not comp._due(t, next_load=0.0, last_load=0.0):  # quiet: the busy fraction falls in a window
        t += 0.2
        quiet_polls += 1
    assert quiet_polls <= 6  # about a window
    comp._waiting_since = None
    for _ in range(20):  # light traffic: a request in flight 5% of the time does not hold loads back
        t += 0.2
        meter.busy += 0.01
        assert comp._due(t, next_load=0.0, last_load=t - 2.0)


def test_loads_do_not_wait_without_an_api_meter():
    comp = wh.WarehouseComponent()
    assert comp._activity is None and not comp.api_busy(1.0)
    assert comp._due(5.0, next_load=0.0, last_load=5.0)


def test_the_max_delay_is_firehose_s_buffer_interval_on_aws():
    from stacks import warehouse_stack

    assert wh.LOAD_MAX_DELAY_SECONDS == warehouse_stack.FIREHOSE_BUFFER_SECONDS


def test_busy_meter_counts_the_time_with_a_request_in_flight():
    now = [0.0]
    meter = BusyMeter(clock=lambda: now[0])
    meter.enter()
    now[0] = 1.0
    meter.enter()  # overlapping requests count once
    now[0] = 2.0
    meter.exit()
    assert meter.busy_seconds() == 2.0  # one still in flight: counted up to now
    now[0] = 3.0
    meter.exit()
    now[0] = 10.0  # idle
    assert meter.busy_seconds() == 3.0
    meter.enter()
    now[0] = 10.5
    meter.exit()
    assert meter.busy_seconds() == 3.5


def test_periodic_loads_wait_while_the_api_is_busy_and_a_flush_does_not(
    moto_url, tmp_path, config, local_context
):
    meter = BusyMeter()
    ctx = local_context(config, tmp_path, moto_url, api_activity=meter)
    names = ctx.names
    comp = wh.WarehouseComponent(interval=0.1, max_delay=3600)
    comp.start(ctx)

    def wait_for(check, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def put(rid: str) -> None:
        ctx.target().client("firehose").put_record_batch(
            DeliveryStreamName=names.predictions_stream, Records=[{"Data": _ndjson([_log(rid)])}]
        )

    try:
        wait_for(lambda: comp.status()["last_load"] is not None)
        meter.enter()  # a request in flight from now on: the API is busy
        wait_for(lambda: "waiting_for_api_s" in comp.status())
        base = comp.status()["rows_loaded"]
        put("busy-1")
        time.sleep(1.0)  # ten intervals
        assert comp.status()["rows_loaded"] == base
        assert wh.request_flush(tmp_path, timeout=30)  # a flush does not wait for the API
        assert comp.status()["rows_loaded"] == base + 1
        put("busy-2")
        time.sleep(1.0)
        assert comp.status()["rows_loaded"] == base + 1
        meter.exit()  # quiet: the periodic load runs within about a window
        wait_for(lambda: comp.status()["rows_loaded"] == base + 2)
        status = comp.status()
        assert "waiting_for_api_s" not in status and status["loads_waited_for_api"] >= 2
    finally:
        comp.stop()


def _feedback(rid: str, **extra) -> dict:
    return {"request_id": rid, "event_time": "2026-11-24 02:00:00.5", "outcome": 1, **extra}


_ODD_LOG_FIELDS = [  # each makes a record the fast path must hand to parse_object (or get exactly right)
    {"Score": 0.4},
    {"SCORE": 0.4, "score": 0.3},
    {"ignored": {"nested": [1, 2]}, "Ignored": 1},
    {"score": 1},
    {"score": 2**60},
    {"score": True},
    {"score": "0.5"},
    {"label": 1.0},
    {"label": 1.5},
    {"label": True},
    {"label": 2**31},
    {"label": -(2**31)},
    {"model_version": None},
    {"user_id": 5},
    {"user_id": {"a": 1}},
    {"user_id": "line\u2028separator\u000cform feed"},
    {"user_id": "é" * 40},
    {"request_id": "é" * 64},
    {"request_id": "é" * 65},
    {"request_id": None},
    {"event_time": "2026-11-24T01:02:03"},
    {"event_time": "2026-11-24 01:02:03.5"},
    {"event_time": "2026-11-24 01:02:03.1234567"},
    {"event_time": "2026-11-24 01:02:03+02:00"},
    {"event_time": " 2026-11-24 01:02:03 "},
    {"event_time": "2026-02-30 00:00:00"},
    {"event_time": "2026-11-24 24:00:00"},
    {"event_time": "2026-11-24"},
    {"event_time": 1700000000},
    # out of datetime's range, or not a date or time: Arrow's cast takes year 0000 (a 'BC' timestamp in
    # DuckDB, which the report cannot read back); parse_object refuses all of these
    {"event_time": "0000-01-01 00:00:00"},
    {"event_time": "0000-12-31T23:59:59.999999"},
    {"event_time": "10000-01-01 00:00:00"},
    {"event_time": "-001-01-01 00:00:00"},
    {"event_time": "2026-13-01 00:00:00"},
    {"event_time": "2026-00-10 00:00:00"},
    {"event_time": "2026-11-00 00:00:00"},
    {"event_time": "2026-11-31 00:00:00"},
    {"event_time": "2026-11-24 23:60:00"},
    {"event_time": "2026-11-24 23:59:60"},
    # the edges of the range, which both take
    {"event_time": "0001-01-01 00:00:00"},
    {"event_time": "9999-12-31 23:59:59.999999"},
    {"event_time": "2024-02-29 12:00:00"},
]
_ODD_LINES = [b"", b"   ", b"\r", b"[1, 2]", b"{not json", b'{"request_id": "\xff\xfe"}', b"null", b'"text"']


def _assert_same_as_reference(data: bytes, columns) -> None:
    table, errors = wh.arrow_batch(data, columns)
    rows, ref_errors = wh.parse_object(data, columns)
    assert errors == ref_errors
    assert table.equals(wh._rows_table(rows, columns)), (table.to_pylist()[-1:], rows[-1:])


@pytest.mark.parametrize("extra", _ODD_LOG_FIELDS)
def test_fast_path_loads_what_parse_object_loads(extra):
    """arrow_batch (whole columns at once) and parse_object (record by record, the reference) agree on every
    object: canonical records mixed with one odd record."""
    columns = wh.table_columns(wh._statements())["prediction_log"]
    good = [_log(f"r-{i}", user_id=f"u-{i}" if i % 2 else None, score=i / 7) for i in range(5)]
    for position in (0, 3, 5):
        records = [*good[:position], _log("odd", **extra), *good[position:]]
        _assert_same_as_reference(_ndjson(records), columns)


@pytest.mark.parametrize(
    "event_time",
    ["0000-01-01 00:00:00", "10000-01-01 00:00:00", "2026-13-01 00:00:00", "2026-11-24 23:59:60"],
)
def test_a_timestamp_out_of_range_is_an_error_on_both_paths(event_time):
    """Not only the same answer: the fast path refuses what Python's datetime cannot hold, with
    parse_object's error, so no such row reaches the warehouse (the report reads them back as datetimes)."""
    columns = wh.table_columns(wh._statements())["prediction_feedback"]
    data = _ndjson([_feedback("f-0"), _feedback("f-1", event_time=event_time)])
    for parse in (wh.arrow_batch, wh.parse_object):
        _, errors = parse(data, columns)
        assert errors == [
            (2, "event_time", f"invalid TIMESTAMP {event_time!r}", data.split(b"\n")[1].decode())
        ]


_TRUNCATED_GZIP = gzip.compress(_ndjson([_feedback("t-0"), _feedback("t-1")]))[:-12]
_UNREADABLE_OBJECTS = {
    "not gzip after its magic": b"\x1f\x8bthis is not gzip",
    "truncated": _TRUNCATED_GZIP,
    "a bad checksum": _TRUNCATED_GZIP + b"\x00" * 8 + b"\x2a\x00\x00\x00",
    "a gzip member, then garbage": gzip.compress(_ndjson([_feedback("t-2")])) + b"\x1f\x8bgarbage",
}


@pytest.mark.parametrize("body", list(_UNREADABLE_OBJECTS.values()), ids=list(_UNREADABLE_OBJECTS))
def test_an_object_that_cannot_be_decompressed_is_one_error_on_both_paths(body):
    columns = wh.table_columns(wh._statements())["prediction_feedback"]
    _assert_same_as_reference(body, columns)
    table, errors = wh.arrow_batch(body, columns)
    assert table.num_rows == 0 and len(errors) == 1
    line, column, reason, raw = errors[0]
    assert (line, column, raw) == (None, None, None)
    assert reason.startswith("cannot decompress the gzip object: ")


@pytest.mark.parametrize("line", _ODD_LINES)
def test_fast_path_hands_odd_lines_to_parse_object(line):
    columns = wh.table_columns(wh._statements())["prediction_feedback"]
    good = _ndjson([_feedback(f"f-{i}") for i in range(3)])
    for data in (line + b"\n" + good, good + line, good + line + b"\n" + good, good.replace(b"\n", b"\r\n")):
        _assert_same_as_reference(data, columns)
        _assert_same_as_reference(gzip.compress(data), columns)


def test_records_as_the_proxy_writes_them_take_the_fast_path(monkeypatch):
    """The proxy's own encoding (prediction_log.encode) never needs the record-by-record parser."""
    import prediction_log

    columns = wh.table_columns(wh._statements())["prediction_log"]
    records = [
        _log(
            f"req-{i}",
            user_id=None if i % 3 else f"user-{i}",
            features=prediction_log.JsonObjectText(("a", "b"), [i * 0.5, -1e-12]),
            score=1.0 if i == 4 else i / 9,
            event_time=f"2026-11-24 01:02:{i:02d}.{i * 1111:06d}",
        )
        for i in range(50)
    ]
    data = b"".join(prediction_log.encode(r) for r in records)
    expected = wh._rows_table(wh.parse_object(data, columns)[0], columns)

    def not_called(*_args, **_kwargs):
        raise AssertionError("the record-by-record parser was used")

    monkeypatch.setattr(wh, "parse_object", not_called)
    monkeypatch.setattr(wh, "_parse_records", not_called)
    for staged in (data, gzip.compress(data)):  # Firehose on AWS stages gzip (the stack's COPY reads GZIP)
        table, errors = wh.arrow_batch(staged, columns)
        assert errors == [] and table.num_rows == 50
        assert table.equals(expected)
    assert table.column("features")[1].as_py() == '{"a":0.5,"b":-1e-12}'


def test_a_json_string_with_a_unicode_line_separator_loads(s3, tmp_path):
    """Records are split at newlines only: U+2028 inside a JSON string is data (COPY loads it too)."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    body = _ndjson([_log("sep", user_id="a\u2028b")]).replace(b"\\u2028", "\u2028".encode())
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/sep", Body=body)
    assert w.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 1
    assert w.query("SELECT user_id FROM prediction_log")[1] == [("a\u2028b",)]


def test_a_loader_reads_the_loaded_keys_once_and_skips_what_another_writer_loaded(s3, tmp_path):
    first = wh.LocalWarehouse(tmp_path / "w.duckdb")
    second = wh.LocalWarehouse(tmp_path / "w.duckdb")
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/a", Body=_ndjson([_log("a")]))
    assert first.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 1
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/b", Body=_ndjson([_log("b")]))
    assert second.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 1  # read "a" as loaded from the file
    assert first.load_staged(s3, BUCKET, ["firehose/predictions/"]) == 0  # "b" is checked in the transaction
    assert set(first._loaded[BUCKET]) == {"firehose/predictions/a", "firehose/predictions/b"}
    assert first.query("SELECT count(*) FROM prediction_log")[1] == [(2,)]


def test_loaded_staging_objects_expire_after_the_retention_and_failed_ones_stay(s3, tmp_path):
    """The local staging bucket's lifecycle rule: an object that loaded is deleted once it is older than the
    retention; its rows stay in the warehouse; an object that failed to load stays in S3, for replay."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/good", Body=_ndjson([_log("kept-row")]))
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/bad", Body=b"{not json\n")
    prefixes = ["firehose/predictions/"]
    assert w.load_staged(s3, BUCKET, prefixes, retention=3600) == 1
    assert w.load_staged(s3, BUCKET, prefixes, retention=3600) == 0  # younger than the retention: kept

    def keys() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))

    assert keys() == ["firehose/predictions/bad", "firehose/predictions/good"]
    time.sleep(0.01)
    assert w.load_staged(s3, BUCKET, prefixes, retention=0) == 0
    assert keys() == ["firehose/predictions/bad"]
    assert w.expired_objects == 1
    assert w.query("SELECT request_id FROM prediction_log_dedup")[1] == [("kept-row",)]
    assert w.counts()["objects_in_error"] == 1
    # a new instance (the loader restarted) reads the loaded keys from the file and loads nothing twice
    s3.put_object(Bucket=BUCKET, Key="firehose/predictions/later", Body=_ndjson([_log("later-row")]))
    again = wh.LocalWarehouse(tmp_path / "w.duckdb")
    assert again.load_staged(s3, BUCKET, prefixes, retention=0) == 1
    assert again.expired_objects == 0
    assert again.query("SELECT count(*) FROM prediction_log")[1] == [(2,)]


def test_a_staging_object_that_cannot_be_read_is_recorded_and_the_others_load(s3, tmp_path):
    """A corrupt gzip object (or a truncated one) is COPY's load error: recorded in stl_load_errors, nothing
    of it loaded, and every other object, before and after it and in the same transaction, loads; it is not
    tried again at every cycle, and later objects keep loading."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    good = [_feedback("before")], [_feedback("after")]
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/0000-good", Body=_ndjson(good[0]))
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/0001-badgzip", Body=b"\x1f\x8bthis is not gzip")
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/0002-truncated", Body=_TRUNCATED_GZIP)
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/0003-good", Body=gzip.compress(_ndjson(good[1])))
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 2
    assert w.query("SELECT request_id FROM prediction_feedback ORDER BY 1")[1] == [("after",), ("before",)]
    _, errors = w.query(
        "SELECT key, table_name, line_number, colname, err_reason, raw_line FROM stl_load_errors ORDER BY key"
    )
    assert [e[:4] for e in errors] == [
        ("firehose/feedback/0001-badgzip", "prediction_feedback", None, None),
        ("firehose/feedback/0002-truncated", "prediction_feedback", None, None),
    ]
    assert errors[0][4] == "cannot decompress the gzip object: BadGzipFile: Unknown compression method"
    assert errors[1][4].startswith("cannot decompress the gzip object: EOFError: ")
    assert errors[0][5] is None
    counts = w.counts()
    assert (counts["objects_loaded"], counts["objects_in_error"]) == (2, 2)
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 0  # not tried again at every cycle
    assert w.query("SELECT count(*) FROM stl_load_errors")[1] == [(2,)]
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/0004-later", Body=_ndjson([_feedback("later")]))
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 1  # the loader goes on
    assert w.counts()["prediction_feedback_dedup"] == 3


def test_an_object_the_parser_fails_on_is_recorded_and_the_others_load(s3, tmp_path, monkeypatch):
    """Whatever goes wrong reading one object (here the parser raising on it, as a bug would) is that
    object's load error; the cycle does not fail, so the objects after it are not held back for good."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/1-poison", Body=_ndjson([_feedback("poison")]))
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/2-good", Body=_ndjson([_feedback("good")]))
    real = wh.arrow_batch

    def failing_on_poison(data, columns):
        if b"poison" in data:
            raise MemoryError("an object too large to parse")
        return real(data, columns)

    monkeypatch.setattr(wh, "arrow_batch", failing_on_poison)
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 1
    assert w.query("SELECT request_id FROM prediction_feedback")[1] == [("good",)]
    assert w.query("SELECT key, line_number, err_reason FROM stl_load_errors")[1] == [
        (
            "firehose/feedback/1-poison",
            None,
            "cannot read the object: MemoryError: an object too large to parse",
        )
    ]
    assert w.counts()["objects_in_error"] == 1


def test_a_failed_object_put_again_under_its_key_is_loaded_and_a_loaded_one_never_twice(s3, tmp_path):
    """Replay: a failed staging object stays failed while it is the same object (not tried at every cycle);
    put again under the same key (another ETag or LastModified), it is tried again, and loads once fixed."""
    w = wh.LocalWarehouse(tmp_path / "w.duckdb")
    key = "firehose/feedback/replay"
    prefixes = ["firehose/feedback/"]

    def attempts() -> list[tuple]:
        return w.query("SELECT status, rows_loaded, etag FROM _staged_objects WHERE key = ?", [key])[1]

    bad = _ndjson([_feedback("replayed", outcome="bad")])
    s3.put_object(Bucket=BUCKET, Key=key, Body=bad)
    assert w.load_staged(s3, BUCKET, prefixes) == 0
    assert [a[:2] for a in attempts()] == [("error", 0)]
    assert w.load_staged(s3, BUCKET, prefixes) == 0  # the same object: not tried again
    assert w.query("SELECT count(*) FROM stl_load_errors")[1] == [(1,)]

    time.sleep(1.05)  # S3's LastModified has whole seconds: the same bytes put again a second later
    s3.put_object(Bucket=BUCKET, Key=key, Body=bad)
    assert w.load_staged(s3, BUCKET, prefixes) == 0  # tried again (it changed), and fails again
    assert w.query("SELECT count(*) FROM stl_load_errors")[1] == [(2,)]  # every attempt's errors are kept
    assert len(attempts()) == 1

    fixed = s3.put_object(Bucket=BUCKET, Key=key, Body=_ndjson([_feedback("replayed", outcome=0)]))
    assert w.load_staged(s3, BUCKET, prefixes) == 1
    assert w.query("SELECT request_id, outcome FROM prediction_feedback")[1] == [("replayed", 0)]
    assert attempts() == [("loaded", 1, fixed["ETag"])]  # one row per key: its latest attempt
    counts = w.counts()
    assert (counts["objects_loaded"], counts["objects_in_error"]) == (1, 0)

    s3.put_object(Bucket=BUCKET, Key=key, Body=_ndjson([_feedback("replayed", outcome=1)]))
    assert w.load_staged(s3, BUCKET, prefixes) == 0  # loaded once: never again, changed or not
    assert (
        wh.LocalWarehouse(tmp_path / "w.duckdb").load_staged(s3, BUCKET, prefixes) == 0
    )  # nor after a restart
    assert w.query("SELECT count(*) FROM prediction_feedback")[1] == [(1,)]


def test_a_load_reads_the_version_it_listed(s3, tmp_path):
    """An object put again between the listing and the read is left to the next cycle (its listing names the
    version it records), and one deleted meanwhile is skipped."""
    key = "firehose/feedback/moving"
    s3.put_object(Bucket=BUCKET, Key=key, Body=_ndjson([_feedback("first")]))
    listed = wh._Listed.of(s3.list_objects_v2(Bucket=BUCKET)["Contents"][0], "prediction_feedback")
    assert wh._fetch(s3, BUCKET, listed) == _ndjson([_feedback("first")])
    s3.put_object(Bucket=BUCKET, Key=key, Body=_ndjson([_feedback("second")]))
    assert wh._fetch(s3, BUCKET, listed) is None
    s3.delete_object(Bucket=BUCKET, Key=key)
    assert wh._fetch(s3, BUCKET, listed._replace(etag=None)) is None


def test_a_warehouse_file_from_before_object_versions_keeps_its_loaded_objects(s3, tmp_path):
    """A file whose _staged_objects has no etag / last_modified columns gains them: what it loaded never
    loads again, and what failed is tried once more (its version is unknown), then not again."""
    import duckdb

    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE _staged_objects (bucket VARCHAR NOT NULL, key VARCHAR NOT NULL, table_name VARCHAR"
            " NOT NULL, status VARCHAR NOT NULL, rows_loaded INTEGER NOT NULL, loaded_at TIMESTAMP NOT NULL)"
        )
        con.execute(
            "INSERT INTO _staged_objects VALUES"
            f" ('{BUCKET}', 'firehose/feedback/old-loaded', 'prediction_feedback', 'loaded', 1, now()),"
            f" ('{BUCKET}', 'firehose/feedback/old-failed', 'prediction_feedback', 'error', 0, now())"
        )
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/old-loaded", Body=_ndjson([_feedback("loaded")]))
    s3.put_object(Bucket=BUCKET, Key="firehose/feedback/old-failed", Body=_ndjson([_feedback("fixed")]))
    w = wh.LocalWarehouse(path)
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 1
    assert w.query("SELECT request_id FROM prediction_feedback")[1] == [("fixed",)]
    assert w.load_staged(s3, BUCKET, ["firehose/feedback/"]) == 0
    assert w.counts()["objects_loaded"] == 2


def test_the_status_gives_the_last_load_as_utc_iso_time_as_the_other_status_times():
    from trainserve.local.warehouse import WarehouseComponent

    comp = WarehouseComponent()
    assert comp.status()["last_load"] is None
    comp._last_load = 1764957600.5
    assert comp.status()["last_load"] == "2025-12-05T18:00:00+00:00"
