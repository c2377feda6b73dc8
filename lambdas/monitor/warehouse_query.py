"""Run SQL against the warehouse: one small interface, two backends.

``WarehouseQuery.query(sql, params) -> list[dict]`` is all the monitor job and the A/B report need. SQL uses
named parameters written ``:name`` (the Redshift Data API's syntax); values are plain Python values.

- ``RedshiftDataQuery``: the Redshift Data API (Serverless workgroup or provisioned cluster). It polls
  ``describe_statement`` until FINISHED, with a time limit; FAILED / ABORTED / timeout raise
  ``WarehouseQueryError`` naming the statement, its state and error. A query never silently returns zero rows.
- ``DuckDBQuery``: the local warehouse file. Short-lived read-only connections with retry while the
  writer holds the file lock (DuckDB allows one writing process).

This module is part of the monitor Lambda asset (stdlib + boto3); duckdb is imported only by ``DuckDBQuery``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, Protocol

TERMINAL_FAILURES = ("FAILED", "ABORTED")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class WarehouseQueryError(RuntimeError):
    """A warehouse query failed, was aborted or timed out; the message names the statement and its state."""


class WarehouseQuery(Protocol):
    """Run one SQL statement with ``:name`` parameters; rows as dicts keyed by lower-case column name.

    ``dialect`` ("redshift" or "duckdb") selects the few dialect-specific expressions in ``warehouse_sql``.
    """

    dialect: str

    def query(self, sql: str, params: dict) -> list[dict]: ...


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(sql: str, limit: int = 120) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


class RedshiftDataQuery:
    """``WarehouseQuery`` over the Redshift Data API.

    Exactly one of ``workgroup`` (Redshift Serverless) or ``cluster`` (provisioned) is required.
    ``timeout_s`` bounds the statement's execution (submit to FINISHED); on timeout the statement is
    cancelled (best effort) and ``WarehouseQueryError`` is raised.
    """

    dialect = "redshift"

    def __init__(
        self,
        client: Any,
        *,
        database: str,
        secret_arn: str,
        workgroup: str | None = None,
        cluster: str | None = None,
        timeout_s: float = 120.0,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bool(workgroup) == bool(cluster):
            raise ValueError("RedshiftDataQuery needs exactly one of 'workgroup' or 'cluster'")
        if not database:
            raise ValueError("RedshiftDataQuery needs 'database'")
        if not secret_arn:
            raise ValueError("RedshiftDataQuery needs 'secret_arn'")
        if timeout_s <= 0 or poll_s <= 0:
            raise ValueError("RedshiftDataQuery 'timeout_s' and 'poll_s' must be > 0")
        self.client = client
        self.database = database
        self.secret_arn = secret_arn
        self.workgroup = workgroup
        self.cluster = cluster
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"Database": self.database, "SecretArn": self.secret_arn, "Sql": sql}
        if self.workgroup:
            kwargs["WorkgroupName"] = self.workgroup
        else:
            kwargs["ClusterIdentifier"] = self.cluster
        used = set(_PARAM.findall(sql))
        if params:
            kwargs["Parameters"] = [
                {"name": k, "value": _text(v)} for k, v in params.items() if k in used and v is not None
            ]
            missing = [k for k in used if params.get(k) is None]
        else:
            missing = sorted(used)
        if missing:
            raise ValueError(f"SQL parameter(s) {', '.join(sorted(missing))} have no value: {_short(sql)}")
        deadline = self._clock() + self.timeout_s
        statement_id = self.client.execute_statement(**kwargs)["Id"]
        status = "SUBMITTED"
        while True:
            desc = self.client.describe_statement(Id=statement_id)
            status = desc.get("Status", "UNKNOWN")
            if status == "FINISHED":
                break
            if status in TERMINAL_FAILURES:
                raise WarehouseQueryError(
                    f"Redshift statement {statement_id} ended {status}: {desc.get('Error', 'no error message')} "
                    f"(SQL: {_short(sql)})"
                )
            if self._clock() >= deadline:
                with contextlib.suppress(Exception):  # best effort; the timeout is the error reported
                    self.client.cancel_statement(Id=statement_id)
                raise WarehouseQueryError(
                    f"Redshift statement {statement_id} timed out after {self.timeout_s:g} s in state "
                    f"{status} (SQL: {_short(sql)})"
                )
            self._sleep(self.poll_s)
        if not desc.get("HasResultSet", False):
            return []
        rows: list[dict] = []
        token = None
        while True:
            page = (
                self.client.get_statement_result(Id=statement_id, NextToken=token)
                if token
                else self.client.get_statement_result(Id=statement_id)
            )
            columns = page.get("ColumnMetadata", [])
            for record in page.get("Records", []):
                rows.append({c["name"].lower(): _field(c, f) for c, f in zip(columns, record, strict=True)})
            token = page.get("NextToken")
            if not token:
                return rows


def _field(column: Mapping[str, Any], field: Mapping[str, Any]) -> Any:
    if field.get("isNull"):
        return None
    for key in ("longValue", "doubleValue", "booleanValue"):
        if key in field:
            return field[key]
    if "stringValue" in field:
        value = field["stringValue"]
        type_name = str(column.get("typeName", "")).lower()
        if type_name in ("numeric", "decimal", "float4", "float8", "float", "real", "double precision"):
            return float(value)
        if type_name.startswith("timestamp"):
            return datetime.fromisoformat(value.replace(" ", "T").rstrip("Z").split("+")[0])
        return value
    if "arrayValue" in field:
        return field["arrayValue"]
    if "blobValue" in field:
        return field["blobValue"]
    return None


class DuckDBQuery:
    """``WarehouseQuery`` over a DuckDB file (the local warehouse), or over an open connection.

    With a path, each query opens a short-lived read-only connection; while another process holds the
    write lock it retries for ``lock_timeout_s`` and then raises ``WarehouseQueryError``.
    """

    dialect = "duckdb"

    def __init__(
        self, path: str | None = None, *, connection: Any = None, lock_timeout_s: float = 10.0
    ) -> None:
        if (path is None) == (connection is None):
            raise ValueError("DuckDBQuery needs exactly one of 'path' or 'connection'")
        self.path = str(path) if path is not None else None
        self.connection = connection
        self.lock_timeout_s = lock_timeout_s

    @staticmethod
    def translate(sql: str) -> str:
        """``:name`` parameters → DuckDB's ``$name``."""
        return _PARAM.sub(r"$\1", sql)

    def _run(self, con: Any, sql: str, params: dict | None) -> list[dict]:
        used = set(_PARAM.findall(sql))
        values = {k: v for k, v in (params or {}).items() if k in used}
        missing = sorted(used - set(values))
        if missing:
            raise ValueError(f"SQL parameter(s) {', '.join(missing)} have no value: {_short(sql)}")
        cur = con.execute(self.translate(sql), values or None)
        if cur.description is None:
            return []
        names = [d[0].lower() for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        import duckdb

        if self.connection is not None:
            try:
                return self._run(self.connection, sql, params)
            except duckdb.Error as exc:
                raise WarehouseQueryError(f"DuckDB query failed: {exc} (SQL: {_short(sql)})") from exc
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path, read_only=True)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise WarehouseQueryError(f"cannot open the local warehouse {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            try:
                return self._run(con, sql, params)
            except duckdb.Error as exc:
                raise WarehouseQueryError(f"DuckDB query failed: {exc} (SQL: {_short(sql)})") from exc
            finally:
                con.close()
