"""Delivery of prediction and feedback records to Firehose, with nothing lost silently.

Why direct ``PutRecordBatch`` (and not log lines + a subscription filter): the proxy makes at most ONE
``PutRecordBatch`` call per request in the common case (all rows of a request in one call, split only past
500 records or 4 MiB), sent after the response has gone out (``background_delivery``: a sender thread, held
open on Lambda by an internal extension until the send is confirmed). Delivery is confirmed within the
invocation, so a partial failure is retried (only the failed entries; at most ``max_retries`` times with a short
backoff, within ``time_budget_seconds``; the proxy's Firehose client has 1 s connect / 2 s read timeouts and
no botocore retries) and whatever still fails is written whole to the structured log, one JSON line per
record (``"undelivered_log_record": true``), ready to be replayed into the stream. Each such line is also a
CloudWatch Embedded Metric Format document counting 1 in ``Trainserve/Proxy`` ``UndeliveredLogRecords``
(zero extra API calls), so an alarm can watch for losses. The same code runs unchanged locally (moto's
ExtendedS3 stream writes one staging object per call), and the record shape does not depend on a log
format or a subscription filter's envelope. The cost is at most one in-region call per request, made after the
response, measured by ``benchmarks/prediction_logging.py``. Logging never fails a prediction: every exception is caught here.

Records are newline-terminated JSON objects (Firehose concatenates them; Redshift ``COPY ... JSON 'auto'``
and the local loader read them one per line).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024
METRIC_NAMESPACE = "Trainserve/Proxy"
METRIC_NAME = "UndeliveredLogRecords"


def log_json(obj: dict[str, Any]) -> None:
    """One structured log line on stdout (Lambda sends stdout lines to CloudWatch Logs as they are)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def encode(record: dict[str, Any]) -> bytes:
    """A record as Firehose data: compact JSON, newline-terminated."""
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def batches(
    items: Iterable[tuple[int, bytes]],
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
) -> Iterator[list[tuple[int, bytes]]]:
    """Split (index, data) items into calls of at most ``max_records`` records and ``max_bytes`` bytes."""
    batch: list[tuple[int, bytes]] = []
    size = 0
    for item in items:
        n = len(item[1])
        if batch and (len(batch) >= max_records or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


@dataclass
class DeliveryResult:
    delivered: int = 0
    undelivered: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)


class FirehoseLogger:
    """Sends records to one delivery stream: batching, bounded retries of failed entries, log fallback."""

    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        max_retries: int = 2,
        backoff_seconds: float = 0.05,
        time_budget_seconds: float = 3.0,
        emit: Callable[[dict[str, Any]], None] = log_json,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.stream_name = stream_name
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.time_budget_seconds = time_budget_seconds
        self.emit = emit
        self.sleep = sleep
        self.calls = 0  # PutRecordBatch calls made by this logger (benchmarks read it)

    def put(self, records: list[dict[str, Any]]) -> DeliveryResult:
        """Deliver ``records``; never raises. Undelivered records go to the log (and the metric)."""
        result = DeliveryResult()
        if not records:
            return result
        try:
            encoded: list[tuple[int, bytes]] = []
            for i, record in enumerate(records):
                try:
                    data = encode(record)
                except (TypeError, ValueError) as exc:
                    self._undelivered(record, f"unencodable: {exc}", result)
                    continue
                if len(data) > MAX_RECORD_BYTES:
                    self._undelivered(record, f"record is {len(data)} bytes > {MAX_RECORD_BYTES}", result)
                    continue
                encoded.append((i, data))
            for batch in batches(encoded):
                failed = self._send_with_retries(batch, result)
                for i, error in failed:
                    self._undelivered(records[i], error, result)
        except Exception as exc:  # noqa: BLE001 - logging must never fail the prediction
            self.emit({"level": "ERROR", "message": "prediction logging failed", "error": repr(exc)})
        return result

    def _send_with_retries(
        self, batch: list[tuple[int, bytes]], result: DeliveryResult
    ) -> list[tuple[int, str]]:
        pending = batch
        errors: dict[int, str] = {}
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            if attempt:
                if time.monotonic() - started > self.time_budget_seconds:
                    break  # a slow Firehose must not hold the prediction: fall back to the log now
                self.sleep(self.backoff_seconds * (2 ** (attempt - 1)))
            self.calls += 1
            result.calls += 1
            try:
                response = self.client.put_record_batch(
                    DeliveryStreamName=self.stream_name, Records=[{"Data": data} for _, data in pending]
                )
            except Exception as exc:  # noqa: BLE001 - a total failure: retry everything, then fall back
                message = f"{type(exc).__name__}: {exc}"
                result.errors.append(message)
                errors.update({i: message for i, _ in pending})
                continue
            responses = response.get("RequestResponses") or []
            if not response.get("FailedPutCount"):
                result.delivered += len(pending)
                return []
            still: list[tuple[int, bytes]] = []
            for (i, data), r in zip(pending, responses, strict=False):
                if r.get("ErrorCode"):
                    errors[i] = f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}"
                    still.append((i, data))
                else:
                    result.delivered += 1
            # A response shorter than the request leaves the rest unconfirmed: retry them too.
            still.extend(pending[len(responses) :])
            for i, _ in pending[len(responses) :]:
                errors[i] = "no response entry"
            result.errors.append(f"FailedPutCount={response.get('FailedPutCount')}")
            pending = still
            if not pending:
                return []
        return [(i, errors.get(i, "undelivered")) for i, _ in pending]

    def undelivered(self, record: dict[str, Any], error: str) -> None:
        """Write a record that will not be sent to the log (replayable line + metric)."""
        self._undelivered(record, error, DeliveryResult())

    def _undelivered(self, record: dict[str, Any], error: str, result: DeliveryResult) -> None:
        result.undelivered += 1
        self.emit(
            {
                "_aws": {
                    "Timestamp": int(time.time() * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": METRIC_NAMESPACE,
                            "Dimensions": [["DeliveryStream"]],
                            "Metrics": [{"Name": METRIC_NAME, "Unit": "Count"}],
                        }
                    ],
                },
                "DeliveryStream": self.stream_name,
                METRIC_NAME: 1,
                "level": "ERROR",
                "message": "log record not delivered to Firehose; replay it from this line",
                "undelivered_log_record": True,
                "error": error,
                "record": record,
            }
        )
