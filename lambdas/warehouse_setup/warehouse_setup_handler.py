"""Custom resource that creates the warehouse tables and views (``schema.sql``) through the Redshift Data API.

Takes: a CloudFormation custom-resource event as delivered by ``custom_resources.Provider`` (the Provider
framework sends the response: this handler returns a dict or raises). ``ResourceProperties``:
``Database`` (required), ``SecretArn`` (required), and ``WorkgroupName`` (Redshift Serverless) or
``ClusterIdentifier`` (provisioned); optional ``TimeoutSeconds`` (default 600).

Changes: on Create and Update runs every statement of ``schema.sql`` (idempotent DDL:
``CREATE TABLE IF NOT EXISTS``, ``CREATE OR REPLACE VIEW``) in one ``BatchExecuteStatement`` (one
transaction), polls ``DescribeStatement`` until FINISHED, and raises on FAILED / ABORTED / timeout, which
fails the deployment with the database's error. On Delete does nothing (the tables keep their data; the
workgroup or cluster's own removal policy decides).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
PHYSICAL_ID = "trainserve-warehouse-schema"
POLL_SECONDS = 2.0
DEFAULT_TIMEOUT_SECONDS = 600


class SchemaSetupError(RuntimeError):
    """The schema could not be applied (the message carries the database's error)."""


def split_statements(sql: str) -> list[str]:
    """``schema.sql`` -> statements: drop ``--`` comment lines, split on ``;`` at the end of a line."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line.rstrip())
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";").strip())
            current = []
    if current:
        statements.append("\n".join(current).strip())
    return [s for s in statements if s]


def load_statements(path: Path = SCHEMA_FILE) -> list[str]:
    return split_statements(path.read_text())


def _target(props: Mapping[str, Any]) -> dict[str, str]:
    database = props.get("Database")
    secret = props.get("SecretArn")
    if not database or not secret:
        raise SchemaSetupError("ResourceProperties need Database and SecretArn")
    out = {"Database": database, "SecretArn": secret}
    if props.get("WorkgroupName"):
        out["WorkgroupName"] = props["WorkgroupName"]
    elif props.get("ClusterIdentifier"):
        out["ClusterIdentifier"] = props["ClusterIdentifier"]
    else:
        raise SchemaSetupError("ResourceProperties need WorkgroupName (serverless) or ClusterIdentifier")
    return out


def apply_schema(
    client: Any,
    props: Mapping[str, Any],
    statements: list[str],
    *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    poll_seconds: float | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> str:
    """Run ``statements`` as one batch and wait for it; returns the statement id, raises on failure."""
    poll_seconds = POLL_SECONDS if poll_seconds is None else poll_seconds
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    started = clock()
    response = client.batch_execute_statement(
        Sqls=statements, StatementName="trainserve-schema", WithEvent=False, **_target(props)
    )
    statement_id = response["Id"]
    while True:
        desc = client.describe_statement(Id=statement_id)
        status = desc.get("Status")
        if status == "FINISHED":
            return statement_id
        if status in ("FAILED", "ABORTED"):
            failed = [s for s in desc.get("SubStatements", []) if s.get("Status") in ("FAILED", "ABORTED")]
            where = f" in statement: {failed[0].get('QueryString', '')[:200]}" if failed else ""
            raise SchemaSetupError(
                f"warehouse schema {status}: {desc.get('Error', 'no error message')}{where}"
            )
        if clock() - started > timeout_seconds:
            with contextlib.suppress(Exception):  # best effort; the timeout is the error to report
                client.cancel_statement(Id=statement_id)
            raise SchemaSetupError(
                f"warehouse schema statement {statement_id} still {status} after {timeout_seconds:.0f} s"
            )
        sleep(poll_seconds)


def handler(event: Mapping[str, Any], context: Any, client: Any = None) -> dict[str, Any]:  # noqa: ARG001
    """Create/Update: apply ``schema.sql``; Delete: nothing. Returns ``PhysicalResourceId`` and ``Data``."""
    request = event.get("RequestType")
    physical_id = event.get("PhysicalResourceId") or PHYSICAL_ID
    if request == "Delete":
        return {"PhysicalResourceId": physical_id}
    if request not in ("Create", "Update"):
        raise SchemaSetupError(f"unknown RequestType {request!r}")
    props = event.get("ResourceProperties", {})
    timeout = float(props.get("TimeoutSeconds", DEFAULT_TIMEOUT_SECONDS))
    if client is None:
        import boto3  # here, not at import: the local warehouse imports this module for the schema only

        client = boto3.client("redshift-data")
    statement_id = apply_schema(
        client or boto3.client("redshift-data"), props, load_statements(), timeout_seconds=timeout
    )
    return {"PhysicalResourceId": physical_id, "Data": {"StatementId": statement_id}}
