"""The warehouse query backends: the Redshift Data API one (failed, aborted, slow statements; pagination;
typed values) and the DuckDB one (parameters, errors)."""

from __future__ import annotations

from datetime import datetime

import boto3
import duckdb
import pytest
from moto import mock_aws
from warehouse_query import DuckDBQuery, RedshiftDataQuery, WarehouseQueryError

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wh-AbCdEf"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


class StubRedshiftData:
    """A redshift-data client whose statement goes through ``statuses`` and then returns ``pages``."""

    def __init__(self, statuses, pages=None, error='ERROR: relation "prediction_log" does not exist'):
        self.statuses = list(statuses)
        self.pages = pages or []
        self.error = error
        self.executed = []
        self.cancelled = []

    def execute_statement(self, **kwargs):
        self.executed.append(kwargs)
        return {"Id": "stmt-1"}

    def describe_statement(self, Id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        out = {"Id": Id, "Status": status, "HasResultSet": bool(self.pages)}
        if status == "FAILED":
            out["Error"] = self.error
        return out

    def get_statement_result(self, Id, NextToken=None):
        index = int(NextToken) if NextToken else 0
        return self.pages[index]

    def cancel_statement(self, Id):
        self.cancelled.append(Id)
        return {"Status": True}


def _query(client, **kw):
    clock = FakeClock()
    return (
        RedshiftDataQuery(
            client,
            workgroup="trainserve-wg",
            database="dev",
            secret_arn=SECRET,
            timeout_s=5,
            poll_s=0.5,
            sleep=clock.sleep,
            clock=clock,
            **kw,
        ),
        clock,
    )


def test_failed_statement_raises_with_its_state_and_error():
    client = StubRedshiftData(["SUBMITTED", "STARTED", "FAILED"])
    q, _ = _query(client)
    with pytest.raises(WarehouseQueryError, match=r"stmt-1 ended FAILED: ERROR: relation \"prediction_log\""):
        q.query("SELECT 1 FROM prediction_log WHERE endpoint_name = :e", {"e": "x"})
    assert client.executed[0]["Parameters"] == [{"name": "e", "value": "x"}]
    assert (
        client.executed[0]["WorkgroupName"] == "trainserve-wg"
        and "ClusterIdentifier" not in client.executed[0]
    )


def test_aborted_statement_raises():
    q, _ = _query(StubRedshiftData(["PICKED", "ABORTED"]))
    with pytest.raises(WarehouseQueryError, match="ended ABORTED"):
        q.query("SELECT 1", {})


def test_a_statement_that_never_finishes_times_out_and_is_cancelled():
    client = StubRedshiftData(["STARTED"])
    q, clock = _query(client)
    with pytest.raises(WarehouseQueryError, match=r"timed out after 5 s in state STARTED"):
        q.query("SELECT 1", {})
    assert client.cancelled == ["stmt-1"]
    assert 5 <= clock.now <= 5.5


def test_moto_redshift_data_statement_stays_started_and_times_out():
    # moto's redshift-data never finishes a statement: the real client path must end in a timeout error.
    with mock_aws():
        q, _ = _query(boto3.client("redshift-data", region_name="us-east-1"))
        with pytest.raises(WarehouseQueryError, match="timed out"):
            q.query("SELECT COUNT(*) FROM prediction_log", {})


def test_results_are_paginated_and_typed():
    cols = [
        {"name": "variant_name", "typeName": "varchar"},
        {"name": "requests", "typeName": "int8"},
        {"name": "p50", "typeName": "float8"},
        {"name": "rate", "typeName": "numeric"},
        {"name": "first_seen", "typeName": "timestamp"},
    ]
    pages = [
        {
            "ColumnMetadata": cols,
            "Records": [
                [
                    {"stringValue": "v1"},
                    {"longValue": 10},
                    {"doubleValue": 1.5},
                    {"stringValue": "0.25"},
                    {"stringValue": "2026-01-01 10:00:00.5"},
                ]
            ],
            "NextToken": "1",
        },
        {
            "ColumnMetadata": cols,
            "Records": [
                [
                    {"stringValue": "v2"},
                    {"longValue": 3},
                    {"isNull": True},
                    {"isNull": True},
                    {"isNull": True},
                ]
            ],
        },
    ]
    q, _ = _query(StubRedshiftData(["FINISHED"], pages))
    rows = q.query("SELECT ...", {})
    assert rows == [
        {
            "variant_name": "v1",
            "requests": 10,
            "p50": 1.5,
            "rate": 0.25,
            "first_seen": datetime(2026, 1, 1, 10, 0, 0, 500000),
        },
        {"variant_name": "v2", "requests": 3, "p50": None, "rate": None, "first_seen": None},
    ]


def test_parameters_are_sent_as_text_and_missing_ones_are_named():
    client = StubRedshiftData(["FINISHED"])
    q, _ = _query(client, cluster=None)
    assert (
        q.query(
            "SELECT 1 WHERE t >= CAST(:since AS TIMESTAMP) AND n = :n",
            {"since": datetime(2026, 1, 2, 3), "n": 4},
        )
        == []
    )
    assert client.executed[0]["Parameters"] == [
        {"name": "since", "value": "2026-01-02 03:00:00.000000"},
        {"name": "n", "value": "4"},
    ]
    with pytest.raises(ValueError, match="parameter.*since.*no value"):
        q.query("SELECT :since", {})


def test_constructor_names_the_missing_setting():
    with pytest.raises(ValueError, match="exactly one of 'workgroup' or 'cluster'"):
        RedshiftDataQuery(object(), database="dev", secret_arn=SECRET)
    with pytest.raises(ValueError, match="'secret_arn'"):
        RedshiftDataQuery(object(), cluster="c", database="dev", secret_arn="")


def test_duckdb_backend_translates_parameters_and_raises_on_errors(tmp_path):
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (v VARCHAR, ts TIMESTAMP)")
    con.execute("INSERT INTO t VALUES ('a', '2026-01-01 00:00:00'), ('b', '2026-01-02 00:00:00')")
    con.close()
    q = DuckDBQuery(path)
    assert DuckDBQuery.translate("x = :a AND y::INTEGER = :b_2") == "x = $a AND y::INTEGER = $b_2"
    rows = q.query(
        "SELECT v AS V FROM t WHERE ts >= CAST(:since AS TIMESTAMP)",
        {"since": "2026-01-01 12:00:00", "unused": 1},
    )
    assert rows == [{"v": "b"}]
    with pytest.raises(WarehouseQueryError, match="DuckDB query failed"):
        q.query("SELECT * FROM missing_table", {})


def test_duckdb_backend_waits_for_the_writer_then_reports_the_lock(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,sys,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(WarehouseQueryError, match="cannot open the local warehouse"):
            DuckDBQuery(path, lock_timeout_s=0.3).query("SELECT 1", {})
    finally:
        holder.kill()
        holder.wait()
    assert DuckDBQuery(path).query("SELECT 1 AS one", {}) == [{"one": 1}]
