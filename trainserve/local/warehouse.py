"""The local warehouse: a DuckDB file loaded from Firehose's S3 staging objects the way COPY loads Redshift.

- Tables and views come from the same ``lambdas/warehouse_setup/schema.sql`` the Redshift custom resource runs.
- ``LocalWarehouse.load_staged`` loads each new staging object once: newline-delimited JSON objects,
  columns matched by name (``COPY ... JSON 'auto'``), gzip-aware. An object is loaded whole or not at all
  (like a COPY with ``MAXERROR 0``, which is what Firehose runs): an object with a bad record is recorded in
  ``stl_load_errors`` (key, line, column, error, the raw line) and in ``_staged_objects`` with status
  ``error``, and so is one that cannot be read at all (a corrupt or truncated gzip object: one error, with no
  line); its records stay in S3, nothing is dropped silently, and other objects still load. A failed object
  is not tried again at every cycle, only once it is put again under its key (another ETag or LastModified):
  that is how one is replayed. Firehose delivers at least once, so duplicates are expected: read through
  ``prediction_log_dedup`` and ``prediction_feedback_dedup``.
- De-duplication happens when a batch loads, not when a query runs. On Redshift the ``*_dedup`` objects are
  the views of schema.sql (``ROW_NUMBER()`` over the whole table at every read). Here they are tables of
  the same name and columns. The loader merges each new batch into them in the transaction that loads it
  (``DEDUP``: the earliest delivery of a prediction is kept, the latest outcome per request replaces an
  older one), so they always hold exactly the rows the views would return. The raw tables keep every
  delivery, duplicates included, as COPY loads them. This is the local warehouse's one difference from
  Redshift's layout, and it is why a report over 10^7 rows does not re-sort them at every read
  (``benchmarks/report.py``). ``tests/local/test_warehouse.py`` checks the tables against the views.

Concurrency (DuckDB allows one writing PROCESS per file, and a read-only connection from another process
fails while the writer holds the file): the daemon's loader opens the file only for the length of one
load cycle (a few milliseconds every ~2 s) and closes it; every reader — the CLI, the report, the monitor —
uses ``connect_read(path)`` / ``query(path, sql)``, which open read-only and retry for a few seconds on a
lock conflict, and close at once. A reader that holds the file makes the loader skip that cycle (it retries
on the next one). Inside the daemon process itself (where a read-only connection to a file open for writing
is refused) ``connect_read`` falls back to a normal connection to the same instance.

Freshness: the loader runs every ~2 s, except while the prediction API is busy (a request in flight more than
a tenth of the last second): then it waits for a quiet moment, at most 60 s after its last load
(``LOAD_MAX_DELAY_SECONDS``, Firehose's buffer interval on AWS), so a saturating load keeps both CPUs for the
API. Code that needs everything answered so far in the warehouse (``benchmarks/prediction_logging.py``) calls
``request_flush(state_dir)``, which never waits for the API: it returns once the loader confirms a load made
after the request. The component's stop makes a final load (the daemon stops the API first), since moto's
Firehose buffer and staging bucket end with the local cloud: at most ``FINAL_LOAD_SECONDS``, and the log
names any staging object left unloaded or failed.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import math
import os
import re
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - requirements.in has it
    _orjson = None  # type: ignore[assignment]

from trainserve import LAMBDAS_DIR
from trainserve.local.component import read_token, request_and_wait, write_token

SCHEMA_FILE = LAMBDAS_DIR / "warehouse_setup" / "schema.sql"
DEFAULT_PREFIXES = {"firehose/predictions/": "prediction_log", "firehose/feedback/": "prediction_feedback"}
LOCK_WAIT_SECONDS = 10.0
LOAD_INTERVAL_SECONDS = 2.0
# While the prediction API is busy (a request in flight for more than API_BUSY_FRACTION of the last
# API_BUSY_WINDOW_SECONDS: low, so a load does not start in the first moments of a burst), a periodic load
# waits, up to LOAD_MAX_DELAY_SECONDS after the last one: Firehose's buffer interval in the warehouse stack
# (``stacks.warehouse_stack.FIREHOSE_BUFFER_SECONDS``), so rows land no later than on AWS. A flush request
# (``request_flush``) never waits. On AWS COPY runs on Redshift; here loading (about 12 µs of CPU a log
# record) shares the API's CPUs, and under a saturating 100-row load it was a third of logging's CPU
# (``benchmarks/prediction_logging.py``).
LOAD_MAX_DELAY_SECONDS = 60.0
# staging objects loaded in one transaction, at most (at least one object): what a load holds in memory
LOAD_CHUNK_BYTES = 128 * 1024 * 1024
API_BUSY_FRACTION = 0.1
API_BUSY_WINDOW_SECONDS = 1.0
# the loader process's niceness (the lowest): below the API, the runtime and the model servers
BACKGROUND_NICE = 19
FLUSH_REQUEST = "warehouse.flush"  # in the state dir: a token written by request_flush()
FLUSH_DONE = "warehouse.flushed"  # the loader writes the token back once it has loaded after the request
FLUSH_POLL_SECONDS = 0.2
# The local staging bucket's lifecycle rule: a staging object is deleted this long after it loaded (on AWS the
# staging bucket expires objects after 30 days, ``stacks.data_stack.STAGING_EXPIRY_DAYS``). Locally the rows
# are in the warehouse by then, and staging objects would otherwise pile up in the local cloud (about 1 GB a
# minute of 100-row requests at full rate). An object that failed to load is kept, for replay.
STAGING_RETENTION_SECONDS = 600.0
# The most the loader's stop waits for its final load (``WarehouseComponent.stop``): moto keeps the local
# Firehose's buffer and the staging bucket in memory, so what is not loaded by then ends with the local cloud
# (the log names it). About 12 µs a log record: some 2 million records, more than a minute of the API's full
# rate, which is the most that waits for a load (``LOAD_MAX_DELAY_SECONDS``).
FINAL_LOAD_SECONDS = 30.0

# _staged_objects: one row per staging key, its latest attempt: status "loaded" (never loaded again) or
# "error" (tried again once the object changes: another ETag or LastModified than the failed attempt read).
# etag and last_modified were added later: a file without them gains them (NULL for the rows it has).
_BOOKKEEPING = (
    """CREATE TABLE IF NOT EXISTS _staged_objects (
        bucket VARCHAR NOT NULL, key VARCHAR NOT NULL, table_name VARCHAR NOT NULL, status VARCHAR NOT NULL,
        rows_loaded INTEGER NOT NULL, loaded_at TIMESTAMP NOT NULL)""",
    "ALTER TABLE _staged_objects ADD COLUMN IF NOT EXISTS etag VARCHAR",
    "ALTER TABLE _staged_objects ADD COLUMN IF NOT EXISTS last_modified TIMESTAMP",
    """CREATE TABLE IF NOT EXISTS stl_load_errors (
        bucket VARCHAR NOT NULL, key VARCHAR NOT NULL, table_name VARCHAR NOT NULL, line_number INTEGER,
        colname VARCHAR, err_reason VARCHAR NOT NULL, raw_line VARCHAR, starttime TIMESTAMP NOT NULL)""",
)
_STAGED_COLUMNS = "bucket, key, table_name, status, rows_loaded, loaded_at, etag, last_modified"
# raw table -> (its de-duplicated table, which delivery wins: ORDER BY event_time ASC = first, DESC = latest);
# the same rule as the views of the same names in schema.sql
DEDUP = {
    "prediction_log": ("prediction_log_dedup", "ASC"),
    "prediction_feedback": ("prediction_feedback_dedup", "DESC"),
}
_VIEW = re.compile(r"CREATE (?:OR REPLACE )?VIEW (\w+)", re.I)
_COLUMN = re.compile(
    r"^\s*(\w+)\s+(VARCHAR|INTEGER|DOUBLE PRECISION|TIMESTAMP)(?:\((\d+)\))?(\s+NOT NULL)?", re.I
)
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.I)


def _statements() -> list[str]:
    import warehouse_setup_handler  # lambdas/warehouse_setup/ (on sys.path via trainserve)

    return warehouse_setup_handler.load_statements(SCHEMA_FILE)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # VARCHAR | INTEGER | DOUBLE PRECISION | TIMESTAMP
    length: int | None
    not_null: bool


def table_columns(statements: Sequence[str]) -> dict[str, list[Column]]:
    """Table -> columns, read from the CREATE TABLE statements of schema.sql (one source of truth)."""
    out: dict[str, list[Column]] = {}
    for s in statements:
        m = _TABLE.search(s)
        if not m:
            continue
        cols = []
        for line in s[m.end() :].splitlines():
            c = _COLUMN.match(line)
            if c:
                cols.append(
                    Column(
                        c.group(1).lower(),
                        c.group(2).upper(),
                        int(c.group(3)) if c.group(3) else None,
                        bool(c.group(4)),
                    )
                )
        out[m.group(1).lower()] = cols
    return out


class RecordError(ValueError):
    def __init__(self, column: str | None, reason: str):
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _convert(col: Column, value: Any) -> Any:
    if value is None:
        if col.not_null:
            raise RecordError(col.name, f"missing value for NOT NULL column {col.name}")
        return None
    if col.kind == "VARCHAR":
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if col.length is not None and len(text.encode()) > col.length:
            raise RecordError(
                col.name, f"value of {len(text.encode())} bytes is longer than VARCHAR({col.length})"
            )
        return text
    if col.kind == "INTEGER":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise RecordError(col.name, f"invalid INTEGER {value!r}")
        if not -(2**31) <= int(value) < 2**31:
            raise RecordError(col.name, f"INTEGER out of range {value!r}")
        return int(value)
    if col.kind == "DOUBLE PRECISION":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RecordError(col.name, f"invalid DOUBLE PRECISION {value!r}")
        return float(value)
    if col.kind == "TIMESTAMP":
        if not isinstance(value, str):
            raise RecordError(col.name, f"invalid TIMESTAMP {value!r}")
        try:
            ts = datetime.fromisoformat(value.strip())
        except ValueError:
            raise RecordError(col.name, f"invalid TIMESTAMP {value!r}") from None
        return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts
    raise RecordError(
        col.name, f"unsupported column type {col.kind}"
    )  # pragma: no cover - schema parse guards


def _converter(col: Column) -> Any:
    """``_convert`` for one column, with a fast path for the value types Firehose records carry (a str for
    VARCHAR, an int for INTEGER, a finite float for DOUBLE PRECISION) that returns what ``_convert`` returns;
    anything else goes through ``_convert`` itself."""
    if col.kind == "VARCHAR":
        limit = col.length

        def convert(value: Any) -> Any:
            # UTF-8 takes at most 4 bytes a character: under limit / 4 characters, the bytes fit too
            if type(value) is str and (limit is None or len(value) * 4 <= limit):
                return value
            return _convert(col, value)

    elif col.kind == "INTEGER":

        def convert(value: Any) -> Any:
            if type(value) is int and -(2**31) <= value < 2**31:
                return value
            return _convert(col, value)

    elif col.kind == "DOUBLE PRECISION":

        def convert(value: Any) -> Any:
            if type(value) is float and math.isfinite(value):
                return value
            return _convert(col, value)

    else:

        def convert(value: Any) -> Any:
            return _convert(col, value)

    return convert


def _loads(text: str) -> Any:
    """One JSON value; orjson where installed (it refuses NaN and Infinity, which are not JSON either)."""
    return _orjson.loads(text) if _orjson is not None else json.loads(text)


class ObjectError(ValueError):
    """A staging object that cannot be read as a whole (a corrupt or truncated gzip object): COPY records it in
    ``stl_load_errors`` and loads nothing of it."""


# A load error: (line number, column, reason, raw line); line number and raw line are None for an error of
# the object as a whole (``ObjectError``).
LoadError = tuple[int | None, str | None, str, str | None]


def _decompressed(data: bytes) -> bytes:
    """A staging object's data, gunzipped when it is gzip (COPY's GZIP); ``ObjectError`` when it cannot be
    (not gzip after all, truncated, a bad checksum): then no record of it can be trusted."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ObjectError(f"cannot decompress the gzip object: {type(exc).__name__}: {exc}") from None


