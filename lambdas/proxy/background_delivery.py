"""Prediction log delivery off the request path: records are handed over in microseconds and sent by one
background thread, after the response has gone out.

``BackgroundDelivery`` wraps a ``prediction_log.FirehoseLogger``, which does the sending: batching to at most
500 records / 4 MiB per ``PutRecordBatch``, bounded retries of failed entries, and the structured-log
fallback with the ``UndeliveredLogRecords`` metric. So nothing about what is delivered or how failures are
handled changes, only *when* the call is made. The sender thread takes everything buffered at once, so a
busy process makes fewer calls than requests (never more). It waits at most ``linger_seconds`` (200 ms) after
the first buffered record before sending, so that concurrent requests share a call, and not at all once
``batch_records`` (1,000) are buffered; the records of requests that arrive while a send is in flight share
the next one. The wait is short so that records are short-lived objects (a long-lived buffer of many small
objects makes the garbage collector's passes slow). The batch size keeps a busy process's calls at about a
megabyte of log lines (30 features a row; what arrives while a call is in flight all goes in the next):
under a busy load of 100-row requests a 200 ms linger alone made calls of about 2 MB, each a burst of work
for Firehose's client and server that the requests running beside it waited for (measured with
``benchmarks/prediction_logging.py``; see the README there). Small requests, and Lambda, where each
invocation drains its own records, are not affected.

On Lambda an environment serves one request at a time, and it is frozen as soon as the handler returns,
background threads included. ``LambdaDeliveryExtension`` is the mechanism AWS documents for work after the
response ("Running code after returning a response from an AWS Lambda function", AWS Compute Blog). It is
an internal extension: a thread registered with the Lambda Extensions API. Lambda does not freeze the
environment until every extension has asked for its next event. The extension waits for the handler to
finish (``invocation_finished``) and for the delivery of that invocation's records to be confirmed
(``drain``). Only then does it ask for the next event. The caller already has its response by then. The
records never outlive the invocation that made them. A SIGTERM (Lambda sends it before shutting down an
environment that has extensions) drains too.

Durability: between the response and the confirmed send, the records exist only in this process's memory.
An environment that dies in that window (a crash or out-of-memory kill, in the milliseconds after a
response) loses them, just as a synchronous call made before the response would be lost if the
environment died before it. A full buffer (Firehose unreachable for long) does not grow without bound.
Records past ``max_buffered`` go at once to the structured-log fallback, so they are not lost silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from prediction_log import RecordBatch

LINGER_SECONDS = 0.2
BATCH_RECORDS = 1_000
MAX_BUFFERED = 20_000
EXTENSION_NAME = "trainserve-log-delivery"

_INSTANCES: weakref.WeakSet[BackgroundDelivery] = weakref.WeakSet()


class BackgroundDelivery:
    """A buffer and one sender thread in front of a ``FirehoseLogger`` (``put`` never blocks on the network)."""

    def __init__(
        self,
        logger: Any,
        *,
        linger_seconds: float = LINGER_SECONDS,
        batch_records: int = BATCH_RECORDS,
        max_buffered: int = MAX_BUFFERED,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.linger_seconds = linger_seconds
        # a batch's worth is sent without lingering; a full buffer is always a batch's worth
        self.batch_records = max(1, min(batch_records, max_buffered))
        self.max_buffered = max_buffered
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: list[Sequence[dict[str, Any]]] = []  # each put's records, as they came (not copied)
        self._pending_count = 0  # records in _pending
        self._first_at = 0.0
        self._submitted = 0  # records accepted into the buffer
        self._finished = 0  # records the logger has handled (delivered or written to the log)
        self._urgent = 0  # drains waiting: send without lingering
        self._closed = False
        self._thread: threading.Thread | None = None
        _INSTANCES.add(self)

    def put(self, records: Sequence[dict[str, Any]]) -> None:
        """Buffer ``records`` (a list of dicts or a ``PredictionRecords``, kept as it is) for the sender; never
        raises, never waits for Firehose."""
        n = len(records)
        if not n:
            return
        overflow: Sequence[dict[str, Any]] = ()
        with self._cond:
            if self._closed:
                overflow = records
            else:
                room = max(0, self.max_buffered - self._pending_count)
                accepted = records if n <= room else records[:room]
                if n > room:
                    overflow = records[room:]
                if accepted:
                    before = self._pending_count
                    was_empty = not before
                    if was_empty:
                        self._first_at = self.clock()
                    self._pending.append(accepted)
                    self._pending_count += len(accepted)
                    self._submitted += len(accepted)
                    self._ensure_thread()
                    if was_empty or before < self.batch_records <= self._pending_count:
                        # wake the sender only when it has something new to time (it waits for the first
                        # record) or a batch's worth to send now; a lingering sender wakes on its own timer.
                        # A wake-up per request would cost every request a thread switch.
                        self._cond.notify_all()
        for record in overflow:  # outside the lock: this writes log lines
            self.logger.undelivered(record, "prediction log buffer full or closed: not sent to Firehose")

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every record buffered before this call has been handled; False on timeout."""
        deadline = self.clock() + timeout
        with self._cond:
            target = self._submitted
            if self._finished >= target:
                return True
            self._urgent += 1
            self._cond.notify_all()
            try:
                while self._finished < target:
                    left = deadline - self.clock()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._urgent -= 1

    def close(self, timeout: float = 5.0) -> bool:
        """Drain, then stop the sender thread; later ``put`` calls go to the log fallback."""
        drained = self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return drained

    def pending(self) -> int:
        with self._cond:
            return self._submitted - self._finished

    # ------------------------------------------------------------------------------------------ sender

    def _ensure_thread(self) -> None:  # under the lock
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="prediction-log-delivery", daemon=True)
            self._thread.start()

    def _take(self) -> RecordBatch | None:
        """The next batch to send (everything buffered), or None when closed and empty."""
        with self._cond:
            while True:
                if self._pending_count:
                    wait = self._first_at + self.linger_seconds - self.clock()
                    if self._urgent or self._closed or wait <= 0 or self._pending_count >= self.batch_records:
                        batch = RecordBatch(self._pending)
                        self._pending, self._pending_count = [], 0
                        return batch
                    self._cond.wait(wait)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self.logger.put(batch)  # never raises; failures end in the log fallback
            finally:
                with self._cond:
                    self._finished += len(batch)
                    self._cond.notify_all()


