"""Delivery of prediction and feedback records to Firehose, with nothing lost silently.

Why direct ``PutRecordBatch`` (and not log lines + a subscription filter): the proxy makes at most ONE
``PutRecordBatch`` call per request in the common case (all rows of a request in one call, split only past
500 Firehose records or 4 MiB), sent after the response has gone out (``background_delivery``: a sender thread, held
open on Lambda by an internal extension until the send is confirmed). Delivery is confirmed within the
invocation, so a partial failure is retried (only the refused Firehose records; at most ``max_retries`` times with a short
backoff, within ``time_budget_seconds``; the proxy's Firehose client has 1 s connect / 2 s read timeouts and
no botocore retries) and whatever still fails is written whole to the structured log, one JSON line per
record (``"undelivered_log_record": true``), ready to be replayed into the stream. Each such line is also a
CloudWatch Embedded Metric Format document counting 1 in ``Trainserve/Proxy`` ``UndeliveredLogRecords``
(zero extra API calls), so an alarm can watch for losses. The same code runs unchanged locally (moto's
ExtendedS3 stream writes one staging object per call), and the record shape does not depend on a log
format or a subscription filter's envelope. The cost is at most one in-region call per request, made after the
response, measured by ``benchmarks/prediction_logging.py``. Logging never fails a prediction: every exception is caught here.

Records are newline-terminated JSON objects (Redshift ``COPY ... JSON 'auto'`` and the local loader read
them one per line). Several of them travel in one Firehose record, up to ``MAX_RECORD_BYTES``: Firehose
writes the records of a stream to S3 one after another, so the staged object, and what COPY loads from it, is
byte for byte the same as with one Firehose record per prediction. Packing matters because Firehose bills
ingestion per record rounded up to 5 KB: a prediction's line is well under 1 KB, so one record per line
would pay for 5 KB each (about 7x the data); packed, a 100-row request is one Firehose record of about 70 KB.
A packed Firehose record that Firehose refuses is retried as a whole, and if it still cannot be delivered,
each of its log records goes to the structured log (and the metric counts log records, not Firehose ones).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config

try:  # a fast JSON encoder when the environment has it (the local cloud does); the standard library otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover - the Lambda asset ships without third-party packages
    _orjson = None

# The Firehose client for these loggers: short timeouts and no botocore retries (``FirehoseLogger`` retries
# refused entries itself, within its time budget); parameter validation off, since every call is built here
# within Firehose's limits and botocore's validation of 500 records costs milliseconds of CPU.
FIREHOSE_CLIENT_CONFIG = Config(
    connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}, parameter_validation=False
)

_UNDELIVERED: dict[str, int] = {}  # stream -> log records written to the log fallback by this process
_UNDELIVERED_LOCK = threading.Lock()


def undelivered_counts() -> dict[str, int]:
    """Per stream, the log records this process has written to the log instead of Firehose (the metric's
    count, kept here too for the local API's status and the benchmark)."""
    with _UNDELIVERED_LOCK:
        return dict(_UNDELIVERED)


def count_undelivered(stream: str, n: int) -> None:
    if n:
        with _UNDELIVERED_LOCK:
            _UNDELIVERED[stream] = _UNDELIVERED.get(stream, 0) + n


MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024
METRIC_NAMESPACE = "Trainserve/Proxy"
METRIC_NAME = "UndeliveredLogRecords"


class JsonObjectText:
    """A record field holding a JSON object as text (a prediction's ``features``), made when the record is
    encoded, after the response, rather than while the prediction is answered: ``names`` -> ``values``."""

    __slots__ = ("names", "values")

    def __init__(self, names: tuple[str, ...] | list[str], values: list[Any]) -> None:
        self.names = names
        self.values = values

    def text(self) -> str:
        return json_text(dict(zip(self.names, self.values, strict=True)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonObjectText):
            return self.text() == other.text()
        return isinstance(other, str) and self.text() == other

    def __hash__(self) -> int:
        return hash(self.text())

    def __repr__(self) -> str:
        return self.text()

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as a constructor call: slots state is slow to restore
        return (JsonObjectText, (self.names, self.values))


def _position(index: int, n: int) -> int:
    """``index`` (negative counts from the end) as a position in a sequence of ``n``; IndexError outside."""
    i = index + n if index < 0 else index
    if not 0 <= i < n:
        raise IndexError(f"record {index} of {n}")
    return i


def _listed(other: object) -> list[Any] | None:
    """``other`` as a list if it is a sequence other than text (what a sequence of records or of row values
    compares equal to), else None (the comparison is not ours: ``NotImplemented``)."""
    if not isinstance(other, Sequence) or isinstance(other, str | bytes):
        return None
    return list(other)


def _non_finite(values: Iterable[Any]) -> float | None:
    """The first float among ``values`` that JSON cannot carry (NaN or infinite), or None."""
    for value in values:
        if type(value) is float and not math.isfinite(value):
            return value
    return None


class NumberedIds(Sequence[str]):
    """A request's row ids, ``f"{prefix}-{i}"`` for i in 0..count-1, made when read; pickled as the prefix
    and the count."""

    __slots__ = ("prefix", "count")

    def __init__(self, prefix: str, count: int) -> None:
        self.prefix = prefix
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [f"{self.prefix}-{i}" for i in range(self.count)[index]]
        return f"{self.prefix}-{_position(index, self.count)}"

    def __iter__(self) -> Iterator[str]:
        prefix = self.prefix
        return (f"{prefix}-{i}" for i in range(self.count))

    def __eq__(self, other: object) -> bool:
        listed = _listed(other)
        return NotImplemented if listed is None else list(self) == listed

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NumberedIds({self.prefix!r}, {self.count})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (NumberedIds, (self.prefix, self.count))


def _json_loads(text: str) -> Any:
    return _orjson.loads(text) if _orjson is not None else json.loads(text)


class JsonRows(Sequence[list[float]]):
    """A request's validated rows (finite floats) together with their JSON text, ``{key: rows}``, which is
    what the proxy sends the model (``JsonRows.of``); read as the rows. Pickled as the text and the row
    count, and parsed when first read: JSON writes a finite float exactly (its shortest round-trip form), so
    the parsed rows equal the originals. Pickling 100 rows of 30 features this way copies the text (about
    1 µs) instead of writing 3,000 numbers (about 30-60 µs, under the interpreter lock of the process that
    serves the API).

    ``exact``: the text was written by orjson, the encoder of the log lines, so each value's text in it is
    the one ``encode`` writes: ``value_texts`` cuts a row's values out of it, and a row's ``features`` field
    is made without parsing the numbers and writing them again."""

    __slots__ = ("text", "key", "count", "exact", "_rows")

    def __init__(
        self,
        text: str,
        key: str = "instances",
        rows: list[list[float]] | None = None,
        count: int | None = None,
        exact: bool = False,
    ) -> None:
        self.text = text
        self.key = key
        self._rows = rows
        self.count = count if count is not None else len(self.rows)
        self.exact = exact

    @classmethod
    def of(cls, rows: list[list[float]], key: str = "instances") -> JsonRows:
        """The compact JSON text ``{key: rows}`` of ``rows`` (lists of finite floats), written with orjson
        where it is installed (about 70 µs for 100 rows of 30 floats, against 600-1,300 µs with the standard
        library's encoder). It keeps the text, not ``rows``: a request's log records wait in the proxy's
        buffer until they are sent, and 100 parsed rows of 30 features are about 100 KB of small objects
        against 12-60 KB of text. A full local buffer of 100,000 such records holds 17-64 MB (121-168 MB
        with the rows kept: ``benchmarks/log_buffer_memory.py``), and the sender thread does not free rows
        in bulk, a batch at a time, under the interpreter lock the request threads need (about 0.6 ms a
        batch of 24 requests)."""
        if _orjson is not None:
            return cls(_orjson.dumps({key: rows}).decode(), key, None, len(rows), exact=True)
        return cls(json.dumps({key: rows}, separators=(",", ":")), key, None, len(rows))

    @property
    def rows(self) -> list[list[float]]:
        if self._rows is None:
            self._rows = _json_loads(self.text)[self.key]
        return self._rows

    def value_texts(self) -> list[list[bytes]] | None:
        """Each row's values as the JSON text ``encode`` writes for them, cut from the text without parsing
        it; None unless the text is orjson's (``exact``) and has the shape of rows of numbers."""
        if not self.exact or _orjson is None:
            return None
        text = self.text.encode()
        prefix = b"{" + _orjson.dumps(self.key) + b":["
        if not (text.startswith(prefix) and text.endswith(b"]}")):
            return None
        inner = text[len(prefix) : -2]
        if not inner:
            return [] if self.count == 0 else None
        if not (inner.startswith(b"[") and inner.endswith(b"]")) or b'"' in inner or b"{" in inner:
            return None
        # one "[" and one "]" per row and no deeper lists: the counts over the whole text say it, without a
        # look at each row
        if inner.count(b"[") != self.count or inner.count(b"]") != self.count:
            return None
        rows = inner[1:-1].split(b"],[")
        if len(rows) != self.count:
            return None
        return [r.split(b",") if r else [] for r in rows]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[list[float]]:
        return iter(self.rows)

    def __eq__(self, other: object) -> bool:
        listed = _listed(other)
        return NotImplemented if listed is None else self.rows == listed

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JsonRows({self.rows!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (JsonRows, (self.text, self.key, None, self.count, self.exact))


class _FeaturesEncoder:
    """A row's ``features`` field as ``encode`` writes it (the JSON text of ``{name: value}``, as a JSON
    string): ``dumps(dumps(dict(zip(names, row))).decode())``. JSON escapes a string character by character,
    so that is the escaped pieces of the object one after another, and a number needs no escaping: for a row
    of numbers the field is a template of the escaped names with each value's JSON text put in (``values``:
    from the row's own JSON text, ``JsonRows.value_texts``). Any other row (text, nested values, repeated
    names) takes the general path; a row of another length raises ValueError, as ``zip(strict=True)``."""

    def __init__(self, names: tuple[str, ...]) -> None:
        assert _orjson is not None
        dumps = _orjson.dumps
        self.names = names
        self.n = len(names)
        self.template: bytes | None = None
        # the template only for distinct text names (JSON object keys are strings: any other name takes the
        # general path, where encoding refuses it as encode does)
        if names and len(set(names)) == len(names) and all(type(n) is str for n in names):
            pieces = [
                (b'"{' if i == 0 else b",") + dumps(dumps(n).decode())[1:-1] + b":"
                for i, n in enumerate(names)
            ]
            self.template = b"".join(p.replace(b"%", b"%%") + b"%b" for p in pieces) + b'}"'

    def general(self, row: Sequence[Any]) -> bytes:
        assert _orjson is not None
        return _orjson.dumps(JsonObjectText(self.names, list(row)).text())  # type: ignore[no-any-return]

    def values(self, texts: list[bytes]) -> bytes:
        """The field of a row of numbers given as their JSON texts (``JsonRows.value_texts``)."""
        if len(texts) != self.n:
            raise ValueError(f"a row of {len(texts)} values for {self.n} features")
        if self.template is None:
            return self.general([_orjson.loads(t) for t in texts])  # type: ignore[union-attr]
        return self.template % tuple(texts)

    def row(self, row: Sequence[Any]) -> bytes:
        if len(row) != self.n:
            raise ValueError(f"a row of {len(row)} values for {self.n} features")
        if self.template is None:
            return self.general(row)
        inner = _orjson.dumps(row)  # type: ignore[union-attr]
        if b'"' in inner or b"{" in inner or b"[" in inner[1:]:
            return self.general(row)
        return self.template % tuple(inner[1:-1].split(b","))


@functools.lru_cache(maxsize=64)
def _features_encoder(names: tuple[str, ...]) -> _FeaturesEncoder:
    return _FeaturesEncoder(names)


class PredictionRecords(Sequence[dict[str, Any]]):
    """The prediction log records of one request, kept as columns until they are encoded: the fields every
    row of the request shares once (``head``: the fields before ``features``, ``tail``: those after
    ``label``), and per row its ``request_id``, feature values, ``score`` and ``label``.

    It reads as a sequence of record dicts (``records[i]``, iteration, slices), each with the keys in the
    order of the log's columns, so ``FirehoseLogger``, the log fallback and the staged object see exactly the
    records of the dicts it stands for. Handing a request's rows over as one object instead of one dict per
    row keeps the proxy's work before the response, and pickling them to the local cloud's log delivery
    process, at a fraction of the cost (pickling 100-row requests' records: about 0.6 µs a record, against
    1.7 µs as dicts; with the ids as ``NumberedIds`` and the rows as ``JsonRows``, as the proxy hands them
    over, about 0.1 µs). Any sequences will do for the per-row columns."""

    __slots__ = ("head", "request_ids", "names", "rows", "scores", "labels", "tail")

    def __init__(
        self,
        head: dict[str, Any],
        request_ids: Sequence[str],
        names: tuple[str, ...] | list[str],
        rows: Sequence[list[Any]],
        scores: Sequence[float],
        labels: Sequence[int],
        tail: dict[str, Any],
    ) -> None:
        if not len(request_ids) == len(rows) == len(scores) == len(labels):
            raise ValueError(
                f"columns of different lengths: {len(request_ids)} request_ids, {len(rows)} rows, "
                f"{len(scores)} scores, {len(labels)} labels"
            )
        self.head = head
        self.request_ids = request_ids
        self.names = names
        self.rows = rows
        self.scores = scores
        self.labels = labels
        self.tail = tail

    def __len__(self) -> int:
        return len(self.request_ids)

    def _record(self, i: int) -> dict[str, Any]:
        return {
            "request_id": self.request_ids[i],
            **self.head,
            "features": JsonObjectText(self.names, self.rows[i]),
            "score": self.scores[i],
            "label": self.labels[i],
            **self.tail,
        }

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return PredictionRecords(
                self.head,
                self.request_ids[index],
                self.names,
                self.rows[index],
                self.scores[index],
                self.labels[index],
                self.tail,
            )
        return self._record(_position(index, len(self.request_ids)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._record(i) for i in range(len(self.request_ids)))

    def lines(self) -> list[bytes] | None:
        """``encode`` of every record, made from the columns without building the records' dicts (the
        shared fields are encoded once); None when that shortcut does not apply (no orjson, a key given
        twice, a value ``encode`` refuses), and then ``encode`` decides record by record."""
        if _orjson is None:
            return None
        head, tail = self.head, self.tail
        if set(head) & set(tail) or (set(head) | set(tail)) & {"request_id", "features", "score", "label"}:
            return None
        try:
            if _non_finite((*head.values(), *tail.values(), *self.scores, *self.labels)) is not None:
                return None
            dumps, names = _orjson.dumps, self.names
            middle = b"," + dumps(head)[1:-1] if head else b""
            middle += b',"features":'
            end = b"," + dumps(tail)[1:-1] + b"}\n" if tail else b"}\n"
            encoder = _features_encoder(tuple(names))
            texts = self.rows.value_texts() if isinstance(self.rows, JsonRows) else None
            features = (
                list(map(encoder.values, texts)) if texts is not None else list(map(encoder.row, self.rows))
            )
            # each line is one bytes formatting of its four varying pieces into the request's template (the
            # numbers' texts made for the whole column at once), instead of nine concatenations and three
            # encoder calls per line
            line = (
                b'{"request_id":%b'
                + middle.replace(b"%", b"%%")
                + b'%b,"score":%b,"label":%b'
                + end.replace(b"%", b"%%")
            )
            scores, labels = _number_texts(self.scores), _number_texts(self.labels)
            return [line % pieces for pieces in zip(self._id_texts(), features, scores, labels, strict=True)]
        except (TypeError, ValueError):
            return None

    def _id_texts(self) -> list[bytes]:
        """Each row's ``request_id`` as ``encode`` writes it (a JSON string)."""
        assert _orjson is not None
        ids = self.request_ids
        if isinstance(ids, NumberedIds):  # "prefix-i": the escaped prefix once, then each number
            quoted = _orjson.dumps(f"{ids.prefix}-")[:-1]
            return [b'%b%d"' % (quoted, i) for i in range(ids.count)]
        return list(map(_orjson.dumps, ids))

    def __eq__(self, other: object) -> bool:
        listed = _listed(other)
        if listed is None:
            return NotImplemented
        return len(self) == len(listed) and all(a == b for a, b in zip(self, listed, strict=True))

    __hash__ = None  # type: ignore[assignment]  # a sequence of dicts is not hashable, like a list of them

    def __repr__(self) -> str:
        return f"PredictionRecords({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as columns: a few objects, not one dict per row
        return (
            PredictionRecords,
            (self.head, self.request_ids, self.names, self.rows, self.scores, self.labels, self.tail),
        )


class RecordBatch(Sequence[dict[str, Any]]):
    """Several sequences of records (``groups``: lists of dicts, ``PredictionRecords``) read as one, in
    order, without copying them into one list; pickled as its groups."""

    __slots__ = ("groups", "_ends")

    def __init__(self, groups: list[Sequence[dict[str, Any]]]) -> None:
        self.groups = groups
        ends: list[int] = []
        total = 0
        for group in groups:
            total += len(group)
            ends.append(total)
        self._ends = ends

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        i = _position(index, len(self))
        k = bisect.bisect_right(self._ends, i)
        return self.groups[k][i - (self._ends[k - 1] if k else 0)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for group in self.groups:
            yield from group

    def __repr__(self) -> str:
        return f"RecordBatch({self.groups!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RecordBatch, (self.groups,))


_PLAIN_NUMBERS = frozenset((int, float))  # types, not isinstance: a bool is an int and writes as true/false


def _number_texts(values: Sequence[Any]) -> list[bytes]:
    """Each value's JSON text as ``encode`` writes it. A column of plain numbers (ints, floats; not bools) is
    written as one JSON list and cut at its commas (a number's text has none, and orjson writes a number in a
    list as it writes it alone); any other column value by value."""
    assert _orjson is not None
    if set(map(type, values)) <= _PLAIN_NUMBERS:
        inner = _orjson.dumps(list(values))[1:-1]
        return inner.split(b",") if inner else []
    return list(map(_orjson.dumps, values))


def _default(obj: Any) -> Any:
    if isinstance(obj, JsonObjectText):
        return obj.text()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _log_default(obj: Any) -> Any:
    return obj.text() if isinstance(obj, JsonObjectText) else str(obj)


def log_json(obj: dict[str, Any]) -> None:
    """One structured log line on stdout (Lambda sends stdout lines to CloudWatch Logs as they are)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=_log_default) + "\n")
    sys.stdout.flush()


def encode(record: dict[str, Any]) -> bytes:
    """A record as one line of Firehose data: compact JSON, newline-terminated. Records are flat (nested
    data such as ``features`` is JSON text, or a ``JsonObjectText`` written as its text); a NaN or infinite
    number is refused (ValueError), as JSON has no such values."""
    if _orjson is None:
        return (json.dumps(record, separators=(",", ":"), allow_nan=False, default=_default) + "\n").encode()
    bad = _non_finite(record.values())  # orjson would write null for them
    if bad is not None:
        raise ValueError(f"Out of range float values are not JSON compliant: {bad!r}")
    return _orjson.dumps(record, option=_orjson.OPT_APPEND_NEWLINE, default=_default)


def json_text(value: Any) -> str:
    """Compact JSON text of a value (a record's ``features``), with the same encoder as ``encode``."""
    if _orjson is None:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return _orjson.dumps(value).decode()


def encode_all(records: Sequence[dict[str, Any]]) -> Iterator[bytes | Exception]:
    """``encode`` of each record, in order, with the exception ``encode`` raised in place of a record it
    refuses; a request's ``PredictionRecords`` are encoded from their columns (``lines``)."""
    groups = records.groups if isinstance(records, RecordBatch) else [records]
    for group in groups:
        lines = group.lines() if isinstance(group, PredictionRecords) else None
        if lines is not None:
            yield from lines
            continue
        for record in group:
            try:
                yield encode(record)
            except (TypeError, ValueError) as exc:
                yield exc


def pack(
    lines: Iterable[tuple[int, bytes]], max_bytes: int = MAX_RECORD_BYTES
) -> Iterator[tuple[list[int], bytes]]:
    """Concatenate (index, line) items into Firehose records of at most ``max_bytes`` each (a line longer than
    that travels alone); yields (indices of the lines, data)."""
    indices: list[int] = []
    parts: list[bytes] = []
    size = 0
    for i, line in lines:
        if parts and size + len(line) > max_bytes:
            yield indices, b"".join(parts)
            indices, parts, size = [], [], 0
        indices.append(i)
        parts.append(line)
        size += len(line)
    if parts:
        yield indices, b"".join(parts)


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
    """Sends records to one delivery stream: packing, batching, bounded retries of failed entries, log
    fallback. ``pack_bytes``: the most bytes of log records in one Firehose record (1 sends each alone)."""

    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        pack_bytes: int = MAX_RECORD_BYTES,
        max_retries: int = 2,
        backoff_seconds: float = 0.05,
        time_budget_seconds: float = 3.0,
        emit: Callable[[dict[str, Any]], None] = log_json,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.stream_name = stream_name
        self.pack_bytes = min(pack_bytes, MAX_RECORD_BYTES)
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.time_budget_seconds = time_budget_seconds
        self.emit = emit
        self.sleep = sleep
        self.calls = 0  # PutRecordBatch calls made by this logger (benchmarks read it)

    def put(self, records: Sequence[dict[str, Any]]) -> DeliveryResult:
        """Deliver ``records`` (a list of dicts, ``PredictionRecords``, a ``RecordBatch``); never raises.
        Undelivered records go to the log (and the metric)."""
        result = DeliveryResult()
        if not records:
            return result
        try:
            encoded: list[tuple[int, bytes]] = []
            for i, data in enumerate(encode_all(records)):
                if isinstance(data, Exception):
                    self._undelivered(records[i], f"unencodable: {data}", result)
                    continue
                if len(data) > MAX_RECORD_BYTES:
                    self._undelivered(records[i], f"record is {len(data)} bytes > {MAX_RECORD_BYTES}", result)
                    continue
                encoded.append((i, data))
            packed = list(pack(encoded, self.pack_bytes))
            for batch in batches((k, data) for k, (_, data) in enumerate(packed)):
                failed = dict(self._send_with_retries(batch, result))
                for k, _ in batch:
                    if k in failed:
                        for i in packed[k][0]:
                            self._undelivered(records[i], failed[k], result)
                    else:
                        result.delivered += len(packed[k][0])
        except Exception as exc:  # noqa: BLE001 - logging must never fail the prediction
            self.emit({"level": "ERROR", "message": "prediction logging failed", "error": repr(exc)})
        return result

    def _send_with_retries(
        self, batch: list[tuple[int, bytes]], result: DeliveryResult
    ) -> list[tuple[int, str]]:
        """Send (id, data) Firehose records, retrying the refused ones; returns (id, error) of those that
        were still not accepted."""
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
                return []
            still: list[tuple[int, bytes]] = []
            for (i, data), r in zip(pending, responses, strict=False):
                if r.get("ErrorCode"):
                    errors[i] = f"{r.get('ErrorCode')}: {r.get('ErrorMessage', '')}"
                    still.append((i, data))
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
        count_undelivered(self.stream_name, 1)
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