def _lines(data: bytes) -> list[str]:
    """A staging object's records (decompressed already): one per line (COPY's JSON records are
    newline-separated; a JSON string may hold U+2028 or a form feed, which are not line ends here)."""
    return data.decode("utf-8", errors="replace").split("\n")


def parse_object(data: bytes, columns: Sequence[Column]) -> tuple[list[tuple], list[LoadError]]:
    """A staging object -> (rows in column order, errors as (line number, column, reason, raw line)); an
    object that cannot be read at all (``ObjectError``) has one error, with no line, and no rows.

    The reference for what a record loads as; ``arrow_batch`` takes a faster path to the same values."""
    try:
        plain = _decompressed(data)
    except ObjectError as exc:
        return [], [(None, None, str(exc), None)]
    return _parse_records(plain, columns)


def _parse_records(data: bytes, columns: Sequence[Column]) -> tuple[list[tuple], list[LoadError]]:
    """``parse_object`` of an object's decompressed data."""
    rows: list[tuple] = []
    errors: list[LoadError] = []
    converters = [(c.name, _converter(c)) for c in columns]
    for n, raw in enumerate(_lines(data), start=1):
        if not raw.strip():
            continue
        try:
            obj = _loads(raw)
            if not isinstance(obj, dict):
                raise RecordError(None, "a line is not a JSON object")
            lowered = {str(k).lower(): v for k, v in obj.items()}
            rows.append(tuple([convert(lowered.get(name)) for name, convert in converters]))
        except RecordError as exc:
            errors.append((n, exc.column, exc.reason, raw[:4096]))
        except ValueError as exc:
            errors.append((n, None, f"invalid JSON: {exc}", raw[:4096]))
    return rows, errors


