"""The local Firehose buffers records like Firehose's buffering hints: one staging object per stream and flush
(moto writes one object per call), and nothing buffered is lost."""

from __future__ import annotations

import json

import boto3
import pytest

from trainserve.local import moto_patches

BUCKET = "staging-bucket"


@pytest.fixture
def clients(moto_url):
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    kw = dict(endpoint_url=moto_url, region_name="us-east-1")
    s3, firehose = boto3.client("s3", **kw), boto3.client("firehose", **kw)
    s3.create_bucket(Bucket=BUCKET)
    for name in ("preds", "fb"):
        firehose.create_delivery_stream(
            DeliveryStreamName=name,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{BUCKET}",
                "Prefix": f"{name}/",
            },
        )
    try:
        yield s3, firehose
    finally:
        moto_patches.enable_firehose_buffering(False)


def _objects(s3, prefix):
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return [s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys]


def _put(firehose, stream, values):
    out = firehose.put_record_batch(
        DeliveryStreamName=stream, Records=[{"Data": (json.dumps({"v": v}) + "\n").encode()} for v in values]
    )
    assert out["FailedPutCount"] == 0 and len(out["RequestResponses"]) == len(values)


def test_buffered_records_become_one_object_per_stream_in_order(clients):
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    calls = moto_patches.firehose_calls().get("preds", 0)
    _put(firehose, "preds", [1, 2])
    _put(firehose, "preds", [3])
    _put(firehose, "fb", [9])
    assert moto_patches.firehose_calls()["preds"] == calls + 2  # calls are counted, not objects
    assert _objects(s3, "preds/") == [] and _objects(s3, "fb/") == []  # still buffered
    assert moto_patches.flush_firehose() == 4
    assert _objects(s3, "preds/") == [b'{"v": 1}\n{"v": 2}\n{"v": 3}\n']
    assert _objects(s3, "fb/") == [b'{"v": 9}\n']
    assert moto_patches.flush_firehose() == 0  # nothing twice


def test_turning_buffering_off_flushes_and_writes_per_call_again(clients):
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    _put(firehose, "preds", [1])
    moto_patches.enable_firehose_buffering(False)
    assert _objects(s3, "preds/") == [b'{"v": 1}\n']
    _put(firehose, "preds", [2])
    assert len(_objects(s3, "preds/")) == 2


def test_a_failed_flush_keeps_the_records(clients, monkeypatch):
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    _put(firehose, "preds", [1, 2])
    original = moto_patches._original_put_s3_records

    def failing(*args, **kwargs):
        raise RuntimeError("S3 down")

    monkeypatch.setattr(moto_patches, "_original_put_s3_records", failing)
    with pytest.raises(RuntimeError):
        moto_patches.flush_firehose()
    monkeypatch.setattr(moto_patches, "_original_put_s3_records", original)
    assert moto_patches.flush_firehose() == 2
    assert _objects(s3, "preds/") == [b'{"v": 1}\n{"v": 2}\n']


def test_fast_put_record_batch_path_keeps_bytes_and_the_errors_of_moto(clients):
    """PutRecordBatch is parsed and answered without moto's shape-driven (de)serializers: the same bytes
    arrive, the response has one entry per record, and bad requests still get moto's errors."""
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    blobs = [b"\x00\xffbinary\n", "é\n".encode(), b'{"v": 1}\n']
    out = firehose.put_record_batch(DeliveryStreamName="preds", Records=[{"Data": b} for b in blobs])
    assert out["FailedPutCount"] == 0 and out["Encrypted"] is False
    assert len(out["RequestResponses"]) == 3 and all(r["RecordId"] for r in out["RequestResponses"])
    moto_patches.flush_firehose()
    assert _objects(s3, "preds/") == [b"".join(blobs)]
    with pytest.raises(firehose.exceptions.ResourceNotFoundException):
        firehose.put_record_batch(DeliveryStreamName="nope", Records=[{"Data": b"x"}])
    from botocore.exceptions import ClientError

    def corrupt(request, **_kw):  # a signed PutRecordBatch whose body is not JSON
        request.body = b"{not json"
        request.headers["Content-Length"] = str(len(request.body))

    firehose.meta.events.register("before-send.firehose.PutRecordBatch", corrupt)
    try:
        with pytest.raises(ClientError):  # moto's own parser answers it with an error, the server lives on
            firehose.put_record_batch(DeliveryStreamName="preds", Records=[{"Data": b"x"}])
    finally:
        firehose.meta.events.unregister("before-send.firehose.PutRecordBatch", corrupt)
    _put(firehose, "preds", [4])


