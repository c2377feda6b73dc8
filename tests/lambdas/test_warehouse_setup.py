"""The warehouse schema custom resource, against a stub Redshift Data API client (its collaborator:
moto's redshift-data statements never finish), and schema.sql itself on DuckDB."""

from __future__ import annotations

import duckdb
import pytest
import warehouse_setup_handler as setup

PROPS = {"Database": "dev", "SecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:s", "WorkgroupName": "wg"}


class StubRedshiftData:
    def __init__(self, statuses: list[str], error: str = ""):
        self.statuses = statuses
        self.error = error
        self.batches: list[dict] = []
        self.described = 0
        self.cancelled: list[str] = []

    def batch_execute_statement(self, **kwargs):
        self.batches.append(kwargs)
        return {"Id": "stmt-1"}

    def describe_statement(self, Id):  # noqa: N803
        status = self.statuses[min(self.described, len(self.statuses) - 1)]
        self.described += 1
        out = {"Id": Id, "Status": status}
        if status == "FAILED":
            out["Error"] = self.error
            out["SubStatements"] = [{"Status": "FAILED", "QueryString": "CREATE TABLE bad"}]
        return out

    def cancel_statement(self, Id):  # noqa: N803
        self.cancelled.append(Id)


def _event(kind: str, props=PROPS) -> dict:
    return {"RequestType": kind, "ResourceProperties": props}


def test_create_runs_every_statement_and_waits_for_finished(monkeypatch):
    monkeypatch.setattr(setup, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(setup.time, "sleep", lambda _s: None)
    client = StubRedshiftData(["SUBMITTED", "STARTED", "FINISHED"])
    out = setup.handler(_event("Create"), None, client=client)
    assert out["Data"]["StatementId"] == "stmt-1"
    batch = client.batches[0]
    assert (batch["WorkgroupName"], batch["Database"], batch["SecretArn"]) == (
        "wg",
        "dev",
        PROPS["SecretArn"],
    )
    assert "ClusterIdentifier" not in batch
    assert batch["Sqls"] == setup.load_statements()
    assert len(batch["Sqls"]) == 4 and client.described == 3


def test_cluster_identifier_used_for_provisioned():
    client = StubRedshiftData(["FINISHED"])
    props = {"Database": "dev", "SecretArn": "s", "ClusterIdentifier": "c1"}
    setup.handler(_event("Update", props), None, client=client)
    assert client.batches[0]["ClusterIdentifier"] == "c1" and "WorkgroupName" not in client.batches[0]


def test_failed_statement_raises_with_database_error():
    client = StubRedshiftData(["STARTED", "FAILED"], error='syntax error at or near "TABEL"')
    with pytest.raises(setup.SchemaSetupError, match="TABEL.*CREATE TABLE bad"):
        setup.apply_schema(client, PROPS, ["x"], sleep=lambda _s: None)


def test_aborted_raises():
    with pytest.raises(setup.SchemaSetupError, match="ABORTED"):
        setup.apply_schema(StubRedshiftData(["ABORTED"]), PROPS, ["x"], sleep=lambda _s: None)


def test_timeout_raises_and_cancels():
    now = [0.0]

    def sleep(s):
        now[0] += s

    client = StubRedshiftData(["STARTED"])
    with pytest.raises(setup.SchemaSetupError, match="still STARTED after 10 s"):
        setup.apply_schema(
            client, PROPS, ["x"], timeout_seconds=10, poll_seconds=2, clock=lambda: now[0], sleep=sleep
        )
    assert client.cancelled == ["stmt-1"]


def test_delete_does_nothing():
    client = StubRedshiftData(["FINISHED"])
    out = setup.handler({"RequestType": "Delete", "PhysicalResourceId": "p"}, None, client=client)
    assert out == {"PhysicalResourceId": "p"} and client.batches == []


def test_missing_target_properties_raise():
    with pytest.raises(setup.SchemaSetupError, match="WorkgroupName"):
        setup.handler(
            _event("Create", {"Database": "d", "SecretArn": "s"}), None, client=StubRedshiftData(["FINISHED"])
        )


def test_split_statements_ignores_comments():
    sql = "-- c; x\nCREATE TABLE a (x INT);\n\n-- d\nCREATE VIEW b AS\nSELECT 1;\n"
    assert setup.split_statements(sql) == ["CREATE TABLE a (x INT)", "CREATE VIEW b AS\nSELECT 1"]


def test_schema_runs_on_duckdb_twice_and_views_dedup():
    con = duckdb.connect()
    for _ in range(2):  # idempotent, as an Update re-runs it
        for statement in setup.load_statements():
            con.execute(statement)
    con.execute(
        "INSERT INTO prediction_log (request_id, event_time, score, label) VALUES "
        "('a', '2026-01-01 00:00:01', 0.1, 0), ('a', '2026-01-01 00:00:02', 0.9, 1), ('b', '2026-01-01', 0.5, 1)"
    )
    con.execute(
        "INSERT INTO prediction_feedback VALUES ('a', '2026-01-01 00:00:05', 0), ('a', '2026-01-01 00:00:09', 1)"
    )
    assert con.execute("SELECT request_id, score FROM prediction_log_dedup ORDER BY 1").fetchall() == [
        ("a", 0.1),
        ("b", 0.5),
    ]
    assert con.execute("SELECT request_id, outcome FROM prediction_feedback_dedup").fetchall() == [("a", 1)]
    cols = [r[0] for r in con.execute("DESCRIBE prediction_log_dedup").fetchall()]
    assert cols[:2] == ["request_id", "event_time"] and "rn" not in cols and len(cols) == 13