_ARROW_TYPES = {
    "VARCHAR": "string",
    "INTEGER": "int32",
    "DOUBLE PRECISION": "float64",
    "TIMESTAMP": "timestamp[us]",
}
# the timestamps the fast path takes, one per line (naive ISO 8601, as the proxy writes them, years 0001 to
# 9999, datetime's range): for these, Arrow's cast and ``datetime.fromisoformat`` (``_convert``) agree, and
# Arrow refuses what is not a date or time (month 13, 23:59:60). Year 0000 is left to ``_convert``, which
# refuses it: Arrow's cast takes it (DuckDB then holds a 'BC' timestamp that Python cannot read back).
_PLAIN_TIMESTAMPS = re.compile(r"(?:(?!0000)\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d{1,6})?\n)*")


def _fast_column(col: Column, values: list[Any]) -> Any:
    """``values`` as an Arrow array when each is of the type Firehose records carry for ``col`` and within its
    limits (then it is what ``_convert`` returns for each); None when any value needs ``_convert``."""
    import pyarrow as pa

    types = set(map(type, values))
    present = values
    if type(None) in types:
        if col.not_null:
            return None
        types.discard(type(None))
        present = [v for v in values if v is not None]
    if col.kind in ("VARCHAR", "TIMESTAMP"):
        if types - {str}:
            return None
        if col.kind == "TIMESTAMP":
            if not _PLAIN_TIMESTAMPS.fullmatch("".join(v + "\n" for v in present)):
                return None
            try:
                return pa.array(values, pa.string()).cast(pa.timestamp("us"))
            except pa.ArrowInvalid:  # not a date (2026-02-30): _convert says why
                return None
        # UTF-8 takes at most 4 bytes a character: under limit / 4 characters, the bytes fit too
        if (
            col.length is not None
            and present
            and max(map(len, present)) * 4 > col.length
            and max(len(v.encode()) for v in present) > col.length
        ):
            return None
        return pa.array(values, pa.string())
    if col.kind == "INTEGER":
        if types - {int} or (present and not (min(present) >= -(2**31) and max(present) < 2**31)):
            return None
        return pa.array(values, pa.int32())
    if col.kind == "DOUBLE PRECISION":
        if types - {float, int} or not all(map(math.isfinite, present)):
            return None
        if int in types:
            values = [v if v is None else float(v) for v in values]
        return pa.array(values, pa.float64())
    return None  # pragma: no cover - schema parse guards


def arrow_batch(data: bytes, columns: Sequence[Column]) -> tuple[Any, list[LoadError]]:
    """A staging object -> (an Arrow table of its rows, errors as ``parse_object`` gives them).

    Records as the proxy writes them (compact JSON objects, one per line, lowercase keys, values of the
    columns' types) take a fast path: whole columns are checked and converted at once, with the results
    ``parse_object`` gives. Any other object (a blank line, a key in another case, a value that needs
    converting or is wrong) goes through ``parse_object`` itself, which decides every value and error."""
    import pyarrow as pa

    try:
        data = _decompressed(data)
    except ObjectError as exc:
        return _rows_table([], columns), [(None, None, str(exc), None)]
    fast = None
    if _orjson is not None:
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        try:
            objs = list(map(_orjson.loads, lines))  # a blank line, invalid UTF-8 or JSON: the slow path
        except _orjson.JSONDecodeError:
            objs = None
        if objs is not None and not set(map(type, objs)) - {dict}:
            names = {c.name for c in columns}
            keys = set().union(*objs)
            if not any(k not in names and k.lower() in names for k in keys):
                fast = {}
                for c in columns:
                    array = _fast_column(c, [o.get(c.name) for o in objs])
                    if array is None:
                        fast = None
                        break
                    fast[c.name] = array
    if fast is not None:
        return pa.table(fast), []
    rows, errors = _parse_records(data, columns)  # decompressed already
    return _rows_table(rows, columns), errors


def _rows_table(rows: list[tuple], columns: Sequence[Column]) -> Any:
    import pyarrow as pa

    return pa.table(
        {c.name: pa.array([r[i] for r in rows], type=_ARROW_TYPES[c.kind]) for i, c in enumerate(columns)}
    )


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text