def test_a_stream_s_buffer_is_written_when_it_reaches_the_size_limit(clients, monkeypatch):
    """Without a flush, a stream's buffer becomes a staging object once it holds FIREHOSE_BUFFER_MAX_BYTES
    (moto's memory stays bounded while the loader waits); the other streams stay buffered."""
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    line = len(json.dumps({"v": 1}) + "\n")
    monkeypatch.setattr(moto_patches, "FIREHOSE_BUFFER_MAX_BYTES", 3 * line)
    _put(firehose, "preds", [1, 2])
    _put(firehose, "fb", [8, 9])
    assert _objects(s3, "preds/") == []
    _put(firehose, "preds", [3])  # the third line fills the buffer: written at once, all three
    assert _objects(s3, "preds/") == [b'{"v": 1}\n{"v": 2}\n{"v": 3}\n']
    assert _objects(s3, "fb/") == []
    _put(firehose, "preds", [4])  # a new buffer
    assert moto_patches.flush_firehose() == 3  # 4, 8 and 9
    objects = _objects(s3, "preds/")
    assert sorted(objects) == sorted([b'{"v": 1}\n{"v": 2}\n{"v": 3}\n', b'{"v": 4}\n'])
    assert _objects(s3, "fb/") == [b'{"v": 8}\n{"v": 9}\n']


def test_a_failed_size_triggered_write_accepts_the_call_and_keeps_the_records(clients, monkeypatch):
    """The call that filled the buffer succeeds even if the write fails (the client must not send the
    records again): they stay buffered, and the next flush writes them."""
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    line = len(json.dumps({"v": 1}) + "\n")
    monkeypatch.setattr(moto_patches, "FIREHOSE_BUFFER_MAX_BYTES", 2 * line)
    original = moto_patches._original_put_s3_records

    def failing(*args, **kwargs):
        raise RuntimeError("S3 down")

    monkeypatch.setattr(moto_patches, "_original_put_s3_records", failing)
    _put(firehose, "preds", [1, 2])
    assert _objects(s3, "preds/") == []
    monkeypatch.setattr(moto_patches, "_original_put_s3_records", original)
    assert moto_patches.flush_firehose() == 2
    assert _objects(s3, "preds/") == [b'{"v": 1}\n{"v": 2}\n']


def test_a_record_that_is_not_base64_is_refused_and_nothing_of_its_call_is_buffered(clients):
    """The fast path decodes with pybase64 and validates: text that is not base64 goes to moto's own parser,
    which refuses the call; none of its records is buffered."""
    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    from botocore.exceptions import ClientError

    def corrupt(request, **_kw):  # a signed PutRecordBatch with one good and one bad record
        request.body = json.dumps(
            {"DeliveryStreamName": "preds", "Records": [{"Data": "eyJ2IjogMX0K"}, {"Data": "Y!I="}]}
        ).encode()
        request.headers["Content-Length"] = str(len(request.body))

    firehose.meta.events.register("before-send.firehose.PutRecordBatch", corrupt)
    try:
        with pytest.raises(ClientError):
            firehose.put_record_batch(DeliveryStreamName="preds", Records=[{"Data": b"x"}])
    finally:
        firehose.meta.events.unregister("before-send.firehose.PutRecordBatch", corrupt)
    assert moto_patches.flush_firehose() == 0
    _put(firehose, "preds", [1])
    moto_patches.flush_firehose()
    assert _objects(s3, "preds/") == [b'{"v": 1}\n']


