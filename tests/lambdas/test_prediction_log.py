"""Firehose delivery of log records: batching, retries of failed entries only, fallback to the log.

The Firehose client is the collaborator here, so most tests use a stub client that fails the entries it is
told to; one test uses moto's real ExtendedS3 delivery stream.
"""

from __future__ import annotations

import json

import boto3
import prediction_log as plog
from moto import mock_aws


def _records(n: int, pad: int = 0) -> list[dict]:
    return [{"request_id": f"r-{i}", "score": i / n, "features": "x" * pad} for i in range(n)]


class StubFirehose:
    """Fails the records whose request_id is in ``fail[attempt]`` (per call number), or raises."""

    def __init__(self, fail: dict[int, set[str]] | None = None, raise_on: set[int] | None = None):
        self.fail = fail or {}
        self.raise_on = raise_on or set()
        self.calls: list[list[dict]] = []
        self.delivered: list[dict] = []

    def put_record_batch(self, DeliveryStreamName, Records):  # noqa: N803 - boto3's names
        n = len(self.calls)
        records = [json.loads(r["Data"]) for r in Records]
        self.calls.append(records)
        assert len(Records) <= 500 and sum(len(r["Data"]) for r in Records) <= 4 * 1024 * 1024
        assert all(r["Data"].endswith(b"\n") for r in Records)
        if n in self.raise_on:
            raise ConnectionError("network down")
        failing = self.fail.get(n, set())
        responses = []
        for rec in records:
            if rec["request_id"] in failing:
                responses.append({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"})
            else:
                responses.append({"RecordId": "id"})
                self.delivered.append(rec)
        return {
            "FailedPutCount": sum(1 for r in responses if "ErrorCode" in r),
            "RequestResponses": responses,
        }


def _logger(client, emitted):
    return plog.FirehoseLogger(client, "s", emit=emitted.append, sleep=lambda _s: None)


def _undelivered(emitted) -> list[dict]:
    return [e["record"] for e in emitted if e.get("undelivered_log_record")]


def test_one_call_for_a_normal_request():
    stub, emitted = StubFirehose(), []
    result = _logger(stub, emitted).put(_records(100))
    assert (result.delivered, result.undelivered, result.calls) == (100, 0, 1)
    assert len(stub.calls) == 1 and emitted == []


def test_partial_failure_retries_only_failed_entries():
    stub, emitted = StubFirehose(fail={0: {"r-3", "r-7"}}), []
    result = _logger(stub, emitted).put(_records(10))
    assert [r["request_id"] for r in stub.calls[1]] == ["r-3", "r-7"]
    assert (result.delivered, result.undelivered, result.calls) == (10, 0, 2)
    assert sorted(r["request_id"] for r in stub.delivered) == sorted(f"r-{i}" for i in range(10))


def test_persistent_failure_goes_to_log_with_metric():
    stub = StubFirehose(fail={0: {"r-1", "r-2"}, 1: {"r-2"}, 2: {"r-2"}})
    emitted: list[dict] = []
    result = _logger(stub, emitted).put(_records(5))
    assert len(stub.calls) == 3  # first try + 2 bounded retries
    assert (result.delivered, result.undelivered) == (4, 1)
    assert _undelivered(emitted) == [_records(5)[2]]
    line = emitted[0]
    metric = line["_aws"]["CloudWatchMetrics"][0]
    assert (
        metric["Namespace"] == "Trainserve/Proxy" and metric["Metrics"][0]["Name"] == "UndeliveredLogRecords"
    )
    assert line["UndeliveredLogRecords"] == 1 and line["DeliveryStream"] == "s"


def test_total_failure_every_record_in_log_never_raises(capsys):
    stub = StubFirehose(raise_on={0, 1, 2})
    logger = plog.FirehoseLogger(stub, "s", sleep=lambda _s: None)  # default sink: stdout lines
    records = _records(30)
    result = logger.put(records)
    assert result.undelivered == 30 and result.delivered == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["record"] for x in lines if x.get("undelivered_log_record")] == records


def test_transient_exception_then_success():
    stub, emitted = StubFirehose(raise_on={0}), []
    result = _logger(stub, emitted).put(_records(3))
    assert (result.delivered, result.undelivered, result.calls) == (3, 0, 2)


def test_large_batches_split_by_count_and_bytes():
    stub, emitted = StubFirehose(), []
    result = _logger(stub, emitted).put(_records(1201))
    assert [len(c) for c in stub.calls] == [500, 500, 201]
    assert result.delivered == 1201
    stub = StubFirehose()
    big = _records(12, pad=900 * 1024)  # ~0.9 MB each: 4 per call fit in 4 MiB
    result = _logger(stub, []).put(big)
    assert [len(c) for c in stub.calls] == [4, 4, 4]
    assert result.delivered == 12


def test_oversized_and_unencodable_records_logged_not_sent():
    stub, emitted = StubFirehose(), []
    records = [
        {"request_id": "big", "features": "x" * (1100 * 1024)},
        {"request_id": "nan", "score": float("nan")},
    ]
    result = _logger(stub, emitted).put(records + _records(1))
    assert result.undelivered == 2 and result.delivered == 1
    assert {r["request_id"] for r in _undelivered(emitted)} == {"big", "nan"}


def test_moto_extended_s3_stream_receives_newline_json():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        fh = boto3.client("firehose", region_name="us-east-1")
        s3.create_bucket(Bucket="staging")
        fh.create_delivery_stream(
            DeliveryStreamName="preds",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/f",
                "BucketARN": "arn:aws:s3:::staging",
                "Prefix": "firehose/predictions/",
            },
        )
        result = plog.FirehoseLogger(fh, "preds").put(_records(7))
        assert result.delivered == 7
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="staging")["Contents"]]
        assert len(keys) == 1 and keys[0].startswith("firehose/predictions/")
        body = s3.get_object(Bucket="staging", Key=keys[0])["Body"].read().decode()
        assert [json.loads(x) for x in body.splitlines()] == _records(7)


def test_slow_firehose_stops_retrying_after_the_time_budget():
    class Slow(StubFirehose):
        def put_record_batch(self, DeliveryStreamName, Records):  # noqa: N803
            import time

            time.sleep(0.15)
            raise TimeoutError("read timeout")

    stub, emitted = Slow(), []
    logger = plog.FirehoseLogger(
        stub, "s", emit=emitted.append, sleep=lambda _s: None, time_budget_seconds=0.1
    )
    result = logger.put(_records(4))
    assert result.calls == 1 and result.undelivered == 4
    assert len(_undelivered(emitted)) == 4
