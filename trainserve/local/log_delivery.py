"""The local prediction API's log delivery: the proxy's Firehose sending, in a process of its own.

On AWS each Lambda execution environment sends its prediction logs after the response, from a thread of its
own, and environments run side by side; the prediction API never waits for it. Locally one process serves
the API for every "environment" at once, so the sending (encoding the records, then botocore's JSON
protocol: base64, JSON escaping, the SigV4 payload hash, about 10 µs of CPU a record) would run under the
interpreter lock that the API's request threads need. So the local API gives its proxies a logger
(``RemoteFirehoseLogger``) that hands the records to this process, which runs the proxy's own
``prediction_log.FirehoseLogger`` on them, unchanged: packing, batching, retries of refused entries, and a
log line (in the local cloud's log) for each record it cannot deliver. The proxy's ``BackgroundDelivery``
still sits in front, after the response, with the same buffering, drains and overflow as on AWS; only its
``logger.put`` runs here. A request's records travel as the proxy made them, as columns
(``prediction_log.PredictionRecords``: about 0.6 µs a record to pickle, against 1.7 µs as dicts), and this
process's botocore writes its JSON request bodies with orjson (``fast_json_bodies``) and base64-encodes the
records with pybase64 (``fast_base64_blobs``).

If the process dies it is started again on the next call; the records of a call it did not answer are written
whole to the log by the API's side (they may have been delivered as well: delivery is at least once).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import threading
from collections.abc import Sequence
from typing import Any

DELIVERY_NICE = 19  # the log delivery process's niceness (the lowest priority): see _main


class _FastJson:
    """The ``json`` module as botocore's serializers see it in this process: ``dumps`` writes with orjson
    (the same JSON value, compact and in UTF-8) and falls back to ``json.dumps`` for anything orjson does
    not take (an option it does not have, a value it refuses); everything else is ``json``'s."""

    def __init__(self, orjson: Any) -> None:
        self._orjson = orjson

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs or kwargs == {"separators": (",", ":")}:
            try:
                return str(self._orjson.dumps(obj).decode())
            except TypeError:
                pass
        return json.dumps(obj, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


def fast_json_bodies() -> bool:
    """Make botocore write JSON request bodies with orjson, in this process. botocore's JSON protocol writes
    each body with ``json.dumps``, which scans a ``PutRecordBatch``'s base64 text character by character:
    about 3 µs of CPU per log record, a third of botocore's share. The requests are the same JSON values;
    only this log delivery process (whose one client is the Firehose client) does this. Returns False and
    changes nothing when orjson is missing or botocore no longer writes bodies this way."""
    import botocore.serialize as serialize

    try:
        import orjson
    except ImportError:  # pragma: no cover - requirements.in has orjson
        return False
    if isinstance(serialize.json, _FastJson):
        return True
    if serialize.json is not json or "json.dumps(body)" not in inspect.getsource(
        serialize.JSONSerializer.serialize_to_request
    ):
        return False
    serialize.json = _FastJson(orjson)  # type: ignore[assignment]
    return True


def fast_base64_blobs() -> bool:
    """Make botocore base64-encode blobs (a ``PutRecordBatch`` record's ``Data``) with pybase64, in this
    process, straight into the text it sends: about 0.03 ms a MB instead of about 1 ms (the standard
    library's encoder, then ``strip`` and ``decode`` of its bytes): about 1 µs a log record, a tenth of this
    process's work. The text is the same. Returns False and changes nothing when pybase64 is missing or
    botocore's ``Serializer._get_base64`` no longer is ``base64.b64encode(value).strip().decode(...)``."""
    import botocore.serialize as serialize

    try:
        import pybase64
    except ImportError:  # pragma: no cover - requirements.in has pybase64
        return False
    current = serialize.Serializer._get_base64  # noqa: SLF001 - checked before it is replaced
    if getattr(current, "fast_base64", False):
        return True
    if "base64.b64encode(value).strip().decode(self.DEFAULT_ENCODING)" not in inspect.getsource(current):
        return False

    def _get_base64(self: Any, value: Any) -> str:
        if isinstance(value, str):
            value = value.encode(self.DEFAULT_ENCODING)
        return str(pybase64.b64encode_as_string(value))  # base64 text is ASCII: the same str as decode()

    _get_base64.fast_base64 = True  # type: ignore[attr-defined]
    serialize.Serializer._get_base64 = _get_base64  # type: ignore[method-assign]  # noqa: SLF001
    return True


def _main(conn: Any, endpoint_url: str, region: str, access_key: str, secret_key: str) -> None:
    """The child: ``(stream, records)`` pickles in, ``(delivered, undelivered, calls, errors)`` out, until the pipe
    closes or ``None`` comes. It runs at the lowest CPU priority (``DELIVERY_NICE``), as the warehouse
    loader does: on AWS this work is not on the API's CPUs, so here it takes only the CPU that the API, the
    runtime and the model servers leave. Measured with ``benchmarks/prediction_logging.py`` (100-row
    requests, 6 repetitions, two runs each): the cost of logging to throughput and p99 fell from +13 to +16%
    and +40 to +47% at the API's priority to +3 to +6% and +14 to +23%. It costs about 9 µs of CPU a log
    record, and keeps up at the API's full rate on 2 CPUs (the API's interpreter lock leaves most of a CPU).
    If other work takes every CPU for long, it falls behind: the sender's buffer fills and its overflow goes
    to the log fallback, counted in the API's status (nothing is lost silently)."""
    with contextlib.suppress(OSError):
        os.nice(DELIVERY_NICE)
    import boto3

    fast_json_bodies()
    fast_base64_blobs()
    # lambdas/proxy/ is on sys.path: the spawned child imported this module, so trainserve/__init__ ran
    from prediction_log import FIREHOSE_CLIENT_CONFIG, FirehoseLogger

    client = boto3.client(
        "firehose",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=FIREHOSE_CLIENT_CONFIG,
    )
    loggers: dict[str, FirehoseLogger] = {}
    conn.send("ready")  # imports done and the client made: the first batch does not wait for them
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):  # the daemon is gone
            return
        request = pickle.loads(message)
        if request is None:
            return
        stream, records = request
        logger = loggers.get(stream)
        if logger is None:
            logger = loggers[stream] = FirehoseLogger(client, stream)
        result = logger.put(records)  # never raises; what it cannot deliver it writes to the log
        conn.send((result.delivered, result.undelivered, result.calls, result.errors[-3:]))