def test_large_calls_arrive_whole_and_the_keep_alive_connection_serves_the_next_one(clients):
    """moto's server reads a PutRecordBatch body with one read of its Content-Length (``_read_body_at_once``):
    two 3 MB calls in a row on the same keep-alive connection arrive byte for byte, in order."""
    import random

    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    rng = random.Random(7)
    calls = [[rng.randbytes(60_000) + b"\n" for _ in range(50)] for _ in range(2)]
    for records in calls:
        out = firehose.put_record_batch(DeliveryStreamName="preds", Records=[{"Data": b} for b in records])
        assert out["FailedPutCount"] == 0 and len(out["RequestResponses"]) == 50
    _put(firehose, "preds", [1])  # a small call after them on the same connection
    assert moto_patches.flush_firehose() == 101
    assert _objects(s3, "preds/") == [b"".join(calls[0] + calls[1]) + b'{"v": 1}\n']


def test_a_chunked_put_record_batch_is_read_as_werkzeug_reads_it(clients, moto_url):
    """A body sent in chunks has no Content-Length to read at once: werkzeug's server de-chunks it, and the
    call is buffered as any other."""
    import base64
    import http.client
    from urllib.parse import urlparse

    s3, firehose = clients
    moto_patches.enable_firehose_buffering()
    body = json.dumps(
        {"DeliveryStreamName": "preds", "Records": [{"Data": base64.b64encode(b'{"v": 5}\n').decode()}]}
    ).encode()
    url = urlparse(moto_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/",
            body=iter([body[:10], body[10:]]),  # an iterable body: http.client sends it chunked
            headers={
                "X-Amz-Target": "Firehose_20150804.PutRecordBatch",
                "Content-Type": "application/x-amz-json-1.1",
                "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/firehose/aws4_request, "
                "SignedHeaders=host, Signature=0",
            },
            encode_chunked=True,
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200 and answer["FailedPutCount"] == 0
    moto_patches.flush_firehose()
    assert _objects(s3, "preds/") == [b'{"v": 5}\n']


class _CountingInput:
    def __init__(self, data: bytes) -> None:
        self.data, self.reads = data, []

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out


def _wsgi_request(body: bytes, **environ):
    from moto.moto_server.werkzeug_app import BackendRequest as Request  # what moto's server hands on

    stream = _CountingInput(body)
    request = Request(
        {
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": stream,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "5000",
            "wsgi.url_scheme": "http",
            **environ,
        }
    )
    return request, stream


def test_the_body_is_read_in_one_read_of_its_length_and_kept_as_werkzeug_s_cached_body():
    body = b"x" * 300_000
    request, stream = _wsgi_request(body)
    moto_patches._read_body_at_once(request)
    assert stream.reads == [len(body)]
    assert request.data == body and request.get_data() == body and request.stream.read() == b""
    moto_patches._read_body_at_once(request)  # already read: nothing more
    assert stream.reads == [len(body)]


def test_a_body_already_being_read_or_without_a_length_is_left_to_werkzeug():
    chunked, stream = _wsgi_request(b"abc", **{"wsgi.input_terminated": True})
    moto_patches._read_body_at_once(chunked)
    assert stream.reads == []
    started, stream = _wsgi_request(b"abcdef")
    assert started.stream.read(2) == b"ab"  # something read part of it through werkzeug's stream
    moto_patches._read_body_at_once(started)
    assert started.get_data() == b"cdef"  # the rest, as werkzeug would give it
    empty, stream = _wsgi_request(b"")
    moto_patches._read_body_at_once(empty)
    assert stream.reads == []
