"""The local API's log delivery process: botocore's JSON request bodies written with orjson there, and its
blobs base64-encoded with pybase64.

The log delivery process itself (a child process, its restarts and its log fallback) is tested through the
local API in ``test_api.py``; here, the serializer swap it makes at start, on botocore's own serializer and
on moto's Firehose (in-process ``mock_aws``).
"""

from __future__ import annotations

import json

import boto3
import botocore.serialize
import pytest

from trainserve.local import log_delivery


@pytest.fixture
def restore_botocore_json(monkeypatch):
    """Whatever a test does to ``botocore.serialize.json`` and ``.base64`` is undone after it."""
    monkeypatch.setattr(botocore.serialize, "json", botocore.serialize.json)
    monkeypatch.setattr(
        botocore.serialize.Serializer, "_get_base64", botocore.serialize.Serializer._get_base64
    )


def _put_record_batch_body(records: list[bytes]) -> bytes:
    client = boto3.client(
        "firehose", region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    operation = client.meta.service_model.operation_model("PutRecordBatch")
    request = client._serializer.serialize_to_request(  # noqa: SLF001 - the serializer under test
        {"DeliveryStreamName": "preds", "Records": [{"Data": r} for r in records]}, operation
    )
    return request["body"]


def test_put_record_batch_bodies_carry_the_same_json_written_with_orjson(restore_botocore_json):
    records = [b'{"request_id":"r-1","user_id":"\xc3\xbc"}\n' * 50, bytes(range(256)), b""]
    before = _put_record_batch_body(records)
    assert log_delivery.fast_json_bodies() is True
    assert isinstance(botocore.serialize.json, log_delivery._FastJson)  # noqa: SLF001
    after = _put_record_batch_body(records)
    assert json.loads(after) == json.loads(before) and after != before  # the same value, written compactly
    assert log_delivery.fast_json_bodies() is True  # a second call changes nothing
    assert _put_record_batch_body(records) == after


def test_the_json_stand_in_falls_back_to_json_for_what_orjson_does_not_take():
    import orjson

    fast = log_delivery._FastJson(orjson)  # noqa: SLF001
    value = {"k": 'ü \u2028 "q"', "n": [1, 2.5, None, True]}
    assert json.loads(fast.dumps(value)) == value
    assert fast.dumps(value, separators=(",", ":")) == orjson.dumps(value).decode()
    assert fast.dumps(value, indent=2) == json.dumps(
        value, indent=2
    )  # an option orjson lacks: json writes it
    assert fast.dumps({"big": 2**70}) == json.dumps({"big": 2**70})  # a value orjson refuses
    assert fast.loads('{"a": 1}') == {"a": 1} and fast.JSONDecodeError is json.JSONDecodeError


def test_records_reach_moto_s_firehose_whole_through_the_swapped_serializer(
    restore_botocore_json, staging_stream
):
    import prediction_log as plog

    assert log_delivery.fast_json_bodies() is True
    assert log_delivery.fast_base64_blobs() is True
    records = [{"request_id": f"r-{i}", "user_id": "ü\u2028", "score": i / 7} for i in range(7)]
    s3, fh = staging_stream
    assert plog.FirehoseLogger(fh, "preds").put(records).delivered == 7
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket="staging")["Contents"]]
    body = s3.get_object(Bucket="staging", Key=key)["Body"].read()
    assert body == b"".join(plog.encode(r) for r in records)


def test_put_record_batch_bodies_are_the_same_with_pybase64_blobs(restore_botocore_json):
    records = [bytes(range(256)) * 3, b"a", b"ab", b"abc", b"", b'{"score":0.5}\n' * 40]
    before = _put_record_batch_body(records)
    assert log_delivery.fast_base64_blobs() is True
    swapped = botocore.serialize.Serializer._get_base64
    assert swapped.fast_base64
    assert _put_record_batch_body(records) == before  # byte for byte: the same base64 text
    assert log_delivery.fast_base64_blobs() is True  # a second call changes nothing
    assert botocore.serialize.Serializer._get_base64 is swapped
    assert swapped(botocore.serialize.Serializer(), "ü") == "w7w="  # text is encoded first, as botocore does


def test_nothing_is_changed_when_botocore_no_longer_writes_bodies_with_its_json_module(
    restore_botocore_json, monkeypatch
):
    class Other:  # botocore's serializer module now refers to something else under that name
        pass

    other = Other()
    monkeypatch.setattr(botocore.serialize, "json", other)
    assert log_delivery.fast_json_bodies() is False
    assert botocore.serialize.json is other


def test_nothing_is_changed_when_botocore_no_longer_encodes_blobs_as_it_did(
    restore_botocore_json, monkeypatch
):
    import base64

    def _get_base64(self, value):  # a botocore that encodes another way
        return base64.standard_b64encode(value).decode()

    monkeypatch.setattr(botocore.serialize.Serializer, "_get_base64", _get_base64)
    assert log_delivery.fast_base64_blobs() is False
    assert botocore.serialize.Serializer._get_base64 is _get_base64