def drain_all(timeout: float = 5.0) -> bool:
    """Drain every live ``BackgroundDelivery`` of this process (the local cloud calls it before a flush)."""
    ok = True
    for delivery in list(_INSTANCES):
        ok = delivery.drain(timeout) and ok
    return ok


# ---------------------------------------------------------------------------------------------- Lambda


class LambdaDeliveryExtension:
    """Internal Lambda extension: holds each invocation's environment until its records are delivered.

    ``runtime_api`` is ``AWS_LAMBDA_RUNTIME_API`` (host:port of the Runtime and Extensions API). Call
    ``start()`` during init (module import), and ``invocation_finished()`` when the handler is done.
    """

    def __init__(
        self,
        runtime_api: str,
        drain: Callable[[float], bool],
        *,
        name: str = EXTENSION_NAME,
        drain_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        self.base = f"http://{runtime_api}/2020-01-01/extension"
        self.drain = drain
        self.name = name
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.extension_id: str | None = None
        self._finished = threading.Semaphore(0)
        self._thread: threading.Thread | None = None

    def register(self) -> str:
        request = urllib.request.Request(
            f"{self.base}/register",
            data=json.dumps({"events": ["INVOKE"]}).encode(),  # internal extensions get INVOKE only
            headers={"Lambda-Extension-Name": self.name, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local Runtime API
            extension_id = response.headers.get("Lambda-Extension-Identifier")
        if not extension_id:
            raise RuntimeError("the Extensions API gave no Lambda-Extension-Identifier")
        self.extension_id = extension_id
        return extension_id

    def next_event(self) -> dict[str, Any]:
        assert self.extension_id is not None, "register() first"
        request = urllib.request.Request(
            f"{self.base}/event/next", headers={"Lambda-Extension-Identifier": self.extension_id}
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310 - blocks until the next event
            return dict(json.loads(response.read() or b"{}"))

    def start(self) -> LambdaDeliveryExtension:
        self.register()
        self._thread = threading.Thread(target=self._run, name="log-delivery-extension", daemon=True)
        self._thread.start()
        return self

    def invocation_finished(self) -> None:
        """The handler is done (its records are buffered): the extension may drain and release the invoke."""
        self._finished.release()

    def handle(self, event: dict[str, Any]) -> bool:
        """One INVOKE: wait for the handler (until the invoke's deadline), then drain. True to continue."""
        if event.get("eventType") != "INVOKE":
            self.drain(self.drain_timeout)
            return False  # SHUTDOWN (external extensions only) or unknown: stop asking
        deadline_ms = event.get("deadlineMs")
        wait = (float(deadline_ms) / 1000.0 - self.clock()) if deadline_ms else self.drain_timeout
        self._finished.acquire(timeout=max(0.0, wait))
        self.drain(self.drain_timeout)
        return True

    def _run(self) -> None:
        failures = 0
        while failures < 3:
            try:
                event = self.next_event()
            except Exception as exc:  # noqa: BLE001 - the Extensions API went away: retry, then stop
                failures += 1
                print(
                    json.dumps(
                        {
                            "level": "WARNING",
                            "message": "log delivery extension: next event failed",
                            "error": repr(exc),
                        }
                    ),  # fmt: skip
                    flush=True,
                )
                time.sleep(0.1)
                continue
            failures = 0
            if not self.handle(event):
                return


def install_sigterm_drain(drain: Callable[[float], bool], timeout: float = 0.25) -> None:
    """On SIGTERM (Lambda sends it before shutting down an environment with extensions), drain, then exit."""

    def on_sigterm(signum: int, frame: Any) -> None:  # noqa: ARG001
        drain(timeout)
        raise SystemExit(0)

    with contextlib.suppress(ValueError):  # not the main thread: leave the default
        signal.signal(signal.SIGTERM, on_sigterm)


def lambda_runtime_api() -> str | None:
    return os.environ.get("AWS_LAMBDA_RUNTIME_API") or None
