"""Firehose delivery of log records: batching, retries of failed entries only, fallback to the log.

The Firehose client is the collaborator here, so most tests use a stub client that fails the entries it is
told to; one test uses moto's real ExtendedS3 delivery stream.
"""

from __future__ import annotations

import json
import math

import prediction_log as plog
import pytest


def _records(n: int, pad: int = 0) -> list[dict]:
    return [{"request_id": f"r-{i}", "score": i / n, "features": "x" * pad} for i in range(n)]


def _lines(data: bytes) -> list[dict]:
    assert data.endswith(b"\n")
    return [json.loads(x) for x in data.splitlines()]


class StubFirehose:
    """Fails the Firehose records holding a log record whose request_id is in ``fail[attempt]`` (per call
    number), or raises. ``calls``: the log records of each call; ``firehose_records``: per call, the log
    records of each Firehose record."""

    def __init__(self, fail: dict[int, set[str]] | None = None, raise_on: set[int] | None = None):
        self.fail = fail or {}
        self.raise_on = raise_on or set()
        self.calls: list[list[dict]] = []
        self.firehose_records: list[list[list[dict]]] = []
        self.delivered: list[dict] = []

    def put_record_batch(self, DeliveryStreamName, Records):  # noqa: N803 - boto3's names
        n = len(self.calls)
        assert len(Records) <= 500 and sum(len(r["Data"]) for r in Records) <= 4 * 1024 * 1024
        assert all(len(r["Data"]) <= 1000 * 1024 for r in Records)
        packed = [_lines(r["Data"]) for r in Records]
        self.firehose_records.append(packed)
        self.calls.append([rec for lines in packed for rec in lines])
        if n in self.raise_on:
            raise ConnectionError("network down")
        failing = self.fail.get(n, set())
        responses = []
        for lines in packed:
            if any(rec["request_id"] in failing for rec in lines):
                responses.append({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"})
            else:
                responses.append({"RecordId": "id"})
                self.delivered.extend(lines)
        return {
            "FailedPutCount": sum(1 for r in responses if "ErrorCode" in r),
            "RequestResponses": responses,
        }


def _logger(client, emitted, pack_bytes: int = 1):
    """pack_bytes 1: one log record per Firehose record (the retry tests count entries); the default packs."""
    return plog.FirehoseLogger(client, "s", emit=emitted.append, sleep=lambda _s: None, pack_bytes=pack_bytes)


def _undelivered(emitted) -> list[dict]:
    return [e["record"] for e in emitted if e.get("undelivered_log_record")]


def test_one_call_for_a_normal_request():
    stub, emitted = StubFirehose(), []
    result = _logger(stub, emitted).put(_records(100))
    assert (result.delivered, result.undelivered, result.calls) == (100, 0, 1)
    assert len(stub.calls) == 1 and emitted == []


def test_a_request_is_one_firehose_record_of_newline_json_lines():
    """Packed by default: Firehose bills per record rounded up to 5 KB, and the staged bytes are the same."""
    stub, emitted = StubFirehose(), []
    records = _records(100)
    result = plog.FirehoseLogger(stub, "s", emit=emitted.append).put(records)
    assert (result.delivered, result.undelivered, result.calls) == (100, 0, 1)
    assert stub.firehose_records == [[records]]  # one call, one Firehose record, the lines in order


def test_packing_respects_the_firehose_record_limit():
    records = _records(9, pad=300 * 1024)  # ~300 KB lines: three fit in 1,000 KiB
    stub = StubFirehose()
    result = plog.FirehoseLogger(stub, "s", emit=[].append).put(records)
    assert result.delivered == 9 and result.calls == 1
    assert [len(lines) for lines in stub.firehose_records[0]] == [3, 3, 3]
    assert [rec for lines in stub.firehose_records[0] for rec in lines] == records
    assert list(plog.pack([(0, b"a\n"), (1, b"bb\n"), (2, b"c\n")], max_bytes=5)) == [
        ([0, 1], b"a\nbb\n"),
        ([2], b"c\n"),
    ]
    assert list(plog.pack([(0, b"long line\n"), (1, b"x\n")], max_bytes=4)) == [
        ([0], b"long line\n"),
        ([1], b"x\n"),
    ]


def test_a_refused_packed_record_is_retried_whole_then_each_log_record_goes_to_the_log():
    records = _records(6, pad=400 * 1024)  # two per Firehose record: [r-0 r-1] [r-2 r-3] [r-4 r-5]
    stub = StubFirehose(fail={0: {"r-3"}, 1: {"r-3"}, 2: {"r-3"}})
    emitted: list[dict] = []
    result = plog.FirehoseLogger(stub, "s", emit=emitted.append, sleep=lambda _s: None).put(records)
    assert [len(c) for c in stub.firehose_records] == [3, 1, 1]
    assert [r["request_id"] for r in stub.calls[1]] == ["r-2", "r-3"]  # only the refused Firehose record
    assert (result.delivered, result.undelivered) == (4, 2)
    assert [r["request_id"] for r in _undelivered(emitted)] == ["r-2", "r-3"]
    assert all(e["UndeliveredLogRecords"] == 1 for e in emitted)  # the metric counts log records


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
    logger = plog.FirehoseLogger(stub, "s", sleep=lambda _s: None)  # default sink: stdout lines; packed
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


def test_moto_extended_s3_stream_receives_newline_json(staging_stream):
    s3, fh = staging_stream
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


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_both_encoders_write_the_same_values_and_refuse_nan(encoder, monkeypatch):
    """On Lambda the asset has no orjson and the standard library encodes; both give equal JSON values."""
    if encoder == "stdlib":
        monkeypatch.setattr(plog, "_orjson", None)
    else:
        assert plog._orjson is not None  # the local cloud has it (requirements.in)
    features = {"mean radius": 17.99, "tiny": 1e-05, "big": 1.5e16, "neg": -0.0, "third": 1 / 3}
    record = {
        "request_id": "r-1",
        "user_id": None,
        "model_version": 2,
        "score": 0.123456789012345,
        "label": 1,
        "features": plog.json_text(features),
        "params": '{"DECISION_THRESHOLD":0.5}',
        "note": 'quote " and unicode é and newline \n',
    }
    line = plog.encode(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == record
    assert json.loads(json.loads(line)["features"]) == features
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            plog.encode({**record, "score": bad})


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_features_are_written_as_json_text_when_the_record_is_encoded(encoder, monkeypatch, capsys):
    """The proxy hands over names and values; the text is made after the response, by either encoder, in
    the Firehose line, in the log fallback line, and after a trip through pickle (the local delivery)."""
    import pickle

    if encoder == "stdlib":
        monkeypatch.setattr(plog, "_orjson", None)
    names, values = ("mean radius", "worst area"), [17.99, 2019.0]
    lazy = plog.JsonObjectText(names, values)
    expected = plog.json_text(dict(zip(names, values, strict=True)))
    assert lazy.text() == expected and lazy == expected and lazy == plog.JsonObjectText(names, list(values))
    record = {"request_id": "r-1", "score": 0.5, "features": lazy}
    line = json.loads(plog.encode(record))
    assert line["features"] == expected and json.loads(line["features"]) == dict(
        zip(names, values, strict=True)
    )
    assert plog.encode(pickle.loads(pickle.dumps(record))) == plog.encode(record)
    plog.FirehoseLogger(None, "s").undelivered(record, "test")
    logged = json.loads(capsys.readouterr().out)
    assert logged["record"]["features"] == expected  # replayable as the same record
    with pytest.raises((TypeError, ValueError)):  # a mismatch is refused (FirehoseLogger logs the record)
        plog.encode({"features": plog.JsonObjectText(names, [1.0])})


def _prediction_records(
    n: int = 4, *, user_id: str | None = "u-1"
) -> tuple[plog.PredictionRecords, list[dict]]:
    """A request's records as the proxy hands them over, and the dicts they stand for (the log's columns, in
    order)."""
    names = ("mean radius", "worst area", 'odd "name"\n')
    rows = [[i + 0.5, -1e-12 * i, float(i)] for i in range(n)]
    head = {
        "event_time": "2026-12-05 11:00:00.123456",
        "endpoint_name": "ep",
        "variant_name": "v2",
        "model_package_arn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/g/2",
        "model_version": 2,
        "user_id": user_id,
    }
    tail = {"threshold": 0.5, "latency_ms": 3.25, "params": '{"LOG_SAMPLE_RATE":1.0}'}
    ids, scores, labels = [f"req-{i}" for i in range(n)], [i / n for i in range(n)], [i % 2 for i in range(n)]
    records = plog.PredictionRecords(head, ids, names, rows, scores, labels, tail)
    dicts = [
        {
            "request_id": ids[i],
            **head,
            "features": plog.json_text(dict(zip(names, rows[i], strict=True))),
            "score": scores[i],
            "label": labels[i],
            **tail,
        }
        for i in range(n)
    ]
    return records, dicts


def test_a_request_s_records_read_as_the_dicts_they_stand_for():
    import pickle

    records, dicts = _prediction_records(5)
    assert len(records) == 5 and records == dicts and list(records) == dicts
    assert [list(r) for r in records] == [list(d) for d in dicts]  # the columns' order
    assert [plog.encode(r) for r in records] == [plog.encode(d) for d in dicts]  # the same Firehose lines
    assert (
        records[-1] == dicts[-1]
        and records[1:3] == dicts[1:3]
        and isinstance(records[1:3], plog.PredictionRecords)
    )
    with pytest.raises(IndexError):
        records[5]
    assert pickle.loads(pickle.dumps(records)) == dicts
    assert records != dicts[:4] and records != "not records"
    with pytest.raises(ValueError, match="3 scores"):
        plog.PredictionRecords({}, ["a", "b"], ("x",), [[1.0], [2.0]], [0.1, 0.2, 0.3], [0, 1], {})


def test_a_request_s_records_are_delivered_as_the_dicts_would_be():
    records, dicts = _prediction_records(7)
    via_records, via_dicts = StubFirehose(), StubFirehose()
    assert _logger(via_records, [], pack_bytes=plog.MAX_RECORD_BYTES).put(records).delivered == 7
    assert _logger(via_dicts, [], pack_bytes=plog.MAX_RECORD_BYTES).put(dicts).delivered == 7
    assert via_records.firehose_records == via_dicts.firehose_records and len(via_records.calls) == 1


def test_records_of_several_requests_read_as_one_batch_in_order():
    import pickle

    first, first_dicts = _prediction_records(3)
    plain = _records(2)
    second, second_dicts = _prediction_records(4, user_id=None)
    batch = plog.RecordBatch([first, plain, second])
    expected = first_dicts + plain + second_dicts
    assert len(batch) == 9 and list(batch) == expected
    assert (
        [batch[i] for i in range(9)] == expected and batch[-1] == expected[-1] and batch[2:5] == expected[2:5]
    )
    with pytest.raises(IndexError):
        batch[9]
    assert list(pickle.loads(pickle.dumps(batch))) == expected
    assert len(plog.RecordBatch([])) == 0 and not plog.RecordBatch([])


def test_a_refused_record_of_a_request_goes_to_the_log_whole():
    records, dicts = _prediction_records(3)
    stub, emitted = StubFirehose(fail={0: {"req-1"}, 1: {"req-1"}, 2: {"req-1"}}), []
    result = _logger(stub, emitted).put(plog.RecordBatch([records]))
    assert (result.delivered, result.undelivered) == (2, 1)
    assert _undelivered(emitted) == [dicts[1]]


@pytest.mark.parametrize(
    "head, tail",
    [
        (None, None),  # as the proxy makes them
        ({}, {}),
        ({"user_id": "ü\u2028\"'\\"}, {}),
        ({}, {"params": "{}", "latency_ms": -0.0, "big": 2**63}),
        ({"model_package_arn": None, "model_version": None}, {"threshold": 1e-300}),
    ],
)
def test_a_request_s_lines_are_made_from_its_columns_exactly_as_encode_makes_them(head, tail):
    records, _ = _prediction_records(6)
    if head is not None:
        records = plog.PredictionRecords(
            head, records.request_ids, records.names, records.rows, records.scores, records.labels, tail
        )
    lines = records.lines()
    assert lines is not None and lines == [plog.encode(r) for r in records]
    assert list(plog.encode_all(plog.RecordBatch([records, _records(2), records[2:4]]))) == [
        plog.encode(r) for r in [*records, *_records(2), *records[2:4]]
    ]


@pytest.mark.parametrize(
    "scores, labels, ids",
    [
        ([0.0, -0.0, 1e-300, 2.5e-310], [0, 1, 1, 0], None),  # floats' shortest forms, -0.0 kept
        ([1, 0.5, 2**63, -(2**63)], [True, False, 1, None], None),  # ints beside floats; bools, null
        ([0.25, 0.5, 0.75, 1.0], [0, 1, 0, 1], plog.NumberedIds('a "quoted"\n-prefix ü', 4)),
        ([0.25, 0.5, 0.75, 1.0], [0, 1, 0, 1], ["r,0", 'r"1', "r\u20282", "r%b3"]),  # commas, quotes, %
    ],
)
def test_each_line_is_written_as_encode_writes_its_record_whatever_the_columns_hold(scores, labels, ids):
    """Lines are made a column at a time (the numbers' texts from one list, the ids from a prefix): each is
    byte for byte what ``encode`` makes of its record's dict."""
    records, _ = _prediction_records(4)
    records = plog.PredictionRecords(
        records.head,
        ids if ids is not None else records.request_ids,
        records.names,
        records.rows,
        scores,
        labels,
        records.tail,
    )
    lines = records.lines()
    assert lines is not None and lines == [plog.encode(r) for r in records]
    assert [json.loads(line)["score"] for line in lines] == scores


@pytest.mark.parametrize(
    "change, refused",
    [
        ({"scores": [0.5, float("nan"), 0.25]}, [1]),  # encode refuses NaN: that record goes to the log
        ({"rows": [[1.0, 2.0, 3.0], [1.0], [1.0, 2.0, 3.0]]}, [1]),  # a row without every feature
        ({"head": {"label": "twice"}}, []),  # a key given twice: the records' dicts decide
        ({"tail": {"big": 2**70}}, [0, 1, 2]),  # a number JSON cannot carry here
        ({"labels": [0, float("nan"), float("inf")]}, [1, 2]),  # as for scores: refused, not null
        ({"names": (1, 2, 3)}, [0, 1, 2]),  # JSON object keys are text
    ],
)
def test_records_the_columns_cannot_encode_are_decided_by_encode(change, refused, monkeypatch):
    records, _ = _prediction_records(3)
    fields = {
        "head": records.head,
        "request_ids": records.request_ids,
        "names": records.names,
        "rows": records.rows,
        "scores": records.scores,
        "labels": records.labels,
        "tail": records.tail,
    }
    records = plog.PredictionRecords(**{**fields, **change})
    assert records.lines() is None
    stub, emitted = StubFirehose(), []
    result = _logger(stub, emitted, pack_bytes=plog.MAX_RECORD_BYTES).put(records)
    assert [e["record"]["request_id"] for e in emitted if e.get("undelivered_log_record")] == [
        f"req-{i}" for i in refused
    ]
    assert all("unencodable" in e["error"] for e in emitted if e.get("undelivered_log_record"))
    assert result.delivered == 3 - len(refused)
    assert stub.delivered == [json.loads(plog.encode(r)) for i, r in enumerate(records) if i not in refused]
    monkeypatch.setattr(plog, "_orjson", None)  # the Lambda asset's encoder: record by record
    records_ok, _ = _prediction_records(2)
    assert records_ok.lines() is None
    assert list(plog.encode_all(records_ok)) == [plog.encode(r) for r in records_ok]


def test_numbered_ids_read_as_the_request_s_row_ids_and_pickle_as_prefix_and_count():
    import pickle

    ids = plog.NumberedIds("5f0c-req", 4)
    expected = [f"5f0c-req-{i}" for i in range(4)]
    assert len(ids) == 4 and list(ids) == expected and ids == expected and ids != expected[:3]
    assert ids[0] == expected[0] and ids[-1] == expected[-1] and ids[1:3] == expected[1:3]
    with pytest.raises(IndexError):
        ids[4]
    data = pickle.dumps(ids, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == expected and len(data) < 100
    assert plog.NumberedIds("x", 0) == [] and not plog.NumberedIds("x", 0)


@pytest.mark.parametrize("seed", range(3))
def test_json_rows_pickle_as_the_text_and_read_back_as_the_same_floats(seed):
    """The rows come back from their JSON text exactly: every finite float, subnormals, -0.0 and the
    largest included (with orjson and with the standard library's parser)."""
    import pickle
    import random
    import struct

    rnd = random.Random(seed)
    values = [struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0] for _ in range(3000)]
    finite = [v for v in values if math.isfinite(v)] + [-0.0, 5e-324, 1.7976931348623157e308, 0.1, 1e22]
    rows = [finite[i : i + 30] for i in range(0, len(finite), 30)]
    text = json.dumps({"instances": rows}, separators=(",", ":"))
    given = plog.JsonRows(text, "instances", rows)
    assert given.rows is rows and len(given) == len(rows) and given == rows  # nothing parsed in the sender
    data = pickle.dumps(given, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < len(text) + 100  # the text, not the numbers
    back = pickle.loads(data)
    assert back._rows is None  # parsed when first read
    parsed = back.rows
    assert all(
        struct.pack("d", a) == struct.pack("d", b)
        for r, q in zip(parsed, rows, strict=True)
        for a, b in zip(r, q, strict=True)
    )  # bit for bit: -0.0 stays -0.0
    assert back[0] == rows[0] and back[-1] == rows[-1] and back[1:3] == rows[1:3] and list(back) == rows


def test_json_rows_parse_with_the_standard_library_without_orjson(monkeypatch):
    monkeypatch.setattr(plog, "_orjson", None)
    rows = [[0.1, -0.0, 2.5e-310], [1e300, 3.0, -7.25]]
    back = plog.JsonRows(json.dumps({"instances": rows}, separators=(",", ":")))
    assert back == rows and [str(v) for v in back[0]] == ["0.1", "-0.0", "2.5e-310"]


def test_records_with_numbered_ids_and_json_rows_encode_and_pickle_as_with_lists():
    import pickle

    records, dicts = _prediction_records(6)
    rows = [list(map(float, r)) for r in records.rows]
    exact = plog.PredictionRecords(
        records.head,
        plog.NumberedIds("req", 6),
        records.names,
        plog.JsonRows.of(rows),
        records.scores,
        records.labels,
        records.tail,
    )
    lists = plog.PredictionRecords(
        records.head,
        [f"req-{i}" for i in range(6)],
        records.names,
        rows,
        records.scores,
        records.labels,
        records.tail,
    )
    compact = plog.PredictionRecords(
        records.head,
        plog.NumberedIds("req", 6),
        records.names,
        plog.JsonRows(json.dumps({"instances": rows}, separators=(",", ":")), "instances", rows),
        records.scores,
        records.labels,
        records.tail,
    )
    assert compact == lists == exact == dicts
    assert compact.lines() == lists.lines() == exact.lines() == [plog.encode(d) for d in dicts]
    sent = pickle.loads(pickle.dumps(plog.RecordBatch([compact, exact]), protocol=pickle.HIGHEST_PROTOCOL))
    assert sent.groups[1].rows._rows is None and sent.groups[1].rows.exact  # nothing parsed to encode them
    assert list(plog.encode_all(sent)) == [plog.encode(d) for d in dicts] * 2
    assert sent.groups[1].rows._rows is None
    assert sent.groups[0][2:4] == dicts[2:4] and isinstance(sent.groups[0][2:4], plog.PredictionRecords)


@pytest.mark.parametrize(
    "names",
    [
        ("f0", "f1", "f2"),
        ('odd "name"\n', "100% sure", "ü \u2028 \\ /", "%b%s"),
        ("x",),
        ("dup", "dup", "z"),  # repeated names: the general path (the dict keeps the last)
        (),
    ],
)
def test_a_row_s_features_are_written_as_the_dict_s_json_text_would_be(names):
    import orjson

    rows = [
        [0.5 * i for i in range(len(names))],
        [-0.0, 1e-320, 1.7976931348623157e308, 3, True, None, 2**63][: len(names)],
        ["text, with a comma", [1, 2], {"a": 1}, 0.1, 0.2, 0.3][: len(names)],
        [float("nan"), float("inf"), 1, 2, 3][: len(names)],
    ]
    encoder = plog._features_encoder(names)
    for row in rows:
        if len(row) != len(names):
            continue
        expected = orjson.dumps(orjson.dumps(dict(zip(names, row, strict=True))).decode())
        assert encoder.row(row) == expected, row
        if all(type(v) is float for v in row):  # a row of numbers given as its values' JSON texts
            assert encoder.values([orjson.dumps(v) for v in row]) == expected, row
    if names:
        for bad in ([0.5] * (len(names) + 1), []):
            with pytest.raises(ValueError):
                encoder.row(bad)
            with pytest.raises(ValueError):
                encoder.values([b"0.5"] * len(bad))


@pytest.mark.parametrize("orjson_installed", [True, False])
def test_json_rows_of_rows_carry_the_text_the_model_gets_and_cut_values_from_orjson_s(
    orjson_installed, monkeypatch
):
    import orjson

    rows = [[0.5, -0.0, 1e-05, 1e16, 123.456], [5e-324, 1.7976931348623157e308, 1e-07, 2.0, -3.25]]
    if not orjson_installed:
        monkeypatch.setattr(plog, "_orjson", None)
    given = plog.JsonRows.of(rows)
    assert given._rows is None and len(given) == 2  # the text only: the rows are parsed if read
    assert json.loads(given.text) == {"instances": rows}
    assert [[repr(v) for v in r] for r in given.rows] == [[repr(v) for v in r] for r in rows]  # -0.0 too
    assert given.exact is orjson_installed
    if orjson_installed:
        assert given.text == orjson.dumps({"instances": rows}).decode()
        assert given.value_texts() == [[orjson.dumps(v) for v in row] for row in rows]
    else:
        assert given.text == json.dumps({"instances": rows}, separators=(",", ":"))
        assert given.value_texts() is None
    assert plog.JsonRows.of([]).value_texts() in ([], None) and len(plog.JsonRows.of([])) == 0


@pytest.mark.parametrize(
    "text, count",
    [
        ('{"instances":[["a","b"]]}', 1),  # not numbers
        ('{"instances":[[1,[2]]]}', 1),  # nested
        ('{"instances":[[1,{"a":2}]]}', 1),
        ('{"rows":[[1,2]]}', 1),  # another key
        ('{"instances":[[1,2],[3,4]]}', 3),  # a count that does not match
        ('{"instances":[1,2]}', 2),  # not rows
    ],
)
def test_json_rows_texts_of_another_shape_are_not_cut(text, count):
    assert plog.JsonRows(text, "instances", count=count, exact=True).value_texts() is None


def test_json_rows_of_keeps_the_text_not_the_rows():
    """A request's records wait in the proxy's buffer: they hold the rows' text, and the parsed rows (about
    100 KB a 100-row request) are freed with the request."""
    import gc
    import sys

    rows = [[float(i * 30 + j) / 7 for j in range(30)] for i in range(100)]
    held = plog.JsonRows.of(rows)
    assert held._rows is None and not any(r is rows for r in gc.get_referents(held))
    assert sys.getsizeof(held.text) < sum(sys.getsizeof(r) + 30 * sys.getsizeof(1.5) for r in rows) / 2
    assert len(held) == 100 and held.rows == rows  # read back (parsed) when someone reads them
    assert held.value_texts() is not None and held.exact  # the log lines are made from the text