def _connect_retrying(path: str | Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.ConnectionException as exc:
            if "different configuration" not in str(exc):
                raise
            if read_only:
                return duckdb.connect(str(path))  # this process already holds it: share that instance
            if time.monotonic() > deadline:  # a read-only instance of this process holds it: wait
                raise
        except duckdb.IOException as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


@contextlib.contextmanager
def connect_read(path: str | Path, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read-only connection (retries while the loader holds the file). Close it soon."""
    con = _connect_retrying(path, read_only=True, timeout=timeout)
    try:
        yield con
    finally:
        con.close()


def query(
    path: str | Path, sql: str, params: Sequence[Any] | None = None, timeout: float = LOCK_WAIT_SECONDS
) -> tuple[list[str], list[tuple]]:
    """Run one read query on the local warehouse: (column names, rows)."""
    with connect_read(path, timeout) as con:
        cur = con.execute(sql, params or [])
        return [d[0] for d in cur.description], cur.fetchall()


def _relation_type(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    row = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
        [name],
    ).fetchone()
    return row[0] if row else None


def _winners_sql(source: str, order: str) -> str:
    return (
        f"SELECT * EXCLUDE (_rn) FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY request_id"
        f" ORDER BY event_time {order}) AS _rn FROM {source} s) w WHERE _rn = 1"
    )


def create_dedup_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Make each ``*_dedup`` a table (``DEDUP``) filled from its raw table; a view of that name (from schema.sql,
    or a warehouse file written by an earlier version) is replaced. Run after the raw tables exist."""
    for raw, (dedup, order) in DEDUP.items():
        kind = _relation_type(con, dedup)
        if kind == "BASE TABLE":
            continue
        if kind is not None:
            con.execute(f"DROP VIEW {dedup}")
        con.execute(f"CREATE TABLE {dedup} AS {_winners_sql(raw, order)}")


def merge_dedup(con: duckdb.DuckDBPyConnection, raw: str, batch: str) -> None:
    """Merge a batch of rows just added to ``raw`` (``batch``: a table, registered relation or parenthesized
    query with the same columns) into its de-duplicated table: per request_id, the batch's winner replaces
    the stored row only if it wins against it (strictly earlier first delivery, strictly later outcome), and
    is added if the request_id is new. Run it in the transaction that inserts the batch.

    The de-duplicated table is read once (its request_id column, joined to the batch's), so a load cycle
    costs one scan of it, not one per statement; the batch's own winners are computed only when the batch
    repeats a request_id, which a Firehose redelivery does and a normal batch does not."""
    dedup, order = DEDUP[raw]
    wins = "<" if order == "ASC" else ">"
    rows, keys = con.execute(f"SELECT count(*), count(DISTINCT request_id) FROM {batch} b").fetchone()
    if not rows:
        return
    source = batch
    if rows != keys:  # the batch's winners, ranked once: the statements below read them twice
        con.execute(f"CREATE OR REPLACE TEMP TABLE _winners AS {_winners_sql(batch, order)}")
        source = "_winners"
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _met AS SELECT d.rowid AS stored_row, m.request_id,"
            f" coalesce(m.event_time {wins} d.event_time, false) AS wins"
            f" FROM {dedup} d JOIN {source} m ON d.request_id = m.request_id"
        )
        (met,) = con.execute("SELECT count(*) FROM _met").fetchone()
        if not met:
            con.execute(f"INSERT INTO {dedup} SELECT * FROM {source} m")
            return
        con.execute(f"DELETE FROM {dedup} WHERE rowid IN (SELECT stored_row FROM _met WHERE wins)")
        con.execute(
            f"INSERT INTO {dedup} SELECT m.* FROM {source} m WHERE NOT EXISTS"
            f" (SELECT 1 FROM _met WHERE _met.request_id = m.request_id AND NOT _met.wins)"
        )
    finally:
        con.execute("DROP TABLE IF EXISTS _met")
        con.execute("DROP TABLE IF EXISTS _winners")


class LocalWarehouse:
    """The DuckDB warehouse file; every method opens the file for its own duration only."""

    def __init__(self, path: str | Path, *, lock_wait: float = LOCK_WAIT_SECONDS, threads: int | None = None):
        """``threads``: DuckDB threads for writes (None: DuckDB's default, one per CPU); the loader process
        uses 1, as its batches are small and the CPUs serve predictions."""
        self.path = Path(path)
        self.lock_wait = lock_wait
        self.threads = threads
        self.statements = _statements()
        self.columns = table_columns(self.statements)
        self._lock = threading.Lock()  # one writer per process
        # bucket -> staging key -> its latest attempt (``_Attempt``: loaded, or failed on a version of the
        # object); read from the file once, then kept up to date by this instance's loads (a key another
        # writer loaded is skipped in the load's transaction all the same)
        self._loaded: dict[str, dict[str, _Attempt]] = {}
        self.expired_objects = 0  # staging objects this instance deleted (``retention`` of load_staged)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dedup_names = {d for d, _ in DEDUP.values()}
        with self._write() as con:
            for s in self.statements:
                view = _VIEW.search(s)
                if view and view.group(1).lower() in dedup_names:
                    continue  # a table here, kept by the loader (module docstring)
                con.execute(s)
            create_dedup_tables(con)
            for s in _BOOKKEEPING:
                con.execute(s)

    @contextlib.contextmanager
    def _write(self, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            con = _connect_retrying(
                self.path, read_only=False, timeout=self.lock_wait if timeout is None else timeout
            )
            try:
                if self.threads:
                    con.execute(f"SET threads = {int(self.threads)}")
                yield con
            finally:
                con.close()

    def load_staged(
        self,
        s3_client: Any,
        bucket: str,
        prefixes: Mapping[str, str] | Sequence[str] = DEFAULT_PREFIXES,
        *,
        lock_wait: float | None = None,
        retention: float | None = None,
    ) -> int:
        """Load every staging object not loaded before; returns the number of rows loaded.

        An object loads whole or not at all. One that cannot be read (a corrupt gzip object) or holds a bad
        record is recorded in ``stl_load_errors`` and ``_staged_objects`` (status ``error``), and the others
        load. A failed object is tried again once it changes (put again under its key, with another ETag or
        LastModified), not at every cycle; a loaded object never loads again.

        ``prefixes``: prefix -> table (or prefixes of ``DEFAULT_PREFIXES``). ``retention``: delete the staging
        objects that loaded more than this many seconds ago (``STAGING_RETENTION_SECONDS``); None keeps them."""
        mapping = (
            dict(prefixes) if isinstance(prefixes, Mapping) else {p: DEFAULT_PREFIXES[p] for p in prefixes}
        )
        listed = _list_staged(s3_client, bucket, mapping)
        if not listed:
            return 0
        done = self._loaded_keys(bucket, lock_wait)
        if retention is not None:
            self._expire(s3_client, bucket, [item.key for item in listed], done, retention)
        todo = [item for item in sorted(listed, key=lambda i: i.key) if _to_load(done.get(item.key), item)]
        loaded = 0
        # Fetch and parse outside the file lock (S3 reads are the slow part), then write the parsed objects
        # in one short transaction, so readers wait milliseconds, not the whole cycle; a transaction takes
        # objects of up to LOAD_CHUNK_BYTES together (at least one), so the memory a cycle holds stays bounded
        # however much waited to load.
        for chunk in _chunks(todo, LOAD_CHUNK_BYTES):
            parsed = []
            for item in chunk:
                data = _fetch(s3_client, bucket, item)
                if data is None:  # changed or gone since the listing: the next cycle lists it again
                    continue
                try:
                    batch, errors = arrow_batch(data, self.columns[item.table])
                except Exception as exc:  # noqa: BLE001 - the object's: recorded, and the others load
                    reason = f"cannot read the object: {type(exc).__name__}: {exc}"
                    batch, errors = None, [(None, None, reason, None)]
                del data
                parsed.append((item.key, item.table, batch, errors, item))
            if parsed:
                with self._write(lock_wait) as con:
                    loaded += self._load_parsed(con, bucket, parsed)
        return loaded

    def _loaded_keys(self, bucket: str, lock_wait: float | None) -> dict[str, _Attempt]:
        if bucket not in self._loaded:
            with self._write(lock_wait) as con:
                self._loaded[bucket] = _read_loaded(con, bucket)
        return self._loaded[bucket]

    def _expire(
        self,
        s3_client: Any,
        bucket: str,
        keys: list[str],
        done: Mapping[str, _Attempt],
        retention: float,
    ) -> None:
        """Delete the listed staging objects that loaded more than ``retention`` seconds ago."""
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=retention)
        old = [
            key
            for key in keys
            if (attempt := done.get(key)) is not None
            and attempt.loaded_at is not None
            and attempt.loaded_at < cutoff
        ]
        for i in range(0, len(old), 1000):  # DeleteObjects takes up to 1,000 keys
            s3_client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in old[i : i + 1000]], "Quiet": True}
            )
        self.expired_objects += len(old)

    def _load_parsed(
        self, con: duckdb.DuckDBPyConnection, bucket: str, parsed: list[tuple[str, str, Any, list, _Listed]]
    ) -> int:
        """Insert the good objects' rows (table by table) and record every object, in one transaction; an
        object with a bad record, or one that could not be read, loads nothing and its errors go to
        ``stl_load_errors`` (COPY MAXERROR 0). An object tried again replaces its earlier attempt's row in
        ``_staged_objects``; ``stl_load_errors`` keeps every attempt's errors, as Redshift's does."""
        now = datetime.now(UTC).replace(tzinfo=None)
        done = _read_loaded(con, bucket)
        self._loaded[bucket] = dict(done)
        by_table: dict[str, list[Any]] = {}
        bookkeeping, error_rows, retried = [], [], []
        total = 0
        for key, table, batch, errors, item in parsed:
            if not _to_load(done.get(key), item):  # another writer did it meanwhile
                continue
            if key in done:
                retried.append((bucket, key))
            if errors:
                error_rows.extend(
                    (bucket, key, table, n, col, reason, raw, now) for n, col, reason, raw in errors
                )
                bookkeeping.append((bucket, key, table, "error", 0, now, item.etag, item.last_modified))
            else:
                by_table.setdefault(table, []).append(batch)
                bookkeeping.append(
                    (bucket, key, table, "loaded", batch.num_rows, now, item.etag, item.last_modified)
                )
                total += batch.num_rows
        if not bookkeeping:
            return 0
        con.execute("BEGIN TRANSACTION")
        try:
            for table, batches in by_table.items():
                _insert_batch(con, table, self.columns[table], batches)
            if error_rows:
                con.executemany("INSERT INTO stl_load_errors VALUES (?, ?, ?, ?, ?, ?, ?, ?)", error_rows)
            if retried:
                con.executemany("DELETE FROM _staged_objects WHERE bucket = ? AND key = ?", retried)
            con.executemany(
                f"INSERT INTO _staged_objects ({_STAGED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                bookkeeping,
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        self._loaded[bucket].update((b[1], _Attempt.of(*b[3:])) for b in bookkeeping)
        return total

    def counts(self) -> dict[str, int]:
        """Rows per table and view, and the number of staging objects loaded / in error."""
        sql = """SELECT
            (SELECT count(*) FROM prediction_log), (SELECT count(*) FROM prediction_log_dedup),
            (SELECT count(*) FROM prediction_feedback), (SELECT count(*) FROM prediction_feedback_dedup),
            (SELECT count(*) FROM _staged_objects WHERE status = 'loaded'),
            (SELECT count(*) FROM _staged_objects WHERE status = 'error')"""
        _, rows = query(self.path, sql, timeout=self.lock_wait)
        names = (
            "prediction_log",
            "prediction_log_dedup",
            "prediction_feedback",
            "prediction_feedback_dedup",
            "objects_loaded",
            "objects_in_error",
        )
        return dict(zip(names, rows[0], strict=True))

    def query(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        return query(self.path, sql, params, timeout=self.lock_wait)


_Item = TypeVar("_Item", bound=tuple[Any, ...])


def _chunks(items: list[_Item], limit: int) -> Iterator[list[_Item]]:
    """``(key, table, size, ...)`` items in order, in consecutive groups of at most ``limit`` bytes (an item
    larger than that makes a group of its own)."""
    group: list[_Item] = []
    total = 0
    for item in items:
        if group and total + item[2] > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += item[2]
    if group:
        yield group


class _Listed(NamedTuple):
    """A staging object as the listing shows it: the version a load reads (``_fetch``) and records."""

    key: str
    table: str
    size: int
    etag: str | None
    last_modified: datetime | None  # naive UTC

    @classmethod
    def of(cls, obj: Mapping[str, Any], table: str) -> _Listed:
        modified = obj.get("LastModified")
        if isinstance(modified, datetime):
            modified = modified.astimezone(UTC).replace(tzinfo=None) if modified.tzinfo else modified
        return cls(obj["Key"], table, int(obj.get("Size", 0)), obj.get("ETag"), modified)


class _Attempt(NamedTuple):
    """A staging key's latest load attempt (a row of ``_staged_objects``)."""

    loaded_at: datetime | None  # when it loaded; None: it failed
    etag: str | None  # the version that failed (or loaded)
    last_modified: datetime | None

    @classmethod
    def of(
        cls, status: str, _rows: int, at: datetime, etag: str | None, modified: datetime | None
    ) -> _Attempt:
        return cls(at if status == "loaded" else None, etag, modified)


def _list_staged(s3_client: Any, bucket: str, prefixes: Mapping[str, str]) -> list[_Listed]:
    """The staging objects under each prefix (prefix -> the table they load into)."""
    listed: list[_Listed] = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for prefix, table in prefixes.items():
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            listed.extend(_Listed.of(obj, table) for obj in page.get("Contents", []))
    return listed


def _to_load(attempt: _Attempt | None, item: _Listed) -> bool:
    """Whether a listed object is to be loaded: never tried, or failed on another version of it (put again
    under its key since: another ETag or LastModified). A loaded key never loads again."""
    if attempt is None:
        return True
    if attempt.loaded_at is not None:
        return False
    return (attempt.etag, attempt.last_modified) != (item.etag, item.last_modified)


def _fetch(s3_client: Any, bucket: str, item: _Listed) -> bytes | None:
    """The object's data, of the version listed (its ETag); None if it changed or went since the listing."""
    from botocore.exceptions import ClientError

    kwargs = {"IfMatch": item.etag} if item.etag else {}
    try:
        data: bytes = s3_client.get_object(Bucket=bucket, Key=item.key, **kwargs)["Body"].read()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("NoSuchKey", "404", "PreconditionFailed", "412"):
            return None
        raise
    return data


def _read_loaded(con: duckdb.DuckDBPyConnection, bucket: str) -> dict[str, _Attempt]:
    """Staging key -> its latest load attempt, from the file."""
    rows = con.execute(
        "SELECT key, status, rows_loaded, loaded_at, etag, last_modified FROM _staged_objects WHERE bucket = ?",
        [bucket],
    ).fetchall()
    return {key: _Attempt.of(*rest) for key, *rest in rows}


def _insert_batch(
    con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[Column], batches: Sequence[Any]
) -> None:
    """Insert Arrow tables of ``table``'s rows (``arrow_batch``) and merge them into its de-duplicated table."""
    import pyarrow as pa

    batch = pa.concat_tables(batches) if len(batches) > 1 else batches[0]
    if not batch.num_rows:
        return
    name = f"_batch_{threading.get_ident()}"
    con.register(name, batch)
    try:
        cols = ", ".join(c.name for c in columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")
        if table in DEDUP:
            merge_dedup(con, table, f"(SELECT {cols} FROM {name})")
    finally:
        con.unregister(name)


# ---------------------------------------------------------------------------------------------- flush


def request_flush(state_dir: str | Path, timeout: float = 15.0) -> bool:
    """Ask the running local cloud's loader to load everything staged so far, and wait until it has.

    For a CLI or demo that wants its latest predictions in the warehouse before reading it (Firehose
    staging happens inside each prediction request locally, so everything answered before this call is
    staged). Returns False if the loader did not confirm within ``timeout`` seconds."""
    return request_and_wait(Path(state_dir), FLUSH_REQUEST, FLUSH_DONE, timeout) is not None


# ---------------------------------------------------------------------------------------------- component


def _firehose_streams(names: Any) -> dict[str, tuple[str, str]]:
    """Stream name -> (staging prefix, table)."""
    return {
        names.predictions_stream: ("firehose/predictions/", "prediction_log"),
        names.feedback_stream: ("firehose/feedback/", "prediction_feedback"),
    }


def _loader_process_main(conn: Any, path: str, target: Any) -> None:
    """The warehouse loader's own process: ``("load", bucket, prefixes, lock_wait)`` -> ``("ok", rows)`` or
    ``("error", message)``; ``None`` or a closed pipe ends it. Parsing and loading staged objects is CPU
    work in Python (about 50 µs a record); in its own process it does not hold the GIL of the daemon,
    whose threads serve the prediction API and the local runtime (on AWS, COPY runs on Redshift). It runs at
    a lower CPU priority (``BACKGROUND_NICE``): on a busy machine, loading waits and serving does not."""
    with contextlib.suppress(OSError):
        os.nice(BACKGROUND_NICE)
    s3 = target.client("s3")
    warehouse = LocalWarehouse(path, threads=1)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, bucket, prefixes, lock_wait, retention = message
        try:
            conn.send(
                ("ok", warehouse.load_staged(s3, bucket, prefixes, lock_wait=lock_wait, retention=retention))
            )
        except Exception as exc:  # noqa: BLE001 - reported to the daemon, which keeps loading
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class LoaderProcess:
    """The loader's child process (spawned: the daemon has threads), started on first use and restarted if
    it dies; ``load`` sends one request and waits for its answer."""

    def __init__(self, path: Path, target: Any, timeout: float = 120.0):
        """``target``: the local cloud's ``Target`` (picklable; the child makes its S3 client from it)."""
        self.args = (str(path), target)
        self.timeout = timeout
        self._proc: Any = None
        self._conn: Any = None

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        from trainserve.local import child_process

        self._proc, self._conn = child_process.spawn(_loader_process_main, self.args, "warehouse-loader")

    def load(
        self,
        bucket: str,
        prefixes: Mapping[str, str],
        lock_wait: float | None,
        retention: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Load in the child process; ``timeout`` (default ``self.timeout``): the most to wait for its answer,
        after which the child is ended (a transaction it had begun rolls back: nothing is half-loaded)."""
        timeout = self.timeout if timeout is None else timeout
        self._ensure()
        self._conn.send(("load", bucket, dict(prefixes), lock_wait, retention))
        if not self._conn.poll(max(0.0, timeout)):
            self.stop(timeout=1.0)  # busy: it would not read the request to end; replaced on the next cycle
            raise TimeoutError(f"the warehouse loader did not answer within {timeout:.0f} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            self.stop()
            raise RuntimeError("the warehouse loader process ended") from None
        if status != "ok":
            raise RuntimeError(value)
        return int(value)

    def stop(self, timeout: float = 10.0) -> None:
        from trainserve.local import child_process

        child_process.stop(self._proc, self._conn, timeout)
        self._proc = self._conn = None


class WarehouseComponent:
    """Local cloud component: Firehose delivery streams (moto, ExtendedS3 -> the staging bucket) and the
    loader thread that, every ~2 s, has the local Firehose turn its buffer into staging objects (the
    control plane: moto's process in the daemon) and the loader process (``LoaderProcess``) load them into
    DuckDB. While the prediction API is busy (``ctx.api_activity``), a periodic load waits for it to go
    quiet, for at most ``max_delay`` seconds after the last load (``LOAD_MAX_DELAY_SECONDS``). Its ``stop``
    makes a final load of everything answered so far, for at most ``final_load_timeout`` seconds
    (``FINAL_LOAD_SECONDS``), and logs what it could not load."""

    name = "warehouse"

    def __init__(
        self,
        interval: float = LOAD_INTERVAL_SECONDS,
        staging_retention: float = STAGING_RETENTION_SECONDS,
        max_delay: float = LOAD_MAX_DELAY_SECONDS,
        final_load_timeout: float = FINAL_LOAD_SECONDS,
    ):
        self.interval = interval
        self.staging_retention = staging_retention
        self.max_delay = max_delay
        self.final_load_timeout = final_load_timeout
        self._activity: Any = None  # the API's BusyMeter
        self._busy_samples: collections.deque[tuple[float, float]] = collections.deque()
        self._waiting_since: float | None = None  # a due load is waiting for the API to go quiet since
        self._loads_waited = 0  # periodic loads that waited for the API
        self.warehouse: LocalWarehouse | None = None
        self._ctx: Any = None
        self._s3: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_error: str | None = None
        self._last_load: float | None = None
        self._rows_loaded = 0
        self._load_lock = threading.Lock()
        self._flushed: str | None = None
        self._loader: LoaderProcess | None = None
        self._control: Any = None

    def start(self, ctx: Any) -> None:
        from trainserve.local.control_plane import InProcessControlPlane

        self._ctx = ctx
        self._activity = getattr(ctx, "api_activity", None)
        self._control = getattr(ctx, "control_plane", None) or InProcessControlPlane()
        target = ctx.target()
        self._s3 = target.client("s3")
        self._create_streams(ctx)
        self.warehouse = LocalWarehouse(ctx.warehouse_path)
        self._loader = LoaderProcess(ctx.warehouse_path, target)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="warehouse-loader", daemon=True)
        self._thread.start()

    def _create_streams(self, ctx: Any) -> None:
        s3 = self._s3
        bucket = ctx.names.staging_bucket
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=bucket)
        firehose = ctx.target().client("firehose")
        existing = set(firehose.list_delivery_streams(Limit=100).get("DeliveryStreamNames", []))
        for stream, (prefix, _table) in _firehose_streams(ctx.names).items():
            if stream in existing:
                continue
            firehose.create_delivery_stream(
                DeliveryStreamName=stream,
                DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "RoleARN": f"arn:aws:iam::123456789012:role/{ctx.config.project_name}-firehose",
                    "BucketARN": f"arn:aws:s3:::{bucket}",
                    "Prefix": prefix,
                    "ErrorOutputPrefix": "firehose/errors/",
                    "CompressionFormat": "UNCOMPRESSED",
                },
            )

    def _prefixes(self) -> dict[str, str]:
        return {prefix: table for prefix, table in _firehose_streams(self._ctx.names).values()}

    def load_now(self, lock_wait: float | None = None, timeout: float | None = None) -> int:
        """Load new staging objects at once (the loader thread does this every ``interval`` seconds);
        ``timeout``: the most to wait for the loader process (default ``LoaderProcess.timeout``)."""
        assert self.warehouse is not None and self._ctx is not None, "start() first"
        with self._load_lock:
            import background_delivery  # lambdas/proxy/: the prediction API's senders, in this process

            background_delivery.drain_all(timeout=lock_wait or 1.0)  # answered predictions reach Firehose
            self._control.flush_firehose()  # the local Firehose's buffer becomes staging objects (as its hints do)
            assert self._loader is not None
            n = self._loader.load(
                self._ctx.names.staging_bucket, self._prefixes(), lock_wait, self.staging_retention, timeout
            )
            self._rows_loaded += n
            self._last_load = time.time()
            return n

    def api_busy(self, now: float) -> bool:
        """Whether the API had a request in flight for more than ``API_BUSY_FRACTION`` of about the last
        ``API_BUSY_WINDOW_SECONDS`` (from this thread's readings of its ``BusyMeter``, one per poll)."""
        if self._activity is None:
            return False
        samples = self._busy_samples
        samples.append((now, self._activity.busy_seconds()))
        while len(samples) > 2 and now - samples[1][0] >= API_BUSY_WINDOW_SECONDS:
            samples.popleft()
        (t0, busy0), (t1, busy1) = samples[0], samples[-1]
        return t1 > t0 and (busy1 - busy0) / (t1 - t0) > API_BUSY_FRACTION

    def _due(self, now: float, next_load: float, last_load: float) -> bool:
        """Whether a periodic load runs now: its interval has passed, and the API is quiet or the last load
        was ``max_delay`` seconds ago."""
        busy = self.api_busy(now)
        if now < next_load:
            return False
        if busy and now - last_load < self.max_delay:
            if self._waiting_since is None:
                self._waiting_since = now
                self._loads_waited += 1
            return False
        return True

    def _run(self) -> None:
        next_load = 0.0
        last_load = time.monotonic()
        while not self._stop.is_set():
            token = read_token(self._ctx.state_dir / FLUSH_REQUEST)
            flush = token is not None and token != self._flushed
            now = time.monotonic()
            if flush or self._due(now, next_load, last_load):  # a flush never waits, nor counts as waiting
                self._waiting_since = None
                last_load = now
                try:
                    # a reader holding the file makes a periodic cycle wait 1 s and skip; a flush waits longer
                    self.load_now(lock_wait=LOCK_WAIT_SECONDS if flush else 1.0)
                    self._last_error = None
                    if flush:
                        write_token(self._ctx.state_dir / FLUSH_DONE, token)
                        self._flushed = token
                except Exception as exc:  # noqa: BLE001 - keep loading; status() shows the error
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._ctx.log.warning("warehouse load failed: %s", self._last_error)
                next_load = time.monotonic() + self.interval
            self._stop.wait(FLUSH_POLL_SECONDS)

    def stop(self) -> None:
        """Stop loading, after a final load: moto keeps the local Firehose's buffer and the staging bucket in
        memory, so whatever the warehouse does not hold when the local cloud stops is gone. The daemon stops
        the API before this (``daemon.STOP_FIRST``), so everything it answered is in Firehose by now. The
        final load (Firehose's buffer flushed, every staged object loaded) takes at most
        ``final_load_timeout`` seconds, a periodic load still running included; the log says what it loaded
        and names what it could not (``_log_left_behind``)."""
        self._stop.set()
        deadline = time.monotonic() + self.final_load_timeout
        idle = True
        if self._thread is not None:
            self._thread.join(timeout=self.final_load_timeout)
            idle = not self._thread.is_alive()
            self._thread = None
        try:
            if self._ctx is not None and self._loader is not None:
                self._final_load(deadline if idle else None)
        finally:
            if self._loader is not None:
                self._loader.stop()

    def _final_load(self, deadline: float | None) -> None:
        """The stop's last load, by ``deadline`` (None: a periodic load is still running past it, so none);
        one line in the log when it loaded rows, and a warning for what it failed at or left behind."""
        log = self._ctx.log
        started = time.monotonic()
        loaded: int | None = None
        try:
            if deadline is None:
                raise TimeoutError(
                    f"a load still running after {self.final_load_timeout:.0f} s kept the final load from starting"
                )
            left = max(0.0, deadline - started)
            loaded = self.load_now(lock_wait=min(LOCK_WAIT_SECONDS, left), timeout=left)
            self._last_error = None
        except Exception as exc:  # noqa: BLE001 - the stop goes on; the log says what is lost
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "warehouse: the final load before the stop failed after %.1f s: %s",
                time.monotonic() - started,
                self._last_error,
            )
        complete = self._log_left_behind()
        if loaded:
            log.info(
                "warehouse: the final load before the stop took %d row(s) in %.1f s%s",
                loaded,
                time.monotonic() - started,
                "; every staged object is loaded" if complete else "",
            )

    def left_behind(self) -> tuple[list[_Listed], list[_Listed]]:
        """The staging objects not in the warehouse: (never loaded, failed to load), from the staging bucket's
        listing and the warehouse's ``_staged_objects``."""
        assert self._ctx is not None and self.warehouse is not None, "start() first"
        bucket = self._ctx.names.staging_bucket
        listed = _list_staged(self._s3, bucket, self._prefixes())
        with connect_read(self.warehouse.path, timeout=min(LOCK_WAIT_SECONDS, 2.0)) as con:
            attempts = _read_loaded(con, bucket)
        not_loaded: list[_Listed] = []
        failed: list[_Listed] = []
        for item in listed:
            attempt = attempts.get(item.key)
            if _to_load(attempt, item):
                not_loaded.append(item)
            elif attempt is not None and attempt.loaded_at is None:
                failed.append(item)
        return not_loaded, failed

    def _log_left_behind(self, shown: int = 20) -> bool:
        """Log the staging objects the warehouse does not hold as the local cloud stops (moto's S3 ends with
        it): those never loaded, and those that failed to load (``stl_load_errors`` says why). True when
        there are none."""
        log = self._ctx.log
        bucket = self._ctx.names.staging_bucket
        try:
            not_loaded, failed = self.left_behind()
        except Exception as exc:  # noqa: BLE001 - the stop goes on
            log.warning("warehouse: cannot tell which staging objects are not loaded: %s", exc)
            return False

        def keys(items: list[_Listed]) -> str:
            more = f" and {len(items) - shown} more" if len(items) > shown else ""
            return ", ".join(item.key for item in items[:shown]) + more

        if not_loaded:
            log.warning(
                "warehouse: %d staging object(s) (%d bytes) in s3://%s were not loaded and end with the local "
                "cloud (moto keeps S3 in memory): %s",
                len(not_loaded),
                sum(item.size for item in not_loaded),
                bucket,
                keys(not_loaded),
            )
        if failed:
            log.warning(
                "warehouse: %d staging object(s) in s3://%s failed to load (stl_load_errors says why) and end "
                "with the local cloud: %s",
                len(failed),
                bucket,
                keys(failed),
            )
        return not not_loaded and not failed

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.warehouse.path) if self.warehouse else None,
            "rows_loaded": self._rows_loaded,
            # UTC, as the status's other times (started_at, status_updated_at)
            "last_load": (
                datetime.fromtimestamp(self._last_load, UTC).isoformat(timespec="seconds")
                if self._last_load is not None
                else None
            ),
            "running": self._thread is not None and self._thread.is_alive(),
            "loads_waited_for_api": self._loads_waited,
        }
        waiting_since = self._waiting_since
        if waiting_since is not None:
            out["waiting_for_api_s"] = round(time.monotonic() - waiting_since, 1)
        try:
            out["firehose_calls"] = self._control.firehose_calls() if self._control is not None else {}
        except Exception as exc:  # noqa: BLE001 - status must not fail
            out["firehose_calls_error"] = str(exc)
        if self.warehouse is not None:
            try:
                out["counts"] = self.warehouse.counts()
            except Exception as exc:  # noqa: BLE001 - status must not fail
                out["counts_error"] = str(exc)
        if self._last_error:
            out["last_error"] = self._last_error
            out["alarms"] = [f"warehouse loader: {self._last_error}"]
        if out.get("counts", {}).get("objects_in_error"):
            out.setdefault("alarms", []).append(
                f"{out['counts']['objects_in_error']} staging object(s) failed to load: see stl_load_errors"
            )
        return out