class DeliveryProcess:
    """The child process and its pipe; ``put`` is one request and its answer (one at a time)."""

    def __init__(self, target: Any, timeout: float = 60.0) -> None:
        from trainserve.target import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY

        self.args = (target.aws_endpoint_url, target.region, LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY)
        self.timeout = timeout
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self.calls = 0  # PutRecordBatch calls made for this API (status)
        self.restarts = 0
        self._stopped = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _ensure(self) -> None:  # under the lock
        if self._stopped:  # a sender still sending after stop(): its records go to the log fallback
            raise RuntimeError("the log delivery process was stopped")
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            self.restarts += 1
            self._close()
        from trainserve.local import child_process

        self._proc, self._conn = child_process.spawn(_main, self.args, "log-delivery")
        if not self._conn.poll(self.timeout) or self._conn.recv() != "ready":
            self._kill()
            raise RuntimeError(f"the log delivery process did not start within {self.timeout:.0f} s")

    def start(self) -> DeliveryProcess:
        """Start the child now (about a second of imports), not on the first batch: under load, records
        arriving meanwhile would fill the sender's buffer."""
        with self._lock:
            self._ensure()
        return self

    def put(self, stream: str, records: Sequence[dict[str, Any]]) -> tuple[int, int, int, list[str]]:
        """Deliver ``records`` to ``stream`` in the child: (delivered, undelivered, calls, last errors).
        Raises ``RuntimeError`` if the child did not answer (it is replaced on the next call)."""
        data = pickle.dumps((stream, records), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            try:
                self._ensure()
                self._conn.send_bytes(data)
                if not self._conn.poll(self.timeout):
                    raise RuntimeError(f"the log delivery process did not answer within {self.timeout:.0f} s")
                delivered, undelivered, calls, errors = self._conn.recv()
            except (EOFError, OSError, RuntimeError) as exc:
                self._kill()
                raise RuntimeError(f"log delivery process failed: {type(exc).__name__}: {exc}") from None
            self.calls += calls
            return delivered, undelivered, calls, errors

    def status(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "alive": self._proc is not None and self._proc.is_alive(),
            "firehose_calls": self.calls,
            "restarts": self.restarts,
        }

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.close()
            self._conn = None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._close()

    def stop(self, timeout: float = 10.0) -> None:
        from trainserve.local import child_process

        with self._lock:
            self._stopped = True  # not started again by a late put()
            child_process.stop(self._proc, self._conn, timeout)
            self._proc = self._conn = None


class RemoteFirehoseLogger:
    """``FirehoseLogger``'s interface for one stream, delivering through a ``DeliveryProcess``."""

    def __init__(self, process: DeliveryProcess, stream: str, emit: Any = None) -> None:
        from prediction_log import FirehoseLogger, log_json

        self.process = process
        self.stream_name = stream
        self._local = FirehoseLogger(None, stream, emit=emit or log_json)  # only for its log fallback

    def put(self, records: Sequence[dict[str, Any]]) -> Any:
        from prediction_log import DeliveryResult, count_undelivered

        result = DeliveryResult()
        if not records:
            return result
        try:
            result.delivered, result.undelivered, result.calls, result.errors = self.process.put(
                self.stream_name, records
            )
            count_undelivered(self.stream_name, result.undelivered)  # the child logged them; count here too
        except Exception as exc:  # noqa: BLE001 - nothing is lost silently: every record goes to the log
            for record in records:
                self._local._undelivered(record, str(exc), result)  # noqa: SLF001 - the same log line
        return result

    def undelivered(self, record: dict[str, Any], error: str) -> None:
        self._local.undelivered(record, error)
